"""Shared fixtures: real sample clips, params.yaml settings, and bad clips made with real ffmpeg.

Nothing here mocks ffmpeg or mediapipe. Clips made by `ffmpeg` are kept short (2.5-4 s) so the
suite stays fast; the session-scoped `make_clip` caches each made clip by name for the session.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from helpers import (
    CLIPS_DIR,
    MODEL_PATH,
    REPO_ROOT,
    SHARED,
    TINY_DATASET_CLIPS,
    crop_sample,
    make_project,
    make_raw,
    output_digests,
    run,
    run_ffmpeg,
    tiny_params,
)

from mssync.core.config import CropSettings, FeatureSettings, LandmarkerSettings, load_params

# --------------------------------------------------------------------------- paths and settings


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def sample_clip() -> Callable[[str], Path]:
    """`sample_clip("vox2-00010")` -> path of a real sample clip; skips when the clips are absent."""

    def path(name: str) -> Path:
        clip = CLIPS_DIR / (name if name.endswith(".mp4") else f"{name}.mp4")
        if not clip.is_file():
            pytest.skip(f"sample clip not found: {clip}")
        return clip

    return path


@pytest.fixture(scope="session")
def params() -> dict:
    """The repository's params.yaml (validated), with the landmarker model made absolute."""
    loaded = load_params(REPO_ROOT / "params.yaml")
    loaded["landmarker"] = {**loaded["landmarker"], "model": str(MODEL_PATH)}
    return loaded


@pytest.fixture(scope="session")
def crop_settings(params: dict) -> CropSettings:
    return CropSettings(**params["crop"])


@pytest.fixture(scope="session")
def landmarker_settings(params: dict) -> LandmarkerSettings:
    if not MODEL_PATH.is_file():
        pytest.skip(f"landmarker model not found at {MODEL_PATH}")
    return LandmarkerSettings(**params["landmarker"])


@pytest.fixture(scope="session")
def feature_settings(params: dict) -> FeatureSettings:
    return FeatureSettings(**params["features"])


# --------------------------------------------------------------------------- raw clips and records




@pytest.fixture(name="make_raw", scope="session")
def _make_raw_fixture() -> Callable[..., Path]:
    """The `make_raw` helper as a fixture, for tests that prefer not to import conftest."""
    return make_raw




# --------------------------------------------------------------------------- a tiny real dataset



@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, sample_clip, crop_settings, landmarker_settings, feature_settings) -> dict:
    """Three real 5 s clips through the real crop, features and dataset stages (one clip per split),
    a motion space fitted on the train clip and each split's motion cache: what GAN and rendering tests build on."""
    from mssync.core.config import DatasetSettings, MotionSettings
    from mssync.features.dataset import build_dataset
    from mssync.features.features import extract_features
    from mssync.motion.motion_cache import write_motion_cache
    from mssync.motion.motion_space import fit_motion_space

    root = tmp_path_factory.mktemp("tiny-dataset")
    rows = ["id,url,speaker,start_s,end_s,split"]
    for clip_id, split in TINY_DATASET_CLIPS.items():
        record, clips_dir = crop_sample(root, clip_id, sample_clip(clip_id), crop_settings, landmarker_settings,
                                        trim={"start_s": 0, "end_s": 5})
        assert record["status"] == "ok", record.get("reason")
        extract_features(crop_record=clips_dir / f"{clip_id}.json", out=root / "features" / f"{clip_id}.parquet", settings=feature_settings,
                         landmarker=landmarker_settings)
        rows.append(f"{clip_id},file:{clip_id}.mp4,{clip_id},0,5,{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    by_split = build_dataset(manifest=root / "manifest.csv", raw_dir=root / "raw", clips_dir=root / "clips", features_dir=root / "features", out_dir=root / "dataset",
                             rejected_csv=root / "rejected.csv", settings=DatasetSettings(0, 0.12, 0.16, 0.9))
    assert by_split == {split: [clip] for clip, split in TINY_DATASET_CLIPS.items()}
    split = {s: root / "dataset" / f"{s}.parquet" for s in ("train", "val", "test")}
    space = root / "motion_space.npz"
    fit_motion_space(train=split["train"], val=split["val"], test=split["test"], out=space, metrics=root / "motion_space.json",
                     settings=MotionSettings(expression_components=8, smooth_frames=3, max_gap_frames=12,
                                             fit_max_frames=20000, fit_seed=0), crop_size=256)
    cache = {s: root / "motion" / s for s in split}  # what the trainers and evaluations read
    for name, path in split.items():
        write_motion_cache(split=path, space_path=space, prefix=cache[name])
    test_clip = next(c for c, s in TINY_DATASET_CLIPS.items() if s == "test")
    return {"root": root, "split": split, "cache": cache, "space": space, "clips_dir": root / "clips",
            "features": root / "features" / f"{test_clip}.parquet", "wav": root / "clips" / f"{test_clip}.wav"}


# --------------------------------------------------------------------------- the tiny pipeline


@dataclasses.dataclass(frozen=True)
class TinyRun:
    root: Path
    proc: subprocess.CompletedProcess
    outputs: dict[str, str]  # helpers.output_digests as the run left them, before any test changed the project


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> TinyRun:
    """`dvc repro` of the tiny project (every phase, through Snakemake), once per session:
    tests/test_workflow.py builds on it (and changes it), tests/test_reproducible.py compares what
    it made with a second run's."""
    root = make_project(tmp_path_factory.mktemp("dvc") / "project", tiny_params())
    proc = run(["dvc", "repro"], root)
    return TinyRun(root, proc, output_digests(root))


# --------------------------------------------------------------------------- ffmpeg




@pytest.fixture(scope="session")
def ffmpeg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ffmpeg-clips")


@pytest.fixture(scope="session")
def ffmpeg() -> Callable[..., None]:
    """`ffmpeg("-i", src, ..., dst)`: the real binary with `-y -loglevel error`."""
    return run_ffmpeg


@pytest.fixture(scope="session")
def make_clip(ffmpeg_dir: Path) -> Callable[..., Path]:
    """`make_clip(name, *ffmpeg_args)` -> ffmpeg_dir/name, made once per session (args end before the output).

    The same name always means the same clip within a session, so tests (and modules) can share
    one encode.
    """
    made: dict[str, Path] = {}

    def make(name: str, *args: str | Path) -> Path:
        if name not in made:
            out = ffmpeg_dir / name
            run_ffmpeg(*args, out)
            made[name] = out
        return made[name]

    return make




@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models: one thread is fastest, and immune to OpenMP spinning when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
