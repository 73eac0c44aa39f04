"""`mssync report`: one self-contained HTML page (results/report.html), readable offline.

Tables come from results/metrics.json, plots are PNGs embedded as base64 (no CDN, no external
file needed), training curves are drawn from the TSVs the training stages append to, and each
test clip's rendered video is linked relatively (videos/{clip}.mp4 beside the report) under its
contact sheet, which is embedded. Missing render outputs are said, not hidden.

The "findings" list is generated from the numbers, not written by hand, so it cannot drift from
them: every level and metric where MS-Sync does *not* beat a baseline or an ablation is listed,
and so is every evaluation-syncer level that is not above chance on the test split (its sync
numbers measure little).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from pathlib import Path

from mssync.core.atomic import write_text_atomic
from mssync.core.errors import MssyncError
from mssync.evaluation.viewer import GOALS, meets

log = logging.getLogger(__name__)

MAIN, GROUND_TRUTH, STATIC = "ms_sync", "ground_truth", "static"
DIGITS = 3
SHEET_WIDTH_PX = 800  # contact sheets are embedded downscaled (a full 1024 px PNG is ~2 MB); the full one is linked
SHEET_JPEG_QUALITY = 85
# (metric, label, higher is better) per section; what "beats" means for each number.
SYNC_COLUMNS = (("lse_c", "LSE-C", True), ("lse_d", "LSE-D", False), ("offset_abs_frames", "|offset| (frames)", False))
DYNAMICS_COLUMNS = (("rotation_velocity_mean", "rot. speed mean (deg/s)", None),
                    ("rotation_velocity_std", "rot. speed std", None),
                    ("translation_velocity_mean", "transl. speed mean (px/s)", None),
                    ("rotation_acceleration_mean", "rot. accel. mean (deg/s²)", None),
                    ("translation_acceleration_mean", "transl. accel. mean (px/s²)", None),
                    ("frechet_to_real", "Fréchet to real (windows)", False),
                    ("rotation_within_clip_deg", "rot. std within clip (deg)", None),
                    ("translation_within_clip_px", "transl. std within clip (px)", None),
                    ("rotation_across_clips_deg", "rot. std across clips (deg)", None))
LIPS_COLUMNS = (("r_at_lag0", "r at lag 0", True), ("peak_r", "peak r", True), ("peak_lag_ms", "peak lag (ms)", None),
                ("mouth_px", "mouth distance to truth (px)", False), ("face_px", "face distance to truth (px)", False))
# What a viewer sees (evaluation/viewer.py): ratios to the same clip's real motion; goals from viewer.GOALS.
VIEWER_COLUMNS = (("mouth_amplitude_ratio", "mouth amplitude ratio"), ("lip_peak_r", "lip-audio peak r"),
                  ("lip_peak_r_ratio", "peak r / real's"), ("lip_peak_lag_frames", "peak lag (frames)"),
                  ("rotation_speed_ratio", "rot. speed ratio"), ("translation_speed_ratio", "transl. speed ratio"),
                  ("face_scale_drift_p95", "face-scale drift p95"), ("face_width_drift_p95", "face-width drift p95"))
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.main td{font-weight:bold;background:#eef5ff}
img{max-width:100%}.clip{margin:1em 0}.note{color:#555;font-size:90%}li.bad{color:#a40000}"""


# ------------------------------------------------------------------------------------- findings


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{DIGITS}g}" if isinstance(value, float) else str(value)


def better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def sync_findings(sync: dict, labels: dict[str, str]) -> list[tuple[bool, str]]:
    """(is it good news, sentence) for MS-Sync's LSE-C against every other variant, per level."""
    out = []
    for level, by_variant in sync.items():
        main = by_variant.get(MAIN)
        if main is None:
            continue
        lost = [n for n, v in by_variant.items() if n not in (MAIN, GROUND_TRUTH) and not better(main["lse_c"], v["lse_c"], True)]
        if lost:
            out.append((False, f"{level}: MS-Sync's LSE-C {fmt(main['lse_c'])} does not beat "
                               + ", ".join(f"{labels.get(n, n)} ({fmt(by_variant[n]['lse_c'])})" for n in lost) + "."))
        else:
            out.append((True, f"{level}: MS-Sync's LSE-C {fmt(main['lse_c'])} beats every baseline and ablation."))
        truth = by_variant.get(GROUND_TRUTH)
        if truth is not None:
            side = "above" if main["lse_c"] > truth["lse_c"] else "below"
            out.append((True, f"{level}: ground truth scores {fmt(truth['lse_c'])} (MS-Sync is {side} it)."))
    return out


