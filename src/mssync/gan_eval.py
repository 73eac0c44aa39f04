"""`mssync eval-gan`: does generated motion sync with its audio, at every scale, on unseen speakers?

The generator's own acceptance check, run right after training (results/gan/metrics.json, the
gan stage's DVC metrics). Every test clip is rolled out for its full length from its first frame
and scored with the *evaluation* syncers (trained with another seed than the loss syncers, so the
generator never saw them), against three baselines: the real motion, a static head (frame 0
repeated), and the real motion paired with another clip's audio. The variants and the per-level
LSE scores are evaluate.py's (the full evaluation adds ablations, dynamics and lips); here they
are keyed as generated / real / static / real_other_audio, with the pose-velocity check beside.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .atomic import write_json_atomic
from .evaluate import GROUND_TRUTH, MAIN, OTHER_AUDIO, STATIC, build_variants, sync_metrics
from .gan import pose_velocity_std
from .generate import MotionGenerator
from .motion import load_split
from .syncer_train import load_syncer
from .syncmetrics import MAX_OFFSET_FRAMES

log = logging.getLogger(__name__)

REPORT_NAMES = {MAIN: "generated", GROUND_TRUTH: "real", STATIC: "static", OTHER_AUDIO: "real_other_audio"}


def level_report(by_variant: dict[str, dict]) -> dict:
    """One level's scores under this report's names, and whether generated beats each baseline."""
    result = {REPORT_NAMES[name]: scores for name, scores in by_variant.items()}
    generated = result["generated"]["lse_c"]
    result["generated_beats_static"] = bool(generated > result["static"]["lse_c"])
    other = result.get("real_other_audio")  # absent with a single test clip
    result["generated_beats_other_audio"] = None if other is None else bool(generated > other["lse_c"])
    return result


def evaluate_generator(test: Path, space_path: Path, generator_path: Path, syncer_paths: list[Path], out: Path,
                       kernel: int, max_offset_frames: int = MAX_OFFSET_FRAMES) -> dict:
    generator = MotionGenerator.load(generator_path, space_path, device="cpu")
    clips = load_split(test, generator.space)
    variants = build_variants({MAIN: generator}, clips)
    summary, _ = sync_metrics([load_syncer(p) for p in syncer_paths], variants, generator.space, kernel,
                              max_offset_frames)
    report: dict = {"split": str(test), "clips": len(clips), "levels": {}}
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
