"""Rendering and `mssync animate` on real portraits, real speech and a really trained (tiny) generator.

Portraits are frames of the sample clips, found and cropped by the real MediaPipe landmarker;
speech is the sample clips' audio; videos are encoded and read back by the real ffmpeg.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import requires_clips, requires_ffmpeg, requires_model, run_ffmpeg
from PIL import Image

from mssync.core.config import load_section
from mssync.core.errors import MssyncError
from mssync.features.schema import list_column_to_numpy, read_table
from mssync.gan.train import GanSettings, train_gan
from mssync.media.ffmpeg import iter_frames, read_wav
from mssync.media.mesh import mediapipe_mesh
from mssync.motion.space import POSE_DIM
from mssync.render.animate import load_portrait
from mssync.render.animate_inputs import SpeechFeatures, pairs_from_dirs, speech_log_mel
from mssync.render.render import (
    PSNR_CAP_DB,
    adjust_motion,
    masked_psnr,
    reenactment_fidelity,
    render_test_clips,
    retarget_expression,
)
from mssync.render.warp import PortraitWarper, face_region_mask, to_pixels

pytestmark = [pytest.mark.integration, requires_clips, requires_model, requires_ffmpeg,
              pytest.mark.usefixtures("torch_one_thread")]

REPO = Path(__file__).resolve().parents[1]
P = POSE_DIM
TINY_MODEL = {"frame_dim": 16, "audio_dim": 16, "hidden": 8, "branch_dim": 16, "head_depth": 1,
              "transformer_layers": 1, "transformer_heads": 2, "context": 40, "lookahead": 2, "disc_dim": 16,
              "disc_hidden": 16, "windows": [5, 10, 20, 40]}


@pytest.fixture(scope="module")
def render_settings():
    return load_section("render", None, REPO / "params.yaml")


@pytest.fixture(scope="module")
def generator(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny generator really trained (a few iterations, no sync loss: no syncers needed)."""
    out = tmp_path_factory.mktemp("render-generator")
    gan = {"preset": "tiny", "seed": 0, "device": "cpu", "max_speaker_share": 1.0, "sync_levels": [], "sync_weighting": "uniform",
           "loss_weights": {"adv": 1.0, "sync": 1.0, "sup": 0.01, "rec": 0.001}, "observed_frames": 3,
           "generated_frames": 40, "rollout_pull": 0.02,
           "presets": {"tiny": {"model": TINY_MODEL, "batch": 2, "iterations": 6, "lr_g": 1e-3, "lr_d": 1e-4,
                                "eval_every": 3, "val_frames": 40}}}
    split = tiny_dataset["cache"]
    train_gan(train=split["train"], val=split["val"], space_path=tiny_dataset["space"], syncer_paths=[],
              out=out / "generator.pt", train_tsv=out / "train.tsv", val_tsv=out / "val.tsv",
              settings=GanSettings.from_params(gan))
    return out / "generator.pt"


@pytest.fixture(scope="module")
def portrait_png(tmp_path_factory, sample_clip) -> Path:
    """A frame of a sample clip (a wider-than-face crop, 1 face), as a user's portrait file."""
    out = tmp_path_factory.mktemp("portrait") / "portrait.png"
    run_ffmpeg("-ss", "1", "-i", sample_clip("hdtf-ted-lieu"), "-frames:v", "1", out)
    return out


@pytest.fixture(scope="module")
def speech(tiny_dataset) -> Path:
    return tiny_dataset["wav"]


@pytest.fixture(scope="module")
def clip_frames(tiny_dataset):
    """The test clip's decoded 256x256 frames and its real landmarks."""
    clip = tiny_dataset["features"].stem
    frames = list(iter_frames(tiny_dataset["clips_dir"] / f"{clip}.mp4", (256, 256)))
    table, _ = read_table(tiny_dataset["features"], columns=["landmarks", "face_found"])
    return frames, list_column_to_numpy(table["landmarks"]), table["face_found"].to_numpy()


def animate_cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mssync", "animate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def probe_streams(path: Path) -> dict:
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=codec_type,codec_name,width,height,pix_fmt,avg_frame_rate,nb_frames,duration",
                           "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(proc.stdout)["streams"]}


# --------------------------------------------------------------------------- the warp


def test_tessellation_closes_its_holes_and_covers_the_whole_frame(clip_frames, render_settings):
    frames, landmarks, _ = clip_frames
    mesh = mediapipe_mesh()
    assert mesh["face"].shape == (852, 3) and len(mesh["mouth"]) == 20 and len(mesh["oval"]) == 36
    warper = PortraitWarper(frames[0], landmarks[0], render_settings)
    points = np.concatenate([to_pixels(landmarks[0], 256), warper.topology.border])
    ids = warper.triangle_ids(points, warper._draw_order(landmarks[0]))
    assert (ids > 0).all(), "every pixel belongs to a triangle (face, hole fill or background)"


