"""`mssync evaluate`: the test-split numbers of the report, for MS-Sync, its ablations and baselines.

Every test clip is rolled out for its full length from its first frame by each generator (the
main model and the ablations trained by the same code with other gan.sync_levels). Baselines:
the ground-truth motion, a static head (frame 0 repeated) and the ground-truth motion paired with
another test clip's audio (what "no sync" scores). Each is scored on:

- multi-scale sync with the *evaluation* syncers (never seen by the generator): LSE-D, LSE-C and
  the offset per level (the variants and their sync scores are gan/evaluate.py's);
- head-motion dynamics: speed statistics, Frechet distance of windowed pose dynamics to the real
  windows, diversity (dynamics.py);
- lips: mouth-opening / audio-energy correlation over lags and its peak; landmark distance to
  the ground truth (lips.py);
- what a viewer sees (viewer.py): per clip, mouth amplitude, lip-audio peak and head speeds as
  ratios to the same clip's real motion; face-shape drift over roll-outs of `drift_seconds` of
  speech (the test clips' audio one after another, so a roll-out is longer than any clip).

Outputs: `metrics.json` (per variant, DVC metrics: flat numbers only), `evaluation/details.json`
(per clip offsets, correlation curves, histograms), per-level TSV tables and PNG plots.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from mssync.core import checkpoints
from mssync.core.atomic import write_json_atomic, write_text_atomic
from mssync.core.reproducible import provenance, training_runs
from mssync.evaluation import lips, viewer
from mssync.gan.evaluate import (
    GROUND_TRUTH,
    MAIN,
    OTHER_AUDIO,
    PROGRESS_INTERVAL_S,
    STATIC,
    Track,
    build_variants,
    sync_metrics,
)
from mssync.gan.generate import MotionGenerator
from mssync.gan.model import AUDIO_PER_FRAME
from mssync.media import face_shape
from mssync.motion import dynamics
from mssync.motion.clips import ClipMotion
from mssync.motion.motion_cache import read_cache
from mssync.motion.space import MotionSpace
from mssync.syncers.model import Syncer

log = logging.getLogger(__name__)

LABELS = {MAIN: "MS-Sync (generated)", GROUND_TRUTH: "ground truth", STATIC: "static head",
          OTHER_AUDIO: "ground truth + other clip's audio"}
SAME_MOTION_AS_TRUTH = (GROUND_TRUTH, OTHER_AUDIO)  # their pose dynamics are the truth's by construction


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    ablations: dict[str, list[int]]
    max_offset_frames: int
    lip_lag_ms: int
    dynamics_window_frames: int
    dynamics_hop_frames: int
    histogram_bins: int
    drift_seconds: float
    drift_rollouts: int

    SECTION: ClassVar[str] = "evaluation"

    @classmethod
    def from_params(cls, values: dict) -> EvaluationSettings:
        return cls(**values)


def label(name: str, ablations: dict[str, list[int]]) -> str:
    if name in ablations:
        return f"ablation {name} (sync levels {ablations[name] or 'none'})"
    return LABELS.get(name, name)


# ------------------------------------------------------------------------------------- dynamics


def dynamics_metrics(variants: dict[str, list[Track]], fps: float, crop_size: int, window: int, hop: int,
                     bins: int) -> tuple[dict, dict]:
    """(summary per variant, histograms of rotation and translation speed per variant)."""
    poses = {name: [dynamics.pose_units(t.motion, crop_size) for t in tracks]
             for name, tracks in variants.items() if name != OTHER_AUDIO}
    real_windows = np.concatenate([dynamics.window_features(p, fps, window, hop) for p in poses[GROUND_TRUTH]])
    summary, magnitudes = {}, {}
    for name, clip_poses in poses.items():
        magnitudes[name] = dynamics.speeds(clip_poses, fps)
        row = {f"{part}_{stat}": value for part, stats in dynamics.speed_statistics(magnitudes[name]).items()
               for stat, value in stats.items()}
        windows = np.concatenate([dynamics.window_features(p, fps, window, hop) for p in clip_poses])
        row["frechet_to_real"] = dynamics.dynamics_frechet(real_windows, windows) if len(windows) else math.nan
        row.update(dynamics.diversity(clip_poses))
        summary[name] = row
    return summary, speed_histograms(magnitudes, bins)


def speed_histograms(magnitudes: dict[str, dict[str, np.ndarray]], bins: int) -> dict:
    """Densities of rotation and translation speed on bin edges shared by every variant."""
    out = {}
    for part in ("rotation_velocity", "translation_velocity"):
        top = max(float(np.percentile(m[part], 99)) for m in magnitudes.values() if len(m[part]))
        edges = np.linspace(0.0, max(top, np.finfo(float).eps), bins + 1)
        out[part] = {"edges": edges.tolist(), "density": {
            name: np.histogram(np.clip(m[part], 0, edges[-1]), edges, density=True)[0].tolist()
            for name, m in magnitudes.items() if len(m[part])}}
    return out


# ------------------------------------------------------------------------------------- lips


def lips_metrics(variants: dict[str, list[Track]], space: MotionSpace, crop_size: int,
                 max_lag: int, ms_per_frame: float) -> tuple[dict, dict]:
    """(summary per variant, mean correlation curve per variant as lag_ms -> r)."""
    summary, curves = {}, {}
    for name, tracks in variants.items():
        clip_curves, distances = [], []
        for track in tracks:
            landmarks = space.decode(track.motion)
            mouth = face_shape.mouth_opening(landmarks, crop_size)
            energy = lips.frame_energy(track.mel, AUDIO_PER_FRAME)
            clip_curves.append(lips.lagged_correlation(mouth, energy, max_lag))
            if track.truth is not None:
                distances.append(lips.landmark_distance(landmarks, space.decode(track.truth), crop_size))
        lags = sorted(set.intersection(*(set(c) for c in clip_curves)))
        mean_curve = {lag: float(np.mean([c[lag] for c in clip_curves])) for lag in lags}
        peak_lag, peak_r = lips.peak(mean_curve)
        row = {"r_at_lag0": mean_curve.get(0, math.nan), "peak_r": peak_r, "peak_lag_ms": peak_lag * ms_per_frame}
        if distances:
            row.update({key: float(np.mean([d[key] for d in distances])) for key in distances[0]})
        summary[name] = row
        curves[name] = {str(round(lag * ms_per_frame)): r for lag, r in mean_curve.items()}
    return summary, curves


# ------------------------------------------------------------------------------------- what a viewer sees


def viewer_per_clip(variants: dict[str, list[Track]], space: MotionSpace, crop_size: int, fps: float,
                    max_lag: int) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> clip -> viewer numbers against the clip's real motion (the truth scores itself: ratios 1).

    The real motion with another clip's audio is left out: its motion is the truth's."""
    out = {}
    for name, tracks in variants.items():
        if name == OTHER_AUDIO:
            continue
        out[name] = {}
        for track in tracks:
            real = track.truth if track.truth is not None else track.motion
            out[name][track.clip_id] = viewer.clip_numbers(
                landmarks=space.decode(track.motion), motion=track.motion, real_landmarks=space.decode(real),
                real_motion=real, energy=lips.frame_energy(track.mel, AUDIO_PER_FRAME), crop_size=crop_size,
                fps=fps, max_lag=max_lag)
    return out


