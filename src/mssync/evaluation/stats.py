"""Speaker-level statistics for the speaker-disjoint cross-validation (issue 15).

The sample corpus is very unbalanced (one speaker holds 200 of its 245 clips), and clips of one
speaker are not independent: they share a face, a voice and a recording set-up. So every number
here treats the SPEAKER as the unit:

- a clip's value is first averaged within its speaker, then the estimate is the plain mean of
  those speaker means (each speaker weighs the same, however many clips it has);
- the bootstrap resamples speakers with replacement (a cluster bootstrap), never clips, so the
  interval reflects how much the result would change with other speakers, which is the claim
  cross-validation on held-out speakers makes.

Paired differences (MS-Sync minus single-scale, minus no-sync, generated minus static, generated
minus real with another clip's audio) are taken per clip before averaging, so what the clips share
(their audio, their speaker) cancels. A sync level counts as measurable only where the evaluation
syncers beat chance on held-out speakers: `measurable` checks that the interval's low end is above
chance. numpy only, so the evaluation and the report can use it without torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000  # percentile intervals want >= 1000 resamples (Efron & Tibshirani); 2000 costs milliseconds
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95
SIGNIFICANT_DIGITS = 6  # as_dict rounding: more than any metric here is worth, short enough to diff by eye
MIN_SPEAKERS_FOR_CLAIM = 2  # one speaker gives no spread, so no interval that could support a claim

HIGHER = "higher"
LOWER = "lower"
NOT_SIGNIFICANT = "not significant"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A speaker-level estimate and its bootstrap interval.

    estimate: mean over speakers of each speaker's mean; low/high: percentile ends of the
    bootstrap distribution at `level`; n_speakers: how many speakers had a finite value.
    """

    estimate: float
    low: float
    high: float
    n_speakers: int
    level: float

    def excludes(self, value: float) -> bool:
        """True when `value` lies outside [low, high]: the data rule it out at this level."""
        return value < self.low or value > self.high

    def as_dict(self) -> dict:
        """JSON-ready: floats rounded to SIGNIFICANT_DIGITS so metrics files diff cleanly."""
        return {
            "estimate": _round(self.estimate),
            "low": _round(self.low),
            "high": _round(self.high),
            "n_speakers": int(self.n_speakers),
            "level": _round(self.level),
        }


def _round(value: float) -> float:
    value = float(value)
    return value if not math.isfinite(value) else float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _per_clip(
    values: Sequence[float] | np.ndarray, speakers: Sequence[str] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """values as a float vector and speakers as a string vector of the same length."""
    values = np.asarray(values, dtype=np.float64).ravel()
    speakers = np.asarray(speakers).astype(str).ravel()
    if len(values) != len(speakers):
        raise ValueError(
            f"{len(values)} values but {len(speakers)} speakers: pass one speaker per clip, in the values' order"
        )
    return values, speakers


def speaker_means(
    values: Sequence[float] | np.ndarray, speakers: Sequence[str] | np.ndarray
) -> tuple[list[str], np.ndarray]:
    """(speaker names sorted, each speaker's mean of its finite values).

    Non-finite values (NaN: a metric that could not be computed for a clip, e.g. a peak lag of a
    static head) are dropped, so they neither poison the mean nor count as zero; a speaker left
    with no finite value is dropped altogether rather than reported as NaN.
    """
    values, speakers = _per_clip(values, speakers)
    keep = np.isfinite(values)
    names, index = np.unique(speakers[keep], return_inverse=True)
    sums = np.bincount(index, weights=values[keep], minlength=len(names))
    counts = np.bincount(index, minlength=len(names))
    return names.tolist(), sums / np.maximum(counts, 1)


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    speakers: Sequence[str] | np.ndarray,
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE_LEVEL,
) -> Interval:
    """Percentile interval of the mean of speaker means, resampling speakers with replacement.

    Resampling speakers rather than clips is what makes the interval honest on this corpus: clips
    of one speaker are correlated, and a clip bootstrap would let the 200-clip speaker look like
    200 independent observations. All resamples are drawn as one (n_boot, n_speakers) index
    matrix, so 2000 resamples of 40 speakers take milliseconds; the same seed gives the same
    interval.

    With one speaker no spread can be estimated: the interval collapses to low == high ==
    estimate (and `verdict`/`measurable` refuse to call it significant). With no speaker at all
    (every value NaN, or no clips) there is nothing to estimate: ValueError.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. {CONFIDENCE_LEVEL}), got {level}")
    names, means = speaker_means(values, speakers)
    n = len(names)
    if n == 0:
        raise ValueError(
            "no speaker has a finite value: nothing to bootstrap (are all values NaN, or is the input empty?)"
        )
    estimate = float(means.mean())
    if n == 1:
        return Interval(estimate, estimate, estimate, 1, level)
    rng = np.random.default_rng(seed)
    resampled = means[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)  # (n_boot,)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), n, level)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    speakers: Sequence[str] | np.ndarray,
    **bootstrap_kwargs,
) -> Interval:
    """Speaker-level interval of a - b, where a and b are scored on the same clips in the same order.

    The difference is taken per clip first, so each clip is compared with itself (same audio,
    same speaker) and only then averaged within speaker and bootstrapped over speakers. A clip
    where either side is NaN has no difference and is dropped. Keyword arguments go to
    `cluster_bootstrap` (n_boot, seed, level).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    n_speakers = len(np.asarray(speakers).ravel())
    if not len(a) == len(b) == n_speakers:
        raise ValueError(
            f"paired values must be aligned per clip: a has {len(a)}, b has {len(b)}, speakers has {n_speakers} "
            "entries; score both variants on the same clips, in the same order"
        )
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, dropped like any other missing pair
        difference = a - b
    return cluster_bootstrap(difference, speakers, **bootstrap_kwargs)


def seed_spread(per_seed: dict[int, float]) -> dict:
    """How much a result moves between generator seeds: n, mean, sd (ddof=1; 0 for one seed), min, max.

    Seeds are reported apart from the speaker interval because they answer another question
    (would retraining change the result?) and there are too few of them to bootstrap.
    """
    if not per_seed:
        raise ValueError("seed_spread needs at least one seed's value")
    values = np.array([per_seed[s] for s in sorted(per_seed)], dtype=np.float64)
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        "n": len(values),
        "mean": _round(values.mean()),
        "sd": _round(sd),
        "min": _round(values.min()),
        "max": _round(values.max()),
    }


def measurable(interval: Interval, chance: float) -> bool:
    """A sync level counts only where the evaluation syncers beat chance on held-out speakers.

    True when the interval's low end is above chance, i.e. better than chance at the interval's
    level; a one-speaker interval has no spread and never counts.
    """
    return interval.n_speakers >= MIN_SPEAKERS_FOR_CLAIM and interval.low > chance


def verdict(interval: Interval, null: float = 0.0) -> str:
    """Says "higher" or "lower" when the interval lies wholly above or below `null`, else "not significant".

    For a paired difference a - b, "higher" means a beats b on held-out speakers at the
    interval's level (for a lower-is-better metric, read "lower" as the win). A one-speaker
    interval has no spread, so it is "not significant" whatever its estimate.
    """
    if interval.n_speakers < MIN_SPEAKERS_FOR_CLAIM:
        return NOT_SIGNIFICANT
    if interval.low > null:
        return HIGHER
    if interval.high < null:
        return LOWER
    return NOT_SIGNIFICANT
