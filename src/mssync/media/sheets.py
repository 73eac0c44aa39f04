"""Contact-sheet helpers shared by the preview sheets and the rendered videos' sheets: which
frames to show, taking them from a decoding stream without decoding the rest, and a font."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np
from PIL import ImageFont


def spread_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame numbers spread evenly from the first frame to the last."""
    if n_frames <= 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n_frames - 1, num=min(count, n_frames)).round()})


def pick_frames(frames: Iterator[np.ndarray], indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Keep only the wanted frames of a decoding stream, and stop ffmpeg after the last one,
    so a long clip is never held in memory nor decoded to its end."""
    wanted = set(indices)
    if not wanted:
        return
    last = max(wanted)
    with contextlib.closing(frames):  # type: ignore[type-var]
        for index, frame in enumerate(frames):
            if index in wanted:
                yield index, frame
            if index >= last:
                break


@lru_cache(maxsize=4)
def get_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font (no system fonts needed); sized where Pillow supports it."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()
