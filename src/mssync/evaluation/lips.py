"""Lips: does the mouth open when the speech is loud, and how far are the lips from the truth?

- mouth opening: distance between the inner-lip midpoints in pixels of the crop
  (media/face_shape.mouth_opening), from the landmarks decoded out of the motion vector;
- audio energy: per video frame, the mean mel-band power of its 4 log-mel rows, back in dB;
- lagged correlation: Pearson r between mouth opening at t + lag and energy at t, for lags within
  +-max_lag frames. A positive peak lag means the mouth follows the audio (expected: speech is
  produced by the mouth, so energy and opening are nearly simultaneous; a peak far from 0 or a flat
  curve means the lips do not follow the speech);
- landmark distance to ground truth: mean per-landmark Euclidean distance, whole face and mouth.
"""

from __future__ import annotations

import numpy as np

from mssync.media.mesh import LIP_LANDMARKS

DB = 10.0  # dB = 10 log10(power)
MIN_OVERLAP = 3  # frames a lag must leave to compute a correlation at all
CONSTANT_TOLERANCE = 1e-9  # relative spread below which a signal counts as constant


def frame_energy(mel_db: np.ndarray, rows_per_frame: int) -> np.ndarray:
    """(rows_per_frame * T, n_mels) log-mel in dB -> (T,) energy in dB per video frame."""
    n = len(mel_db) // rows_per_frame
    power = 10.0 ** (np.asarray(mel_db[:n * rows_per_frame], np.float64) / DB)
    return DB * np.log10(power.reshape(n, rows_per_frame, -1).mean(axis=(1, 2)))


def is_constant(x: np.ndarray) -> bool:
    """Constant up to float round-off (a repeated frame decodes to the same opening +- 1e-13 px)."""
    return bool(np.ptp(x) <= CONSTANT_TOLERANCE * max(1.0, float(np.abs(x).max(initial=0.0))))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0 where either side is constant (a static mouth correlates with nothing)."""
    if is_constant(a) or is_constant(b):
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def lagged_correlation(mouth: np.ndarray, energy: np.ndarray, max_lag: int) -> dict[int, float]:
    """lag -> r(mouth[t + lag], energy[t]) over the frames both exist, for lag in [-max_lag, max_lag]."""
    n = min(len(mouth), len(energy))
    mouth, energy = mouth[:n], energy[:n]
    curve = {}
    for lag in range(-max_lag, max_lag + 1):
        if n - abs(lag) < MIN_OVERLAP:
            continue
        m = mouth[max(lag, 0):n + min(lag, 0)]
        e = energy[max(-lag, 0):n - max(lag, 0)]
        curve[lag] = pearson(m, e)
    return curve


def peak(curve: dict[int, float]) -> tuple[float, float]:
    """(lag, r) of the highest correlation; the lag is NaN for a flat curve (it has no peak)."""
    lag = max(curve, key=curve.get)
    if max(curve.values()) == min(curve.values()):
        return float("nan"), curve[lag]
    return float(lag), curve[lag]


def landmark_distance(landmarks: np.ndarray, truth: np.ndarray, crop_size: int) -> dict[str, float]:
    """Mean Euclidean distance per landmark in pixels of the crop: whole face and mouth (lip loops)."""
    n = min(len(landmarks), len(truth))
    err = np.linalg.norm(landmarks[:n] - truth[:n], axis=-1) * crop_size  # (T, 478)
    return {"face_px": float(err.mean()), "mouth_px": float(err[:, list(LIP_LANDMARKS)].mean())}
