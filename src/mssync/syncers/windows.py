"""Syncer windows: a split's clips at one pyramid level, standardised per clip, and the starts of
their fully valid 5-sample windows. Training samples groups of them; evaluation scores them.

Each clip's syncer features (head pose + lip/jaw shape, from the motion space) and its log-mel
frames are standardised per clip (so a syncer learns co-variation, not who is speaking), then
taken down the temporal pyramid to the level.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mssync.core.constants import STD_FLOOR
from mssync.motion.clips import ClipArrayCache
from mssync.motion.motion_cache import CachedClip, load_cache
from mssync.motion.space import MotionSpace
from mssync.syncers.pyramid import AUDIO_PER_MOTION, AUDIO_WINDOW, MOTION_WINDOW, temporal_pyramid

VALID_AT_LEVEL = 0.999  # a coarse sample is usable when (almost) all frames under it are


class LevelClip:
    """One clip at one pyramid level, ready for windowing.

    `motion` (T_l, F) standardised syncer features and `audio` (T_la, n_mels) standardised log-mel
    are either given, or made on first use by `make` and kept in a bounded LRU (`arrays`): a
    split's clips then cost their window starts in memory, not their arrays (prepare_level)."""

    def __init__(self, clip_id: str, motion: torch.Tensor | None, audio: torch.Tensor | None, starts: np.ndarray,
                 source: str = "", phase: int = 0, scale: int = 1, speaker: str = "",
                 make: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 arrays: ClipArrayCache | None = None) -> None:
        self.clip_id, self.starts = clip_id, starts  # usable window starts, in level-l motion samples
        self.source = source or clip_id  # the clip it comes from (phase-shifted copies share it)
        self.phase, self.scale = phase, scale  # first video frame of the pyramid; video frames per sample
        self.speaker = speaker  # who speaks (the clip id when unknown): sampling caps a speaker's share
        self._given = (motion, audio) if motion is not None else None
        self._make, self._arrays = make, arrays

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._given is not None:
            return self._given
        return self._arrays.get(self.clip_id, self._make)

    @property
    def motion(self) -> torch.Tensor:
        return self._tensors()[0]

    @property
    def audio(self) -> torch.Tensor:
        return self._tensors()[1]

    def frame_of(self, start: int) -> int:
        """Video frame where a level-l window starts, to compare windows across phases."""
        return self.phase + start * self.scale

    def grid(self, offset: int) -> np.ndarray:
        """Non-overlapping window starts on the grid offset, offset + 5, ..."""
        return self.starts[(self.starts - offset) % MOTION_WINDOW == 0]

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        motion, audio = self._tensors()
        m = torch.stack([motion[s:s + MOTION_WINDOW] for s in starts])  # (N, 5, F)
        a = torch.stack([audio[AUDIO_PER_MOTION * s:AUDIO_PER_MOTION * s + AUDIO_WINDOW] for s in starts])
        return m, a  # (N, 5, F), (N, 20, n_mels)


def standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension z-score; a dimension that does not vary (a still head) is exactly 0, not
    float rounding noise blown up by a tiny divisor."""
    ref = (x[mask] if mask is not None and mask.any() else x).astype(np.float64)
    std = ref.std(axis=0)
    scaled = (x - ref.mean(axis=0)) / np.where(std < STD_FLOOR, np.inf, std)
    return scaled.astype(np.float32)


def level_arrays(features: np.ndarray, mel: np.ndarray, valid: np.ndarray, level: int,
                 kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's syncer features (T, F) and log-mel (4T, M), standardised per clip, at `level`."""
    frame_audio = np.repeat(valid, AUDIO_PER_MOTION)[: len(mel)]
    motion_l = temporal_pyramid(standardise(features, valid), level + 1, kernel)[level]
    audio_l = temporal_pyramid(standardise(mel, frame_audio), level + 1, kernel)[level]
    return torch.from_numpy(motion_l), torch.from_numpy(audio_l)


