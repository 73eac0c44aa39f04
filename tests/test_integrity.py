"""The general mechanisms behind recovery, on small real files: damaged-file detection for every
artifact kind, records that vouch for their media, the stale-lock check, curves that survive a
resume and resume checkpoints that are only used for an unfinished run of the same recipe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import CLIPS_DIR, run_ffmpeg
from PIL import Image

from mssync.core import runlock
from mssync.core.atomic import atomic_path, remove_leftovers
from mssync.core.checkpoints import Curve, load_resume, save
from mssync.core.integrity import DamagedFile, damage, read_or_move_aside, sweep
from mssync.core.records import write_record

# --------------------------------------------------------------------------- one whole file per kind


def _whole_files(root: Path) -> dict[str, Path]:
    files = {".parquet": root / "a.parquet"}
    pq.write_table(pa.table({"x": np.arange(5000.0)}), files[".parquet"])
    files[".json"] = root / "a.json"
    files[".json"].write_text(json.dumps({"status": "ok"}))
    files[".pt"] = root / "a.pt"
    save({"w": torch.ones(100)}, files[".pt"])
    files[".npz"] = root / "a.npz"
    np.savez(files[".npz"], w=np.ones(100))
    files[".png"] = root / "a.png"
    Image.new("RGB", (64, 64), "white").save(files[".png"])
    files[".mp4"] = root / "a.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-t", "1", "-pix_fmt", "yuv420p", files[".mp4"])
    files[".wav"] = root / "a.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1", files[".wav"])
    return files


@pytest.fixture(scope="module")
def whole_files(tmp_path_factory) -> dict[str, Path]:
    return _whole_files(tmp_path_factory.mktemp("whole"))


def test_whole_files_pass_every_check(whole_files):
    assert {suffix: damage(path) for suffix, path in whole_files.items()} == dict.fromkeys(whole_files)


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".pt", ".npz", ".png", ".mp4", ".wav"])
def test_a_truncated_file_of_every_kind_is_found(whole_files, tmp_path, suffix):
    data = whole_files[suffix].read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert damage(cut), f"half a {suffix} file passed its check"


def test_a_real_sample_clip_passes_the_mp4_check():
    clip = CLIPS_DIR / "vox2-00015.mp4"
    if not clip.is_file():
        pytest.skip("sample clips not found")
    assert damage(clip) is None


def test_sweep_moves_damaged_files_aside_and_keeps_them(whole_files, tmp_path):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    good.write_bytes(whole_files[".parquet"].read_bytes())
    bad.write_bytes(whole_files[".parquet"].read_bytes()[:100])
    moved = sweep([good, bad, tmp_path / "absent.parquet"])
    assert moved == [tmp_path / "bad.parquet.damaged"]
    assert good.is_file() and not bad.exists() and moved[0].stat().st_size == 100


def test_a_record_whose_media_are_missing_or_damaged_is_moved_aside(whole_files, tmp_path):
    """The record is the rule's declared output; moving it aside is what makes Snakemake rerun the stage."""
    for clip in ("whole", "gone", "cut"):
        write_record(tmp_path / f"{clip}.json", clip, "crop", "ok", output={"video": f"{clip}.mp4"})
    (tmp_path / "whole.mp4").write_bytes(whole_files[".mp4"].read_bytes())
    (tmp_path / "cut.mp4").write_bytes(whole_files[".mp4"].read_bytes()[:500])
    write_record(tmp_path / "rejected.json", "rejected", "crop", "rejected", reason="no face")
    moved = sweep([], records=sorted(tmp_path.glob("*.json")))
    assert sorted(p.name for p in moved) == ["cut.json.damaged", "gone.json.damaged"]
    assert (tmp_path / "cut.mp4.damaged").is_file() and (tmp_path / "whole.json").is_file()


