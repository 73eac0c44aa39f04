"""The HTML report: self-contained (PNGs inline, no remote URL), honest (losses are listed), videos linked relatively."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mssync.evaluation import plots
from mssync.evaluation.report import build_report, findings

LABELS = {"ms_sync": "MS-Sync (generated)", "single_scale": "ablation single_scale", "ground_truth": "ground truth",
          "static": "static head", "other_audio": "ground truth + other clip's audio"}


def metrics() -> dict:
    """MS-Sync beats everything at level 0, loses to other_audio at level 1 and to the ablation on Frechet."""
    def sync(ms, single, other):
        return {"ms_sync": {"lse_c": ms, "lse_d": 1.0, "offset_abs_frames": 1.0},
                "single_scale": {"lse_c": single, "lse_d": 1.1, "offset_abs_frames": 2.0},
                "ground_truth": {"lse_c": 0.2, "lse_d": 0.9, "offset_abs_frames": 0.0},
                "static": {"lse_c": 0.01, "lse_d": 1.4, "offset_abs_frames": 10.0},
                "other_audio": {"lse_c": other, "lse_d": 1.2, "offset_abs_frames": 8.0}}

    dyn = {"rotation_velocity_mean": 5.0, "frechet_to_real": 3.0}
    return {"clips": 2, "frames": 200,
            "sync": {"level0": sync(0.10, 0.05, 0.02), "level1": sync(0.10, 0.05, 0.12)},
            "dynamics": {"ms_sync": dyn, "single_scale": {**dyn, "frechet_to_real": 2.0},
                         "ground_truth": {"rotation_velocity_mean": 10.0, "frechet_to_real": 0.0},
                         "static": {"rotation_velocity_mean": 0.0, "frechet_to_real": 50.0}},
            "lips": {"ms_sync": {"r_at_lag0": 0.3, "peak_r": 0.3, "peak_lag_ms": 0.0, "mouth_px": 5.0, "face_px": 6.0},
                     "static": {"r_at_lag0": 0.0, "peak_r": 0.0, "peak_lag_ms": float("nan"), "mouth_px": 4.0,
                                "face_px": 5.0}}}


SYNCER_METRICS = {"levels": {"level0": {"retrieval": {"above_chance": True, "top1": 0.2, "chance": 0.1}},
                             "level3": {"retrieval": {"above_chance": False, "top1": 0.26, "chance": 0.26}}}}


def test_findings_list_every_loss_and_every_syncer_at_chance():
    text = [(good, line) for good, line in findings(metrics(), LABELS, SYNCER_METRICS)]
    bad = [line for good, line in text if not good]
    assert any(line.startswith("level1: MS-Sync's LSE-C 0.1 does not beat ground truth + other clip's audio (0.12)")
               for line in bad)
    assert not any(line.startswith("level0:") for line in bad)
    assert any("level3: the evaluation syncer itself is not above chance" in line for line in bad)
    assert any("Fréchet" in line and "ablation single_scale (2)" in line for line in bad)
    assert any("mouth distance to truth" in line and "static head (4)" in line for line in bad)
    assert any(good and "head rotation speed: MS-Sync moves at 0.5x" in line for good, line in text)


def write_tsv(path: Path, header: list[str], rows: list[list[float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture()
def inputs(tmp_path) -> dict:
    results = tmp_path / "results"
    (results / "evaluation").mkdir(parents=True)
    m = results / "metrics.json"
    m.write_text(json.dumps(metrics()))
    details = results / "evaluation/details.json"
    details.write_text(json.dumps({"clip_ids": ["clipA", "clipB"], "labels": LABELS,
                                   "sync_levels": {"ms_sync": [0, 1], "single_scale": [0]}}))
    plots_dir = results / "plots"
    curves = {"sync_levels": {"level0": {"ms_sync": {"lse_c": 0.1, "lse_d": 1.0}}}}
    plots.sync_bars(curves["sync_levels"], LABELS, plots_dir / "sync_levels.png")
    train_cols = ["iteration", "d_loss", "g_adv", "g_sync"]
    runs = {}
    for name, sub in (("ms_sync", "gan"), ("single_scale", "gan/ablations/single_scale")):
        train = write_tsv(results / sub / "train.tsv", train_cols, [[i, 1.0, -0.1, -0.3] for i in range(1, 40)])
        val = write_tsv(results / sub / "val.tsv", ["iteration", "val_sync_cos", "val_l2", "val_pose_velocity_ratio"],
                        [[10, 0.3, 5.0, 0.5], [20, "nan", 4.0, 0.6]])
        runs[name] = (train, val)
    syncer = [write_tsv(results / f"syncers/curves/eval_level{lv}.tsv", ["epoch", "step", "val_top1", "val_chance"],
                        [[1, 50, 0.1, 0.09], [2, 100, 0.2, 0.09]]) for lv in (0, 1)]
    videos = results / "videos"
    videos.mkdir()
    (videos / "clipA.mp4").write_bytes(b"\x00")  # only clip A was rendered
    plots.sync_bars(curves["sync_levels"], LABELS, videos / "clipA.png")
    return {"metrics": m, "details": details, "plots": plots_dir, "runs": runs, "syncer": syncer, "videos": videos,
            "out": results / "report.html"}


def test_report_is_self_contained_and_links_videos_relatively(inputs):
    page = build_report(metrics_path=inputs["metrics"], details_path=inputs["details"], plots_dir=inputs["plots"], gan_runs=inputs["runs"], syncer_curves=inputs["syncer"],
                        syncer_metrics_path=None, videos=inputs["videos"], render_metrics=None, out=inputs["out"])
    assert inputs["out"].read_text() == page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert '<link' not in page and '<script' not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sum(src.startswith("data:image/png;base64,") for src in images) == 3  # sync bars, 2 training plots
    assert sum(src.startswith("data:image/jpeg;base64,") for src in images) == 1  # clip A's sheet, downscaled
    assert len(images) == 4  # (the missing evaluation plots are said, not shown)
    assert (inputs["plots"] / "training_gan.png").stat().st_size > 0
    assert '<a href="videos/clipA.mp4">' in page and '<a href="videos/clipA.png">' in page
    assert "clipB: no video" in page
    assert "does not beat" in page and "pose_velocity.png is missing" in page
    assert "MS-Sync (generated): [0, 1]" in page


def test_report_without_render_outputs_says_so(inputs):
    page = build_report(metrics_path=inputs["metrics"], details_path=inputs["details"], plots_dir=inputs["plots"], gan_runs=inputs["runs"], syncer_curves=[], syncer_metrics_path=None, videos=None, render_metrics=None,
                        out=inputs["out"])
    assert "No rendered videos" in page and "clipA: no video" in page
