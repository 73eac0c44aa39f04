# Helpers shared by the phase files - the manifest, its shards, settings as params, and names every
# phase uses. The per-clip stages run a shard of clips per job (mssync.data.shards): `clips`
# (download, crop) then `features` (landmarks + mel, previews). Each writes per-clip records (ok,
# or rejected with the reason) and a shard record, its only declared output; the dataset reads the
# per-clip records, so no checkpoint is needed and the DAG has a job per shard, not per clip.
import json
import re

from mssync.data.manifest import SPLITS, read_manifest
from mssync.data.shards import group_shards

MANIFEST = read_manifest(config["manifest"])
CLIPS = [entry.id for entry in MANIFEST]
ROWS = {entry.id: entry for entry in MANIFEST}
STRICT = "--strict" if config["strict"] else ""
LEVELS = config["pyramid"]["levels"]
SYNCER_SETS = list(config["syncers"]["sets"])  # the schema requires 'loss' and 'eval'
SPLIT_FILES = {split: f"data/dataset/{split}.parquet" for split in SPLITS}
MOTION_SPACE = "models/motion_space.npz"
MOTION_CACHE = {split: f"data/motion/{split}" for split in SPLITS}  # mssync.motion.motion_cache
CACHE_EXTS = (".motion.npy", ".valid.npy", ".mel.npy", ".clips.json")
SHARDS = group_shards(CLIPS, config["shards"]["size"])  # shard -> its clips (a hash of each id)
CLIPS_RECORDS = [f"data/clips/shards/{shard}.json" for shard in SHARDS]
FEATURES_RECORDS = [f"data/features/shards/{shard}.json" for shard in SHARDS]
# Where the shard jobs write their per-clip files ({clip}.json records, media, features, previews):
# not declared outputs (a job's outputs cannot depend on which clips pass), vouched for by the
# shard records instead, and swept for a killed job's temp files at start-up.
PER_CLIP_DIRS = ["data/raw", "data/clips", "data/features", "data/previews"]
ABLATIONS = config["evaluation"]["ablations"]  # name -> the gan.sync_levels it trains with


def settings(section, **replace):
    """A params.yaml section as JSON, passed through params: so a changed value reruns the rule.
    A section with presets keeps only the chosen one: editing another preset reruns nothing."""
    values = {**config[section], **replace}
    if "presets" in values:
        values["presets"] = {values["preset"]: values["presets"][values["preset"]]}
    return json.dumps(values, sort_keys=True)


def shard_rows(wildcards):
    """The manifest rows of the shard; as a param, editing, adding or removing a row reruns its
    shard only. Empty optional columns are left out, so a new optional column reruns only the
    shards with rows that fill it."""
    rows = [
        {key: value for key, value in ROWS[clip].__dict__.items() if value is not None}
        for clip in SHARDS[wildcards.shard]
    ]
    return json.dumps(rows, sort_keys=True)


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


def cache_of(split):
    """The files of a split's motion cache (what training and evaluation read)."""
    return [MOTION_CACHE[split] + ext for ext in CACHE_EXTS]


def loss_syncers(levels):
    return expand("models/syncers/loss/level{level}.pt", level=levels)


def render_args(render_targets):
    """--videos / --render-metrics for whichever of the render outputs exist as targets."""
    flags = {"results/videos": "--videos", "results/render/metrics.json": "--render-metrics"}
    return " ".join(f"{flags[t]} {t}" for t in render_targets if t in flags)
