"""The orchestration, for real: Snakemake and DVC on the tiny config (4 real 3 s clips + 1
unobtainable), in a throw-away copy of the project so the developer's data/ is untouched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mssync.records import read_record
from mssync.schema import list_column_to_numpy, read_metadata, read_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "config", "src/mssync"]
TINY_CLIPS = ["vox2-00010", "vox2-00086", "vox2-00373", "hdtf-ted-lieu"]

pytestmark = pytest.mark.integration


def tool_env() -> dict[str, str]:
    """Run snakemake/dvc/mssync from the same environment as the tests."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_params(**overrides) -> dict:
    params = yaml.safe_load((REPO / "config/tiny/params.yaml").read_text())
    params["download"]["mirror_dir"] = str(SHARED / "data/clips")
    params["landmarker"]["model"] = str(SHARED / "models/face_landmarker.task")
    params.update(overrides)
    return params


def make_project(root: Path, params: dict) -> Path:
    """A git+DVC project holding this repo's workflow files and the given params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for item in PROJECT_FILES:
        src, dst = REPO / item, root / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"], root)
    run(["dvc", "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`dvc repro` of the tiny project: both phases, through Snakemake."""
    root = make_project(tmp_path_factory.mktemp("dvc") / "project", tiny_params())
    return root, run(["dvc", "repro"], root)


def test_dvc_repro_runs_pipeline_to_dataset(repro):
    root, proc = repro
    assert "Running stage 'data'" in proc.stdout and "Running stage 'features'" in proc.stdout
    splits = {s: read_table(root / f"data/dataset/{s}.parquet")[0] for s in ("train", "val", "test")}
    assert sum(t.num_rows for t in splits.values()) == 4 * 75  # four 3 s cuts at 25 fps
    speakers = {s: set(read_metadata(root / f"data/dataset/{s}.parquet")["clips"]) for s in splits}
    assert set().union(*speakers.values()) == set(TINY_CLIPS)
    assert "hdtf-ted-lieu" in speakers["train"]  # pinned by the manifest's split column
    assert all(len(v) >= 1 for v in speakers.values())
    for clip in TINY_CLIPS:
        assert (root / f"data/previews/{clip}.png").stat().st_size > 0
        table, meta = read_table(root / f"data/features/{clip}.parquet")
        assert table.num_rows == 75 and meta["n_mels"] == 26
    rejected = (root / "data/rejected.csv").read_text().splitlines()
    assert rejected[0] == "clip_id,speaker,stage,reason"
    assert len(rejected) == 2 and rejected[1].startswith("missing-clip,nobody,download,")
    assert read_record(root / "data/raw/missing-clip.json")["status"] == "rejected"
    assert not (root / "data/raw/missing-clip.mp4").exists()
    assert read_record(root / "data/clips/missing-clip.json")["reason"].startswith("not downloaded: ")
    assert (root / "data/previews/missing-clip.png").stat().st_size > 0  # a text sheet saying why


def test_snakemake_is_up_to_date_after_dvc(repro):
    root, _ = repro
    proc = run(["snakemake", "-n", "--cores", "1"], root)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_mel_bands_reruns_features_not_crop(repro):
    root, _ = repro
    crops = sorted((root / "data/clips").glob("*.mp4")) + sorted((root / "data/raw").glob("*"))
    before = {p: p.stat().st_mtime_ns for p in crops}
    features_before = (root / "data/features/vox2-00010.parquet").stat().st_mtime_ns
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["features"]["n_mels"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    proc = run(["dvc", "repro"], root)
    assert "Stage 'data' didn't change, skipping" in proc.stdout
    assert "Running stage 'features'" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in crops} == before  # download and crop untouched
    assert (root / "data/features/vox2-00010.parquet").stat().st_mtime_ns != features_before
    table, meta = read_table(root / "data/dataset/train.parquet")
    assert meta["n_mels"] == 20 and list_column_to_numpy(table["mel"]).shape[1:] == (4, 20)
    log = (root / ".snakemake/log").glob("*.log")
    newest = max(log, key=lambda p: p.stat().st_mtime).read_text()
    assert "rule features:" in newest and "rule dataset:" in newest
    assert "rule crop:" not in newest and "rule download:" not in newest


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
    proc = run(["snakemake", "--cores", "1", "data/raw/missing-clip.json"], root, check=False)
    assert proc.returncode != 0
    assert "does not exist" in (root / "logs/download/missing-clip.log").read_text()


def _snakemake_output_patterns() -> list[str]:
    text = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    return re.findall(r'"(data/[^"]+|models/[^"]+|results/[^"]+)"', text)


def test_every_dvc_out_is_a_snakemake_target():
    """dvc.yaml and the Snakefile cannot drift: each out is (under) a rule output, each cmd a rule."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    patterns = _snakemake_output_patterns()
    rules = run(["snakemake", "--list-rules"], REPO).stdout.split()
    for name, stage in stages.items():
        target = stage["cmd"].split()[-1]
        assert stage["cmd"].startswith("snakemake --cores all ") and target in rules, name
        for out in stage["outs"]:
            path = next(iter(out)) if isinstance(out, dict) else out
            assert any(p == path or p.startswith(path.rstrip("/") + "/") for p in patterns), (name, path)
            assert out[path].get("persist") is True, (name, path)
