"""Pieces every training loop shares: resumable checkpoints and per-epoch/iteration TSV files.

A checkpoint is resumed only when its fingerprint (settings, seed, and the bytes of the input
files) matches, so a rerun after a kill continues, and a rerun after a change starts over. A
checkpoint holds everything the run's outputs are made from (the best model so far, the curves'
row counts), so a finished run whose outputs were deleted writes them again without training.
Everything is saved atomically and loaded with weights_only=True.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable

import torch

from mssync.core.atomic import atomic_path
from mssync.core.integrity import REBUILD, move_aside, read_or_move_aside

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: best model and curve row counts inside


def fingerprint(files: Iterable[Path], **config: object) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        with Path(path).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def save(obj: dict, path: Path) -> None:
    """Saved through a file handle: torch names the archive's records after a path it is given,
    and the temp name is random, so the same state would give other bytes (and a rebuilt model
    would change the fingerprint of everything trained from it)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save({"format": CHECKPOINT_FORMAT, **obj}, fh)


def load(path: Path, device: str | torch.device = "cpu") -> dict:
    """A saved model (weights_only=True); one that cannot be read is moved aside (DamagedFile)."""
    return read_or_move_aside(Path(path), lambda p: torch.load(p, map_location=device, weights_only=True), REBUILD)


def load_resume(path: Path, expected: str, progress_key: str, target: int) -> dict | None:
    """The saved state of an unfinished (or just finished) run of the same recipe, else None.

    A checkpoint from other settings or data, one further along than `target` (a shorter run was
    asked for: its past cannot be undone), or one that cannot be read (moved aside) starts over."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        move_aside(path, f"unreadable resume checkpoint ({type(exc).__name__}: {exc})")
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != expected:
        log.warning("%s: checkpoint from other settings, data or mssync version; starting over", path)
        return None
    if state[progress_key] > target:
        log.warning("%s: checkpoint at %s %d is past the %d asked for; starting over", path, progress_key,
                    state[progress_key], target)
        return None
    return state


class Curve:
    """A training curve (TSV) that survives a resume: rows are only ever appended.

    Snakemake and DVC delete a job's outputs before rerunning it, so each row also goes to a copy
    beside the resume checkpoint (not an output). A resumed run cuts that copy back to the rows its
    checkpoint had seen (`state["curves"]`), writes the output from it once, then appends again;
    a row costs one append however long the run, so curves of 10^5 iterations stay cheap."""

    def __init__(self, path: Path, resume_path: Path, name: str, columns: Iterable[str]) -> None:
        self.path, self.columns = Path(path), list(columns)
        self.copy = resume_path.with_name(f"{resume_path.stem}.{name}.tsv")
        self.rows = 0

    def start(self, kept_rows: int = 0) -> None:
        """Begin the output with the first `kept_rows` rows of the copy (0: a fresh run)."""
        rows = read_tsv(self.copy)[:kept_rows] if kept_rows else []
        if len(rows) < kept_rows:
            log.warning("%s: %d of the checkpoint's %d curve rows survive", self.copy, len(rows), kept_rows)
        for dest in (self.copy, self.path):
            write_tsv(dest, self.columns, rows)
        self.rows = len(rows)

    def append(self, rows: list[dict]) -> None:
        for dest in (self.copy, self.path):
            with dest.open("a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns, delimiter="\t", lineterminator="\n",
                               extrasaction="ignore").writerows(rows)
        self.rows += len(rows)


def read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_tsv(path: Path, columns: Iterable[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), delimiter="\t", lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
