"""`mssync crossval`: every fold's held-out scores pooled into speaker-level intervals.

Each usable speaker is in exactly one fold's test split, so pooling the folds scores every speaker
once, by generators and syncers that never saw it. Per clip, a generator's value is averaged over
the seeds it was trained with (the seed is a nuisance, not a unit); the interval then comes from
resampling speakers (mssync.evaluation.stats), and the spread over seeds is reported beside it.

What the report claims, per pyramid level:
- measurable: the fold's *evaluation* syncers find a clip's own audio among the K candidates of a
  retrieval group more often than chance (per clip: top-1 minus 1/K; interval above 0). Where a
  level is not measurable, no sync difference at that level means anything, and the report says so.
- paired differences of LSE-C (higher: motion and audio agree more clearly) between MS-Sync and
  each other generator, the static head and the real motion with another clip's audio;
- what a viewer sees (evaluation/viewer.py): per generator, each per-clip ratio to the real motion
  and the face-shape drift, with its interval and whether its goal is met (the whole interval
  inside the goal), missed (the whole interval outside) or not decided by these speakers.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import logging
from pathlib import Path

import numpy as np

from mssync.core.atomic import write_json_atomic, write_text_atomic
from mssync.core.config import CrossvalSettings
from mssync.core.errors import MssyncError
from mssync.evaluation import plots
from mssync.evaluation.report import STYLE, embed_png
from mssync.evaluation.stats import (
    MIN_SPEAKERS_FOR_CLAIM,
    Interval,
    cluster_bootstrap,
    measurable,
    paired_difference,
    seed_spread,
    speaker_means,
    verdict,
)
from mssync.evaluation.viewer import GOALS, in_goal, is_ratio, to_log

log = logging.getLogger(__name__)

MAIN, GROUND_TRUTH, STATIC, OTHER_AUDIO = "ms_sync", "ground_truth", "static", "other_audio"
BASELINES = (STATIC, OTHER_AUDIO)
SYNC_METRICS = (("lse_c", "LSE-C", True), ("lse_d", "LSE-D", False))  # (key, label, higher is better)
DIFFERENCE_METRIC = "lse_c"  # the paired comparisons and the forest plot use sync confidence
CHANCE_LIFT = 0.0  # retrieval top-1 minus chance: what "no better than chance" is
VIEWER_METRICS = ("mouth_amplitude_ratio", "lip_peak_r", "lip_peak_r_ratio", "lip_peak_lag_frames",
                  "rotation_speed_ratio", "translation_speed_ratio", "face_scale_drift_p95", "face_width_drift_p95")


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per clip and seed, every variant's sync numbers at every level, with the clip's speaker."""

    speakers: dict[str, str]  # clip -> speaker
    folds: dict[str, int]  # clip -> the fold that tested it
    values: dict[tuple[str, str, str, int], dict[str, float]]  # (level, variant, clip, seed) -> {metric: value}
    retrieval: dict[tuple[str, str], dict[str, float]]  # (level, clip) -> {top1, chance}
    viewer: dict[tuple[str, str, int], dict[str, float]]  # (variant, clip, seed) -> what a viewer sees
    levels: list[str]
    variants: list[str]
    labels: dict[str, str]
    seeds: list[int]


def _fold_of(path: Path) -> int:
    """The fold index from a path under folds/fold{N}/."""
    for part in path.parts:
        if part.startswith("fold") and part[4:].isdigit():
            return int(part[4:])
    raise MssyncError(f"{path}: not under a folds/fold<N>/ folder")


def _seed_of(path: Path) -> int:
    for part in path.parts:
        if part.startswith("seed") and part[4:].isdigit():
            return int(part[4:])
    raise MssyncError(f"{path}: not under a seed<N>/ folder")


def read_test_speakers(splits: list[Path]) -> tuple[dict[str, str], dict[str, int]]:
    """clip -> speaker and clip -> fold, for every fold's test clips; a clip tested twice is an error
    (the folds would not be disjoint)."""
    speakers, folds = {}, {}
    for path in splits:
        fold = _fold_of(path)
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["split"] != "test":
                    continue
                if row["clip_id"] in folds:
                    raise MssyncError(f"{row['clip_id']} is tested in folds {folds[row['clip_id']]} and {fold}")
                speakers[row["clip_id"]], folds[row["clip_id"]] = row["speaker"], fold
    return speakers, folds


