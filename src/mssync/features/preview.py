"""Preview stage: one PNG contact sheet per clip, so a person can check a clip at a glance.

For a usable clip the sheet shows a few frames of the 256x256 crop with the landmarks the
features stage stored for exactly those frames, so a misplaced crop or a landmark track that
drifted is visible without opening the Parquet file. For a clip rejected at crop it shows the
raw frames with every face the landmarker finds there (and the crop box when one was placed),
so the rejection reason ("several faces", "no face") can be checked by eye. When even the raw
video cannot be read, the sheet still states the reason: every clip gets a sheet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from mssync.core.atomic import atomic_path
from mssync.core.config import LandmarkerSettings, PreviewSettings
from mssync.core.errors import MediaError
from mssync.core.records import OK, read_record
from mssync.features.schema import list_column_to_numpy, read_metadata, read_table
from mssync.media.ffmpeg import MediaInfo, iter_frames, probe
from mssync.media.landmarks import detect_faces, open_landmarker
from mssync.media.mesh import (
    FACE_OVAL,
    INNER_LIP_LANDMARKS,
    LEFT_EYE,
    LEFT_EYEBROW,
    OUTER_LIP_LANDMARKS,
    RIGHT_EYE,
    RIGHT_EYEBROW,
)
from mssync.media.sheets import get_font, pick_frames, spread_indices

log = logging.getLogger(__name__)

# Layout (pixels). Tiles are square; raw frames are letterboxed into them.
TILE = 256
COLUMNS = 3
GAP = 6
CAPTION_H = 20  # strip under each tile for the frame number / time
TITLE_PAD = 8
LINE_SPACING = 4
TITLE_FONT_SIZE = 14
CAPTION_FONT_SIZE = 12
MAX_TITLE_LINES = 12  # a reason carrying a whole ffmpeg log must not make a metre-high sheet
# zlib level of the PNG: 1 writes a 6-tile sheet in ~30 ms instead of level 6's ~95 ms (Pillow's
# default), for ~15% more bytes (~460 KB instead of ~400 KB); the pixels are the same
PNG_COMPRESS_LEVEL = 1
FACE_SEARCH_FACES = 4  # faces the landmarker may report on a raw frame of a rejected clip

# Colours (RGB). Drawn colours are pure enough that tests can count their pixels.
BACKGROUND = (18, 18, 22)
TITLE_BG = (40, 40, 48)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 180)
OK_TEXT = (140, 230, 140)
REJECTED_TEXT = (255, 150, 120)
LANDMARK_COLOUR = (0, 200, 255)
CONTOUR_COLOUR = (255, 220, 0)
LIP_COLOUR = (255, 0, 200)
FACE_BOX_COLOUR = (255, 40, 40)
CROP_BOX_COLOUR = (40, 255, 40)
LABEL_TEXT = (0, 0, 0)
NO_FACE_TEXT = (255, 90, 90)

# MediaPipe face-mesh loops (media/mesh.py), drawn as polylines.
CLOSED_CONTOURS = (FACE_OVAL, LEFT_EYE, RIGHT_EYE)
OPEN_CONTOURS = (*LEFT_EYEBROW, *RIGHT_EYEBROW)
LIP_CONTOURS = (OUTER_LIP_LANDMARKS, INNER_LIP_LANDMARKS)


@dataclasses.dataclass
class Tile:
    """One grid cell: a TILE x TILE image and the caption printed under it."""

    image: Image.Image
    caption: str


TitleLine = tuple[str, tuple[int, int, int]]


# ---------------------------------------------------------------- entry point


def make_preview(
    *,
    raw_record: Path,
    crop_record: Path,
    features: Path | None,
    out: Path,
    settings: PreviewSettings,
    landmarker: LandmarkerSettings,
    rejection: dict | None = None,
    frames: Mapping[int, np.ndarray] | None = None,
) -> None:
    """Write the contact sheet for one clip to `out` (PNG, atomically), whatever its status.
    `rejection`: a later stage's rejection record of a cropped clip (features), shown first.
    `frames`: the crop's frames by number, as the features stage decoded them (at least those of
    `preview_indices`; one that is missing did not decode), so the crop is not decoded again."""
    download = read_record(raw_record)
    if download["status"] != OK:
        title = rejected_title(download)
        tiles: list[Tile] = []
    else:
        record = read_record(crop_record)
        if record["status"] == OK:
            title, tiles = ok_sheet(record, crop_record.parent, features, settings.frames, frames)
            title = rejected_title(rejection) + title if rejection else title
        else:
            title, tiles = rejected_sheet(record, download, raw_record.parent, settings.frames, landmarker)
    _save_sheet(render_sheet(title, tiles), out)
    log.info("%s: preview with %d frame(s) -> %s", download.get("clip_id"), len(tiles), out)


def make_error_preview(clip_id: str, reason: str, out: Path) -> None:
    """A text-only sheet for a clip whose preview itself failed: the reason, where a reader looks."""
    _save_sheet(render_sheet([(f"{clip_id}  PREVIEW FAILED: {reason}", REJECTED_TEXT)], []), out)


def _save_sheet(sheet: Image.Image, out: Path) -> None:
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


# ---------------------------------------------------------------- usable clips


def preview_indices(record: dict, n_tiles: int) -> list[int]:
    """The frame numbers an ok clip's sheet shows."""
    return spread_indices(int(record["output"]["frames"]), n_tiles)


