"""How well a syncer level tells matching audio and motion apart, on held-out speakers.

- retrieval: for each motion window, is its own audio window the most similar among K
  non-overlapping windows of the same clip? (chance = 1/K; 95% bootstrap interval over queries)
- LSE-D / LSE-C (SyncNet-style, in embedding space): D(d) = mean distance between motion windows
  and audio windows shifted by d samples, over d in +-15 frames; LSE-D = min D, LSE-C =
  median D - min D (confidence), offset = argmin d, reported in video frames.
- the same LSE on motion paired with another clip's audio: what "no sync" looks like.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mssync.syncers.model import Syncer
from mssync.syncers.pyramid import AUDIO_PER_MOTION, AUDIO_WINDOW, window_seconds
from mssync.syncers.windows import LevelClip, evaluation_groups

MAX_OFFSET_FRAMES = 15
BOOTSTRAP_SAMPLES = 2000
OFFSET_TOLERANCE_FRAMES = 2


def bootstrap_interval(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(BOOTSTRAP_SAMPLES, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))


@torch.no_grad()
def retrieval(model: Syncer, clips: list[LevelClip], group_size: int) -> dict:
    """Pooled over queries, and per clip (`per_clip`: top-1, chance, queries), so cross-validation
    can ask whether the level beats chance with speakers, not queries, as the unit."""
    hits, chance, ks = [], [], []
    by_source: dict[str, tuple[list, list]] = {}  # phase-shifted copies count for the clip they come from
    for clip in clips:
        clip_hits, clip_chance = by_source.setdefault(clip.source, ([], []))
        for starts in evaluation_groups(clip, group_size):
            m, a = model(*clip.windows(starts))
            found = (torch.argmax(m @ a.T, dim=1) == torch.arange(len(starts))).tolist()
            clip_hits += found
            clip_chance += [1 / len(starts)] * len(starts)
            hits += found
            chance += [1 / len(starts)] * len(starts)
            ks.append(len(starts))
    per_clip = {source: {"top1": float(np.mean(h)), "chance": float(np.mean(c)), "queries": len(h)}
                for source, (h, c) in sorted(by_source.items()) if h}
    hits_arr = np.array(hits, float)
    low, high = bootstrap_interval(hits_arr) if len(hits_arr) else (math.nan, math.nan)
    top1, base = float(hits_arr.mean()), float(np.mean(chance))
    return {"top1": top1, "chance": base, "ratio_to_chance": top1 / base, "ci95": [low, high],
            "queries": len(hits), "K_max": int(max(ks)), "K_mean": float(np.mean(ks)),
            "above_chance": bool(low > base), "per_clip": per_clip}


@torch.no_grad()
def embed_all(model: Syncer, motion_clip: LevelClip, audio_clip: LevelClip) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion embeddings at the motion clip's valid starts; audio embeddings at every start."""
    m = model.motion(motion_clip.windows(motion_clip.starts)[0])
    n_audio = (len(audio_clip.audio) - AUDIO_WINDOW) // AUDIO_PER_MOTION + 1
    audio = torch.stack([audio_clip.audio[AUDIO_PER_MOTION * j:AUDIO_PER_MOTION * j + AUDIO_WINDOW]
                         for j in range(n_audio)])
    return m, model.audio(audio)


def distance_curve(model: Syncer, motion_clip: LevelClip, audio_clip: LevelClip, max_shift: int) -> dict[int, float]:
    """D(d) for d in [-max_shift, max_shift] level samples (audio window = motion start + d).

    Every shift averages over the same motion windows (those whose audio exists at all shifts),
    so D(d) changes only because the pairing changes, not because windows enter or leave."""
    m, a = embed_all(model, motion_clip, audio_clip)
    starts = torch.as_tensor(motion_clip.starts)
    inner = (starts - max_shift >= 0) & (starts + max_shift < len(a))
    if inner.any():
        m, starts = m[inner], starts[inner]
    curve = {}
    for d in range(-max_shift, max_shift + 1):
        j = starts + d
        keep = (j >= 0) & (j < len(a))
        if keep.any():
            curve[d] = float(torch.linalg.vector_norm(m[keep] - a[j[keep]], dim=1).mean())
    return curve


def lse(curve: dict[int, float], level: int) -> dict:
    shifts = np.array(list(curve))
    dists = np.array(list(curve.values()))
    best = int(np.argmin(dists))
    return {"lse_d": float(dists[best]), "lse_c": float(np.median(dists) - dists[best]),
            "offset_frames": int(shifts[best]) * 2**level}


def evaluate_level(model: Syncer, clips: list[LevelClip], group_size: int) -> dict:
    """All the level's numbers on a split (clips standardised and windowed by prepare_level)."""
    level = model.level
    max_shift = math.ceil(MAX_OFFSET_FRAMES / 2**level)
    own, other = [], []
    for i, clip in enumerate(clips):
        own.append({"clip_id": clip.clip_id, **lse(distance_curve(model, clip, clip, max_shift), level)})
        partner = clips[(i + 1) % len(clips)]
        if partner is not clip:
            other.append(lse(distance_curve(model, clip, partner, max_shift), level))
    offsets = np.array([r["offset_frames"] for r in own])
    return {
        "level": level,
        "window_s": window_seconds(level),
        "retrieval": retrieval(model, clips, group_size),
        "lse_own_audio": {"lse_d": float(np.mean([r["lse_d"] for r in own])),
                          "lse_c": float(np.mean([r["lse_c"] for r in own]))},
        "lse_other_clip_audio": {"lse_d": float(np.mean([r["lse_d"] for r in other])) if other else None,
                                 "lse_c": float(np.mean([r["lse_c"] for r in other])) if other else None},
        "offsets": {"per_clip": {r["clip_id"]: r["offset_frames"] for r in own},
                    "max_search_frames": max_shift * 2**level,
                    "within_2_frames": float(np.mean(np.abs(offsets) <= OFFSET_TOLERANCE_FRAMES))},
    }
