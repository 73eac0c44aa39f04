"""Features stage: per video frame, MediaPipe landmarks, head pose matrix, blendshapes and the
log-mel audio frames the frame owns (see schema.py for the alignment rule), in one Parquet file.

The landmarker runs in VIDEO mode (tracking) on the 256x256 crop; ffmpeg decodes in its own
process, so decoding overlaps with landmarking and the stage runs close to the landmarker's
own speed (benchmarks/extract.py measures it).

The rule runs a shard of clips per process (make_features): features for every clip crop kept,
and a preview contact sheet for every clip, rejected ones included (they show why). A clip whose
extraction fails gets a rejection record at data/features/{clip}.json instead of a Parquet.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from mssync import __version__
from mssync.core.config import FeatureSettings, LandmarkerSettings, PreviewSettings, ShardSettings
from mssync.core.errors import MssyncError
from mssync.core.logs import timed
from mssync.core.records import OK, read_record
from mssync.data.manifest import ClipEntry, read_manifest
from mssync.data.shards import ClipOutcome, failure_reason, run_shard, shard_entries, stage_guard, stage_timer
from mssync.features.preview import make_error_preview, make_preview, preview_indices
from mssync.features.schema import audio_frames_per_video_frame, features_table, write_table
from mssync.media.audio import log_mel
from mssync.media.ffmpeg import iter_frames, read_wav
from mssync.media.landmarks import landmarks_array, model_sha256, open_landmarker, to_mp_image
from mssync.media.mesh import N_BLENDSHAPES, N_LANDMARKS

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 10.0


@dataclasses.dataclass
class FaceTrack:
    """Per-frame landmarker outputs; frames without a face hold NaN and face_found=False."""

    landmarks: np.ndarray  # (N, 478, 3)
    pose: np.ndarray  # (N, 4, 4) facial transformation matrix
    blendshapes: np.ndarray  # (N, 52)
    face_found: np.ndarray  # (N,) bool
    blendshape_names: list[str]
    decoded: int = 0  # frames the decoder delivered; fewer than N means the crop is damaged

    @classmethod
    def empty(cls, n: int) -> "FaceTrack":
        return cls(
            landmarks=np.full((n, N_LANDMARKS, 3), np.nan, np.float32),
            pose=np.full((n, 4, 4), np.nan, np.float32),
            blendshapes=np.full((n, N_BLENDSHAPES), np.nan, np.float32),
            face_found=np.zeros(n, bool),
            blendshape_names=[],
        )


def track_faces(frames: Iterable[np.ndarray], n_frames: int, fps: int, landmarker_settings: LandmarkerSettings,
                desc: str = "landmarks") -> FaceTrack:
    """Run the landmarker in VIDEO mode over `frames`; timestamps are frame times in ms."""
    track = FaceTrack.empty(n_frames)
    with open_landmarker(landmarker_settings, video=True, num_faces=1, blendshapes=True, matrices=True) as lm:
        progress = tqdm(frames, total=n_frames, desc=desc, unit="frame", mininterval=PROGRESS_INTERVAL_S, leave=False)
        for t, frame in enumerate(progress):
            if t >= n_frames:
                break
            track.decoded = t + 1
            result = lm.detect_for_video(to_mp_image(frame), int(round(t * 1000 / fps)))
            if not result.face_landmarks:
                continue
            track.face_found[t] = True
            track.landmarks[t] = landmarks_array(result.face_landmarks[0])
            track.pose[t] = np.asarray(result.facial_transformation_matrixes[0], np.float32)
            categories = result.face_blendshapes[0]
            track.blendshapes[t] = [c.score for c in categories]
            if not track.blendshape_names:
                track.blendshape_names = [c.category_name for c in categories]
    return track


def owned_mel(samples: np.ndarray, sample_rate: int, n_frames: int, k: int, settings: FeatureSettings) -> np.ndarray:
    """(n_frames, k, n_mels): the k log-mel frames each video frame owns."""
    mel = log_mel(samples, sample_rate, settings)
    if len(mel) < n_frames * k:
        raise MssyncError(f"audio gives {len(mel)} mel frames, fewer than {n_frames} video frames x {k}")
    return mel[: n_frames * k].reshape(n_frames, k, settings.n_mels)


def _seen(frames: Iterable[np.ndarray], see: Callable[[int, np.ndarray], None]) -> Iterator[np.ndarray]:
    for index, frame in enumerate(frames):
        see(index, frame)
        yield frame


def extract_features(*, crop_record: Path, out: Path, settings: FeatureSettings, landmarker: LandmarkerSettings,
                     see_frame: Callable[[int, np.ndarray], None] | None = None) -> dict:
    """Write data/features/{clip}.parquet for one cropped clip; returns the metadata written.

    `see_frame(index, frame)` is called with every decoded crop frame (the shard job keeps the
    preview's, so the preview does not decode the crop again)."""
    record = read_record(crop_record)
    if record["status"] != OK:
        raise MssyncError(f"{crop_record}: clip was rejected at the {record['stage']} stage ({record.get('reason')})")
    clip_id, output = record["clip_id"], record["output"]
    fps, sample_rate, n_frames = output["fps"], output["sample_rate"], output["frames"]
    k = audio_frames_per_video_frame(fps, settings.hop_ms)

    samples, rate = read_wav(crop_record.parent / output["audio"])
    if rate != sample_rate:
        raise MssyncError(f"{clip_id}: wav is {rate} Hz, the crop record says {sample_rate} Hz")
    with timed(log, f"{clip_id}: log-mel audio features"):
        mel = owned_mel(samples, rate, n_frames, k, settings)

    size = (output["size"], output["size"])
    frames = iter_frames(crop_record.parent / output["video"], size, threads=1)
    if see_frame is not None:
        frames = _seen(frames, see_frame)
    with timed(log, f"{clip_id}: landmarks of {n_frames} frames"):
        track = track_faces(frames, n_frames, fps, landmarker, desc=clip_id)
    if track.decoded < n_frames:
        log.warning("%s: the crop decodes to %d of %d frames; the rest are stored as face_found=False",
                    clip_id, track.decoded, n_frames)
    metadata = {
        "clip_id": clip_id,
        "speaker": record.get("speaker"),
        "fps": fps,
        "sample_rate": sample_rate,
        "hop_ms": settings.hop_ms,
        "hop_length": sample_rate * settings.hop_ms // 1000,
        "win_ms": settings.win_ms,
        "n_fft": settings.n_fft,
        "n_mels": settings.n_mels,
        "mel_fmin": settings.fmin,
        "mel_fmax": settings.fmax,
        "preemphasis": settings.preemphasis,
        "audio_frames_per_frame": k,
        "mel_unit": "dB (librosa.power_to_db of mel power)",
        "landmark_space": "x, y in [0, 1] of the crop; z relative depth on the x scale (MediaPipe)",
        "blendshape_names": track.blendshape_names,
        "landmarker_sha256": model_sha256(landmarker.model),
        "mssync_version": __version__,
        "decoded_frames": track.decoded,
        "face_fraction": float(track.face_found.mean()) if n_frames else 0.0,
    }
    table = features_table(clip_id, fps, track.landmarks, track.pose, track.blendshapes, track.face_found, mel, metadata)
    write_table(out, table)
    log.info("%s: %d frames, face in %.1f%%, %d mel bands", clip_id, n_frames, 100 * metadata["face_fraction"], settings.n_mels)
    return metadata


STEP = "features"


@dataclasses.dataclass(frozen=True)
class FeaturesJob:
    raw_dir: Path
    clips_dir: Path
    features_dir: Path
    previews_dir: Path
    features: FeatureSettings
    preview: PreviewSettings
    landmarker: LandmarkerSettings
    strict: bool

    def process(self, entry: ClipEntry) -> ClipOutcome:
        crop_record = self.clips_dir / f"{entry.id}.json"
        out = self.features_dir / f"{entry.id}.parquet"
        failure = self.features_dir / f"{entry.id}.json"  # written only when extraction fails
        record = read_record(crop_record)
        seconds: dict[str, float] = {}
        files: list[str] = []
        failure.unlink(missing_ok=True)
        frames: dict[int, np.ndarray] | None = None  # the preview's frames, kept as the features decode them
        if record["status"] == OK:
            wanted, frames = set(preview_indices(record, self.preview.frames)), {}

            def keep(index: int, frame: np.ndarray) -> None:
                if index in wanted:
                    frames[index] = frame

            with stage_guard(failure, entry, STEP, self.strict, seconds):
                extract_features(crop_record=crop_record, out=out, settings=self.features, landmarker=self.landmarker,
                                 see_frame=keep)
            if failure.is_file():  # a stale Parquet of earlier settings must not pass for this run's
                out.unlink(missing_ok=True)
                record = read_record(failure)
                frames = None  # the decode may have stopped anywhere: the preview decodes for itself
            files.append(str(failure if failure.is_file() else out))
        files.append(str(self._preview(entry, crop_record, out, failure, seconds, frames)))
        return ClipOutcome(entry.id, record["status"], record["stage"], record.get("reason"), files, seconds)

    def _preview(self, entry: ClipEntry, crop_record: Path, features: Path, failure: Path,
                 seconds: dict[str, float], frames: dict[int, np.ndarray] | None) -> Path:
        """The clip's contact sheet; a sheet saying why when drawing it fails (strict: the error)."""
        preview = self.previews_dir / f"{entry.id}.png"
        rejection = read_record(failure) if failure.is_file() else None
        with stage_timer("preview", seconds):
            try:
                make_preview(raw_record=self.raw_dir / f"{entry.id}.json", crop_record=crop_record,
                             features=None if rejection else features, out=preview, settings=self.preview,
                             landmarker=self.landmarker, rejection=rejection, frames=frames)
            except Exception as exc:
                if self.strict:
                    raise
                log.exception("%s: preview failed", entry.id)
                make_error_preview(entry.id, failure_reason(exc), preview)
        return preview


def make_features(*, manifest: Path, shard: str, record: Path, raw_dir: Path, clips_dir: Path, features_dir: Path,
                  previews_dir: Path, shards: ShardSettings, features: FeatureSettings, preview: PreviewSettings,
                  landmarker: LandmarkerSettings, strict: bool = False) -> dict:
    """Features and previews of the clips of `shard`; returns the shard record."""
    entries = shard_entries(read_manifest(manifest), shard, shards.size)
    job = FeaturesJob(raw_dir, clips_dir, features_dir, previews_dir, features, preview, landmarker, strict)
    return run_shard(shard=shard, step=STEP, entries=entries, process=job.process, record=record)
