"""Atomic writes: a killed job must never leave a complete-looking artifact behind.

Every output goes to a temporary file in the destination directory and is renamed into
place only once it is whole (rename is atomic within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

TEMP_MARK = ".tmp"  # in every temporary file's name: .<dest name>.<random>.tmp<dest suffix>


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it to `dest` if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TEMP_MARK + dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(dest: str | os.PathLike[str], data: Any) -> None:
    write_text_atomic(dest, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def remove_leftovers(directories: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete the temporary files a killed writer left in `directories` (never a finished file:
    those carry no temporary name). Only safe when no writer is running: the caller knows."""
    removed = []
    for directory in map(Path, directories):
        if directory.is_dir():
            for leftover in directory.glob(f".*{TEMP_MARK}*"):
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                    removed.append(leftover)
    return removed
