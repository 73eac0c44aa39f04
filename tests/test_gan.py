"""GAN training, resuming, ablations, generation and evaluation on a tiny real dataset.

Three real 5 s clips go through the real crop, features and dataset stages (one clip per split),
a motion space is fitted, and two tiny loss syncers are trained; then tiny generators are trained
on it for a few dozen iterations each. One thread throughout: the models are tiny, and one thread
keeps OpenMP from spinning when other jobs share the cores.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import requires_clips, requires_ffmpeg, requires_model, run_ffmpeg

from mssync.core.config import load_section
from mssync.features.schema import list_column_to_numpy, read_metadata, read_table
from mssync.gan.evaluate import evaluate_generator
from mssync.gan.generate import MotionGenerator
from mssync.gan.train import TRAIN_COLUMNS, VAL_COLUMNS, GanSettings, train_gan
from mssync.media.ffmpeg import read_wav
from mssync.syncers.train import SyncersSection, train_syncer

pytestmark = [pytest.mark.integration, requires_clips, requires_model, requires_ffmpeg,
              pytest.mark.usefixtures("torch_one_thread")]

KERNEL = 7
SYNCER_PRESET = {  # config/tiny/params.yaml's `tiny` syncer preset, shorter
    "motion_embed": 16, "motion_widths": [16, 16, 16, 16], "audio_widths": [8, 16, 16, 16, 16],
    "blocks": [1, 1, 1, 1], "embed_dim": 32, "dropout": 0.1, "lr": 1.0e-3, "weight_decay": 0.01,
    "temperature": 0.1, "margin": {"start": 0.01, "growth": 1.5, "every": 5, "max": 0.2},
    "group_size": 4, "groups_per_batch": 2, "steps": 10, "eval_every": 5, "noise": 0.1,
}
MODEL = {"frame_dim": 16, "audio_dim": 16, "hidden": 8, "branch_dim": 16, "head_depth": 1, "transformer_layers": 1,
         "transformer_heads": 2, "context": 40, "lookahead": 2, "disc_dim": 16, "disc_hidden": 16,
         "windows": [5, 10, 20, 40]}
SYNCERS = SyncersSection(preset_name="tiny", preset=SYNCER_PRESET, seeds={"loss": 0, "eval": 2}, device="cpu",
                         max_speaker_share=0.2)
DEFAULT_WEIGHTS = {"adv": 1.0, "sync": 1.0, "sup": 0.01, "rec": 0.001}


def gan_section(iterations: int, eval_every: int, sync_levels: list[int], weights: dict | None = None,
                seed: int = 0, patience: int = 0) -> dict:
    """A `gan:` section of params.yaml with a tiny preset (validated like the CLI does)."""
    gan = {"preset": "tiny", "seed": seed, "device": "cpu", "max_speaker_share": 0.5, "sync_levels": sync_levels, "sync_weighting": "uniform",
           "loss_weights": dict(weights or DEFAULT_WEIGHTS), "observed_frames": 3, "generated_frames": 40, "rollout_pull": 0.02,
           "presets": {"tiny": {"model": dict(MODEL), "batch": 4, "iterations": iterations, "lr_g": 1.0e-3,
                                "lr_d": 1.0e-4, "eval_every": eval_every, "val_frames": 80, "patience": patience}}}
    load_section(GanSettings, json.dumps(gan), None)  # validated like the CLI does
    return gan


@pytest.fixture(scope="module")
def data(tiny_dataset) -> dict:
    """The shared tiny dataset (conftest) plus two tiny loss syncers trained on it."""
    split, space = tiny_dataset["cache"], tiny_dataset["space"]
    syncers = {}
    for level in (0, 1):
        syncers[level] = tiny_dataset["root"] / "syncers" / f"level{level}.pt"
        train_syncer(train=split["train"], val=split["val"], space_path=space, out=syncers[level],
                     metrics_tsv=tiny_dataset["root"] / "syncers" / f"level{level}.tsv", level=level, syncer_set="loss",
                     syncers=SYNCERS, kernel=KERNEL)
    return {**tiny_dataset, "syncers": syncers}


def train(data: dict, out_dir: Path, gan: dict, syncers: dict | None = None) -> dict:
    """train_gan exactly as `mssync train-gan` calls it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    syncers = data["syncers"] if syncers is None else syncers
    result = train_gan(train=data["cache"]["train"], val=data["cache"]["val"], space_path=data["space"],
                       syncer_paths=[syncers[level] for level in gan["sync_levels"]], out=out_dir / "generator.pt",
                       train_tsv=out_dir / "train.tsv", val_tsv=out_dir / "val.tsv",
                       settings=load_section(GanSettings, json.dumps(gan), None))
    return result


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def column(rows: list[dict], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows])


