"""Manifest validation: ids become file names, so bad ones must stop the run up front."""

from __future__ import annotations

import csv
from pathlib import Path

import jsonschema
import pytest
import yaml

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


# --------------------------------------------------------------------------- separate audio (audio_url, audio_sha256)

AUDIO_HASH = "ab" * 32


def test_audio_columns_parse_and_member_stays_the_videos(tmp_path):
    path = write(tmp_path, "id,url,speaker,sha256,member,audio_url,audio_sha256\n"
                           f"a,https://h/a.zip,s,,clips/a.mp4,https://h/a.wav,{AUDIO_HASH.upper()}\n"
                           "b,file:b.mp4,s,,,file:b.wav,\n"
                           "c,file:c.mp4,s,,,,\n")
    a, b, c = read_manifest(path)
    assert (a.audio_url, a.audio_sha256, a.member) == ("https://h/a.wav", AUDIO_HASH, "clips/a.mp4")
    assert (b.audio_url, b.audio_sha256) == ("file:b.wav", None)  # an audio file without a hash: not verified
    assert (c.audio_url, c.audio_sha256) == (None, None)


@pytest.mark.parametrize(
    ("audio_url", "audio_sha256", "message"),
    [
        ("", AUDIO_HASH, "audio_sha256 is set but audio_url is empty"),
        ("ftp://h/a.wav", "", "audio_url 'ftp://h/a.wav' must start with one of http://, https://, file:"),
        ("youtube:abc", "", "audio_url 'youtube:abc' must start with one of"),
        ("file:a.wav", "abc", "audio_sha256 'abc' is not 64 hex digits"),
        ("file:a.wav", AUDIO_HASH + "0", "audio_sha256 .* is not 64 hex digits"),
    ],
)
def test_bad_audio_columns_name_the_problem(tmp_path, audio_url, audio_sha256, message):
    path = write(tmp_path, f"id,url,speaker,audio_url,audio_sha256\na,file:a.mp4,s,{audio_url},{audio_sha256}\n")
    with pytest.raises(ManifestError, match=f"manifest.csv:2: {message}"):
        read_manifest(path)


def test_audio_url_with_a_youtube_video_is_refused(tmp_path):
    """yt-dlp cuts the video to the span while downloading; a separate audio file would stay uncut."""
    path = write(tmp_path, "id,url,speaker,start_s,end_s,audio_url\na,youtube:abc,s,1,4,https://h/a.wav\n")
    with pytest.raises(ManifestError, match="manifest.csv:2: audio_url is not supported with a youtube: url"):
        read_manifest(path)


def test_manifest_schema_describes_the_audio_columns():
    """The schema (documentation for other tools) agrees with the parser on the new columns."""
    schema = yaml.safe_load((REPO / "workflow/schemas/manifest.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    base = {"id": "a", "url": "file:a.mp4", "speaker": "s"}

    def errors(**row: str) -> list[str]:
        return [e.message for e in validator.iter_errors({**base, **row})]

    assert errors() == errors(audio_url="https://h/a.wav", audio_sha256=AUDIO_HASH) == []
    assert errors(audio_url="", audio_sha256="") == []  # empty CSV cells
    assert errors(audio_sha256=AUDIO_HASH) and errors(audio_url="", audio_sha256=AUDIO_HASH)
    assert errors(audio_url="youtube:abc") and errors(audio_sha256="abc")
    assert errors(url="youtube:abc", audio_url="https://h/a.wav") and not errors(url="youtube:abc", audio_url="")
