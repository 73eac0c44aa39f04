"""Face shape from landmarks: the mouth opening, the face's size and proportions, and how far they
wander over a video.

Shared by GAN validation and the evaluation (mouth amplitude, face-shape drift of generated
roll-outs) and `mssync animate` (how far the animated face leaves the portrait's own shape).
Image plane only: what the viewer sees.

- mouth opening: distance between the inner-lip midpoints (MediaPipe 13 upper, 14 lower);

- size: RMS distance of the 478 landmarks from their centroid;
- proportions: face width (cheek to cheek) over the outer eye corners' distance, which a face
  that widens changes and a face that only moves closer to the camera does not;
- drift: the 95th percentile of |x_t / x_0 - 1| over the frames. A head turning +-15 degrees
  changes both by a few per cent (cosine), so real speakers do not score 0.
"""

from __future__ import annotations

import numpy as np

from mssync.media.mesh import FACE_WIDTH_LANDMARKS, LOWER_INNER_LIP, OUTER_EYE_CORNERS, UPPER_INNER_LIP

DRIFT_PERCENTILE = 95
RATIO_FLOOR = 1e-3  # ratios are floored here before a log: a static mouth scores log(1e-3), not -inf
MIN_REAL_SPREAD = 1e-6  # a real series flatter than this (in its own units) gives no ratio: NaN


def mouth_opening(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """(T, 478, 3) landmarks -> (T,) inner-lip opening in pixels (image plane, x and y)."""
    gap = landmarks[:, UPPER_INNER_LIP, :2] - landmarks[:, LOWER_INNER_LIP, :2]
    return np.linalg.norm(gap, axis=1) * crop_size


def ratio(generated: float, real: float) -> float:
    """generated / real, NaN where the real value is too small to divide by."""
    return float(generated / real) if abs(real) > MIN_REAL_SPREAD else float("nan")


def mouth_amplitude_ratio(generated_opening: np.ndarray, real_opening: np.ndarray) -> float:
    """How far the generated mouth opens and closes, relative to the real one (std over the clip)."""
    return ratio(float(np.std(generated_opening)), float(np.std(real_opening)))


def face_scale(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T,) RMS distance of the landmarks from their centroid in the image plane."""
    xy = np.asarray(landmarks, np.float64)[..., :2]
    centred = xy - xy.mean(axis=-2, keepdims=True)
    return np.sqrt((centred ** 2).sum(axis=-1).mean(axis=-1))


def width_to_eye_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T,) face width (cheek to cheek) over the outer eye corners' distance, image plane."""
    xy = np.asarray(landmarks, np.float64)[..., :2]
    width = np.linalg.norm(xy[:, FACE_WIDTH_LANDMARKS[0]] - xy[:, FACE_WIDTH_LANDMARKS[1]], axis=-1)
    eyes = np.linalg.norm(xy[:, OUTER_EYE_CORNERS[0]] - xy[:, OUTER_EYE_CORNERS[1]], axis=-1)
    return width / eyes


def drift(series: np.ndarray) -> float:
    """95th percentile of |x_t / x_0 - 1|: how far a quantity wanders from its first frame."""
    series = np.asarray(series, np.float64)
    return float(np.percentile(np.abs(series / series[0] - 1.0), DRIFT_PERCENTILE))


def shape_drift(landmarks: np.ndarray) -> dict[str, float]:
    """Face-scale and face-width drift of one roll-out's landmarks."""
    return {"face_scale_drift_p95": drift(face_scale(landmarks)),
            "face_width_drift_p95": drift(width_to_eye_ratio(landmarks))}
