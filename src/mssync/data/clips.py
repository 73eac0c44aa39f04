"""Clips stage (the data phase's job): download then crop every clip of one shard, in one process.

Per clip the records are the ones `download` and `crop` always wrote (data/raw/{clip}.json,
data/clips/{clip}.json, ok or rejected with the reason); the shard record
(data/clips/shards/{shard}.json) lists them with the time each stage took.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mssync.core.config import CropSettings, DownloadSettings, LandmarkerSettings, ShardSettings
from mssync.core.records import read_record
from mssync.data.crop import crop_clip, probe_landmarker
from mssync.data.download import download_clip
from mssync.data.manifest import ClipEntry, read_manifest
from mssync.data.shards import ClipOutcome, run_shard, shard_entries, stage_guard
from mssync.media.landmarks import ImageLandmarker

STEP = "clips"


@dataclasses.dataclass(frozen=True)
class ClipsJob:
    raw_dir: Path
    clips_dir: Path
    download: DownloadSettings
    crop: CropSettings
    landmarker: LandmarkerSettings
    strict: bool
    face_probe: ImageLandmarker  # opened once for the shard's clips (IMAGE mode keeps no state)

    def process(self, entry: ClipEntry) -> ClipOutcome:
        raw_record = self.raw_dir / f"{entry.id}.json"
        crop_record = self.clips_dir / f"{entry.id}.json"
        seconds: dict[str, float] = {}
        with stage_guard(raw_record, entry, "download", self.strict, seconds):
            download_clip(entry=entry, settings=self.download, dest=self.raw_dir / f"{entry.id}.mp4",
                          record_path=raw_record, strict=self.strict)
        with stage_guard(crop_record, entry, "crop", self.strict, seconds):
            crop_clip(raw_record=raw_record, out_dir=self.clips_dir, settings=self.crop, landmarker=self.landmarker,
                      strict=self.strict, face_probe=self.face_probe)
        record = read_record(crop_record)
        return ClipOutcome(entry.id, record["status"], record["stage"], record.get("reason"),
                           [str(raw_record), str(crop_record)], seconds)


def make_clips(*, manifest: Path, shard: str, record: Path, raw_dir: Path, clips_dir: Path, shards: ShardSettings,
               download: DownloadSettings, crop: CropSettings, landmarker: LandmarkerSettings,
               strict: bool = False) -> dict:
    """Download and crop the clips of `shard`; returns the shard record."""
    entries = shard_entries(read_manifest(manifest), shard, shards.size)
    with probe_landmarker(crop, landmarker) as face_probe:
        job = ClipsJob(raw_dir, clips_dir, download, crop, landmarker, strict, face_probe)
        return run_shard(shard=shard, step=STEP, entries=entries, process=job.process, record=record)