def read_scores(details: list[Path], splits: list[Path], syncer_metrics: list[Path]) -> Scores:
    speakers, folds = read_test_speakers(splits)
    values: dict[tuple[str, str, str, int], dict[str, float]] = {}
    viewer: dict[tuple[str, str, int], dict[str, float]] = {}
    levels: set[str] = set()
    variants: list[str] = []
    labels: dict[str, str] = {}
    seeds: set[int] = set()
    for path in details:
        blob = json.loads(path.read_text())
        seed = _seed_of(path)
        seeds.add(seed)
        labels.update(blob["labels"])
        for variant in blob["variants"]:
            if variant not in variants:
                variants.append(variant)
        for level, by_variant in blob["sync_per_clip"].items():
            levels.add(level)
            for variant, by_clip in by_variant.items():
                for clip, numbers in by_clip.items():
                    if folds.get(clip) != _fold_of(path):
                        raise MssyncError(f"{path}: scores {clip}, which is not a test clip of that fold")
                    values[(level, variant, clip, seed)] = {k: float(v) for k, v in numbers.items()}
        for variant, by_clip in blob.get("viewer_per_clip", {}).items():
            for clip, numbers in by_clip.items():
                viewer[(variant, clip, seed)] = {k: float(v) for k, v in numbers.items()}
    retrieval = {}
    for path in syncer_metrics:
        for level, result in json.loads(path.read_text())["levels"].items():
            for clip, numbers in result["retrieval"].get("per_clip", {}).items():
                retrieval[(level, clip)] = numbers
    return Scores(speakers, folds, values, retrieval, viewer, sorted(levels), variants, labels, sorted(seeds))


def _per_clip(scores: Scores, level: str, variant: str, metric: str, seeds: list[int]) -> tuple[np.ndarray, list[str]]:
    """The clip values averaged over `seeds` (NaN where a clip has none), in a fixed clip order."""
    clips = sorted(scores.speakers)
    out = []
    for clip in clips:
        found = [scores.values[(level, variant, clip, s)][metric] for s in seeds
                 if (level, variant, clip, s) in scores.values]
        out.append(float(np.mean(found)) if found else np.nan)
    return np.array(out), [scores.speakers[c] for c in clips]


def _viewer_per_clip(scores: Scores, variant: str, metric: str) -> tuple[np.ndarray, list[str]]:
    """A viewer number per clip averaged over seeds (NaN where a clip has none, e.g. no drift roll-out)."""
    clips = sorted(scores.speakers)
    out = []
    for clip in clips:
        found = [scores.viewer[(variant, clip, s)].get(metric, np.nan) for s in scores.seeds
                 if (variant, clip, s) in scores.viewer]
        found = [v for v in found if np.isfinite(v)]
        out.append(float(np.mean(found)) if found else np.nan)
    return np.array(out), [scores.speakers[c] for c in clips]


def goal_verdict(metric: str, interval: Interval) -> str:
    """met: the whole interval inside the goal; missed: the whole interval outside; else undecided."""
    low, high = GOALS[metric]
    if interval.n_speakers < MIN_SPEAKERS_FOR_CLAIM:
        return "undecided"
    if low <= interval.low and interval.high <= high:
        return "met"
    if interval.high < low or interval.low > high:
        return "missed"
    return "undecided"