def long_audio(clips: dict[str, ClipMotion], start: str, frames: int) -> np.ndarray:
    """The test clips' log-mel one after another from `start` (sorted order, cycling) until `frames` video frames."""
    ids = sorted(clips)
    order = ids[ids.index(start):] + ids[:ids.index(start)]
    rows, parts, i = AUDIO_PER_FRAME * frames, [], 0
    while sum(len(p) for p in parts) < rows:
        parts.append(clips[order[i % len(order)]].mel)
        i += 1
    return np.concatenate(parts)[:rows]


def drift_per_clip(generators: dict[str, MotionGenerator], clips: dict[str, ClipMotion], space: MotionSpace,
                   seconds: float, rollouts: int) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> clip -> face-shape drift: each generator rolls out `seconds` of speech from the first
    `rollouts` test clips' first frames; the real motion's drift is over each clip's own (shorter) length."""
    fps = next(iter(clips.values())).fps
    frames = round(seconds * fps)
    starts = sorted(clips)[:rollouts]
    out = {GROUND_TRUTH: {c: face_shape.shape_drift(space.decode(clips[c].motion)) for c in sorted(clips)}}
    for name, generator in generators.items():
        out[name] = {c: face_shape.shape_drift(space.decode(generator.generate(clips[c].motion[0],
                                                                           long_audio(clips, c, frames), frames)))
                     for c in tqdm(starts, desc=f"{seconds:g} s roll-out {name}", mininterval=PROGRESS_INTERVAL_S)}
    return out


def viewer_metrics(variants: dict[str, list[Track]], generators: dict[str, MotionGenerator],
                   clips: dict[str, ClipMotion], space: MotionSpace, crop_size: int, max_lag: int,
                   settings: EvaluationSettings) -> tuple[dict, dict]:
    """(summary per variant, per-clip numbers per variant): the ratios, the lip peak and the drift."""
    fps = next(iter(clips.values())).fps
    per_clip = viewer_per_clip(variants, space, crop_size, fps, max_lag)
    for name, by_clip in drift_per_clip(generators, clips, space, settings.drift_seconds,
                                        settings.drift_rollouts).items():
        for clip, numbers in by_clip.items():
            per_clip.setdefault(name, {}).setdefault(clip, {}).update(numbers)
    return {name: viewer.summarise(by_clip) for name, by_clip in per_clip.items()}, per_clip


