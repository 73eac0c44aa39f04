"""Crop stage on real clips: every bad input of design.md section 9 gets its specific outcome.

Bad inputs are made from the real sample clips with the real ffmpeg (see conftest.make_clip);
the face box is placed by the real MediaPipe landmarker. Fast unit tests of the box geometry
and the face-count thresholds use synthetic landmark arrays.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import CLIPS_DIR, crop_sample, make_raw, requires_clips, run_ffmpeg, video_frame_times

from mssync.core.config import DownloadSettings
from mssync.core.errors import ClipRejected, MediaError
from mssync.core.records import OK, REJECTED, read_record, write_record
from mssync.data.crop import (
    Box,
    ProbeStats,
    Span,
    check_av_durations,
    check_faces,
    crop_clip,
    face_box,
    probe_landmarker,
    probe_stats,
    sample_faces,
)
from mssync.data.download import download_clip
from mssync.data.manifest import read_manifest
from mssync.media.ffmpeg import _frames_written, extract_audio, probe
from mssync.media.landmarks import Face
from mssync.media.mesh import N_LANDMARKS

GOOD = "vox2-00010"  # 224x224, 25 fps, 16 kHz mono, 4.24 s
OTHER = "vox2-00086"  # another speaker, same format
STEREO_48K = "address-may"  # 512x512, 48 kHz stereo
SEPARATE = "styletalk-kristinoem"  # 256x256, 30 fps, no audio track; speech in a 16 kHz wav beside it (18.02 s)
ENCODE = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


# --------------------------------------------------------------------------- helpers


def media_files(out_dir: Path, clip_id: str) -> list[str]:
    return sorted(p.name for p in out_dir.glob(f"{clip_id}.*") if p.suffix in (".mp4", ".wav"))


def leftovers(out_dir: Path) -> list[str]:
    """Temporary files (atomic writes use '.{name}.XXXX.tmp{suffix}') left in out_dir."""
    return sorted(p.name for p in out_dir.iterdir() if ".tmp" in p.name or p.name.startswith("."))


def assert_rejected(record: dict, out_dir: Path, reason: str) -> None:
    assert record["status"] == REJECTED, record
    assert record["stage"] == "crop"
    assert reason in record["reason"], record["reason"]
    assert media_files(out_dir, record["clip_id"]) == [], "a rejected clip must not leave media behind"
    assert leftovers(out_dir) == []


def assert_good_output(record: dict, out_dir: Path, crop_settings) -> tuple[int, object]:
    """256x256, exactly 25 fps CFR, frames as recorded; 16 kHz mono PCM wav of frames*640 samples."""
    assert record["status"] == OK, record.get("reason")
    output = record["output"]
    n = output["frames"]
    size, fps = crop_settings.size, crop_settings.fps
    video, audio = out_dir / output["video"], out_dir / output["audio"]

    info = probe(video)
    assert (info.width, info.height, info.rotation) == (size, size, 0)
    assert info.fps == fps and info.nominal_fps == fps and not info.variable_frame_rate
    assert not info.has_audio  # audio lives in the wav only
    times = np.array(video_frame_times(video))
    assert len(times) == n  # every frame actually decodes
    np.testing.assert_allclose(times, np.arange(n) / fps, atol=1e-3)  # constant frame rate from 0
    assert output["duration_s"] == pytest.approx(n / fps)

    wav = soundfile.info(str(audio))
    assert wav.samplerate == crop_settings.sample_rate == 16000
    assert wav.channels == 1
    assert wav.subtype == "PCM_16"
    samples_per_frame = crop_settings.sample_rate // fps
    assert samples_per_frame == 640
    assert wav.frames == n * samples_per_frame == output["samples"]
    assert output["audio_rms_dbfs"] > crop_settings.min_audio_rms_db
    assert leftovers(out_dir) == []
    return n, info


def assert_box_inside(record: dict) -> None:
    box, src = record["box"], record["source"]
    width, height = (src["height"], src["width"]) if src["rotation"] % 180 == 90 else (src["width"], src["height"])
    assert box["side"] > 0
    assert 0 <= box["x"] and box["x"] + box["side"] <= width
    assert 0 <= box["y"] and box["y"] + box["side"] <= height


# --------------------------------------------------------------------------- clips made with ffmpeg


@pytest.fixture(scope="module")
def good(sample_clip) -> Path:
    return sample_clip(GOOD)


@pytest.fixture(scope="module")
def truncated(good: Path, ffmpeg_dir: Path) -> Path:
    """The first half of a real clip's bytes (this mp4 keeps its index at the end)."""
    data = good.read_bytes()
    out = ffmpeg_dir / "truncated.mp4"
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.fixture(scope="module")
def no_audio(good: Path, make_clip) -> Path:
    return make_clip("no-audio.mp4", "-i", good, "-t", "3", "-an", "-c:v", "copy")


