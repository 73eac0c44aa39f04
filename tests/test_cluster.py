"""Cluster execution, for real: the slurm profile runs the tiny pipeline on a one-node SLURM that
the test starts (tests/slurm_cluster.py: Debian's slurm-wlm + munge, config in a temp dir).

The run goes through the data and features phases and one syncer job (a GPU rule) via
`sbatch`, exactly as `snakemake --profile workflow/profiles/slurm` does on a cluster; the per-clip
phases submit one job per shard of clips, not one per clip (the test counts the sbatch calls).
Only the status-polling intervals are shortened on the command line (a real cluster wants 20-40 s,
a test of short jobs would spend minutes sleeping). The GPU flags of the training rules are checked
with `sbatch --test-only` against the node's (fake) GPUs. Skips only where SLURM is missing and
cannot be installed, or without root.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import REPO, TINY_CLIPS, TINY_FRAMES, make_project, run, tiny_params
from slurm_cluster import NODE_GPUS, SlurmCluster, ensure_installed

from mssync.features.schema import read_table
from mssync.syncers.model import Syncer

pytestmark = pytest.mark.integration

PROFILES = REPO / "workflow/profiles"
GPU_RULES = ("syncer", "gan", "gan_ablation")  # training rules: the profile asks each for a GPU
TARGETS = ["features_phase", "models/syncers/loss/level0.pt"]
# The tiny manifest's 5 clips fall in 2 shards (shards.size 2): one clips and one features job per
# shard, not four jobs per clip as before shards.
EXPECTED_JOBS = Counter(clips=2, features=2, dataset=1, motion_space=1, motion_cache=2, syncer=1)
TEST_OVERRIDES = [  # on top of the profile, for a short test only
    "--jobs", "6",  # the node is declared with 16 CPUs
    "--seconds-between-status-checks", "1",
    "--slurm-init-seconds-before-status-checks", "1",
    "--slurm-keep-successful-logs",  # the test reads them
    "--verbose",  # logs each sbatch call
]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def load_profile(name: str) -> dict:
    """`default` is Snakemake's workflow profile (profiles/default, where Snakemake 9 looks for it);
    the others are passed with --profile workflow/profiles/<name>."""
    folder = REPO / "profiles/default" if name == "default" else PROFILES / name
    return yaml.safe_load((folder / "config.yaml").read_text()) or {}


def sbatch_flags(profile: dict, rule: str) -> list[str]:
    """The resource flags snakemake-executor-plugin-slurm derives from the profile for a rule
    (threads default to the rule's own; the rules the profile does not set run on 1 thread)."""
    resources = {**profile.get("default-resources", {}), **profile.get("set-resources", {}).get(rule, {})}
    threads = profile.get("set-threads", {}).get(rule, 1)
    flags = [f"-t {resources['runtime']}", f"--mem {resources['mem_mb']}", f"--cpus-per-task={threads}"]
    if resources.get("gpu"):
        flags.append(f"--gpus={resources['gpu']}")
    return flags


# --------------------------------------------------------------------------- the profiles, statically


def test_profile_yaml_is_the_file_snakemake_reads():
    """Snakemake only reads config.yaml; profile.yaml (the design's name) must not drift from it."""
    link = PROFILES / "slurm/profile.yaml"
    assert link.is_symlink() and link.resolve() == (PROFILES / "slurm/config.yaml").resolve()


def test_slurm_profile_settings():
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # works without an accounting database
    rules = set(run(["snakemake", "--list-rules"], REPO).stdout.split())
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    assert named <= rules, f"profile names rules the workflow lacks: {named - rules}"
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["gpu"] >= 1, rule
    for rule in rules & set(profile["set-resources"]):
        runtime, mem = (int(flag.split()[1]) for flag in sbatch_flags(profile, rule)[:2])
        assert runtime > 0 and mem > 0, rule  # every job has a wall time and a memory request


def test_default_and_local_profiles_have_no_cluster_settings():
    for name in ("default", "local"):
        profile = load_profile(name)
        assert profile.get("executor", "local") == "local", name
        assert not [k for k in profile if k.startswith("slurm")], name
        assert not any("gpu" in str(v) or "slurm" in str(v) for v in profile.get("set-resources", {}).values()), name


# --------------------------------------------------------------------------- a real SLURM


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A private one-node SLURM for this module; stopped at the end even when a test fails."""
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting munged/slurmctld/slurmd needs root (slurmd launches jobs as their user)")
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


@dataclass
class SlurmRun:
    root: Path
    log: str  # Snakemake's stderr (with --verbose: every sbatch call)
    seconds: float
    jobs: dict[str, Path]  # SLURM job id -> its sbatch log file

    def rule_of(self, job_id: str) -> str:
        return next(p for p in self.jobs[job_id].parts if p.startswith("rule_"))[len("rule_"):]

    def sbatch_call(self, rule: str) -> str:
        return next(line.split("sbatch call: ", 1)[1] for line in self.log.splitlines()
                    if "sbatch call: " in line and f" --comment rule_{rule}_" in line)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    root = make_project(tmp_path_factory.mktemp("cluster") / "project", tiny_params())
    env = cluster.env()
    env["PATH"] = f"{cluster.root / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = ["snakemake", "--profile", "workflow/profiles/slurm", *TEST_OVERRIDES, *TARGETS]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"snakemake on SLURM did not finish in 900 s\n{str(exc.stderr)[-3000:]}\n{cluster.log_tail()}")
    seconds = time.monotonic() - start
    (root / "snakemake-slurm.log").write_text(proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"snakemake on SLURM exited {proc.returncode}\n{proc.stderr[-6000:]}\n{cluster.log_tail()}")
    print(f"\ntiny pipeline ({' '.join(TARGETS)}) through SLURM: {seconds:.1f} s")
    jobs = {job_id: Path(log) for job_id, log in SUBMITTED.findall(proc.stderr)}
    return SlurmRun(root, proc.stderr, seconds, jobs)


def test_every_job_went_through_sbatch(slurm_run, cluster, record_property):
    record_property("slurm_seconds", round(slurm_run.seconds, 1))
    assert Counter(slurm_run.rule_of(j) for j in slurm_run.jobs) == EXPECTED_JOBS
    controller = cluster.controller_log()
    for job_id, log in slurm_run.jobs.items():
        rule = slurm_run.rule_of(job_id)
        # SLURM scheduled it: the main scheduler logs "Allocate", the backfill scheduler (busy node) "Started"
        assert re.search(rf"(Allocate JobId={job_id} NodeList=|Started JobId={job_id} in )", controller), job_id
        assert f"_job_complete: JobId={job_id} WEXITSTATUS 0" in controller, job_id
        assert log.name == f"{job_id}.log" and log.is_relative_to(slurm_run.root / "logs/slurm"), log
        text = log.read_text()  # the job's own Snakemake, started by sbatch on the node
        assert f"'SLURM_JOB_ID': '{job_id}'" in text and re.search(rf"(rule|checkpoint) {rule}:", text), log
    assert "localrule clips:" not in slurm_run.log and "localrule features:" not in slurm_run.log


def test_outputs_are_complete(slurm_run):
    root = slurm_run.root
    rows = sum(pq.ParquetFile(root / f"data/dataset/{s}.parquet").metadata.num_rows for s in ("train", "val", "test"))
    assert rows == len(TINY_CLIPS) * TINY_FRAMES
    for clip in TINY_CLIPS:
        assert read_table(root / f"data/features/{clip}.parquet")[0].num_rows == TINY_FRAMES
        assert (root / f"data/previews/{clip}.png").stat().st_size > 0
    assert (root / "data/rejected.csv").read_text().splitlines()[1].startswith("missing-clip,")
    assert Syncer.load(root / "models/syncers/loss/level0.pt").level == 0
    dry = run(["snakemake", "-n", "--cores", "1", *TARGETS], root)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_gpu_rule_ran_with_a_gpu_allocation(slurm_run, cluster):
    """The syncer job asked SLURM for the profile's GPU, threads, memory and time, and got them."""
    (job_id,) = [j for j in slurm_run.jobs if slurm_run.rule_of(j) == "syncer"]
    call = " ".join(shlex.split(slurm_run.sbatch_call("syncer").split(" --wrap=", 1)[0])) + " "
    for flag in sbatch_flags(load_profile("slurm"), "syncer"):
        assert f" {flag} " in call, (flag, call)
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=cluster.env(), capture_output=True, text=True)
    assert "TresPerJob=gres:gpu:1" in shown.stdout, shown.stdout + shown.stderr
    assert "'SLURM_JOB_GPUS':" in slurm_run.jobs[job_id].read_text()  # the job saw its GPU


def test_gpu_flags_pass_sbatch_test_only(slurm_run, cluster):
    """`sbatch --test-only` accepts the plugin's real syncer call and each training rule's flags;
    the same call asking for more GPUs than the node has is refused, so the check has teeth."""
    env = cluster.env()

    def test_only(args: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"sbatch --test-only {args}", shell=True, env=env, capture_output=True, text=True)

    real = slurm_run.sbatch_call("syncer")
    assert real.startswith("sbatch --parsable ") and " --gpus=1" in real
    accepted = test_only(real[len("sbatch --parsable "):])
    assert accepted.returncode == 0 and "to start at" in accepted.stderr, accepted.stderr
    too_many = test_only(real[len("sbatch --parsable "):].replace(" --gpus=1", f" --gpus={NODE_GPUS + 1}"))
    assert too_many.returncode != 0 and "Requested node configuration is not available" in too_many.stderr

    profile = load_profile("slurm")
    for rule in GPU_RULES:
        flags = sbatch_flags(profile, rule)
        proc = test_only(f"{' '.join(flags)} --wrap=true")
        assert proc.returncode == 0 and "to start at" in proc.stderr, (rule, flags, proc.stderr)
