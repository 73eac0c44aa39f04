"""Shards: the per-clip stages run a group of clips in one process, not one process per clip.

A new Python process per clip per stage costs seconds of imports (MediaPipe, librosa, torch)
for a second of work on a 3 s clip; on VoxCeleb2's ~10^6 clips that is weeks of CPU, and on a
cluster four `sbatch` calls per clip. A shard job imports once and walks its clips.

Membership is a pure function of the clip id and the shard count: adding, removing or editing
one manifest row changes one shard's rows (a Snakemake param), so only that shard reruns. The
count is the smallest power of two that keeps the mean shard at or below `shards.size` clips; it
changes only when the corpus doubles, and then each shard splits in two (low bits of the hash).

A shard job never fails for one clip: each clip's stages write their own records (ok, or rejected
with the reason, an unexpected error included), and the shard record lists every file the shard
vouches for, so the start-up sweep (core.integrity) reruns a shard whose files were lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from mssync import __version__
from mssync.core.atomic import write_json_atomic
from mssync.core.errors import ConfigError, MissingArtifact, MssyncError, SetupError
from mssync.core.records import REJECTED, write_record
from mssync.data.manifest import ClipEntry

log = logging.getLogger(__name__)

SHARD_PATTERN = r"\d+of\d+"  # the Snakemake wildcard's constraint: 003of016
SHARD_RECORD_STAGE = "shard"
PROGRESS_INTERVAL_S = 5.0


def shard_count(n_clips: int, size: int) -> int:
    """The smallest power of two with n_clips / count <= size (1 for an empty manifest)."""
    count = 1
    while count * size < n_clips:
        count *= 2
    return count


def shard_name(index: int, count: int) -> str:
    return f"{index:03d}of{count:03d}"


def shard_of(clip_id: str, count: int) -> str:
    """The clip's shard: a hash of its id alone, so the other clips never move when it changes."""
    digest = int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "big")
    return shard_name(digest % count, count)


def group_shards(clip_ids: Iterable[str], size: int) -> dict[str, list[str]]:
    """shard -> its clips in manifest order; shards no clip hashes to are left out."""
    clip_ids = list(clip_ids)
    count = shard_count(len(clip_ids), size)
    shards: dict[str, list[str]] = {}
    for clip_id in clip_ids:
        shards.setdefault(shard_of(clip_id, count), []).append(clip_id)
    return dict(sorted(shards.items()))


def shard_entries(entries: list[ClipEntry], shard: str, size: int) -> list[ClipEntry]:
    """The manifest rows of one shard, or a clear error when the shard does not exist."""
    members = group_shards((e.id for e in entries), size)
    if shard not in members:
        raise MssyncError(f"no shard {shard!r} for {len(entries)} clips at shards.size {size} "
                          f"(shards: {', '.join(members) or 'none'})")
    wanted = set(members[shard])
    return [e for e in entries if e.id in wanted]


def failure_reason(exc: BaseException) -> str:
    """A rejection reason for an unexpected error: its type, message and where it was raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"internal error{where}: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def stage_timer(stage: str, seconds: dict[str, float]) -> Iterator[None]:
    """Record the stage's wall time in `seconds` (the shard record keeps it per clip and stage)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = round(time.perf_counter() - started, 3)


@contextlib.contextmanager
def stage_guard(record: Path, entry: ClipEntry, stage: str, strict: bool, seconds: dict[str, float]) -> Iterator[None]:
    """Run one stage of one clip: time it, and turn an unexpected error into the stage's rejection
    record (the stages write their own for the failures they expect), unless strict."""
    with stage_timer(stage, seconds):
        try:
            yield
        except Exception as exc:
            if strict or isinstance(exc, (SetupError, ConfigError, MissingArtifact)):
                raise  # the machine or the settings, not this clip: every clip would fail the same way
            log.exception("%s: %s failed unexpectedly; rejected", entry.id, stage)
            write_record(record, entry.id, stage, REJECTED, reason=failure_reason(exc), speaker=entry.speaker,
                         mssync_version=__version__)


@dataclasses.dataclass
class ClipOutcome:
    """What a shard job made of one clip: its status and the files it vouches for."""
    clip_id: str
    status: str
    stage: str
    reason: str | None
    files: list[str]
    seconds: dict[str, float]


def run_shard(*, shard: str, step: str, entries: list[ClipEntry], process: Callable[[ClipEntry], ClipOutcome],
              record: Path) -> dict:
    """Process every clip of the shard, then write the shard record (atomically, last: it is the
    job's declared output, so a shard cut short is planned again)."""
    started = time.perf_counter()
    outcomes = []
    progress = tqdm(entries, desc=f"{step} {shard}", unit="clip", file=sys.stderr, mininterval=PROGRESS_INTERVAL_S)
    for entry in progress:
        outcome = process(entry)
        outcomes.append(outcome)
        log.info("%s: %s%s (%.2f s)", entry.id, outcome.status,
                 f" at {outcome.stage}: {outcome.reason}" if outcome.reason else "", sum(outcome.seconds.values()))
    content = {
        "stage": SHARD_RECORD_STAGE,
        "step": step,
        "shard": shard,
        "status": "ok",
        "mssync_version": __version__,
        "seconds": round(time.perf_counter() - started, 3),
        "clips": [dataclasses.asdict(o) for o in outcomes],
        "files": [path for o in outcomes for path in o.files],
    }
    write_json_atomic(record, content)
    ok = sum(o.status == "ok" for o in outcomes)
    log.info("shard %s: %d clips, %d ok, %.1f s", shard, len(outcomes), ok, content["seconds"])
    return content
