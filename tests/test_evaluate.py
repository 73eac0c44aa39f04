"""Evaluation metrics on cases with known answers.

- sync: an audio track shifted by a known number of frames is recovered as the LSE offset, through
  the same code path as the evaluation (per-clip standardisation, pyramid, distance curve), with a
  probe syncer whose embeddings are the window's own signal, so the only minimum is the true shift;
- head dynamics: identical distributions are at Frechet distance 0 and a known mean shift gives
  its squared length; the static baseline has exactly zero pose velocity and acceleration;
- lips: a mouth opening that follows the audio energy by a known lag peaks at that lag.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mssync.core.config import load_section
from mssync.evaluation import lips
from mssync.evaluation.evaluate import EvaluationSettings, dynamics_metrics, tsv
from mssync.gan.evaluate import GROUND_TRUTH, OTHER_AUDIO, STATIC, Track, baselines, clip_sync
from mssync.media import face_shape
from mssync.motion import dynamics
from mssync.motion.clips import ClipMotion
from mssync.syncers.pyramid import AUDIO_PER_MOTION, MOTION_WINDOW

KERNEL = 7
FPS = 25
rng = np.random.default_rng(0)


def smooth_signal(n: int, width: int = 9, seed: int = 0) -> np.ndarray:
    """Random but smooth (a moving average of noise): windows differ, neighbours look alike."""
    noise = np.random.default_rng(seed).standard_normal(n + width)
    return np.convolve(noise, np.ones(width) / width, mode="valid")[:n]


class ProbeSyncer(torch.nn.Module):
    """Stands in for a syncer: the motion embedding is a window's first feature, the audio embedding the
    per-frame mean of its first band, both L2-normalised. Distance is smallest where they match."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def motion(self, windows: torch.Tensor) -> torch.Tensor:  # (N, 5, F) -> (N, 5)
        return torch.nn.functional.normalize(windows[..., 0], dim=1)

    def audio(self, windows: torch.Tensor) -> torch.Tensor:  # (N, 20, M) -> (N, 5)
        per_frame = windows[..., 0].reshape(len(windows), MOTION_WINDOW, AUDIO_PER_MOTION).mean(-1)
        return torch.nn.functional.normalize(per_frame, dim=1)


