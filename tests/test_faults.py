"""Fault injection on the tiny config, with the real tools: kill -9 the pipeline at several points,
delete every kind of artifact, damage every kind of file; after each, the README's main command
alone (`snakemake --cores all`) must finish the work, and nothing valid already made is lost.

One project goes through all three in order (each test continues from the previous one's state),
so the suite pays for one pipeline run plus the recoveries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from helpers import TINY_CLIPS, make_project, run, tiny_params, tiny_shard_record, tool_env

pytestmark = pytest.mark.integration

README_COMMAND = ["snakemake", "--cores", "all"]
SYNCER_STEPS, SYNCER_EVAL_EVERY = 60, 10  # six checkpoints per syncer: room to kill between two
GAN_ITERATIONS, GAN_EVAL_EVERY = 40, 5
KILL_TIMEOUT_S = 600


def _written(root: Path, pattern: str, since: float) -> bool:
    """A file matching `pattern` was written by this run (modified at or after `since`). A file
    left by an earlier, killed run does not count: the no-sync generator needs no syncer, so it
    can checkpoint while the syncers train and leave a generator.resume.pt behind that would
    otherwise kill the next run before it printed anything."""
    return any(path.is_file() and path.stat().st_mtime >= since for path in root.glob(pattern))


# Where the pipeline is killed: (what is happening, a condition on the project and the run's start
# time that says it is happening in this run).
KILL_POINTS: list[tuple[str, Callable[[Path, float], bool]]] = [
    ("per-clip phase: features being extracted", lambda r, t: _written(r, "data/features/*.parquet", t)),
    ("syncer training: a syncer past its first checkpoint",
     lambda r, t: _written(r, "models/syncers/*/level*.resume.pt", t)),
    ("syncer training: half the syncers done",
     lambda r, t: len(list(r.glob("models/syncers/*/level?.pt"))) >= 4 and _written(r, "models/syncers/*/level?.pt", t)),
    ("GAN training: a generator past its first checkpoint", lambda r, t: _written(r, "models/**/generator.resume.pt", t)),
]


def _params() -> dict:
    params = tiny_params()
    syncer = params["syncers"]["presets"][params["syncers"]["preset"]]
    syncer.update(steps=SYNCER_STEPS, eval_every=SYNCER_EVAL_EVERY)
    gan = params["gan"]["presets"][params["gan"]["preset"]]
    gan.update(iterations=GAN_ITERATIONS, eval_every=GAN_EVAL_EVERY)
    return params


def _run_until(root: Path, condition: Callable[[Path, float], bool]) -> tuple[bool, str]:
    """Start the README's command; kill -9 it (and every job it started) once `condition` holds for
    this run. Returns (killed, its output); a run that finishes first is not killed."""
    started = time.time() - 0.02  # file times are taken from a clock a few ms coarser than time()
    proc = subprocess.Popen(README_COMMAND, cwd=root, env=tool_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        if condition(root, started):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    output = proc.communicate()[0]
    return killed, output


def _finish(root: Path) -> str:
    proc = run(README_COMMAND, root, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def _up_to_date(root: Path) -> bool:
    return "Nothing to be done" in run(["snakemake", "-n", *README_COMMAND[1:]], root).stdout


def _curves(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("results/**/*.tsv"))}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("faults") / "project", _params())


@pytest.fixture(scope="module")
def killed_runs(project) -> list[tuple[str, bool, str]]:
    """The pipeline killed at each point in turn, then finished by the README's command."""
    outcomes = []
    for name, condition in KILL_POINTS:
        killed, output = _run_until(project, condition)
        outcomes.append((name, killed, output))
    outcomes.append(("finish", False, _finish(project)))
    return outcomes


def test_a_killed_run_is_finished_by_the_readme_command_alone(project, killed_runs):
    assert [name for name, killed, _ in killed_runs[:-1] if killed] == [name for name, _ in KILL_POINTS]
    outputs = [output for *_, output in killed_runs]
    assert all("Using workflow specific profile profiles/default" in out for out in outputs)
    for out in outputs[1:]:  # every run after a kill: lock and incomplete jobs recovered without flags
        assert "removed Snakemake's stale lock" in out
        assert "LockException" not in out and "IncompleteFilesException" not in out
    leftovers = [p for d in ("data", "models", "results") for p in (project / d).glob("**/.*.tmp*")]
    assert leftovers == []  # the temp files the killed writers left were removed with the lock
    assert _up_to_date(project)


def test_killed_training_resumed_and_its_curves_kept_every_row(project, killed_runs):
    logs = [p.read_text() for p in project.glob("logs/syncers/*_level?.log")]
    assert any("resuming at step" in log for log in logs), "no syncer resumed after the kill"
    gan_logs = [p.read_text() for p in [project / "logs/gan/train.log", *project.glob("logs/gan/ablations/*.log")]]
    assert any("resuming at iteration" in log for log in gan_logs), "no generator resumed after the kill"
    for curve in project.glob("results/syncers/curves/*.tsv"):
        steps = [int(line.split("\t")[1]) for line in curve.read_text().splitlines()[1:]]
        assert steps == list(range(SYNCER_EVAL_EVERY, SYNCER_STEPS + 1, SYNCER_EVAL_EVERY)), curve
    for curve in project.glob("results/gan/**/train.tsv"):
        iterations = [int(line.split("\t")[0]) for line in curve.read_text().splitlines()[1:]]
        assert iterations == list(range(1, GAN_ITERATIONS + 1)), curve
    for curve in project.glob("results/gan/**/val.tsv"):
        iterations = [int(line.split("\t")[0]) for line in curve.read_text().splitlines()[1:]]
        assert iterations == list(range(GAN_EVAL_EVERY, GAN_ITERATIONS + 1, GAN_EVAL_EVERY)), curve