@pytest.fixture(scope="module")
def silent(good: Path, make_clip) -> Path:
    return make_clip("silent.mp4", "-i", good, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                     "-t", "3", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest")


@pytest.fixture(scope="module")
def no_face(make_clip) -> Path:
    return make_clip("no-face.mp4", "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=25:duration=3",
                     "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=3",
                     *ENCODE, "-c:a", "aac", "-shortest")


@pytest.fixture(scope="module")
def two_faces(good: Path, sample_clip, make_clip) -> Path:
    graph = ("[0:v]scale=224:224,trim=duration=3,setpts=PTS-STARTPTS[a];"
             "[1:v]scale=224:224,trim=duration=3,setpts=PTS-STARTPTS[b];[a][b]hstack=inputs=2[v]")
    return make_clip("two-faces.mp4", "-i", good, "-i", sample_clip(OTHER), "-filter_complex", graph,
                     "-map", "[v]", "-map", "0:a", "-t", "3", *ENCODE, "-c:a", "aac")


@pytest.fixture(scope="module")
def face_lost(good: Path, make_clip) -> Path:
    """The face is there for the first second, then the picture goes black (audio goes on)."""
    return make_clip("face-lost.mp4", "-i", good, "-t", "3",
                     "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='gte(t,1)'", *ENCODE, "-c:a", "copy")


@pytest.fixture(scope="module")
def short(good: Path, make_clip) -> Path:
    return make_clip("short.mp4", "-i", good, "-t", "1", *ENCODE, "-c:a", "aac")


@pytest.fixture(scope="module")
def fps30(good: Path, make_clip) -> Path:
    return make_clip("fps30.mp4", "-i", good, "-t", "3", "-r", "30", *ENCODE, "-c:a", "aac", "-ar", "44100", "-ac", "2")


@pytest.fixture(scope="module")
def vfr(good: Path, make_clip) -> Path:
    """30 frames 40 ms apart, then frames 66.7 ms apart: real variable frame timing."""
    return make_clip("vfr.mp4", "-i", good, "-t", "3",
                     "-vf", "setpts='if(lt(N,30),N*0.04,1.2+(N-30)*0.0667)/TB'", "-fps_mode", "vfr",
                     "-enc_time_base:v", "1/1000",  # else the encoder rounds timestamps to 1/25 s
                     *ENCODE, "-c:a", "aac")


@pytest.fixture(scope="module")
def decode_turn(good: Path, make_clip) -> int:
    """How this ffmpeg turns frames on decode for a `rotate=90` stream tag (270 with ffmpeg 5.1)."""
    tagged = make_clip("tagged.mp4", "-i", good, "-t", "0.2", "-c", "copy", "-metadata:s:v:0", "rotate=90")
    return probe(tagged).rotation


@pytest.fixture(scope="module")
def sideways(good: Path, decode_turn: int, make_clip) -> Path:
    """The stored pixels of `rotated` without the rotation tag: the face lies on its side.

    Padded to 224x320 first, so the stored frame (320x224) and the displayed one (224x320)
    differ in shape; turned against the way the decoder will turn it back.
    """
    assert decode_turn in (90, 270), f"a rotate=90 tag probes as rotation {decode_turn}"
    transpose = "transpose=1" if decode_turn == 270 else "transpose=2"  # clockwise / counter-clockwise
    return make_clip("sideways.mp4", "-i", good, "-t", "3", "-vf", f"pad=224:320:0:48,{transpose}",
                     *ENCODE, "-c:a", "copy")


@pytest.fixture(scope="module")
def rotated(sideways: Path, make_clip) -> Path:
    """A phone-style clip: pixels stored turned 90 degrees, rotation metadata turning them upright.

    ffmpeg 5.1 has no -display_rotation and drops a `rotate` tag given while re-encoding, so the
    tag is added by a stream copy. If the rotation were ignored, the face would lie on its side
    and the landmarker would find none (the `sideways` control below).
    """
    return make_clip("rotated.mp4", "-i", sideways, "-c", "copy", "-metadata:s:v:0", "rotate=90")


# --------------------------------------------------------------------------- good input


@requires_clips
@pytest.mark.integration
def test_good_clip_is_256_square_25fps_cfr_with_16k_mono_wav(tmp_path, good, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "good", good, crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 3})
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert n == 75 == math.floor(3 * crop_settings.fps)
    assert media_files(out_dir, "good") == ["good.mp4", "good.wav"]
    assert_box_inside(record)
    assert record["span"] == {"start_s": 0.0, "duration_s": 3.0}
    assert record["probe"]["face_frames"] == record["probe"]["frames"] >= crop_settings.probe_frames
    assert record["source"]["fps"] == 25 and not record["source"]["variable_frame_rate"]
    assert len(record["landmarker_sha256"]) == 64
    assert record["speaker"] == "good" and record["mssync_version"]


@requires_clips
@pytest.mark.integration
def test_trim_start_is_honoured(tmp_path, good, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "late", good, crop_settings, landmarker_settings,
                                  trim={"start_s": 1.0, "end_s": None})
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert record["span"]["start_s"] == 1.0
    assert n == math.floor((record["source"]["duration_s"] - 1.0) * crop_settings.fps + 1e-6)