def viewer_intervals(scores: Scores, settings: CrossvalSettings) -> list[dict]:
    """Every generator's (and the real motion's) viewer numbers with their intervals and goal verdicts.

    Ratios are bootstrapped on a log scale and reported back as ratios (a geometric mean and its
    interval), so a clip 2x too fast and one 2x too slow do not average to "just right"; beside
    each goal, the share of clips within it (speaker-weighted, with its interval)."""
    rows = []
    for variant in [v for v in scores.variants if v != OTHER_AUDIO]:
        for metric in VIEWER_METRICS:
            values, speakers = _viewer_per_clip(scores, variant, metric)
            if not np.isfinite(values).any():
                continue
            if is_ratio(metric):
                logged = _interval(to_log(values), speakers, settings)
                interval = Interval(*(float(np.exp(v)) for v in (logged.estimate, logged.low, logged.high)),
                                    logged.n_speakers, logged.level)
            else:
                interval = _interval(values, speakers, settings)
            row = {"variant": variant, "metric": metric, **_numbers(interval), "goal": "",
                   "in_goal_share": "", "in_goal_low": "", "in_goal_high": ""}
            if metric in GOALS:
                share = _interval(in_goal(metric, values), speakers, settings)
                row.update(goal=goal_verdict(metric, interval), in_goal_share=round(share.estimate, 4),
                           in_goal_low=round(share.low, 4), in_goal_high=round(share.high, 4))
            rows.append(row)
    return rows


def _numbers(interval: Interval) -> dict:
    """An interval's numbers for a table row (its confidence level is the summary's, stated once)."""
    numbers = interval.as_dict()
    numbers.pop("level")
    return numbers


def _interval(values: np.ndarray, speakers: list[str], settings: CrossvalSettings) -> Interval:
    return cluster_bootstrap(values, speakers, n_boot=settings.bootstrap_samples, level=settings.interval)


def _seed_estimates(scores: Scores, level: str, a: str, b: str | None, metric: str) -> dict[int, float]:
    """The speaker-level estimate per seed (of a, or of a minus b): how much one seed's run moves it."""
    out = {}
    for seed in scores.seeds:
        va, speakers = _per_clip(scores, level, a, metric, [seed])
        if b is not None:
            vb, _ = _per_clip(scores, level, b, metric, [seed])
            va = va - vb
        _, means = speaker_means(va, speakers)
        if len(means):
            out[seed] = float(means.mean())
    return out


def measurability(scores: Scores, settings: CrossvalSettings) -> dict[str, dict]:
    """Per level: the evaluation syncers' top-1 lift over chance on held-out speakers, with its interval."""
    out = {}
    clips = sorted(scores.speakers)
    for level in scores.levels:
        lift = np.array([scores.retrieval[(level, c)]["top1"] - scores.retrieval[(level, c)]["chance"]
                         if (level, c) in scores.retrieval else np.nan for c in clips])
        if not np.isfinite(lift).any():
            out[level] = {"measurable": False, "reason": "no per-clip retrieval scores"}
            continue
        interval = _interval(lift, [scores.speakers[c] for c in clips], settings)
        out[level] = {"top1_minus_chance": _numbers(interval), "measurable": measurable(interval, CHANCE_LIFT)}
    return out


def comparisons(variants: list[str]) -> list[tuple[str, str]]:
    """MS-Sync against every other generator, then both baselines (what "no sync" scores)."""
    others = [v for v in variants if v not in (MAIN, GROUND_TRUTH, *BASELINES)]
    return [(MAIN, v) for v in others] + [(MAIN, b) for b in BASELINES if b in variants]