@pytest.fixture(scope="module")
def overfit(data, tmp_path_factory) -> Path:
    """60 iterations without the adversarial term (supervised + sync + reconstruction) on one train clip."""
    out = tmp_path_factory.mktemp("gan-overfit")
    gan = gan_section(60, 20, [0], {"adv": 0.0, "sync": 1.0, "sup": 0.01, "rec": 0.001})
    assert train(data, out, gan)["iterations"] == 60
    return out


# ----------------------------------------------------------------------------- training


def test_supervised_loss_falls_on_a_tiny_overfit_run(overfit):
    rows = read_rows(overfit / "train.tsv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 61))
    sup = column(rows, "g_sup")
    first, last = sup[:10].mean(), sup[-10:].mean()
    print(f"g_sup: first 10 iterations {first:.3f}, last 10 {last:.3f}")
    assert last < 0.7 * first
    assert (column(rows, "g_adv") != 0).any()  # still computed and logged, only weighted 0
    val = read_rows(overfit / "val.tsv")
    assert [int(r["iteration"]) for r in val] == [20, 40, 60]


def test_default_weights_log_every_term_and_single_scale_sync_trains(data, tmp_path):
    train(data, tmp_path, gan_section(20, 10, [0]))
    rows = read_rows(tmp_path / "train.tsv")
    assert list(rows[0]) == list(TRAIN_COLUMNS)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 21))
    for row in rows:
        for name in TRAIN_COLUMNS:
            assert row[name] not in ("", None) and np.isfinite(float(row[name])), (row["iteration"], name)
    g_sync = column(rows, "g_sync")  # minus a mean cosine: in [-1, 1], and live (its sign depends on 10-step syncers)
    assert (np.abs(g_sync) <= 1).all() and (g_sync != 0).all()
    assert (column(rows, "g_adv") != 0).any() and (column(rows, "d_loss") > 0).all()
    val = read_rows(tmp_path / "val.tsv")
    assert list(val[0]) == list(VAL_COLUMNS) and [int(r["iteration"]) for r in val] == [10, 20]
    for row in val:
        assert all(np.isfinite(float(row[name])) for name in VAL_COLUMNS)
    blob = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert blob["sync_levels"] == [0] and blob["iteration"] == 20


def test_no_sync_loss_is_a_parameter_not_a_code_change(data, tmp_path):
    """sync_levels [] trains the same code without syncers: the sync term is exactly 0 and no syncer is needed."""
    train(data, tmp_path, gan_section(10, 10, []), syncers={})
    rows = read_rows(tmp_path / "train.tsv")
    assert len(rows) == 10 and (column(rows, "g_sync") == 0).all()
    assert np.isfinite(column(rows, "g_total")).all()
    val = read_rows(tmp_path / "val.tsv")
    assert val[0]["val_sync_cos"].lower() == "nan" and np.isfinite(float(val[0]["val_l2"]))


class Killed(Exception):
    """Stands in for SIGKILL: raised out of the training loop part-way through."""


def train_until_killed(data: dict, out_dir: Path, gan: dict, monkeypatch, at_validation: int) -> None:
    """Run train_gan and kill it when it starts validation number `at_validation`, i.e. after the
    previous validation's checkpoint was written (the loop validates, then checkpoints)."""
    import mssync.gan.train

    real, calls = mssync.gan.train.validate, []

    def validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_validation:
            raise Killed
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(mssync.gan.train, "validate", validate)
        with pytest.raises(Killed):
            train(data, out_dir, gan)


