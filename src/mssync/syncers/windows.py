"""Syncer windows: a split's clips at one pyramid level, standardised per clip, and the starts of
their fully valid 5-sample windows. Training samples groups of them; evaluation scores them.

Each clip's syncer features (head pose + lip/jaw shape, from the motion space) and its log-mel
frames are standardised per clip (so a syncer learns co-variation, not who is speaking), then
taken down the temporal pyramid to the level.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from mssync.core.constants import STD_FLOOR
from mssync.motion.clips import load_split
from mssync.motion.space import MotionSpace
from mssync.syncers.pyramid import AUDIO_PER_MOTION, AUDIO_WINDOW, MOTION_WINDOW, temporal_pyramid

VALID_AT_LEVEL = 0.999  # a coarse sample is usable when (almost) all frames under it are


@dataclasses.dataclass
class LevelClip:
    """One clip at one pyramid level, ready for windowing."""

    clip_id: str
    motion: torch.Tensor  # (T_l, F) standardised syncer features
    audio: torch.Tensor  # (T_la, n_mels) standardised log-mel
    starts: np.ndarray  # usable window starts, in level-l motion samples
    source: str = ""  # the clip it comes from (phase-shifted copies share it)
    phase: int = 0  # first video frame of the pyramid (see prepare_level)
    scale: int = 1  # video frames per level-l sample (2**level)
    speaker: str = ""  # who speaks (the clip id when unknown): sampling caps a speaker's share

    def __post_init__(self) -> None:
        self.source = self.source or self.clip_id

    def frame_of(self, start: int) -> int:
        """Video frame where a level-l window starts, to compare windows across phases."""
        return self.phase + start * self.scale

    def grid(self, offset: int) -> np.ndarray:
        """Non-overlapping window starts on the grid offset, offset + 5, ..."""
        return self.starts[(self.starts - offset) % MOTION_WINDOW == 0]

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        motion = torch.stack([self.motion[s:s + MOTION_WINDOW] for s in starts])  # (N, 5, F)
        audio = torch.stack([self.audio[AUDIO_PER_MOTION * s:AUDIO_PER_MOTION * s + AUDIO_WINDOW] for s in starts])
        return motion, audio  # (N, 5, F), (N, 20, n_mels)


def standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension z-score; a dimension that does not vary (a still head) is exactly 0, not
    float rounding noise blown up by a tiny divisor."""
    ref = (x[mask] if mask is not None and mask.any() else x).astype(np.float64)
    std = ref.std(axis=0)
    scaled = (x - ref.mean(axis=0)) / np.where(std < STD_FLOOR, np.inf, std)
    return scaled.astype(np.float32)


def level_clip(clip_id: str, features: np.ndarray, mel: np.ndarray, valid: np.ndarray, level: int,
               kernel: int) -> LevelClip | None:
    """A clip's syncer features (T, F) and log-mel (4T, M), standardised per clip, at `level`."""
    frame_audio = np.repeat(valid, AUDIO_PER_MOTION)[: len(mel)]
    motion_l = temporal_pyramid(standardise(features, valid), level + 1, kernel)[level]
    audio_l = temporal_pyramid(standardise(mel, frame_audio), level + 1, kernel)[level]
    valid_l = temporal_pyramid(valid.astype(np.float32)[:, None], level + 1, kernel)[level][:, 0] >= VALID_AT_LEVEL
    n = min(len(motion_l) - MOTION_WINDOW, (len(audio_l) - AUDIO_WINDOW) // AUDIO_PER_MOTION) + 1
    starts = np.flatnonzero([valid_l[i:i + MOTION_WINDOW].all() for i in range(max(n, 0))])
    if not len(starts):
        return None
    return LevelClip(clip_id, torch.from_numpy(motion_l), torch.from_numpy(audio_l), starts)


def prepare_level(split: Path, space: MotionSpace, level: int, kernel: int, phases: bool = False) -> list[LevelClip]:
    """Every clip of a split at `level`, with the starts of its fully valid windows.

    `phases` (training only): each stride-2 step keeps every second sample, so starting the pyramid
    at frame 0, 1, ..., 2**level - 1 gives 2**level different coarse sequences of the same clip.
    The coarse levels, starved of windows on small corpora, see all of them."""
    clips = []
    for clip_id, clip in sorted(load_split(split, space).items()):
        features = space.syncer_features(clip.motion)
        for phase in range(2**level if phases else 1):
            lc = level_clip(f"{clip_id}@{phase}" if phases else clip_id, features[phase:],
                            clip.mel[AUDIO_PER_MOTION * phase:], clip.valid[phase:], level, kernel)
            if lc is not None:
                lc.source, lc.phase, lc.scale, lc.speaker = clip_id, phase, 2**level, clip.speaker or clip_id
                clips.append(lc)
    return clips


def evaluation_groups(clip: LevelClip, size: int) -> list[np.ndarray]:
    """Deterministic same-clip groups: on each of the 5 window grids, consecutive chunks of up to
    `size` non-overlapping windows (every window is a query once; each group's windows are disjoint)."""
    groups = []
    for offset in range(MOTION_WINDOW):
        grid = clip.grid(offset)
        groups += [grid[i:i + size] for i in range(0, len(grid), size) if len(grid[i:i + size]) >= 2]
    return groups
