"""Cross-validation pieces with known answers: speaker folds (every speaker tested once, disjoint
splits), the validated sync weighting, and the pooling of folds into paired intervals.

The whole `snakemake crossval` on the tiny project runs in test_workflow.py (it reuses that
module's `dvc repro` project, so the per-clip phase is not paid twice)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mssync.core.config import CrossvalSettings
from mssync.core.errors import MssyncError
from mssync.evaluation.crossval import comparisons, read_scores, run_crossval, summarise
from mssync.features.dataset import Fold, assign_fold_splits, speaker_folds
from mssync.gan.train import validated_sync_weights

SPEAKERS = [f"speaker-{i:02d}" for i in range(37)]


def crossval(**replace) -> CrossvalSettings:
    values = {"folds": 5, "seeds": [0, 1], "seed": 0, "val_fraction": 0.12, "variants": {},
              "bootstrap_samples": 500, "interval": 0.95}
    return CrossvalSettings(**{**values, **replace})


def test_every_speaker_is_in_exactly_one_fold_and_folds_are_balanced():
    folds = speaker_folds(SPEAKERS, crossval())
    assert sorted(folds) == sorted(SPEAKERS)
    sizes = np.bincount(list(folds.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 37


def test_folds_do_not_depend_on_speaker_order_but_do_on_the_seed():
    assert speaker_folds(SPEAKERS, crossval()) == speaker_folds(SPEAKERS[::-1], crossval())
    assert speaker_folds(SPEAKERS, crossval()) != speaker_folds(SPEAKERS, crossval(seed=1))


def test_each_fold_tests_its_own_speakers_and_splits_are_disjoint():
    tested = []
    for k in range(5):
        splits = assign_fold_splits(SPEAKERS, Fold(k, crossval()))
        assert set(splits) == set(SPEAKERS)  # every speaker in exactly one split of the fold
        test = [s for s, split in splits.items() if split == "test"]
        val = [s for s, split in splits.items() if split == "val"]
        assert len(val) == round((37 - len(test)) * 0.12) and "train" in splits.values()
        tested += test
    assert sorted(tested) == sorted(SPEAKERS)  # tested exactly once over the folds


def test_inner_validation_speakers_differ_between_folds():
    vals = [frozenset(s for s, split in assign_fold_splits(SPEAKERS, Fold(k, crossval())).items() if split == "val")
            for k in range(5)]
    assert len(set(vals)) > 1


def test_too_few_speakers_for_the_folds_is_a_clear_error():
    with pytest.raises(MssyncError, match="cannot fill crossval.folds 5"):
        speaker_folds(SPEAKERS[:4], crossval())
    with pytest.raises(MssyncError, match="leave none to train"):
        assign_fold_splits(SPEAKERS[:2], Fold(0, crossval(folds=2)))  # 1 speaker left: val, none to train
    with pytest.raises(MssyncError, match="not one of crossval.folds"):
        assign_fold_splits(SPEAKERS, Fold(5, crossval()))


def _syncer_checkpoint(path: Path, level: int, top1: float, chance: float | None) -> Path:
    best = {"val_top1": top1, "val_loss": 1.0, "step": 10}
    if chance is not None:
        best["val_chance"] = chance
    torch.save({"level": level, "best": best}, path)
    return path


def test_validated_weights_are_the_lift_over_chance_relative_to_the_best_level(tmp_path):
    paths = [_syncer_checkpoint(tmp_path / "l0.pt", 0, 0.6, 0.2),  # lift 0.5
             _syncer_checkpoint(tmp_path / "l1.pt", 1, 0.4, 0.2),  # lift 0.25
             _syncer_checkpoint(tmp_path / "l2.pt", 2, 0.1, 0.2)]  # below chance: 0
    assert validated_sync_weights(paths) == pytest.approx({0: 1.0, 1: 0.5, 2: 0.0})


def test_validated_weights_are_zero_when_no_level_beats_chance(tmp_path):
    paths = [_syncer_checkpoint(tmp_path / "l0.pt", 0, 0.2, 0.2), _syncer_checkpoint(tmp_path / "l1.pt", 1, 0.1, 0.2)]
    assert validated_sync_weights(paths) == {0: 0.0, 1: 0.0}


def test_validated_weights_need_the_chance_level_in_the_checkpoint(tmp_path):
    with pytest.raises(MssyncError, match="retrain the syncer"):
        validated_sync_weights([_syncer_checkpoint(tmp_path / "old.pt", 0, 0.5, None)])


# --------------------------------------------------------------------- pooling folds (synthetic)


def _fold_files(root: Path, fold: int, clips: dict[str, str], seeds: list[int], lse: dict[str, float],
                rng: np.random.Generator) -> tuple[list[Path], Path, Path]:
    """A fold's splits.csv (its clips as test), one details.json per seed and eval syncer metrics."""
    base = root / f"folds/fold{fold}"
    (base / "data/dataset").mkdir(parents=True)
    with (base / "data/dataset/splits.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip_id", "speaker", "split"])
        writer.writerows([clip, speaker, "test"] for clip, speaker in clips.items())
    details = []
    for seed in seeds:
        per_level = {}
        for level in ("level0", "level1"):
            per_level[level] = {variant: {clip: {"lse_c": value + rng.normal(0, 0.01), "lse_d": 1.0, "offset_frames": 0}
                                          for clip in clips} for variant, value in lse.items()}
        path = base / f"results/seed{seed}/evaluation/details.json"
        path.parent.mkdir(parents=True)
        # what a viewer sees: MS-Sync's mouth opens at 0.5 of the real amplitude (goal missed), its head turns at
        # 1.0 of the real speed (goal met); only the fold's first clip has a drift roll-out (the rest: none, NaN)
        viewer = {"ms_sync": {clip: {"mouth_amplitude_ratio": 0.5 + rng.normal(0, 0.02),
                                     "rotation_speed_ratio": 1.0 + rng.normal(0, 0.02),
                                     **({"face_scale_drift_p95": 0.02} if i == 0 else {})}
                              for i, clip in enumerate(clips)}}
        path.write_text(json.dumps({"labels": {v: v for v in lse}, "variants": list(lse), "sync_per_clip": per_level,
                                    "viewer_per_clip": viewer}))
        details.append(path)
    syncers = base / "results/syncers/eval_metrics.json"
    syncers.parent.mkdir(parents=True)
    syncers.write_text(json.dumps({"levels": {
        "level0": {"retrieval": {"per_clip": {c: {"top1": 0.5, "chance": 0.1} for c in clips}}},  # beats chance
        "level1": {"retrieval": {"per_clip": {c: {"top1": 0.1 + rng.normal(0, 0.05), "chance": 0.1} for c in clips}}},
    }}))
    return details, base / "data/dataset/splits.csv", syncers