# ------------------------------------------------------------------------------------- tables


def tsv(rows: list[dict]) -> str:
    """Rows with the same keys -> TSV text (floats to 4 significant digits)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def write_tables(metrics: dict, out_dir: Path) -> dict[str, Path]:
    """sync.tsv (one row per level and variant); dynamics.tsv, lips.tsv, viewer.tsv (one row per variant)."""
    paths = {name: out_dir / f"{name}.tsv" for name in ("sync", "dynamics", "lips", "viewer")}
    sync_rows = [{"level": key, "variant": name, **values} for key, by_variant in metrics["sync"].items()
                 for name, values in by_variant.items()]
    write_text_atomic(paths["sync"], tsv(sync_rows))
    for section in ("dynamics", "lips", "viewer"):
        rows = [{"variant": name, **values} for name, values in metrics[section].items()]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        write_text_atomic(paths[section], tsv([{k: r.get(k, "") for k in keys} for r in rows]))
    return paths


# ------------------------------------------------------------------------------------- the stage


def generator_paths(model: Path, ablations: list[Path]) -> dict[str, Path]:
    """The main generator and each ablation (named by its folder: models/ablations/{name}/generator.pt)."""
    return {MAIN: model, **{p.parent.name: p for p in ablations}}


def load_generators(model: Path, ablations: list[Path], space_path: Path) -> dict[str, MotionGenerator]:
    return {name: MotionGenerator.load(p, space_path, device="cpu") for name, p in generator_paths(model, ablations).items()}


def evaluate(*, test: Path, space_path: Path, model: Path, ablations: list[Path], syncer_paths: list[Path],
             settings: EvaluationSettings, crop_size: int, out: Path, details_out: Path, tables_dir: Path,
             plots_dir: Path) -> dict:
    from mssync.evaluation import plots  # matplotlib only where plots are drawn

    generators = load_generators(model, ablations, space_path)
    space = generators[MAIN].space
    clips = read_cache(test)
    fps = next(iter(clips.values())).fps
    variants = build_variants(generators, clips)
    syncers = [Syncer.load(p) for p in syncer_paths]
    sync, sync_per_clip = sync_metrics(syncers, variants, space, settings.max_offset_frames)
    motion_summary, histograms = dynamics_metrics(variants, fps, crop_size, settings.dynamics_window_frames,
                                                  settings.dynamics_hop_frames, settings.histogram_bins)
    ms_per_frame = 1000.0 / fps
    lips_summary, curves = lips_metrics(variants, space, crop_size, round(settings.lip_lag_ms / ms_per_frame),
                                        ms_per_frame)
    viewer_summary, viewer_clips = viewer_metrics(variants, generators, clips, space, crop_size,
                                                  round(settings.lip_lag_ms / ms_per_frame), settings)
    run = {"run": provenance(), "training_runs": training_runs(generator_paths(model, ablations))}
    metrics = {"clips": len(clips), "frames": int(sum(len(c.motion) for c in clips.values())),
               "sync": sync, "dynamics": motion_summary, "lips": lips_summary, "viewer": viewer_summary,
               "drift_seconds": settings.drift_seconds, "viewer_lag_frames": round(settings.lip_lag_ms / ms_per_frame),
               **run}
    labels = {name: label(name, settings.ablations) for name in variants}
    details = {"clip_ids": sorted(clips), "variants": list(variants), "labels": labels,
               "sync_levels": {MAIN: checkpoints.load(model)["sync_levels"], **settings.ablations},
               "sync_per_clip": sync_per_clip, "viewer_per_clip": viewer_clips, "speed_histograms": histograms, "mouth_audio_correlation": curves,
               "units": {"rotation": "deg, deg/s, deg/s^2", "translation": f"px of the {crop_size} crop (/s, /s^2)",
                         "offset": "video frames (positive: audio after motion)",
                         "peak_lag_ms": "positive: mouth opening follows audio energy",
                         "viewer": "ratios to the same clip's real motion; drift: p95 of |x_t / x_0 - 1|"}, **run}
    write_tables(metrics, tables_dir)
    plots.sync_bars(sync, labels, plots_dir / "sync_levels.png")
    plots.speed_histograms(histograms, labels, plots_dir / "pose_velocity.png")
    plots.correlation_curves(curves, labels, plots_dir / "mouth_audio_xcorr.png")
    write_json_atomic(details_out, details)
    write_json_atomic(out, metrics)
    for key, by_variant in sync.items():
        log.info("%s LSE-C: %s", key, " | ".join(f"{n} {v['lse_c']:.3f}" for n, v in by_variant.items()))
    return metrics
