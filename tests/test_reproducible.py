"""Reproducible runs: the tiny pipeline run twice on this machine makes byte-identical results and
models, and every metrics file says what its run computed with (mssync.core.reproducible).

The first run is the session's `dvc repro` (conftest's tiny_repro, which tests/test_workflow.py
also uses); the second is the README's command in a second throw-away project, so the test pays
for one tiny pipeline run (90-120 s on the 2-core development machine; junit property
tiny_pipeline_seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from helpers import make_project, output_digests, run, tiny_params

from mssync.core.reproducible import PROVENANCE_KEYS, provenance

# Every metrics JSON the pipeline writes -> whether it scores trained models (and so names their runs).
METRICS_FILES = {
    "results/motion_space.json": False,
    "results/syncers/loss_metrics.json": True,
    "results/syncers/eval_metrics.json": True,
    "results/gan/metrics.json": True,
    "results/render/metrics.json": True,
    "results/metrics.json": True,
    "results/evaluation/details.json": True,
}


@pytest.mark.integration
def test_two_runs_of_the_tiny_pipeline_make_identical_files(tiny_repro, tmp_path, record_property):
    root = make_project(tmp_path / "second", tiny_params())
    start = time.monotonic()
    run(["snakemake", "--cores", "all"], root)
    record_property("tiny_pipeline_seconds", round(time.monotonic() - start, 1))
    first, second = tiny_repro.outputs, output_digests(root)
    assert set(METRICS_FILES) <= set(second)
    differing = sorted(path for path in first.keys() | second.keys() if first.get(path) != second.get(path))
    assert not differing, f"{len(differing)} of {len(second)} files differ between two runs: {differing}"

    for path, scores_models in METRICS_FILES.items():
        metrics = json.loads((root / path).read_text())
        assert set(metrics["run"]) == set(PROVENANCE_KEYS), path
        assert metrics["run"]["deterministic"] is True, path
        if scores_models:
            assert metrics["training_runs"] and all(
                set(r) == set(PROVENANCE_KEYS) for r in metrics["training_runs"].values()
            ), path


def test_provenance_names_what_a_run_computed_with():
    run_ = provenance()
    assert set(run_) == set(PROVENANCE_KEYS)
    assert run_["device"] == "cpu" and run_["threads"] >= 1 and isinstance(run_["deterministic"], bool)
    # plain types: torch.load(weights_only=True) reads the checkpoints that keep it
    assert all(type(v) in (str, int, bool) for v in run_.values())


def test_configure_fixes_every_thread_pool_and_turns_on_determinism():
    """In a fresh interpreter: configure changes process-wide state."""
    code = (
        "from mssync.core.reproducible import configure, provenance; configure(1); "
        "import json, threadpoolctl; "
        "print(json.dumps([provenance(), [p['num_threads'] for p in threadpoolctl.threadpool_info()]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    run_, pools = json.loads(out)
    assert run_["threads"] == 1 and run_["deterministic"] is True
    assert pools and set(pools) == {1}
