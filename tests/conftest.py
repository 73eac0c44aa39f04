"""Shared fixtures: real sample clips, params.yaml settings, and bad clips made with real ffmpeg.

Nothing here mocks ffmpeg or mediapipe. Clips made by `ffmpeg` are kept short (2.5-4 s) so the
suite stays fast; the session-scoped `make_clip` caches each made clip by name for the session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from mssync.core.config import CropSettings, FeatureSettings, LandmarkerSettings, load_params
from mssync.core.records import OK, read_record, write_record

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIPS_DIR = SHARED / "data" / "clips"
MODEL_PATH = SHARED / "models" / "face_landmarker.task"
FFMPEG = shutil.which("ffmpeg")

requires_clips = pytest.mark.skipif(not CLIPS_DIR.is_dir(), reason=f"sample clips not found at {CLIPS_DIR}")
requires_model = pytest.mark.skipif(not MODEL_PATH.is_file(), reason=f"landmarker model not found at {MODEL_PATH}")
requires_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg binary not on PATH")


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


def make_raw(tmp_path: Path, clip_id: str, src_path: Path, trim: dict | None = None) -> Path:
    """Place `src_path` at tmp/raw/{clip_id}.mp4 with an 'ok' download record; return the record path."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    dest = raw / f"{clip_id}.mp4"
    shutil.copyfile(src_path, dest)
    record = raw / f"{clip_id}.json"
    write_record(record, clip_id, "download", OK, file=f"{clip_id}.mp4", speaker=clip_id, trim=trim, sha256=None)
    return record


@pytest.fixture(name="make_raw", scope="session")
def _make_raw_fixture() -> Callable[..., Path]:
    """The `make_raw` helper as a fixture, for tests that prefer not to import conftest."""
    return make_raw


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
    returned = crop_clip(make_raw(tmp_path, clip_id, src_path, trim), out_dir, crop_settings, landmarker_settings)
    on_disk = read_record(out_dir / f"{clip_id}.json")
    assert on_disk == json.loads(json.dumps(returned, default=str)), "crop_clip returned a different record than it wrote"
    return on_disk, out_dir


# --------------------------------------------------------------------------- a tiny real dataset

TINY_DATASET_CLIPS = {"vox2-00015": "train", "vox2-00086": "val", "vox2-00373": "test"}  # 5 s cuts (125 frames)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, sample_clip, crop_settings, landmarker_settings, feature_settings) -> dict:
    """Three real 5 s clips through the real crop, features and dataset stages (one clip per split),
    and a motion space fitted on the train clip: what GAN and rendering tests build on."""
    from mssync.core.config import DatasetSettings, MotionSettings
    from mssync.features.dataset import build_dataset
    from mssync.features.features import extract_features
    from mssync.motion.motion_space import fit_motion_space

    root = tmp_path_factory.mktemp("tiny-dataset")
    rows = ["id,url,speaker,start_s,end_s,split"]
    for clip_id, split in TINY_DATASET_CLIPS.items():
        record, clips_dir = crop_sample(root, clip_id, sample_clip(clip_id), crop_settings, landmarker_settings,
                                        trim={"start_s": 0, "end_s": 5})
        assert record["status"] == "ok", record.get("reason")
        extract_features(clips_dir / f"{clip_id}.json", root / "features" / f"{clip_id}.parquet", feature_settings,
                         landmarker_settings)
        rows.append(f"{clip_id},file:{clip_id}.mp4,{clip_id},0,5,{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    by_split = build_dataset(root / "manifest.csv", root / "raw", root / "clips", root / "features", root / "dataset",
                             root / "rejected.csv", DatasetSettings(0, 0.12, 0.16, 0.9))
    assert by_split == {split: [clip] for clip, split in TINY_DATASET_CLIPS.items()}
    split = {s: root / "dataset" / f"{s}.parquet" for s in ("train", "val", "test")}
    space = root / "motion_space.npz"
    fit_motion_space(split["train"], split["val"], split["test"], space, root / "motion_space.json",
                     MotionSettings(expression_components=8, smooth_frames=3, max_gap_frames=12))
    test_clip = next(c for c, s in TINY_DATASET_CLIPS.items() if s == "test")
    return {"root": root, "split": split, "space": space, "clips_dir": root / "clips",
            "features": root / "features" / f"{test_clip}.parquet", "wav": root / "clips" / f"{test_clip}.wav"}


# --------------------------------------------------------------------------- ffmpeg


def run_ffmpeg(*args: str | Path) -> None:
    """Run the real ffmpeg binary; fail the test with its stderr when it fails."""
    if FFMPEG is None:
        pytest.skip("ffmpeg binary not on PATH")
    cmd = [FFMPEG, "-nostdin", "-y", "-loglevel", "error", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


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


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models: one thread is fastest, and immune to OpenMP spinning when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
