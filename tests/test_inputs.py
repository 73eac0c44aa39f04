"""What a user gives the CLI is checked first and explained: portraits upright (EXIF orientation),
numeric options and params values within their ranges, input files holding what they must, config
errors naming their file, `-v` showing mssync's own debug lines, a missing model saying what makes it.

Real tools only: images made with Pillow from a real sample-clip frame, audio and video made by the
real ffmpeg, the real MediaPipe landmarker, the real CLI in a subprocess.
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, crop_sample, requires_clips, requires_ffmpeg, requires_model, run_ffmpeg
from PIL import Image

from mssync.cli import build_parser
from mssync.core.bounds import Bounded, schema_bound
from mssync.core.config import PARAMS_SCHEMA, load_params, load_section
from mssync.core.errors import ConfigError, MediaError
from mssync.core.logs import configure_logging
from mssync.media.ffmpeg import require_audio_stream
from mssync.media.images import EXIF_ORIENTATION, read_image

FAST_S = 5.0  # "at once": the CLI answers before anything slow (torch, MediaPipe, models) starts


def mssync_cli(*args: str | Path, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    """The real `python -m mssync ...`, and how long it took."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mssync", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    return proc, time.perf_counter() - start


# --------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def frame_png(tmp_path_factory, sample_clip) -> Path:
    """An upright frame of a real sample clip (one face), as ffmpeg decodes it."""
    out = tmp_path_factory.mktemp("frame") / "frame.png"
    run_ffmpeg("-ss", "1", "-i", sample_clip("hdtf-ted-lieu"), "-frames:v", "1", out)
    return out


