"""The orchestration, for real: Snakemake and DVC on the tiny config (4 real 5 s clips + 1
unobtainable), in a throw-away copy of the project so the developer's data/ is untouched."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from helpers import REPO, TINY_CLIPS, TINY_FRAMES, make_project, run, tiny_params, tiny_shard_record, tool_env

from mssync.core.records import read_record
from mssync.data.shards import group_shards
from mssync.features.schema import list_column_to_numpy, read_metadata, read_table
from mssync.syncers.model import Syncer

SHARED = REPO.parent / "shared"

pytestmark = pytest.mark.integration










@pytest.fixture(scope="module")
def repro(tiny_repro) -> tuple[Path, subprocess.CompletedProcess]:
    """`dvc repro` of the tiny project: every phase, through Snakemake (conftest's, shared with
    tests/test_reproducible.py)."""
    return tiny_repro.root, tiny_repro.proc


def test_dvc_repro_runs_pipeline_to_dataset(repro):
    root, proc = repro
    assert "Running stage 'data'" in proc.stdout and "Running stage 'features'" in proc.stdout
    assert "Running stage 'syncers'" in proc.stdout
    splits = {s: root / f"data/dataset/{s}.parquet" for s in ("train", "val", "test")}
    assert sum(pq.ParquetFile(path).metadata.num_rows for path in splits.values()) == 4 * TINY_FRAMES
    speakers = {s: set(read_metadata(root / f"data/dataset/{s}.parquet")["clips"]) for s in splits}
    assert set().union(*speakers.values()) == set(TINY_CLIPS)
    assert "hdtf-ted-lieu" in speakers["train"]  # pinned by the manifest's split column
    assert all(len(v) >= 1 for v in speakers.values())
    for clip in TINY_CLIPS:
        assert (root / f"data/previews/{clip}.png").stat().st_size > 0
        table, meta = read_table(root / f"data/features/{clip}.parquet")
        assert table.num_rows == TINY_FRAMES and meta["n_mels"] == 26
    rejected = (root / "data/rejected.csv").read_text().splitlines()
    assert rejected[0] == "clip_id,speaker,stage,reason"
    assert len(rejected) == 2 and rejected[1].startswith("missing-clip,nobody,download,")
    assert read_record(root / "data/raw/missing-clip.json")["status"] == "rejected"
    assert not (root / "data/raw/missing-clip.mp4").exists()
    assert read_record(root / "data/clips/missing-clip.json")["reason"].startswith("not downloaded: ")
    assert (root / "data/previews/missing-clip.png").stat().st_size > 0  # a text sheet saying why


def test_dvc_repro_trains_every_syncer_level_of_both_sets(repro):
    root, proc = repro
    assert "Running stage 'syncers'" in proc.stdout
    space = json.loads((root / "results/motion_space.json").read_text())
    assert space["dim"] == 7 + 8 and "reconstruction_unsmoothed" in space
    for syncer_set in ("loss", "eval"):
        metrics = json.loads((root / f"results/syncers/{syncer_set}_metrics.json").read_text())
        assert sorted(metrics["levels"]) == ["level0", "level1", "level2", "level3"]
        for level in range(4):
            model = Syncer.load(root / f"models/syncers/{syncer_set}/level{level}.pt")
            assert model.level == level
            curve = (root / f"results/syncers/curves/{syncer_set}_level{level}.tsv").read_text().splitlines()
            assert curve[0].startswith("epoch\tstep") and len(curve) == 1 + 2  # 20 steps, eval every 10
    loss0 = torch.load(root / "models/syncers/loss/level0.pt", weights_only=True)
    eval0 = torch.load(root / "models/syncers/eval/level0.pt", weights_only=True)
    assert loss0["seed"] != eval0["seed"]  # independent sets: evaluation never scores with the loss syncers


def test_dvc_repro_trains_and_evaluates_the_generator(repro):
    root, proc = repro
    assert "Running stage 'gan'" in proc.stdout
    blob = torch.load(root / "models/generator.pt", weights_only=True)
    assert blob["iteration"] == 10 and blob["sync_levels"] == [0, 1, 2, 3]
    rows = (root / "results/gan/train.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:5] == ["iteration", "d_loss", "d_real", "d_fake", "g_total"] and len(rows) == 11
    metrics = json.loads((root / "results/gan/metrics.json").read_text())
    assert sorted(metrics["levels"]) == ["level0", "level1", "level2", "level3"]
    for level in metrics["levels"].values():
        assert set(level) >= {"generated", "static", "real"} and level["static"]["lse_c"] >= 0
    assert "ratio" in metrics["pose_velocity_std"]


def test_dvc_repro_renders_every_test_clip(repro):
    root, proc = repro
    assert "Running stage 'render'" in proc.stdout
    with (root / "data/dataset/splits.csv").open() as fh:
        test_clips = sorted(row["clip_id"] for row in csv.DictReader(fh) if row["split"] == "test")
    assert test_clips
    made = sorted(p.name for p in (root / "results/videos").iterdir() if not p.name.startswith("."))  # not Snakemake's stamp
    assert made == sorted(
        f"{clip}{ext}" for clip in test_clips for ext in (".mp4", ".png"))
    metrics = json.loads((root / "results/render/metrics.json").read_text())
    assert sorted(metrics["clips"]) == test_clips
    assert all(c["identity_psnr_db"] >= 40 and c["fidelity_frames"] > 0 for c in metrics["clips"].values())
    assert "results/render/metrics.json" in json.dumps(json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout))


ABLATIONS = {"single_scale": [0], "no_sync": []}  # config/tiny/params.yaml evaluation.ablations
VARIANTS = {"ms_sync", *ABLATIONS, "ground_truth", "static"}  # other_audio needs 2 test clips; tiny has 1


def test_dvc_repro_trains_ablations_evaluates_and_reports(repro):
    root, proc = repro
    assert "Running stage 'ablations'" in proc.stdout and "Running stage 'evaluate'" in proc.stdout
    for name, levels in ABLATIONS.items():
        blob = torch.load(root / f"models/ablations/{name}/generator.pt", weights_only=True)
        assert blob["sync_levels"] == levels and blob["iteration"] == 10
        assert (root / f"results/gan/ablations/{name}/train.tsv").read_text().count("\n") == 11
    metrics = json.loads((root / "results/metrics.json").read_text())
    assert sorted(metrics["sync"]) == ["level0", "level1", "level2", "level3"]
    for level in metrics["sync"].values():
        assert set(level) >= VARIANTS and all(v["lse_c"] >= 0 for v in level.values())
    assert metrics["dynamics"]["static"]["rotation_velocity_mean"] == 0  # the static head does not move
    assert metrics["dynamics"]["ground_truth"]["frechet_to_real"] == pytest.approx(0, abs=1e-9)
    assert set(metrics["lips"]) >= VARIANTS
    for name in ("sync", "dynamics", "lips"):
        assert (root / f"results/evaluation/{name}.tsv").read_text().startswith(("level\tvariant", "variant\t"))
    for png in ("sync_levels", "pose_velocity", "mouth_audio_xcorr", "training_gan", "training_syncers"):
        assert (root / f"results/plots/{png}.png").read_bytes()[:4] == b"\x89PNG"
    page = (root / "results/report.html").read_text()
    assert "data:image/png;base64," in page and not re.search(r"(src|href)=\"https?://", page)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)
    assert "results/metrics.json" in json.dumps(shown) and "lse_c" in json.dumps(shown)
    run(["dvc", "metrics", "diff"], root)  # against HEAD (which has none yet): works, lists them as new


def test_exp_run_on_gan_sync_levels_retrains_the_generator_not_the_ablations(repro):
    """`dvc exp run -S 'gan.sync_levels=[0]'`: the gan and evaluate stages rerun; ablations and upstream do not."""
    root, _ = repro
    run(["git", "config", "user.email", "t@t"], root)
    run(["git", "config", "user.name", "t"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], root)
    ablation = root / "models/ablations/single_scale/generator.pt"
    before = ablation.stat().st_mtime_ns, (root / "models/generator.pt").stat().st_mtime_ns
    proc = run(["dvc", "exp", "run", "-S", "gan.sync_levels=[0]"], root)
    for stage in ("data", "features", "syncers", "ablations"):
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout, stage
    assert "Running stage 'gan'" in proc.stdout and "Running stage 'evaluate'" in proc.stdout
    assert ablation.stat().st_mtime_ns == before[0] and (root / "models/generator.pt").stat().st_mtime_ns != before[1]
    assert torch.load(root / "models/generator.pt", weights_only=True)["sync_levels"] == [0]
    details = json.loads((root / "results/evaluation/details.json").read_text())
    assert details["sync_levels"]["ms_sync"] == [0]


def test_killed_syncer_training_resumes(repro, tmp_path):
    """Kill a training job once it has checkpointed; the rerun continues from that step."""
    root, _ = repro
    params = yaml.safe_load((root / "params.yaml").read_text())
    syncers = params["syncers"]
    syncers["presets"]["tiny"].update(steps=4000, eval_every=10)
    out, curve = tmp_path / "level0.pt", tmp_path / "level0.tsv"
    cmd = ["mssync", "train-syncer", "--train", "data/motion/train", "--val", "data/motion/val",
           "--space", "models/motion_space.npz", "--level", "0", "--set", "loss",
           "--syncers-settings", json.dumps(syncers), "--out", str(out), "--metrics", str(curve)]
    job = subprocess.Popen(cmd, cwd=root, env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = out.with_suffix(".resume.pt")
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.kill()
    job.wait()
    assert resume.exists(), "no checkpoint was written before the kill"
    killed_at = torch.load(resume, weights_only=True)["step"]
    assert 0 < killed_at < 4000

    syncers["presets"]["tiny"]["steps"] = killed_at + 20  # the same run, a little longer
    cmd[cmd.index("--syncers-settings") + 1] = json.dumps(syncers)
    proc = run(cmd, root)
    assert f"resuming at step {killed_at}" in proc.stderr
    rows = curve.read_text().splitlines()[1:]
    steps = [int(r.split("\t")[1]) for r in rows]
    assert steps == list(range(10, killed_at + 21, 10))  # epochs continue; nothing repeated or lost


def test_snakemake_is_up_to_date_after_dvc(repro):
    root, _ = repro
    proc = run(["snakemake", "-n", "--cores", "1"], root)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_crossval_tests_every_speaker_once_scores_every_comparison_and_resumes(repro):
    """`dvc repro` leaves crossval alone (its pipeline file is apart); the crossval DVC stage then runs
    `snakemake crossval` on the tiny project (2 folds, 1 seed): every usable speaker is tested exactly
    once, every level gets a measurability verdict and every comparison a paired interval, the
    validated generator trained with weights from its fold's loss syncers, and after losing one
    generator only that generator, its evaluation and the pooling are planned again."""
    root, _ = repro
    assert not (root / "folds").exists()
    run(["dvc", "repro", "workflow/crossval/dvc.yaml"], root)
    summary = json.loads((root / "results/crossval/summary.json").read_text())
    with (root / "data/dataset/splits.csv").open(newline="") as fh:
        usable = sorted({row["speaker"] for row in csv.DictReader(fh)})
    assert sorted(s for fold in summary["folds"].values() for s in fold["speakers"]) == usable
    levels = [f"level{level}" for level in tiny_params()["pyramid"]["levels"]]
    assert sorted(summary["measurability"]) == levels
    compared = {(d["sync_level"], d["b"]) for d in summary["differences"]}
    assert compared == {(lv, b) for lv in levels for b in ("single_scale", "no_sync", "validated", "static", "other_audio")}
    for d in summary["differences"]:
        assert d["low"] <= d["estimate"] <= d["high"] and d["verdict"] in ("higher", "lower", "not significant")
    validated = torch.load(root / "folds/fold0/models/seed0/ablations/validated/generator.pt", weights_only=True)
    sync_levels = yaml.safe_load((root / "params.yaml").read_text())["gan"]["sync_levels"]  # an exp run may change it
    assert validated["sync_weighting"] == "validated" and sorted(validated["sync_weights"]) == sorted(sync_levels)
    assert "What holds and what does not" in (root / "results/crossval/report.html").read_text()

    (root / "folds/fold1/models/seed0/ablations/no_sync/generator.pt").unlink()
    jobs = planned_jobs(run(["snakemake", "-n", "--cores", "1", "crossval"], root).stdout)
    assert jobs == {"crossval_gan_variant": 1, "crossval_evaluate": 1, "crossval_pool": 1, "crossval": 1}, jobs


NEW_ROW = ("vox2-00010,https://raw.githubusercontent.com/Hangz-nju-cuhk/Talking-Face_PC-AVS/"
           "201d2b946caa93a2ce7c798dd080be65959d2592/misc/Input.zip,"
           "8fdd6e3e657cd11617e2354ebbd00ec5e8592f407f114fb6a95a3c03898929d2,vox2-00010,Input/00010.mp4,0,5,,,\n")


def planned_jobs(plan: str) -> dict[str, int]:
    """Snakemake's dry-run 'Job stats' table: rule -> planned job count."""
    table = plan.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_adding_a_clip_reruns_only_its_shard(repro):
    """A sixth manifest row: Snakemake plans one clips and one features job (the new clip's shard,
    whose rows param changed), and the corpus-wide jobs after them; no other shard's."""
    root, _ = repro
    manifest = root / "config/tiny/manifest.csv"
    original = manifest.read_text()
    manifest.write_text(original + NEW_ROW)
    try:
        proc = run(["snakemake", "-n", "--cores", "1"], root)
    finally:
        manifest.write_text(original)
    plan = proc.stdout + proc.stderr
    jobs = planned_jobs(plan)
    assert jobs["clips"] == 1 and jobs["features"] == 1 and jobs["dataset"] == 1, jobs
    ids = [*(row.split(",", 1)[0] for row in original.splitlines()[1:]), "vox2-00010"]
    (shard,) = [name for name, members in group_shards(ids, 2).items() if "vox2-00010" in members]
    assert re.findall(r"output: (data/clips/shards/\S+\.json)", plan) == [f"data/clips/shards/{shard}.json"]
    assert re.findall(r"output: (data/features/shards/\S+\.json)", plan) == [f"data/features/shards/{shard}.json"]
    assert "Params have changed since last execution" in plan