def test_portraits_own_landmarks_reproduce_it(clip_frames, render_settings):
    frames, landmarks, _ = clip_frames
    for k in (0, 60):
        warper = PortraitWarper(frames[k], landmarks[k], render_settings)
        mask = face_region_mask(to_pixels(landmarks[k], 256), 256)
        assert mask.sum() > 5000
        assert masked_psnr(frames[k], warper.warp(landmarks[k]), mask) >= 40.0


def test_shifted_landmarks_shift_the_face(clip_frames, render_settings):
    """Moving every landmark 6 px right and 4 px down moves the face by exactly that (direction check)."""
    frames, landmarks, _ = clip_frames
    warper = PortraitWarper(frames[0], landmarks[0], render_settings)
    moved = landmarks[0].copy()
    moved[:, 0] += 6 / 256
    moved[:, 1] += 4 / 256
    out = warper.warp(moved, mouth_fill=False)
    inner = face_region_mask(to_pixels(landmarks[0], 256), 256)
    inner[:12] = inner[-12:] = False
    expected = np.roll(frames[0], (4, 6), axis=(0, 1))
    shifted_mask = np.roll(inner, (4, 6), axis=(0, 1))
    assert masked_psnr(expected, out, shifted_mask) > 35.0


def test_warping_towards_a_later_frame_gets_closer_to_it(clip_frames, render_settings):
    frames, landmarks, found = clip_frames
    warper = PortraitWarper(frames[0], landmarks[0], render_settings)
    gains = []
    for k in (30, 60, 90, 120):
        mask = face_region_mask(to_pixels(landmarks[k], 256), 256)
        gains.append(masked_psnr(frames[k], warper.warp(landmarks[k]), mask) - masked_psnr(frames[k], frames[0], mask))
    assert np.mean(gains) > 1.0, gains
    fidelity = reenactment_fidelity(frames, landmarks, found, 0, dataclasses.replace(render_settings,
                                                                                     fidelity_stride=20))
    assert fidelity["identity_psnr_db"] == PSNR_CAP_DB
    assert fidelity["fidelity_frames"] == len(range(20, len(frames), 20))
    assert 15 < fidelity["psnr_fill"] < 60 and 0.3 < fidelity["ssim_no_fill"] <= 1


def test_mouth_fill_paints_a_cavity_only_when_the_mouth_opens(clip_frames, render_settings):
    frames, landmarks, _ = clip_frames
    closed = int(np.argmin([np.linalg.norm(lm[13, :2] - lm[14, :2]) for lm in landmarks]))
    warper = PortraitWarper(frames[closed], landmarks[closed], render_settings)
    assert np.array_equal(warper.warp(landmarks[closed], True), warper.warp(landmarks[closed], False))
    opened = landmarks[closed].copy()
    opened[jaw_drop_landmarks(opened), 1] += 10 / 256  # the lower lip and chin 10 px down
    with_fill, without = warper.warp(opened, True), warper.warp(opened, False)
    gap = np.zeros((256, 256), bool)
    top, bottom = to_pixels(landmarks[closed], 256)[13], to_pixels(opened, 256)[14]
    cx, y0, y1 = int(round(top[0])), int(round((top[1] + bottom[1]) / 2)), int(round(bottom[1])) - 2
    gap[y0:y1, cx - 3:cx + 4] = True  # the lower half of the opening: cavity, below the upper teeth
    assert warper.mouth_fill_strength(to_pixels(opened, 256)) == 1.0
    filled, stretched = with_fill[gap].astype(float), without[gap].astype(float)
    assert np.abs(filled - warper.cavity_colour).mean() < 12, "the opened mouth shows the dark cavity..."
    assert np.abs(filled - stretched).mean() > 15, "...not the portrait's lips stretched across the gap"


UPPER_INNER_LIP = [191, 80, 81, 82, 13, 312, 311, 310, 415]
LOWER_INNER_LIP = [95, 88, 178, 87, 14, 317, 402, 318, 324]


