"""The Parquet contract: versioned key-value metadata and nested fixed-size float32 list columns."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mssync.core.errors import MssyncError, SchemaVersionError
from mssync.features.schema import (
    SCHEMA_VERSION,
    decode_metadata,
    encode_metadata,
    features_table,
    list_column_to_numpy,
    nested_list,
    read_metadata,
    read_table,
    write_table,
)


def small_features(n: int = 5, n_mels: int = 26, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        landmarks=rng.random((n, 478, 3), dtype=np.float32),
        pose=rng.random((n, 4, 4), dtype=np.float32),
        blendshapes=rng.random((n, 52), dtype=np.float32),
        face_found=np.array([True, False, True, True, False][:n] + [True] * max(0, n - 5)),
        mel=rng.normal(size=(n, 4, n_mels)).astype(np.float32),
    )


def test_write_read_round_trip(tmp_path):
    arrays = small_features()
    table = features_table("c1", 25, metadata={"fps": 25, "n_mels": 26, "names": ["a", "b"]}, **arrays)
    path = tmp_path / "c1.parquet"
    write_table(path, table)
    assert [p.name for p in tmp_path.iterdir()] == ["c1.parquet"]  # no temporary file left
    read, meta = read_table(path)
    assert meta == {"schema_version": SCHEMA_VERSION, "fps": 25, "n_mels": 26, "names": ["a", "b"]}
    assert read.column("frame").to_pylist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(read.column("time_s").to_numpy(), np.arange(5) / 25)
    for name in ("landmarks", "pose", "blendshapes", "mel"):
        np.testing.assert_array_equal(list_column_to_numpy(read.column(name)), arrays[name])
    np.testing.assert_array_equal(read.column("face_found").to_numpy(zero_copy_only=False), arrays["face_found"])


def write_with_version(path, version) -> None:
    table = pa.table({"frame": pa.array([0, 1], pa.int32())})
    meta = {b"mssync.fps": b"25"}
    if version is not None:
        meta[b"mssync.schema_version"] = json.dumps(version).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


@pytest.mark.parametrize("version", [999, 0, "1", None])
def test_unknown_schema_version_is_refused_naming_the_file(tmp_path, version):
    path = tmp_path / f"future-{version}.parquet"
    write_with_version(path, version)
    with pytest.raises(SchemaVersionError) as info:
        read_table(path)
    assert str(path) in str(info.value)
    assert repr(version) in str(info.value)
    assert isinstance(info.value, MssyncError)  # the CLI turns it into one line
    with pytest.raises(SchemaVersionError):
        read_metadata(path)


def test_known_schema_version_is_read(tmp_path):
    path = tmp_path / "ok.parquet"
    write_with_version(path, SCHEMA_VERSION)
    table, meta = read_table(path)
    assert table.num_rows == 2 and meta == {"schema_version": SCHEMA_VERSION, "fps": 25}


@pytest.mark.parametrize("shape", [(7, 3), (7, 478, 3), (7, 4, 4), (7, 4, 26), (7, 2, 3, 5), (0, 4, 26)])
def test_list_column_to_numpy_round_trips_nested_fixed_size_lists(shape):
    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 7
    array = nested_list(values)
    assert len(array) == shape[0]
    inner = array.type
    for dim in shape[1:]:
        assert pa.types.is_fixed_size_list(inner) and inner.list_size == dim
        inner = inner.value_type
    assert inner == pa.float32()
    out = list_column_to_numpy(array)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(out, values)


def test_list_column_to_numpy_on_chunked_and_sliced_columns(tmp_path):
    values = np.random.default_rng(1).random((10, 4, 3), dtype=np.float32)
    chunked = pa.chunked_array([nested_list(values[:4]), nested_list(values[4:])])
    np.testing.assert_array_equal(list_column_to_numpy(chunked), values)
    np.testing.assert_array_equal(list_column_to_numpy(nested_list(values).slice(3, 5)), values[3:8])
    # and through a Parquet file written in several row groups
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"x": nested_list(values)}), path, row_group_size=3)
    np.testing.assert_array_equal(list_column_to_numpy(pq.read_table(path).column("x")), values)


def test_inconsistent_shapes_are_refused():
    arrays = small_features()
    arrays["pose"] = arrays["pose"][:4]
    with pytest.raises(MssyncError, match="inconsistent feature shapes"):
        features_table("c1", 25, metadata={}, **arrays)


def test_metadata_encoding_round_trips():
    meta = {"fps": 25, "hop_ms": 10, "mel_fmax": 8000.0, "names": ["x"], "speaker": None}
    encoded = encode_metadata(meta)
    assert all(k.startswith(b"mssync.") for k in encoded)
    assert decode_metadata({**encoded, b"pandas": b"{}"}) == {"schema_version": SCHEMA_VERSION, **meta}
