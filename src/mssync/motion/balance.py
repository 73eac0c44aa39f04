"""Speaker-balanced sampling: no speaker may own more than a set share of the training windows.

Drawing windows uniformly lets one prolific speaker dominate: in the sample corpus one GRID speaker
holds 200 of 245 clips (over half the speech), in VoxCeleb2 a few celebrities hold thousands of
utterances. A syncer trained that way learns that speaker's mouth, and a generator that speaker's
head motion. The trainers therefore draw a clip with probability proportional to its windows,
except that a speaker whose share would exceed `max_share` is scaled down to it and the rest is
shared among the others in proportion to their windows (water filling). When no distribution can
respect the cap (fewer than 1 / max_share speakers), every speaker gets an equal share.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

log = logging.getLogger(__name__)

SHOWN_SPEAKERS = 5  # the largest shares named in the training log


def speaker_shares(speakers: list[str], windows: np.ndarray, max_share: float) -> dict[str, float]:
    """speaker -> share of the drawn windows, each at most `max_share` where that is possible."""
    totals: Counter[str] = Counter()
    for speaker, n in zip(speakers, windows):
        totals[speaker] += float(n)
    totals = Counter({s: n for s, n in totals.items() if n > 0})
    if not totals:
        return {}
    if max_share * len(totals) < 1:  # infeasible: the closest is an equal share each
        return {s: 1 / len(totals) for s in totals}
    shares, capped = {}, set()
    while True:
        free = {s: n for s, n in totals.items() if s not in capped}
        mass = 1 - max_share * len(capped)
        total_free = sum(free.values())
        shares = {s: max_share for s in capped} | {s: mass * n / total_free for s, n in free.items()}
        over = {s for s in free if shares[s] > max_share + 1e-12}
        if not over:
            return shares
        capped |= over


def clip_probabilities(speakers: list[str], windows: np.ndarray, max_share: float) -> np.ndarray:
    """Per-clip draw probabilities: each speaker's share, split among its clips by their windows."""
    windows = np.asarray(windows, float)
    shares = speaker_shares(speakers, windows, max_share)
    per_speaker: Counter[str] = Counter()
    for speaker, n in zip(speakers, windows):
        per_speaker[speaker] += n
    p = np.array([shares.get(s, 0.0) * n / per_speaker[s] if n > 0 else 0.0 for s, n in zip(speakers, windows)])
    return p / p.sum()


class ClipDraws:
    """Draws clip indices with fixed probabilities in O(log n) a draw.

    `Generator.choice(n, p=p)` checks and sums the whole of p on every call, so drawing a window
    cost O(number of clips): a trainer's run grew with the square of the corpus. This keeps the
    cumulative sum once and does what choice does with it (one uniform per draw, searchsorted on
    the right), so a seeded run draws exactly the clips it drew before."""

    def __init__(self, p: np.ndarray) -> None:
        p = np.asarray(p, float)
        if p.ndim != 1 or not len(p) or (p < 0).any() or not p.sum() > 0:
            raise ValueError("draw probabilities must be a non-empty vector of non-negative numbers")
        self.cdf = p.cumsum()
        self.cdf /= self.cdf[-1]

    @classmethod
    def by_windows(cls, windows: np.ndarray) -> "ClipDraws":
        """Each clip in proportion to its windows (no speaker cap)."""
        weights = np.asarray(windows, float)
        return cls(weights / weights.sum())

    def __call__(self, rng: np.random.Generator, size: int | None = None) -> int | np.ndarray:
        index = self.cdf.searchsorted(rng.random(size), side="right")
        return int(index) if size is None else index


def log_shares(what: str, speakers: list[str], windows: np.ndarray, max_share: float) -> dict[str, float]:
    """Log the largest speakers' shares of the drawn windows next to their shares of the data."""
    windows = np.asarray(windows, float)
    shares = speaker_shares(speakers, windows, max_share)
    raw: Counter[str] = Counter()
    for speaker, n in zip(speakers, windows):
        raw[speaker] += n / windows.sum()
    top = sorted(shares, key=lambda s: -raw[s])[:SHOWN_SPEAKERS]
    log.info("%s: %d speakers; share of drawn windows (of the data) for the largest: %s; cap %.2f", what,
             len(shares), ", ".join(f"{s} {shares[s]:.3f} ({raw[s]:.3f})" for s in top), max_share)
    return shares