@requires_clips
@pytest.mark.integration
def test_48k_stereo_becomes_16k_mono(tmp_path, sample_clip, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "stereo", sample_clip(STEREO_48K), crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 3})
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert n == 75
    assert (record["source"]["sample_rate"], record["source"]["channels"]) == (48000, 2)
    assert_box_inside(record)


@requires_clips
@pytest.mark.integration
def test_30fps_44k_stereo_becomes_25fps_16k_mono(tmp_path, fps30, crop_settings, landmarker_settings):
    source = probe(fps30)
    assert source.fps == 30
    record, out_dir = crop_sample(tmp_path, "fps30", fps30, crop_settings, landmarker_settings)
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert n == math.floor(min(source.duration_s, source.audio_duration_s) * 25 + 1e-6) == 75
    assert record["source"]["fps"] == pytest.approx(30, abs=0.01)
    assert (record["source"]["sample_rate"], record["source"]["channels"]) == (44100, 2)


@requires_clips
@pytest.mark.integration
def test_variable_frame_rate_becomes_cfr(tmp_path, vfr, crop_settings, landmarker_settings):
    source = probe(vfr)
    assert source.variable_frame_rate, f"the made clip is not VFR: {source}"
    times = np.diff(video_frame_times(vfr))
    assert times.min() == pytest.approx(0.04, abs=2e-3) and times.max() == pytest.approx(0.0667, abs=2e-3)
    record, out_dir = crop_sample(tmp_path, "vfr", vfr, crop_settings, landmarker_settings)
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert record["source"]["variable_frame_rate"] is True
    assert n == math.floor(min(source.duration_s, source.audio_duration_s) * 25 + 1e-6)


@requires_clips
@pytest.mark.integration
def test_rotated_clip_is_cropped_upright(tmp_path, rotated, sideways, crop_settings, landmarker_settings,
                                         feature_settings):
    from mssync.features.features import extract_features

    source = probe(rotated)
    assert source.rotation in (90, 270)
    assert (source.width, source.height) == (320, 224) and source.display_size == (224, 320)

    record, out_dir = crop_sample(tmp_path, "rotated", rotated, crop_settings, landmarker_settings)
    assert_good_output(record, out_dir, crop_settings)
    assert record["source"]["rotation"] in (90, 270)
    assert_box_inside(record)  # in the displayed 224x320 frame
    meta = extract_features(crop_record=out_dir / "rotated.json", out=tmp_path / "rotated.parquet", settings=feature_settings,
                            landmarker=landmarker_settings)
    assert meta["face_fraction"] > 0.9  # the landmarker finds an upright face in the output

    # control: the same pixels without the rotation tag show no usable face
    control, control_dir = crop_sample(tmp_path / "control", "sideways", sideways, crop_settings, landmarker_settings)
    assert control["status"] == REJECTED and "face" in control["reason"]


@requires_clips
@pytest.mark.integration
def test_truncated_faststart_clip_keeps_what_decodes(tmp_path, good, make_clip, crop_settings, landmarker_settings):
    """Index at the front, data cut at 60%: the header promises 4.24 s, only ~2.5 s decode."""
    faststart = make_clip("faststart.mp4", "-i", good, "-c", "copy", "-movflags", "+faststart")
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    header = probe(cut)
    record, out_dir = crop_sample(tmp_path, "cut", cut, crop_settings, landmarker_settings)
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert crop_settings.min_duration_s * crop_settings.fps <= n < header.duration_s * crop_settings.fps - 10

    # cut just after the index: the header still probes, but no frame decodes
    stub = tmp_path / "stub.mp4"
    stub.write_bytes(data[: int(len(data) * 0.05)])
    assert probe(stub).duration_s == header.duration_s
    record, out_dir = crop_sample(tmp_path / "stub", "stub", stub, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "no decodable video frames")


@requires_clips
@pytest.mark.integration
def test_8k_audio_is_upsampled_to_16k(tmp_path, good, make_clip, crop_settings, landmarker_settings):
    narrow = make_clip("8k.mp4", "-i", good, "-t", "2.5", "-c:v", "copy", "-c:a", "aac", "-ar", "8000")
    record, out_dir = crop_sample(tmp_path, "narrow", narrow, crop_settings, landmarker_settings)
    n, _ = assert_good_output(record, out_dir, crop_settings)
    assert record["source"]["sample_rate"] == 8000
    assert n == math.floor(min(probe(narrow).duration_s, probe(narrow).audio_duration_s) * 25 + 1e-6)


# --------------------------------------------------------------------------- audio/video sync

FLASH_S = 1.0  # a green square in the top left corner from 1.0 s to 1.2 s of the video stream
BEEP_S = 0.2  # beep length