def shifted_pair(n_frames: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Motion features x(t) and 4 audio rows per frame carrying x(t - shift): the audio lags by `shift`."""
    x = smooth_signal(n_frames + 2 * abs(shift) + 40)
    start = abs(shift) + 20
    motion = x[start:start + n_frames]
    audio = np.repeat(x[start - shift:start - shift + n_frames], AUDIO_PER_MOTION)
    return motion[:, None].astype(np.float32), audio[:, None].astype(np.float32)


@pytest.mark.parametrize(("level", "shift"), [(0, 0), (0, 3), (0, -5), (0, 12), (1, 4), (1, -6)])
def test_known_audio_shift_is_recovered_as_the_offset(level, shift):
    features, mel = shifted_pair(250, shift)
    result = clip_sync(ProbeSyncer(level), features, mel, np.ones(len(features), bool), KERNEL, max_offset_frames=15)
    assert result["offset_frames"] == shift
    assert result["lse_c"] > 0.05  # a clear minimum, not a flat curve


def test_offset_search_is_bounded_and_scaled_per_level():
    """An 8-frame shift is searched at level 2 (+-4 samples = +-16 frames) and found as 8 frames."""
    features, mel = shifted_pair(400, 8)
    result = clip_sync(ProbeSyncer(2), features, mel, np.ones(len(features), bool), KERNEL, max_offset_frames=15)
    assert result["offset_frames"] == 8


# ------------------------------------------------------------------------------------- dynamics


def test_identical_distributions_are_at_frechet_distance_zero():
    samples = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12))
    mu, cov = dynamics.gaussian(samples)
    assert dynamics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    assert dynamics.dynamics_frechet(samples, samples) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_known_mean_shift_is_its_squared_length():
    samples = rng.standard_normal((300, 4))
    mu, cov = dynamics.gaussian(samples)
    delta = np.array([1.0, -2.0, 0.5, 0.0])
    assert dynamics.frechet_distance(mu, cov, mu + delta, cov) == pytest.approx(float(delta @ delta), rel=1e-5)
    # Known covariances too: N(0, I) vs N(0, 4I) in d dims: d * (1 + 4 - 2 * 2) = d.
    eye = np.eye(3)
    assert dynamics.frechet_distance(np.zeros(3), eye, np.zeros(3), 4 * eye) == pytest.approx(3.0)


def test_frechet_grows_as_generated_dynamics_depart_from_real():
    real = [np.cumsum(rng.standard_normal((200, 6)) * 0.1, axis=0) for _ in range(3)]
    features = np.concatenate([dynamics.window_features(p, FPS, 25, 5) for p in real])
    slower = np.concatenate([dynamics.window_features(p * 0.5, FPS, 25, 5) for p in real])
    much_slower = np.concatenate([dynamics.window_features(p * 0.1, FPS, 25, 5) for p in real])
    assert 0 < dynamics.dynamics_frechet(features, slower) < dynamics.dynamics_frechet(features, much_slower)


def clip(clip_id: str, n: int = 120, dim: int = 15) -> ClipMotion:
    motion = np.cumsum(rng.standard_normal((n, dim)) * 0.01, axis=0).astype(np.float32)
    mel = rng.standard_normal((4 * n, 26)).astype(np.float32) - 40
    return ClipMotion(clip_id, motion, np.ones(n, bool), mel, FPS)


def test_static_baseline_has_zero_pose_velocity_and_acceleration():
    variants = baselines({c: clip(c) for c in ("a", "b", "c")})
    assert set(variants) == {GROUND_TRUTH, STATIC, OTHER_AUDIO}
    for track in variants[STATIC]:
        assert (np.diff(track.motion, axis=0) == 0).all()
    summary, histograms = dynamics_metrics(variants, FPS, 256, 25, 5, 10)
    static = summary[STATIC]
    for key in ("rotation_velocity_mean", "translation_velocity_p95", "rotation_acceleration_mean",
                "translation_acceleration_std", "rotation_within_clip_deg", "translation_within_clip_px"):
        assert static[key] == 0.0, key
    assert summary[GROUND_TRUTH]["rotation_velocity_mean"] > 0 and summary[GROUND_TRUTH]["frechet_to_real"] == 0
    assert static["frechet_to_real"] > 0
    assert OTHER_AUDIO not in summary  # the ground truth's motion: its dynamics are the truth's
    assert len(histograms["rotation_velocity"]["edges"]) == 11


def test_other_audio_pairs_each_clip_with_the_next_clips_audio_and_is_absent_for_one_clip():
    clips = {c: clip(c, n) for c, n in (("a", 100), ("b", 80))}
    variants = baselines(clips)
    a = variants[OTHER_AUDIO][0]
    assert a.clip_id == "a" and len(a.motion) == 80 and np.array_equal(a.mel, clips["b"].mel[:320])
    assert OTHER_AUDIO not in baselines({"a": clips["a"]})


def test_pose_units_are_degrees_and_pixels():
    motion = np.zeros((2, 15))
    motion[1, 0] = np.pi / 2
    motion[1, 3] = 0.5
    pose = dynamics.pose_units(motion, 256)
    assert pose[1, 0] == pytest.approx(90.0) and pose[1, 3] == pytest.approx(128.0)


def test_diversity_of_known_poses():
    a = np.zeros((10, 6))
    b = np.zeros((10, 6))
    b[:, 3] = 2.0  # clip means differ by 2 px in x: variance across clips 1, std 1
    b[::2, 0] = 1.0  # within clip b, rotation alternates 0/1 deg: variance 0.25
    div = dynamics.diversity([a, b])
    assert div["translation_across_clips_px"] == pytest.approx(1.0)
    assert div["rotation_within_clip_deg"] == pytest.approx(np.sqrt(0.25 / 2))


# ------------------------------------------------------------------------------------- lips


@pytest.mark.parametrize("lag", [0, 3, -2])
def test_mouth_following_audio_by_a_known_lag_peaks_at_that_lag(lag):
    energy = smooth_signal(300, width=5, seed=1)
    mouth = np.roll(energy, lag) + 0.05 * np.random.default_rng(2).standard_normal(300)  # mouth(t) = energy(t - lag)
    curve = lips.lagged_correlation(mouth[10:-10], energy[10:-10], max_lag=5)
    assert sorted(curve) == list(range(-5, 6))
    peak_lag, peak_r = lips.peak(curve)
    assert peak_lag == lag and peak_r > 0.9


def test_a_static_mouth_correlates_with_nothing_and_has_no_peak():
    curve = lips.lagged_correlation(np.full(100, 3.0) + 1e-14 * np.arange(100), smooth_signal(100), max_lag=5)
    assert set(curve.values()) == {0.0}
    lag, r = lips.peak(curve)
    assert np.isnan(lag) and r == 0.0


def test_frame_energy_averages_power_not_decibels():
    mel = np.zeros((8, 2))
    mel[0:4] = [[0.0, -100.0]] * 4  # power 1 and ~0: mean power 0.5 -> -3.01 dB
    mel[4:8] = -20.0
    energy = lips.frame_energy(mel, 4)
    assert energy[0] == pytest.approx(10 * np.log10(0.5), abs=1e-6) and energy[1] == pytest.approx(-20.0)


def test_mouth_opening_and_landmark_distance_in_pixels():
    landmarks = np.zeros((2, 478, 3))
    landmarks[1, face_shape.LOWER_INNER_LIP, 1] = 0.1  # lower lip 0.1 crop heights below the upper one
    assert face_shape.mouth_opening(landmarks, 256).tolist() == pytest.approx([0.0, 25.6])
    shifted = landmarks + np.array([0.01, 0.0, 0.0])
    dist = lips.landmark_distance(shifted, landmarks, 256)
    assert dist["face_px"] == pytest.approx(2.56) and dist["mouth_px"] == pytest.approx(2.56)


# ------------------------------------------------------------------------------------- plumbing


def test_settings_are_validated_against_the_schema():
    good = {"ablations": {"single_scale": [0]}, "max_offset_frames": 15, "lip_lag_ms": 200,
            "dynamics_window_frames": 25, "dynamics_hop_frames": 5, "histogram_bins": 40,
            "drift_seconds": 60, "drift_rollouts": 4}
    assert load_section(EvaluationSettings, json.dumps(good), None).ablations == {"single_scale": [0]}
    from mssync.core.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluation.max_offset_frames"):
        load_section(EvaluationSettings, json.dumps({**good, "max_offset_frames": 0}), None)
    with pytest.raises(ConfigError, match="evaluation.ablations"):
        load_section(EvaluationSettings, json.dumps({**good, "ablations": {"Bad Name": [0]}}), None)


def test_tsv_formats_floats_and_keeps_columns():
    text = tsv([{"variant": "a", "x": 1.23456789, "n": 3}, {"variant": "b", "x": float("nan"), "n": 4}])
    assert text.splitlines() == ["variant\tx\tn", "a\t1.235\t3", "b\tnan\t4"]


def test_track_holds_truth_only_where_a_distance_means_something():
    variants = baselines({c: clip(c) for c in ("a", "b")})
    assert all(t.truth is None for t in variants[GROUND_TRUTH] + variants[OTHER_AUDIO])
    assert all(isinstance(t, Track) and t.truth is not None for t in variants[STATIC])
