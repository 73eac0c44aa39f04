"""One small exception family, so the CLI can turn any expected failure into one clear line."""

from __future__ import annotations

from pathlib import Path


class MssyncError(Exception):
    """An expected failure with a message that says what was wrong and what to do."""


class SetupError(MssyncError):
    """The machine, not the clip, is at fault (a tool or model file missing): a shard job stops
    rather than rejecting every clip for it."""


class ConfigError(MssyncError):
    """params.yaml or a settings override is invalid."""


class ManifestError(MssyncError):
    """The clip manifest is malformed (bad id, duplicate id, missing column)."""


class MediaError(MssyncError):
    """ffmpeg/ffprobe could not read or write a media file."""


class ClipRejected(MssyncError):
    """A clip cannot be used; the stage records the reason instead of failing the run."""

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class SchemaVersionError(MssyncError):
    """A Parquet file was written with a schema version this code does not understand."""


class MissingArtifact(MssyncError):
    """A file the pipeline makes (a trained model, the motion space) is absent."""


def require_artifact(path: str | Path, target: str | Path | None = None) -> Path:
    """`path` if it is a file; otherwise a MissingArtifact that says which Snakemake target makes it
    (`target`, the pipeline's own path for it; default `path` itself), so a user who has not run the
    pipeline yet is told what to run instead of getting a FileNotFoundError traceback."""
    path = Path(path)
    if path.is_file():
        return path
    target = Path(target or path)
    how = f"`snakemake --cores all {target}` (or fetch it with `dvc pull`)"
    if path == target:
        raise MissingArtifact(f"{path}: no such file; make it with {how}")
    raise MissingArtifact(f"{path}: no such file; the pipeline makes {target} with {how}")