@pytest.fixture(scope="module")
def flash_video(good: Path, make_clip) -> Path:
    box = f"drawbox=x=0:y=0:w=40:h=40:color=0x00FF00:t=fill:enable='between(t,{FLASH_S},{FLASH_S + BEEP_S})'"
    return make_clip("flash.mp4", "-i", good, "-t", "4", "-an", "-vf", box, *ENCODE)


def beep_wav(path: Path, start_s: float, duration_s: float = 4.0, rate: int = 16000) -> Path:
    t = np.arange(int(duration_s * rate)) / rate
    on = (t >= start_s) & (t < start_s + BEEP_S)
    soundfile.write(path, np.where(on, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32), rate,
                    subtype="PCM_16")
    return path


def flash_and_beep_times(record: dict, out_dir: Path) -> tuple[float, float]:
    """When the green square first shows in the cropped video, and when the beep starts in the wav."""
    from mssync.media.ffmpeg import iter_frames

    size = record["output"]["size"]
    green = [float((f[:16, :16, 1].astype(int) - f[:16, :16, [0, 2]].mean(axis=2)).mean())
             for f in iter_frames(out_dir / record["output"]["video"], (size, size))]
    samples, rate = soundfile.read(str(out_dir / record["output"]["audio"]), dtype="float32")
    flash = np.flatnonzero(np.array(green) > 100)
    beep = np.flatnonzero(np.abs(samples) > 0.1)
    assert flash.size and beep.size, "flash or beep missing from the crop"
    return flash[0] / record["output"]["fps"], beep[0] / rate


@requires_clips
@pytest.mark.integration
@pytest.mark.parametrize(
    "video_delay_s, audio_delay_s",
    [
        (0.0, 0.0),
        (0.5, 0.0),  # video stream starts 0.5 s into the timeline: the span starts with it
        (0.0, 0.5),  # audio stream starts late: the span starts when both have begun
    ],
    ids=["same-start", "video-starts-late", "audio-starts-late"],
)
def test_audio_and_video_stay_in_sync(tmp_path, flash_video, make_clip, crop_settings, landmarker_settings,
                                      video_delay_s, audio_delay_s):
    """A flash and a beep that a player shows at the same moment stay together after the crop.

    The source streams may start at different times (`-itsoffset`): a player aligns them on
    their timestamps, so the crop must too, or every feature downstream is out of sync.
    """
    beep_at = FLASH_S + video_delay_s - audio_delay_s  # position in the audio stream
    wav = beep_wav(tmp_path / "beep.wav", beep_at)
    src = tmp_path / "src.mp4"
    run_ffmpeg("-itsoffset", str(video_delay_s), "-i", flash_video, "-itsoffset", str(audio_delay_s), "-i", wav,
               "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", src)
    record, out_dir = crop_sample(tmp_path, "sync", src, crop_settings, landmarker_settings)
    assert record["status"] == OK, record.get("reason")
    assert (record["box"]["x"], record["box"]["y"]) == (0, 0), "the corner flash must be inside the crop"
    flash_t, beep_t = flash_and_beep_times(record, out_dir)
    assert beep_t == pytest.approx(flash_t, abs=0.045), f"beep at {beep_t:.3f} s, flash at {flash_t:.3f} s"


# --------------------------------------------------------------------------- bad input: rejections


@requires_clips
@pytest.mark.integration
def test_truncated_mp4_is_rejected_as_corrupt(tmp_path, truncated, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "trunc", truncated, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "corrupt or unreadable")


@requires_clips
@pytest.mark.integration
def test_video_without_audio_is_rejected(tmp_path, no_audio, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "mute", no_audio, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "no audio track")
    assert record["source"]["audio_codec"] is None


@requires_clips
@pytest.mark.integration
def test_silent_audio_is_rejected(tmp_path, silent, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "silent", silent, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "silent audio")
    assert record["probe"]["face_frames"] > 0  # it got as far as the audio check


@pytest.mark.integration
def test_no_face_is_rejected(tmp_path, no_face, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "pattern", no_face, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "no face found")
    assert record["probe"]["face_frames"] == 0


@requires_clips
@pytest.mark.integration
def test_several_faces_are_rejected(tmp_path, two_faces, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "two", two_faces, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "several faces")
    assert record["probe"]["max_faces"] >= 2


@requires_clips
@pytest.mark.integration
def test_face_lost_mid_clip_is_rejected(tmp_path, face_lost, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "lost", face_lost, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "too little usable footage")
    assert 0 < record["probe"]["face_frames"] < crop_settings.min_face_fraction * record["probe"]["frames"]


@requires_clips
@pytest.mark.integration
def test_very_short_clip_is_rejected(tmp_path, short, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "short", short, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "too short")


@requires_clips
@pytest.mark.integration
def test_trim_shorter_than_minimum_is_rejected(tmp_path, good, crop_settings, landmarker_settings):
    record, out_dir = crop_sample(tmp_path, "trimmed", good, crop_settings, landmarker_settings,
                                  trim={"start_s": 1.0, "end_s": 2.5})
    assert_rejected(record, out_dir, "too short")


