"""Splits are written and read one clip at a time, and the motion space is fitted on a bounded
uniform sample of frames: memory follows the largest clip and motion.fit_max_frames, not the corpus."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mssync.core.errors import MssyncError
from mssync.features.schema import encode_metadata, features_table, iter_clip_tables, write_clip_tables
from mssync.motion.clips import iter_clips
from mssync.motion.motion_space import sample_face_frames


def _clip_table(clip_id: str, frames: int, value: float, face_every: int = 1) -> pa.Table:
    landmarks = np.full((frames, 478, 3), value, np.float32) + np.arange(frames, dtype=np.float32)[:, None, None]
    found = np.arange(frames) % face_every == 0
    meta = {"clip_id": clip_id, "fps": 25}
    return features_table(clip_id, 25, landmarks, np.zeros((frames, 4, 4)), np.zeros((frames, 52)), found,
                          np.zeros((frames, 4, 8)), meta)


def _split(tmp_path, clips: list[tuple[str, int, int]]) -> tuple:
    tables = [_clip_table(c, n, i * 1000.0, every) for i, (c, n, every) in enumerate(clips)]
    schema = tables[0].schema.with_metadata(encode_metadata({"split": "train"}))
    path = tmp_path / "train.parquet"
    write_clip_tables(path, schema, iter(tables))
    return path, tables


def test_a_split_is_written_a_clip_per_row_group_and_read_back_clip_by_clip(tmp_path):
    path, tables = _split(tmp_path, [("a", 30, 1), ("b", 7, 1), ("c", 12, 1)])
    assert pq.ParquetFile(path).num_row_groups == 3
    read = list(iter_clip_tables(path))
    assert [clip for clip, _ in read] == ["a", "b", "c"]
    assert all(t.num_rows == n for (_, t), n in zip(read, (30, 7, 12)))
    clips = dict(iter_clips(path, ["landmarks"]))
    assert np.array_equal(clips["b"]["landmarks"][:, 0, 0], 1000.0 + np.arange(7))


def test_a_split_whose_clip_rows_are_not_together_is_refused(tmp_path):
    tables = [_clip_table("a", 5, 0), _clip_table("b", 5, 1), _clip_table("a", 5, 2)]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.concat_tables(t.replace_schema_metadata(encode_metadata({})) for t in tables), path,
                   row_group_size=5)
    with pytest.raises(MssyncError, match="not contiguous"):
        list(iter_clip_tables(path))


def test_a_small_split_gives_every_face_frame_in_file_order(tmp_path):
    path, _ = _split(tmp_path, [("a", 30, 1), ("b", 20, 2)])
    frames, total = sample_face_frames(path, max_frames=1000, seed=0)
    assert total == 40 and len(frames) == 40
    expected = np.concatenate([np.arange(30), 1000.0 + np.arange(0, 20, 2)])
    assert np.array_equal(frames[:, 0, 0], expected)


def test_a_large_split_gives_a_bounded_uniform_sample(tmp_path):
    clips = [(f"c{i}", 100, 1) for i in range(30)]  # 3000 face frames, pruned many times on the way
    path, _ = _split(tmp_path, clips)
    frames, total = sample_face_frames(path, max_frames=200, seed=0)
    assert total == 3000 and len(frames) == 200
    clip_of = (frames[:, 0, 0] // 1000).astype(int)
    assert np.all(np.diff(frames[:, 0, 0]) > 0)  # file order, no frame twice
    assert np.bincount(clip_of, minlength=30).max() <= 20  # ~6.7 expected per clip: no clip dominates
    again, _ = sample_face_frames(path, max_frames=200, seed=0)
    other, _ = sample_face_frames(path, max_frames=200, seed=1)
    assert np.array_equal(frames, again) and not np.array_equal(frames, other)