def test_changing_mel_bands_reruns_features_not_crop(repro):
    root, _ = repro
    crops = sorted((root / "data/clips").glob("*.mp4")) + sorted((root / "data/raw").glob("*"))
    before = {p: p.stat().st_mtime_ns for p in crops}
    features_before = (root / "data/features/vox2-00015.parquet").stat().st_mtime_ns
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["features"]["n_mels"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    logs_before = set((root / ".snakemake/log").glob("*.log"))
    proc = run(["dvc", "repro"], root)
    assert "Stage 'data' didn't change, skipping" in proc.stdout
    assert "Running stage 'features'" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in crops} == before  # download and crop untouched
    assert (root / "data/features/vox2-00015.parquet").stat().st_mtime_ns != features_before
    table, meta = read_table(root / "data/dataset/train.parquet", columns=["mel"])
    assert meta["n_mels"] == 20 and list_column_to_numpy(table["mel"]).shape[1:] == (4, 20)
    this_run = "".join(p.read_text() for p in set((root / ".snakemake/log").glob("*.log")) - logs_before)
    assert "rule features:" in this_run and "rule dataset:" in this_run
    assert "rule clips:" not in this_run  # download and crop
    assert "rule syncer:" in this_run  # the dataset changed, so the syncers retrain on it


def test_invalid_param_stops_with_key_named(tmp_path):
    bad = tiny_params()
    bad["crop"]["box_scale"] = 12
    root = make_project(tmp_path / "project", bad)
    proc = run(["snakemake", "-n", "--cores", "1"], root, check=False)
    assert proc.returncode != 0
    assert "crop.box_scale" in proc.stdout + proc.stderr