@requires_clips
@pytest.mark.integration
def test_strict_mode_raises_after_writing_the_record(tmp_path, short, crop_settings, landmarker_settings):
    raw_record = make_raw(tmp_path, "short", short)
    out_dir = tmp_path / "clips"
    with pytest.raises(ClipRejected, match="too short"):
        crop_clip(raw_record=raw_record, out_dir=out_dir, settings=crop_settings, landmarker=landmarker_settings, strict=True)
    assert read_record(out_dir / "short.json")["status"] == REJECTED


def test_clip_that_was_not_downloaded_is_refused(tmp_path, crop_settings, landmarker_settings):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_record(raw / "gone.json", "gone", "download", REJECTED, reason="sha256 mismatch", speaker="gone")
    record = crop_clip(raw_record=raw / "gone.json", out_dir=tmp_path / "clips", settings=crop_settings, landmarker=landmarker_settings)
    assert record["status"] == REJECTED and record["reason"] == "not downloaded: sha256 mismatch"
    assert read_record(tmp_path / "clips" / "gone.json") == record
    assert not (tmp_path / "clips" / "gone.mp4").exists()
    with pytest.raises(ClipRejected, match="not downloaded"):
        crop_clip(raw_record=raw / "gone.json", out_dir=tmp_path / "clips", settings=crop_settings, landmarker=landmarker_settings, strict=True)


# --------------------------------------------------------------------------- one encode run, one probe landmarker


@requires_clips
@pytest.mark.integration
@pytest.mark.parametrize("speech", ["track", "separate"])
def test_the_wav_written_beside_the_video_is_the_one_extract_audio_writes(tmp_path, speech, good, crop_settings,
                                                                          landmarker_settings):
    """The crop's one ffmpeg run writes the video and the speech; its wav is byte for byte the wav that
    extract_audio alone writes for the same span (the two-run crop's), for a track and a separate file."""
    trim = {"start_s": 1.0, "end_s": 3.5}
    if speech == "track":
        record, out_dir = crop_sample(tmp_path, "av", good, crop_settings, landmarker_settings, trim=trim)
        source, offset = tmp_path / "raw" / "av.mp4", 0.0
    else:
        video, wav, _ = separate_files()
        raw_record = make_raw_with_audio(tmp_path, "av", video, wav, trim=trim)
        out_dir = tmp_path / "clips"
        record = crop_clip(raw_record=raw_record, out_dir=out_dir, settings=crop_settings, landmarker=landmarker_settings)
        source, offset = tmp_path / "raw" / "av.audio.wav", record["source"]["video_start_s"]
    n, _ = assert_good_output(record, out_dir, crop_settings)
    alone = tmp_path / "alone.wav"
    extract_audio(source, alone, sample_rate=crop_settings.sample_rate, n_samples=record["output"]["samples"],
                  start_s=record["span"]["start_s"] - offset)
    assert (out_dir / record["output"]["audio"]).read_bytes() == alone.read_bytes()
    assert n == 62  # 2.5 s at 25 fps, counted from what ffmpeg wrote (the file is not probed)


@requires_clips
@pytest.mark.integration
def test_the_x264_preset_reaches_the_encoder(tmp_path, good, crop_settings, landmarker_settings):
    """x264 writes its settings into the stream: `subme` is 0 for ultrafast, 2 for veryfast, 7 for medium."""
    made = {}
    for preset, subme in (("ultrafast", 0), ("veryfast", 2)):
        settings = dataclasses.replace(crop_settings, x264_preset=preset)
        record, out_dir = crop_sample(tmp_path / preset, "x", good, settings, landmarker_settings,
                                      trim={"start_s": 0, "end_s": 2.5})
        assert_good_output(record, out_dir, settings)
        data = (out_dir / "x.mp4").read_bytes()
        assert f" subme={subme} ".encode() in data and f"crf={crop_settings.video_crf}.0".encode() in data
        made[preset] = record["output"]
    assert made["ultrafast"]["frames"] == made["veryfast"]["frames"]
    assert made["ultrafast"]["audio_sha256"] == made["veryfast"]["audio_sha256"]  # the preset touches the video only


@requires_clips
@pytest.mark.integration
def test_one_probe_landmarker_for_many_clips_finds_what_a_fresh_one_finds(sample_clip, good, crop_settings,
                                                                          landmarker_settings):
    """IMAGE mode keeps no state between frames, so the shard job's one probe landmarker, after another
    clip, gives the very faces a landmarker opened for this clip alone gives."""
    def faces(landmarker, clip: Path):
        info = probe(clip)
        return sample_faces(info, Span(0.0, 3.0), crop_settings, landmarker)

    with probe_landmarker(crop_settings, landmarker_settings) as shared:
        faces(shared, sample_clip(OTHER))
        reused = faces(shared, good)
    with probe_landmarker(crop_settings, landmarker_settings) as fresh:
        alone = faces(fresh, good)
    assert len(reused) == len(alone) >= crop_settings.probe_frames and all(alone)
    for seen, expected in zip(reused, alone):
        assert len(seen) == len(expected)
        for a, b in zip(seen, expected):
            np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_frames_written_come_from_ffmpegs_final_progress_report():
    report = b"frame=40\nfps=0.00\nprogress=continue\nframe=75\nout_time_us=3000000\nprogress=end\n"
    assert _frames_written(report, "x.mp4") == 75
    with pytest.raises(MediaError, match="without a final progress report"):
        _frames_written(b"frame=40\nprogress=continue\n", "x.mp4")
    with pytest.raises(MediaError, match="no video frame count"):
        _frames_written(b"out_time_us=0\nprogress=end\n", "x.mp4")


