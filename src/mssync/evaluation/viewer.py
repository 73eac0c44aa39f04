"""What a viewer sees: does the mouth open as wide as a speaker's, does the face keep its shape,
does the head move as fast as a real one?

Sync scores (LSE) can improve while the video still looks like a face that does not talk: a mouth
that barely opens can still correlate with the audio, and a face that slowly grows is invisible to
a syncer that reads 1.6 s at a time. These numbers are in the landmark domain, per clip, each
against the same clip's real motion where there is one:

- mouth amplitude ratio: standard deviation of the inner-lip opening, generated / real. 1 is a
  mouth that opens as far as the speaker's; 0.2 is one that stays almost shut;
- lip-audio correlation peak: the highest Pearson r between opening at t + lag and audio energy
  at t (lips.py), and its lag in frames; compared with the real motion's peak r on the same audio;
- rotation and translation speed ratios: mean pose speed, generated / real (dynamics.py units);
- face-shape drift over a long roll-out (media/face_shape.py): the face's size and its width over
  its eye distance, each against frame 0 (95th percentile of the relative change).

GOALS are the targets the project set itself (issue 16); the report and the cross-validation say
per goal whether it is met, with an interval, and which share of clips meets it. Ratios are
averaged on a log scale (the geometric mean), so too fast and too slow do not cancel.
"""

from __future__ import annotations

import numpy as np

from mssync.evaluation import lips
from mssync.media import face_shape
from mssync.media.face_shape import RATIO_FLOOR, mouth_amplitude_ratio, ratio
from mssync.motion import dynamics
from mssync.motion.space import ROTATION, TRANSLATION

# metric -> (low, high) bounds of the goal; a ratio to the real motion's value unless the name says otherwise.
GOALS: dict[str, tuple[float, float]] = {
    "mouth_amplitude_ratio": (0.7, 1.3),
    "lip_peak_r_ratio": (0.7, float("inf")),
    "lip_peak_lag_frames": (-2.0, 2.0),
    "face_scale_drift_p95": (0.0, 0.03),
    "face_width_drift_p95": (0.0, 0.03),
    "rotation_speed_ratio": (0.7, 1.3),
    "translation_speed_ratio": (0.7, 1.3),
}


def mean_speeds(motion: np.ndarray, crop_size: int, fps: float) -> tuple[float, float]:
    """(mean rotation speed in deg/s, mean translation speed in px/s) of one clip's motion."""
    velocity, _ = dynamics.derivatives(dynamics.pose_units(motion, crop_size), fps)
    return (float(np.linalg.norm(velocity[:, ROTATION], axis=1).mean()),
            float(np.linalg.norm(velocity[:, TRANSLATION], axis=1).mean()))


def clip_numbers(*, landmarks: np.ndarray, motion: np.ndarray, real_landmarks: np.ndarray,
                 real_motion: np.ndarray, energy: np.ndarray, crop_size: int, fps: float,
                 max_lag: int) -> dict[str, float]:
    """Every per-clip number of one generated (or real) track against the clip's real motion.

    The real motion's own peak r on the same audio is returned too (`real_lip_peak_r`), so the
    ratio of the two is paired per clip."""
    n = min(len(landmarks), len(real_landmarks))
    opening = face_shape.mouth_opening(landmarks[:n], crop_size)
    real_opening = face_shape.mouth_opening(real_landmarks[:n], crop_size)
    lag, peak_r = lips.peak(lips.lagged_correlation(opening, energy, max_lag))
    _, real_peak_r = lips.peak(lips.lagged_correlation(real_opening, energy, max_lag))
    rotation, translation = mean_speeds(motion[:n], crop_size, fps)
    real_rotation, real_translation = mean_speeds(real_motion[:n], crop_size, fps)
    return {"mouth_amplitude_ratio": mouth_amplitude_ratio(opening, real_opening),
            "lip_peak_r": peak_r, "real_lip_peak_r": real_peak_r,
            "lip_peak_r_ratio": ratio(peak_r, real_peak_r) if real_peak_r > 0 else float("nan"),
            "lip_peak_lag_frames": lag,
            "rotation_speed_ratio": ratio(rotation, real_rotation),
            "translation_speed_ratio": ratio(translation, real_translation)}


def meets(metric: str, value: float) -> bool | None:
    """Whether a value is within its goal; None for a metric without a goal or a NaN value."""
    if metric not in GOALS or not np.isfinite(value):
        return None
    low, high = GOALS[metric]
    return bool(low <= value <= high)


def is_ratio(metric: str) -> bool:
    return metric.endswith("_ratio")


def to_log(values: np.ndarray) -> np.ndarray:
    """Ratios on a log scale (floored at RATIO_FLOOR: a static mouth is log(1e-3), not -inf), where
    2x too fast and 2x too slow are equally far from 1 and their mean is the geometric mean."""
    return np.log(np.maximum(values, RATIO_FLOOR))


def in_goal(metric: str, values: np.ndarray) -> np.ndarray:
    """1 where a clip's value meets its goal, 0 where it misses, NaN where it has none."""
    return np.array([np.nan if (m := meets(metric, v)) is None else float(m) for v in values])


def summarise(per_clip: dict[str, dict[str, float]]) -> dict[str, float]:
    """One number per metric over clips (NaNs skipped), plus the share of clips within each goal.

    Ratios by their geometric mean: a generator that moves every head at the same speed is 3x too
    fast for a still GRID speaker and 0.3x too slow for a lively one, and an arithmetic mean of those
    ratios would call that 1.0; the share within the goal shows it as 0. Lags by the median (a
    peak lag is discrete); everything else by the mean."""
    keys = list(dict.fromkeys(k for numbers in per_clip.values() for k in numbers))
    out = {}
    for key in keys:
        values = np.array([numbers.get(key, np.nan) for numbers in per_clip.values()], np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            out[key] = float("nan")
        elif key == "lip_peak_lag_frames":
            out[key] = float(np.median(values))
        elif is_ratio(key):
            out[key] = float(np.exp(to_log(values).mean()))
        else:
            out[key] = float(values.mean())
        if key in GOALS and len(values):
            out[f"{key}_in_goal"] = float(np.nanmean(in_goal(key, values)))
    return out