def ok_sheet(record: dict, clips_dir: Path, features: Path | None, n_tiles: int,
             frames: Mapping[int, np.ndarray] | None = None) -> tuple[list[TitleLine], list[Tile]]:
    """Crop frames with the stored landmarks of the same frames drawn on them; the frames are
    decoded from the crop unless given (see make_preview)."""
    output = record["output"]
    fps, size = float(output["fps"]), int(output["size"])
    indices = preview_indices(record, n_tiles)
    note = ""
    face_fraction: float | None = None
    marks: dict[int, np.ndarray | None] = {}
    if features is None:
        note = "no features file given: landmarks not drawn"
    elif not Path(features).is_file():
        note = f"features file missing ({features}): landmarks not drawn"
    else:
        face_fraction = float(read_metadata(features).get("face_fraction", float("nan")))
        marks = landmarks_for_frames(Path(features), indices)

    tiles = []
    if frames is None:
        picked = pick_frames(iter_frames(clips_dir / output["video"], (size, size)), indices)
    else:
        picked = ((index, frames[index]) for index in indices if index in frames)
    for index, frame in picked:
        image = Image.fromarray(frame).convert("RGB")
        if image.size != (TILE, TILE):
            image = image.resize((TILE, TILE), Image.Resampling.BILINEAR)
        if marks:
            points = marks.get(index)
            if points is None:
                draw_no_face(image)
            else:
                draw_landmarks(image, points[:, :2] * TILE)
        tiles.append(Tile(image, f"frame {index}  {index / fps:.2f} s"))
    if len(tiles) < len(indices):
        note = "; ".join(filter(None, [note, f"only {len(tiles)} of {len(indices)} wanted frames decoded"]))
    return ok_title(record, face_fraction, note), tiles


def ok_title(record: dict, face_fraction: float | None, note: str) -> list[TitleLine]:
    """What the crop stage decided (box, source) and how often the features stage saw a face."""
    output, box, source = record["output"], record.get("box") or {}, record.get("source") or {}
    faces = "face n/a" if face_fraction is None or math.isnan(face_fraction) else f"face in {face_fraction:.1%} of frames"
    lines: list[TitleLine] = [
        (f"{record['clip_id']}  ok  {output['frames']} frames  {float(output['duration_s']):.2f} s  {faces}", OK_TEXT),
        (f"crop box x={box.get('x')} y={box.get('y')} side={box.get('side')}"
         f"{'  (clamped to the frame)' if box.get('clamped') else ''}   ->  {output['size']}x{output['size']} "
         f"@ {output['fps']} fps", TEXT),
        (source_text(source, record.get("audio_source")), TEXT),
    ]
    if note:
        lines.append((note, REJECTED_TEXT))
    return lines