def jaw_drop_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The lower inner lip and every landmark below the upper inner lip: what a dropping jaw moves."""
    below = landmarks[:, 1] > landmarks[UPPER_INNER_LIP, 1].max()
    below[LOWER_INNER_LIP] = True
    below[[78, 308]] = False  # the mouth corners stay
    return np.flatnonzero(below)


# --------------------------------------------------------------------------- motion options


def test_still_and_scales_act_about_the_first_frame():
    rng = np.random.default_rng(0)
    motion = rng.normal(size=(30, P + 8)).astype(np.float32)
    still = adjust_motion(motion, True, 1.0, 1.0)
    assert np.allclose(still[:, :P], motion[0, :P]) and np.allclose(still[:, P:], motion[:, P:])
    half = adjust_motion(motion, False, 0.5, 2.0)
    assert np.allclose(half[:, :P] - motion[0, :P], 0.5 * (motion[:, :P] - motion[0, :P]), atol=1e-6)
    assert np.allclose(half[:, P:] - motion[0, P:], 2.0 * (motion[:, P:] - motion[0, P:]), atol=1e-5)
    retargeted = retarget_expression(motion)
    assert np.array_equal(retargeted[0], motion[0]) and np.array_equal(retargeted[:, :P], motion[:, :P])
    assert np.allclose(retargeted[1:, P:].mean(0), motion[0, P:], atol=1e-5)


# --------------------------------------------------------------------------- animate


def test_animate_makes_a_browser_playable_video_of_the_speech_length(generator, tiny_dataset, portrait_png, speech,
                                                                   tmp_path):
    out = tmp_path / "out" / "talking.mp4"
    proc = animate_cli("--image", portrait_png, "--audio", speech, "-o", out, "--model", generator,
                       "--space", tiny_dataset["space"], "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    streams = probe_streams(out)
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["pix_fmt"], video["avg_frame_rate"]) == ("h264", "yuv420p", "25/1")
    assert (video["width"], video["height"]) == (512, 256), "image view + landmark view"
    assert audio["codec_name"] == "aac"
    samples, rate = read_wav(speech)
    assert int(video["nb_frames"]) == len(samples) * 25 // rate
    first = next(iter_frames(out, (512, 256)))
    assert first[:, 256:].mean() < first[:, :256].mean(), "the right half is the mesh on a dark background"
    assert list(out.parent.iterdir()) == [out], "no temporary files left behind"


def test_animate_options_still_head_and_no_landmark_view(generator, tiny_dataset, portrait_png, speech, tmp_path,
                                                         render_settings, landmarker_settings, crop_settings):
    out = tmp_path / "still.mp4"
    proc = animate_cli("--image", portrait_png, "--audio", speech, "-o", out, "--model", generator, "--space",
                       tiny_dataset["space"], "--still", "--no-landmark-view", "--size", "128", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    video = probe_streams(out)["video"]
    assert (video["width"], video["height"]) == (128, 128)
    # Still head: the frame edges (background, far from the lips) do not move.
    frames = list(iter_frames(out, (128, 128)))
    border = np.ones((128, 128), bool)
    border[16:-16, 16:-16] = False
    drift = [np.abs(f[border].astype(int) - frames[0][border].astype(int)).mean() for f in frames]
    assert max(drift) < 4.0
    portrait = load_portrait(portrait_png, 128, landmarker_settings, crop_settings)
    assert portrait.image.shape == (128, 128, 3) and portrait.faces_found == 1


def test_sixty_seconds_of_speech_work(generator, tiny_dataset, portrait_png, tmp_path):
    speech = tmp_path / "minute.wav"
    run_ffmpeg("-stream_loop", "-1", "-i", tiny_dataset["wav"], "-t", "60", speech)
    out = tmp_path / "minute.mp4"
    proc = animate_cli("--image", portrait_png, "--audio", speech, "-o", out, "--model", generator, "--space",
                       tiny_dataset["space"], "--no-landmark-view", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert int(probe_streams(out)["video"]["nb_frames"]) == 1500


def test_several_faces_take_the_largest_and_say_so(generator, tiny_dataset, portrait_png, speech, tmp_path):
    big = Image.open(portrait_png).convert("RGB")
    small = big.resize((big.width // 2, big.height // 2))
    canvas = Image.new("RGB", (big.width + small.width, big.height), (40, 40, 40))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width, 0))
    group = tmp_path / "group.png"
    canvas.save(group)
    out = tmp_path / "group.mp4"
    proc = animate_cli("--image", group, "--audio", speech, "-o", out, "--model", generator,
                       "--space", tiny_dataset["space"], "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "2 faces found; animating the largest" in proc.stderr
    assert out.is_file()


def silent_wav(path: Path, seconds: float) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(seconds), path)
    return path


def test_speech_worker_gives_the_same_features_and_errors_as_computing_them_here(speech, tmp_path):
    features = load_section("features", None, REPO / "params.yaml")
    other = dataclasses.replace(features, n_mels=20)
    silent = silent_wav(tmp_path / "silent.wav", 2)
    with SpeechFeatures() as worker:
        worker.prefetch([speech, silent], features, 1.0, -55.0)
        np.testing.assert_array_equal(worker.log_mel(speech, features, 1.0, -55.0),
                                      speech_log_mel(speech, features, 1.0, -55.0))
        with pytest.raises(MssyncError, match="audio is silent"):  # raised in the worker, re-raised here
            worker.log_mel(silent, features, 1.0, -55.0)
        worker.prefetch([speech], features, 1.0, -55.0)  # queued with params.yaml's features ...
        mel = worker.log_mel(speech, other, 1.0, -55.0)  # ... but the model wants others: computed here
    assert mel.shape[1] == 20
    np.testing.assert_array_equal(mel, speech_log_mel(speech, other, 1.0, -55.0))


@pytest.mark.parametrize("case, message", [
    ("no-face", "no face found"),
    ("unreadable-image", "not a readable image"),
    ("unreadable-audio", "unreadable audio"),
    ("silent-audio", "audio is silent"),
    ("short-audio", "at least 1 s is needed"),
    ("unwritable-output", "cannot write there"),
])
def test_bad_input_gets_a_clear_error_and_no_output(case, message, generator, tiny_dataset, portrait_png, speech,
                                                    tmp_path):
    image, audio, out = portrait_png, speech, tmp_path / "out" / "video.mp4"
    if case == "no-face":
        image = tmp_path / "wall.png"
        Image.new("RGB", (320, 240), (120, 140, 160)).save(image)
    elif case == "unreadable-image":
        image = tmp_path / "broken.jpg"
        image.write_bytes(b"not a jpeg at all")
    elif case == "unreadable-audio":
        audio = tmp_path / "broken.wav"
        audio.write_bytes(b"RIFF....WAVEfmt nonsense")
    elif case == "silent-audio":
        audio = silent_wav(tmp_path / "silent.wav", 3)
    elif case == "short-audio":
        audio = tmp_path / "short.wav"
        run_ffmpeg("-i", speech, "-t", "0.5", audio)
    elif case == "unwritable-output":
        blocker = tmp_path / "out"
        blocker.write_text("a file where the output directory should be")
    proc = animate_cli("--image", image, "--audio", audio, "-o", out, "--model", generator,
                       "--space", tiny_dataset["space"], "--threads", "1")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    if out.parent.is_dir():
        assert list(out.parent.iterdir()) == [], "no partial or temporary file left behind"


def test_batch_pairs_by_name_and_reports_the_bad_pair(generator, tiny_dataset, portrait_png, speech, tmp_path):
    images, audios, outs = tmp_path / "img", tmp_path / "aud", tmp_path / "videos"
    images.mkdir()
    audios.mkdir()
    shutil.copy(portrait_png, images / "alice.png")
    shutil.copy(portrait_png, images / "bob.png")
    shutil.copy(portrait_png, images / "nobody.png")  # no audio of that name: warned about, skipped
    shutil.copy(speech, audios / "alice.wav")
    silent_wav(audios / "bob.wav", 2)  # silent: this pair fails, alice's still gets made
    assert [p.out.name for p in pairs_from_dirs(images, audios, outs)] == ["alice.mp4", "bob.mp4"]
    proc = animate_cli("--image-dir", images, "--audio-dir", audios, "--out-dir", outs, "--model", generator,
                       "--space", tiny_dataset["space"], "--no-landmark-view", "--threads", "1")
    assert proc.returncode == 2
    assert "1 of 2 pairs failed: bob.mp4" in proc.stderr and "nobody" in proc.stderr
    assert sorted(p.name for p in outs.iterdir()) == ["alice.mp4"]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,audio,out\nimg/alice.png,aud/alice.wav,csv-out/a.mp4\n")
    proc = animate_cli("--pairs", csv_path, "--model", generator, "--space", tiny_dataset["space"],
                       "--no-landmark-view", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "csv-out" / "a.mp4").is_file()


# --------------------------------------------------------------------------- the render stage


def test_render_stage_writes_videos_sheets_and_fidelity(generator, tiny_dataset, tmp_path, render_settings):
    settings = dataclasses.replace(render_settings, fidelity_stride=10, sheet_frames=3)
    report = render_test_clips(test=tiny_dataset["split"]["test"], clips_dir=tiny_dataset["clips_dir"], model=generator,
                               space=tiny_dataset["space"], out_dir=tmp_path / "videos", metrics=tmp_path / "metrics.json", settings=settings, device="cpu")
    clip = tiny_dataset["features"].stem
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{clip}.mp4", f"{clip}.png"]
    assert probe_streams(tmp_path / "videos" / f"{clip}.mp4")["video"]["width"] == 4 * 256
    sheet = Image.open(tmp_path / "videos" / f"{clip}.png")
    assert sheet.width == 4 * 256 and sheet.height > 3 * 256
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    stats = on_disk["clips"][clip]
    assert stats["identity_psnr_db"] >= 40.0
    assert stats["frames"] == 125 and 15 < stats["psnr_no_fill"] < 60
    assert set(on_disk["mean"]) >= {"psnr_fill", "ssim_fill", "psnr_no_fill", "ssim_no_fill"}
