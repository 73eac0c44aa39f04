"""The DVC versioning cycle, for real, on the tiny config: repro -> push to the default remote ->
git clone elsewhere -> pull -> up to date and byte-identical; and `dvc exp run -S gan...` reruns
the GAN without touching the data, features and syncer stages.

One `dvc repro` (module fixture) serves both tests; everything lives under pytest's tmp dirs (the
repository's default remote `../../mssync-dvc-store` resolves to a sibling of the throw-away
project, inside tmp). The tests run in file order: the experiment changes the workspace last.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO, make_project, run, tiny_params

pytestmark = pytest.mark.integration

UPSTREAM_STAGES = ("data", "features", "syncers")  # what a gan parameter must not rerun


def git(root: Path, *args: str) -> str:
    return run(["git", *args], root).stdout


def dvc_outs(root: Path, stages: tuple[str, ...] | None = None) -> list[str]:
    """Paths of every out/metric/plot of the given dvc.yaml stages (all stages when None)."""
    all_stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    paths = []
    for name, stage in all_stages.items():
        if stages is None or name in stages:
            for kind in ("outs", "metrics", "plots"):
                paths += [next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])]
    return paths


def file_digests(root: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under the given paths (files or directories), keyed by relative path."""
    digests = {}
    for rel in paths:
        top = root / rel
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for f in files:
            digests[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def mtimes(root: Path, paths: list[str]) -> dict[str, int]:
    out = {}
    for rel in paths:
        top = root / rel
        files = [p for p in top.rglob("*") if p.is_file()] if top.is_dir() else [top]
        out.update({str(f.relative_to(root)): f.stat().st_mtime_ns for f in files})
    return out


@pytest.fixture(scope="module")
def versioned(tmp_path_factory) -> Path:
    """The tiny project with the repository's DVC config (default remote), reproduced and committed."""
    root = make_project(tmp_path_factory.mktemp("dvc-cycle") / "project", tiny_params())
    shutil.copy2(REPO / ".dvc/config", root / ".dvc/config")
    git(root, "config", "user.email", "test@mssync.invalid")  # dvc exp commits experiments
    git(root, "config", "user.name", "mssync test")
    run(["dvc", "repro"], root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tiny run")
    return root


def test_push_clone_pull_gives_identical_artifacts(versioned, tmp_path_factory):
    root = versioned
    assert not git(root, "status", "--porcelain"), "repro left files that are neither in git nor ignored"
    tracked = git(root, "ls-files").split()
    assert "dvc.lock" in tracked and "results/motion_space.json" in tracked  # cache: false metrics are in git
    assert not any(p.startswith(("data/", "models/")) for p in tracked)  # the heavy outputs are not

    # the default remote works out of the box: a directory beside the project
    store = root.parent / "mssync-dvc-store"
    assert not store.exists()
    run(["dvc", "push"], root)
    assert any(p.is_file() for p in store.rglob("*")), f"dvc push wrote nothing to {store}"

    # a clone elsewhere points at the same store with one local (unversioned) setting
    clone = tmp_path_factory.mktemp("elsewhere") / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path_factory.getbasetemp())
    assert not (clone / "data").exists() and not (clone / "models").exists()
    run(["dvc", "remote", "modify", "--local", "store", "url", str(store)], clone)
    pull = run(["dvc", "pull"], clone)
    assert "fetched" in pull.stdout or "added" in pull.stdout, pull.stdout

    status = run(["dvc", "status", "dvc.yaml"], clone)  # the main pipeline; crossval (its own file) never ran here
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    outs = dvc_outs(root)
    original, pulled = file_digests(root, outs), file_digests(clone, outs)
    assert len(original) > 20 and any(p.startswith("models/syncers/") for p in original)
    assert pulled == original  # every artifact, byte for byte


def test_exp_run_of_a_gan_parameter_reruns_only_the_gan(versioned):
    root = versioned
    upstream = dvc_outs(root, UPSTREAM_STAGES)
    before = mtimes(root, upstream)
    generator_before = (root / "models/generator.pt").read_bytes()
    logs_before = set((root / ".snakemake/log").glob("*.log"))

    proc = run(["dvc", "exp", "run", "-S", "gan.seed=1"], root)

    for stage in UPSTREAM_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout, (stage, proc.stdout)
    assert "Running stage 'gan'" in proc.stdout
    assert mtimes(root, upstream) == before  # data, features, syncers: not a file rewritten
    assert (root / "models/generator.pt").read_bytes() != generator_before  # another seed, another model
    this_run = "".join(p.read_text() for p in set((root / ".snakemake/log").glob("*.log")) - logs_before)
    assert "rule gan:" in this_run
    for rule in ("clips", "features", "dataset", "motion_space", "syncer"):
        assert f"rule {rule}:" not in this_run, rule
    assert yaml.safe_load((root / "params.yaml").read_text())["gan"]["seed"] == 1
    assert len(run(["dvc", "exp", "list", "--name-only"], root).stdout.split()) == 1
