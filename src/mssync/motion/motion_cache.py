"""`mssync motion-cache`: encode a split once into the motion space and store what training reads
(per frame: the motion vector, whether it is valid, and the log-mel frames it owns: ~150 floats)
as memory-mappable arrays.

Before the cache, every syncer, GAN and evaluation job re-read the split's 478x3 landmarks
(~5.7 KB a frame) and re-encoded them, and held the whole encoded split in memory: twelve
encodings per run, memory growing with the corpus. The cache is written clip by clip into
preallocated `.npy` files (memory: one clip), and readers map them (np.load mmap_mode='r'): a
window read touches only its pages, so a job's memory does not grow with the corpus.

Files, for a prefix such as data/motion/train:
  train.motion.npy  (N, D) float32   motion of every frame of every clip, clips back to back
  train.valid.npy   (N,)   bool      frame usable for training (face seen, or a short gap filled)
  train.mel.npy     (N*k, n_mels) float32   log-mel frames, k per video frame
  train.clips.json  the clips in file order: id, speaker, first frame, frames; and the fps, k, D
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mssync.core.atomic import atomic_path, write_json_atomic
from mssync.core.constants import FPS
from mssync.core.errors import MssyncError
from mssync.core.integrity import REBUILD, read_or_move_aside
from mssync.features.schema import read_metadata
from mssync.motion.clips import ClipMotion, iter_clips, split_speakers
from mssync.motion.space import MotionSpace

log = logging.getLogger(__name__)

ARRAYS = ("motion", "valid", "mel")
INDEX = "clips"
CACHE_FORMAT = 1
FEATURE_KEYS = ("n_mels", "hop_ms", "win_ms", "n_fft", "mel_fmin", "mel_fmax", "preemphasis")  # how the audio was featurised
STATS_CHUNK_FRAMES = 200_000  # frames per chunk of the statistics passes (~12 MB of motion)


def cache_files(prefix: Path) -> dict[str, Path]:
    """name -> file of the cache at `prefix` (data/motion/train -> data/motion/train.motion.npy, ...)."""
    prefix = Path(prefix)
    files = {name: prefix.with_name(f"{prefix.name}.{name}.npy") for name in ARRAYS}
    return {**files, INDEX: prefix.with_name(f"{prefix.name}.{INDEX}.json")}


def write_motion_cache(*, split: Path, space_path: Path, prefix: Path) -> dict[str, Any]:
    """Encode every clip of `split` (gap fill and smoothing included) into the cache at `prefix`."""
    started = time.perf_counter()
    space = MotionSpace.load(space_path)
    meta = read_metadata(split)
    total = pq.ParquetFile(split).metadata.num_rows
    k, n_mels = int(meta["audio_frames_per_frame"]), int(meta["n_mels"])
    speakers = split_speakers(Path(split), meta)
    files = cache_files(prefix)
    files[INDEX].parent.mkdir(parents=True, exist_ok=True)
    clips: list[dict[str, Any]] = []
    digest = hashlib.sha256()  # of the content: a trainer's resume key changes when the data does
    with atomic_path(files["motion"]) as motion_tmp, atomic_path(files["valid"]) as valid_tmp, \
            atomic_path(files["mel"]) as mel_tmp:
        motion = np.lib.format.open_memmap(motion_tmp, "w+", np.float32, (total, space.dim))
        valid = np.lib.format.open_memmap(valid_tmp, "w+", np.bool_, (total,))
        mel = np.lib.format.open_memmap(mel_tmp, "w+", np.float32, (total * k, n_mels))
        start = 0
        for clip_id, cols in iter_clips(Path(split), ["face_found", "landmarks", "mel"]):
            clip_motion, clip_valid = space.encode(cols["landmarks"], cols["face_found"])
            clip_mel = cols["mel"].reshape(-1, n_mels).astype(np.float32)
            n = len(clip_motion)
            motion[start:start + n], valid[start:start + n] = clip_motion, clip_valid
            mel[start * k:(start + n) * k] = clip_mel
            for array in (clip_motion, clip_valid, clip_mel):
                digest.update(np.ascontiguousarray(array).tobytes())
            clips.append({"clip_id": clip_id, "speaker": speakers.get(clip_id), "start": start, "frames": n})
            start += n
        for array in (motion, valid, mel):
            array.flush()
        del motion, valid, mel
    index = {"format": CACHE_FORMAT, "split": str(split), "frames": total, "dim": space.dim, "mel_per_frame": k,
             "n_mels": n_mels, "fps": int(meta.get("fps", FPS)), "content_sha256": digest.hexdigest(),
             "features": {key: meta[key] for key in FEATURE_KEYS}, "clips": clips}
    write_json_atomic(files[INDEX], index)  # last: the index vouches for the arrays beside it (no timing
    # in it: the same data gives the same bytes, and resume keys hash it)
    log.info("%s: %d clips, %d frames -> %s.* (%.1f s)", split, len(clips), total, prefix,
             time.perf_counter() - started)
    return index


@dataclasses.dataclass(frozen=True)
class MotionCache:
    """A split's cache, mapped: `clips()` gives ClipMotion views, no copy until a window is read."""
    motion: np.ndarray
    valid: np.ndarray
    mel: np.ndarray
    index: dict[str, Any]

    @classmethod
    def open(cls, prefix: Path) -> "MotionCache":
        files = cache_files(prefix)
        index = read_or_move_aside(files[INDEX], _read_index, REBUILD)
        arrays = {name: read_or_move_aside(files[name], _map, REBUILD) for name in ARRAYS}
        cache = cls(arrays["motion"], arrays["valid"], arrays["mel"], index)
        cache._check_shapes(files)
        return cache

    def _check_shapes(self, files: dict[str, Path]) -> None:
        n, k = self.index["frames"], self.index["mel_per_frame"]
        expected = {"motion": (n, self.index["dim"]), "valid": (n,), "mel": (n * k, self.index["n_mels"])}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                read_or_move_aside(files[name], lambda p: _raise_shape(p, shape), REBUILD)  # raises DamagedFile

    def valid_motion_stats(self, chunk: int = STATS_CHUNK_FRAMES) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the motion over valid frames, in float64, two passes over
        the mapped file in chunks (memory: one chunk), as float32 like the motion."""
        n, total = 0, np.zeros(self.motion.shape[1])
        for a in range(0, len(self.motion), chunk):
            rows = self.motion[a:a + chunk][self.valid[a:a + chunk]].astype(np.float64)
            n, total = n + len(rows), total + rows.sum(0)
        if not n:
            raise MssyncError(f"{self.index['split']}: no valid frame to standardise the motion with")
        mean, squares = total / n, np.zeros_like(total)
        for a in range(0, len(self.motion), chunk):
            rows = self.motion[a:a + chunk][self.valid[a:a + chunk]].astype(np.float64)
            squares += ((rows - mean) ** 2).sum(0)
        return mean.astype(np.float32), np.sqrt(squares / n).astype(np.float32)

    def clips(self) -> dict[str, ClipMotion]:
        """clip_id -> ClipMotion whose arrays are views into the mapped files (file order)."""
        k, fps = self.index["mel_per_frame"], self.index["fps"]
        out = {}
        for clip in self.index["clips"]:
            a, b = clip["start"], clip["start"] + clip["frames"]
            out[clip["clip_id"]] = ClipMotion(clip_id=clip["clip_id"], motion=self.motion[a:b], valid=self.valid[a:b],
                                              mel=self.mel[a * k:b * k], fps=fps, speaker=clip["speaker"])
        return out


def cache_index(prefix: Path) -> Path:
    """The index file of a cache: it holds the content digest, so it stands for the cache in resume keys."""
    return cache_files(prefix)[INDEX]


def load_cache(prefix: Path) -> dict[str, ClipMotion]:
    """The encoded clips of a split's cache, memory-mapped (what the trainers and evaluations read)."""
    return MotionCache.open(prefix).clips()


def _read_index(path: Path) -> dict[str, Any]:
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {index.get('format')!r}, this code reads {CACHE_FORMAT}")
    return index


def _map(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def _raise_shape(path: Path, shape: tuple[int, ...]) -> None:
    raise ValueError(f"shape {np.load(path, mmap_mode='r').shape}, its index says {shape}")
