"""Training loaders read the memory-mapped motion cache and keep only window starts per clip: the
arrays they make lazily are exactly the ones made eagerly, and at most a bounded number of clips'
arrays are held at once (motion.clips.ClipArrayCache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import requires_clips

from mssync.core.constants import STD_FLOOR
from mssync.gan.train import load_clips, window_starts
from mssync.motion.clips import ClipArrayCache
from mssync.motion.motion_cache import MotionCache, load_cache
from mssync.motion.space import MotionSpace
from mssync.syncers.pyramid import AUDIO_PER_MOTION
from mssync.syncers.windows import level_clip, prepare_level

KERNEL = 7


def test_the_array_cache_keeps_the_most_recent_clips_within_its_budget():
    cache, made = ClipArrayCache(max_mb=2 * 4096 / 2**20), []  # room for two 4 KB arrays

    def make(name):
        made.append(name)
        return np.zeros(1024, np.float32) + ord(name)

    for name in ["a", "b", "a", "c", "b", "a"]:
        assert cache.get(name, lambda n=name: make(n))[0] == ord(name)
    assert made == ["a", "b", "c", "b", "a"]  # 'a' again at once costs nothing; 'b' was evicted by 'c'
    assert list(cache.items) == ["b", "a"] and cache.made == 5 and cache.bytes == 8192


def test_window_starts_are_the_fully_valid_windows():
    valid = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0], bool)
    assert window_starts(valid, 3).tolist() == [0, 4, 5]
    assert window_starts(valid, 10).tolist() == []


@requires_clips
@pytest.mark.integration
@pytest.mark.parametrize("level", [0, 2])
def test_lazy_level_clips_equal_the_eager_ones(tiny_dataset, level):
    space = MotionSpace.load(tiny_dataset["space"])
    clips = prepare_level(tiny_dataset["cache"]["train"], space, level, KERNEL, phases=True,
                          arrays=ClipArrayCache(max_mb=0))  # every phase evicts the previous one
    assert len(clips) == 2**level  # the train split's one clip, at every phase
    (clip_id, motion), = load_cache(tiny_dataset["cache"]["train"]).items()
    features = space.syncer_features(np.asarray(motion.motion))
    for lazy in clips:
        p = lazy.phase
        eager = level_clip(lazy.clip_id, features[p:], np.asarray(motion.mel[AUDIO_PER_MOTION * p:]),
                           np.asarray(motion.valid[p:]), level, KERNEL)
        assert np.array_equal(lazy.starts, eager.starts)
        starts = lazy.starts[:: max(1, len(lazy.starts) // 7)]
        for a, b in zip(lazy.windows(starts), eager.windows(starts)):
            assert torch.equal(a, b)
    assert len(clips[0]._arrays.items) == 1


@requires_clips
@pytest.mark.integration
def test_gan_clips_are_made_from_the_cache_with_the_train_statistics(tiny_dataset):
    cache = MotionCache.open(tiny_dataset["cache"]["train"])
    mean, std = cache.valid_motion_stats(chunk=17)  # several chunks on a tiny split
    n = len(cache.motion)
    valid_motion = cache.motion.rows(0, n)[cache.valid.rows(0, n)].astype(np.float64)
    np.testing.assert_allclose(mean, valid_motion.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std, valid_motion.std(0), rtol=1e-5, atol=1e-7)
    std = np.maximum(std, STD_FLOOR)
    space = MotionSpace.load(tiny_dataset["space"])
    (clip,) = load_clips(tiny_dataset["cache"]["train"], space, mean, std, window=43)
    (motion,) = cache.clips().values()
    expected = torch.from_numpy(((np.asarray(motion.motion) - mean) / std).astype(np.float32))
    assert torch.equal(clip.motion, expected)
    assert np.array_equal(clip.starts, window_starts(motion.valid, 43)) and len(clip.starts) > 0
