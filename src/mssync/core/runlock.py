"""Clear Snakemake's lock when the run that took it was killed, so a plain rerun just works.

Snakemake locks the working directory for a run's outputs and removes the lock when it exits; a
`kill -9`, an out-of-memory kill or a power cut leaves it behind, and every later run stops with
"Directory cannot be locked" until someone knows to type `--unlock`. Snakemake's lock files do
not say who took them, so the workflow registers each run it parses (host, pid, process start
time) beside them. At start-up, when lock files exist and every registered run on this host is
gone (the start time tells a reused pid from the original), the lock is stale and is removed,
with a log line. While any registered run is alive, or a run on another host registered (a
cluster login node we cannot look into), the lock is left alone and Snakemake's own message
stands.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import psutil

from mssync.core.atomic import write_json_atomic

log = logging.getLogger(__name__)

LOCK_DIR = Path(".snakemake/locks")
RUNS_DIR = Path(".snakemake/mssync-runs")


def _this_run() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": psutil.Process(pid).create_time()}


def _alive(run: dict) -> bool:
    """Whether the registered run is still running; runs on other hosts count as alive."""
    if run.get("host") != socket.gethostname():
        return True
    try:
        return abs(psutil.Process(int(run["pid"])).create_time() - float(run["started"])) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError, TypeError):
        return False


def _registered_runs(runs_dir: Path) -> dict[Path, dict]:
    runs = {}
    for entry in runs_dir.glob("*.json"):
        try:
            runs[entry] = json.loads(entry.read_text())
        except (OSError, ValueError):
            runs[entry] = {}  # unreadable: written by a run killed mid-write, so not alive
    return runs


def clear_stale_lock(workdir: Path = Path(".")) -> bool:
    """Remove the lock when no registered run that could hold it is alive; True if removed.
    Then register this run (and forget the dead ones)."""
    lock_dir, runs_dir = workdir / LOCK_DIR, workdir / RUNS_DIR
    runs = _registered_runs(runs_dir)
    alive = {entry: run for entry, run in runs.items() if _alive(run)}
    cleared = False
    if lock_dir.is_dir() and any(lock_dir.iterdir()) and runs and not alive:
        shutil.rmtree(lock_dir)
        dead = ", ".join(str(run.get("pid", "?")) for run in runs.values())
        log.warning("removed Snakemake's stale lock: no run registered here is still running (pids %s on %s)",
                    dead, socket.gethostname())
        cleared = True
    for entry in set(runs) - set(alive):
        entry.unlink(missing_ok=True)
    run = _this_run()
    write_json_atomic(runs_dir / f"{run['host']}-{run['pid']}.json", run)
    return cleared