def summarise(scores: Scores, settings: CrossvalSettings) -> dict:
    seeds = scores.seeds
    intervals, differences = [], []
    for level in scores.levels:
        for variant in scores.variants:
            for metric, _, _ in SYNC_METRICS:
                values, speakers = _per_clip(scores, level, variant, metric, seeds)
                if not np.isfinite(values).any():
                    continue
                interval = _interval(values, speakers, settings)
                spread = seed_spread(_seed_estimates(scores, level, variant, None, metric))
                intervals.append({"sync_level": level, "variant": variant, "metric": metric, **_numbers(interval),
                                  "seed_sd": spread["sd"], "seeds": spread["n"]})
        for a, b in comparisons(scores.variants):
            va, speakers = _per_clip(scores, level, a, DIFFERENCE_METRIC, seeds)
            vb, _ = _per_clip(scores, level, b, DIFFERENCE_METRIC, seeds)
            if not (np.isfinite(va) & np.isfinite(vb)).any():
                continue
            interval = paired_difference(va, vb, speakers, n_boot=settings.bootstrap_samples, level=settings.interval)
            spread = seed_spread(_seed_estimates(scores, level, a, b, DIFFERENCE_METRIC))
            differences.append({"sync_level": level, "a": a, "b": b, "metric": DIFFERENCE_METRIC, **_numbers(interval),
                                "verdict": verdict(interval), "seed_sd": spread["sd"], "seed_min": spread["min"],
                                "seed_max": spread["max"]})
    per_fold = {}
    for clip, fold in scores.folds.items():
        entry = per_fold.setdefault(str(fold), {"clips": 0, "speakers": set()})
        entry["clips"] += 1
        entry["speakers"].add(scores.speakers[clip])
    return {
        "folds": {k: {"clips": v["clips"], "speakers": sorted(v["speakers"])} for k, v in sorted(per_fold.items())},
        "speakers": len(set(scores.speakers.values())),
        "clips": len(scores.speakers),
        "seeds": seeds,
        "interval": settings.interval,
        "bootstrap_samples": settings.bootstrap_samples,
        "labels": scores.labels,
        "measurability": measurability(scores, settings),
        "intervals": intervals,
        "differences": differences,
        "viewer": viewer_intervals(scores, settings),
    }