def landmarks_for_frames(features: Path, indices: Sequence[int]) -> dict[int, np.ndarray | None]:
    """(478, 3) landmarks per wanted frame number; None where the landmarker found no face."""
    table, _ = read_table(features, columns=["frame", "face_found", "landmarks"])
    row_of = {int(f): i for i, f in enumerate(table.column("frame").to_numpy())}
    wanted = [i for i in indices if i in row_of]
    picked = table.take([row_of[i] for i in wanted])
    points = list_column_to_numpy(picked.column("landmarks"))
    found = picked.column("face_found").to_numpy(zero_copy_only=False)
    out: dict[int, np.ndarray | None] = {i: None for i in indices}
    for k, index in enumerate(wanted):
        if found[k] and np.isfinite(points[k, :, :2]).all():
            out[index] = points[k]
    return out


def draw_landmarks(image: Image.Image, xy: np.ndarray) -> None:
    """Dots for all points, then contours on top; lips in their own colour (they matter most)."""
    draw = ImageDraw.Draw(image)
    pts = [(int(round(x)), int(round(y))) for x, y in xy]
    draw.point(pts, fill=LANDMARK_COLOUR)
    for loop in CLOSED_CONTOURS:
        draw.line([pts[i] for i in (*loop, loop[0])], fill=CONTOUR_COLOUR, width=1)
    for line in OPEN_CONTOURS:
        draw.line([pts[i] for i in line], fill=CONTOUR_COLOUR, width=1)
    for loop in LIP_CONTOURS:
        draw.line([pts[i] for i in (*loop, loop[0])], fill=LIP_COLOUR, width=1)


def draw_no_face(image: Image.Image) -> None:
    """Say so on the tile: an empty tile would look like a drawing bug."""
    draw = ImageDraw.Draw(image)
    font = get_font(TITLE_FONT_SIZE)
    text = "no face"
    width = font.getlength(text)
    x, y = (TILE - width) / 2, TILE / 2 - TITLE_FONT_SIZE
    draw.rectangle([x - 6, y - 4, x + width + 6, y + TITLE_FONT_SIZE + 8], fill=BACKGROUND)
    draw.text((x, y), text, font=font, fill=NO_FACE_TEXT)


# ---------------------------------------------------------------- rejected clips


def rejected_title(record: dict) -> list[TitleLine]:
    """The rejection reason first: it is what the reader came for."""
    return [(f"{record.get('clip_id', '?')}  REJECTED at {record.get('stage', '?')}: "
             f"{record.get('reason') or 'no reason recorded'}", REJECTED_TEXT)]


def rejected_sheet(
    record: dict,
    download: dict,
    raw_dir: Path,
    n_tiles: int,
    landmarker: LandmarkerSettings,
) -> tuple[list[TitleLine], list[Tile]]:
    """Raw frames with every face found on them, to show why the crop stage said no."""
    title = rejected_title(record)
    details = []
    if record.get("source"):
        details.append(source_text(record["source"], record.get("audio_source")))
    if record.get("probe"):
        details.append(probe_text(record["probe"]))
    title += [(line, TEXT) for line in details]

    raw = raw_dir / download["file"]
    try:
        info = probe(raw)
    except MediaError as exc:
        said = str(exc) in str(record.get("reason"))  # crop already quoted ffmpeg: don't repeat it
        return title + [("raw video not shown: it cannot be read" if said else f"raw video not shown: {exc}",
                         DIM_TEXT)], []
    start, duration = raw_span(record, download, info)
    box = record.get("box")
    tiles = raw_tiles(info, start, duration, n_tiles, box, landmarker)
    if not tiles:
        return title + [(f"raw video not shown: no frame of {raw.name} decodes", DIM_TEXT)], []
    legend = f"raw frames {start:.2f}-{start + duration:.2f} s; red: faces the landmarker finds now (numbered, largest first)"
    if box:
        legend += "; green: crop box from the record"
    return title + [(legend, DIM_TEXT)], tiles


