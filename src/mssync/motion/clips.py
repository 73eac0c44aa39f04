"""Reading a split file clip by clip: each clip's landmarks and log-mel, encoded into the motion
space (gap fill and smoothing included). Every phase after the motion space reads splits here."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from mssync.core.constants import FPS
from mssync.features.schema import iter_clip_tables, list_column_to_numpy, read_metadata
from mssync.motion.space import MotionSpace


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


def read_clips(path: Path, columns: list[str]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """clip_id -> {column: array in frame order}, in file order; and the file metadata. Holds the
    whole split: for the test split's landmarks (render); the trainers read through load_split."""
    return dict(iter_clips(Path(path), columns)), read_metadata(path)


def _speakers(path: Path, meta: dict[str, Any]) -> dict[str, str]:
    """clip_id -> speaker, from the metadata or the dataset stage's splits.csv beside the file."""
    if isinstance(meta.get("speakers"), dict):
        return dict(meta["speakers"])
    csv_path = path.parent / "splits.csv"
    if not csv_path.is_file():
        return {}
    with csv_path.open(encoding="utf-8") as fh:
        return {row["clip_id"]: row["speaker"] for row in csv.DictReader(fh) if row.get("speaker")}


def load_split(path: Path, space: MotionSpace) -> dict[str, ClipMotion]:
    """Encode every clip of a split file (gap fill and smoothing included)."""
    meta = read_metadata(path)
    speakers = _speakers(Path(path), meta)
    out = {}
    for clip_id, cols in iter_clips(Path(path), ["face_found", "landmarks", "mel"]):  # landmarks: one clip at a time
        motion, valid = space.encode(cols["landmarks"], cols["face_found"])
        mel = cols["mel"]
        out[clip_id] = ClipMotion(clip_id=clip_id, motion=motion, valid=valid,
                                  mel=mel.reshape(-1, mel.shape[-1]).astype(np.float32),
                                  fps=int(meta.get("fps", FPS)), speaker=speakers.get(clip_id))
    return out