def _tsv(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _interval_of(row: dict, level: float) -> Interval:
    return Interval(row["estimate"], row["low"], row["high"], row["n_speakers"], level)


def forest(summary: dict, out: Path) -> Path:
    labels = summary["labels"]
    readable = {level: m["measurable"] for level, m in summary["measurability"].items()}
    rows = [(f"{d['sync_level']}{'' if readable.get(d['sync_level']) else ' (not measurable)'}: "
             f"{labels.get(d['a'], d['a'])} − {labels.get(d['b'], d['b'])}",
             _interval_of(d, summary["interval"])) for d in summary["differences"]]
    return plots.forest_plot(rows, out, title="Cross-validated paired differences of LSE-C (held-out speakers)",
                             xlabel="LSE-C difference (positive: the first is more in sync)")


def statements(summary: dict) -> list[tuple[bool, str]]:
    """What holds at the interval's level and what does not, one line per level and comparison."""
    labels, pct = summary["labels"], round(100 * summary["interval"])
    out = []
    for level, m in summary["measurability"].items():
        if "top1_minus_chance" not in m:
            out.append((False, f"{level}: not measurable ({m.get('reason', 'no scores')})"))
            continue
        lift = m["top1_minus_chance"]
        words = "beat chance" if m["measurable"] else "do not beat chance"
        out.append((m["measurable"], f"{level}: the evaluation syncers {words} on held-out speakers (top-1 minus "
                                     f"chance {lift['estimate']:+.3f}, {pct} % interval {lift['low']:+.3f} to "
                                     f"{lift['high']:+.3f}); sync differences at this level "
                                     f"{'can' if m['measurable'] else 'cannot'} be read."))
        for d in (d for d in summary["differences"] if d["sync_level"] == level):
            a, b = labels.get(d["a"], d["a"]), labels.get(d["b"], d["b"])
            holds = d["verdict"] == "higher" and m["measurable"]
            out.append((holds, f"{level}: {a} vs {b}: LSE-C difference {d['estimate']:+.4f} "
                               f"({pct} % interval {d['low']:+.4f} to {d['high']:+.4f}, {d['n_speakers']} speakers): "
                               f"{d['verdict']}{'' if m['measurable'] else ' (level not measurable)'}"))
    for row in (r for r in summary.get("viewer", []) if r["goal"] and r["variant"] == MAIN):
        out.append((row["goal"] == "met", f"what a viewer sees, {row['metric']}: {labels.get(MAIN, MAIN)} "
                                          f"{row['estimate']:.3f} ({pct} % interval {row['low']:.3f} to "
                                          f"{row['high']:.3f}): goal {row['goal']}; {row['in_goal_share']:.0%} of "
                                          f"clips (speaker-weighted) within it"))
    return out


def _share(row: dict) -> str:
    if row["in_goal_share"] == "":
        return ""
    return f"{row['in_goal_share']:.2f} ({row['in_goal_low']:.2f} to {row['in_goal_high']:.2f})"


def render_page(summary: dict, forest_png: Path) -> str:
    items = "".join(f'<li class="{"good" if good else "bad"}">{html.escape(text)}</li>' for good, text in statements(summary))
    folds = "".join(f"<tr><td>{k}</td><td>{v['clips']}</td><td>{len(v['speakers'])}</td>"
                    f"<td>{html.escape(', '.join(v['speakers']))}</td></tr>" for k, v in summary["folds"].items())
    labels = summary["labels"]
    rows = "".join(
        f"<tr><td>{r['sync_level']}</td><td>{html.escape(labels.get(r['variant'], r['variant']))}</td><td>{r['metric']}</td>"
        f"<td>{r['estimate']:.4f}</td><td>{r['low']:.4f} to {r['high']:.4f}</td><td>{r['seed_sd']:.4f}</td></tr>"
        for r in summary["intervals"])
    viewer = "".join(
        f"<tr><td>{html.escape(labels.get(r['variant'], r['variant']))}</td><td>{r['metric']}</td>"
        f"<td>{r['estimate']:.3f}</td><td>{r['low']:.3f} to {r['high']:.3f}</td><td>{r['n_speakers']}</td>"
        f"<td>{r['goal']}</td><td>{_share(r)}</td></tr>" for r in summary.get("viewer", []))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mssync cross-validation</title>
<style>{STYLE}</style></head><body>
<h1>Cross-validation on held-out speakers</h1>
<p>{summary['speakers']} speakers, {summary['clips']} test clips in {len(summary['folds'])} speaker-disjoint folds;
generators trained with seeds {summary['seeds']}. Every number weighs speakers equally (a clip's value is averaged
within its speaker) and its interval comes from {summary['bootstrap_samples']} speaker-level bootstrap resamples
({round(100 * summary['interval'])} %). A generator's clip value is its mean over seeds; "seed sd" is how much the
speaker-level estimate moves from one seed's run to another.</p>
<h2>What holds and what does not</h2><ul>{items}</ul>
<h2>Paired differences</h2>{embed_png(forest_png, "forest plot of paired LSE-C differences")}
<h2>What a viewer sees</h2><p>Ratios to the same clip's real motion (mouth amplitude, lip-audio peak r, head
speeds; geometric means, so too much and too little do not cancel), the peak lag in frames and the face-shape drift
over long roll-outs (evaluation/viewer.py). Goal: "met" when the whole interval is inside it, "missed" when the whole
interval is outside, "undecided" otherwise; the share of clips within the goal shows how much the average hides.</p>
<table><tr><th>variant</th><th>metric</th><th>estimate</th><th>interval</th><th>speakers</th><th>goal</th>
<th>share of clips in goal</th></tr>{viewer}</table>
<h2>Folds</h2><table><tr><th>fold</th><th>test clips</th><th>speakers</th><th>who</th></tr>{folds}</table>
<h2>Every interval</h2><table><tr><th>level</th><th>variant</th><th>metric</th><th>estimate</th>
<th>interval</th><th>seed sd</th></tr>{rows}</table>
</body></html>
"""


def run_crossval(*, details: list[Path], splits: list[Path], syncer_metrics: list[Path],
                 settings: CrossvalSettings, out_dir: Path) -> dict:
    scores = read_scores(details, splits, syncer_metrics)
    summary = summarise(scores, settings)
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "intervals.tsv", _tsv(summary["intervals"]))
    write_text_atomic(out_dir / "differences.tsv", _tsv(summary["differences"]))
    write_text_atomic(out_dir / "viewer.tsv", _tsv(summary["viewer"]))
    forest_png = forest(summary, out_dir / "forest.png")
    write_text_atomic(out_dir / "report.html", render_page(summary, forest_png))
    for good, text in statements(summary):
        log.info("%s %s", "+" if good else "-", text)
    return summary
