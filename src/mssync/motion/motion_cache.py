"""`mssync motion-cache`: encode a split once into the motion space and store what training reads
(per frame: the motion vector, whether it is valid, and the log-mel frames it owns: ~150 floats)
as plain `.npy` arrays, clips back to back.

Before the cache, every syncer, GAN and evaluation job re-read the split's 478x3 landmarks
(~5.7 KB a frame) and re-encoded them, and held the whole encoded split in memory: twelve
encodings per run, memory growing with the corpus. The cache is written clip by clip through
file handles (memory: one clip), and readers read a clip's rows when they are asked for
(positioned reads, `NpyRows`), so a job's memory does not grow with the corpus.

Why not memory maps: the pages of a mapped file a process has touched count in its resident set
until the kernel needs them back, so a writer that fills a mapped 1 GB cache, or a trainer that
draws windows all over it, shows (and, under a cluster's memory limit, is charged) the size of
the cache. Positioned reads go through the page cache just the same, but nothing of the file stays
mapped into the process.

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
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

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
    shapes = {"motion": ((total, space.dim), np.float32), "valid": ((total,), np.bool_),
              "mel": ((total * k, n_mels), np.float32)}
    with atomic_path(files["motion"]) as motion_tmp, atomic_path(files["valid"]) as valid_tmp, \
            atomic_path(files["mel"]) as mel_tmp:
        paths = {"motion": motion_tmp, "valid": valid_tmp, "mel": mel_tmp}
        handles = {name: open(paths[name], "wb") for name in ARRAYS}
        try:
            for name, (shape, dtype) in shapes.items():
                write_npy_header(handles[name], shape, dtype)
            start = 0
            for clip_id, cols in iter_clips(Path(split), ["face_found", "landmarks", "mel"]):
                clip_motion, clip_valid = space.encode(cols["landmarks"], cols["face_found"])
                arrays = {"motion": clip_motion.astype(np.float32), "valid": clip_valid.astype(np.bool_),
                          "mel": cols["mel"].reshape(-1, n_mels).astype(np.float32)}
                for name in ARRAYS:
                    data = np.ascontiguousarray(arrays[name]).tobytes()
                    handles[name].write(data)
                    digest.update(data)
                n = len(clip_motion)
                clips.append({"clip_id": clip_id, "speaker": speakers.get(clip_id), "start": start, "frames": n})
                start += n
        finally:
            for handle in handles.values():
                handle.close()
        if start != total:
            raise MssyncError(f"{split}: its clips hold {start} frames, its metadata says {total}")
    index = {"format": CACHE_FORMAT, "split": str(split), "frames": total, "dim": space.dim, "mel_per_frame": k,
             "n_mels": n_mels, "fps": int(meta.get("fps", FPS)), "content_sha256": digest.hexdigest(),
             "features": {key: meta[key] for key in FEATURE_KEYS}, "clips": clips}
    write_json_atomic(files[INDEX], index)  # last: the index vouches for the arrays beside it (no timing
    # in it: the same data gives the same bytes, and resume keys hash it)
    log.info("%s: %d clips, %d frames -> %s.* (%.1f s)", split, len(clips), total, prefix,
             time.perf_counter() - started)
    return index


def write_npy_header(handle: BinaryIO, shape: tuple[int, ...], dtype: type) -> None:
    """The `.npy` header of a C-order array of `shape`, whose rows are then written after it."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpyRows:
    """Rows of a `.npy` file read on demand with positioned reads (os.preadv): nothing is mapped
    and nothing kept, so memory is what the caller holds, and forked DataLoader workers can share
    the descriptor (no file position to race on)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in HEADER_READERS:
                raise ValueError(f".npy format version {version}, this code reads {sorted(HEADER_READERS)}")
            shape, fortran, dtype = HEADER_READERS[version](fh)
            self.offset = fh.tell()
        if fortran:
            raise ValueError("Fortran-order array; the cache writes C order")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        expected = self.offset + self.row_bytes * self.shape[0]
        actual = self.path.stat().st_size
        if actual != expected:
            raise ValueError(f"{actual} bytes, its header says {expected} (shape {self.shape}, {self.dtype})")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, a: int, b: int) -> np.ndarray:
        """A fresh, writable array of rows [a, b)."""
        a, b = max(0, a), min(b, self.shape[0])
        out = np.empty((max(0, b - a), *self.shape[1:]), self.dtype)
        view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
        while done < out.nbytes:  # a read may return less than asked (signals, huge reads)
            got = os.preadv(self._fd, [view[done:]], self.offset + a * self.row_bytes + done)
            if got <= 0:
                raise OSError(f"{self.path}: short read at row {a} ({done} of {out.nbytes} bytes)")
            done += got
        return out

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


class CachedClip:
    """One clip of a cache: its id, speaker, fps and length at hand; its arrays read from the files
    each time they are asked for (callers keep what they need, e.g. in a ClipArrayCache)."""

    def __init__(self, cache: "MotionCache", entry: dict[str, Any]) -> None:
        self._cache, self._start = cache, entry["start"]
        self.clip_id, self.speaker, self.frames = entry["clip_id"], entry["speaker"], entry["frames"]
        self.fps, self.mel_per_frame = cache.index["fps"], cache.index["mel_per_frame"]

    @property
    def motion(self) -> np.ndarray:
        return self._cache.motion.rows(self._start, self._start + self.frames)

    @property
    def valid(self) -> np.ndarray:
        return self._cache.valid.rows(self._start, self._start + self.frames)

    @property
    def mel(self) -> np.ndarray:
        k = self.mel_per_frame
        return self._cache.mel.rows(k * self._start, k * (self._start + self.frames))

    @property
    def mel_rows(self) -> int:
        return self.mel_per_frame * self.frames

    def load(self) -> ClipMotion:
        """The clip's arrays, read once."""
        return ClipMotion(self.clip_id, self.motion, self.valid, self.mel, self.fps, self.speaker)


