"""params.yaml loading and validation, and the typed settings each stage reads.

The schema in workflow/schemas is the single source of truth for what is valid; the
dataclasses here only give the stages typed, named access to an already-validated section.
Every command gets its settings one way, `load_section`: Snakemake passes each section as JSON
(`--<section>-settings`), so that Snakemake's params rerun-trigger sees exactly the values a rule
depends on; by hand, the section is read from a params file (`--params`, default params.yaml).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mssync.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"
PARAMS_SCHEMA = SCHEMA_DIR / "params.schema.yaml"
MANIFEST_SCHEMA = SCHEMA_DIR / "manifest.schema.yaml"


def validate_params(params: dict[str, Any], schema: Path = PARAMS_SCHEMA, source: str = "params.yaml") -> None:
    """Validate a whole params file with snakemake's jsonschema helper; re-raise naming the offending
    key (one section alone is checked by load_section)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(params, str(schema), set_default=False)
    except WorkflowError as exc:
        raise ConfigError(_explain_validation_error(exc, source)) from None
    check_chosen_presets(params, source)


def _explain_validation_error(exc: Exception, source: str = "params.yaml") -> str:
    """Turn a jsonschema ValidationError (wrapped by snakemake) into 'key.path: problem'."""
    cause = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and not hasattr(cause, "absolute_path") and seen < 5:
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if cause is not None and hasattr(cause, "absolute_path"):
        key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
        return f"{source}: invalid value at '{key}': {cause.message}"
    return f"{source} is invalid: {exc}"


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        with path.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate_params(params, source=str(path))
    return params


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    mirror_dir: str | None
    cache_dir: str
    retries: int
    backoff_s: float
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class ShardSettings:
    size: int  # mean clips per shard at most: sets the shard count (mssync.data.shards)


@dataclasses.dataclass(frozen=True)
class LandmarkerSettings:
    model: str
    min_detection_confidence: float
    min_presence_confidence: float
    min_tracking_confidence: float


@dataclasses.dataclass(frozen=True)
class CropSettings:
    size: int
    fps: int
    sample_rate: int
    probe_frames: int
    max_faces: int
    box_scale: float
    box_shift_y: float
    min_duration_s: float
    min_face_fraction: float
    multi_face_fraction: float
    second_face_ratio: float
    min_audio_rms_db: float
    video_crf: int
    x264_preset: str
    max_av_duration_mismatch_s: float


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    n_mels: int
    hop_ms: int
    win_ms: float
    n_fft: int
    fmin: float
    fmax: float
    preemphasis: float


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    seed: int
    val_fraction: float
    test_fraction: float
    min_face_fraction: float


@dataclasses.dataclass(frozen=True)
class CrossvalSettings:
    """Speaker-disjoint cross-validation (workflow/rules/crossval.smk, mssync.evaluation.crossval)."""

    folds: int
    seeds: list[int]  # generator seeds trained per fold (gan.seed replaced)
    seed: int  # speaker -> fold hash seed
    val_fraction: float  # inner validation: this share of the training folds' speakers
    variants: dict[str, dict]  # generators beyond MS-Sync and the ablations: name -> gan overrides
    bootstrap_samples: int
    interval: float  # e.g. 0.95


@dataclasses.dataclass(frozen=True)
class PreviewSettings:
    frames: int


@dataclasses.dataclass(frozen=True)
class MotionSettings:
    expression_components: int
    smooth_frames: int
    max_gap_frames: int
    fit_max_frames: int  # the space is fitted on a uniform sample of at most this many train frames
    fit_seed: int


@dataclasses.dataclass(frozen=True)
class PyramidSettings:
    kernel: int
    levels: list[int]


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    size: int
    border_points: int
    mouth_fill: bool
    mouth_open_px: float
    mouth_ramp_px: float
    teeth_fraction: float
    landmark_view: bool
    still: bool
    head_scale: float
    expression_scale: float
    seed: int
    min_audio_s: float
    crf: int
    encoder_preset: str
    audio_bitrate: str
    sheet_frames: int
    fidelity_stride: int


S = TypeVar("S")

SECTIONS: dict[str, type] = {
    "shards": ShardSettings,
    "download": DownloadSettings,
    "landmarker": LandmarkerSettings,
    "crop": CropSettings,
    "features": FeatureSettings,
    "dataset": DatasetSettings,
    "crossval": CrossvalSettings,
    "preview": PreviewSettings,
    "motion": MotionSettings,
    "pyramid": PyramidSettings,
    "render": RenderSettings,
}


def settings_from_mapping(cls: type[S], values: dict[str, Any]) -> S:
    """Build a settings object; unknown or missing keys are configuration errors."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    missing = sorted(names - set(values))
    if unknown or missing:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return cls(**values)


def load_section(section: str | type[S], settings_json: str | None, params_path: str | Path | None) -> S:
    """The one way a command gets its settings: one params.yaml section, from `--<section>-settings
    JSON` (what Snakemake passes, so its params rerun-trigger sees exactly these values) or from a
    params file, validated against the schema, as a typed settings object.

    `section` is a core section's name, or a later phase's settings class: one that names its
    section in `SECTION` and builds itself with `from_params(values)` (syncers, gan, evaluation)."""
    cls = SECTIONS[section] if isinstance(section, str) else section
    name = section if isinstance(section, str) else cls.SECTION
    if settings_json:
        try:
            values = json.loads(settings_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--{name}-settings is not valid JSON: {exc}") from None
        source = f"--{name}-settings"
        _validate_section(name, values, source)
    else:
        path = Path(params_path or "params.yaml")
        if not path.is_file():
            raise ConfigError(f"{path}: no such params file")
        source = str(path)
        values = copy.deepcopy(_validated_params(path, path.resolve(), path.stat().st_mtime_ns)[name])
    check_chosen_presets({name: values}, source)
    builder = getattr(cls, "from_params", None)
    return builder(values) if builder is not None else settings_from_mapping(cls, values)


@lru_cache(maxsize=4)
def _validated_params(path: Path, resolved: Path, mtime_ns: int) -> dict[str, Any]:
    """load_params, once per file version: a command reading several sections validates once.
    Cached by the resolved path; errors name `path` as the user gave it."""
    return load_params(path)


@lru_cache(maxsize=1)
def params_schema() -> dict[str, Any]:
    """workflow/schemas/params.schema.yaml as a mapping (read once per process; do not modify it)."""
    with PARAMS_SCHEMA.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _validate_section(section: str, values: Any, source: str = "settings") -> None:
    """Check one section alone against its definition in the full schema."""
    import jsonschema

    full = params_schema()
    schema = {**full["properties"][section], "$defs": full.get("$defs", {})}  # presets refer to $defs
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(values))
    if error is not None:
        key = ".".join([section, *(str(p) for p in error.absolute_path)])
        raise ConfigError(f"{source}: invalid value at '{key}': {error.message}")


def check_chosen_presets(params: dict[str, Any], source: str = "params.yaml") -> None:
    """syncers.preset and gan.preset must name listed presets (the schema cannot say that); an error
    names `source`, the file (or option) the values came from."""
    for section in ("syncers", "gan"):
        chosen = params.get(section)  # absent when a rule validates only its own section
        if chosen and chosen["preset"] not in chosen["presets"]:
            raise ConfigError(f"{source}: invalid value at '{section}.preset': {chosen['preset']!r} is not one of "
                              f"{sorted(chosen['presets'])}")