# Pillow's transpose that undoes each EXIF orientation (what a viewer applies), and its inverse (how
# a camera stores the upright scene under that tag).
UNDO = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def phone_jpeg(upright: Path, orientation: int, out: Path) -> Path:
    """A JPEG as a phone writes it: pixels stored turned, the EXIF Orientation tag saying how to show them."""
    with Image.open(upright) as image:
        stored = image.convert("RGB").transpose(STORE[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    stored.save(out, quality=95, exif=exif)
    return out


@pytest.fixture
def tone_wav(tmp_path) -> Path:
    out = tmp_path / "tone.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=2", out)
    return out


@pytest.fixture
def grey_png(tmp_path) -> Path:
    out = tmp_path / "grey.png"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(out)
    return out


# --------------------------------------------------------------------------- 4. EXIF orientation


@requires_clips
@requires_ffmpeg
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied_and_logged(orientation, frame_png, tmp_path, caplog):
    upright = np.asarray(Image.open(frame_png).convert("RGB")).astype(int)
    jpeg = phone_jpeg(frame_png, orientation, tmp_path / "portrait.jpg")
    with Image.open(jpeg) as stored:
        turned = np.asarray(stored.convert("RGB")).astype(int)
    assert turned.shape != upright.shape or np.abs(turned - upright).mean() > 20, "the pixels are stored turned"
    with caplog.at_level(logging.INFO, logger="mssync"):
        loaded = read_image(jpeg)
    assert loaded.shape == upright.shape
    assert np.abs(loaded.astype(int) - upright).mean() < 4.0, "the loaded portrait is the upright frame"
    assert f"portrait.jpg: EXIF orientation {orientation} applied" in caplog.text


@requires_clips
@requires_ffmpeg
def test_image_without_orientation_is_read_as_stored_and_quietly(frame_png, caplog):
    with caplog.at_level(logging.INFO, logger="mssync"):
        loaded = read_image(frame_png)
    assert np.array_equal(loaded, np.asarray(Image.open(frame_png).convert("RGB")))
    assert "EXIF" not in caplog.text


@requires_clips
@requires_model
@requires_ffmpeg
def test_sideways_phone_portrait_is_animated_upright(frame_png, tmp_path, landmarker_settings, crop_settings):
    """The landmarker gets the upright face: the cropped face's chin is below its forehead, as in the
    portrait read without any EXIF tag."""
    from mssync.render.animate import load_portrait

    jpeg = phone_jpeg(frame_png, 6, tmp_path / "phone.jpg")
    phone = load_portrait(jpeg, 256, landmarker_settings, crop_settings)
    plain = load_portrait(frame_png, 256, landmarker_settings, crop_settings)
    assert phone.faces_found == 1
    forehead, chin = phone.landmarks[10, :2], phone.landmarks[152, :2]
    assert chin[1] - forehead[1] > 2 * abs(chin[0] - forehead[0]), "the face is upright in the crop"
    assert np.abs(phone.landmarks[:, :2] - plain.landmarks[:, :2]).mean() < 0.02


# --------------------------------------------------------------------------- 5. ranges


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every `mssync <command>` parser, by command."""
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def test_every_numeric_option_is_range_checked():
    """No option parses a number without a range: type int/float alone is refused, a numeric default
    needs a Bounded type, and --help states each range."""
    parser = build_parser()
    commands = subparsers(parser)
    assert len(commands) >= 13  # every stage, shard jobs included
    unchecked, undocumented, checked = [], [], 0
    for command, sub in {"mssync": parser, **commands}.items():
        for action in sub._actions:
            name = f"mssync {command} {'/'.join(action.option_strings) or action.dest}"
            numeric_default = isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
            if action.type in (int, float) or (numeric_default and not isinstance(action.type, Bounded)):
                unchecked.append(name)
            if isinstance(action.type, Bounded):
                checked += 1
                if str(action.type) not in (action.help or ""):
                    undocumented.append(name)
    assert unchecked == [], f"numeric options without a range: {unchecked}"
    assert undocumented == [], f"ranges missing from --help: {undocumented}"
    assert checked >= 12  # threads x7, level, reference-frame, size, head/expression scale, seed


def test_options_that_override_params_values_take_the_schemas_range():
    """--size vs render.size etc.: one source for the bounds, so the two cannot disagree."""
    animate = subparsers(build_parser())["animate"]
    render = yaml.safe_load(PARAMS_SCHEMA.read_text())["properties"]["render"]["properties"]
    overriding = {a.dest: a.type for a in animate._actions if isinstance(a.type, Bounded) and a.dest in render}
    assert set(overriding) == {"size", "head_scale", "expression_scale", "seed"}
    for key, bound in overriding.items():
        assert bound == schema_bound(f"render.{key}"), key
    level = next(a for a in subparsers(build_parser())["train-syncer"]._actions if a.dest == "level")
    assert level.type == schema_bound("pyramid.levels[]")


def test_bounded_converts_and_explains():
    size = Bounded(int, 16, 2048)
    assert size("256") == 256
    for text, message in [("0", "must be between 16 and 2048, got 0"), ("4096", "got 4096"),
                          ("12.5", "expected an integer between 16 and 2048, got '12.5'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(")):
            size(text)
    scale = Bounded(float, 0, 4, low_open=True)
    assert scale("4") == 4.0
    for text in ("0", "-1", "nan", "inf", "4.01"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"in \(0, 4\]"):
            scale(text)
    assert not Bounded(int, 64, 1024, multiple_of=2).contains(255)


def numeric_leaves(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every schema node whose type is integer or number, wherever it sits (properties, items,
    additionalProperties, $defs), with its path."""
    found = []
    if isinstance(node, dict):
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if {"integer", "number"} & set(types):
            found.append((path or "(root)", node))
        for key, child in node.items():
            found += numeric_leaves(child, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += numeric_leaves(child, f"{path}[{i}]")
    return found


def test_every_number_in_the_params_schema_has_bounds():
    schema = yaml.safe_load(PARAMS_SCHEMA.read_text())
    leaves = numeric_leaves(schema)
    assert len(leaves) > 80
    unbounded = [path for path, node in leaves
                 if "enum" not in node and not ({"minimum", "exclusiveMinimum"} & set(node)
                                                and {"maximum", "exclusiveMaximum"} & set(node))]
    assert unbounded == [], f"numbers without a lower and an upper bound: {unbounded}"
    for shipped in ("params.yaml", "config/tiny/params.yaml"):
        load_params(REPO / shipped)  # the ranges admit what the project ships (paper presets too)


@pytest.mark.parametrize("option, value, message", [
    ("--size", "0", "argument --size: must be between 64 and 1024 and a multiple of 2, got 0"),
    ("--size", "10000", "argument --size: must be between 64 and 1024 and a multiple of 2, got 10000"),
    ("--size", "-256", "argument --size: must be between 64 and 1024"),
    ("--head-scale", "-1", "argument --head-scale: must be between 0 and 5, got -1"),
    ("--threads", "0", "argument --threads: must be between 1 and 256, got 0"),
])
def test_out_of_range_options_stop_the_cli_at_once(option, value, message, tmp_path):
    out = tmp_path / "talking.mp4"
    proc, seconds = mssync_cli("animate", "--image", tmp_path / "portrait.jpg", "--audio", tmp_path / "speech.wav",
                               "-o", out, f"{option}={value}")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert seconds < FAST_S


# --------------------------------------------------------------------------- 6. config files


def params_with(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the shipped params.yaml, edited, saved as tmp_path/name."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("edit, key", [
    (lambda p: p["gan"].update(preset="nope"), "gan.preset"),  # blamed params.yaml before
    (lambda p: p["render"].update(size=0), "render.size"),
])
def test_bad_value_in_another_params_file_names_that_file(edit, key, tmp_path):
    other = params_with(tmp_path, "other.yaml", edit)
    with pytest.raises(ConfigError) as error:
        load_section("render", None, other)
    assert str(error.value).startswith(f"{other}: invalid value at '{key}'")
    assert "params.yaml" not in str(error.value)


def test_broken_yaml_names_its_file(tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("render: {size: 256\ncrop: [")
    with pytest.raises(ConfigError, match=f"^{broken}: not valid YAML"):
        load_params(broken)


@requires_ffmpeg
def test_animate_names_the_params_file_it_was_given(tmp_path, grey_png, tone_wav):
    other = params_with(tmp_path, "other.yaml", lambda p: p["gan"].update(preset="nope"))
    for made in ("generator.pt", "motion_space.npz"):  # present: the settings are what fails
        (tmp_path / made).write_bytes(b"")
    proc, _ = mssync_cli("animate", "--image", grey_png, "--audio", tone_wav, "-o", tmp_path / "out.mp4", "--params",
                         other, "--model", tmp_path / "generator.pt", "--space", tmp_path / "motion_space.npz")
    assert proc.returncode == 2, proc.stderr
    assert f"{other}: invalid value at 'gan.preset'" in proc.stderr
    assert "params.yaml" not in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 6. input files


@requires_ffmpeg
def test_a_file_without_sound_is_named_and_said_to_lack_an_audio_stream(tmp_path, grey_png):
    video = tmp_path / "silent-film.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=1", "-pix_fmt", "yuv420p", video)
    for path, found in [(grey_png, "video (png)"), (video, "video (h264)")]:
        with pytest.raises(MediaError) as error:
            require_audio_stream(path)
        assert str(error.value).startswith(f"{path}: no audio stream (found {found})")
    with pytest.raises(MediaError, match="no such audio file"):
        require_audio_stream(tmp_path / "absent.wav")


@requires_ffmpeg
@pytest.mark.parametrize("command", ["animate", "generate"])
def test_png_as_audio_is_refused_before_any_work(command, tmp_path, grey_png):
    out = tmp_path / ("out.mp4" if command == "animate" else "out.parquet")
    first = ["--image", grey_png] if command == "animate" else ["--reference", tmp_path / "ref.parquet"]
    proc, seconds = mssync_cli(command, *first, "--audio", grey_png, "-o", out, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{grey_png}: no audio stream (found video (png))" in proc.stderr
    assert "trailing '?'" not in proc.stderr and "Traceback" not in proc.stderr and not out.exists()
    assert seconds < FAST_S


@requires_ffmpeg
def test_an_unreadable_portrait_is_refused_before_any_work(tmp_path, tone_wav):
    truncated = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 150)).save(buffer, format="JPEG")
    truncated.write_bytes(buffer.getvalue()[:400])
    proc, seconds = mssync_cli("animate", "--image", truncated, "--audio", tone_wav, "-o", tmp_path / "o.mp4",
                               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{truncated}: not a readable image" in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < FAST_S


# --------------------------------------------------------------------------- 6. missing models


@requires_ffmpeg
@pytest.mark.parametrize("command", ["animate", "generate"])
def test_missing_model_says_what_makes_it(command, tmp_path, grey_png, tone_wav):
    out = tmp_path / ("out.mp4" if command == "animate" else "out.parquet")
    first = ["--image", grey_png] if command == "animate" else ["--reference", tmp_path / "ref.parquet"]
    proc, seconds = mssync_cli(command, *first, "--audio", tone_wav, "-o", out, cwd=tmp_path)  # no models/ here
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"mssync {command}: error: models/generator.pt: no such file; make it with "
                     "`snakemake --cores all models/generator.pt` (or fetch it with `dvc pull`)"]
    assert seconds < FAST_S
    proc, _ = mssync_cli(command, *first, "--audio", tone_wav, "-o", out, "--model", tmp_path / "mine.pt", cwd=tmp_path)
    assert f"{tmp_path / 'mine.pt'}: no such file; the pipeline makes models/generator.pt with `snakemake" in proc.stderr


