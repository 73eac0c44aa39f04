"""The clip manifest: which clips exist, where to fetch them, and who speaks in them.

Ids become file names in every stage, so they are checked before anything runs: a bad,
duplicate or path-traversing id stops the run with the offending row named.

Some clips keep their speech in a separate file (a video without an audio track and a wav
beside it): `audio_url`/`audio_sha256` name that file. `member` stays the video's zip member.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from mssync.core.errors import ManifestError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
URL_SCHEMES = ("http://", "https://", "file:", "youtube:")
AUDIO_URL_SCHEMES = ("http://", "https://", "file:")  # yt-dlp would fetch a video, not the speech file
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "url", "speaker")


@dataclasses.dataclass(frozen=True)
class ClipEntry:
    id: str
    url: str
    speaker: str
    sha256: str | None = None
    member: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    split: str | None = None
    audio_url: str | None = None  # the speech as a separate file (the video has no usable audio track)
    audio_sha256: str | None = None


def validate_clip_id(clip_id: str, where: str) -> None:
    if ".." in clip_id or "/" in clip_id or "\\" in clip_id:
        raise ManifestError(f"{where}: id {clip_id!r} must not contain path separators or '..'")
    if not ID_PATTERN.match(clip_id):
        raise ManifestError(
            f"{where}: id {clip_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )


def _optional(row: dict[str, str | None], key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _optional_seconds(row: dict[str, str | None], key: str, where: str) -> float | None:
    value = _optional(row, key)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ManifestError(f"{where}: {key}={value!r} is not a number of seconds") from None
    if seconds < 0:
        raise ManifestError(f"{where}: {key}={seconds} must not be negative")
    return seconds


def _optional_sha256(row: dict[str, str | None], key: str, where: str) -> str | None:
    value = _optional(row, key)
    if value is None:
        return None
    value = value.lower()
    if not SHA256_PATTERN.match(value):
        raise ManifestError(f"{where}: {key} {value!r} is not 64 hex digits")
    return value


def _audio_columns(row: dict[str, str | None], url: str, where: str) -> tuple[str | None, str | None]:
    """(audio_url, audio_sha256): a hash without a URL would silently verify nothing, so it is an error.

    A youtube: video cannot have one: yt-dlp cuts the video to start_s/end_s while downloading,
    and the audio file would stay uncut, out of step with it.
    """
    audio_url = _optional(row, "audio_url")
    audio_sha256 = _optional_sha256(row, "audio_sha256", where)
    if audio_url is None:
        if audio_sha256 is not None:
            raise ManifestError(f"{where}: audio_sha256 is set but audio_url is empty")
        return None, None
    if not audio_url.startswith(AUDIO_URL_SCHEMES):
        raise ManifestError(
            f"{where}: audio_url {audio_url!r} must start with one of {', '.join(AUDIO_URL_SCHEMES)}"
        )
    if url.startswith("youtube:"):
        raise ManifestError(f"{where}: audio_url is not supported with a youtube: url (yt-dlp fetches the sound)")
    return audio_url, audio_sha256


def parse_row(row: dict[str, str | None], where: str) -> ClipEntry:
    clip_id = (row.get("id") or "").strip()
    validate_clip_id(clip_id, where)
    url = (row.get("url") or "").strip()
    if not url.startswith(URL_SCHEMES):
        raise ManifestError(f"{where}: url {url!r} must start with one of {', '.join(URL_SCHEMES)}")
    speaker = (row.get("speaker") or "").strip()
    if not speaker:
        raise ManifestError(f"{where}: speaker is empty (needed to split by speaker)")
    sha256 = _optional_sha256(row, "sha256", where)
    start_s = _optional_seconds(row, "start_s", where)
    end_s = _optional_seconds(row, "end_s", where)
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ManifestError(f"{where}: end_s={end_s} must be after start_s={start_s}")
    split = _optional(row, "split")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"{where}: split {split!r} must be one of {', '.join(SPLITS)} or empty")
    audio_url, audio_sha256 = _audio_columns(row, url, where)
    return ClipEntry(clip_id, url, speaker, sha256, _optional(row, "member"), start_s, end_s, split,
                     audio_url=audio_url, audio_sha256=audio_sha256)


def read_manifest(path: str | Path) -> list[ClipEntry]:
    """Read and validate a manifest CSV; extra columns (license, source...) are kept in the file only."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        entries = [parse_row(row, f"{path}:{line}") for line, row in enumerate(reader, start=2)]
    _check_unique_ids(entries, path)
    _check_speaker_splits(entries, path)
    if not entries:
        raise ManifestError(f"{path}: no clips listed")
    return entries


def _check_unique_ids(entries: list[ClipEntry], path: Path) -> None:
    seen: set[str] = set()
    for entry in entries:
        key = entry.id.lower()  # case-insensitive filesystems would merge them
        if key in seen:
            raise ManifestError(f"{path}: duplicate id {entry.id!r}")
        seen.add(key)


def _check_speaker_splits(entries: list[ClipEntry], path: Path) -> None:
    """A speaker pinned to two splits would leak identity between train and test."""
    pinned: dict[str, str] = {}
    for entry in entries:
        if entry.split is None:
            continue
        previous = pinned.setdefault(entry.speaker, entry.split)
        if previous != entry.split:
            raise ManifestError(
                f"{path}: speaker {entry.speaker!r} is assigned to both {previous!r} and {entry.split!r}"
            )


def manifest_by_id(path: str | Path) -> dict[str, ClipEntry]:
    return {entry.id: entry for entry in read_manifest(path)}
