"""The Parquet contract between stages: columns, key-value metadata, and audio/video alignment.

One row per video frame. Fixed-size list columns of float32 keep each frame's arrays together
and let readers reshape without copying element by element.

Audio/video alignment, stated once for the whole project: at `fps` video frames per second and
an audio hop of `hop_ms`, every video frame owns k = (1000 / fps) / hop_ms consecutive audio
frames; video frame t owns audio frames [k*t, k*t + k). At 25 fps and 10 ms, k = 4. Audio frame
j is centred at j * hop_ms (librosa's centred STFT), so frame t's audio is centred on its own
40 ms (each window reaches half a window, 12.5 ms, beyond it at either end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mssync.core.atomic import atomic_path
from mssync.core.errors import MssyncError, SchemaVersionError
from mssync.core.integrity import REBUILD, read_or_move_aside
from mssync.media.mesh import N_BLENDSHAPES, N_LANDMARKS

SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = {1}
META_PREFIX = "mssync."


def audio_frames_per_video_frame(fps: int, hop_ms: int) -> int:
    """k in the alignment rule above; the frame period must be a whole number of hops."""
    frame_ms = 1000 / fps
    k = frame_ms / hop_ms
    if abs(k - round(k)) > 1e-9 or round(k) < 1:
        raise MssyncError(f"audio hop {hop_ms} ms does not divide the {frame_ms:g} ms video frame at {fps} fps")
    return int(round(k))


def owned_audio_frames(t: int, k: int) -> slice:
    """The audio frames video frame t owns."""
    return slice(k * t, k * t + k)


def nested_list(values: np.ndarray) -> pa.Array:
    """(N, a, b, ...) float32 -> nested fixed-size list array of N rows."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    array: pa.Array = pa.array(values.reshape(-1))
    for dim in reversed(values.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, dim)
    return array


def list_column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Inverse of nested_list: a nested fixed-size list column -> (N, a, b, ...) float32."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(array)]
    while pa.types.is_fixed_size_list(array.type):
        shape.append(array.type.list_size)
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def features_table(
    clip_id: str,
    fps: int,
    landmarks: np.ndarray,  # (N, 478, 3)
    pose: np.ndarray,  # (N, 4, 4)
    blendshapes: np.ndarray,  # (N, 52)
    face_found: np.ndarray,  # (N,)
    mel: np.ndarray,  # (N, k, n_mels)
    metadata: dict[str, Any],
) -> pa.Table:
    n = len(face_found)
    if not (landmarks.shape == (n, N_LANDMARKS, 3) and pose.shape == (n, 4, 4)
            and blendshapes.shape == (n, N_BLENDSHAPES) and mel.shape[0] == n and mel.ndim == 3):
        raise MssyncError(f"{clip_id}: inconsistent feature shapes for {n} frames")
    frames = np.arange(n, dtype=np.int32)
    table = pa.table({
        "clip_id": pa.array([clip_id] * n, pa.string()),
        "frame": pa.array(frames),
        "time_s": pa.array(frames / fps, pa.float64()),
        "face_found": pa.array(face_found.astype(bool)),
        "landmarks": nested_list(landmarks),
        "pose": nested_list(pose),
        "blendshapes": nested_list(blendshapes),
        "mel": nested_list(mel),
    })
    return table.replace_schema_metadata(encode_metadata(metadata))


def encode_metadata(metadata: dict[str, Any]) -> dict[bytes, bytes]:
    meta = {"schema_version": SCHEMA_VERSION, **metadata}
    return {f"{META_PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in meta.items()}


def decode_metadata(raw: dict[bytes, bytes] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        name = key.decode()
        if name.startswith(META_PREFIX):
            out[name[len(META_PREFIX):]] = json.loads(value.decode())
    return out


def write_table(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_clip_tables(path: str | Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """Stream per-clip tables into one Parquet file (a row group per clip, or more for a very long
    one), holding one clip in memory at a time: a split of any size costs the memory of its
    largest clip, not of the split."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.replace_schema_metadata(schema.metadata))


def iter_clip_tables(path: str | Path, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(clip id, its rows) for each clip of a split file, in file order, reading one row group at a
    time. A clip's rows are contiguous in every split the dataset stage writes (checked)."""
    path = Path(path)
    read_metadata(path)  # schema version; a damaged footer is moved aside
    parquet = read_or_move_aside(path, pq.ParquetFile, REBUILD)
    wanted = None if columns is None else list(dict.fromkeys(["clip_id", *columns]))
    done: set[str] = set()
    current, parts = None, []
    for index in range(parquet.num_row_groups):
        group = read_or_move_aside(path, lambda _: parquet.read_row_group(index, columns=wanted), REBUILD)
        ids = np.asarray(group.column("clip_id").to_pylist(), dtype=object)
        cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
        for start, stop in zip(cuts, cuts[1:]):
            clip_id = str(ids[start])
            if clip_id != current:
                if current is not None:
                    done.add(current)
                    yield current, pa.concat_tables(parts)
                if clip_id in done:
                    raise MssyncError(f"{path}: the rows of clip {clip_id} are not contiguous; re-run the dataset stage")
                current, parts = clip_id, []
            parts.append(group.slice(start, stop - start))
    if current is not None:
        yield current, pa.concat_tables(parts)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The file's metadata (its footer only); a file that cannot be parsed is moved aside (DamagedFile)."""
    meta = read_or_move_aside(Path(path), lambda p: decode_metadata(pq.read_schema(p).metadata), REBUILD)
    _check_version(path, meta)
    return meta


def read_table(path: str | Path, columns: list[str] | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Read a features/dataset file, refusing schema versions this code does not know."""
    meta = read_metadata(path)
    return read_or_move_aside(Path(path), lambda p: pq.read_table(p, columns=columns), REBUILD), meta


def _check_version(path: str | Path, meta: dict[str, Any]) -> None:
    version = meta.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise SchemaVersionError(
            f"{path}: schema version {version!r} is not one this mssync understands "
            f"({sorted(KNOWN_SCHEMA_VERSIONS)}); re-run the features stage"
        )