# --------------------------------------------------------------------------- 6. -v


@pytest.fixture
def restore_logging():
    """configure_logging changes process-wide logging: put it back for the other tests."""
    root, names = logging.getLogger(), ("mssync", "numba")
    saved = root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names}
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_verbose_shows_mssync_debug_lines_and_no_library_chatter(restore_logging):
    """numba logs hundreds of DEBUG lines per compiled function (librosa compiles several)."""
    import numba

    stream = io.StringIO()
    configure_logging(verbose=True, stream=stream)
    logging.getLogger("mssync.render.animate").debug("a debug line of mssync's")
    def twice_plus_one(x):
        return x * 2 + 1

    numba.njit(twice_plus_one)(3)  # a new function: numba's compiler runs and logs at DEBUG
    logging.getLogger("matplotlib.font_manager").info("library chatter")
    logging.getLogger("urllib3").warning("a library warning still shows")
    text = stream.getvalue()
    assert "DEBUG mssync.render.animate: a debug line of mssync's" in text
    assert "numba" not in text and "library chatter" not in text
    assert "a library warning still shows" in text
    configure_logging(verbose=False, stream=stream)
    logging.getLogger("mssync").debug("hidden without -v")
    assert "hidden without -v" not in stream.getvalue()
    assert sum(getattr(h, "stream", None) is stream for h in logging.getLogger().handlers) == 1, "replaced"


