"""Crop stage: one stable, square face box per clip; 256x256, 25 fps CFR video + 16 kHz mono WAV.

A FaceLandmarker in IMAGE mode looks at a few frames spread over the clip; the box is placed
once for the whole clip (a moving box would add fake head motion, which is what we model).
Clips that cannot give clean single-speaker footage are rejected with the reason, and the
reason is kept in the record that the crop rule always writes.

The speech comes from the video's own audio track, or, when the download record names a separate
audio file (manifest `audio_url`), from that file instead: it is resampled, trimmed and padded
exactly like a track, on the video's timeline (its first sample is the video's first frame). Its
duration must match the video's within `max_av_duration_mismatch_s`, else it is not this video's
speech (or not all of it) and the clip is rejected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from mssync import __version__
from mssync.core.atomic import atomic_path
from mssync.core.config import CropSettings, LandmarkerSettings
from mssync.core.errors import ClipRejected, MediaError
from mssync.core.records import OK, REJECTED, read_record, write_record
from mssync.media.ffmpeg import (
    AudioCut,
    AudioInfo,
    MediaInfo,
    encode_crop,
    extract_audio,
    iter_frames,
    probe,
    probe_audio,
    read_wav,
    rms_dbfs,
)
from mssync.media.landmarks import Face, ImageLandmarker, detect_faces, model_sha256

log = logging.getLogger(__name__)

STAGE = "crop"
CENTRE_SPREAD_RANGE = (10, 90)  # percentiles of face-centre positions the box must also cover


@dataclasses.dataclass(frozen=True)
class Span:
    """The part of the source to use, in seconds."""

    start_s: float
    duration_s: float


@dataclasses.dataclass(frozen=True)
class Speech:
    """Where the clip's speech is read from, and how far into that file the video's timeline starts.

    `info` is the video's MediaInfo with its audio fields describing this speech, so the usable
    span is computed the same way for a track and for a separate file.
    """

    path: Path
    info: MediaInfo
    offset_s: float = 0.0  # subtract from a video time to get the time in `path`


@dataclasses.dataclass(frozen=True)
class ProbeStats:
    frames: int
    face_frames: int
    multi_face_frames: int
    max_faces: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Box:
    x: int
    y: int
    side: int
    clamped: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def usable_span(info: MediaInfo, trim: dict | None) -> Span:
    """The span where both audio and video exist, inside the manifest's start/end.

    Streams can start at different times (an audio track that begins late); the span starts
    when both have begun, so neither a frozen first frame nor padded silence enters the clip.
    """
    start = float(trim["start_s"]) if trim and trim.get("start_s") is not None else 0.0
    end = float(trim["end_s"]) if trim and trim.get("end_s") is not None else math.inf
    start = max(start, info.video_start_s, info.audio_start_s)
    video_end = info.video_start_s + info.duration_s
    audio_end = info.audio_start_s + (info.audio_duration_s or 0.0)
    return Span(start, max(0.0, min(end, video_end, audio_end) - start))


def probe_landmarker(settings: CropSettings, landmarker_settings: LandmarkerSettings) -> ImageLandmarker:
    """The face probe's IMAGE-mode landmarker; a shard job keeps one open for all its clips."""
    return ImageLandmarker(landmarker_settings, num_faces=settings.max_faces)


def sample_faces(info: MediaInfo, span: Span, settings: CropSettings, landmarker: ImageLandmarker):
    """Faces (largest first) on `probe_frames` frames spread evenly over the span."""
    rate = settings.probe_frames / max(span.duration_s, 1e-3)
    frames = iter_frames(info.path, info.display_size, fps=rate, start_s=span.start_s, duration_s=span.duration_s)
    return [detect_faces(landmarker.get(), frame) for frame in frames]


def probe_stats(faces_per_frame: list[list[Face]], size: tuple[int, int], settings: CropSettings) -> ProbeStats:
    width, height = size
    multi = 0
    for faces in faces_per_frame:
        if len(faces) >= 2:
            main, second = faces[0].size_px(width, height), faces[1].size_px(width, height)
            multi += second >= settings.second_face_ratio * main
    return ProbeStats(
        frames=len(faces_per_frame),
        face_frames=sum(1 for faces in faces_per_frame if faces),
        multi_face_frames=multi,
        max_faces=max((len(f) for f in faces_per_frame), default=0),
    )


