"""Preview stage on real clips: the inputs are made by the real crop and features stages
(ffmpeg + MediaPipe, nothing mocked), then the contact sheet's pixels are checked.

Drawn colours are exact RGB values (PIL lines and rectangles are not anti-aliased), so counting
pixels of e.g. the lip colour tells whether, and where, landmarks were drawn.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mssync.cli import main as cli_main
from mssync.core.config import (
    CropSettings,
    FeatureSettings,
    LandmarkerSettings,
    PreviewSettings,
    load_params,
    settings_from_mapping,
)
from mssync.core.records import OK, REJECTED, read_record, write_record
from mssync.data.crop import crop_clip
from mssync.features import preview
from mssync.features.features import extract_features
from mssync.features.preview import source_text
from mssync.features.schema import list_column_to_numpy, read_table, write_table
from mssync.media import mesh
from mssync.media.ffmpeg import iter_frames

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIPS_DIR = SHARED / "data" / "clips"
MODEL = SHARED / "models" / "face_landmarker.task"
SAMPLE_ID = "vox2-00010"  # 4.3 s, one face
OTHER_ID = "vox2-00086"  # a second speaker, for a side-by-side two-face clip
TRIM_S = 3.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CLIPS_DIR.is_dir() and MODEL.is_file()), reason=f"sample clips/model not found in {SHARED}"),
]


@dataclasses.dataclass(frozen=True)
class Settings:
    crop: CropSettings
    features: FeatureSettings
    landmarker: LandmarkerSettings
    preview: PreviewSettings


@dataclasses.dataclass(frozen=True)
class Clip:
    raw_record: Path
    crop_record: Path
    features: Path | None


@pytest.fixture(scope="module")
def settings() -> Settings:
    params = load_params(REPO / "params.yaml")
    return Settings(
        crop=settings_from_mapping(CropSettings, params["crop"]),
        features=settings_from_mapping(FeatureSettings, params["features"]),
        landmarker=settings_from_mapping(LandmarkerSettings, {**params["landmarker"], "model": str(MODEL)}),
        preview=settings_from_mapping(PreviewSettings, params["preview"]),
    )


def download_record(root: Path, clip_id: str, src: Path | bytes) -> Path:
    """What the download stage leaves: data/raw/{clip}.mp4 and its record."""
    raw_dir = root / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        (raw_dir / f"{clip_id}.mp4").write_bytes(src)
    else:
        shutil.copyfile(src, raw_dir / f"{clip_id}.mp4")
    path = raw_dir / f"{clip_id}.json"
    write_record(path, clip_id, "download", OK, file=f"{clip_id}.mp4", speaker=clip_id,
                 trim={"start_s": 0.0, "end_s": TRIM_S}, sha256=None)
    return path


@pytest.fixture(scope="module")
def ok_clip(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Clip:
    root = tmp_path_factory.mktemp("ok")
    raw_record = download_record(root, SAMPLE_ID, CLIPS_DIR / f"{SAMPLE_ID}.mp4")
    record = crop_clip(raw_record=raw_record, out_dir=root / "clips", settings=settings.crop, landmarker=settings.landmarker)
    assert record["status"] == OK, record.get("reason")
    crop_record = root / "clips" / f"{SAMPLE_ID}.json"
    features = root / "features" / f"{SAMPLE_ID}.parquet"
    extract_features(crop_record=crop_record, out=features, settings=settings.features, landmarker=settings.landmarker)
    return Clip(raw_record, crop_record, features)


@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Clip:
    """Two speakers side by side (448x224): the real crop stage rejects it for several faces."""
    root = tmp_path_factory.mktemp("two")
    joined = root / "joined.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-t", str(TRIM_S), "-i", str(CLIPS_DIR / f"{SAMPLE_ID}.mp4"),
         "-t", str(TRIM_S), "-i", str(CLIPS_DIR / f"{OTHER_ID}.mp4"), "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]",
         "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(joined)],
        check=True,
    )
    clip_id = "two-faces"
    raw_record = download_record(root, clip_id, joined)
    record = crop_clip(raw_record=raw_record, out_dir=root / "clips", settings=settings.crop, landmarker=settings.landmarker)
    assert record["status"] == REJECTED and record["reason"].startswith("several faces"), record
    return Clip(raw_record, root / "clips" / f"{clip_id}.json", None)


def count(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int] | None = None) -> int:
    pixels = np.asarray(image.convert("RGB") if box is None else image.convert("RGB").crop(box))
    return int(np.all(pixels == np.array(colour, np.uint8), axis=-1).sum())


def tile_box(sheet: Image.Image, index: int, n_tiles: int) -> tuple[int, int, int, int]:
    """Where tile `index` lies: the grid sits at the bottom, under a title bar of any height."""
    row, col = divmod(index, preview.COLUMNS)
    x = preview.GAP + col * (preview.TILE + preview.GAP)
    y = sheet.height - preview.grid_height(n_tiles) + row * (preview.TILE + preview.CAPTION_H + preview.GAP)
    return x, y, x + preview.TILE, y + preview.TILE


def open_sheet(path: Path, n_tiles: int) -> Image.Image:
    """Open the PNG and check the grid geometry: fixed width, title bar + rows of tiles."""
    assert path.is_file()
    sheet = Image.open(path)
    sheet.load()
    assert sheet.format == "PNG" and sheet.mode == "RGB"
    assert sheet.width == preview.COLUMNS * preview.TILE + (preview.COLUMNS + 1) * preview.GAP
    title_h = sheet.height - preview.GAP - preview.grid_height(n_tiles)
    assert 2 * preview.TITLE_PAD < title_h < 300, f"title bar {title_h} px"
    assert sheet.getpixel((sheet.width - 2, 2)) == preview.TITLE_BG
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")] == []  # no temp left
    return sheet


def test_ok_sheet_draws_stored_landmarks_on_crop_frames(ok_clip: Clip, settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "preview" / f"{SAMPLE_ID}.png"
    preview.make_preview(raw_record=ok_clip.raw_record, crop_record=ok_clip.crop_record, features=ok_clip.features, out=out,
                         settings=settings.preview, landmarker=settings.landmarker)
    n = settings.preview.frames
    sheet = open_sheet(out, n)
    assert sheet.height == 2 * preview.TITLE_PAD + 3 * (preview.TITLE_FONT_SIZE + preview.LINE_SPACING) \
        + preview.GAP + preview.grid_height(n)

    n_frames = read_record(ok_clip.crop_record)["output"]["frames"]
    indices = preview.spread_indices(n_frames, n)
    assert indices[0] == 0 and indices[-1] == n_frames - 1 and len(indices) == n
    table, _ = read_table(ok_clip.features, columns=["landmarks"])
    landmarks = list_column_to_numpy(table.column("landmarks"))
    lips = [*mesh.OUTER_LIP_LANDMARKS, *mesh.INNER_LIP_LANDMARKS]
    for k, frame in enumerate(indices):
        x0, y0, x1, y1 = tile_box(sheet, k, n)
        lip_xy = landmarks[frame, lips, :2] * preview.TILE
        lo = np.floor(lip_xy.min(axis=0)).astype(int) - 1
        hi = np.ceil(lip_xy.max(axis=0)).astype(int) + 2
        inside = count(sheet, preview.LIP_COLOUR, (x0 + lo[0], y0 + lo[1], x0 + hi[0], y0 + hi[1]))
        assert inside > 20, f"tile {k}: lips not drawn where frame {frame}'s landmarks are"
        assert count(sheet, preview.LIP_COLOUR, (x0, y0, x1, y1)) == inside, f"tile {k}: lip colour outside the lips"
        assert count(sheet, preview.LANDMARK_COLOUR, (x0, y0, x1, y1)) > 100
        # the outer lip contour passes through landmark 0 (upper lip centre)
        px, py = np.round(landmarks[frame, 0, :2] * preview.TILE).astype(int)
        assert sheet.getpixel((int(x0 + px), int(y0 + py))) == preview.LIP_COLOUR


def crop_frames(crop_record: Path) -> dict[int, np.ndarray]:
    """Every frame of the crop by number, as the features stage decodes them."""
    output = read_record(crop_record)["output"]
    video = crop_record.parent / output["video"]
    return dict(enumerate(iter_frames(video, (output["size"], output["size"]), threads=1)))


def test_a_sheet_from_already_decoded_frames_is_the_sheet_that_decodes_them(ok_clip: Clip, settings: Settings,
                                                                             tmp_path: Path) -> None:
    """The features job hands the preview the frames it decoded; the sheet is pixel for pixel the one
    drawn by decoding the crop again, and a wanted frame that did not decode is said to be missing."""
    kw = dict(raw_record=ok_clip.raw_record, crop_record=ok_clip.crop_record, features=ok_clip.features,
              settings=settings.preview, landmarker=settings.landmarker)
    preview.make_preview(out=tmp_path / "decoded.png", **kw)
    frames = crop_frames(ok_clip.crop_record)
    preview.make_preview(out=tmp_path / "given.png", frames=frames, **kw)
    n = settings.preview.frames
    decoded, given = open_sheet(tmp_path / "decoded.png", n), open_sheet(tmp_path / "given.png", n)
    assert np.array_equal(np.asarray(decoded), np.asarray(given))

    last = preview.preview_indices(read_record(ok_clip.crop_record), n)[-1]
    preview.make_preview(out=tmp_path / "short.png", frames={i: f for i, f in frames.items() if i != last}, **kw)
    short = open_sheet(tmp_path / "short.png", n - 1)
    assert count(short, preview.REJECTED_TEXT, (0, 0, short.width, short.height - preview.grid_height(n - 1))) > 0


def test_frames_without_a_face_are_marked_not_drawn(ok_clip: Clip, settings: Settings, tmp_path: Path) -> None:
    table, _ = read_table(ok_clip.features)
    column = table.schema.get_field_index("face_found")
    lost = table.set_column(column, "face_found", pa.array(np.zeros(len(table), bool)))
    features = tmp_path / "lost.parquet"
    write_table(features, lost)
    out = tmp_path / "lost.png"
    preview.make_preview(raw_record=ok_clip.raw_record, crop_record=ok_clip.crop_record, features=features, out=out, settings=settings.preview, landmarker=settings.landmarker)
    n = settings.preview.frames
    sheet = open_sheet(out, n)
    assert count(sheet, preview.LIP_COLOUR) == 0
    assert count(sheet, preview.LANDMARK_COLOUR) == 0
    for k in range(n):
        assert count(sheet, preview.NO_FACE_TEXT, tile_box(sheet, k, n)) > 0, f"tile {k} lacks 'no face'"


def test_ok_sheet_without_features_shows_plain_frames(ok_clip: Clip, settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "plain.png"
    preview.make_preview(raw_record=ok_clip.raw_record, crop_record=ok_clip.crop_record, features=None, out=out, settings=settings.preview, landmarker=settings.landmarker)
    sheet = open_sheet(out, settings.preview.frames)
    assert count(sheet, preview.LIP_COLOUR) == 0
    assert count(sheet, preview.REJECTED_TEXT) > 0  # the note that landmarks are not drawn


def test_rejected_sheet_boxes_every_face_found(two_face_clip: Clip, settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "rejected.png"
    preview.make_preview(raw_record=two_face_clip.raw_record, crop_record=two_face_clip.crop_record, features=None, out=out,
                         settings=settings.preview, landmarker=settings.landmarker)
    n = settings.preview.frames
    sheet = open_sheet(out, n)
    assert count(sheet, preview.REJECTED_TEXT, (0, 0, sheet.width, 30)) > 0  # "REJECTED at crop: ..." first
    half = preview.TILE // 2
    for k in range(n):
        x0, y0, x1, y1 = tile_box(sheet, k, n)
        # 448x224 letterboxed into 256x128: one speaker per half of the tile, each boxed
        assert count(sheet, preview.FACE_BOX_COLOUR, (x0, y0, x0 + half, y1)) > 50, f"tile {k}: left face"
        assert count(sheet, preview.FACE_BOX_COLOUR, (x0 + half, y0, x1, y1)) > 50, f"tile {k}: right face"
        band = (preview.TILE - preview.TILE * 224 // 448) // 2
        assert count(sheet, preview.FACE_BOX_COLOUR, (x0, y1 - band + 2, x1, y1)) == 0  # nothing in the letterbox
    assert count(sheet, preview.CROP_BOX_COLOUR) == 0  # no box was placed for this clip


def test_rejected_sheet_draws_the_recorded_crop_box(ok_clip: Clip, settings: Settings, tmp_path: Path) -> None:
    record = read_record(ok_clip.crop_record)
    fields = {k: v for k, v in record.items() if k not in ("clip_id", "stage", "status", "output")}
    fields["box"] = {"x": 20, "y": 10, "side": 180, "clamped": False}
    crop_record = tmp_path / f"{SAMPLE_ID}.json"
    write_record(crop_record, SAMPLE_ID, "crop", REJECTED, reason="silent audio: RMS -80.0 dBFS < -55.0", **fields)
    out = tmp_path / "box.png"
    preview.make_preview(raw_record=ok_clip.raw_record, crop_record=crop_record, features=None, out=out, settings=settings.preview, landmarker=settings.landmarker)
    n = settings.preview.frames
    sheet = open_sheet(out, n)
    scale = preview.TILE / 224
    for k in range(n):
        x0, y0, _, _ = tile_box(sheet, k, n)
        assert count(sheet, preview.FACE_BOX_COLOUR, tile_box(sheet, k, n)) > 50
        corner = (x0 + round(20 * scale), y0 + round(10 * scale))
        assert sheet.getpixel(corner) == preview.CROP_BOX_COLOUR


def test_unreadable_raw_video_gives_a_text_only_sheet(settings: Settings, tmp_path: Path) -> None:
    clip_id = "broken"
    raw_record = download_record(tmp_path, clip_id, np.random.default_rng(0).bytes(1024))
    record = crop_clip(raw_record=raw_record, out_dir=tmp_path / "clips", settings=settings.crop, landmarker=settings.landmarker)
    assert record["status"] == REJECTED and "unreadable" in record["reason"]
    out = tmp_path / "broken.png"
    preview.make_preview(raw_record=raw_record, crop_record=tmp_path / "clips" / f"{clip_id}.json", features=None, out=out,
                         settings=settings.preview, landmarker=settings.landmarker)
    sheet = open_sheet(out, 0)
    assert sheet.height < preview.TILE
    assert count(sheet, preview.REJECTED_TEXT) > 0
    assert count(sheet, preview.FACE_BOX_COLOUR) == 0


def test_cli_writes_a_sheet_for_a_clip_rejected_at_download(settings: Settings, tmp_path: Path) -> None:
    """`mssync features` over a shard whose one clip was rejected at download: no features, a sheet."""
    reason = "sha256 mismatch: expected ab12, got cd34"
    write_record(tmp_path / "raw" / "gone.json", "gone", "download", REJECTED, speaker="gone", reason=reason)
    write_record(tmp_path / "clips" / "gone.json", "gone", "crop", REJECTED, speaker="gone",
                 reason=f"not downloaded: {reason}")
    (tmp_path / "m.csv").write_text("id,url,speaker\ngone,file:gone.mp4,gone\n")
    out = tmp_path / "previews" / "gone.png"
    code = cli_main([
        "features", "--manifest", str(tmp_path / "m.csv"), "--shard", "000of001",
        "--record", str(tmp_path / "shard.json"), "--raw-dir", str(tmp_path / "raw"),
        "--clips-dir", str(tmp_path / "clips"), "--features-dir", str(tmp_path / "features"),
        "--previews-dir", str(tmp_path / "previews"), "--shards-settings", json.dumps({"size": 32}),
        "--features-settings", json.dumps({"n_mels": 26, "hop_ms": 10, "win_ms": 25, "n_fft": 512, "fmin": 0.0,
                                           "fmax": 8000.0, "preemphasis": 0.97}),
        "--preview-settings", json.dumps(dataclasses.asdict(settings.preview)),
        "--landmarker-settings", json.dumps(dataclasses.asdict(settings.landmarker)),
    ])
    assert code == 0
    assert not (tmp_path / "features" / "gone.parquet").exists()
    sheet = open_sheet(out, 0)
    assert sheet.height < preview.TILE and count(sheet, preview.REJECTED_TEXT) > 0


def test_long_reasons_wrap_within_the_sheet() -> None:
    font = preview.get_font(preview.TITLE_FONT_SIZE)
    width = preview.sheet_width() - 2 * preview.TITLE_PAD
    reason = "corrupt or unreadable video: " + "/very/long/path/" * 30 + "clip.mp4: moov atom not found " * 3
    lines = preview.wrap_text(reason, font, width)
    assert len(lines) > 3 and all(font.getlength(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == reason.replace(" ", "")
    short = preview.render_sheet([("x REJECTED at crop: too short", preview.REJECTED_TEXT)], [])
    tall = preview.render_sheet([(reason * 20, preview.REJECTED_TEXT)], [])
    assert short.width == tall.width == preview.sheet_width()
    assert short.height < tall.height <= 2 * preview.TITLE_PAD + preview.MAX_TITLE_LINES * (
        preview.TITLE_FONT_SIZE + preview.LINE_SPACING) + preview.GAP


@pytest.mark.parametrize("n_frames, count_, expected", [(75, 6, [0, 15, 30, 44, 59, 74]), (3, 6, [0, 1, 2]), (0, 6, [])])
def test_spread_indices_cover_first_to_last(n_frames: int, count_: int, expected: list[int]) -> None:
    assert preview.spread_indices(n_frames, count_) == expected
    assert math.isclose(len(expected), min(n_frames, count_))


def test_the_preview_says_where_the_speech_came_from():
    """A StyleTalk clip's video has no track: the header names the separate file instead of 'audio none'."""
    video = {"width": 256, "height": 256, "fps": 30.0, "duration_s": 18.07, "audio_codec": None}
    assert source_text(video).endswith("audio none")
    separate = {"file": "styletalk-kristinoem.audio.wav", "codec": "pcm_s16le", "duration_s": 18.02}
    assert source_text(video, separate).endswith("speech from styletalk-kristinoem.audio.wav (pcm_s16le, 18.02 s)")
