"""Reading a split file clip by clip: each clip's landmarks and log-mel, encoded into the motion
space (gap fill and smoothing included). Every phase after the motion space reads splits here."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mssync.core.constants import FPS
from mssync.features.schema import list_column_to_numpy, read_table
from mssync.motion.space import MotionSpace


@dataclasses.dataclass
class ClipMotion:
    clip_id: str
    motion: np.ndarray  # (T, D) float32
    valid: np.ndarray  # (T,) bool
    mel: np.ndarray  # (T * k, n_mels) float32; video frame t owns rows [k t, k t + k)
    fps: int
    speaker: str | None = None


def read_clips(path: Path, columns: list[str]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """clip_id -> {column: array in frame order}, in order of first appearance; and the file metadata."""
    table, meta = read_table(path, columns=["clip_id", "frame", *columns])
    ids = np.asarray(table.column("clip_id").to_pylist())
    frame = table.column("frame").to_numpy()
    arrays = {}
    for name in columns:
        col = table.column(name)
        arrays[name] = (col.to_numpy(zero_copy_only=False) if name == "face_found" else list_column_to_numpy(col))
    # One sort for the whole split (by clip, then frame) instead of a scan of every row per clip,
    # which grew with the square of the number of clips.
    names, first_row, code = np.unique(ids, return_index=True, return_inverse=True)
    order = np.lexsort((frame, code))
    ends = np.cumsum(np.bincount(code, minlength=len(names)))
    starts = ends - np.bincount(code, minlength=len(names))
    clips = {}
    for c in np.argsort(first_row, kind="stable"):  # clips in order of first appearance
        rows = order[starts[c]:ends[c]]
        clips[str(names[c])] = {name: arr[rows] for name, arr in arrays.items()}
    return clips, meta


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
    clips, meta = read_clips(Path(path), ["face_found", "landmarks", "mel"])
    speakers = _speakers(Path(path), meta)
    out = {}
    for clip_id, cols in clips.items():
        motion, valid = space.encode(cols["landmarks"], cols["face_found"])
        mel = cols["mel"]
        out[clip_id] = ClipMotion(clip_id=clip_id, motion=motion, valid=valid,
                                  mel=mel.reshape(-1, mel.shape[-1]).astype(np.float32),
                                  fps=int(meta.get("fps", FPS)), speaker=speakers.get(clip_id))
    return out


