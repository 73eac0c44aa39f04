# Helpers shared by the phase files - the manifest, settings as params, and names every phase uses.
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
RAW_RECORDS = [f"data/raw/{clip}.json" for clip in CLIPS]
CROP_RECORDS = [f"data/clips/{clip}.json" for clip in CLIPS]
FEATURE_FILES = [f"data/features/{clip}.parquet" for clip in CLIPS]  # of the clips crop keeps
ABLATIONS = config["evaluation"]["ablations"]  # name -> the gan.sync_levels it trains with


def settings(section, **replace):
    """A params.yaml section as JSON, passed through params: so a changed value reruns the rule.
    A section with presets keeps only the chosen one: editing another preset reruns nothing."""
    values = {**config[section], **replace}
    if "presets" in values:
        values["presets"] = {values["preset"]: values["presets"][values["preset"]]}
    return json.dumps(values, sort_keys=True)


def manifest_row(wildcards):
    """The clip's manifest row; as a param, editing one row reruns that clip only. Empty optional
    columns are left out, so a new optional column reruns only the rows that fill it."""
    row = {key: value for key, value in ROWS[wildcards.clip].__dict__.items() if value is not None}
    return json.dumps(row, sort_keys=True)


def cropped(clip):
    return is_ok(checkpoints.crop.get(clip=clip).output.record)


def all_targets():
    """The targets of `snakemake` (its default target, all): every phase's, from the phase files.
    Each phase lists every file its rules make (not only its last one), so a deleted model, curve
    or record is rebuilt by the phase target and by all (tests/test_faults.py deletes each kind)."""
    return (
        DATA_TARGETS
        + FEATURES_TARGETS
        + SYNCER_TARGETS
        + GAN_TARGETS
        + ABLATION_TARGETS
        + RENDER_TARGETS
        + EVALUATE_TARGETS
    )


def feature_files(wildcards):
    """The features of every clip that crop kept (read from the crop checkpoint's records)."""
    return [path for clip, path in zip(CLIPS, FEATURE_FILES) if cropped(clip)]


def preview_features(wildcards):
    return [f"data/features/{wildcards.clip}.parquet"] if cropped(wildcards.clip) else []


def loss_syncers(levels):
    return expand("models/syncers/loss/level{level}.pt", level=levels)


def render_args(render_targets):
    """--videos / --render-metrics for whichever of the render outputs exist as targets."""
    flags = {"results/videos": "--videos", "results/render/metrics.json": "--render-metrics"}
    return " ".join(f"{flags[t]} {t}" for t in render_targets if t in flags)