@pytest.mark.integration
@requires_clips
@requires_model
@requires_ffmpeg
def test_verbose_features_run_logs_stage_timings_and_no_numba(tmp_path, sample_clip, crop_settings,
                                                              landmarker_settings, feature_settings):
    """`mssync -v features` (a one-clip shard) on a real 2.5 s crop: it computes a log-mel (librosa ->
    numba compiles) and draws the preview."""
    import dataclasses
    import json

    record, clips = crop_sample(tmp_path, "vox2-00015", sample_clip("vox2-00015"), crop_settings,
                                landmarker_settings, trim={"start_s": 0, "end_s": 2.5})
    assert record["status"] == "ok", record.get("reason")
    (tmp_path / "m.csv").write_text("id,url,speaker\nvox2-00015,file:x.mp4,vox2-00015\n")
    proc, _ = mssync_cli("-v", "features", "--manifest", tmp_path / "m.csv", "--shard", "000of001",
                         "--record", tmp_path / "shard.json", "--raw-dir", tmp_path / "raw", "--clips-dir", clips,
                         "--features-dir", tmp_path / "features", "--previews-dir", tmp_path / "previews",
                         "--shards-settings", json.dumps({"size": 32}),
                         "--features-settings", json.dumps(dataclasses.asdict(feature_settings)),
                         "--preview-settings", json.dumps({"frames": 3}),
                         "--landmarker-settings", json.dumps(dataclasses.asdict(landmarker_settings)))
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG mssync.features.features: vox2-00015: log-mel audio features:" in proc.stderr
    assert "DEBUG mssync.features.features: vox2-00015: landmarks of " in proc.stderr
    assert "numba" not in proc.stderr
    assert len(proc.stderr.splitlines()) < 40, proc.stderr
