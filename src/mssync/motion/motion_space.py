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
from mssync.core.reproducible import provenance
from mssync.media.mesh import LIP_LANDMARKS, N_LANDMARKS, RIGID_LANDMARKS
from mssync.motion.clips import iter_clips
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


def sample_face_frames(path: Path, max_frames: int, seed: int) -> tuple[np.ndarray, int]:
    """A uniform random sample of at most `max_frames` of a split's frames with a face, in file order
    (all of them, in order, when there are fewer), and how many there were.

    One pass, clip by clip: each frame draws a random key and the smallest keys are kept, pruned
    whenever the buffer doubles, so memory is bounded by `max_frames` and time is linear in the
    corpus. The space then fits on the same data whatever the corpus size, in bounded memory."""
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    order: list[np.ndarray] = []
    seen = buffered = 0
    for _, cols in iter_clips(Path(path), ["face_found", "landmarks"]):
        frames = cols["landmarks"][face_frames(cols["landmarks"], cols["face_found"])]
        kept.append(frames)
        keys.append(rng.random(len(frames)))
        order.append(seen + np.arange(len(frames)))
        seen += len(frames)
        buffered += len(frames)
        if buffered > 2 * max_frames:
            kept, keys, order = (_smallest_keys(kept, keys, order, max_frames))
            buffered = len(kept[0])
    kept, keys, order = _smallest_keys(kept, keys, order, max_frames)
    in_file_order = np.argsort(order[0], kind="stable")
    return kept[0][in_file_order], seen


def _smallest_keys(kept: list[np.ndarray], keys: list[np.ndarray], order: list[np.ndarray],
                   n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    frames = np.concatenate(kept) if kept else np.zeros((0, N_LANDMARKS, 3), np.float32)
    all_keys, all_order = np.concatenate(keys) if keys else np.zeros(0), np.concatenate(order) if order else np.zeros(0, int)
    if len(all_keys) > n:
        chosen = np.argpartition(all_keys, n)[:n]
        frames, all_keys, all_order = frames[chosen], all_keys[chosen], all_order[chosen]
    return [frames], [all_keys], [all_order]


def fit_motion_space(*, train: Path, val: Path, test: Path, out: Path, metrics: Path, settings: MotionSettings,
                     crop_size: int) -> dict:
    """Fit on train only, save the space to `out`, and write fit and reconstruction metrics to `metrics`
    (and what the run computed with; its timings go to the log, so the same run gives the same file)."""
    start = time.perf_counter()
    samples = {name: sample_face_frames(path, settings.fit_max_frames, settings.fit_seed)
               for name, path in (("train", train), ("val", val), ("test", test))}
    train_frames, train_total = samples["train"]
    space = MotionSpace.fit([(train_frames, np.ones(len(train_frames), bool))], settings)
    space.save(out)
    fit_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "components": space.expression_dim, "dim": space.dim, "syncer_dim": space.syncer_dim,
        "train_frames_with_face": train_total,
        "fit_frames": space.fit_frames,  # a uniform sample of at most motion.fit_max_frames of them
        "explained_variance_ratio": float(space.explained_variance_ratio.sum()),
        "explained_variance_ratio_per_component": [round(float(v), 6) for v in space.explained_variance_ratio],
        "component_std": [round(float(v), 6) for v in space.component_std],
        "reconstruction_note": ("decode(encode) without gap filling or smoothing, on frames with a face; "
                                f"Euclidean error per landmark in pixels of the {crop_size}x{crop_size} crop; "
                                "rigid_fit_residual: pose only, canonical rigid landmarks vs observed"),
        "run": provenance(),
    }
    recon = {}  # on the same bounded samples: at most motion.fit_max_frames frames per split
    for name, (frames, _) in samples.items():
        recon[name] = reconstruction_errors(space, frames.astype(np.float64), crop_size)
    report["reconstruction_unsmoothed"] = recon
    write_json_atomic(metrics, report)
    log.info("motion space: D=%d (K=%d), explained variance %.3f, test error %.3f px mean; fit %.2f s, all %.2f s",
             space.dim, space.expression_dim, report["explained_variance_ratio"], recon["test"].get("mean_px", float("nan")),
             fit_s, time.perf_counter() - start)
    return report
