"""Motion space: rotations, the similarity + PCA encoding and its inverse, gap filling, smoothing,
syncer features, persistence, and the fit stage end to end.

Unit tests run on synthetic meshes. The real-landmark tests crop the first 3 s of a real sample
clip and run the real landmarker on it once per module (skipped when the clips or model are absent).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import crop_sample, requires_clips

from mssync.core.config import MotionSettings
from mssync.core.errors import MssyncError
from mssync.core.integrity import DamagedFile
from mssync.features.features import extract_features
from mssync.features.schema import features_table, list_column_to_numpy, read_table, write_table
from mssync.media.mesh import JAW_LANDMARKS, LIP_LANDMARKS, RIGID_LANDMARKS
from mssync.motion.clips import iter_clips
from mssync.motion.motion_cache import MotionCache, NpyRows, cache_files, load_cache, write_motion_cache
from mssync.motion.motion_space import fit_motion_space
from mssync.motion.space import FORMAT_VERSION, MotionSpace, axis_angle_to_matrix, matrix_to_axis_angle, moving_average

CLIP = "vox2-00010"
CROP = 256  # px; landmark units are fractions of the crop


def settings(k: int = 6, smooth: int = 1, max_gap: int = 3) -> MotionSettings:
    return MotionSettings(expression_components=k, smooth_frames=smooth, max_gap_frames=max_gap, fit_max_frames=20000,
                          fit_seed=0)


def random_rotations(rng: np.random.Generator, n: int, max_angle: float = 0.6) -> np.ndarray:
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * rng.uniform(0, max_angle, size=(n, 1))


def synthetic_clip(rng: np.random.Generator, n: int = 120, rank: int = 4):
    """A random mesh posed by known similarities, with a rank-`rank` expression off the rigid points."""
    base = rng.normal(size=(478, 3)) * 0.1
    basis = rng.normal(size=(rank, 478, 3)) * 0.02
    basis[:, list(RIGID_LANDMARKS)] = 0
    coeffs = rng.normal(size=(n, rank))
    shapes = base + np.einsum("nr,rpc->npc", coeffs, basis)
    aa = random_rotations(rng, n)
    scale = rng.uniform(0.8, 1.6, n)
    shift = rng.uniform(0.3, 0.7, (n, 3))
    rot = axis_angle_to_matrix(aa)
    landmarks = scale[:, None, None] * shapes @ np.swapaxes(rot, 1, 2) + shift[:, None]
    return landmarks.astype(np.float32), rot, scale


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    landmarks, rot, scale = synthetic_clip(rng)
    space = MotionSpace.fit([(landmarks, np.ones(len(landmarks), bool))], settings(k=6))
    return space, landmarks, rot, scale


# --------------------------------------------------------------------------- rotations


def test_rodrigues_round_trip_numpy_and_torch_including_tiny_and_large_angles():
    rng = np.random.default_rng(1)
    aa = np.concatenate([
        random_rotations(rng, 200, max_angle=3.1),
        random_rotations(rng, 20, max_angle=1e-6),
        np.zeros((1, 3)),
        [[np.pi - 1e-7, 0, 0], [0, 3.0, 0.5]],
    ])
    rot = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(rot), aa, atol=1e-6)
    np.testing.assert_allclose(matrix_to_axis_angle(rot[:, None])[:, 0], aa, atol=1e-6)  # extra batch dim

    rot_t = axis_angle_to_matrix(torch.tensor(aa))
    np.testing.assert_allclose(rot_t.numpy(), rot, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(rot_t.numpy()), aa, atol=1e-6)

    tiny = torch.tensor([[0.0, 0.0, 0.0], [1e-9, -2e-9, 0.0], [0.3, 0.2, -0.1]], requires_grad=True)
    axis_angle_to_matrix(tiny).sum().backward()
    assert torch.isfinite(tiny.grad).all()


# --------------------------------------------------------------------------- synthetic fit


def test_synthetic_encode_decode_is_exact_and_recovers_the_known_poses(synthetic):
    space, landmarks, rot, scale = synthetic
    assert space.dim == 7 + 6 and space.components.shape == (6, 1434)
    np.testing.assert_allclose(space.components @ space.components.T, np.eye(6), atol=1e-5)
    rigid = space.canonical[list(RIGID_LANDMARKS)]
    assert abs(rigid.mean(0)).max() < 1e-6 and abs(np.sqrt((rigid**2).sum(1).mean()) - 1) < 1e-6

    motion, valid = space.encode(landmarks, np.ones(len(landmarks), bool))
    assert motion.shape == (len(landmarks), space.dim) and motion.dtype == np.float32 and valid.all()
    assert abs(space.decode(motion) - landmarks).max() < 1e-4
    decoded_t = space.decode(torch.from_numpy(motion).double())
    assert abs(decoded_t.numpy() - landmarks).max() < 1e-4

    # Pose relative to frame 0 is the known one, whatever the canonical frame is.
    r_hat = axis_angle_to_matrix(motion[:, :3].astype(np.float64))
    np.testing.assert_allclose(r_hat @ r_hat[0].T, rot @ rot[0].T, atol=1e-5)
    np.testing.assert_allclose(np.exp(motion[:, 6] - motion[0, 6]), scale / scale[0], rtol=1e-5)
    # The rank-4 expression lives in the first 4 components.
    assert space.explained_variance_ratio[:4].sum() > 1 - 1e-6
    assert space.fit_frames == len(landmarks)


def test_expression_dim_follows_settings_and_is_bounded_by_the_data(synthetic):
    _, landmarks, _, _ = synthetic
    flags = np.ones(len(landmarks), bool)
    for k in (1, 2, 40):
        assert MotionSpace.fit([(landmarks, flags)], settings(k=k)).dim == 7 + k
    with pytest.raises(MssyncError, match="components"):
        MotionSpace.fit([(landmarks[:10], flags[:10])], settings(k=11))
    fitted = MotionSpace.fit([(landmarks[:10], flags[:10])], settings(k=10))  # full rank: exact
    motion, _ = fitted.encode(landmarks[:10], flags[:10])
    assert abs(fitted.decode(motion) - landmarks[:10]).max() < 1e-5


# --------------------------------------------------------------------------- gaps and smoothing


def test_gaps_are_interpolated_and_long_gaps_and_ends_marked_invalid(synthetic):
    space, landmarks, _, _ = synthetic
    space = MotionSpace(**{**space.__dict__, "max_gap_frames": 3, "smooth_frames": 1})
    full, _ = space.encode(landmarks, np.ones(len(landmarks), bool))
    face = np.ones(len(landmarks), bool)
    face[[0, 1]] = False  # clip start
    face[10:13] = False  # short gap (3 <= max_gap)
    face[30:34] = False  # long gap (4 > max_gap)
    face[-1] = False  # clip end
    holed = landmarks.copy()
    holed[~face] = np.nan
    motion, valid = space.encode(holed, face)

    assert np.isfinite(motion).all()
    np.testing.assert_allclose(motion[face], full[face], atol=1e-6)
    for gap in (slice(10, 13), slice(30, 34)):
        a, b = gap.start - 1, gap.stop
        w = (np.arange(gap.start, gap.stop) - a)[:, None] / (b - a)
        np.testing.assert_allclose(motion[gap], (1 - w) * full[a] + w * full[b], atol=1e-5)
    np.testing.assert_allclose(motion[[0, 1, -1]], full[[2, 2, -2]], atol=1e-6)  # held at the ends
    expected = face.copy()
    expected[10:13] = True
    np.testing.assert_array_equal(valid, expected)

    with pytest.raises(MssyncError, match="no frame"):
        space.encode(holed, np.zeros(len(face), bool))


def test_moving_average_width_3_with_reflect_padding():
    x = np.array([[0.0], [3.0], [6.0], [0.0], [9.0]], np.float32)
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [2.0, 3.0, 3.0, 5.0, 3.0])  # ends: (3+0+3)/3, (0+9+0)/3
    assert moving_average(x, 1) is x
    with pytest.raises(MssyncError, match="odd"):
        moving_average(x, 2)


def test_encode_smooths_after_gap_filling(synthetic):
    space, landmarks, _, _ = synthetic
    flags = np.ones(len(landmarks), bool)
    raw, _ = MotionSpace(**{**space.__dict__, "smooth_frames": 1}).encode(landmarks, flags)
    smooth, _ = MotionSpace(**{**space.__dict__, "smooth_frames": 3}).encode(landmarks, flags)
    np.testing.assert_allclose(smooth, moving_average(raw, 3), atol=1e-6)


# --------------------------------------------------------------------------- syncer features


def test_syncer_features_are_affine_and_agree_between_numpy_and_torch(synthetic):
    space, landmarks, _, _ = synthetic
    motion, _ = space.encode(landmarks, np.ones(len(landmarks), bool))
    feats = space.syncer_features(motion)
    assert feats.shape == (len(motion), space.syncer_dim) and feats.dtype == np.float32
    assert space.syncer_dim == 7 + 2 * (len(LIP_LANDMARKS) + len(JAW_LANDMARKS))
    np.testing.assert_array_equal(feats[:, :7], motion[:, :7])
    # The landmark part is the canonical-space x, y of the expression shape.
    shape = space.canonical + (space.pca_mean + motion[:, 7:] @ space.components).reshape(-1, 478, 3)
    idx = list(LIP_LANDMARKS + JAW_LANDMARKS)
    np.testing.assert_allclose(feats[:, 7:], shape[:, idx, :2].reshape(len(motion), -1), atol=1e-5)

    m = torch.tensor(motion[None], requires_grad=True)  # (1, T, D): leading dims pass through
    feats_t = space.syncer_features(m)
    assert feats_t.shape == (1, len(motion), space.syncer_dim)
    np.testing.assert_allclose(feats_t[0].detach().numpy(), feats, atol=1e-5)
    feats_t.square().sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0

    a, b = motion[:5], motion[5:10]
    zero = np.zeros_like(a)
    f = space.syncer_features
    np.testing.assert_allclose(f(a + b) - f(b), f(a) - f(zero), atol=1e-4)


def test_torch_decode_is_differentiable(synthetic):
    space, landmarks, _, _ = synthetic
    motion, _ = space.encode(landmarks[:4], np.ones(4, bool))
    m = torch.tensor(motion, requires_grad=True)
    out = space.decode(m)
    assert out.shape == (4, 478, 3) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(m.grad).all() and m.grad[:, :7].abs().sum() > 0


# --------------------------------------------------------------------------- persistence


def test_save_load_round_trip_and_unknown_version_refused(synthetic, tmp_path):
    space, landmarks, _, _ = synthetic
    path = tmp_path / "space.npz"
    space.save(path)
    loaded = MotionSpace.load(path)
    for name in ("canonical", "pca_mean", "components", "component_std", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(space, name))
    assert (loaded.smooth_frames, loaded.max_gap_frames, loaded.fit_frames) == (
        space.smooth_frames, space.max_gap_frames, space.fit_frames)
    flags = np.ones(len(landmarks), bool)
    np.testing.assert_array_equal(loaded.encode(landmarks, flags)[0], space.encode(landmarks, flags)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["space.npz"]  # no temporary left behind

    with np.load(path) as z:
        arrays = dict(z)
    arrays["format_version"] = np.int64(FORMAT_VERSION + 1)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(MssyncError, match="format version"):
        MotionSpace.load(tmp_path / "future.npz")
    with pytest.raises(MssyncError, match="no such"):
        MotionSpace.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- real landmarks


@pytest.fixture(scope="module")
def real_features(tmp_path_factory, sample_clip, crop_settings, landmarker_settings, feature_settings):
    """Path of the features Parquet of the first 3 s (75 frames) of a real talking head."""
    tmp = tmp_path_factory.mktemp("motion-real")
    record, out_dir = crop_sample(tmp, "talk", sample_clip(CLIP), crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 3})
    assert record["status"] == "ok", record.get("reason")
    out = tmp / "talk.parquet"
    extract_features(crop_record=out_dir / "talk.json", out=out, settings=feature_settings, landmarker=landmarker_settings)
    return out


@pytest.fixture(scope="module")
def real_landmarks(real_features):
    table, _ = read_table(real_features)
    landmarks = list_column_to_numpy(table.column("landmarks"))
    face = table.column("face_found").to_numpy(zero_copy_only=False)
    assert face.all(), "the sample's first 3 s should have a face in every frame"
    return landmarks


@requires_clips
@pytest.mark.integration
def test_real_landmarks_reconstruct_within_a_fraction_of_a_pixel(real_landmarks):
    lm = real_landmarks
    flags = np.ones(len(lm), bool)

    def error_px(space, frames):
        motion, _ = space.encode(frames, np.ones(len(frames), bool))
        return np.linalg.norm(space.decode(motion) - frames, axis=-1) * CROP

    # Held out: fit on the first 2 s, reconstruct the last second.
    held_out = error_px(MotionSpace.fit([(lm[:50], flags[:50])], settings(k=40)), lm[50:])  # ~0.4 px
    assert held_out.mean() < 1.0, held_out.mean()
    # K = 40 on the fitted frames, and full rank (exact).
    assert error_px(MotionSpace.fit([(lm, flags)], settings(k=40)), lm).mean() < 0.1  # ~0.05 px
    assert error_px(MotionSpace.fit([(lm, flags)], settings(k=len(lm))), lm).max() < 1e-3
    # Poses are plausible: a face of sensible size near the centre of the crop.
    motion, _ = MotionSpace.fit([(lm, flags)], settings(k=40)).encode(lm, flags)
    assert (abs(motion[:, 3:5] - 0.5) < 0.4).all() and (np.exp(motion[:, 6]) * CROP > 10).all()


@requires_clips
@pytest.mark.integration
def test_fit_motion_space_end_to_end_on_three_small_splits(real_features, tmp_path):
    table, meta = read_table(real_features)
    columns = {name: list_column_to_numpy(table.column(name)) for name in ("landmarks", "pose", "blendshapes", "mel")}
    face = table.column("face_found").to_numpy(zero_copy_only=False).copy()
    meta = {k: v for k, v in meta.items() if k != "schema_version"}
    paths = {}
    for i, split in enumerate(("train", "val", "test")):
        rows = slice(25 * i, 25 * i + 25)
        cols = {k: v[rows].copy() for k, v in columns.items()}
        flags = face[rows].copy()
        if split == "val":  # a short gap inside the clip
            flags[5:7] = False
            cols["landmarks"][5:7] = np.nan
        paths[split] = tmp_path / f"{split}.parquet"
        write_table(paths[split], features_table(f"fake-{split}", 25, cols["landmarks"], cols["pose"],
                                                 cols["blendshapes"], flags, cols["mel"], {**meta, "clip_id": f"fake-{split}"}))

    out, metrics = tmp_path / "models" / "motion_space.npz", tmp_path / "metrics" / "motion.json"
    report = fit_motion_space(train=paths["train"], val=paths["val"], test=paths["test"], out=out, metrics=metrics, settings=settings(k=8, smooth=3, max_gap=12),
                              crop_size=256)
    written = json.loads(metrics.read_text())
    assert written == json.loads(json.dumps(report))
    assert (written["components"], written["dim"], written["syncer_dim"]) == (8, 15, 121)
    assert written["train_frames_with_face"] == 25  # fitted on train only
    assert 0.5 < written["explained_variance_ratio"] <= 1 + 1e-9
    assert len(written["explained_variance_ratio_per_component"]) == 8
    recon = written["reconstruction_unsmoothed"]
    assert recon["val"]["frames"] == 23 and recon["test"]["frames"] == 25
    for split in ("train", "val", "test"):
        for key in ("mean_px", "p95_px", "lips_mean_px", "lips_p95_px", "rigid_fit_residual_mean_px"):
            assert np.isfinite(recon[split][key]), (split, key)
    assert recon["train"]["mean_px"] < recon["test"]["mean_px"] < 5

    space = MotionSpace.load(out)
    assert space.dim == 15 and space.smooth_frames == 3
    index = write_motion_cache(split=paths["val"], space_path=out, prefix=tmp_path / "motion" / "val")
    assert (index["frames"], index["dim"], index["mel_per_frame"]) == (25, 15, 4)
    cache = MotionCache.open(tmp_path / "motion" / "val")
    assert isinstance(cache.motion, NpyRows) and isinstance(cache.mel, NpyRows)  # opened, nothing read
    np.testing.assert_array_equal(cache.mel.rows(3, 9), np.load(cache_files(tmp_path / "motion" / "val")["mel"])[3:9])
    clips = load_cache(tmp_path / "motion" / "val")
    assert list(clips) == ["fake-val"]
    ((_, cols),) = iter_clips(paths["val"], ["face_found", "landmarks"])  # the split's one clip
    direct, valid = space.encode(cols["landmarks"], cols["face_found"])
    np.testing.assert_array_equal(clips["fake-val"].motion, direct)  # the cache is the encoding, bit for bit
    np.testing.assert_array_equal(clips["fake-val"].valid, valid)
    clip = clips["fake-val"]
    assert clip.motion.shape == (25, 15) and np.isfinite(clip.motion).all() and clip.valid.all()
    np.testing.assert_array_equal(clip.mel, columns["mel"][25:50].reshape(100, -1))
    assert clip.fps == 25 and clip.speaker is None
    del clips, clip, cache
    mel = cache_files(tmp_path / "motion" / "val")["mel"]  # cut short (a killed copy): named, moved aside
    mel.write_bytes(mel.read_bytes()[:-400])
    with pytest.raises(DamagedFile, match="val.mel.npy"):
        MotionCache.open(tmp_path / "motion" / "val")
    assert mel.with_name(mel.name + ".damaged").is_file()

