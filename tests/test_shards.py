"""Shards: stable membership, one bad clip never fails its shard, and the shard record vouches for
every per-clip file (the start-up sweep reruns a shard whose files were lost).

The membership and driver tests are fast unit tests; one integration test runs the real `mssync
clips` and `mssync features` commands (ffmpeg, MediaPipe, librosa) on a shard holding a real sample
clip, a corrupt video and an unobtainable row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import CLIPS_DIR, REPO, requires_clips, run, tiny_params
from PIL import Image

from mssync.core.config import LandmarkerSettings, PreviewSettings, settings_from_mapping
from mssync.core.errors import SetupError
from mssync.core.integrity import sweep
from mssync.core.records import OK, REJECTED, read_record, write_record
from mssync.data.manifest import ClipEntry
from mssync.data.shards import ClipOutcome, group_shards, run_shard, shard_count, shard_entries, shard_of, stage_guard
from mssync.features.preview import make_preview

IDS = [f"clip-{i:05d}" for i in range(1000)]


# --------------------------------------------------------------------------- membership


@pytest.mark.parametrize(("n", "size", "count"), [(0, 4, 1), (1, 4, 1), (4, 4, 1), (5, 4, 2), (245, 32, 8),
                                                  (25_000, 32, 1024)])
def test_shard_count_is_the_smallest_power_of_two_within_the_size(n, size, count):
    assert shard_count(n, size) == count


def test_membership_depends_on_the_clip_id_only():
    before = group_shards(IDS, 32)
    after = group_shards([*IDS[:500], "a-new-clip", *IDS[500:]], 32)  # same shard count (32)
    changed = [shard for shard in after if after[shard] != before.get(shard)]
    assert changed == [shard_of("a-new-clip", 32)]  # one shard gains the clip; no other clip moves
    assert sorted(c for members in before.values() for c in members) == sorted(IDS)


def test_doubling_the_count_splits_each_shard_in_two():
    small, large = group_shards(IDS, 64), group_shards(IDS, 32)  # 16 then 32 shards
    for name, members in large.items():
        index = int(name.split("of")[0])
        assert set(members) <= set(small[f"{index % 16:03d}of016"])


def test_shards_are_balanced_on_the_sample_corpus_sizes():
    sizes = [len(m) for m in group_shards(IDS, 32).values()]
    assert len(sizes) == 32 and max(sizes) <= 2 * 1000 / 32


def test_an_unknown_shard_is_a_clear_error():
    entries = [ClipEntry(id=i, url="file:x.mp4", speaker="s") for i in IDS[:10]]
    with pytest.raises(Exception, match="no shard '999of999' for 10 clips"):
        shard_entries(entries, "999of999", 4)


# --------------------------------------------------------------------------- the driver


def test_an_unexpected_error_becomes_the_stage_rejection_record(tmp_path):
    entry = ClipEntry(id="c1", url="file:x.mp4", speaker="s1")
    seconds: dict[str, float] = {}
    with stage_guard(tmp_path / "c1.json", entry, "crop", strict=False, seconds=seconds):
        raise ZeroDivisionError("division by zero")
    record = read_record(tmp_path / "c1.json")
    assert record["status"] == REJECTED and record["stage"] == "crop" and record["speaker"] == "s1"
    assert record["reason"].startswith("internal error at test_shards.py:")
    assert "ZeroDivisionError: division by zero" in record["reason"]
    assert "crop" in seconds


@pytest.mark.parametrize(("error", "strict"), [(ZeroDivisionError("x"), True), (SetupError("no model"), False)])
def test_strict_runs_and_setup_errors_stop_the_shard(tmp_path, error, strict):
    entry = ClipEntry(id="c1", url="file:x.mp4", speaker="s1")
    with pytest.raises(type(error)):
        with stage_guard(tmp_path / "c1.json", entry, "crop", strict=strict, seconds={}):
            raise error
    assert not (tmp_path / "c1.json").exists()  # a machine problem is not recorded as the clip's


def test_one_failing_clip_does_not_stop_the_others(tmp_path):
    entries = [ClipEntry(id=i, url="file:x.mp4", speaker="s") for i in ("a", "bad", "c")]

    def process(entry: ClipEntry) -> ClipOutcome:
        record, seconds = tmp_path / f"{entry.id}.json", {}
        with stage_guard(record, entry, "crop", strict=False, seconds=seconds):
            if entry.id == "bad":
                raise RuntimeError("decoder crashed")
            write_record(record, entry.id, "crop", OK)
        content = read_record(record)
        return ClipOutcome(entry.id, content["status"], "crop", content.get("reason"), [str(record)], seconds)

    shard = run_shard(shard="000of001", step="clips", entries=entries, process=process, record=tmp_path / "s.json")
    assert [c["status"] for c in shard["clips"]] == [OK, REJECTED, OK]
    assert json.loads((tmp_path / "s.json").read_text()) == shard
    assert len(shard["files"]) == 3


def test_the_sweep_moves_aside_a_shard_record_whose_files_are_lost(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data/previews").mkdir(parents=True)
    for name in ("a", "b"):
        Path(f"data/previews/{name}.png").write_bytes(b"not a png")
    record = Path("data/shard.json")
    record.write_text(json.dumps({"stage": "shard", "files": ["data/previews/a.png", "data/previews/b.png",
                                                              "data/previews/gone.png"]}))
    moved = sweep([], records=[record])
    assert moved == [Path("data/shard.json.damaged")]
    assert sorted(p.name for p in Path("data/previews").iterdir()) == ["a.png.damaged", "b.png.damaged"]
    assert not record.exists()


# --------------------------------------------------------------------------- real clips, real tools

GOOD = "vox2-00010"


@pytest.mark.integration
@requires_clips
def test_a_shard_with_a_corrupt_clip_completes_the_others(tmp_path, monkeypatch):
    """One shard: a real clip, a corrupt video and a row whose file does not exist. Both shard jobs
    finish; the good clip has features and a preview; the others are rejected with their reason and
    still get a preview saying why."""
    shutil.copy(CLIPS_DIR / f"{GOOD}.mp4", tmp_path / "good.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    (tmp_path / "manifest.csv").write_text("id,url,speaker\n"
                                           "good,file:good.mp4,alice\n"
                                           "corrupt,file:corrupt.mp4,bob\n"
                                           "absent,file:absent.mp4,carol\n")
    params = tiny_params(manifest="manifest.csv")
    params["shards"]["size"] = 8
    settings = {section: json.dumps(params[section]) for section in
                ("shards", "download", "crop", "landmarker", "features", "preview")}
    common = ["--manifest", "manifest.csv", "--shard", "000of001"]
    run(["mssync", "clips", *common, "--record", "data/clips/shards/000of001.json",
         *[arg for s in ("shards", "download", "crop", "landmarker") for arg in (f"--{s}-settings", settings[s])]],
        tmp_path)
    run(["mssync", "features", *common, "--record", "data/features/shards/000of001.json",
         *[arg for s in ("shards", "features", "preview", "landmarker") for arg in (f"--{s}-settings", settings[s])]],
        tmp_path)

    clips = {c["clip_id"]: c for c in read_record(tmp_path / "data/clips/shards/000of001.json")["clips"]}
    assert clips["good"]["status"] == OK
    assert clips["corrupt"]["status"] == REJECTED and clips["corrupt"]["stage"] == "crop"
    assert clips["absent"]["status"] == REJECTED and "does not exist" in clips["absent"]["reason"]
    features = read_record(tmp_path / "data/features/shards/000of001.json")
    assert (tmp_path / "data/features/good.parquet").is_file()
    assert sorted(p.name for p in (tmp_path / "data/previews").iterdir()) == ["absent.png", "corrupt.png", "good.png"]
    # the job drew the good clip's sheet from the frames its features decoded: the same pixels as decoding the crop
    redrawn = tmp_path / "redrawn.png"
    make_preview(raw_record=tmp_path / "data/raw/good.json", crop_record=tmp_path / "data/clips/good.json",
                 features=tmp_path / "data/features/good.parquet", out=redrawn,
                 settings=settings_from_mapping(PreviewSettings, params["preview"]),
                 landmarker=settings_from_mapping(LandmarkerSettings, params["landmarker"]))
    with Image.open(tmp_path / "data/previews/good.png") as made, Image.open(redrawn) as expected:
        assert np.array_equal(np.asarray(made), np.asarray(expected))
    assert all((tmp_path / f).is_file() for f in features["files"])
    monkeypatch.chdir(tmp_path)  # shard records name files from the working directory
    assert sweep([], records=["data/clips/shards/000of001.json", "data/features/shards/000of001.json"]) == []


def test_tiny_config_has_more_than_one_shard():
    """The integration tests exercise several shards, one of them with the unobtainable clip."""
    import csv

    params = tiny_params()
    ids = [row["id"] for row in csv.DictReader((REPO / params["manifest"]).open())]
    shards = group_shards(ids, params["shards"]["size"])
    assert len(shards) >= 2 and any("missing-clip" in members for members in shards.values())