def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_does(data, tmp_path, caplog, monkeypatch):
    """Killed at iteration 15 (last checkpoint: 10), rerun: the same weights as 20 iterations in one go.
    Data order and every random draw after the resume must be the ones the uninterrupted run makes."""
    gan = gan_section(20, 5, [0])
    train_until_killed(data, tmp_path / "a", gan, monkeypatch, at_validation=3)
    assert torch.load(tmp_path / "a" / "generator.resume.pt", weights_only=True)["iteration"] == 10
    with caplog.at_level(logging.INFO, logger="mssync"):
        train(data, tmp_path / "a", copy.deepcopy(gan))
    assert "resuming at iteration 10" in caplog.text
    assert [int(r["iteration"]) for r in read_rows(tmp_path / "a" / "train.tsv")] == list(range(1, 21))
    assert [int(r["iteration"]) for r in read_rows(tmp_path / "a" / "val.tsv")] == [5, 10, 15, 20]

    train(data, tmp_path / "b", gan)
    resumed = torch.load(tmp_path / "a" / "generator.pt", weights_only=True)
    straight = torch.load(tmp_path / "b" / "generator.pt", weights_only=True)
    assert resumed["iteration"] == straight["iteration"] == 20
    for name, value in straight["generator"].items():
        assert torch.allclose(resumed["generator"][name], value, atol=1e-5), name
    a, b = read_rows(tmp_path / "a" / "train.tsv"), read_rows(tmp_path / "b" / "train.tsv")
    for name in ("d_loss", "g_total", "g_sup", "g_sync"):  # the same batches in the same order, resume or not
        assert np.allclose(column(a, name), column(b, name), atol=1e-4), name


def test_more_iterations_continue_the_same_run(data, tmp_path, caplog):
    """As for the syncers: raising `iterations` in params.yaml continues the run instead of restarting it."""
    train(data, tmp_path, gan_section(5, 5, [0]))
    with caplog.at_level(logging.INFO, logger="mssync"):
        train(data, tmp_path, gan_section(10, 5, [0]))
    assert "resuming at iteration 5" in caplog.text
    assert [int(r["iteration"]) for r in read_rows(tmp_path / "train.tsv")] == list(range(1, 11))


def test_changed_settings_start_over(data, tmp_path, caplog):
    train(data, tmp_path, gan_section(5, 5, [0]))
    with caplog.at_level(logging.INFO, logger="mssync"):
        train(data, tmp_path, gan_section(5, 5, [0], {"adv": 0.5, "sync": 1.0, "sup": 0.01, "rec": 0.001}))
    assert "resuming" not in caplog.text and "starting over" in caplog.text
    assert [int(r["iteration"]) for r in read_rows(tmp_path / "train.tsv")] == list(range(1, 6))


def test_early_stopping_keeps_the_best_validation_and_stops_after_patience(data, tmp_path, caplog):
    """patience 1: training stops at the first validation that does not beat the best, and the generator
    kept is the best validation's (its iteration and weights), not the last one's."""
    with caplog.at_level(logging.INFO, logger="mssync"):
        result = train(data, tmp_path, gan_section(200, 5, [0], patience=1))
    rows = read_rows(tmp_path / "val.tsv")
    scores = column(rows, "val_score")
    stopped = int(rows[-1]["iteration"])
    assert result["iterations"] == stopped < 200 and "early stop" in caplog.text
    assert scores[-1] <= scores[:-1].max()  # the last validation did not improve ...
    assert (np.maximum.accumulate(scores[:-1]) == scores[:-1]).all()  # ... every one before it did
    kept = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert kept["iteration"] == stopped - 5 and kept["trained_iterations"] == stopped
    assert kept["early_stopping"]["best_score"] == pytest.approx(scores[-2], abs=1e-4)
    assert {"val_mouth_amplitude_ratio", "val_score"} <= set(rows[0])


def test_selection_score_rewards_sync_and_penalises_a_mouth_or_head_that_moves_too_little():
    from mssync.gan.train import EarlyStopping, geometric_mean, selection_score

    assert selection_score(0.3, [1.0, 1.0], [1.0]) == pytest.approx(0.3)
    assert selection_score(0.3, [0.2, 0.2], [1.0]) == pytest.approx(0.3 - np.log(5))  # a mouth almost shut
    assert selection_score(0.3, [2.0, 0.5], [1.0]) == pytest.approx(0.3 - np.log(2))  # too much and too little do not cancel
    assert selection_score(float("nan"), [1.0], [1.0, float("nan")]) == pytest.approx(0.0)
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0) and geometric_mean([0.0]) == pytest.approx(1e-3)
    stopping = EarlyStopping(patience=2)
    assert [stopping.update(s, i) for i, s in enumerate([0.1, 0.3, 0.2, 0.25], 1)] == [True, True, False, False]
    assert stopping.stop and stopping.best_iteration == 2
    assert not EarlyStopping(patience=0, since_best=99).stop  # 0: never stops early


