"""Manifest validation: ids become file names, so bad ones must stop the run up front."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mssync.core.errors import ManifestError
from mssync.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_sample_manifest_lists_shared_clips_with_their_hashes():
    """Every clip of the sample manifest is one of ../shared's, with its hash, speaker and source.
    (../shared holds more clips than the default manifest uses: issue 14 takes them all in.)"""
    entries = read_manifest(REPO / "config/samples.csv")
    shared = {row["id"]: row for row in csv.DictReader((SHARED / "data/clips.csv").open())}
    assert entries and {e.id for e in entries} <= set(shared)
    for entry in entries:
        row = shared[entry.id]
        assert entry.sha256 == row["sha256"] and entry.speaker == row["speaker"]
        assert entry.url.startswith("https://raw.githubusercontent.com/" + row["source_repo"] + "/")
        assert entry.member == (row["archive_member"] or None)


@pytest.mark.parametrize("bad_id", ["../evil", "a/b", "a\\b", "..", ".hidden", "-x", "a b", ""])
def test_bad_ids_are_refused(tmp_path, bad_id):
    path = write(tmp_path, f"id,url,speaker\n{bad_id},file:x.mp4,s\n")
    with pytest.raises(ManifestError, match="manifest.csv:2: id"):
        read_manifest(path)


def test_duplicate_ids_are_refused_case_insensitively(tmp_path):
    path = write(tmp_path, "id,url,speaker\nclip,file:a.mp4,s\nCLIP,file:b.mp4,t\n")
    with pytest.raises(ManifestError, match="duplicate id 'CLIP'"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("c,ftp://x/y.mp4,s,,,,,", "url"),
        ("c,file:x.mp4,,,,,,", "speaker is empty"),
        ("c,file:x.mp4,s,abc,,,,", "64 hex digits"),
        ("c,file:x.mp4,s,,,5,2,", "must be after start_s"),
        ("c,file:x.mp4,s,,,x,,", "not a number"),
        ("c,file:x.mp4,s,,,,,holdout", "split"),
    ],
)
def test_bad_rows_name_the_problem(tmp_path, row, message):
    path = write(tmp_path, "id,url,speaker,sha256,member,start_s,end_s,split\n" + row + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_speaker_pinned_to_two_splits_is_refused(tmp_path):
    path = write(tmp_path, "id,url,speaker,split\na,file:a.mp4,s,train\nb,file:b.mp4,s,test\n")
    with pytest.raises(ManifestError, match="both 'train' and 'test'"):
        read_manifest(path)


def test_missing_column(tmp_path):
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(write(tmp_path, "id,url\na,file:a.mp4\n"))


def test_optional_columns_parse(tmp_path):
    path = write(tmp_path, "id,url,speaker,member,start_s,end_s,split,license\n"
                           "a,youtube:abc,s,,1.5,4,val,CC\n")
    (entry,) = read_manifest(path)
    assert (entry.start_s, entry.end_s, entry.split, entry.sha256, entry.member) == (1.5, 4.0, "val", None, None)