def valid_at_level(valid: np.ndarray, level: int, kernel: int) -> np.ndarray:
    """The valid flags taken down the pyramid (the share of valid frames under each level-l sample),
    the same steps as `temporal_pyramid` (moving average, reflect padding, every second sample) in
    numpy: a trainer computes this for every phase of every clip before it draws anything, and on
    100-sample vectors torch's per-call overhead made that most of the set-up time (47 s of a
    25,000-clip corpus at level 3)."""
    x, pad, box = np.asarray(valid, np.float64), kernel // 2, np.full(kernel, 1.0 / kernel)
    for _ in range(level):
        if pad and len(x) > pad:  # reflect, the edge sample not repeated (as torch's "reflect")
            x = np.concatenate([x[pad:0:-1], x, x[-2:-pad - 2:-1]])
        elif pad:  # too short to reflect: repeat the edge samples (torch's "replicate")
            x = np.concatenate([np.repeat(x[:1], pad), x, np.repeat(x[-1:], pad)])
        x = np.convolve(x, box, mode="valid")[::2]
    return x


def level_starts(valid: np.ndarray, n_mel: int, level: int, kernel: int) -> np.ndarray:
    """Starts of the fully valid windows at `level`, from the valid flags alone (no features needed)."""
    valid_l = valid_at_level(valid, level, kernel) >= VALID_AT_LEVEL
    n = min(len(valid_l) - MOTION_WINDOW, (pyramid_length(n_mel, level) - AUDIO_WINDOW) // AUDIO_PER_MOTION) + 1
    if n <= 0:
        return np.zeros(0, np.int64)
    valid_run = np.convolve(valid_l[: n + MOTION_WINDOW - 1], np.ones(MOTION_WINDOW, int), mode="valid")
    return np.flatnonzero(valid_run == MOTION_WINDOW)


def pyramid_length(n: int, level: int) -> int:
    """Samples left after `level` stride-2 steps (each keeps ceil(n / 2))."""
    for _ in range(level):
        n = (n + 1) // 2
    return n


def level_clip(clip_id: str, features: np.ndarray, mel: np.ndarray, valid: np.ndarray, level: int,
               kernel: int) -> LevelClip | None:
    """A clip at `level` with its arrays made now (evaluation of a few clips, tests)."""
    starts = level_starts(valid, len(mel), level, kernel)
    if not len(starts):
        return None
    return LevelClip(clip_id, *level_arrays(features, mel, valid, level, kernel), starts)


def prepare_level(cache: Path, space: MotionSpace, level: int, kernel: int, phases: bool = False,
                  arrays: ClipArrayCache | None = None) -> list[LevelClip]:
    """Every clip of a split's motion cache (data/motion/{split}) at `level`, with the starts of its
    fully valid windows; each clip's arrays are made when first read and kept in `arrays` (a
    bounded LRU), so memory holds the starts of every clip and the arrays of a few.

    `phases` (training only): each stride-2 step keeps every second sample, so starting the pyramid
    at frame 0, 1, ..., 2**level - 1 gives 2**level different coarse sequences of the same clip.
    The coarse levels, starved of windows on small corpora, see all of them."""
    arrays = arrays or ClipArrayCache()
    clips = []
    for clip_id, clip in sorted(load_cache(cache).items()):
        valid = clip.valid  # read once for all phases
        for phase in range(2**level if phases else 1):
            starts = level_starts(valid[phase:], clip.mel_rows - AUDIO_PER_MOTION * phase, level, kernel)
            if not len(starts):
                continue
            name = f"{clip_id}@{phase}" if phases else clip_id
            make = functools.partial(_phase_arrays, space, clip, phase, level, kernel)
            clips.append(LevelClip(name, None, None, starts, source=clip_id, phase=phase, scale=2**level,
                                   speaker=clip.speaker or clip_id, make=make, arrays=arrays))
    return clips


def _phase_arrays(space: MotionSpace, clip: CachedClip, phase: int, level: int,
                  kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    features = space.syncer_features(np.asarray(clip.motion))[phase:]  # as one product: the same bits at every phase
    return level_arrays(features, np.asarray(clip.mel[AUDIO_PER_MOTION * phase:]), np.asarray(clip.valid[phase:]),
                        level, kernel)


def evaluation_groups(clip: LevelClip, size: int) -> list[np.ndarray]:
    """Deterministic same-clip groups: on each of the 5 window grids, consecutive chunks of up to
    `size` non-overlapping windows (every window is a query once; each group's windows are disjoint)."""
    groups = []
    for offset in range(MOTION_WINDOW):
        grid = clip.grid(offset)
        groups += [grid[i:i + size] for i in range(0, len(grid), size) if len(grid[i:i + size]) >= 2]
    return groups
