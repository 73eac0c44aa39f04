"""The temporal pyramid operator, one function for motion and audio alike.

Level l of a signal is the signal after l rounds of: centred moving average of width `kernel`
(reflect padding, so the ends are not pulled towards zero), then keep every second sample.
Motion at 25 fps and audio at 100 Hz keep their 1:4 ratio at every level, so a syncer window of
5 motion samples and 20 audio samples spans 0.2 * 2**l seconds at level l. Written in torch so
the generator's sync loss can backpropagate through it; numpy arrays go through unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mssync.core.constants import FPS

MOTION_WINDOW = 5  # motion samples per syncer window, at every level
AUDIO_WINDOW = 20  # audio samples per syncer window (4 per motion sample)
AUDIO_PER_MOTION = AUDIO_WINDOW // MOTION_WINDOW


def window_seconds(level: int, fps: float = FPS) -> float:
    return MOTION_WINDOW * 2**level / fps


def pyramid_step(x: torch.Tensor, kernel: int = 7) -> torch.Tensor:
    """One level down: (..., T, C) -> (..., ceil(T / 2), C)."""
    if kernel % 2 != 1:
        raise ValueError(f"pyramid kernel must be odd, got {kernel}")
    lead, (t, c) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, t, c).transpose(1, 2)  # (B, C, T)
    pad = kernel // 2
    if pad and t > 1:
        mode = "reflect" if t > pad else "replicate"
        flat = F.pad(flat, (pad, pad), mode=mode)
    elif pad:
        flat = F.pad(flat, (pad, pad), mode="replicate")
    smooth = F.avg_pool1d(flat, kernel_size=kernel, stride=1)  # (B, C, T)
    return smooth[..., ::2].transpose(1, 2).reshape(*lead, -1, c)


def temporal_pyramid(x: torch.Tensor | np.ndarray, levels: int, kernel: int = 7) -> list:
    """[level 0 (the input), level 1, ..., level `levels`-1], same type as the input."""
    as_numpy = isinstance(x, np.ndarray)
    current = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
    out = [current]
    for _ in range(levels - 1):
        current = pyramid_step(current, kernel)
        out.append(current)
    return [level.numpy() for level in out] if as_numpy else out