# --------------------------------------------------------------------------- speech in a separate file


def separate_files() -> tuple[Path, Path, dict[str, str]]:
    """The styletalk sample's video and wav, and its clips.csv row; skips when they are absent."""
    video, wav = CLIPS_DIR / f"{SEPARATE}.mp4", CLIPS_DIR / f"{SEPARATE}.wav"
    if not (video.is_file() and wav.is_file()):
        pytest.skip(f"sample clip {SEPARATE} (mp4 + wav) not found in {CLIPS_DIR}")
    with (CLIPS_DIR.parent / "clips.csv").open(newline="", encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["id"] == SEPARATE)
    return video, wav, row


def make_raw_with_audio(tmp_path: Path, clip_id: str, video: Path, audio: Path, trim: dict | None = None) -> Path:
    """make_raw plus the separate audio file and the `audio` field the download stage writes for it."""
    record = make_raw(tmp_path, clip_id, video, trim)
    name = f"{clip_id}.audio{audio.suffix}"
    shutil.copyfile(audio, record.parent / name)
    write_record(record, clip_id, "download", OK, file=f"{clip_id}.mp4", speaker=clip_id, trim=trim, sha256=None,
                 audio={"file": name, "sha256": None})
    return record


def download_row(tmp_path: Path, row: str, clip_id: str) -> Path:
    """The real download stage on a one-row manifest (header below); returns the record path."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,url,sha256,speaker,start_s,end_s,audio_url,audio_sha256\n" + row + "\n")
    (entry,) = read_manifest(manifest)
    raw = tmp_path / "raw"
    settings = DownloadSettings(mirror_dir=None, cache_dir=str(tmp_path / "cache"), retries=0, backoff_s=0, timeout_s=5)
    download_clip(entry=entry, settings=settings, dest=raw / f"{clip_id}.mp4", record_path=raw / f"{clip_id}.json",
                  strict=False)
    return raw / f"{clip_id}.json"


@requires_clips
@pytest.mark.integration
def test_separate_audio_is_downloaded_and_becomes_the_clips_speech(tmp_path, crop_settings, landmarker_settings):
    """The styletalk row (30 fps video without an audio track, speech in a wav) through the real download and
    crop stages, cut to 1-4 s: the output is 25 fps, and its wav is the separate file's samples from 1 s on."""
    video, wav, row = separate_files()
    raw_record = download_row(tmp_path, f"{SEPARATE},{video.as_uri()},{row['sha256']},{row['speaker']},1,4,"
                                        f"{wav.as_uri()},{row['audio_sha256']}", SEPARATE)
    assert read_record(raw_record)["audio"]["file"] == f"{SEPARATE}.audio.wav"
    out_dir = tmp_path / "clips"

    record = crop_clip(raw_record=raw_record, out_dir=out_dir, settings=crop_settings, landmarker=landmarker_settings)

    n, _ = assert_good_output(record, out_dir, crop_settings)  # 256x256, 25 fps CFR, 16 kHz mono, n * 640 samples
    assert n == 75 and record["span"] == {"start_s": 1.0, "duration_s": 3.0}
    assert record["source"]["fps"] == pytest.approx(30, abs=0.01) and record["source"]["audio_codec"] is None
    assert record["audio_source"] == {"file": f"{SEPARATE}.audio.wav", "sha256": row["audio_sha256"],
                                      "codec": "pcm_s16le", "sample_rate": 16000, "channels": 1,
                                      "duration_s": pytest.approx(18.02, abs=0.01)}
    speech, rate = soundfile.read(str(wav), dtype="float32")
    made, _ = soundfile.read(str(out_dir / record["output"]["audio"]), dtype="float32")
    assert rate == 16000 and made.shape == (75 * 640,)
    np.testing.assert_allclose(made, speech[16000:16000 + 75 * 640], atol=1e-4)  # the trim applies to the wav


@requires_clips
@pytest.mark.integration
def test_separate_audio_of_a_different_length_is_rejected_with_both_durations(tmp_path, make_clip, crop_settings,
                                                                              landmarker_settings):
    video, wav, _ = separate_files()
    half = make_clip("separate-half.wav", "-i", wav, "-t", "9", "-c:a", "pcm_s16le")
    out_dir = tmp_path / "clips"
    record = crop_clip(raw_record=make_raw_with_audio(tmp_path, "half", video, half), out_dir=out_dir,
                       settings=crop_settings, landmarker=landmarker_settings)
    assert_rejected(record, out_dir, "audio/video duration mismatch")
    assert "video 18.07 s" in record["reason"] and "half.audio.wav 9.00 s" in record["reason"], record["reason"]
    assert record["audio_source"]["duration_s"] == pytest.approx(9.0, abs=0.01)


