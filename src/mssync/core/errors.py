"""One small exception family, so the CLI can turn any expected failure into one clear line."""


class MssyncError(Exception):
    """An expected failure with a message that says what was wrong and what to do."""


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