# One artifact of each kind. A per-clip file is remade by its shard's job (the shard record is that
# job's declared output; the start-up sweep moves it aside when a file it lists is lost or damaged).
FEATURES_CLIP, MEDIA_CLIP = TINY_CLIPS[0], TINY_CLIPS[1]
DELETED_DOWNSTREAM = [
    "data/dataset/val.parquet", "data/dataset/splits.csv", "data/rejected.csv",
    "models/motion_space.npz", "results/motion_space.json",
    "models/syncers/loss/level1.pt", "results/syncers/curves/eval_level2.tsv", "results/syncers/eval_metrics.json",
    "models/generator.pt", "results/gan/train.tsv", "results/gan/val.tsv", "results/gan/metrics.json",
    "models/ablations/no_sync/generator.pt", "results/gan/ablations/single_scale/val.tsv",
    "results/render/metrics.json", "results/evaluation/details.json", "results/evaluation/sync.tsv",
    "results/plots/sync_levels.png", "results/plots/training_gan.png", "results/metrics.json", "results/report.html",
]
DELETED_PER_CLIP = {  # deleted file -> the declared output whose job remakes it
    f"data/features/{FEATURES_CLIP}.parquet": tiny_shard_record("features", FEATURES_CLIP),
    f"data/previews/{FEATURES_CLIP}.png": tiny_shard_record("features", FEATURES_CLIP),
    f"data/raw/{MEDIA_CLIP}.json": tiny_shard_record("clips", MEDIA_CLIP),
    f"data/clips/{MEDIA_CLIP}.mp4": tiny_shard_record("clips", MEDIA_CLIP),
    f"data/clips/{MEDIA_CLIP}.wav": tiny_shard_record("clips", MEDIA_CLIP),
    f"data/raw/{TINY_CLIPS[2]}.mp4": tiny_shard_record("clips", TINY_CLIPS[2]),
    f"data/clips/{TINY_CLIPS[3]}.json": tiny_shard_record("clips", TINY_CLIPS[3]),
}


def _planned_outputs(root: Path) -> str:
    proc = run(["snakemake", "-n", *README_COMMAND[1:]], root)
    return proc.stdout + proc.stderr


def test_every_kind_of_deleted_artifact_is_rebuilt_and_training_is_not_redone(project, killed_runs):
    curves = _curves(project)
    for path in DELETED_DOWNSTREAM:
        (project / path).unlink()
    plan = _planned_outputs(project)
    assert [p for p in DELETED_DOWNSTREAM if f"output: {p}" not in plan and f", {p}" not in plan] == []
    for path in DELETED_PER_CLIP:
        (project / path).unlink()
    plan = _planned_outputs(project)
    assert [p for p, made_by in DELETED_PER_CLIP.items() if f"output: {made_by}" not in plan] == []

    _finish(project)
    assert all((project / p).is_file() for p in [*DELETED_DOWNSTREAM, *DELETED_PER_CLIP])
    assert _curves(project) == curves  # every curve row kept: training was not redone
    assert "already finished" in (project / "logs/gan/train.log").read_text()
    assert "already finished" in (project / "logs/syncers/loss_level1.log").read_text()
    assert _up_to_date(project)


DAMAGED = {  # damaged file -> the declared output whose job remakes it
    f"data/features/{FEATURES_CLIP}.parquet": tiny_shard_record("features", FEATURES_CLIP),
    f"data/previews/{FEATURES_CLIP}.png": tiny_shard_record("features", FEATURES_CLIP),
    "data/dataset/train.parquet": "data/dataset/train.parquet",
    "models/motion_space.npz": "models/motion_space.npz",
    "models/syncers/eval/level0.pt": "models/syncers/eval/level0.pt",
    "models/generator.pt": "models/generator.pt",
    "results/syncers/loss_metrics.json": "results/syncers/loss_metrics.json",
    f"data/clips/{MEDIA_CLIP}.mp4": tiny_shard_record("clips", MEDIA_CLIP),
    f"data/clips/{TINY_CLIPS[2]}.wav": tiny_shard_record("clips", TINY_CLIPS[2]),
    f"data/raw/{TINY_CLIPS[3]}.mp4": tiny_shard_record("clips", TINY_CLIPS[3]),
}


def test_every_kind_of_damaged_file_is_named_moved_aside_and_rebuilt(project, killed_runs):
    curves = _curves(project)
    for path in DAMAGED:
        file = project / path
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    plan = _planned_outputs(project)
    for path, made_by in DAMAGED.items():
        assert f"mssync: {path}: " in plan, f"{path} not named"
        assert f"output: {made_by}" in plan or f", {made_by}" in plan, f"{made_by} not planned"

    _finish(project)
    assert all((project / p).is_file() for p in DAMAGED)
    assert all((project / f"{p}.damaged").is_file() for p in DAMAGED)  # kept for inspection
    assert _curves(project) == curves
    assert _up_to_date(project)
