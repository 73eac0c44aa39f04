# Helpers shared by the rule files: manifest, per-section settings, and target lists.
# Every clip goes through download and crop, which always write a record (ok, or rejected
# with the reason; crop passes a failed download on as its own rejection). Crop is the one
# checkpoint: later rules read its records to ask only for clips that are still usable.
# (Only one checkpoint level on purpose: Snakemake 9 can schedule a job whose input function
# depends on nested checkpoints before that input is resolved.)
import json
import re

from mssync.data.manifest import SPLITS, read_manifest
from mssync.core.records import is_ok

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


CROP_RECORDS = [f"data/clips/{clip}.json" for clip in CLIPS]


def cropped(clip):
    return is_ok(checkpoints.crop.get(clip=clip).output.record)


def feature_files(wildcards):
    return [f"data/features/{clip}.parquet" for clip in CLIPS if cropped(clip)]


PREVIEWS = [f"data/previews/{clip}.png" for clip in CLIPS]  # rejected clips too: they show why


def preview_features(wildcards):
    return [f"data/features/{wildcards.clip}.parquet"] if cropped(wildcards.clip) else []


DATASET = [f"data/dataset/{split}.parquet" for split in SPLITS] + ["data/dataset/splits.csv", "data/rejected.csv"]


ALL_TARGETS = DATASET + PREVIEWS
