"""Reading a split file clip by clip: each clip's landmarks and log-mel, encoded into the motion
space by the motion cache (motion_cache.py), which every phase after it reads."""

from __future__ import annotations

import csv
import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import pyarrow as pa

from mssync.features.schema import iter_clip_tables, list_column_to_numpy


@dataclasses.dataclass
class ClipMotion:
    clip_id: str
    motion: np.ndarray  # (T, D) float32
    valid: np.ndarray  # (T,) bool
    mel: np.ndarray  # (T * k, n_mels) float32; video frame t owns rows [k t, k t + k)
    fps: int
    speaker: str | None = None


def clip_arrays(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """One clip's rows as arrays in frame order."""
    order = np.argsort(table.column("frame").to_numpy(), kind="stable")
    arrays = {}
    for name in columns:
        col = table.column(name)
        values = col.to_numpy(zero_copy_only=False) if name == "face_found" else list_column_to_numpy(col)
        arrays[name] = values[order]
    return arrays


def iter_clips(path: Path, columns: list[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(clip id, {column: array in frame order}) clip by clip, one clip in memory at a time."""
    for clip_id, table in iter_clip_tables(path, ["frame", *columns]):
        yield clip_id, clip_arrays(table, columns)


def split_speakers(path: Path, meta: dict[str, Any]) -> dict[str, str]:
    """clip_id -> speaker, from the metadata or the dataset stage's splits.csv beside the file."""
    if isinstance(meta.get("speakers"), dict):
        return dict(meta["speakers"])
    csv_path = path.parent / "splits.csv"
    if not csv_path.is_file():
        return {}
    with csv_path.open(encoding="utf-8") as fh:
        return {row["clip_id"]: row["speaker"] for row in csv.DictReader(fh) if row.get("speaker")}


T = TypeVar("T")
ARRAY_CACHE_MB = 512  # per training job: derived clip arrays kept at once (the sample corpus needs ~25 MB)


class ClipArrayCache:
    """The derived arrays (standardised, pyramids) of the most recently drawn clips, within a byte
    budget.

    Trainers keep a split's clips as window starts plus a recipe for their arrays; the arrays are
    made when a window of the clip is drawn and kept here while the budget allows, so memory is
    bounded whatever the corpus. A corpus whose arrays fit (the 245 sample clips: ~25 MB for a
    syncer level) makes each clip once; a larger one remakes evicted clips when drawn again, which
    costs time (benchmarks/scale.py measures the windows/s), never memory. 512 MB holds ~8,000
    clips' GAN arrays at 109 frames; more buys little, as a corpus that outgrows it is drawn
    mostly from evicted clips anyway."""

    def __init__(self, max_mb: float = ARRAY_CACHE_MB) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.bytes = 0
        self.made = 0

    def get(self, key: str, make: Callable[[], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = make()
        self.made += 1
        self.bytes += _nbytes(value)
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, evicted = self.items.popitem(last=False)
            self.bytes -= _nbytes(evicted)
        return value


def _nbytes(value: Any) -> int:
    """Bytes of a tensor, an array or a tuple of them."""
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "element_size"):  # torch.Tensor
        return value.element_size() * value.nelement()
    return int(getattr(value, "nbytes", 0))