def test_a_download_record_vouches_for_its_byte_count(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x" * 10)
    write_record(tmp_path / "clip.json", "clip", "download", "ok", bytes=11)
    assert sweep([], records=[tmp_path / "clip.json"]) == [tmp_path / "clip.json.damaged"]


def test_a_download_record_vouches_for_its_separate_audio_file(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x" * 10)
    (tmp_path / "clip.audio.wav").write_bytes(b"y" * 5)
    write_record(tmp_path / "clip.json", "clip", "download", "ok", bytes=10,
                 audio={"file": "clip.audio.wav", "bytes": 6})
    assert sweep([], records=[tmp_path / "clip.json"]) == [tmp_path / "clip.json.damaged"]
    assert (tmp_path / "clip.audio.wav.damaged").is_file() and (tmp_path / "clip.mp4").is_file()


def test_a_parquet_damaged_in_the_middle_is_named_and_moved_aside(whole_files, tmp_path):
    """Footer intact, data pages overwritten: only a full read finds it; the error names the file."""
    path = tmp_path / "mid.parquet"
    data = bytearray(whole_files[".parquet"].read_bytes())
    data[8:2000] = b"\xff" * 1992
    path.write_bytes(bytes(data))
    assert damage(path) is None
    with pytest.raises(DamagedFile, match="mid.parquet: cannot be read"):
        read_or_move_aside(path, pq.read_table, "rebuild")
    assert not path.exists() and (tmp_path / "mid.parquet.damaged").is_file()


def test_read_or_move_aside_leaves_a_missing_file_to_the_caller(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_or_move_aside(tmp_path / "absent.pt", lambda p: p.read_bytes(), "rebuild")


# --------------------------------------------------------------------------- the stale lock


def _lock(workdir: Path) -> Path:
    lock_dir = workdir / runlock.LOCK_DIR
    lock_dir.mkdir(parents=True)
    (lock_dir / "0.output.lock").write_text("models/generator.pt\n")
    return lock_dir


def _register(workdir: Path, pid: int, started: float, host: str | None = None) -> None:
    entry = {"host": host or socket.gethostname(), "pid": pid, "started": started}
    (workdir / runlock.RUNS_DIR).mkdir(parents=True, exist_ok=True)
    (workdir / runlock.RUNS_DIR / f"{entry['host']}-{pid}.json").write_text(json.dumps(entry))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_left_by_a_dead_run_is_removed(tmp_path):
    lock_dir = _lock(tmp_path)
    _register(tmp_path, _dead_pid(), 1.0)
    assert runlock.clear_stale_lock(tmp_path)
    assert not lock_dir.exists()
    entries = [json.loads(p.read_text()) for p in (tmp_path / runlock.RUNS_DIR).glob("*.json")]
    assert [e["pid"] for e in entries] == [os.getpid()]  # the dead run is forgotten, this one registered


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """Same pid, other start time: another process now holds the number."""
    lock_dir = _lock(tmp_path)
    _register(tmp_path, os.getpid(), 12345.0)
    assert runlock.clear_stale_lock(tmp_path) and not lock_dir.exists()


def test_a_lock_of_a_live_run_or_another_host_is_kept(tmp_path):
    lock_dir = _lock(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _register(tmp_path, sleeper.pid, psutil.Process(sleeper.pid).create_time())
        assert not runlock.clear_stale_lock(tmp_path) and lock_dir.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    other = tmp_path / "other"
    lock_dir = _lock(other)
    _register(other, _dead_pid(), 1.0, host="login-node-2")
    assert not runlock.clear_stale_lock(other) and lock_dir.is_dir()


def test_a_lock_nobody_registered_is_kept(tmp_path):
    """Taken by a run of an older workflow (or by hand): not ours to judge."""
    lock_dir = _lock(tmp_path)
    assert not runlock.clear_stale_lock(tmp_path) and lock_dir.is_dir()


def test_a_killed_writers_temp_files_are_removed_and_finished_files_kept(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"half")
        leftover = tmp.with_name(tmp.name + "-copy")  # what a kill -9 leaves: the finally never runs
        leftover.write_bytes(b"half")
        raise KeyboardInterrupt
    (tmp_path / "model.pt").write_bytes(b"whole")
    assert remove_leftovers([tmp_path, tmp_path / "absent"]) == [leftover]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# --------------------------------------------------------------------------- curves and resume checkpoints


def test_a_curve_keeps_the_rows_its_checkpoint_saw(tmp_path):
    """Snakemake deletes the output TSV before a rerun; rows appended after the checkpoint are redone."""
    out, resume = tmp_path / "results/curve.tsv", tmp_path / "models/level0.resume.pt"
    curve = Curve(out, resume, "curve", ["epoch", "loss"])
    curve.start()
    curve.append([{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.8}])
    saved = curve.rows
    curve.append([{"epoch": 3, "loss": 0.7}])  # after the checkpoint: lost to the kill
    out.unlink()  # what Snakemake does before rerunning the job
    again = Curve(out, resume, "curve", ["epoch", "loss"])
    again.start(saved)
    again.append([{"epoch": 3, "loss": 0.65}])
    assert out.read_text().splitlines() == ["epoch\tloss", "1\t0.9", "2\t0.8", "3\t0.65"]
    assert again.copy.read_text() == out.read_text()


def test_resume_only_an_unfinished_run_of_the_same_recipe(tmp_path):
    path = tmp_path / "g.resume.pt"
    save({"fingerprint": "abc", "iteration": 50}, path)
    assert load_resume(path, "abc", "iteration", 100)["iteration"] == 50  # unfinished: resume
    assert load_resume(path, "abc", "iteration", 50)["iteration"] == 50  # finished: outputs come from it
    assert load_resume(path, "abc", "iteration", 20) is None  # a shorter run asked for: start over
    assert load_resume(path, "other", "iteration", 100) is None  # another recipe
    path.write_bytes(path.read_bytes()[:40])
    assert load_resume(path, "abc", "iteration", 100) is None  # unreadable: moved aside, start over
    assert (tmp_path / "g.resume.pt.damaged").is_file()


def test_the_same_state_saves_to_the_same_bytes(tmp_path):
    """A model rebuilt from its checkpoint must not change the fingerprint of what was trained from it."""
    state = {"w": torch.arange(10.0), "best": {"step": 3}}
    save(state, tmp_path / "a.pt")
    save(state, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