def test_pooled_folds_recover_a_known_difference_and_measurability(tmp_path):
    rng = np.random.default_rng(0)
    lse = {"ground_truth": 0.2, "ms_sync": 0.15, "single_scale": 0.10, "static": 0.02, "other_audio": 0.05}
    details, splits, syncers = [], [], []
    for fold in range(3):
        clips = {f"f{fold}-s{s}-c{c}": f"f{fold}-s{s}" for s in range(4) for c in range(1 + 3 * (s == 0))}
        d, sp, sy = _fold_files(tmp_path, fold, clips, [0, 1], lse, rng)
        details += d
        splits.append(sp)
        syncers.append(sy)
    summary = run_crossval(details=details, splits=splits, syncer_metrics=syncers, settings=crossval(),
                           out_dir=tmp_path / "results/crossval")
    assert summary["speakers"] == 12 and len(summary["folds"]) == 3 and summary["seeds"] == [0, 1]
    assert summary["measurability"]["level0"]["measurable"] is True
    assert summary["measurability"]["level1"]["measurable"] is False
    diff = {(d["sync_level"], d["b"]): d for d in summary["differences"]}
    single = diff[("level0", "single_scale")]
    assert single["low"] <= 0.05 <= single["high"] and single["verdict"] == "higher"
    assert diff[("level0", "static")]["estimate"] == pytest.approx(0.13, abs=0.01)
    viewer = {row["metric"]: row for row in summary["viewer"] if row["variant"] == "ms_sync"}
    assert viewer["mouth_amplitude_ratio"]["estimate"] == pytest.approx(0.5, abs=0.02)
    assert viewer["mouth_amplitude_ratio"]["goal"] == "missed" and viewer["rotation_speed_ratio"]["goal"] == "met"
    assert viewer["face_scale_drift_p95"]["n_speakers"] == 3  # one roll-out per fold, NaN clips dropped
    for name in ("summary.json", "intervals.tsv", "differences.tsv", "viewer.tsv", "forest.png", "report.html"):
        assert (tmp_path / "results/crossval" / name).stat().st_size > 0
    page = (tmp_path / "results/crossval/report.html").read_text()
    assert "level1: the evaluation syncers do not beat chance" in page
    assert "mouth_amplitude_ratio: ms_sync 0.50" in page and "goal missed" in page


def test_a_clip_tested_in_two_folds_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    lse = {"ms_sync": 0.1, "static": 0.0}
    _, first, _ = _fold_files(tmp_path, 0, {"a": "sa", "b": "sb"}, [0], lse, rng)
    _, second, _ = _fold_files(tmp_path, 1, {"b": "sb", "c": "sc"}, [0], lse, rng)
    with pytest.raises(MssyncError, match="b is tested in folds 0 and 1"):
        read_scores([], [first, second], [])


def test_zero_true_difference_is_not_significant(tmp_path):
    rng = np.random.default_rng(1)
    lse = {"ms_sync": 0.1, "single_scale": 0.1, "static": 0.0}
    details, splits, syncers = [], [], []
    for fold in range(2):
        clips = {f"f{fold}-s{s}": f"f{fold}-s{s}" for s in range(10)}
        d, sp, sy = _fold_files(tmp_path, fold, clips, [0], lse, rng)
        details, splits, syncers = details + d, splits + [sp], syncers + [sy]
    summary = summarise(read_scores(details, splits, syncers), crossval())
    verdicts = {(d["sync_level"], d["b"]): d["verdict"] for d in summary["differences"]}
    assert verdicts[("level0", "single_scale")] == "not significant"
    assert verdicts[("level0", "static")] == "higher"


def test_comparisons_put_ms_sync_against_every_generator_then_the_baselines():
    variants = ["ms_sync", "single_scale", "no_sync", "validated", "ground_truth", "static", "other_audio"]
    assert comparisons(variants) == [("ms_sync", "single_scale"), ("ms_sync", "no_sync"), ("ms_sync", "validated"),
                                     ("ms_sync", "static"), ("ms_sync", "other_audio")]
