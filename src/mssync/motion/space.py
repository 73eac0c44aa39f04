"""The motion space: per video frame, [head pose (7) | expression (K)], invertible to 478 landmarks.

Landmarks live in the crop's normalised frame (x, y in [0, 1] of the square crop, z relative
depth on the x scale), treated as one 3-D space. A frame's landmarks L (478 x 3) are modelled as

    L = s R (C + mean + components^T c) + t

- C (478 x 3) is the canonical mesh: the mean train shape after generalized Procrustes alignment,
  centred on the centroid of the RIGID landmarks and scaled to unit RMS radius over them;
- (s, R, t) is a similarity (Umeyama) fit of the rigid landmarks of L onto C; the pose vector is
  [axis-angle of R (3), t (3), log s (1)]; t is where the rigid centroid sits in the crop;
- c (K) are PCA coefficients of the pose-normalised residual E = R^T (L - t) / s - C, fitted on
  train frames only. Decoding is exact up to the PCA truncation (exact with K = full rank).

`encode` also fills frames without a face (linear interpolation of the motion vector; nearest
value held at the clip ends) and applies the method's centred moving average (reflect padding).
`valid` marks frames whose motion is measured or interpolated over a short gap.

`syncer_features` is the syncers' per-frame input: pose plus canonical-space x, y of the lip and
jaw landmarks rebuilt from the expression part. It is affine in the motion vector and runs on
numpy arrays and (differentiably) on torch tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mssync.core.atomic import atomic_path
from mssync.core.config import MotionSettings
from mssync.core.constants import MOTION_SPACE_PATH
from mssync.core.errors import MssyncError, require_artifact
from mssync.media.mesh import N_LANDMARKS, RIGID_LANDMARKS, SYNCER_LANDMARKS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = {1}

# The motion vector's layout, per frame: [rotation 0:3 | translation 3:6 | log-scale 6 | expression 7:].
ROTATION = slice(0, 3)  # axis-angle of R, radians
TRANSLATION = slice(3, 6)  # t: the rigid centroid in crop units
LOG_SCALE = 6  # log s
EXPRESSION = slice(7, None)  # PCA coefficients c
HEAD_MOTION = slice(0, 6)  # rotation and translation: what "head motion" means in every metric
POSE_DIM = 7  # rotation (3) + translation (3) + log-scale (1)

GPA_ITERATIONS = 3
SMALL_ANGLE2 = 1e-8  # squared angle below which Rodrigues uses its Taylor series


# --------------------------------------------------------------------------- rotations


def axis_angle_to_matrix(v: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation; numpy or torch (differentiable, also at 0)."""
    xp = torch if isinstance(v, torch.Tensor) else np
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    theta2 = x * x + y * y + z * z
    small = theta2 < SMALL_ANGLE2
    safe2 = xp.where(small, xp.ones_like(theta2), theta2)
    theta = xp.sqrt(safe2)
    a = xp.where(small, 1 - theta2 / 6, xp.sin(theta) / theta)  # sin(t)/t
    b = xp.where(small, 0.5 - theta2 / 24, (1 - xp.cos(theta)) / safe2)  # (1-cos t)/t^2
    zero = xp.zeros_like(x)
    k = xp.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*x.shape, 3, 3)
    eye = xp.eye(3, dtype=v.dtype) if xp is np else torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Inverse of axis_angle_to_matrix for (..., 3, 3) rotations (numpy); angle in [0, pi]."""
    r = np.asarray(r, dtype=np.float64)
    w = 0.5 * np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.linalg.norm(w, axis=-1)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = np.arctan2(sin, cos)
    # Up to 90 degrees the antisymmetric part is well conditioned: v = w * theta / sin(theta).
    ratio = np.where(sin > 1e-12, theta / np.where(sin > 1e-12, sin, 1.0), 1.0)
    near = w * ratio[..., None]
    # Beyond, read the axis off the symmetric part: (R + R^T)/2 - cos I = (1 - cos) a a^T.
    sym = 0.5 * (r + np.swapaxes(r, -1, -2)) - cos[..., None, None] * np.eye(3)
    outer = sym / np.maximum(1 - cos, 1e-12)[..., None, None]
    k = np.argmax(np.diagonal(outer, axis1=-2, axis2=-1), axis=-1)
    col = np.take_along_axis(outer, k[..., None, None].repeat(3, -1), axis=-2)[..., 0, :]
    axis = col / np.sqrt(np.maximum(np.take_along_axis(col, k[..., None], -1), 1e-12))
    axis = axis * np.where((axis * w).sum(-1) < 0, -1.0, 1.0)[..., None]
    far = axis * theta[..., None]
    return np.where((cos > 0)[..., None], near, far)


def similarity_fit(target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Umeyama: (s, R, t) minimising |target - (s R source + t)|^2 per frame.

    target (..., n, 3), source (n, 3) -> s (...), R (..., 3, 3), t (..., 3); float64.
    """
    target = np.asarray(target, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    mu_t, mu_s = target.mean(-2), source.mean(0)
    tc, sc = target - mu_t[..., None, :], source - mu_s
    cov = np.swapaxes(tc, -1, -2) @ sc / len(source)  # (..., 3, 3)
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0, 1.0, sign)
    d = d * np.stack([np.ones_like(sign), np.ones_like(sign), sign], -1)
    u = u * np.stack([np.ones_like(sign), np.ones_like(sign), sign], -1)[..., None, :]
    rot = u @ vt
    scale = d.sum(-1) / (sc**2).sum(-1).mean()
    shift = mu_t - scale[..., None] * (rot @ mu_s)
    return scale, rot, shift