@requires_clips
@pytest.mark.integration
def test_unreadable_separate_audio_is_rejected(tmp_path, crop_settings, landmarker_settings):
    video, _, _ = separate_files()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF but not really a wav file")
    out_dir = tmp_path / "clips"
    record = crop_clip(raw_record=make_raw_with_audio(tmp_path, "junk", video, junk), out_dir=out_dir,
                       settings=crop_settings, landmarker=landmarker_settings)
    assert_rejected(record, out_dir, "corrupt or unreadable separate audio")
    assert "junk.audio.wav" in record["reason"]


@requires_clips
@pytest.mark.integration
def test_video_without_audio_track_or_separate_audio_is_rejected(tmp_path, crop_settings, landmarker_settings):
    """The styletalk video alone (a manifest row without audio_url): nothing to take the speech from."""
    video, _, _ = separate_files()
    record, out_dir = crop_sample(tmp_path, "silent-film", video, crop_settings, landmarker_settings)
    assert_rejected(record, out_dir, "no audio track in the video and no separate audio file (manifest audio_url)")
    assert record["source"]["audio_codec"] is None and record["source"]["fps"] == pytest.approx(30, abs=0.01)


def test_failed_audio_download_reaches_the_crop_record(tmp_path, crop_settings, landmarker_settings):
    """A missing audio file rejects the download; the crop record passes the reason on."""
    video, _, row = separate_files()
    missing = tmp_path / "nowhere.wav"
    raw_record = download_row(tmp_path, f"{SEPARATE},{video.as_uri()},{row['sha256']},{row['speaker']},,,"
                                        f"{missing.as_uri()},", SEPARATE)
    record = crop_clip(raw_record=raw_record, out_dir=tmp_path / "clips", settings=crop_settings,
                       landmarker=landmarker_settings)
    assert record["status"] == REJECTED
    assert record["reason"] == f"not downloaded: audio_url: file {missing} does not exist (from {missing.as_uri()})"


def test_av_duration_tolerance(crop_settings):
    assert crop_settings.max_av_duration_mismatch_s == 0.2
    check_av_durations(18.07, 18.02, "a.wav", crop_settings)  # the styletalk clips: within 0.07 s
    check_av_durations(10.0, 10.2, "a.wav", crop_settings)
    with pytest.raises(ClipRejected, match=r"video 10.00 s, separate audio a.wav 10.25 s \(differ by 0.25 s"):
        check_av_durations(10.0, 10.25, "a.wav", crop_settings)
    check_av_durations(10.0, 10.25, "a.wav", settings_with(crop_settings, max_av_duration_mismatch_s=0.3))


# --------------------------------------------------------------------------- nothing produced is lost


@requires_clips
@pytest.mark.integration
def test_rejected_rerun_keeps_previous_media_and_leaves_no_temp_files(
    tmp_path, good, silent, no_face, crop_settings, landmarker_settings
):
    """A good run, then the raw clip is replaced by bad ones under the same id and re-cropped.

    The record must say what the current input is (rejected); the media of the earlier good run
    must be neither deleted nor overwritten with a partial encode (the silent clip is rejected
    *after* its video was encoded to a temporary file), and no temporary file may remain.
    """
    record, out_dir = crop_sample(tmp_path, "clip", good, crop_settings, landmarker_settings,
                                  trim={"start_s": 0, "end_s": 3})
    assert record["status"] == OK
    before = {name: (out_dir / name).read_bytes() for name in ("clip.mp4", "clip.wav")}

    for bad, reason in ((silent, "silent audio"), (no_face, "no face found")):
        record, _ = crop_sample(tmp_path, "clip", bad, crop_settings, landmarker_settings)
        assert record["status"] == REJECTED and reason in record["reason"]
        assert {name: (out_dir / name).read_bytes() for name in before} == before
        assert leftovers(out_dir) == []
        assert sorted(p.name for p in out_dir.iterdir()) == ["clip.json", "clip.mp4", "clip.wav"]


# --------------------------------------------------------------------------- unit: box and thresholds


def synthetic_face(x0: float, y0: float, x1: float, y1: float) -> Face:
    """A Face whose 478 landmarks span exactly [x0, x1] x [y0, y1] (normalised coordinates)."""
    landmarks = np.zeros((N_LANDMARKS, 3), np.float32)
    landmarks[:, 0] = np.linspace(x0, x1, N_LANDMARKS)
    landmarks[:, 1] = np.linspace(y0, y1, N_LANDMARKS)
    return Face(landmarks)


def settings_with(crop_settings, **changes):
    return dataclasses.replace(crop_settings, **changes)