def table_findings(section: dict, columns, labels: dict[str, str], name: str) -> list[tuple[bool, str]]:
    """MS-Sync against the others on every column that has a direction ("better" is defined)."""
    main = section.get(MAIN)
    if main is None:
        return []
    out = []
    for key, title, higher in columns:
        if higher is None or key not in main:
            continue
        others = {n: v[key] for n, v in section.items() if n not in (MAIN, GROUND_TRUTH) and key in v
                  and not math.isnan(v[key])}
        lost = [n for n, value in others.items() if not better(main[key], value, higher)]
        if lost:
            out.append((False, f"{name}, {title}: MS-Sync {fmt(main[key])} does not beat "
                               + ", ".join(f"{labels.get(n, n)} ({fmt(others[n])})" for n in lost) + "."))
        elif others:
            out.append((True, f"{name}, {title}: MS-Sync {fmt(main[key])} beats every baseline and ablation."))
    return out


def syncer_findings(syncer_metrics: dict | None) -> list[tuple[bool, str]]:
    """Evaluation-syncer levels whose held-out retrieval is not above chance: their sync numbers measure little."""
    if not syncer_metrics:
        return []
    out = []
    for level, values in syncer_metrics.get("levels", {}).items():
        retrieval = values.get("retrieval", {})
        if retrieval and not retrieval.get("above_chance", True):
            text = (f"{level}: the evaluation syncer itself is not above chance on the test split "
                    f"(top-1 {fmt(retrieval['top1'])}, chance {fmt(retrieval['chance'])}); its LSE numbers measure little.")
            out.append((False, text))
    return out


def velocity_finding(dynamics: dict) -> list[tuple[bool, str]]:
    main, truth = dynamics.get(MAIN), dynamics.get(GROUND_TRUTH)
    if not main or not truth or not truth.get("rotation_velocity_mean"):
        return []
    ratio = main["rotation_velocity_mean"] / truth["rotation_velocity_mean"]
    return [(0.5 <= ratio <= 2.0, f"head rotation speed: MS-Sync moves at {fmt(ratio)}x the real mean speed.")]


def goal_text(metric: str) -> str:
    low, high = GOALS[metric]
    return f"at least {fmt(low)}" if math.isinf(high) else f"{fmt(low)} to {fmt(high)}"


def viewer_findings(section: dict | None) -> list[tuple[bool, str]]:
    """MS-Sync against every viewer goal (one split, no interval: the cross-validation gives those)."""
    main = (section or {}).get(MAIN)
    if not main:
        return []
    out = []
    for key, title in VIEWER_COLUMNS:
        met = meets(key, main.get(key, math.nan))
        if met is not None:
            share = main.get(f"{key}_in_goal", math.nan)
            out.append((met, f"what a viewer sees, {title}: MS-Sync {fmt(main[key])} "
                             f"({'meets' if met else 'misses'} the goal {goal_text(key)}; "
                             f"{fmt(100 * share)} % of clips within it)."))
    return out


def viewer_table(section: dict, labels: dict[str, str]) -> str:
    """Each number with the share of clips within its goal beside it."""
    rows = {name: {key: (f"{fmt(values.get(key))} ({fmt(100 * values[key + '_in_goal'])} %)"
                         if key + "_in_goal" in values else values.get(key)) for key, _ in VIEWER_COLUMNS}
            for name, values in section.items()}
    return table(rows, [(k, t, None) for k, t in VIEWER_COLUMNS], labels)


def findings(metrics: dict, labels: dict[str, str], syncer_metrics: dict | None) -> list[tuple[bool, str]]:
    return (sync_findings(metrics["sync"], labels) + syncer_findings(syncer_metrics)
            + viewer_findings(metrics.get("viewer"))
            + velocity_finding(metrics["dynamics"])
            + table_findings(metrics["dynamics"], DYNAMICS_COLUMNS, labels, "head dynamics")
            + table_findings(metrics["lips"], LIPS_COLUMNS, labels, "lips"))


# ------------------------------------------------------------------------------------- html pieces