def _normalise_shape(shape: np.ndarray) -> np.ndarray:
    """Centre on the rigid centroid and scale to unit RMS radius over the rigid landmarks."""
    rigid = shape[list(RIGID_LANDMARKS)]
    centred = shape - rigid.mean(0)
    radius = np.sqrt((centred[list(RIGID_LANDMARKS)] ** 2).sum(-1).mean())
    return centred / radius


def face_frames(landmarks: np.ndarray, face_found: np.ndarray) -> np.ndarray:
    """Frames with a face and finite landmarks."""
    finite = np.isfinite(landmarks).all(axis=(-2, -1))
    return np.asarray(face_found, bool) & finite


# --------------------------------------------------------------------------- time-series helpers


def fill_gaps(values: np.ndarray, present: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate rows where `present` is False; hold the nearest row at the ends.

    Returns (filled, valid): valid is False inside interior gaps longer than `max_gap` frames and
    in runs without a face at either end of the clip.
    """
    present = np.asarray(present, bool)
    n = len(present)
    idx = np.flatnonzero(present)
    if len(idx) == 0:
        raise MssyncError("no frame of the clip has a face; nothing to encode")
    frames = np.arange(n)
    filled = np.empty_like(values)
    for j in range(values.shape[1]):
        filled[:, j] = np.interp(frames, idx, values[idx, j])  # holds the end values outside
    valid = present.copy()
    valid[idx[0]:idx[-1] + 1] = True
    missing = np.flatnonzero(~present[idx[0]:idx[-1] + 1]) + idx[0]
    if len(missing):
        starts = np.flatnonzero(np.diff(np.concatenate([[-2], missing])) > 1)
        ends = np.concatenate([starts[1:], [len(missing)]])
        for a, b in zip(starts, ends):
            if b - a > max_gap:
                valid[missing[a]:missing[b - 1] + 1] = False
    return filled, valid


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 with reflect padding; width 1 is the identity."""
    if width <= 1 or len(values) < 2:
        return values
    if width % 2 != 1:
        raise MssyncError(f"smoothing width must be odd, got {width}")
    pad = width // 2
    padded = np.pad(values, [(pad, pad)] + [(0, 0)] * (values.ndim - 1), mode="reflect")
    cumsum = np.cumsum(np.concatenate([np.zeros_like(padded[:1]), padded]), axis=0)
    return ((cumsum[width:] - cumsum[:-width]) / width).astype(values.dtype)


# --------------------------------------------------------------------------- the motion space


@dataclasses.dataclass(eq=False)  # numpy fields: compare arrays explicitly
class MotionSpace:
    canonical: np.ndarray  # (478, 3)
    pca_mean: np.ndarray  # (1434,)
    components: np.ndarray  # (K, 1434), orthonormal rows
    component_std: np.ndarray  # (K,) std of the train coefficients
    smooth_frames: int
    max_gap_frames: int
    explained_variance_ratio: np.ndarray | None = None  # (K,) on the fitting frames
    fit_frames: int = 0  # frames with a face the space was fitted on


    @property
    def expression_dim(self) -> int:
        return len(self.components)

    @property
    def dim(self) -> int:
        return POSE_DIM + self.expression_dim

    @property
    def syncer_dim(self) -> int:
        return POSE_DIM + 2 * len(SYNCER_LANDMARKS)

    # ----------------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, clips: list[tuple[np.ndarray, np.ndarray]], settings: MotionSettings) -> "MotionSpace":
        """Canonical mesh (GPA) and expression PCA from the frames with a face of `clips`."""
        frames = [np.asarray(lm, np.float64)[face_frames(lm, ff)] for lm, ff in clips]
        data = np.concatenate(frames) if frames else np.zeros((0, N_LANDMARKS, 3))
        k = settings.expression_components
        if len(data) < 2:
            raise MssyncError(f"motion space: {len(data)} frames with a face; need at least 2 to fit")
        if k > min(len(data), 3 * N_LANDMARKS):
            raise MssyncError(f"motion space: {k} expression components asked for, but only {len(data)} "
                              f"frames with a face to fit them (at most min(frames, {3 * N_LANDMARKS}))")
        rigid = list(RIGID_LANDMARKS)
        # Generalized Procrustes: start from the mean of the centred, size-normalised frames.
        centred = data - data[:, rigid].mean(1, keepdims=True)
        centred /= np.sqrt((centred[:, rigid] ** 2).sum(-1).mean(-1))[:, None, None]
        canonical = _normalise_shape(centred.mean(0))
        for _ in range(GPA_ITERATIONS):
            s, r, t = similarity_fit(data[:, rigid], canonical[rigid])
            aligned = _unpose(data, s, r, t)
            canonical = _normalise_shape(aligned.mean(0))
        s, r, t = similarity_fit(data[:, rigid], canonical[rigid])
        residual = (_unpose(data, s, r, t) - canonical).reshape(len(data), -1)
        mean = residual.mean(0)
        _, sv, vt = np.linalg.svd(residual - mean, full_matrices=False)
        # Deterministic signs: each component's largest-magnitude entry is positive.
        big = np.argmax(np.abs(vt), axis=1)
        vt *= np.sign(vt[np.arange(len(vt)), big])[:, None]
        var = sv**2
        return cls(canonical=canonical.astype(np.float32), pca_mean=mean.astype(np.float32),
                   components=vt[:k].astype(np.float32),
                   component_std=(sv[:k] / np.sqrt(len(data) - 1)).astype(np.float32),
                   smooth_frames=settings.smooth_frames, max_gap_frames=settings.max_gap_frames,
                   explained_variance_ratio=var[:k] / max(var.sum(), 1e-30), fit_frames=len(data))

    # ----------------------------------------------------------------------- encode / decode

    def rigid_fit(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, R, t) per frame of (T, 478, 3) landmarks (all frames must have a face)."""
        rigid = list(RIGID_LANDMARKS)
        return similarity_fit(np.asarray(landmarks)[..., rigid, :], self.canonical[rigid])

    def encode_frames(self, landmarks: np.ndarray) -> np.ndarray:
        """Per-frame motion of (T, 478, 3) landmarks that all have a face: no gap fill, no smoothing."""
        landmarks = np.asarray(landmarks, np.float64)
        s, r, t = self.rigid_fit(landmarks)
        residual = (_unpose(landmarks, s, r, t) - self.canonical).reshape(len(landmarks), -1)
        coeffs = (residual - self.pca_mean) @ self.components.T.astype(np.float64)
        pose = np.concatenate([matrix_to_axis_angle(r), t, np.log(s)[:, None]], axis=1)
        return np.concatenate([pose, coeffs], axis=1).astype(np.float32)

    def encode(self, landmarks: np.ndarray, face_found: np.ndarray, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(T, 478, 3) landmarks + (T,) face flags -> motion (T, D) float32, valid (T,) bool.

        Frames without a face are filled (see fill_gaps); then, if `smooth`, the centred moving
        average of width smooth_frames runs over the whole sequence.
        """
        present = face_frames(landmarks, face_found)
        motion = np.zeros((len(present), self.dim), np.float32)
        if present.any():
            motion[present] = self.encode_frames(np.asarray(landmarks)[present])
        motion, valid = fill_gaps(motion, present, self.max_gap_frames)
        if smooth:
            motion = moving_average(motion, self.smooth_frames)
        return motion.astype(np.float32), valid

    def decode(self, motion: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(..., D) motion -> (..., 478, 3) landmarks; numpy -> float32 numpy, torch -> torch (differentiable)."""
        is_torch = isinstance(motion, torch.Tensor)
        motion = motion if is_torch else np.asarray(motion, np.float64)
        base, components = self._arrays(motion)
        shape = (base + motion[..., EXPRESSION] @ components).reshape(*motion.shape[:-1], N_LANDMARKS, 3)
        rot = axis_angle_to_matrix(motion[..., ROTATION])
        scale = (torch.exp if is_torch else np.exp)(motion[..., LOG_SCALE])
        out = scale[..., None, None] * (shape @ rot.swapaxes(-1, -2)) + motion[..., None, TRANSLATION]
        return out if is_torch else out.astype(np.float32)

    # ----------------------------------------------------------------------- syncer input

    def syncer_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (D, F), b (F,)) with syncer_features(m) = m @ W + b."""
        idx = np.asarray(SYNCER_LANDMARKS)
        cols = (idx[:, None] * 3 + np.arange(2)).reshape(-1)  # x, y of each landmark
        w = np.zeros((self.dim, self.syncer_dim), np.float32)
        w[:POSE_DIM, :POSE_DIM] = np.eye(POSE_DIM)
        w[POSE_DIM:, POSE_DIM:] = self.components[:, cols]
        b = np.zeros(self.syncer_dim, np.float32)
        b[POSE_DIM:] = self.canonical.reshape(-1)[cols] + self.pca_mean[cols]
        return w, b

    def syncer_features(self, motion: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(..., D) -> (..., F): [pose | canonical-space x, y of lips and jaw from the expression part]."""
        w, b = self.syncer_matrix()
        if isinstance(motion, torch.Tensor):
            return motion @ torch.as_tensor(w, dtype=motion.dtype, device=motion.device) + torch.as_tensor(
                b, dtype=motion.dtype, device=motion.device)
        return (np.asarray(motion, np.float32) @ w + b).astype(np.float32)

    def _arrays(self, like: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
        """(C + mean flattened, components) in the type, dtype and device of `like`."""
        base = self.canonical.reshape(-1).astype(np.float64) + self.pca_mean
        if isinstance(like, torch.Tensor):
            return (torch.as_tensor(base, dtype=like.dtype, device=like.device),
                    torch.as_tensor(self.components, dtype=like.dtype, device=like.device))
        return base, self.components.astype(np.float64)

    # ----------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            extra = {} if self.explained_variance_ratio is None else {
                "explained_variance_ratio": np.asarray(self.explained_variance_ratio, np.float64)}
            np.savez(fh, format_version=np.int64(FORMAT_VERSION), canonical=self.canonical, pca_mean=self.pca_mean,
                     components=self.components, component_std=self.component_std,
                     smooth_frames=np.int64(self.smooth_frames), max_gap_frames=np.int64(self.max_gap_frames),
                     fit_frames=np.int64(self.fit_frames), **extra)

    @classmethod
    def load(cls, path: str | Path) -> "MotionSpace":
        path = require_artifact(path, MOTION_SPACE_PATH)
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"]) if "format_version" in z.files else None
            if version not in KNOWN_FORMAT_VERSIONS:
                raise MssyncError(f"{path}: motion space format version {version!r} is not one this mssync "
                                  f"understands ({sorted(KNOWN_FORMAT_VERSIONS)}); re-run the motion stage")
            return cls(canonical=z["canonical"], pca_mean=z["pca_mean"], components=z["components"],
                       component_std=z["component_std"], smooth_frames=int(z["smooth_frames"]),
                       max_gap_frames=int(z["max_gap_frames"]), fit_frames=int(z["fit_frames"]),
                       explained_variance_ratio=z["explained_variance_ratio"] if "explained_variance_ratio" in z.files else None)


def _unpose(landmarks: np.ndarray, s: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """R^T (L - t) / s, per frame."""
    return ((landmarks - t[:, None, :]) @ r) / s[:, None, None]