def check_faces(stats: ProbeStats, settings: CropSettings) -> None:
    """Reject clips with no face, with several people, or with too little footage of a face."""
    if stats.frames == 0:
        raise ClipRejected("no decodable video frames")
    if stats.face_frames == 0:
        raise ClipRejected(f"no face found in any of {stats.frames} sampled frames")
    if stats.multi_face_frames / stats.frames >= settings.multi_face_fraction:
        raise ClipRejected(
            f"several faces: {stats.max_faces} faces seen, a second comparable face in "
            f"{stats.multi_face_frames}/{stats.frames} sampled frames"
        )
    if stats.face_frames / stats.frames < settings.min_face_fraction:
        raise ClipRejected(
            f"too little usable footage: a face in only {stats.face_frames}/{stats.frames} sampled frames "
            f"(need {settings.min_face_fraction:.0%})"
        )


def face_box(faces_per_frame: list[list[Face]], size: tuple[int, int], settings: CropSettings) -> Box:
    """One square box that holds the whole head over the clip (FOMM/VoxCeleb-like framing)."""
    width, height = size
    boxes = np.array([faces[0].box_px(width, height) for faces in faces_per_frame if faces])
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    low, high = np.percentile(centres, CENTRE_SPREAD_RANGE, axis=0)
    side = settings.box_scale * float(np.median(sizes)) + float(np.max(high - low))
    cx, cy = np.median(centres, axis=0)
    cy += settings.box_shift_y * side
    clamped = side > min(width, height)
    side = min(side, width, height)
    x = float(np.clip(cx - side / 2, 0, width - side))
    y = float(np.clip(cy - side / 2, 0, height - side))
    clamped = clamped or abs(x - (cx - side / 2)) > 1 or abs(y - (cy - side / 2)) > 1
    side_px = int(math.floor(side))
    return Box(int(round(x)), int(round(y)), side_px, bool(clamped))


def source_summary(info: MediaInfo) -> dict:
    return {
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "fps": round(info.fps, 4),
        "nominal_fps": round(info.nominal_fps, 4),
        "variable_frame_rate": info.variable_frame_rate,
        "duration_s": round(info.duration_s, 4),
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "audio_duration_s": None if info.audio_duration_s is None else round(info.audio_duration_s, 4),
        "video_start_s": round(info.video_start_s, 4),
        "audio_start_s": round(info.audio_start_s, 4),
    }


def audio_summary(audio: AudioInfo, download_audio: dict) -> dict:
    return {
        "file": download_audio.get("file"),
        "sha256": download_audio.get("sha256"),
        "codec": audio.codec,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 4),
    }


def _probe_source(raw: Path) -> MediaInfo:
    try:
        return probe(raw)
    except MediaError as exc:
        raise ClipRejected(f"corrupt or unreadable video: {exc}") from None


def check_av_durations(video_s: float, audio_s: float, audio_name: str, settings: CropSettings) -> None:
    """A separate speech file much shorter or longer than the video is another take, or cut: reject it.

    Both durations are in the reason, so the rejection list says which file is off and by how much.
    """
    mismatch = abs(video_s - audio_s)
    if mismatch > settings.max_av_duration_mismatch_s:
        raise ClipRejected(
            f"audio/video duration mismatch: video {video_s:.2f} s, separate audio {audio_name} {audio_s:.2f} s "
            f"(differ by {mismatch:.2f} s > max_av_duration_mismatch_s {settings.max_av_duration_mismatch_s} s)"
        )


def _speech(raw: Path, info: MediaInfo, download: dict, settings: CropSettings, details: dict) -> Speech:
    """The speech to use: the download's separate audio file when it has one, else the video's track.

    A separate file wins over a track (the manifest named it for a reason). It is assumed to start
    with the video's first frame, hence its start and offset on the video's timeline.
    """
    separate = download.get("audio")
    if not separate:
        if not info.has_audio:
            raise ClipRejected("no audio track in the video and no separate audio file (manifest audio_url)")
        return Speech(raw, info)
    path = raw.parent / separate["file"]
    try:
        audio = probe_audio(path)
    except MediaError as exc:
        raise ClipRejected(f"corrupt or unreadable separate audio: {exc}") from None
    details["audio_source"] = audio_summary(audio, separate)
    check_av_durations(info.duration_s, audio.duration_s, path.name, settings)
    merged = dataclasses.replace(info, audio_codec=audio.codec, sample_rate=audio.sample_rate, channels=audio.channels,
                                 audio_duration_s=audio.duration_s, audio_start_s=info.video_start_s)
    return Speech(path, merged, offset_s=info.video_start_s)


def _check_duration(span: Span, settings: CropSettings, what: str) -> int:
    n_frames = int(math.floor(span.duration_s * settings.fps + 1e-6))
    if n_frames < settings.min_duration_s * settings.fps:
        raise ClipRejected(f"too short: {what} {span.duration_s:.2f} s < min_duration_s {settings.min_duration_s} s")
    return n_frames


