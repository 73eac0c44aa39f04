"""Speaker-level statistics (evaluation/stats.py): cluster bootstrap, paired differences, verdicts, forest plot.

The synthetic corpora copy the real one's shape: ~30 speakers with unequal clip counts, one of them
holding most clips, and a per-speaker offset shared by all of that speaker's clips (clips of one
speaker are correlated; that is why the bootstrap resamples speakers).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from mssync.evaluation import plots
from mssync.evaluation.stats import (
    HIGHER,
    LOWER,
    NOT_SIGNIFICANT,
    Interval,
    cluster_bootstrap,
    measurable,
    paired_difference,
    seed_spread,
    speaker_means,
    verdict,
)

N_SPEAKERS = 30
BIG_SPEAKER_CLIPS = 150


def corpus(seed: int, speaker_sd: float = 0.2, clip_sd: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(speakers per clip, a per clip, a speaker-level random offset per clip) with unequal clip counts."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([[BIG_SPEAKER_CLIPS], rng.integers(1, 6, size=N_SPEAKERS - 1)])
    speakers = np.repeat([f"spk{i:02d}" for i in range(N_SPEAKERS)], counts)
    offsets = rng.normal(0.0, speaker_sd, size=N_SPEAKERS)
    a = np.repeat(rng.normal(1.0, 0.5, size=N_SPEAKERS), counts) + rng.normal(0.0, clip_sd, size=len(speakers))
    return speakers, a, np.repeat(offsets, counts)


def test_known_paired_difference_is_recovered():
    speakers, a, _ = corpus(seed=1)
    rng = np.random.default_rng(2)
    b = a - 0.3 + rng.normal(0.0, 0.05, size=len(a))
    interval = paired_difference(a, b, speakers)
    assert interval.n_speakers == N_SPEAKERS
    assert not interval.excludes(0.3)
    assert interval.excludes(0.0)
    assert verdict(interval) == HIGHER
    assert verdict(paired_difference(b, a, speakers)) == LOWER


def test_zero_difference_is_not_significant_and_false_positives_are_rare():
    """No true difference, but speaker-level offsets with zero mean: the interval must cover 0 at ~95 %.

    A clip-level bootstrap would fail this badly (the 150-clip speaker's offset would look like 150
    independent observations); the cluster bootstrap keeps false positives near 5 %.
    """
    n_datasets = 200
    false_positives = 0
    for seed in range(n_datasets):
        speakers, a, offsets = corpus(seed)
        rng = np.random.default_rng(seed + 10_000)
        b = a + offsets + rng.normal(0.0, 0.1, size=len(a))
        interval = paired_difference(a, b, speakers, n_boot=1000, seed=seed)
        false_positives += verdict(interval) != NOT_SIGNIFICANT
        if seed == 0:
            assert not interval.excludes(0.0) and verdict(interval) == NOT_SIGNIFICANT
    # percentile intervals run a little narrow at 30 clusters (~6 % expected); 10 % leaves 2+ sd of slack
    assert false_positives / n_datasets <= 0.10, f"{false_positives} of {n_datasets} zero-difference corpora flagged"


def test_clip_bootstrap_would_have_failed_the_same_check():
    """The check above has teeth: resampling clips instead of speakers flags most zero-difference corpora."""
    flagged = 0
    for seed in range(20):
        speakers, a, offsets = corpus(seed)
        b = a + offsets + np.random.default_rng(seed + 10_000).normal(0.0, 0.1, size=len(a))
        clips = np.arange(len(a)).astype(str)  # every clip its own "speaker": a clip-level bootstrap
        flagged += verdict(paired_difference(a, b, clips, n_boot=1000)) != NOT_SIGNIFICANT
    assert flagged >= 10  # 19 of 20 at these seeds; the speaker bootstrap flags about 1


def test_every_speaker_weighs_the_same():
    values = [1.0] * 200 + [0.0] * 9
    speakers = ["big"] * 200 + [f"small{i}" for i in range(9)]
    names, means = speaker_means(values, speakers)
    assert names == ["big"] + [f"small{i}" for i in range(9)]
    assert means.tolist() == [1.0] + [0.0] * 9
    interval = cluster_bootstrap(values, speakers)
    assert interval.estimate == pytest.approx(0.1)  # not 200/209 = 0.957
    assert interval.n_speakers == 10


def test_nan_values_and_pairs_are_dropped():
    names, means = speaker_means([1.0, np.nan, 3.0, np.nan], ["a", "a", "b", "c"])
    assert names == ["a", "b"]  # c had only NaN: dropped, not reported as NaN
    assert means.tolist() == [1.0, 3.0]
    a = [1.0, 2.0, np.nan, 5.0, 7.0]
    b = [0.0, np.nan, 1.0, 4.0, 6.0]
    interval = paired_difference(a, b, ["x", "x", "y", "z", "z"])
    assert interval.n_speakers == 2  # y's only pair has a NaN
    assert interval.estimate == pytest.approx(1.0)


def test_one_speaker_has_no_spread_and_claims_nothing():
    interval = cluster_bootstrap([0.5, 0.7, 0.9], ["solo"] * 3)
    assert interval.low == interval.high == interval.estimate == pytest.approx(0.7)
    assert interval.n_speakers == 1
    assert verdict(interval) == NOT_SIGNIFICANT
    assert not measurable(interval, chance=0.1)


def test_zero_speakers_and_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="no speaker"):
        cluster_bootstrap([], [])
    with pytest.raises(ValueError, match="no speaker"):
        cluster_bootstrap([np.nan, np.nan], ["a", "b"])
    with pytest.raises(ValueError, match="aligned per clip"):
        paired_difference([1.0, 2.0], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="one speaker per clip"):
        cluster_bootstrap([1.0, 2.0, 3.0], ["a", "b"])


def test_deterministic_for_a_seed_and_fast():
    speakers, a, _ = corpus(seed=3)
    first = cluster_bootstrap(a, speakers, seed=7)
    assert cluster_bootstrap(a, speakers, seed=7) == first
    assert cluster_bootstrap(a, speakers, seed=8) != first
    assert first.level == 0.95
    narrow = cluster_bootstrap(a, speakers, seed=7, level=0.5)
    assert first.low < narrow.low < narrow.high < first.high
    values = np.random.default_rng(0).normal(size=40)
    start = time.perf_counter()
    cluster_bootstrap(values, [f"s{i}" for i in range(40)], n_boot=2000)
    assert time.perf_counter() - start < 0.5  # vectorised: milliseconds in practice


def test_measurable_needs_the_low_end_above_chance():
    assert measurable(Interval(0.30, 0.22, 0.38, 12, 0.95), chance=0.2)
    assert not measurable(Interval(0.30, 0.18, 0.38, 12, 0.95), chance=0.2)  # estimate above, interval not
    assert not measurable(Interval(0.30, 0.20, 0.38, 12, 0.95), chance=0.2)  # touching chance is not beating it


def test_interval_excludes_and_as_dict():
    interval = Interval(0.123456789, -0.0123456789, 0.25, 30, 0.95)
    assert interval.excludes(-0.02) and interval.excludes(0.26)
    assert not interval.excludes(0.0) and not interval.excludes(0.25)
    assert interval.as_dict() == {
        "estimate": 0.123457,
        "low": -0.0123457,
        "high": 0.25,
        "n_speakers": 30,
        "level": 0.95,
    }


def test_seed_spread():
    spread = seed_spread({2: 0.3, 0: 0.1, 1: 0.2})
    assert spread == {"n": 3, "mean": pytest.approx(0.2), "sd": pytest.approx(0.1), "min": 0.1, "max": 0.3}
    assert seed_spread({0: 0.5}) == {"n": 1, "mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5}
    with pytest.raises(ValueError):
        seed_spread({})


def test_forest_plot_writes_a_png(tmp_path):
    speakers, a, offsets = corpus(seed=4)
    rng = np.random.default_rng(5)
    rows = []
    for level in ("level0", "level1", "level2"):
        rows += [
            (f"{level}: MS-Sync - single-scale", paired_difference(a, a - 0.1 + rng.normal(0, 0.05, len(a)), speakers)),
            (f"{level}: MS-Sync - static head", paired_difference(a, a - 0.4 + rng.normal(0, 0.05, len(a)), speakers)),
            (f"{level}: MS-Sync - other audio", paired_difference(a, a + offsets, speakers)),
        ]
    out = plots.forest_plot(rows, tmp_path / "forest.png", title="LSE-C paired differences", xlabel="LSE-C difference")
    assert out == tmp_path / "forest.png" and out.stat().st_size > 0
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == round(plots.WIDTH_IN * plots.DPI) and height > plots.PANEL_HEIGHT_IN * plots.DPI
    with pytest.raises(ValueError):
        plots.forest_plot([], tmp_path / "empty.png", title="none", xlabel="x")
