"""Speaker-disjoint, deterministic splits, and consolidation with every clip accounted for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mssync.core.config import DatasetSettings
from mssync.core.errors import MssyncError
from mssync.core.records import write_record
from mssync.features.dataset import assign_splits, build_dataset, split_counts
from mssync.features.schema import features_table, read_metadata, read_table, write_table

SETTINGS = DatasetSettings(seed=0, val_fraction=0.12, test_fraction=0.16, min_face_fraction=0.9)


def test_split_counts_keep_one_speaker_per_held_out_split():
    assert split_counts(23, SETTINGS) == {"test": 4, "val": 3, "train": 16}
    assert split_counts(3, SETTINGS) == {"test": 1, "val": 1, "train": 1}
    with pytest.raises(MssyncError, match="none for training"):
        split_counts(2, DatasetSettings(0, 0.5, 0.5, 0.9))


def test_assignment_is_deterministic_and_respects_pins():
    speakers = {f"spk{i}": None for i in range(20)} | {"pinned": "test"}
    first = assign_splits(speakers, SETTINGS)
    again = assign_splits(dict(reversed(list(speakers.items()))), SETTINGS)
    assert first == again and first["pinned"] == "test"
    counts = {s: sum(1 for v in first.values() if v == s) for s in ("train", "val", "test")}
    assert counts == split_counts(21, SETTINGS)
    other_seed = assign_splits(speakers, DatasetSettings(1, 0.12, 0.16, 0.9))
    assert other_seed != first  # the seed really drives it


def _fake_clip(root: Path, clip_id: str, speaker: str, frames: int, face_fraction: float, status: str = "ok"):
    write_record(root / "raw" / f"{clip_id}.json", clip_id, "download", "ok", file=f"{clip_id}.mp4", speaker=speaker)
    if status != "ok":
        write_record(root / "clips" / f"{clip_id}.json", clip_id, "crop", "rejected", reason="no face found")
        return
    write_record(root / "clips" / f"{clip_id}.json", clip_id, "crop", "ok", speaker=speaker,
                 output={"frames": frames})
    found = np.arange(frames) < round(face_fraction * frames)
    meta = {"clip_id": clip_id, "speaker": speaker, "fps": 25, "sample_rate": 16000, "hop_ms": 10, "n_mels": 8,
            "audio_frames_per_frame": 4, "landmarker_sha256": "x", "face_fraction": float(found.mean())}
    table = features_table(clip_id, 25, np.zeros((frames, 478, 3)), np.zeros((frames, 4, 4)),
                           np.zeros((frames, 52)), found, np.zeros((frames, 4, 8)), meta)
    write_table(root / "features" / f"{clip_id}.parquet", table)


def test_build_dataset_accounts_for_every_clip(tmp_path):
    rows = ["id,url,speaker"]
    for i in range(6):
        _fake_clip(tmp_path, f"c{i}", f"s{i % 5}", 10 + i, 1.0)
        rows.append(f"c{i},file:c{i}.mp4,s{i % 5}")
    _fake_clip(tmp_path, "noface", "s9", 10, 1.0, status="rejected")
    _fake_clip(tmp_path, "blurry", "s8", 20, 0.5)
    write_record(tmp_path / "raw" / "gone.json", "gone", "download", "rejected", reason="HTTP 404")
    rows += ["noface,file:n.mp4,s9", "blurry,file:b.mp4,s8", "gone,file:g.mp4,s7"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")

    by_split = build_dataset(manifest=tmp_path / "m.csv", raw_dir=tmp_path / "raw", clips_dir=tmp_path / "clips", features_dir=tmp_path / "features",
                             out_dir=tmp_path / "dataset", rejected_csv=tmp_path / "rejected.csv", settings=SETTINGS)
    assert sorted(sum(by_split.values(), [])) == [f"c{i}" for i in range(6)]
    speaker_split = {}
    for split, clips in by_split.items():
        table, meta = read_table(tmp_path / "dataset" / f"{split}.parquet", columns=["clip_id", "frame"])
        assert meta["split"] == split and meta["clips"] == clips and "clip_id" not in meta
        assert table.num_rows == sum(10 + int(c[1:]) for c in clips)
        for clip in clips:
            speaker = f"s{int(clip[1:]) % 5}"
            assert speaker_split.setdefault(speaker, split) == split  # no speaker in two splits
    rejected = (tmp_path / "rejected.csv").read_text().splitlines()
    assert rejected == [
        "clip_id,speaker,stage,reason",
        "blurry,s8,dataset,face found in only 50.0% of frames (min_face_fraction 90%)",
        "gone,s7,download,HTTP 404",
        "noface,s9,crop,no face found",
    ]
    table = (tmp_path / "dataset" / "splits.csv").read_text().splitlines()
    assert table[0] == "clip_id,speaker,split,frames,duration_s,face_fraction" and len(table) == 7
    assert read_metadata(tmp_path / "dataset" / "test.parquet")["n_mels"] == 8


def test_strict_dataset_fails_on_rejections(tmp_path):
    _fake_clip(tmp_path, "a", "s", 10, 0.2)
    (tmp_path / "m.csv").write_text("id,url,speaker\na,file:a.mp4,s\n")
    with pytest.raises(MssyncError, match="rejected"):
        build_dataset(manifest=tmp_path / "m.csv", raw_dir=tmp_path / "raw", clips_dir=tmp_path / "clips", features_dir=tmp_path / "features",
                      out_dir=tmp_path / "dataset", rejected_csv=tmp_path / "rejected.csv", settings=SETTINGS, strict=True)
    assert "a,s,dataset" in (tmp_path / "rejected.csv").read_text()


@pytest.mark.parametrize("damage", ["truncated", "middle"])
def test_a_damaged_features_file_is_named_and_the_splits_are_still_written(tmp_path, damage):
    """Truncated (the footer check finds it) or overwritten in the middle (only the full read does):
    either way the clip is rejected for this run with the file named, the file is moved aside so
    the next run re-extracts it, and the other clips' split files are written."""
    rows = ["id,url,speaker"]
    for i in range(4):
        _fake_clip(tmp_path, f"c{i}", f"s{i}", 400, 1.0)
        rows.append(f"c{i},file:c{i}.mp4,s{i}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    bad = tmp_path / "features" / "c2.parquet"
    data = bytearray(bad.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[100:3000] = b"\xff" * 2900
    bad.write_bytes(bytes(data))

    by_split = build_dataset(manifest=tmp_path / "m.csv", raw_dir=tmp_path / "raw", clips_dir=tmp_path / "clips",
                             features_dir=tmp_path / "features", out_dir=tmp_path / "dataset",
                             rejected_csv=tmp_path / "rejected.csv", settings=SETTINGS)
    assert sorted(sum(by_split.values(), [])) == ["c0", "c1", "c3"]
    assert all((tmp_path / "dataset" / f"{split}.parquet").is_file() for split in ("train", "val", "test"))
    rejected = (tmp_path / "rejected.csv").read_text()
    assert "c2,s2,features," in rejected and "c2.parquet: cannot be read" in rejected and "re-extracts" in rejected
    assert not bad.exists() and bad.with_name("c2.parquet.damaged").is_file()
