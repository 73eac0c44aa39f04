"""PNG plots for the evaluation and the report (matplotlib, Agg: no display, no CDN, readable offline).

`dvc plots show` draws its charts with JavaScript loaded from a CDN, which this project's machines
cannot reach; these PNGs are what the report embeds instead.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mssync.core.atomic import atomic_path

if TYPE_CHECKING:
    from mssync.evaluation.stats import Interval

DPI = 110
WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 3.2
SMOOTH_ITERATIONS = 25  # moving average over GAN iterations (per-iteration losses are noisy)
FOREST_ROW_IN = 0.32  # height per forest-plot row: labels stay legible without crowding
FOREST_MARGIN_IN = 1.2  # title (two lines) and x axis above and below the rows
FOREST_GROUP_SEPARATOR = ": "  # "level0: MS-Sync - single-scale" -> group "level0"
FOREST_STRONG, FOREST_WEAK = "tab:blue", "0.6"  # interval excludes the reference / does not


def save(fig: plt.Figure, out: Path) -> Path:
    """Write a figure atomically as PNG and close it."""
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return out


def sync_bars(sync: dict, labels: dict[str, str], out: Path) -> Path:
    """Grouped bars: LSE-C (top) and LSE-D (bottom) per level, one bar per variant."""
    levels = list(sync)
    names = list(dict.fromkeys(n for by_variant in sync.values() for n in by_variant))
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 2 * PANEL_HEIGHT_IN), sharex=True)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(levels))
    for ax, key, title in ((axes[0], "lse_c", "LSE-C (sync confidence, higher is better)"),
                           (axes[1], "lse_d", "LSE-D (min distance, lower is better)")):
        for i, name in enumerate(names):
            values = [sync[lv].get(name, {}).get(key, np.nan) for lv in levels]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=labels.get(name, name))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x, levels)
    axes[0].legend(fontsize="small", ncol=2)
    return save(fig, out)


def speed_histograms(histograms: dict, labels: dict[str, str], out: Path) -> Path:
    """Densities of head rotation and translation speed per variant (the static head is a spike at 0)."""
    units = {"rotation_velocity": "rotation speed (deg/s)", "translation_velocity": "translation speed (px/s)"}
    fig, axes = plt.subplots(1, len(histograms), figsize=(WIDTH_IN, PANEL_HEIGHT_IN))
    for ax, (part, hist) in zip(np.atleast_1d(axes), histograms.items()):
        edges = np.array(hist["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        for name, density in hist["density"].items():
            if name == "static":
                continue
            ax.plot(centres, density, label=labels.get(name, name))
        ax.set_xlabel(f"{units.get(part, part)}; last bin: all above")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize="small")
    return save(fig, out)


def correlation_curves(curves: dict[str, dict[str, float]], labels: dict[str, str], out: Path) -> Path:
    """Mouth opening vs audio energy: Pearson r over lags (ms; positive = mouth after audio)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, PANEL_HEIGHT_IN + 0.5))
    for name, curve in curves.items():
        lags = np.array([float(k) for k in curve])
        ax.plot(lags, list(curve.values()), marker="o", markersize=3, label=labels.get(name, name))
    ax.axvline(0, color="grey", lw=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("lag (ms): mouth opening at t + lag vs audio energy at t")
    ax.set_ylabel("Pearson r (mean over clips)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save(fig, out)


def read_tsv(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a TSV; non-numeric cells become NaN ('nan' in val curves of no-sync runs)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        return {}

    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return float("nan")

    return {key: np.array([number(r[key]) for r in rows]) for key in rows[0]}


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width:
        return values
    return np.convolve(values, np.ones(width) / width, mode="valid")


def gan_training(runs: dict[str, tuple[Path, Path]], out: Path) -> Path:
    """Per run (main, ablations): smoothed generator loss terms and the validation roll-out metrics."""
    panels = (("train", "g_sync", "sync loss (-cosine)"), ("train", "g_adv", "adversarial (G)"),
              ("train", "d_loss", "discriminator"), ("val", "val_sync_cos", "val: sync cosine"),
              ("val", "val_l2", "val: L2 to truth"), ("val", "val_pose_velocity_ratio", "val: pose velocity ratio"))
    fig, axes = plt.subplots(2, 3, figsize=(WIDTH_IN + 2, 2 * PANEL_HEIGHT_IN))
    for name, (train, val) in runs.items():
        curves = {"train": read_tsv(train), "val": read_tsv(val)}
        for ax, (kind, column, title) in zip(axes.flat, panels):
            table = curves[kind]
            if column not in table:
                continue
            x, y = table["iteration"], table[column]
            if kind == "train":
                y = smooth(y, SMOOTH_ITERATIONS)
                x = x[len(x) - len(y):]
            ax.plot(x, y, label=name)
            ax.set_title(title, fontsize="medium")
            ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    return save(fig, out)


def syncer_training(curves: list[Path], out: Path) -> Path:
    """Validation top-1 retrieval (and chance) per syncer set and level over training steps."""
    sets = sorted({p.stem.split("_level")[0] for p in curves})
    fig, axes = plt.subplots(1, len(sets), figsize=(WIDTH_IN, PANEL_HEIGHT_IN), squeeze=False)
    for ax, syncer_set in zip(axes[0], sets):
        for path in sorted(p for p in curves if p.stem.startswith(f"{syncer_set}_level")):
            table = read_tsv(path)
            line, = ax.plot(table["step"], table["val_top1"], label=path.stem.split("_")[-1])
            ax.plot(table["step"], table["val_chance"], ls=":", color=line.get_color())
        ax.set_title(f"syncers '{syncer_set}': val top-1 (dotted: chance)", fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save(fig, out)


def forest_plot(
    rows: list[tuple[str, Interval]], out: Path, *, title: str, reference: float = 0.0, xlabel: str
) -> Path:
    """One line per row, top to bottom: estimate dot and interval whisker, a vertical reference line.

    Rows whose interval excludes the reference (a difference the data support) are drawn in a strong
    colour, the rest in grey, and each row's numbers are written at its right. Rows whose labels share
    a prefix before FOREST_GROUP_SEPARATOR (e.g. the sync level) are kept apart by a thin line.
    """
    if not rows:
        raise ValueError(f"forest_plot needs at least one row ({out})")
    labels = [label for label, _ in rows]
    intervals = [interval for _, interval in rows]
    y = np.arange(len(rows))[::-1]  # first row at the top
    fig, ax = plt.subplots(figsize=(WIDTH_IN, max(PANEL_HEIGHT_IN, FOREST_ROW_IN * len(rows) + FOREST_MARGIN_IN)))
    for yi, interval in zip(y, intervals):
        colour = FOREST_STRONG if interval.excludes(reference) else FOREST_WEAK
        ax.plot([interval.low, interval.high], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
        ax.plot(interval.estimate, yi, "o", color=colour, markersize=5)
        ax.annotate(
            f"{interval.estimate:.3g} [{interval.low:.3g}, {interval.high:.3g}]",
            (1.01, yi),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize="small",
            color=colour,
        )
    groups = [label.split(FOREST_GROUP_SEPARATOR, 1)[0] if FOREST_GROUP_SEPARATOR in label else "" for label in labels]
    for i in range(1, len(rows)):
        if groups[i] != groups[i - 1]:
            ax.axhline(y[i] + 0.5, color="0.85", lw=0.8)
    ax.axvline(reference, color="black", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel)
    level = intervals[0].level
    ax.set_title(
        f"{title}\n{level:.0%} speaker-bootstrap intervals; coloured: excludes {reference:g}", fontsize="medium"
    )
    ax.grid(axis="x", alpha=0.3)
    return save(fig, out)