def test_path_traversing_manifest_id_stops_the_run(tmp_path):
    root = make_project(tmp_path / "project", tiny_params(manifest="config/evil.csv"))
    (root / "config/evil.csv").write_text("id,url,speaker\n../../etc/passwd,file:x.mp4,eve\n")
    proc = run(["snakemake", "-n", "--cores", "1"], root, check=False)
    assert proc.returncode != 0
    assert "must not contain path separators or '..'" in proc.stdout + proc.stderr


def test_strict_makes_an_unobtainable_clip_fatal(tmp_path):
    root = make_project(tmp_path / "project", tiny_params(strict=True))
    record = tiny_shard_record("clips", "missing-clip")
    proc = run(["snakemake", "--cores", "1", record], root, check=False)
    assert proc.returncode != 0
    assert "does not exist" in (root / "logs/clips" / Path(record).name).with_suffix(".log").read_text()


def _snakemake_output_patterns() -> list[str]:
    text = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    return re.findall(r'"((?:data|models|results|folds)/[^"]+)"', text)


def _produced_by_a_rule(path: str, patterns: list[str]) -> bool:
    """A file matching a rule's output pattern, or a directory that rule outputs live in."""
    for pattern in patterns:
        regex = re.sub(r"\\{\{?\w+\}?\\}", "[^/]+", re.escape(pattern))
        if re.fullmatch(regex, path) or pattern.startswith(path.rstrip("/") + "/"):
            return True
    return False


def test_every_dvc_out_is_a_snakemake_target():
    """dvc.yaml and the Snakefile cannot drift: each out/metric/plot comes from a rule, each cmd is a rule."""
    stages = {name: stage for path in (REPO / "dvc.yaml", REPO / "workflow/crossval/dvc.yaml")
              for name, stage in yaml.safe_load(path.read_text())["stages"].items()}
    patterns = _snakemake_output_patterns()
    rules = run(["snakemake", "--list-rules"], REPO).stdout.split()
    for name, stage in stages.items():
        target = stage["cmd"].split()[-1]
        assert stage["cmd"].startswith("snakemake --cores all ") and target in rules, name
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path = next(iter(out)) if isinstance(out, dict) else out
                assert _produced_by_a_rule(path, patterns), (name, kind, path)
                assert out[path].get("persist") is True, (name, path)  # DVC must not delete what Snakemake tracks
