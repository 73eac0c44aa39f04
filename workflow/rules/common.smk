# Helpers shared by the rule files: the manifest, settings as params, and names every phase uses.
# Every clip goes through download and crop, which always write a record (ok, or rejected with the
# reason; crop passes a failed download on as its own rejection). Crop is the one checkpoint:
# later rules read its records to ask only for clips that are still usable. (Only one checkpoint
# level on purpose: Snakemake 9 can schedule a job whose input function depends on nested
# checkpoints before that input is resolved.)
import json
import re

from mssync.data.manifest import SPLITS, read_manifest
from mssync.core.records import is_ok

MANIFEST = read_manifest(config["manifest"])
CLIPS = [entry.id for entry in MANIFEST]
ROWS = {entry.id: entry for entry in MANIFEST}
STRICT = "--strict" if config["strict"] else ""
LEVELS = config["pyramid"]["levels"]
SYNCER_SETS = list(config["syncers"]["sets"])  # the schema requires 'loss' and 'eval'
SPLIT_FILES = {split: f"data/dataset/{split}.parquet" for split in SPLITS}
MOTION_SPACE = "models/motion_space.npz"
CROP_RECORDS = [f"data/clips/{clip}.json" for clip in CLIPS]


wildcard_constraints:
    clip="|".join(re.escape(c) for c in CLIPS),
    split="|".join(SPLITS),
    set="|".join(SYNCER_SETS),
    level="|".join(str(level) for level in LEVELS),


def settings(section, **replace):
    """A params.yaml section as JSON, passed through params: so a changed value reruns the rule.
    A section with presets keeps only the chosen one: editing another preset reruns nothing."""
    values = {**config[section], **replace}
    if "presets" in values:
        values["presets"] = {values["preset"]: values["presets"][values["preset"]]}
    return json.dumps(values, sort_keys=True)


def manifest_row(wildcards):
    """The clip's manifest row; as a param, editing one row reruns that clip only."""
    return json.dumps(ROWS[wildcards.clip].__dict__, sort_keys=True)


def cropped(clip):
    return is_ok(checkpoints.crop.get(clip=clip).output.record)


def all_targets():
    """What `snakemake` (rule all) builds: every phase's targets, from the phase files."""
    return (
        DATA_TARGETS
        + FEATURES_TARGETS
        + SYNCER_TARGETS
        + GAN_TARGETS
        + RENDER_TARGETS
        + EVALUATE_TARGETS
    )
