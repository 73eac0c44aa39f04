"""What `mssync animate` reads: portrait/speech pairs and the speech's audio features.

Kept free of torch, MediaPipe and OpenCV so it can be imported first and run in a worker process:
in a new process librosa's start-up (scipy.signal, numba, scikit-learn) costs ~2 s, as long as
importing torch and MediaPipe. `SpeechFeatures` forks one worker before those imports, so the
speech is decoded and featurised on the second core while the models load and the face is found.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import multiprocessing
import sys
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mssync.core.config import FeatureSettings, RenderSettings
from mssync.core.constants import SAMPLE_RATE
from mssync.core.errors import MediaError, MssyncError
from mssync.media.audio import log_mel
from mssync.media.ffmpeg import decode_audio, require_audio_stream, rms_dbfs
from mssync.media.images import decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".mp4", ".mkv", ".webm", ".mov"}


@dataclasses.dataclass(frozen=True)
class Pair:
    image: Path
    audio: Path
    out: Path


# --------------------------------------------------------------------------- pairs


def _files(directory: Path, suffixes: set[str]) -> dict[str, Path]:
    if not directory.is_dir():
        raise MssyncError(f"{directory}: not a directory")
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() in suffixes}


def pairs_from_dirs(image_dir: Path, audio_dir: Path, out_dir: Path) -> list[Pair]:
    """Portrait and speech with the same file stem make a pair: out_dir/<stem>.mp4."""
    images, audios = _files(image_dir, IMAGE_SUFFIXES), _files(audio_dir, AUDIO_SUFFIXES)
    unmatched = sorted(set(images) ^ set(audios))
    if unmatched:
        log.warning("no partner (same name in the other directory) for: %s", ", ".join(unmatched))
    pairs = [Pair(images[s], audios[s], out_dir / f"{s}.mp4") for s in sorted(set(images) & set(audios))]
    if not pairs:
        raise MssyncError(f"no image in {image_dir} has an audio file of the same name in {audio_dir}")
    return pairs


def pairs_from_csv(path: Path, out_dir: Path) -> list[Pair]:
    """CSV with columns image, audio and optionally out; relative paths are relative to the CSV."""
    base = path.parent
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "audio"} - set(reader.fieldnames or [])
        if missing:
            raise MssyncError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        pairs = []
        for row in reader:
            image, audio = base / row["image"], base / row["audio"]
            out = base / row["out"] if row.get("out") else out_dir / f"{image.stem}-{audio.stem}.mp4"
            pairs.append(Pair(image, audio, out))
    if not pairs:
        raise MssyncError(f"{path}: no rows")
    return pairs


def collect_pairs(*, image: Path | None, audio: Path | None, out: Path | None, image_dir: Path | None,
                  audio_dir: Path | None, pairs_csv: Path | None, out_dir: Path) -> tuple[list[Pair], bool]:
    """The pairs a command line asks for, and whether it is a single pair (whose failure is the
    command's) rather than a batch (where a bad pair is reported and skipped)."""
    single = image is not None
    if single != (audio is not None) or single == (out is None):
        raise MssyncError("give --image, --audio and -o together (or a batch: --image-dir/--audio-dir or --pairs)")
    if single:
        return [Pair(image, audio, out)], True
    if pairs_csv is not None:
        return pairs_from_csv(pairs_csv, out_dir), False
    if image_dir is not None and audio_dir is not None:
        return pairs_from_dirs(image_dir, audio_dir, out_dir), False
    raise MssyncError("nothing to do: give --image/--audio/-o, --image-dir with --audio-dir, or --pairs")


def with_overrides(settings: RenderSettings, **overrides: object) -> RenderSettings:
    """params.yaml's render section with a command line's choices (those not None) on top."""
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.size % 2:
        raise MssyncError(f"--size {settings.size}: must be even (H.264 with 4:2:0 colour)")
    return settings


def check_writable(out: Path) -> None:
    """Fail before any work if the output cannot be created (missing or read-only directory)."""
    if out.suffix.lower() != ".mp4":
        raise MssyncError(f"{out}: the output must be an .mp4 file")
    if out.is_dir():
        raise MssyncError(f"{out}: is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise MssyncError(f"{out}: cannot write there ({exc.strerror or exc})") from None


def check_pair(pair: Pair) -> None:
    """Before any slow work: the output can be written, the portrait decodes as an image and the
    speech file holds an audio stream (ffprobe); the error names the file and what it lacks."""
    check_writable(pair.out)
    with decode_image(pair.image):
        pass
    require_audio_stream(pair.audio)


# --------------------------------------------------------------------------- speech


def load_speech(path: Path, min_seconds: float, min_rms_db: float) -> np.ndarray:
    require_audio_stream(path)
    try:
        samples = decode_audio(path, SAMPLE_RATE)
    except MediaError as exc:
        raise MssyncError(f"{path}: unreadable audio ({exc})") from None
    seconds = len(samples) / SAMPLE_RATE
    if seconds < min_seconds:
        raise MssyncError(f"{path}: {seconds:.2f} s of audio; at least {min_seconds:g} s is needed")
    level = rms_dbfs(samples)
    if level < min_rms_db:
        raise MssyncError(f"{path}: audio is silent ({level:.1f} dBFS RMS, below {min_rms_db:g})")
    return samples


def speech_log_mel(path: Path, features: FeatureSettings, min_seconds: float, min_rms_db: float) -> np.ndarray:
    """Checked speech -> the log-mel a generator trained with `features` expects."""
    return log_mel(load_speech(path, min_seconds, min_rms_db), SAMPLE_RATE, features)


def _worker_context() -> multiprocessing.context.BaseContext:
    """fork on Linux: the worker starts in milliseconds with the parent's light imports, and it is
    forked before torch or MediaPipe start any thread. spawn elsewhere (macOS frameworks are not
    fork-safe); this module's light imports keep that start cheap too."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _warm_up() -> None:
    """Import what log_mel uses, the bulk of its cost in a new process (librosa.effects alone pulls
    in scikit-learn), then freeze those objects out of the garbage collector's way."""
    import gc

    import librosa.effects  # noqa: F401
    import librosa.feature  # noqa: F401

    gc.freeze()


class SpeechFeatures:
    """Speech files decoded, checked and featurised in one worker process, in the order asked for.

    The worker is forked and starts importing librosa as soon as this is created, before anything
    else is known. `prefetch` queues files with a guess of the features the generator expects
    (params.yaml's, known before torch is imported); `log_mel` serves a request from the queue
    only if it asks for the same features and limits, and otherwise computes it in this process,
    so a model trained with other features still gets the right input. A bad file's MssyncError
    is raised by `log_mel`, as speech_log_mel would raise it."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=_worker_context())
        self._pool.submit(_warm_up)
        self._pending: dict[Path, tuple[tuple, Future]] = {}

    def prefetch(self, paths: list[Path], features: FeatureSettings, min_seconds: float, min_rms_db: float) -> None:
        request = (features, min_seconds, min_rms_db)
        for path in paths:
            if path not in self._pending:
                self._pending[path] = request, self._pool.submit(speech_log_mel, path, *request)

    def log_mel(self, path: Path, features: FeatureSettings, min_seconds: float, min_rms_db: float) -> np.ndarray:
        request = (features, min_seconds, min_rms_db)
        queued, future = self._pending.pop(path, (None, None))
        if future is None or queued != request:
            if queued is not None:
                log.info("%s: the generator's audio features differ from params.yaml's; computing them here", path)
            return speech_log_mel(path, *request)
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "SpeechFeatures":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
