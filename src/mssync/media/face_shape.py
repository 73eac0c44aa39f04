"""Face shape from landmarks: its size and its proportions, and how far they wander over a video.

Shared by the evaluation (face-shape drift of generated roll-outs) and `mssync animate` (how far
the animated face leaves the portrait's own shape). Image plane only: what the viewer sees.

- size: RMS distance of the 478 landmarks from their centroid;
- proportions: face width (cheek to cheek) over the outer eye corners' distance, which a face
  that widens changes and a face that only moves closer to the camera does not;
- drift: the 95th percentile of |x_t / x_0 - 1| over the frames. A head turning +-15 degrees
  changes both by a few per cent (cosine), so real speakers do not score 0.
"""

from __future__ import annotations

import numpy as np

from mssync.media.mesh import FACE_WIDTH_LANDMARKS, OUTER_EYE_CORNERS

DRIFT_PERCENTILE = 95


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
