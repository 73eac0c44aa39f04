"""`mssync motion-space`: fit the motion space on the train split, save it, and measure how well
it reconstructs the landmarks of every split."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mssync.core.atomic import write_json_atomic
from mssync.core.config import MotionSettings
from mssync.media.mesh import LIP_LANDMARKS, N_LANDMARKS, RIGID_LANDMARKS
from mssync.motion.clips import read_clips
from mssync.motion.space import MotionSpace, face_frames

log = logging.getLogger(__name__)


def reconstruction_errors(space: MotionSpace, landmarks: np.ndarray, crop_size: int) -> dict[str, Any]:
    """Euclidean per-landmark error (px of the crop) of decode(encode_frames(L)) and of the rigid fit alone."""
    if len(landmarks) == 0:
        return {"frames": 0}
    err = np.linalg.norm(space.decode(space.encode_frames(landmarks)) - landmarks, axis=-1) * crop_size
    lips = err[:, list(LIP_LANDMARKS)]
    s, r, t = space.rigid_fit(landmarks)
    rigid = list(RIGID_LANDMARKS)
    posed = s[:, None, None] * (space.canonical[rigid].astype(np.float64) @ np.swapaxes(r, -1, -2)) + t[:, None]
    rigid_err = np.linalg.norm(posed - landmarks[:, rigid], axis=-1) * crop_size
    return {
        "frames": int(len(landmarks)),
        "mean_px": float(err.mean()), "p95_px": float(np.percentile(err, 95)), "max_px": float(err.max()),
        "lips_mean_px": float(lips.mean()), "lips_p95_px": float(np.percentile(lips, 95)),
        "rigid_fit_residual_mean_px": float(rigid_err.mean()),
        "rigid_fit_residual_p95_px": float(np.percentile(rigid_err, 95)),
    }


def _face_landmarks(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    clips, _ = read_clips(Path(path), ["face_found", "landmarks"])
    return [(c["landmarks"], c["face_found"]) for c in clips.values()]


def fit_motion_space(*, train: Path, val: Path, test: Path, out: Path, metrics: Path, settings: MotionSettings,
                     crop_size: int) -> dict:
    """Fit on train only, save the space to `out`, and write fit and reconstruction metrics to `metrics`."""
    start = time.perf_counter()
    train_clips = _face_landmarks(train)
    space = MotionSpace.fit(train_clips, settings)
    space.save(out)
    fit_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "components": space.expression_dim, "dim": space.dim, "syncer_dim": space.syncer_dim,
        "train_frames_with_face": space.fit_frames,
        "explained_variance_ratio": float(space.explained_variance_ratio.sum()),
        "explained_variance_ratio_per_component": [round(float(v), 6) for v in space.explained_variance_ratio],
        "component_std": [round(float(v), 6) for v in space.component_std],
        "reconstruction_note": ("decode(encode) without gap filling or smoothing, on frames with a face; "
                                f"Euclidean error per landmark in pixels of the {crop_size}x{crop_size} crop; "
                                "rigid_fit_residual: pose only, canonical rigid landmarks vs observed"),
        "fit_seconds": round(fit_s, 2),
    }
    recon = {}
    for name, path, clips in (("train", train, train_clips), ("val", val, None), ("test", test, None)):
        clips = clips if clips is not None else _face_landmarks(path)
        faces = [lm[face_frames(lm, ff)] for lm, ff in clips]
        data = np.concatenate(faces).astype(np.float64) if faces else np.zeros((0, N_LANDMARKS, 3))
        recon[name] = reconstruction_errors(space, data, crop_size)
    report["reconstruction_unsmoothed"] = recon
    report["seconds"] = round(time.perf_counter() - start, 2)
    write_json_atomic(metrics, report)
    log.info("motion space: D=%d (K=%d), explained variance %.3f, test error %.3f px mean",
             space.dim, space.expression_dim, report["explained_variance_ratio"], recon["test"].get("mean_px", float("nan")))
    return report
