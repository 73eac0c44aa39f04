"""`mssync eval-gan`: does generated motion sync with its audio, at every scale, on unseen speakers?

The generator's own acceptance check, run right after training (results/gan/metrics.json, the
gan stage's DVC metrics). Every test clip is rolled out for its full length from its first frame
and scored with the *evaluation* syncers (trained with another seed than the loss syncers, so the
generator never saw them), against three baselines: the real motion, a static head (frame 0
repeated), and the real motion paired with another clip's audio. The variants and the per-level
LSE scores live here and are shared with evaluation/evaluate.py (the full evaluation adds ablations, dynamics
and lips); this report keys them as generated / real / static / real_other_audio, with the
pose-velocity check beside.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mssync.core.atomic import write_json_atomic
from mssync.core.reproducible import provenance, training_runs
from mssync.gan.generate import MotionGenerator
from mssync.gan.model import AUDIO_PER_FRAME
from mssync.motion.clips import ClipMotion
from mssync.motion.dynamics import pose_velocity_std
from mssync.motion.motion_cache import read_cache
from mssync.motion.space import MotionSpace
from mssync.syncers.metrics import MAX_OFFSET_FRAMES, OFFSET_TOLERANCE_FRAMES, distance_curve, lse
from mssync.syncers.model import Syncer
from mssync.syncers.windows import level_clip

log = logging.getLogger(__name__)

MAIN = "ms_sync"
GROUND_TRUTH, STATIC, OTHER_AUDIO = "ground_truth", "static", "other_audio"
BASELINES = (GROUND_TRUTH, STATIC, OTHER_AUDIO)
PROGRESS_INTERVAL_S = 5.0


@dataclasses.dataclass
class Track:
    """One clip of one variant: the motion, the audio it is paired with, and the truth to compare."""

    clip_id: str
    motion: np.ndarray  # (T, D)
    mel: np.ndarray  # (4T', n_mels) log-mel in dB of the paired audio
    valid: np.ndarray  # (T,) frames whose motion is measured (or generated)
    truth: np.ndarray | None  # (T, D) the clip's real motion; None where a distance to it says nothing


# ------------------------------------------------------------------------------------- variants


def rollout(generator: MotionGenerator, clip: ClipMotion) -> Track:
    n = len(clip.motion)
    motion = generator.generate(clip.motion[0], clip.mel, n)
    return Track(clip.clip_id, motion, clip.mel, np.ones(n, bool), clip.motion)


def baselines(clips: dict[str, ClipMotion]) -> dict[str, list[Track]]:
    """Ground truth, static head, and truth paired with the next clip's audio (absent with one clip)."""
    ids = sorted(clips)
    out: dict[str, list[Track]] = {name: [] for name in BASELINES}
    for i, clip_id in enumerate(ids):
        clip, partner = clips[clip_id], clips[ids[(i + 1) % len(ids)]]
        n = len(clip.motion)
        out[GROUND_TRUTH].append(Track(clip_id, clip.motion, clip.mel, clip.valid, None))
        out[STATIC].append(Track(clip_id, np.repeat(clip.motion[:1], n, axis=0), clip.mel, np.ones(n, bool), clip.motion))
        if partner is not clip:
            m = min(n, len(partner.motion))
            out[OTHER_AUDIO].append(Track(clip_id, clip.motion[:m], partner.mel[:AUDIO_PER_FRAME * m], clip.valid[:m], None))
    return {name: tracks for name, tracks in out.items() if tracks}


def build_variants(generators: dict[str, MotionGenerator], clips: dict[str, ClipMotion]) -> dict[str, list[Track]]:
    variants = {}
    for name, generator in generators.items():
        variants[name] = [rollout(generator, clips[c]) for c in tqdm(sorted(clips), desc=f"roll-out {name}",
                                                                     mininterval=PROGRESS_INTERVAL_S)]
    return {**variants, **baselines(clips)}


# ------------------------------------------------------------------------------------- sync


