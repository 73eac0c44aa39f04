"""`mssync eval-gan`: does generated motion sync with its audio, at every scale, on unseen speakers?

Every test clip is rolled out for its full length from its first frame and scored with the
*evaluation* syncers (trained with another seed than the loss syncers, so the generator never
saw them). Baselines: the real motion, a static head (frame 0 repeated), and the real motion
paired with another clip's audio. Sync confidence is LSE-C (syncmetrics.py); a static head scores
close to 0 (its windows all look the same; only the audio windows differ between shifts). Head motion: the standard deviation of pose
velocity (rotation and translation per frame), generated over real.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .atomic import write_json_atomic
from .gan import pose_velocity_std
from .generate import MotionGenerator
from .motion import load_split
from .syncer_train import level_clip, load_syncer
from .syncmetrics import MAX_OFFSET_FRAMES, distance_curve, lse

log = logging.getLogger(__name__)

VARIANTS = ("generated", "static", "real", "real_other_audio")


def clip_variants(generator: MotionGenerator, clips: dict) -> list[dict]:
    """Per test clip: the motion of each variant and the audio it is paired with."""
    ids = sorted(clips)
    out = []
    for i, clip_id in enumerate(ids):
        clip, partner = clips[clip_id], clips[ids[(i + 1) % len(ids)]]
        n = len(clip.motion)
        generated = generator.generate(clip.motion[0], clip.mel, n)
        m = min(n, len(partner.motion))
        out.append({
            "clip_id": clip_id,
            "generated": (generated, clip.mel, np.ones(n, bool)),
            "static": (np.repeat(clip.motion[:1], n, axis=0), clip.mel, np.ones(n, bool)),
            "real": (clip.motion, clip.mel, clip.valid),
            "real_other_audio": (clip.motion[:m], partner.mel[:4 * m], clip.valid[:m]) if partner is not clip else None,
        })
    return out


def sync_scores(syncer, variants: list[dict], space, kernel: int) -> dict:
    level = syncer.level
    max_shift = int(np.ceil(MAX_OFFSET_FRAMES / 2**level))
    scores: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for clip in variants:
        for name in VARIANTS:
            if clip[name] is None:
                continue
            motion, mel, valid = clip[name]
            lc = level_clip(clip["clip_id"], space.syncer_features(motion), mel, valid, level, kernel)
            if lc is not None:
                curve = distance_curve(syncer, lc, lc, max_shift)
                scores[name].append({**lse(curve, level), "distance_at_0": curve[0]})
    return {name: {key: float(np.mean([r[key] for r in rows])) for key in ("lse_c", "lse_d", "distance_at_0")}
            for name, rows in scores.items() if rows}


def evaluate_generator(test: Path, space_path: Path, generator_path: Path, syncer_paths: list[Path], out: Path,
                       kernel: int) -> dict:
    generator = MotionGenerator.load(generator_path, space_path, device="cpu")
    clips = load_split(test, generator.space)
    variants = clip_variants(generator, clips)
    report: dict = {"split": str(test), "clips": len(clips), "levels": {}}
    for path in syncer_paths:
        syncer = load_syncer(path)
        result = sync_scores(syncer, variants, generator.space, kernel)
        g = result["generated"]["lse_c"]
        result["generated_beats_static"] = g > result["static"]["lse_c"]
        other = result.get("real_other_audio")  # absent with a single test clip
        result["generated_beats_other_audio"] = None if other is None else g > other["lse_c"]
        report["levels"][f"level{syncer.level}"] = result
        log.info("level %d LSE-C: generated %.3f | real %.3f | static %.3f | real + other audio %s", syncer.level, g,
                 result["real"]["lse_c"], result["static"]["lse_c"], result.get("real_other_audio", {}).get("lse_c"))
    real_v = pose_velocity_std(np.concatenate([c["real"][0] for c in variants]))
    gen_v = pose_velocity_std(np.concatenate([c["generated"][0] for c in variants]))
    report["pose_velocity_std"] = {"real": real_v, "generated": gen_v, "ratio": gen_v / real_v,
                                   "within_0.5x_2x": bool(0.5 <= gen_v / real_v <= 2.0)}
    log.info("pose velocity std: generated %.4f vs real %.4f (x%.2f)", gen_v, real_v, gen_v / real_v)
    write_json_atomic(out, report)
    return report
