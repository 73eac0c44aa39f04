"""Is a file what its name says? Cheap structural checks, and moving a damaged file aside.

Snakemake reruns a job only when an output is missing or older than its inputs, so a truncated
Parquet or a half-copied model looks finished to it and the failure surfaces later, in another
stage, far from its cause. The workflow therefore sweeps its known artifacts at start-up: each
check reads a few bytes (a file's head and tail, a zip's central directory, a box table) so the
sweep costs microseconds per file, not a decode; a damaged file is renamed to `<name>.damaged`
(kept for inspection, never deleted) and the job that makes it is planned again, which
`snakemake -n` shows. A stage that still meets an unreadable file (damage in the middle of a
file, which only a full read finds) raises `DamagedFile`, naming the file, after moving it aside.
A per-clip stage record vouches for the media files it names, and a shard record for every
per-clip file its job wrote: when one is missing or damaged the record is moved aside too, so the
job that wrote both runs again.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from mssync.core.errors import MssyncError

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"
PARQUET_MAGIC = b"PAR1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
MP4_BOX_HEADER = 8
REBUILD = "Run `snakemake --cores all` to make it again (only what depends on it reruns)."

T = TypeVar("T")


class DamagedFile(MssyncError):
    """A file that exists but cannot be read as what it should be; it has been moved aside."""


def _parquet(path: Path) -> str | None:
    size = path.stat().st_size
    if size < 12:
        return f"{size} bytes is too short for Parquet"
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(-8, os.SEEK_END)
        footer_length, tail = struct.unpack("<I4s", fh.read(8))
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return "Parquet magic bytes missing (truncated or overwritten)"
    if footer_length > size - 12:
        return f"Parquet footer of {footer_length} bytes does not fit in {size} bytes"
    return None


def _json(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({exc})"
    return None


def _zip(path: Path) -> str | None:
    """torch checkpoints and .npz files are zip archives: their central directory sits at the end."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return "empty archive"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a readable archive ({exc})"
    return None


def _png(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(len(PNG_SIGNATURE))
        fh.seek(max(path.stat().st_size - len(PNG_END), 0))
        tail = fh.read()
    if head != PNG_SIGNATURE:
        return "not a PNG"
    if tail != PNG_END:
        return "PNG without its end chunk (truncated)"
    return None


def _mp4(path: Path) -> str | None:
    """Walk the top-level boxes: their sizes must tile the file exactly, and one must be `moov`."""
    size, offset, boxes = path.stat().st_size, 0, set()
    with path.open("rb") as fh:
        while offset < size:
            fh.seek(offset)
            header = fh.read(MP4_BOX_HEADER)
            if len(header) < MP4_BOX_HEADER:
                return f"box header cut at byte {offset}"
            box_size, kind = struct.unpack(">I4s", header)
            if box_size == 1:  # 64-bit size follows the header
                box_size = struct.unpack(">Q", fh.read(8))[0]
            elif box_size == 0:  # box runs to the end of the file
                box_size = size - offset
            if box_size < MP4_BOX_HEADER or offset + box_size > size:
                return f"box {kind!r} at byte {offset} runs past the end (truncated)"
            boxes.add(kind)
            offset += box_size
    return None if b"moov" in boxes else "no moov box (truncated or not an MP4)"


def _wav(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        riff, declared, wave = struct.unpack("<4sI4s", fh.read(12).ljust(12, b"\0"))
    if riff != b"RIFF" or wave != b"WAVE":
        return "not a WAV file"
    if declared + 8 != size:
        return f"WAV header declares {declared + 8} bytes, the file has {size} (truncated)"
    return None


CHECKS: dict[str, Callable[[Path], str | None]] = {
    ".parquet": _parquet, ".json": _json, ".pt": _zip, ".npz": _zip, ".png": _png, ".mp4": _mp4, ".wav": _wav,
}


def damage(path: Path) -> str | None:
    """Why `path` cannot be what its suffix says, or None when it looks whole (or has no check)."""
    check = CHECKS.get(path.suffix)
    if check is None:
        return None
    try:
        return check(path)
    except OSError as exc:
        return f"unreadable ({exc})"


def move_aside(path: Path, reason: str) -> Path:
    """Rename a damaged file to `<name>.damaged` (replacing an older one), so its job runs again."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    log.warning("%s: %s; moved to %s, it will be made again", path, reason, target.name)
    return target


def read_or_move_aside(path: Path, reader: Callable[[Path], T], rebuild: str) -> T:
    """`reader(path)`, or DamagedFile naming the file and what rebuilds it when it cannot be parsed."""
    try:
        return reader(path)
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError) or not path.is_file():
            raise
        moved = move_aside(path, f"cannot be read ({type(exc).__name__}: {exc})")
        raise DamagedFile(f"{path}: cannot be read ({type(exc).__name__}: {exc}); moved to {moved}. "
                          f"{rebuild}") from exc


def _record_media(record: Path, content: dict) -> list[tuple[Path, int | None]]:
    """The media files an ok stage record vouches for, with their byte count where it is recorded."""
    if content.get("status") != "ok":
        return []
    if content.get("stage") == "download":  # the video, and a separate speech file when the row has one
        audio = content.get("audio") or {}
        return [(record.with_suffix(".mp4"), content.get("bytes"))] + (
            [(record.parent / audio["file"], audio.get("bytes"))] if audio.get("file") else [])
    output = content.get("output") or {}
    return [(record.parent / output[key], None) for key in ("video", "audio") if output.get(key)]


def _shard_problem(content: dict) -> str | None:
    """A shard record vouches for every per-clip file its job wrote (paths from the working
    directory): a missing or damaged one, or a stage record among them whose media are, reruns
    the shard. Every damaged file is moved aside (and named), not only the first."""
    problems = []
    for name in content.get("files", []):
        path = Path(name)
        if not path.is_file():
            problems.append(f"names {name}, which is missing")
            continue
        problem = _record_problem(path) if path.suffix == ".json" else damage(path)
        if problem:
            move_aside(path, problem)
            problems.append(f"names {name}, which was damaged ({problem})")
    if len(problems) > 3:
        problems = [*problems[:3], f"and {len(problems) - 3} more"]
    return "; ".join(problems) or None


def _record_problem(record: Path) -> str | None:
    problem = damage(record)
    if problem:
        return problem
    content = json.loads(record.read_text(encoding="utf-8"))
    if content.get("stage") == "shard":
        return _shard_problem(content)
    for media, expected_bytes in _record_media(record, content):
        if not media.is_file():
            return f"names {media.name}, which is missing"
        if expected_bytes is not None:  # a download: its bytes were checked against the manifest
            size = media.stat().st_size
            problem = None if size == expected_bytes else f"{size} bytes where its record says {expected_bytes}"
        else:
            problem = damage(media)
        if problem:
            move_aside(media, problem)
            return f"names {media.name}, which was damaged ({problem})"
    return None


def sweep(artifacts: Iterable[str | Path], records: Iterable[str | Path] = ()) -> list[Path]:
    """Move aside every existing artifact that fails its check, and every stage record whose media
    are missing or damaged; returns what was moved (the jobs that make them will run again)."""
    moved = []
    for record in map(Path, records):
        if record.is_file():
            problem = _record_problem(record)
            if problem:
                moved.append(move_aside(record, problem))
    for path in map(Path, artifacts):
        if path.is_file():
            problem = damage(path)
            if problem:
                moved.append(move_aside(path, problem))
    return moved