def raw_span(record: dict, download: dict, info: MediaInfo) -> tuple[float, float]:
    """The part of the raw video the crop stage looked at: its span, else the manifest trim."""
    span = record.get("span") or {}
    trim = download.get("trim") or {}
    start = float(span.get("start_s") or trim.get("start_s") or 0.0)
    start = min(max(start, 0.0), max(info.duration_s, 0.0))
    duration = float(span.get("duration_s") or 0.0)
    if duration <= 0:
        end = trim.get("end_s")
        end = info.duration_s if end is None else min(float(end), info.duration_s)
        duration = end - start
    if duration <= 0:  # nothing left of the span (e.g. "too short"): show the whole file
        start, duration = 0.0, info.duration_s
    return start, duration


def raw_tiles(
    info: MediaInfo,
    start: float,
    duration: float,
    n_tiles: int,
    box: dict | None,
    landmarker_settings: LandmarkerSettings,
) -> list[Tile]:
    """`n_tiles` frames spread over the span, letterboxed, with face boxes and the crop box."""
    rate = n_tiles / max(duration, 1e-3)
    width, height = info.display_size
    frames = iter_frames(info.path, (width, height), fps=rate, start_s=start, duration_s=duration)
    tiles = []
    with open_landmarker(landmarker_settings, video=False, num_faces=FACE_SEARCH_FACES) as landmarker:
        with contextlib.closing(frames):
            for i, frame in enumerate(itertools.islice(frames, n_tiles)):
                faces = detect_faces(landmarker, frame)
                image, scale, offset = letterbox(frame)
                draw = ImageDraw.Draw(image)
                if box:
                    draw_box(draw, _box_corners(box), scale, offset, CROP_BOX_COLOUR, label=None)
                for number, face in enumerate(faces, start=1):
                    draw_box(draw, face.box_px(width, height), scale, offset, FACE_BOX_COLOUR, label=str(number))
                plural = "face" if len(faces) == 1 else "faces"
                tiles.append(Tile(image, f"~{start + i / rate:.2f} s  {len(faces)} {plural}"))
    return tiles


def _box_corners(box: dict) -> tuple[float, float, float, float]:
    x, y, side = float(box["x"]), float(box["y"]), float(box["side"])
    return x, y, x + side, y + side