def embed_png(path: Path, alt: str) -> str:
    if not Path(path).is_file():
        return f'<p class="note">({html.escape(str(path))} is missing)</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def embed_sheet(path: Path, alt: str) -> str:
    """A contact sheet as an inline JPEG, SHEET_WIDTH_PX wide: keeps the page a few MB, not tens."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > SHEET_WIDTH_PX:
            image = image.resize((SHEET_WIDTH_PX, round(image.height * SHEET_WIDTH_PX / image.width)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=SHEET_JPEG_QUALITY)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'


def relative_link(path: Path, out: Path, text: str) -> str:
    """A link relative to the report's folder, so results/ can be moved or copied as a whole."""
    href = Path(os.path.relpath(path, out.parent)).as_posix()
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def table(rows: dict[str, dict], columns, labels: dict[str, str]) -> str:
    head = "<tr><th>variant</th>" + "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns) + "</tr>"
    body = []
    for name, values in rows.items():
        cls = ' class="main"' if name == MAIN else ""
        cells = "".join(f"<td>{fmt(values.get(key))}</td>" for key, _, _ in columns)
        body.append(f"<tr{cls}><td>{html.escape(labels.get(name, name))}</td>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def sync_tables(sync: dict, labels: dict[str, str]) -> str:
    """One table per sync number: variants as rows, levels as columns."""
    names = list(dict.fromkeys(n for by_variant in sync.values() for n in by_variant))
    parts = []
    for key, title, higher in SYNC_COLUMNS:
        direction = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
        columns = [(level, level, None) for level in sync]
        rows = {n: {level: sync[level].get(n, {}).get(key) for level in sync} for n in names}
        parts.append(f"<h3>{html.escape(title)}{direction}</h3>{table(rows, columns, labels)}")
    return "".join(parts)


def flatten(data, prefix: str = "") -> dict[str, float | int | str]:
    """Nested JSON -> {'a.b': scalar}: shows any render metrics without knowing their layout."""
    if isinstance(data, dict):
        out: dict = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, (int, float, str, bool)) or data is None:
        return {prefix.rstrip("."): data}
    return {}