@dataclasses.dataclass(frozen=True)
class MotionCache:
    """A split's cache, opened (headers checked, sizes checked against the index); `clips()`
    gives CachedClip handles, and no array is read until one is asked for."""
    motion: NpyRows
    valid: NpyRows
    mel: NpyRows
    index: dict[str, Any]

    @classmethod
    def open(cls, prefix: Path) -> "MotionCache":
        files = cache_files(prefix)
        index = read_or_move_aside(files[INDEX], _read_index, REBUILD)
        arrays = {name: read_or_move_aside(files[name], NpyRows, REBUILD) for name in ARRAYS}
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
        the file in chunks (memory: one chunk), as float32 like the motion."""
        n, total = 0, np.zeros(self.motion.shape[1])
        for rows in self._valid_motion_chunks(chunk):
            n, total = n + len(rows), total + rows.sum(0)
        if not n:
            raise MssyncError(f"{self.index['split']}: no valid frame to standardise the motion with")
        mean, squares = total / n, np.zeros_like(total)
        for rows in self._valid_motion_chunks(chunk):
            squares += ((rows - mean) ** 2).sum(0)
        return mean.astype(np.float32), np.sqrt(squares / n).astype(np.float32)

    def _valid_motion_chunks(self, chunk: int):
        for a in range(0, len(self.motion), chunk):
            yield self.motion.rows(a, a + chunk)[self.valid.rows(a, a + chunk)].astype(np.float64)

    def clips(self) -> dict[str, CachedClip]:
        """clip_id -> CachedClip, in file order."""
        return {clip["clip_id"]: CachedClip(self, clip) for clip in self.index["clips"]}


def cache_index(prefix: Path) -> Path:
    """The index file of a cache: it holds the content digest, so it stands for the cache in resume keys."""
    return cache_files(prefix)[INDEX]


def load_cache(prefix: Path) -> dict[str, CachedClip]:
    """The encoded clips of a split's cache, read on demand (what the trainers and evaluations read)."""
    return MotionCache.open(prefix).clips()


def read_cache(prefix: Path) -> dict[str, ClipMotion]:
    """Every clip of a split's cache with its arrays read (evaluations of the held-out test split,
    which score every clip together)."""
    return {clip_id: clip.load() for clip_id, clip in load_cache(prefix).items()}


def _read_index(path: Path) -> dict[str, Any]:
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {index.get('format')!r}, this code reads {CACHE_FORMAT}")
    return index


def _raise_shape(path: Path, shape: tuple[int, ...]) -> None:
    raise ValueError(f"shape {NpyRows(path).shape}, its index says {shape}")