def letterbox(frame: np.ndarray) -> tuple[Image.Image, float, tuple[int, int]]:
    """Scale a frame to fit a tile (long side = TILE), centred; returns the scale and offset
    so boxes measured on the full-size frame land in the right place."""
    height, width = frame.shape[:2]
    scale = TILE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(frame).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE, TILE), BACKGROUND)
    offset = ((TILE - size[0]) // 2, (TILE - size[1]) // 2)
    tile.paste(small, offset)
    return tile, scale, offset


def draw_box(
    draw: ImageDraw.ImageDraw,
    corners: tuple[float, float, float, float],
    scale: float,
    offset: tuple[int, int],
    colour: tuple[int, int, int],
    label: str | None,
) -> None:
    """A 2 px rectangle in tile coordinates, with an optional number tag at its top-left."""
    x0, y0, x1, y1 = (round(c * scale + o) for c, o in zip(corners, (*offset, *offset)))
    draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
    if label:
        font = get_font(CAPTION_FONT_SIZE)
        w = font.getlength(label)
        ty = max(0, y0 - CAPTION_FONT_SIZE - 4)
        draw.rectangle([x0, ty, x0 + w + 6, ty + CAPTION_FONT_SIZE + 3], fill=colour)
        draw.text((x0 + 3, ty + 1), label, font=font, fill=LABEL_TEXT)


def source_text(source: dict, audio_source: dict | None = None) -> str:
    """Source video facts that explain odd crops: size, rotation, frame rate, length; and where the
    speech came from (the video's track, or the row's separate audio file)."""
    if not source:
        return "source: unknown"
    parts = [f"source {source.get('width')}x{source.get('height')}"]
    if source.get("rotation"):
        parts.append(f"rotated {source['rotation']} deg")
    if source.get("fps") is not None:
        parts.append(f"{float(source['fps']):g} fps" + (" (variable)" if source.get("variable_frame_rate") else ""))
    if source.get("duration_s") is not None:
        parts.append(f"{float(source['duration_s']):.2f} s")
    if audio_source:
        parts.append(f"speech from {audio_source.get('file')} ({audio_source.get('codec')}, "
                     f"{float(audio_source.get('duration_s') or 0):.2f} s)")
    else:
        parts.append(f"audio {source.get('audio_codec') or 'none'}")
    return ", ".join(parts)


def probe_text(probe_stats: dict) -> str:
    return (f"crop probe: a face in {probe_stats.get('face_frames')}/{probe_stats.get('frames')} sampled frames, "
            f"a second comparable face in {probe_stats.get('multi_face_frames')}, "
            f"at most {probe_stats.get('max_faces')} face(s)")


# ---------------------------------------------------------------- shared helpers


def wrap_text(text: str, font: Any, max_width: float) -> list[str]:
    """Greedy word wrap by rendered width; words longer than a line (paths) are cut."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and font.getlength(word) > max_width:
                cut = _fitting_prefix(word, font, max_width)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _fitting_prefix(word: str, font: Any, max_width: float) -> int:
    """Length of the longest prefix of `word` that fits (at least one character)."""
    n = 1
    while n < len(word) and font.getlength(word[: n + 1]) <= max_width:
        n += 1
    return n


def sheet_width() -> int:
    return COLUMNS * TILE + (COLUMNS + 1) * GAP


def grid_height(n_tiles: int) -> int:
    """Height of the tile grid under the title bar (0 for a text-only sheet)."""
    rows = math.ceil(n_tiles / COLUMNS)
    return rows * (TILE + CAPTION_H + GAP)


def render_sheet(title: list[TitleLine], tiles: list[Tile]) -> Image.Image:
    """Title bar (wrapped, light on dark) over a COLUMNS-wide grid of captioned tiles."""
    font, caption_font = get_font(TITLE_FONT_SIZE), get_font(CAPTION_FONT_SIZE)
    width = sheet_width()
    lines: list[TitleLine] = []
    for text, colour in title:
        lines += [(line, colour) for line in wrap_text(text, font, width - 2 * TITLE_PAD)]
    if len(lines) > MAX_TITLE_LINES:
        lines = lines[: MAX_TITLE_LINES - 1] + [("... (see the record for the full text)", DIM_TEXT)]
    line_h = TITLE_FONT_SIZE + LINE_SPACING
    title_h = 2 * TITLE_PAD + len(lines) * line_h
    sheet = Image.new("RGB", (width, title_h + GAP + grid_height(len(tiles))), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([0, 0, width - 1, title_h - 1], fill=TITLE_BG)
    for row, (text, colour) in enumerate(lines):
        draw.text((TITLE_PAD, TITLE_PAD + row * line_h), text, font=font, fill=colour)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, COLUMNS)
        x = GAP + col * (TILE + GAP)
        y = title_h + GAP + row * (TILE + CAPTION_H + GAP)
        sheet.paste(tile.image, (x, y))
        draw.text((x + 2, y + TILE + 3), tile.caption, font=caption_font, fill=DIM_TEXT)
    return sheet
