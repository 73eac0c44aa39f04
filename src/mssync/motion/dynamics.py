"""Head-motion dynamics: how fast, how jerkily and how much a head moves, compared with real heads.

Head pose is the first 6 numbers of the motion vector (motion/space.py): axis-angle rotation (rad) and
translation of the rigid landmarks' centroid (crop units, x and y in [0, 1] of the crop). Reported
in readable units: degrees and pixels of the crop, per second.

- speed statistics: magnitude of the rotation and translation velocity and acceleration per
  frame (finite differences within a clip, never across clips);
- Frechet distance: every clip is cut into windows of a few dozen frames; each window is
  described by the per-axis spread of its pose and the RMS of its pose velocity (12 numbers),
  z-scored with the *real* windows' statistics (so the distance has no units and no axis
  dominates by its scale), and a Gaussian is fitted to the real and to the generated windows.
  The distance is that of FID, on pose dynamics instead of image features;
- diversity: pose variance across clips (of each clip's mean pose) and within a clip (over time).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from mssync.core.constants import STD_FLOOR  # z-scoring: a feature constant over the real windows keeps unit scale
from mssync.motion.space import HEAD_MOTION, ROTATION, TRANSLATION

PERCENTILE = 95


def pose_units(motion: np.ndarray, crop_size: int) -> np.ndarray:
    """(T, D) motion -> (T, 6) pose in degrees (rotation) and pixels of the crop (translation)."""
    pose = np.asarray(motion, np.float64)[:, HEAD_MOTION].copy()
    pose[:, ROTATION] = np.degrees(pose[:, ROTATION])
    pose[:, TRANSLATION] *= crop_size
    return pose


def derivatives(pose: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Velocity (T-1, 6) per second and acceleration (T-2, 6) per second squared of one clip's pose."""
    velocity = np.diff(pose, axis=0) * fps
    return velocity, np.diff(velocity, axis=0) * fps


def speeds(poses: list[np.ndarray], fps: float) -> dict[str, np.ndarray]:
    """Per-frame magnitudes over all clips: rotation/translation velocity and acceleration."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("rotation_velocity", "translation_velocity",
                                                           "rotation_acceleration", "translation_acceleration")}
    for pose in poses:
        velocity, acceleration = derivatives(pose, fps)
        parts["rotation_velocity"].append(np.linalg.norm(velocity[:, ROTATION], axis=1))
        parts["translation_velocity"].append(np.linalg.norm(velocity[:, TRANSLATION], axis=1))
        parts["rotation_acceleration"].append(np.linalg.norm(acceleration[:, ROTATION], axis=1))
        parts["translation_acceleration"].append(np.linalg.norm(acceleration[:, TRANSLATION], axis=1))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def speed_statistics(magnitudes: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and 95th percentile of each magnitude."""
    return {name: {"mean": float(v.mean()), "std": float(v.std()), f"p{PERCENTILE}": float(np.percentile(v, PERCENTILE))}
            for name, v in magnitudes.items() if len(v)}


def window_features(pose: np.ndarray, fps: float, window: int, hop: int) -> np.ndarray:
    """(N, 12) per window of `window` frames every `hop` frames: pose std per axis, RMS velocity per axis."""
    velocity = np.diff(pose, axis=0) * fps
    rows = []
    for start in range(0, len(pose) - window + 1, hop):
        seg, vel = pose[start:start + window], velocity[start:start + window - 1]
        rows.append(np.concatenate([seg.std(axis=0), np.sqrt((vel**2).mean(axis=0))]))
    return np.array(rows, np.float64).reshape(-1, 2 * pose.shape[1])


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples); a single sample has zero covariance."""
    mean = features.mean(axis=0)
    cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros((features.shape[1],) * 2)
    return mean, np.atleast_2d(cov)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2): the Frechet (2-Wasserstein^2) distance of two Gaussians."""
    covmean = np.real(linalg.sqrtm(cov1 @ cov2))
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))
    return max(value, 0.0)  # sqrtm round-off can make identical inputs land a hair below zero


def dynamics_frechet(real: np.ndarray, other: np.ndarray) -> float:
    """Frechet distance of window features, both z-scored with the real windows' mean and std."""
    mean, std = real.mean(axis=0), np.maximum(real.std(axis=0), STD_FLOOR)
    a, b = (real - mean) / std, (other - mean) / std
    return frechet_distance(*gaussian(a), *gaussian(b))


def diversity(poses: list[np.ndarray]) -> dict[str, float]:
    """Pose std (deg, px) across clips (of each clip's mean pose) and within a clip (over time, averaged).

    Summed over axes as variances, then square-rooted: one number per part in the pose's units."""
    means = np.array([p.mean(axis=0) for p in poses])
    across = (means - means[0]).var(axis=0) if len(poses) > 1 else np.full(means.shape[1], np.nan)
    within = np.mean([(p - p[0]).var(axis=0) for p in poses], axis=0)  # minus p[0]: a static clip gives exactly 0
    return {"rotation_across_clips_deg": float(np.sqrt(across[ROTATION].sum())),
            "translation_across_clips_px": float(np.sqrt(across[TRANSLATION].sum())),
            "rotation_within_clip_deg": float(np.sqrt(within[ROTATION].sum())),
            "translation_within_clip_px": float(np.sqrt(within[TRANSLATION].sum()))}


def pose_velocity_std(motion: np.ndarray) -> float:
    """Spread of the frame-to-frame change of rotation and translation, in the motion vector's own
    units: the quick check that generated heads move about as much as real ones."""
    return float(np.diff(motion[:, HEAD_MOTION], axis=0).std())
