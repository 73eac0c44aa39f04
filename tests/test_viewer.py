"""What-a-viewer-sees metrics on cases with known answers (issue 16).

- a mouth that opens with half the real amplitude scores 0.5, one that follows the audio by a
  known lag peaks at that lag with r 1;
- a face that grows by a known factor drifts by that factor (p95 of a linear ramp), and a face
  whose cheeks spread while its eyes stay put changes only the width-to-eye ratio;
- a head turning twice as fast scores a rotation speed ratio of 2;
- the long roll-out audio is the test clips' audio back to back, starting at the requested clip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mssync.evaluation import viewer
from mssync.evaluation.evaluate import long_audio
from mssync.gan.model import AUDIO_PER_FRAME
from mssync.media import face_shape
from mssync.media.mesh import FACE_WIDTH_LANDMARKS, LOWER_INNER_LIP, N_LANDMARKS, UPPER_INNER_LIP
from mssync.motion.clips import ClipMotion
from mssync.motion.space import POSE_DIM, ROTATION

CROP = 256
FPS = 25


def neutral_face(seed: int = 0) -> np.ndarray:
    """(478, 3) landmarks scattered around the crop's centre, the inner lips closed at the middle."""
    face = 0.5 + 0.1 * np.random.default_rng(seed).standard_normal((N_LANDMARKS, 3))
    face[[UPPER_INNER_LIP, LOWER_INNER_LIP]] = [0.5, 0.7, 0.0]
    return face


def speaking(opening: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, 478, 3): the neutral face with the lower inner lip lowered by `opening` (crop units) per frame."""
    faces = np.repeat(neutral_face(seed)[None], len(opening), axis=0)
    faces[:, LOWER_INNER_LIP, 1] += opening
    return faces


def test_a_mouth_opening_half_as_far_has_amplitude_ratio_one_half():
    wave = 0.02 * (1 + np.sin(np.linspace(0, 6 * np.pi, 150)))
    real = face_shape.mouth_opening(speaking(wave), CROP)
    half = face_shape.mouth_opening(speaking(0.5 * wave), CROP)
    assert face_shape.mouth_amplitude_ratio(half, real) == pytest.approx(0.5)
    assert face_shape.mouth_amplitude_ratio(real, real) == pytest.approx(1.0)


def test_a_shut_real_mouth_gives_no_ratio():
    closed = np.zeros(50)
    assert math.isnan(face_shape.mouth_amplitude_ratio(np.linspace(0, 1, 50), closed))


@pytest.mark.parametrize("lag", [0, 2, -1])
def test_clip_numbers_recover_a_known_lip_lag_and_the_ratios(lag):
    n = 200
    energy = np.convolve(np.random.default_rng(1).standard_normal(n + 8), np.ones(9) / 9, mode="valid")[:n]
    wave = np.roll(energy - energy.min(), lag) * 0.05  # the mouth follows the audio by `lag` frames
    real_wave = wave.copy()
    motion = np.zeros((n, POSE_DIM + 2), np.float32)
    motion[:, ROTATION.start] = np.linspace(0, 0.2, n)  # a steady turn
    fast = motion.copy()
    fast[:, ROTATION.start] *= 2
    numbers = viewer.clip_numbers(landmarks=speaking(0.8 * wave), motion=fast, real_landmarks=speaking(real_wave),
                                  real_motion=motion, energy=energy, crop_size=CROP, fps=FPS, max_lag=5)
    assert numbers["lip_peak_lag_frames"] == lag
    assert numbers["lip_peak_r"] > 0.95 and numbers["lip_peak_r_ratio"] == pytest.approx(1.0)
    assert numbers["mouth_amplitude_ratio"] == pytest.approx(0.8)
    assert numbers["rotation_speed_ratio"] == pytest.approx(2.0)
    assert math.isnan(numbers["translation_speed_ratio"])  # the real head does not translate: no ratio


def test_a_face_growing_by_ten_percent_drifts_by_its_95th_percentile():
    growth = np.linspace(1.0, 1.1, 201)
    face = neutral_face()
    centre = face.mean(axis=0)
    faces = centre + growth[:, None, None] * (face - centre)
    drift = face_shape.shape_drift(faces)
    assert drift["face_scale_drift_p95"] == pytest.approx(0.095, abs=1e-6)
    assert drift["face_width_drift_p95"] == pytest.approx(0.0, abs=1e-9)  # uniform growth keeps the proportions


def test_cheeks_spreading_while_the_eyes_stay_changes_the_width_ratio():
    faces = np.repeat(neutral_face()[None], 101, axis=0)
    right, left = FACE_WIDTH_LANDMARKS
    faces[:, right, 0] = 0.3
    faces[:, left, 0] = 0.3 + 0.4 * np.linspace(1.0, 1.2, 101)  # width 0.4 -> 0.48
    faces[:, right, 1] = faces[:, left, 1] = 0.5
    drift = face_shape.shape_drift(faces)
    assert drift["face_width_drift_p95"] == pytest.approx(0.19, abs=1e-6)


def test_a_still_face_does_not_drift():
    faces = np.repeat(neutral_face()[None], 30, axis=0)
    assert face_shape.shape_drift(faces) == {"face_scale_drift_p95": 0.0, "face_width_drift_p95": 0.0}


def test_goals_and_summary():
    assert viewer.meets("mouth_amplitude_ratio", 1.0) and not viewer.meets("mouth_amplitude_ratio", 0.2)
    assert viewer.meets("face_scale_drift_p95", 0.02) and not viewer.meets("face_scale_drift_p95", 0.05)
    assert viewer.meets("lip_peak_r", 0.5) is None and viewer.meets("mouth_amplitude_ratio", float("nan")) is None
    summary = viewer.summarise({"a": {"mouth_amplitude_ratio": 0.5, "lip_peak_lag_frames": 1.0},
                                "b": {"mouth_amplitude_ratio": float("nan"), "lip_peak_lag_frames": 3.0},
                                "c": {"mouth_amplitude_ratio": 1.0, "lip_peak_lag_frames": 2.0}})
    assert summary["mouth_amplitude_ratio"] == pytest.approx(np.sqrt(0.5))  # ratios: geometric mean
    assert summary["mouth_amplitude_ratio_in_goal"] == 0.5 and summary["lip_peak_lag_frames"] == 2.0
    assert summary["lip_peak_lag_frames_in_goal"] == pytest.approx(2 / 3)


def test_too_fast_and_too_slow_do_not_average_to_right():
    summary = viewer.summarise({"still": {"rotation_speed_ratio": 3.0}, "lively": {"rotation_speed_ratio": 1 / 3}})
    assert summary["rotation_speed_ratio"] == pytest.approx(1.0)  # the geometric mean alone would pass ...
    assert summary["rotation_speed_ratio_in_goal"] == 0.0  # ... the share of clips within the goal does not


def test_long_audio_plays_the_clips_back_to_back_from_the_start_clip():
    clips = {c: ClipMotion(c, np.zeros((n, 8), np.float32), np.ones(n, bool),
                           np.full((AUDIO_PER_FRAME * n, 2), i, np.float32), FPS)
             for i, (c, n) in enumerate([("a", 3), ("b", 2), ("c", 4)])}
    mel = long_audio(clips, "b", 12)
    per_frame = mel[::AUDIO_PER_FRAME, 0].tolist()
    assert per_frame == [1, 1, 2, 2, 2, 2, 0, 0, 0, 1, 1, 2]