def test_face_box_centred_face(crop_settings):
    size = (1000, 800)
    faces = [[synthetic_face(0.4, 0.4, 0.6, 0.6)]] * 5  # 200 x 160 px face, centre (500, 400)
    box = face_box(faces, size, crop_settings)
    side = crop_settings.box_scale * 200  # no spread between frames
    cy = 400 + crop_settings.box_shift_y * side
    assert box == Box(x=round(500 - side / 2), y=round(cy - side / 2), side=math.floor(side), clamped=False)


def test_face_box_covers_movement_and_ignores_faceless_frames(crop_settings):
    size = (1000, 1000)
    still = face_box([[synthetic_face(0.45, 0.45, 0.55, 0.55)]] * 11, size, crop_settings)
    shifts = np.linspace(0, 0.2, 11)  # the face slides 200 px to the right
    moving = [[synthetic_face(0.35 + d, 0.45, 0.45 + d, 0.55)] for d in shifts]
    box = face_box(moving + [[], []], size, crop_settings)  # faceless frames do not count
    centres_x = 400 + 1000 * shifts
    spread = np.percentile(centres_x, 90) - np.percentile(centres_x, 10)
    assert box.side == math.floor(crop_settings.box_scale * 100 + spread)
    assert box.side > still.side
    assert box.x + box.side / 2 == pytest.approx(500, abs=1)  # centred on the median position


@pytest.mark.parametrize(
    "face, size, clamped",
    [
        ((0.0, 0.3, 0.2, 0.5), (640, 480), True),  # at the left edge: box pushed inside
        ((0.8, 0.7, 1.0, 0.95), (640, 480), True),  # bottom right corner
        ((0.1, 0.1, 0.9, 0.9), (640, 480), True),  # face fills the frame: side limited to the height
        ((0.2, 0.05, 0.8, 0.95), (300, 900), True),  # portrait frame: side limited to the width
        ((0.45, 0.5, 0.55, 0.6), (1920, 1080), False),
    ],
)
def test_face_box_is_square_and_inside_the_frame(crop_settings, face, size, clamped):
    width, height = size
    box = face_box([[synthetic_face(*face)]], size, crop_settings)
    assert isinstance(box.side, int) and box.side > 0
    assert 0 <= box.x <= box.x + box.side <= width
    assert 0 <= box.y <= box.y + box.side <= height
    assert box.side <= min(width, height)
    assert box.clamped is clamped


def test_face_box_random_faces_stay_inside(crop_settings):
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = int(rng.integers(64, 2000)), int(rng.integers(64, 2000))
        faces = []
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = rng.uniform(-0.1, 0.9, 2)
            w, h = rng.uniform(0.02, 0.6, 2)
            faces.append([synthetic_face(x0, y0, x0 + w, y0 + h)])
        box = face_box(faces, (width, height), crop_settings)
        assert 0 <= box.x and box.x + box.side <= width and 0 <= box.y and box.y + box.side <= height, (box, width, height)


def test_probe_stats_counts_a_second_face_from_the_size_ratio(crop_settings):
    size = (1000, 1000)
    main = synthetic_face(0.1, 0.1, 0.3, 0.3)  # 200 px
    limit = crop_settings.second_face_ratio * 0.2  # 0.4 * 200 px = 80 px
    big_second = synthetic_face(0.6, 0.6, 0.6 + limit + 0.001, 0.6 + limit + 0.001)  # 81 px: counts
    small_second = synthetic_face(0.6, 0.6, 0.6 + limit - 0.001, 0.6 + limit - 0.001)  # 79 px: does not
    stats = probe_stats([[main, big_second], [main, small_second], [main], []], size, crop_settings)
    assert stats == ProbeStats(frames=4, face_frames=3, multi_face_frames=1, max_faces=2)
    assert probe_stats([], size, crop_settings) == ProbeStats(0, 0, 0, 0)


def test_check_faces_thresholds(crop_settings):
    s = settings_with(crop_settings, multi_face_fraction=0.25, min_face_fraction=0.75)
    check_faces(ProbeStats(frames=16, face_frames=16, multi_face_frames=3, max_faces=2), s)  # 3/16 < 25%
    check_faces(ProbeStats(frames=16, face_frames=12, multi_face_frames=0, max_faces=1), s)  # exactly 75%
    with pytest.raises(ClipRejected, match="several faces"):
        check_faces(ProbeStats(frames=16, face_frames=16, multi_face_frames=4, max_faces=3), s)  # 25%
    with pytest.raises(ClipRejected, match="too little usable footage"):
        check_faces(ProbeStats(frames=16, face_frames=11, multi_face_frames=0, max_faces=1), s)
    with pytest.raises(ClipRejected, match="no face found"):
        check_faces(ProbeStats(frames=16, face_frames=0, multi_face_frames=0, max_faces=0), s)
    with pytest.raises(ClipRejected, match="no decodable video frames"):
        check_faces(ProbeStats(frames=0, face_frames=0, multi_face_frames=0, max_faces=0), s)
