"""The temporal pyramid: one operator for motion and audio, halving the rate per level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mssync.syncers.pyramid import AUDIO_WINDOW, MOTION_WINDOW, pyramid_step, temporal_pyramid, window_seconds


def test_lengths_halve_per_level():
    motion = np.zeros((100, 7))
    audio = np.zeros((400, 26))
    assert [len(x) for x in temporal_pyramid(motion, 4)] == [100, 50, 25, 13]
    assert [len(x) for x in temporal_pyramid(audio, 4)] == [400, 200, 100, 50]


def test_window_spans_double_per_level():
    assert [window_seconds(level) for level in range(4)] == [0.2, 0.4, 0.8, 1.6]
    assert AUDIO_WINDOW == 4 * MOTION_WINDOW  # 25 fps motion vs 100 Hz audio, at every level


def test_same_operator_keeps_motion_and_audio_aligned():
    """Time itself sampled at 25 Hz (motion) and 100 Hz (audio): a moving average leaves a ramp
    unchanged, so level-l sample i of the motion and sample 4i of the audio must both read the
    same instant (i * 2**l / 25 s). The syncer windows stay aligned at every level."""
    motion = temporal_pyramid((np.arange(250) / 25)[:, None], 4)
    audio = temporal_pyramid((np.arange(1000) / 100)[:, None], 4)
    for level in range(4):
        inner = np.arange(4, len(motion[level]) - 4)  # away from the reflected ends
        expected = inner * 2**level / 25
        assert np.allclose(motion[level][inner, 0], expected, atol=1e-5), level
        assert np.allclose(audio[level][4 * inner, 0], expected, atol=1e-5), level


def test_moving_average_then_stride_two():
    x = torch.arange(20, dtype=torch.float32)[:, None]
    level1 = pyramid_step(x, kernel=7)
    assert level1[3, 0] == pytest.approx(x[3:10, 0].mean())  # sample 3 of level 1 = frame 6, centred window
    const = torch.full((30, 2), 5.0)
    assert torch.allclose(pyramid_step(const), torch.full((15, 2), 5.0))  # reflect padding: no edge droop


def test_numpy_and_torch_agree_and_gradients_flow():
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    from_numpy = temporal_pyramid(x, 3)
    from_torch = temporal_pyramid(t, 3)
    for a, b in zip(from_numpy, from_torch):
        assert np.allclose(a, b.detach().numpy(), atol=1e-6)
    from_torch[-1].sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_batched_input_and_even_kernel():
    x = torch.randn(2, 5, 40, 3)
    assert pyramid_step(x).shape == (2, 5, 20, 3)
    with pytest.raises(ValueError, match="odd"):
        pyramid_step(x, kernel=6)