# ----------------------------------------------------------------------------- generation


def first_landmarks(features: Path) -> np.ndarray:
    table, _ = read_table(features, columns=["landmarks", "face_found"])
    assert table["face_found"].to_numpy()[0]
    return list_column_to_numpy(table["landmarks"].slice(0, 1))[0]


def test_generate_api(data, overfit):
    gen = MotionGenerator.load(overfit / "generator.pt", data["space"], device="cpu")
    first = first_landmarks(data["features"])
    samples, rate = read_wav(data["wav"])
    mel = gen.mel_from_waveform(samples, rate)
    motion = gen.generate(first, mel, 50)
    assert motion.shape == (50, gen.space.dim) and np.isfinite(motion).all()
    start = gen.space.encode(first[None], np.ones(1, bool), smooth=False)[0][0]
    assert np.allclose(motion[0], start, atol=1e-4)  # frame 0 is the given face
    assert np.abs(np.diff(motion, axis=0)).max() > 0  # and it moves
    full = gen.generate(first, mel)
    assert len(full) == len(mel) // 4
    assert np.allclose(full[:50], motion, atol=1e-4)  # causal: more audio never rewrites earlier frames
    assert np.allclose(gen.generate(start, mel, 50), motion, atol=1e-4)  # (D,) motion works as frame 0 too
    landmarks = gen.space.decode(motion)
    assert landmarks.shape == (50, 478, 3) and np.isfinite(landmarks).all()


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["mssync", *map(str, args)], env=env, capture_output=True, text=True)


def test_generate_cli_follows_the_audio_length(data, overfit, tmp_path):
    wav = tmp_path / "long.wav"
    run_ffmpeg("-stream_loop", "6", "-i", data["wav"], "-t", "30", "-vn", wav)
    out = tmp_path / "generated.parquet"
    proc = cli("generate", "--model", overfit / "generator.pt", "--space", data["space"], "--audio", wav,
               "--reference", data["features"], "--device", "cpu", "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, meta = read_table(out)
    assert abs(table.num_rows - 750) <= 1  # 30 s at 25 fps
    motion, landmarks = list_column_to_numpy(table["motion"]), list_column_to_numpy(table["landmarks"])
    assert motion.shape == (table.num_rows, 15) and landmarks.shape == (table.num_rows, 478, 3)
    assert np.isfinite(motion).all() and np.isfinite(landmarks).all()
    assert table["frame"].to_pylist() == list(range(table.num_rows)) and meta["fps"] == 25
    assert read_metadata(out)["motion_dim"] == 15


def test_generate_cli_rejects_landmarks_of_the_wrong_shape(data, overfit, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((468, 3), np.float32))
    proc = cli("generate", "--model", overfit / "generator.pt", "--space", data["space"], "--audio", data["wav"],
               "--landmarks", bad, "--device", "cpu", "-o", tmp_path / "x.parquet")
    assert proc.returncode != 0
    assert "expected (478, 3) landmarks, got (468, 3)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.parquet").exists()


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_generator_reports_every_variant_per_level(data, overfit, tmp_path):
    out = tmp_path / "metrics.json"
    report = evaluate_generator(test=data["cache"]["test"], space_path=data["space"], generator_path=overfit / "generator.pt",
                                syncer_paths=[data["syncers"][0], data["syncers"][1]], out=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["clips"] == 1 and sorted(report["levels"]) == ["level0", "level1"]
    for level in report["levels"].values():
        for variant in ("generated", "static", "real"):
            assert np.isfinite(level[variant]["lse_c"]) and level[variant]["lse_c"] >= 0
        # A static head's motion windows all embed the same, so its distance curve is flat up to which
        # audio windows each shift keeps at the clip's ends: LSE-C near 0 (exactly 0 only on paper).
        assert level["static"]["lse_c"] < 0.01
        assert isinstance(level["generated_beats_static"], bool)
        assert "real_other_audio" not in level  # one test clip: no other clip's audio to pair with
    pose = report["pose_velocity_std"]
    assert pose["real"] > 0 and np.isfinite(pose["ratio"]) and pose["ratio"] == pytest.approx(pose["generated"] / pose["real"])
