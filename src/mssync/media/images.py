"""Reading a user's still image (a portrait), upright.

Phone cameras store the sensor's pixels as they came and record in the EXIF Orientation tag how to
turn them for display; every viewer applies it, so a user never sees that the pixels of a JPEG
shot in portrait orientation lie on their side. Ignoring the tag hands MediaPipe a sideways face
and gives a sideways video, so it is applied here (Pillow's `ImageOps.exif_transpose`), and said.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mssync.core.errors import MediaError

log = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
# What each EXIF orientation value asks a viewer to do to the stored pixels (1: nothing).
ORIENTATIONS = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored across the main diagonal",
    6: "rotated 90° clockwise",
    7: "mirrored across the other diagonal",
    8: "rotated 90° counter-clockwise",
}


def decode_image(path: Path) -> Image.Image:
    """The fully decoded image, as stored (no orientation applied); a MediaError that names the file
    and what is wrong with it when it is missing or not a decodable image (a truncated JPEG too)."""
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise MediaError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc})") from None


def upright(image: Image.Image, name: str | Path) -> Image.Image:
    """`image` turned the way its EXIF Orientation tag says it is displayed; a turn is logged at INFO."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in ORIENTATIONS:
        return image
    turned = ImageOps.exif_transpose(image)
    log.info("%s: EXIF orientation %d applied (%s, %dx%d -> %dx%d)", name, orientation, ORIENTATIONS[orientation],
             image.width, image.height, turned.width, turned.height)
    return turned


def read_image(path: Path) -> np.ndarray:
    """An image file as an upright (H, W, 3) uint8 RGB array."""
    with decode_image(path) as image:
        return np.asarray(upright(image, path).convert("RGB"))
