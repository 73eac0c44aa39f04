"""Speaker-balanced sampling on a skewed toy corpus shaped like the sample data: one speaker with
200 short clips (GRID s1) beside a few speakers with one or two clips each."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import tiny_params

from mssync.gan.train import GanClip, GanSettings, sample_batch
from mssync.motion.balance import ClipDraws, clip_probabilities, speaker_shares
from mssync.motion.clips import ClipArrayCache
from mssync.syncers.train import LevelClip, sample_group

SKEWED = ["s1"] * 200 + ["a", "b", "b", "c", "d", "e", "f", "g", "h", "i"]
WINDOWS = np.array([30] * 200 + [60, 40, 40, 90, 50, 70, 30, 20, 80, 100])
CAP = 0.2


def test_a_dominant_speaker_is_capped_and_the_rest_keep_their_proportions():
    shares = speaker_shares(SKEWED, WINDOWS, CAP)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["s1"] == pytest.approx(CAP)  # 6000 of 6580 windows (91 %) without the cap
    assert max(shares.values()) <= CAP + 1e-9
    assert shares["i"] / shares["h"] == pytest.approx(100 / 80)  # the others in proportion to their windows
    assert shares["b"] / shares["g"] == pytest.approx(80 / 20)


def test_capping_one_speaker_can_push_another_over_the_cap():
    """Water filling: after s1 is capped, 'big' would own 0.8 x 900/1000 of the rest: it is capped too."""
    shares = speaker_shares(["s1", "big", "x", "y", "z", "w"], np.array([10_000, 900, 25, 25, 25, 25]), CAP)
    assert shares["s1"] == pytest.approx(CAP) and shares["big"] == pytest.approx(CAP)
    assert shares["x"] == pytest.approx(0.15) and sum(shares.values()) == pytest.approx(1.0)


def test_an_unreachable_cap_gives_every_speaker_an_equal_share():
    assert speaker_shares(["a", "a", "b"], np.array([10, 10, 1]), CAP) == {"a": 0.5, "b": 0.5}


def test_a_cap_that_does_not_bind_changes_nothing():
    p = clip_probabilities(SKEWED, WINDOWS, 1.0)
    assert np.allclose(p, WINDOWS / WINDOWS.sum())


def test_clips_without_windows_are_never_drawn():
    p = clip_probabilities(["a", "a", "b"], np.array([0, 10, 10]), 0.5)
    assert p[0] == 0 and p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("size", [None, 1, 64])
def test_clip_draws_are_the_draws_of_generator_choice(size):
    """Same seed, same clips as rng.choice(n, p=p) (what the trainers called before), and the
    generator left in the same state: seeded runs draw what they drew before."""
    p = clip_probabilities(SKEWED, WINDOWS, CAP)
    ours, theirs, draws = np.random.default_rng(7), np.random.default_rng(7), ClipDraws(p)
    for _ in range(200):
        assert np.array_equal(draws(ours, size), theirs.choice(len(p), size, p=p))
    assert ours.random() == theirs.random()


def test_clip_draws_refuse_probabilities_that_draw_nothing():
    for bad in ([], [0.0, 0.0], [0.5, -0.1]):
        with pytest.raises(ValueError, match="non-negative"):
            ClipDraws(np.array(bad))


def _drawn_share(picked_speakers: list[str], speaker: str) -> float:
    return Counter(picked_speakers)[speaker] / len(picked_speakers)


def test_the_syncer_sampler_keeps_the_cap():
    rng = np.random.default_rng(0)
    clips = [LevelClip(f"c{i}", torch.zeros(n + 5, 3), torch.zeros(4 * n + 20, 2), np.arange(n), speaker=s)
             for i, (s, n) in enumerate(zip(SKEWED, WINDOWS))]
    p = clip_probabilities([c.speaker for c in clips], np.array([len(c.starts) for c in clips]), CAP)
    drawn = [clips[c].speaker for _ in range(400) for c, _ in sample_group(clips, 4, rng, ClipDraws(p))]
    assert _drawn_share(drawn, "s1") == pytest.approx(CAP, abs=0.03)  # 1600 draws: 2 sigma is 0.02
    unbalanced = [clips[c].speaker for _ in range(400) for c, _ in sample_group(clips, 4, rng)]
    assert _drawn_share(unbalanced, "s1") > 0.8  # what it was before the cap


def test_the_generator_sampler_keeps_the_cap():
    """Each clip's motion holds its own index, so the batch says which clips were drawn."""
    rng = np.random.default_rng(0)
    settings = dataclasses.replace(GanSettings.from_params(tiny_params()["gan"]), batch=1600)
    length = settings.observed_frames + settings.generated_frames
    arrays = ClipArrayCache(max_mb=0.05)  # a few clips' arrays: they are remade as clips are drawn

    def make(i: int, n: int) -> tuple[torch.Tensor, ...]:
        return torch.full((n + length, 2), float(i)), torch.zeros(4 * (n + length), 2), torch.zeros(2), torch.ones(2)

    clips = [GanClip(f"c{i}", np.arange(n), s, functools.partial(make, i, n), arrays)
             for i, (s, n) in enumerate(zip(SKEWED, WINDOWS))]
    p = clip_probabilities([c.speaker for c in clips], np.array([len(c.starts) for c in clips]), CAP)
    drawn = sample_batch(clips, settings, rng, ClipDraws(p))["motion"][:, 0, 0].long().tolist()
    assert _drawn_share([clips[i].speaker for i in drawn], "s1") == pytest.approx(CAP, abs=0.03)