def render_section(clip_ids: list[str], videos: Path | None, render_metrics: Path | None, out: Path) -> str:
    parts = ["<h2>Test clips</h2>"]
    if videos is None or not videos.is_dir():
        parts.append('<p class="note">No rendered videos (results/videos) were given or found.</p>')
    for clip in clip_ids:
        sheet = videos / f"{clip}.png" if videos else None
        video = videos / f"{clip}.mp4" if videos else None
        link = (relative_link(video, out, f"{clip}.mp4") if video is not None and video.is_file()
                else f"{html.escape(clip)}: no video")
        image = ""
        if sheet is not None and sheet.is_file():
            link += " · " + relative_link(sheet, out, "full-size contact sheet")
            image = embed_sheet(sheet, f"contact sheet of {clip}")
        parts.append(f'<div class="clip"><h3>{html.escape(clip)}</h3><p>{link}</p>{image}</div>')
    if render_metrics is not None and render_metrics.is_file():
        flat = flatten(json.loads(render_metrics.read_text(encoding="utf-8")))
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in flat.items())
        parts.append(f"<h3>Rendering metrics</h3><table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
    return "".join(parts)


# ------------------------------------------------------------------------------------- the page


def gan_runs(curves: list[Path]) -> dict[str, tuple[Path, Path]]:
    """Pairs of (train.tsv, val.tsv) named by run: the main run lives in results/gan/, an ablation
    in results/gan/ablations/<name>/."""
    if len(curves) % 2:
        raise MssyncError("--gan-curves takes pairs: train.tsv val.tsv per run")
    return {("ms_sync" if train.parent.name == "gan" else train.parent.name): (train, val)
            for train, val in zip(curves[::2], curves[1::2])}


def build_report(*, metrics_path: Path, details_path: Path, plots_dir: Path, gan_runs: dict[str, tuple[Path, Path]],
                 syncer_curves: list[Path], syncer_metrics_path: Path | None, videos: Path | None,
                 render_metrics: Path | None, out: Path) -> str:
    from mssync.evaluation import plots

    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    details = json.loads(details_path.read_text(encoding="utf-8"))
    labels = details["labels"]
    syncer_metrics = (json.loads(syncer_metrics_path.read_text(encoding="utf-8"))
                      if syncer_metrics_path and syncer_metrics_path.is_file() else None)
    gan_png = plots.gan_training(gan_runs, plots_dir / "training_gan.png")
    syncer_png = plots.syncer_training(syncer_curves, plots_dir / "training_syncers.png") if syncer_curves else None
    items = "".join(f'<li class="{"good" if good else "bad"}">{html.escape(text)}</li>'
                    for good, text in findings(metrics, labels, syncer_metrics))
    levels = ", ".join(f"{html.escape(labels.get(n, n))}: {v or 'none'}" for n, v in details["sync_levels"].items())
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mssync evaluation report</title>
<style>{STYLE}</style></head><body>
<h1>MS-Sync evaluation report</h1>
<p>Test split: {metrics['clips']} clips of held-out speakers, {metrics['frames']} frames. Each generator rolls
out every clip for its full length from the clip's first frame. Sync is scored by the <em>evaluation</em>
syncers, trained with another seed than the loss syncers the generators learned from.
Sync losses used in training: {levels}.</p>
<p class="note">This page scores one split of a few held-out speakers, one seed: its gaps carry no
interval. The speaker-disjoint cross-validation (every speaker tested once, several seeds, paired
speaker-bootstrap intervals, which sync levels are measurable) is {relative_link(out.parent / "crossval/report.html",
out, "results/crossval/report.html")}, made by <code>snakemake --cores all crossval</code>.</p>
<h2>Findings (generated from the numbers)</h2><ul>{items}</ul>
<h2>Multi-scale sync</h2>
<p class="note">LSE-D: min over offsets of the mean audio/motion embedding distance; LSE-C: median minus min over
offsets of ±15 frames at level 0 (the same time span at every level); offset in video frames, positive when the
audio comes after the motion. Static head and other clip's audio are what "no sync" scores.</p>
{sync_tables(metrics['sync'], labels)}
{embed_png(plots_dir / 'sync_levels.png', 'sync per level')}
<h2>What a viewer sees</h2>
<p class="note">Per clip against the same clip's real motion, then the mean over clips (lag: the median): mouth
amplitude is the standard deviation of the inner-lip opening, generated / real; the lip-audio peak is the highest
r between opening and audio energy within ±{html.escape(str(metrics.get('viewer_lag_frames', '')))} frames; speeds are
mean pose speeds, generated / real. Drift: each generator speaks {fmt(metrics.get('drift_seconds'))} s (the test clips'
audio back to back) from a test clip's first frame; per frame the face's size and its width over its eye distance are
compared with frame 0 (95th percentile of the relative change). The ground truth's drift is over its own, shorter clips.
Ratios are geometric means over clips (too fast and too slow do not cancel); in brackets, the share of clips within
the goal. Goals: {html.escape('; '.join(f'{title} {goal_text(key)}' for key, title in VIEWER_COLUMNS if key in GOALS))}.</p>
{viewer_table(metrics.get('viewer', {}), labels)}
<h2>Head-motion dynamics</h2>
<p class="note">Speeds are magnitudes of the per-frame pose change (rotation in degrees, translation in pixels of
the crop) per second. The Fréchet distance compares Gaussians fitted to 1 s windows of pose spread and RMS velocity,
z-scored with the real windows' statistics (0 = the real distribution). The ground truth with another clip's audio
has the ground truth's motion and is left out here.</p>
{table(metrics['dynamics'], DYNAMICS_COLUMNS, labels)}
{embed_png(plots_dir / 'pose_velocity.png', 'pose speed histograms')}
<h2>Lips</h2>
<p class="note">Pearson r between the inner-lip opening at t + lag and the audio energy at t (lags within ±200 ms),
mean over clips; a positive lag means the mouth follows the audio. Distances are to the ground-truth motion decoded
the same way (mean per landmark, pixels of the 256 crop).</p>
{table(metrics['lips'], LIPS_COLUMNS, labels)}
{embed_png(plots_dir / 'mouth_audio_xcorr.png', 'mouth-audio cross-correlation')}
<h2>Training curves</h2>
{embed_png(gan_png, 'GAN training')}
{embed_png(syncer_png, 'syncer training') if syncer_png else ''}
{render_section(details['clip_ids'], videos, render_metrics, out)}
</body></html>
"""
    write_text_atomic(out, page)
    log.info("report: %s (%d KB)", out, len(page) // 1024)
    return page
