"""Plain helpers shared by the tests (fixtures live in conftest.py): where ../shared is, markers
for what a test needs, real-tool helpers (ffmpeg, a throw-away project) and the import scanner
the architecture and DVC-deps tests share. Tests import them: `from helpers import ...`."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from mssync.core.config import CropSettings, LandmarkerSettings
from mssync.core.records import OK, read_record, write_record

REPO = Path(__file__).resolve().parents[1]

REPO_ROOT = REPO

SHARED = Path(__file__).resolve().parents[2] / "shared"

CLIPS_DIR = SHARED / "data" / "clips"

MODEL_PATH = SHARED / "models" / "face_landmarker.task"

FFMPEG = shutil.which("ffmpeg")

requires_clips = pytest.mark.skipif(not CLIPS_DIR.is_dir(), reason=f"sample clips not found at {CLIPS_DIR}")

requires_model = pytest.mark.skipif(not MODEL_PATH.is_file(), reason=f"landmarker model not found at {MODEL_PATH}")

requires_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg binary not on PATH")

def make_raw(tmp_path: Path, clip_id: str, src_path: Path, trim: dict | None = None) -> Path:
    """Place `src_path` at tmp/raw/{clip_id}.mp4 with an 'ok' download record; return the record path."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    dest = raw / f"{clip_id}.mp4"
    shutil.copyfile(src_path, dest)
    record = raw / f"{clip_id}.json"
    write_record(record, clip_id, "download", OK, file=f"{clip_id}.mp4", speaker=clip_id, trim=trim, sha256=None)
    return record

def crop_sample(
    tmp_path: Path,
    clip_id: str,
    src_path: Path,
    crop_settings: CropSettings,
    landmarker_settings: LandmarkerSettings,
    trim: dict | None = None,
) -> tuple[dict, Path]:
    """make_raw + the real crop stage into tmp/clips; returns (record as read back from disk, out dir).

    Also checks that the returned record is the one on disk.
    """
    from mssync.data.crop import crop_clip

    out_dir = tmp_path / "clips"
    returned = crop_clip(raw_record=make_raw(tmp_path, clip_id, src_path, trim), out_dir=out_dir, settings=crop_settings, landmarker=landmarker_settings)
    on_disk = read_record(out_dir / f"{clip_id}.json")
    assert on_disk == json.loads(json.dumps(returned, default=str)), "crop_clip returned a different record than it wrote"
    return on_disk, out_dir

TINY_DATASET_CLIPS = {"vox2-00015": "train", "vox2-00086": "val", "vox2-00373": "test"}  # 5 s cuts (125 frames)

def run_ffmpeg(*args: str | Path) -> None:
    """Run the real ffmpeg binary; fail the test with its stderr when it fails."""
    if FFMPEG is None:
        pytest.skip("ffmpeg binary not on PATH")
    cmd = [FFMPEG, "-nostdin", "-y", "-loglevel", "error", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")

def video_frame_times(path: Path) -> list[float]:
    """Presentation times (s) of every decoded video frame, from the real ffprobe."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe binary not on PATH")
    proc = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return [float(f["pts_time"]) for f in json.loads(proc.stdout)["frames"]]


PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "profiles", "workflow", "config", "src/mssync"]

TINY_CLIPS = ["vox2-00015", "vox2-00086", "vox2-00373", "hdtf-ted-lieu"]

def tiny_shard_record(step: str, clip_id: str) -> str:
    """The shard record ('clips' or 'features') of the job that makes `clip_id`'s files in the tiny
    config: data/{clips,features}/shards/{shard}.json."""
    from mssync.data.manifest import read_manifest
    from mssync.data.shards import group_shards

    params = tiny_params()
    ids = [entry.id for entry in read_manifest(REPO / params["manifest"])]
    shard = next(name for name, members in group_shards(ids, params["shards"]["size"]).items() if clip_id in members)
    return f"data/{step}/shards/{shard}.json"


TINY_FRAMES = 125  # 5 s cuts at 25 fps: long enough for one level-3 (1.6 s) syncer group

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

RUN_OUTPUTS = ("results", "models")  # what a run measured and trained (data/ shard records keep wall times)


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file a pipeline run wrote under RUN_OUTPUTS, by path relative to `root`; dot
    files are left out (Snakemake's directory stamps, the .gitignore files DVC adds)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for top in RUN_OUTPUTS for path in sorted((root / top).rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)}


SRC = REPO / "src"

ROOT_PACKAGE = "mssync"

def module_name(path: Path) -> str:
    """src/mssync/gan/train.py -> mssync.gan.train; src/mssync/gan/__init__.py -> mssync.gan."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module of a `from X import ...`, relative ones resolved against the importer."""
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@dataclasses.dataclass(frozen=True)
class Import:
    """One mssync module imported by one statement: `where` is file:line for messages."""

    importer: str
    target: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

def module_file(name: str) -> Path | None:
    """The file that defines module `name` (a .py file or a package's __init__.py), if any."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None

def module_files() -> list[Path]:
    return sorted((SRC / ROOT_PACKAGE).rglob("*.py"))

@cache
def mssync_imports(path: Path) -> tuple[Import, ...]:
    """Every mssync module the file imports, anywhere in it (module level, functions, classes).

    `from mssync.a import b` counts as importing mssync.a.b when b is a submodule, else mssync.a.
    """
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            targets = [f"{module}.{alias.name}" if module_file(f"{module}.{alias.name}") else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == ROOT_PACKAGE or target.startswith(ROOT_PACKAGE + "."):
                found.append(Import(importer, target, path, node.lineno))
    return tuple(sorted(set(found), key=lambda i: (i.line, i.target)))
