# Helpers shared by the rule files: manifest, per-section settings, and target lists.
# Per-clip stages are checkpoints that always write a record (ok or rejected); the helpers
# below read those records so later rules only ask for clips that are still usable.
import json
import re

from mssync.manifest import SPLITS, read_manifest
from mssync.records import is_ok

MANIFEST = read_manifest(config["manifest"])
CLIPS = [entry.id for entry in MANIFEST]
ROWS = {entry.id: entry for entry in MANIFEST}
STRICT = "--strict" if config["strict"] else ""


wildcard_constraints:
    clip="|".join(re.escape(c) for c in CLIPS),
    split="|".join(SPLITS),


def settings(section):
    """A params.yaml section as JSON: passed through params: so a changed value reruns the rule."""
    return json.dumps(config[section], sort_keys=True)


def manifest_row(wildcards):
    """The clip's manifest row; as a param, editing one row reruns that clip only."""
    return json.dumps(ROWS[wildcards.clip].__dict__, sort_keys=True)


def downloaded(clip):
    return is_ok(checkpoints.download.get(clip=clip).output.record)


def cropped(clip):
    return downloaded(clip) and is_ok(checkpoints.crop.get(clip=clip).output.record)


def crop_records(wildcards):
    """Crop records of every clip that was downloaded (rejected downloads stop there)."""
    return [f"data/clips/{clip}.json" for clip in CLIPS if downloaded(clip)]


def feature_files(wildcards):
    return [f"data/features/{clip}.parquet" for clip in CLIPS if cropped(clip)]


def preview_files(wildcards):
    """A contact sheet for every clip that reached the crop stage, rejected or not."""
    return [f"data/previews/{clip}.png" for clip in CLIPS if downloaded(clip)]


def preview_features(wildcards):
    return [f"data/features/{wildcards.clip}.parquet"] if cropped(wildcards.clip) else []


DATASET = [f"data/dataset/{split}.parquet" for split in SPLITS] + ["data/dataset/splits.csv", "data/rejected.csv"]


def all_targets(wildcards):
    return DATASET + preview_files(wildcards)
