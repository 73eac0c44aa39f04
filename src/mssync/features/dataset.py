"""Dataset stage: consolidate per-clip features into train/val/test, split by speaker.

The split is a pure function of (speaker names, seed, fractions, manifest pins), so it is the
same on every machine and every run; no speaker ever appears in two splits. Every clip of the
manifest ends up either in a split or in data/rejected.csv with the stage and reason.

With a fold (cross-validation, `crossval`), the same files are written for one of K
speaker-disjoint folds: its speakers are the test split, a share of the other folds' speakers the
inner validation split, the rest train. Manifest pins are ignored there: every speaker must be
tested exactly once.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mssync.core.atomic import write_text_atomic
from mssync.core.config import CrossvalSettings, DatasetSettings
from mssync.core.errors import ClipRejected, MssyncError
from mssync.core.integrity import DamagedFile
from mssync.core.records import OK, read_record, write_rejected_csv
from mssync.data.manifest import SPLITS, ClipEntry, read_manifest
from mssync.features.schema import encode_metadata, read_metadata, read_table, write_clip_tables

log = logging.getLogger(__name__)

PER_CLIP_METADATA = ("clip_id", "speaker", "face_fraction")  # differ per clip; dropped from split files
MUST_AGREE = ("fps", "sample_rate", "hop_ms", "n_mels", "audio_frames_per_frame", "landmarker_sha256", "schema_version")
SPLITS_COLUMNS = ("clip_id", "speaker", "split", "frames", "duration_s", "face_fraction")


@dataclasses.dataclass(frozen=True)
class UsableClip:
    entry: ClipEntry
    features: Path
    frames: int
    face_fraction: float


def _rejection(entry: ClipEntry, stage: str, reason: str) -> dict[str, str]:
    return {"clip_id": entry.id, "speaker": entry.speaker, "stage": stage, "reason": reason}


def triage(entries: list[ClipEntry], raw_dir: Path, clips_dir: Path, features_dir: Path,
           settings: DatasetSettings) -> tuple[list[UsableClip], list[dict[str, str]]]:
    """Follow each clip through the stage records: usable, or rejected with stage and reason."""
    usable: list[UsableClip] = []
    rejected: list[dict[str, str]] = []
    for entry in entries:
        stage_record = None
        for stage_dir in (raw_dir, clips_dir):
            path = stage_dir / f"{entry.id}.json"
            if not path.is_file():
                raise MssyncError(f"{path}: missing stage record for clip {entry.id!r}; run the earlier stages first")
            stage_record = read_record(path)
            if stage_record["status"] != OK:
                rejected.append(_rejection(entry, stage_record["stage"], stage_record.get("reason", "?")))
                break
        else:
            features = features_dir / f"{entry.id}.parquet"
            failure = features_dir / f"{entry.id}.json"  # the features stage's rejection record
            if failure.is_file():
                failed = read_record(failure)
                rejected.append(_rejection(entry, failed["stage"], failed.get("reason", "?")))
                continue
            try:
                meta = read_metadata(features)
            except DamagedFile as exc:  # moved aside: the next run extracts it again
                rejected.append(_rejection(entry, "features", _damaged_reason(exc)))
                continue
            frames = int(stage_record["output"]["frames"]) if stage_record else 0
            if meta["face_fraction"] < settings.min_face_fraction:
                rejected.append(_rejection(
                    entry, "dataset",
                    f"face found in only {meta['face_fraction']:.1%} of frames (min_face_fraction "
                    f"{settings.min_face_fraction:.0%})"))
                continue
            usable.append(UsableClip(entry, features, frames, float(meta["face_fraction"])))
    return usable, rejected


def _damaged_reason(exc: DamagedFile) -> str:
    return f"{exc} (rejected for this run only: the next run re-extracts it)"


def _speaker_rank(speaker: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{speaker}".encode()).hexdigest()


def split_counts(n_speakers: int, settings: DatasetSettings) -> dict[str, int]:
    """How many speakers each held-out split gets; at least one when the fraction asks for any."""
    counts = {}
    for split, fraction in (("test", settings.test_fraction), ("val", settings.val_fraction)):
        wanted = round(n_speakers * fraction)
        counts[split] = max(wanted, 1) if fraction > 0 and n_speakers >= 3 else wanted
    counts["train"] = n_speakers - counts["test"] - counts["val"]
    if counts["train"] < 1 and n_speakers:
        raise MssyncError(f"{n_speakers} speakers leave none for training with val/test fractions "
                          f"{settings.val_fraction}/{settings.test_fraction}")
    return counts


def assign_splits(speakers: dict[str, str | None], settings: DatasetSettings) -> dict[str, str]:
    """speaker -> split. Manifest pins are kept; the rest fill test, then val, by seeded hash order."""
    counts = split_counts(len(speakers), settings)
    assignment = {s: pinned for s, pinned in speakers.items() if pinned}
    free = sorted((s for s in speakers if s not in assignment), key=lambda s: _speaker_rank(s, settings.seed))
    for split in ("test", "val"):
        missing = counts[split] - sum(1 for v in assignment.values() if v == split)
        for _ in range(max(missing, 0)):
            if free:
                assignment[free.pop(0)] = split
    assignment.update({s: "train" for s in free})
    return assignment


@dataclasses.dataclass(frozen=True)
class Fold:
    """Which cross-validation fold to write (0-based) and how the folds are made."""

    index: int
    crossval: CrossvalSettings


def speaker_folds(speakers: list[str], crossval: CrossvalSettings) -> dict[str, int]:
    """speaker -> fold, dealt round-robin in seeded hash order: fold sizes (in speakers) differ by at
    most one, and the assignment does not depend on clip counts or manifest order."""
    if len(speakers) < crossval.folds:
        raise MssyncError(f"{len(speakers)} usable speakers cannot fill crossval.folds {crossval.folds} "
                          f"(each fold needs at least one test speaker)")
    order = sorted(speakers, key=lambda s: _speaker_rank(s, crossval.seed))
    return {speaker: i % crossval.folds for i, speaker in enumerate(order)}


def assign_fold_splits(speakers: list[str], fold: Fold) -> dict[str, str]:
    """speaker -> split for one fold: its speakers test; of the others, round(val_fraction * n) (at
    least one) val, picked in a hash order that differs per fold so folds do not share a val set."""
    folds = speaker_folds(speakers, fold.crossval)
    if not 0 <= fold.index < fold.crossval.folds:
        raise MssyncError(f"fold {fold.index} is not one of crossval.folds {fold.crossval.folds} (0-based)")
    rest = sorted((s for s in speakers if folds[s] != fold.index),
                  key=lambda s: _speaker_rank(s, fold.crossval.seed * 1_000_003 + fold.index + 1))
    n_val = max(1, round(len(rest) * fold.crossval.val_fraction))
    if n_val >= len(rest):
        raise MssyncError(f"fold {fold.index}: {len(rest)} speakers outside the fold leave none to train on "
                          f"after {n_val} for validation")
    assignment = {s: "test" for s in speakers if folds[s] == fold.index}
    assignment.update({s: "val" for s in rest[:n_val]})
    assignment.update({s: "train" for s in rest[n_val:]})
    return assignment


def _merged_metadata(metas: list[dict], split: str, clip_ids: list[str]) -> dict:
    first = metas[0]
    for meta in metas[1:]:
        for key in MUST_AGREE:
            if meta.get(key) != first.get(key):
                raise MssyncError(f"clips {clip_ids[0]} and {meta['clip_id']} disagree on {key}: "
                                  f"{first.get(key)!r} vs {meta.get(key)!r}; re-run the features stage")
    merged = {k: v for k, v in first.items() if k not in PER_CLIP_METADATA and k != "schema_version"}
    return {**merged, "split": split, "clips": clip_ids}


def write_split(path: Path, split: str, clips: list[UsableClip], template: Path) -> list[dict[str, str]]:
    """One Parquet per split, streamed clip by clip (memory: one clip, not the split); an empty split
    keeps the schema so readers need no special case. A clip whose features cannot be read is left
    out and returned as a rejection (its file moved aside for re-extraction), so one damaged file
    never costs the run its split files."""
    rejected: list[dict[str, str]] = []
    while True:
        metas = [read_metadata(clip.features) for clip in clips] or [read_metadata(template)]
        merged = _merged_metadata(metas, split, [c.entry.id for c in clips])
        try:
            write_clip_tables(path, _split_schema(clips, template, merged), _clip_tables(clips, template))
            return rejected
        except _Unreadable as exc:  # damage a full read found: leave the clip out and write again
            rejected.append(_rejection(exc.clip.entry, "features", _damaged_reason(exc.damage)))
            clips = [c for c in clips if c is not exc.clip]


class _Unreadable(Exception):
    def __init__(self, clip: UsableClip, damage: DamagedFile) -> None:
        super().__init__(str(damage))
        self.clip, self.damage = clip, damage


def _split_schema(clips: list[UsableClip], template: Path, merged: dict) -> pa.Schema:
    schema = pq.read_schema(clips[0].features if clips else template)
    return schema.with_metadata(encode_metadata(merged))


def _clip_tables(clips: list[UsableClip], template: Path) -> Iterator[pa.Table]:
    if not clips:
        yield read_table(template)[0].slice(0, 0)
    for clip in clips:
        try:
            yield read_table(clip.features)[0]
        except DamagedFile as exc:
            raise _Unreadable(clip, exc) from exc


def _splits_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SPLITS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["speaker"], r["clip_id"])))
    return buffer.getvalue()


def build_dataset(*, manifest: Path, raw_dir: Path, clips_dir: Path, features_dir: Path, out_dir: Path,
                  rejected_csv: Path, settings: DatasetSettings, strict: bool = False,
                  fold: Fold | None = None) -> dict[str, list[str]]:
    entries = read_manifest(manifest)
    usable, rejected = triage(entries, raw_dir, clips_dir, features_dir, settings)
    by_split: dict[str, list[str]] = {}
    if usable and not (strict and rejected):
        by_split, damaged = _write_splits(usable, out_dir, settings, fold)
        rejected += damaged
    write_rejected_csv(rejected_csv, rejected)
    for row in rejected:
        log.warning("rejected %s at %s: %s", row["clip_id"], row["stage"], row["reason"])
    if strict and rejected:
        raise ClipRejected(f"{len(rejected)} clip(s) rejected (strict): see {rejected_csv}")
    if not any(by_split.values()):
        raise MssyncError(f"no usable clips out of {len(entries)}: see {rejected_csv}")
    return by_split


def _write_splits(usable: list[UsableClip], out_dir: Path, settings: DatasetSettings,
                  fold: Fold | None = None) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Assign speakers to splits (the main split, or one cross-validation fold's) and write the split
    files and splits.csv. Returns each split's clips and the rejections of clips whose features
    turned out unreadable on the full read."""
    speakers: dict[str, str | None] = {}
    for clip in usable:
        speakers[clip.entry.speaker] = speakers.get(clip.entry.speaker) or clip.entry.split
    assignment = assign_splits(speakers, settings) if fold is None else assign_fold_splits(list(speakers), fold)
    by_split: dict[str, list[str]] = {}
    rows, damaged = [], []
    for split in SPLITS:
        members = [c for c in usable if assignment[c.entry.speaker] == split]
        damaged += write_split(out_dir / f"{split}.parquet", split, members, usable[0].features)
        left_out = {row["clip_id"] for row in damaged}
        members = [c for c in members if c.entry.id not in left_out]
        by_split[split] = [c.entry.id for c in members]
        rows += [{"clip_id": c.entry.id, "speaker": c.entry.speaker, "split": split, "frames": c.frames,
                  "duration_s": round(c.frames / read_metadata(c.features)["fps"], 3),
                  "face_fraction": round(c.face_fraction, 4)} for c in members]
        log.info("%s: %d clips, %d speakers", split, len(members), len({c.entry.speaker for c in members}))
    write_text_atomic(out_dir / "splits.csv", _splits_csv(rows))
    return by_split, damaged
