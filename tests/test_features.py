"""Features stage: per-frame landmarks/pose/blendshapes + owned log-mel frames, in one Parquet file.

The integration tests crop ~3 s of a real clip once (module fixture) and run the real MediaPipe
landmarker over it. The alignment tests check the one rule of schema.py on a real signal.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from helpers import MODEL_PATH, crop_sample, requires_clips

from mssync.core.errors import MssyncError
from mssync.core.records import REJECTED, read_record
from mssync.features.features import extract_features, owned_mel
from mssync.features.schema import (
    SCHEMA_VERSION,
    audio_frames_per_video_frame,
    list_column_to_numpy,
    owned_audio_frames,
    read_table,
)
from mssync.media.audio import log_mel
from mssync.media.ffmpeg import read_wav
from mssync.media.landmarks import model_sha256

CLIP = "vox2-00010"
MODEL_SHA256 = "81121f0527e9b71660e53bd7f4bd94b3795c5ed7de6f42ebd601fc3e95febe28"  # shared/models/README.md
COLUMNS = ["clip_id", "frame", "time_s", "face_found", "landmarks", "pose", "blendshapes", "mel"]


# --------------------------------------------------------------------------- real clip, once


@pytest.fixture(scope="module")
def cropped(tmp_path_factory, sample_clip, crop_settings, landmarker_settings):
    """(crop record path, record) for the first 3 s of a real talking head."""
    tmp = tmp_path_factory.mktemp("features-crop")
    record, out_dir = crop_sample(tmp, "talk", sample_clip(CLIP), crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 3})
    assert record["status"] == "ok", record.get("reason")
    return out_dir / "talk.json", record


@pytest.fixture(scope="module")
def features(cropped, tmp_path_factory, feature_settings, landmarker_settings):
    """(parquet path, returned metadata) of extract_features on the crop, default settings."""
    record_path, _ = cropped
    out = tmp_path_factory.mktemp("features") / "talk.parquet"
    meta = extract_features(crop_record=record_path, out=out, settings=feature_settings, landmarker=landmarker_settings)
    return out, meta


@requires_clips
@pytest.mark.integration
def test_one_row_per_video_frame_with_the_contract_columns(cropped, features):
    _, record = cropped
    path, _ = features
    table, meta = read_table(path)
    n = record["output"]["frames"]
    assert n == 75
    assert table.num_rows == n
    assert table.column_names == COLUMNS
    assert table.column("clip_id").to_pylist() == ["talk"] * n
    assert table.column("frame").to_pylist() == list(range(n))
    np.testing.assert_allclose(table.column("time_s").to_numpy(), np.arange(n) / 25)

    landmarks = list_column_to_numpy(table.column("landmarks"))
    pose = list_column_to_numpy(table.column("pose"))
    blendshapes = list_column_to_numpy(table.column("blendshapes"))
    mel = list_column_to_numpy(table.column("mel"))
    assert landmarks.shape == (n, 478, 3) and landmarks.dtype == np.float32
    assert pose.shape == (n, 4, 4) and pose.dtype == np.float32
    assert blendshapes.shape == (n, 52) and blendshapes.dtype == np.float32
    assert mel.shape == (n, 4, 26) and mel.dtype == np.float32

    # a real talking head: a face on every frame, with sane values
    face_found = table.column("face_found").to_numpy(zero_copy_only=False)
    assert face_found.dtype == bool and face_found.all()
    assert np.isfinite(landmarks).all() and np.isfinite(pose).all() and np.isfinite(blendshapes).all()
    xy = landmarks[..., :2]
    assert xy.min() >= 0.0 and xy.max() <= 1.0  # the box holds the whole face
    assert ((blendshapes >= 0) & (blendshapes <= 1)).all()
    np.testing.assert_allclose(pose[:, 3], np.tile([0, 0, 0, 1], (n, 1)), atol=1e-5)  # affine transforms
    assert np.isfinite(mel).all() and mel.max() > -100.0  # the crop kept the speech
    assert meta["face_fraction"] == 1.0


@requires_clips
@pytest.mark.integration
def test_metadata_says_how_the_file_was_made(features, feature_settings):
    path, returned = features
    meta = read_table(path)[1]
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["fps"] == 25
    assert meta["sample_rate"] == 16000
    assert meta["hop_ms"] == 10 and meta["hop_length"] == 160
    assert meta["n_mels"] == 26
    assert meta["audio_frames_per_frame"] == 4
    assert meta["landmarker_sha256"] == model_sha256(str(MODEL_PATH)) == MODEL_SHA256
    assert isinstance(meta["mssync_version"], str) and meta["mssync_version"]
    assert len(meta["blendshape_names"]) == 52 and meta["blendshape_names"][0] == "_neutral"
    assert meta["clip_id"] == "talk" and meta["speaker"] == "talk"
    assert {k: v for k, v in meta.items() if k != "schema_version"} == returned
    # the key-value metadata is stored under the mssync. prefix, as JSON
    raw = pq.read_schema(path).metadata
    assert raw[b"mssync.schema_version"] == str(SCHEMA_VERSION).encode()


@requires_clips
@pytest.mark.integration
def test_mel_in_the_file_is_the_owned_mel_of_the_wav(cropped, features, feature_settings):
    record_path, record = cropped
    table, _ = read_table(features[0], columns=["mel"])
    samples, rate = read_wav(record_path.parent / record["output"]["audio"])
    n = record["output"]["frames"]
    assert len(samples) == n * 640
    expected = log_mel(samples, rate, feature_settings)[: 4 * n].reshape(n, 4, 26)
    np.testing.assert_array_equal(list_column_to_numpy(table.column("mel")), expected)


@requires_clips
@pytest.mark.integration
def test_n_mels_setting_changes_the_mel_shape(cropped, tmp_path, feature_settings, landmarker_settings):
    record_path, record = cropped
    settings = dataclasses.replace(feature_settings, n_mels=40)
    meta = extract_features(crop_record=record_path, out=tmp_path / "talk40.parquet", settings=settings, landmarker=landmarker_settings)
    table, _ = read_table(tmp_path / "talk40.parquet", columns=["mel"])
    assert list_column_to_numpy(table.column("mel")).shape == (record["output"]["frames"], 4, 40)
    assert meta["n_mels"] == 40


@requires_clips
@pytest.mark.integration
def test_rejected_crop_record_is_refused(tmp_path, sample_clip, crop_settings, landmarker_settings,
                                         feature_settings):
    record, out_dir = crop_sample(tmp_path, "short", sample_clip(CLIP), crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 1})
    assert record["status"] == REJECTED
    out = tmp_path / "short.parquet"
    with pytest.raises(MssyncError, match="rejected at the crop stage"):
        extract_features(crop_record=out_dir / "short.json", out=out, settings=feature_settings, landmarker=landmarker_settings)
    assert not out.exists()


def test_wav_at_another_rate_than_the_record_is_refused(tmp_path, feature_settings, landmarker_settings):
    soundfile.write(tmp_path / "c.wav", np.zeros(75 * 441 * 4, np.float32), 44100, subtype="PCM_16")
    from mssync.core.records import write_record

    write_record(tmp_path / "c.json", "c", "crop", "ok", output={
        "video": "c.mp4", "audio": "c.wav", "size": 256, "fps": 25, "sample_rate": 16000, "frames": 75})
    with pytest.raises(MssyncError, match="44100 Hz"):
        extract_features(crop_record=tmp_path / "c.json", out=tmp_path / "c.parquet", settings=feature_settings, landmarker=landmarker_settings)
    assert read_record(tmp_path / "c.json")["status"] == "ok"


# --------------------------------------------------------------------------- the alignment rule


def test_audio_frames_per_video_frame():
    assert audio_frames_per_video_frame(25, 10) == 4
    assert audio_frames_per_video_frame(25, 20) == 2
    assert audio_frames_per_video_frame(25, 40) == 1
    assert audio_frames_per_video_frame(50, 10) == 2
    for fps, hop in ((25, 15), (25, 80), (30, 10)):
        with pytest.raises(MssyncError, match="does not divide"):
            audio_frames_per_video_frame(fps, hop)


def test_owned_audio_frames():
    assert owned_audio_frames(0, 4) == slice(0, 4)
    assert owned_audio_frames(10, 4) == slice(40, 44)
    covered = np.concatenate([np.arange(100)[owned_audio_frames(t, 4)] for t in range(25)])
    np.testing.assert_array_equal(covered, np.arange(100))  # consecutive, no gap, no overlap


def test_owned_mel_shape_and_too_little_audio(feature_settings):
    samples = np.random.default_rng(0).normal(0, 0.1, 25 * 640).astype(np.float32)
    assert owned_mel(samples, 16000, 25, 4, feature_settings).shape == (25, 4, 26)
    with pytest.raises(MssyncError, match="fewer than"):
        owned_mel(samples[: 20 * 640], 16000, 25, 4, feature_settings)


def test_tone_burst_at_frame_10_lands_in_frame_10s_mel_frames(tmp_path, feature_settings):
    """A 1 kHz tone starts exactly at video frame 10 (t = 0.4 s) after digital silence.

    Mel frame j is centred at j * 10 ms with a 25 ms window (+-12.5 ms), so the frames video
    frame 10 owns (40..43, centred at 400..430 ms) all hear the tone; mel frame 40 only half of
    its window, hence a few dB lower. Frames 36..38 (frame 9, centred at 360..380 ms, windows
    ending by 392.5 ms) hear nothing. Frame 39 (frame 9's last, window 377.5..402.5 ms) catches
    the first 2.5 ms of the tone at the far tail of its Hann window: a small spill, documented
    here and required to stay far below the tone (> 30 dB under frame 10's level).
    """
    sr, fps, n = 16000, 25, 25
    t = np.arange(n * 640) / sr
    samples = np.where(t >= 0.4, 0.5 * np.sin(2 * np.pi * 1000 * (t - 0.4)), 0.0).astype(np.float32)
    assert np.flatnonzero(samples)[0] in (6400, 6401)  # sin(0) = 0 at the exact onset sample
    # through a real 16-bit wav, as the crop stage writes it
    soundfile.write(tmp_path / "burst.wav", samples, sr, subtype="PCM_16")
    samples, rate = read_wav(tmp_path / "burst.wav")

    k = audio_frames_per_video_frame(fps, feature_settings.hop_ms)
    mel = owned_mel(samples, rate, n, k, feature_settings)  # (25, 4, 26)
    level = mel.max(axis=2)  # (25, 4): loudest band per mel frame, dB
    silence, loud = level[:9].max(), level[11:].min()
    assert loud - silence > 60

    assert level[9, :3].max() <= silence + 1  # frame 9 before its last mel frame: silent
    assert level[9, 3] < level[10].max() - 30  # the centred window's spill: small
    assert level[10].min() > loud - 6  # all four of frame 10's mel frames hear the tone
    assert level[10, 1:].min() == pytest.approx(loud, abs=1)  # 41..43 fully inside the tone

    # the same through the project's slice rule
    flat = log_mel(samples, rate, feature_settings)
    np.testing.assert_array_equal(flat[owned_audio_frames(10, k)], mel[10])