def crop_clip(
    *,
    raw_record: Path,
    out_dir: Path,
    settings: CropSettings,
    landmarker: LandmarkerSettings,
    strict: bool = False,
    face_probe: ImageLandmarker | None = None,
) -> dict:
    """Crop one downloaded clip; always writes `{out_dir}/{clip}.json`, media only when usable.

    `face_probe`: an open face-probe landmarker to use (a shard job passes one for all its clips);
    without it, one is opened for this clip."""
    download = read_record(raw_record)
    clip_id = download["clip_id"]
    record_path = out_dir / f"{clip_id}.json"
    common = {"speaker": download.get("speaker"), "mssync_version": __version__}
    details: dict = {}
    try:
        if download["status"] != OK:
            raise ClipRejected(f"not downloaded: {download.get('reason')}")
        with contextlib.ExitStack() as stack:
            if face_probe is None:
                face_probe = stack.enter_context(probe_landmarker(settings, landmarker))
            fields = _crop(raw_record.parent / download["file"], clip_id, download, out_dir, settings, landmarker,
                           face_probe, details)
    except ClipRejected as exc:
        log.warning("%s rejected: %s", clip_id, exc.reason)
        record = write_record(record_path, clip_id, STAGE, REJECTED, reason=exc.reason, **common, **details, **exc.details)
        if strict:
            raise
        return record
    record = write_record(record_path, clip_id, STAGE, OK, **common, **fields)
    log.info("%s: %d frames, box %s", clip_id, fields["output"]["frames"], fields["box"])
    return record


def _crop(
    raw: Path,
    clip_id: str,
    download: dict,
    out_dir: Path,
    settings: CropSettings,
    landmarker: LandmarkerSettings,
    face_probe: ImageLandmarker,
    details: dict,
) -> dict:
    info = _probe_source(raw)
    details["source"] = source_summary(info)
    details["source_sha256"] = download.get("sha256")
    speech = _speech(raw, info, download, settings, details)
    span = usable_span(speech.info, download.get("trim"))
    details["span"] = dataclasses.asdict(span)
    n_frames = _check_duration(span, settings, "usable audio+video")

    faces = sample_faces(info, span, settings, face_probe)
    stats = probe_stats(faces, info.display_size, settings)
    details["probe"] = stats.as_dict()
    check_faces(stats, settings)
    box = face_box(faces, info.display_size, settings)
    details["box"] = dataclasses.asdict(box)

    video_path = out_dir / f"{clip_id}.mp4"
    audio_path = out_dir / f"{clip_id}.wav"
    samples_per_frame = settings.sample_rate // settings.fps
    with atomic_path(video_path) as tmp_video, atomic_path(audio_path) as tmp_audio:
        def cut_audio(frames: int) -> AudioCut:
            return AudioCut(speech.path, tmp_audio, settings.sample_rate, frames * samples_per_frame,
                            span.start_s - speech.offset_s)

        # one ffmpeg run writes the video and the speech for n_frames, and says how many frames it wrote
        written = encode_crop(raw, tmp_video, box=(box.x, box.y, box.side), size=settings.size, fps=settings.fps,
                              n_frames=n_frames, crf=settings.video_crf, preset=settings.x264_preset,
                              start_s=span.start_s, audio=cut_audio(n_frames))
        if written < n_frames:  # the source ended early (truncated): keep only what decodes
            log.warning("%s: source decodes to %d frames, expected %d", clip_id, written, n_frames)
            n_frames = _check_duration(Span(span.start_s, written / settings.fps), settings, "decodable video")
            cut = cut_audio(n_frames)  # the speech again, cut to the frames there are
            extract_audio(cut.src, cut.dst, sample_rate=cut.sample_rate, n_samples=cut.n_samples, start_s=cut.start_s)
        samples, _ = read_wav(tmp_audio)
        level = rms_dbfs(samples)
        if level < settings.min_audio_rms_db:
            raise ClipRejected(f"silent audio: RMS {level:.1f} dBFS < min_audio_rms_db {settings.min_audio_rms_db}")
        video_sha, audio_sha = file_sha256(tmp_video), file_sha256(tmp_audio)
    return {
        **details,
        "landmarker_sha256": model_sha256(landmarker.model),
        "output": {
            "video": video_path.name,
            "audio": audio_path.name,
            "size": settings.size,
            "fps": settings.fps,
            "sample_rate": settings.sample_rate,
            "frames": n_frames,
            "duration_s": n_frames / settings.fps,
            "samples": n_frames * samples_per_frame,
            "audio_rms_dbfs": round(level, 2),
            "video_sha256": video_sha,
            "audio_sha256": audio_sha,
        },
    }