def clip_sync(syncer: Syncer, features: np.ndarray, mel: np.ndarray, valid: np.ndarray, kernel: int,
              max_offset_frames: int) -> dict | None:
    """LSE-D, LSE-C and offset (video frames) of one motion/audio pair at the syncer's level.

    The search covers +-max_offset_frames at level 0, the same time span (fewer samples) above."""
    level = syncer.level
    lc = level_clip("track", features, mel, valid, level, kernel)
    if lc is None:
        return None
    curve = distance_curve(syncer, lc, lc, math.ceil(max_offset_frames / 2**level))
    return lse(curve, level)


def sync_metrics(syncers: list[Syncer], variants: dict[str, list[Track]], space: MotionSpace,
                 max_offset_frames: int) -> tuple[dict, dict]:
    """(summary level -> variant -> means, per-clip level -> variant -> clip -> numbers); each syncer
    sees tracks through the pyramid kernel it was trained with."""
    summary: dict = {}
    per_clip: dict = {}
    jobs = [(s, name) for s in syncers for name in variants]
    for syncer, name in tqdm(jobs, desc="sync", mininterval=PROGRESS_INTERVAL_S):
        key = f"level{syncer.level}"
        rows = {}
        for track in variants[name]:
            result = clip_sync(syncer, space.syncer_features(track.motion), track.mel, track.valid, syncer.kernel,
                               max_offset_frames)
            if result is not None:
                rows[track.clip_id] = result
        if not rows:
            continue
        offsets = np.array([abs(r["offset_frames"]) for r in rows.values()])
        summary.setdefault(key, {})[name] = {
            "lse_c": float(np.mean([r["lse_c"] for r in rows.values()])),
            "lse_d": float(np.mean([r["lse_d"] for r in rows.values()])),
            "offset_abs_frames": float(offsets.mean()),
            "offsets_within_tolerance": float(np.mean(offsets <= OFFSET_TOLERANCE_FRAMES)),
        }
        per_clip.setdefault(key, {})[name] = rows
    return summary, per_clip


REPORT_NAMES = {MAIN: "generated", GROUND_TRUTH: "real", STATIC: "static", OTHER_AUDIO: "real_other_audio"}


def level_report(by_variant: dict[str, dict]) -> dict:
    """One level's scores under this report's names, and whether generated beats each baseline."""
    result = {REPORT_NAMES[name]: scores for name, scores in by_variant.items()}
    generated = result["generated"]["lse_c"]
    result["generated_beats_static"] = bool(generated > result["static"]["lse_c"])
    other = result.get("real_other_audio")  # absent with a single test clip
    result["generated_beats_other_audio"] = None if other is None else bool(generated > other["lse_c"])
    return result


def evaluate_generator(*, test: Path, space_path: Path, generator_path: Path, syncer_paths: list[Path], out: Path,
                       max_offset_frames: int = MAX_OFFSET_FRAMES) -> dict:
    generator = MotionGenerator.load(generator_path, space_path, device="cpu")
    clips = read_cache(test)
    variants = build_variants({MAIN: generator}, clips)
    summary, _ = sync_metrics([Syncer.load(p) for p in syncer_paths], variants, generator.space, max_offset_frames)
    report: dict = {"split": str(test), "clips": len(clips), "levels": {}, "run": provenance(),
                    "training_runs": training_runs({"generator": generator_path})}
    for key, by_variant in summary.items():
        result = report["levels"][key] = level_report(by_variant)
        log.info("%s LSE-C: generated %.3f | real %.3f | static %.3f | real + other audio %s", key,
                 result["generated"]["lse_c"], result["real"]["lse_c"], result["static"]["lse_c"],
                 result.get("real_other_audio", {}).get("lse_c"))
    real_v = pose_velocity_std(np.concatenate([t.motion for t in variants[GROUND_TRUTH]]))
    gen_v = pose_velocity_std(np.concatenate([t.motion for t in variants[MAIN]]))
    report["pose_velocity_std"] = {"real": real_v, "generated": gen_v, "ratio": gen_v / real_v,
                                   "within_0.5x_2x": bool(0.5 <= gen_v / real_v <= 2.0)}
    log.info("pose velocity std: generated %.4f vs real %.4f (x%.2f)", gen_v, real_v, gen_v / real_v)
    write_json_atomic(out, report)
    return report
