"""Pieces every training loop shares: resumable checkpoints and per-epoch/iteration TSV files.

A checkpoint is resumed only when its fingerprint (settings, seed, and the bytes of the input
files) matches, so a rerun after a kill continues, and a rerun after a change starts over.
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

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def fingerprint(files: Iterable[Path], **config: object) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        with Path(path).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **obj}, tmp)


def load_resume(path: Path, expected: str) -> dict | None:
    """The saved training state, or None when absent or from other settings/data."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != expected:
        log.warning("%s: checkpoint from other settings or data; starting over", path)
        return None
    return state


def read_tsv(path: Path, keep: callable = lambda row: True) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [row for row in csv.DictReader(fh, delimiter="\t") if keep(row)]


def write_tsv(path: Path, columns: Iterable[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), delimiter="\t", lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
