"""What the workflow does before Snakemake plans or locks: recover the working directory from a
kill and from damaged files, so that the README's command alone is the way back after a crash.

Run once per `snakemake` started by a user (never inside a job): clear the lock of a dead run
(runlock) and, since no writer is then alive, the temp files it left (atomic); then move aside every
damaged artifact and every stage record whose media are missing or damaged (integrity), so their
jobs are planned again. The log lines go to stderr, prefixed with `mssync:`, beside Snakemake's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator

from mssync.core.atomic import remove_leftovers
from mssync.core.integrity import sweep
from mssync.core.runlock import clear_stale_lock


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    logger = logging.getLogger("mssync")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mssync: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def recover_workdir(artifacts: Iterable[str | Path], records: Iterable[str | Path],
                    per_clip_dirs: Iterable[str | Path] = ()) -> None:
    """`artifacts`: every file the workflow declares; `records`: the records among them that vouch
    for other files (shard records: every per-clip file their job wrote); `per_clip_dirs`: where
    those undeclared per-clip files live (their temp files are swept too)."""
    records = [Path(r) for r in records]
    artifacts = [Path(a) for a in artifacts]
    with _log_to_stderr():
        if clear_stale_lock():  # a run was killed and none is alive: its temp files are garbage
            remove_leftovers({path.parent for path in [*artifacts, *records]} | {Path(d) for d in per_clip_dirs})
        record_set = set(records)
        sweep([a for a in artifacts if a not in record_set], records=records)
