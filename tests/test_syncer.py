"""Syncer model and loss: shapes, sizes of the paper preset, and the margin InfoNCE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mssync.syncers.model import MarginSchedule, Syncer, SyncerSettings, info_nce
from mssync.syncers.train import LevelClip, evaluation_groups, sample_group

REPO = Path(__file__).resolve().parents[1]
PRESETS = yaml.safe_load((REPO / "params.yaml").read_text())["syncers"]["presets"]


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def test_encoders_give_unit_embeddings():
    settings = SyncerSettings.from_dict(PRESETS["cpu"])
    model = Syncer(n_motion_features=121, n_mels=26, settings=settings, level=0).eval()
    m, a = model(torch.randn(6, 5, 121), torch.randn(6, 20, 26))
    assert m.shape == a.shape == (6, settings.embed_dim)
    assert torch.allclose(m.norm(dim=1), torch.ones(6)) and torch.allclose(a.norm(dim=1), torch.ones(6))
    assert model.similarity(torch.randn(6, 5, 121), torch.randn(6, 20, 26)).shape == (6,)


def test_paper_preset_has_the_method_sizes():
    model = Syncer(60, 26, SyncerSettings.from_dict(PRESETS["paper"]), level=0)
    motion = sum(p.numel() for p in model.motion.parameters())
    audio = sum(p.numel() for p in model.audio.parameters())
    assert motion == pytest.approx(7.8e6, rel=0.05) and audio == pytest.approx(4.3e6, rel=0.05)


def test_perfect_pair_gets_the_lowest_loss():
    rng = torch.Generator().manual_seed(0)
    motion = unit(torch.randn(4, 12, 64, generator=rng))
    perfect = info_nce(motion, motion.clone(), margin=0.0, temperature=0.1)
    shuffled = info_nce(motion, motion[:, torch.randperm(12, generator=rng)], margin=0.0, temperature=0.1)
    random = info_nce(motion, unit(torch.randn(4, 12, 64, generator=rng)), margin=0.0, temperature=0.1)
    assert perfect < random < shuffled or perfect < min(random, shuffled)
    orthogonal = torch.eye(12)[None]  # the ideal: each motion matches its audio and nothing else
    assert info_nce(orthogonal, orthogonal, 0.0, 0.05) < perfect


def test_margin_is_applied_to_positives_only():
    motion = unit(torch.randn(2, 6, 16))
    audio = unit(torch.randn(2, 6, 16))
    margin, temperature = 0.3, 0.5
    logits = torch.bmm(motion, audio.transpose(1, 2))
    manual = logits - margin * torch.eye(6)  # only the diagonal moves
    target = torch.arange(6).repeat(2)
    expected = F.cross_entropy(manual.flatten(0, 1) / temperature, target) + \
        F.cross_entropy(manual.transpose(1, 2).flatten(0, 1) / temperature, target)
    assert info_nce(motion, audio, margin, temperature) == pytest.approx(float(expected), rel=1e-5)
    # raising every negative's score by the margin would be a different loss: the margin is not global
    assert info_nce(motion, audio, margin, temperature) > info_nce(motion, audio, 0.0, temperature)


def test_margin_grows_to_its_cap():
    schedule = MarginSchedule(start=1e-3, growth=1.002, every=1000, max=0.4)
    assert schedule.at(0) == 1e-3 and schedule.at(999) == 1e-3
    assert schedule.at(1000) == pytest.approx(1.002e-3)
    assert schedule.at(10_000_000) == 0.4


def _clip(name: str, n: int) -> LevelClip:
    return LevelClip(name, torch.zeros(n + 5, 3), torch.zeros(4 * n + 20, 2), np.arange(n))


def test_groups_are_same_clip_when_long_enough_and_never_overlap():
    rng = np.random.default_rng(0)
    long_clips = [_clip("long", 200)]
    for _ in range(20):
        group = sample_group(long_clips, 12, rng)
        starts = sorted(s for _, s in group)
        assert len(group) == 12 and all(b - a >= 5 for a, b in zip(starts, starts[1:]))
    short = [_clip(f"short{i}", 8) for i in range(12)]  # 2 non-overlapping windows each: too few alone
    group = sample_group(short, 12, rng)
    assert len({c for c, _ in group}) > 1
    for c in {c for c, _ in group}:
        starts = sorted(s for cc, s in group if cc == c)
        assert all(b - a >= 5 for a, b in zip(starts, starts[1:]))


def test_evaluation_groups_cover_every_window_once_without_overlap():
    clip = _clip("c", 60)
    groups = evaluation_groups(clip, 12)
    assert sorted(np.concatenate(groups).tolist()) == list(range(60))
    for g in groups:
        assert 2 <= len(g) <= 12 and all(b - a == 5 for a, b in zip(g, g[1:]))


def test_phase_shifted_copies_never_give_overlapping_negatives():
    """Coarse levels train on every pyramid phase of a clip; two phases of one clip are the same
    speech, so their windows may only be negatives of each other where they do not overlap in time."""
    rng = np.random.default_rng(1)
    scale = 8  # level 3: 8 video frames per sample; a window spans 40 frames
    phases = [LevelClip(f"a@{p}", torch.zeros(12, 3), torch.zeros(68, 2), np.arange(6), source="a", phase=p, scale=scale)
              for p in range(scale)]
    other = [LevelClip(f"b{i}", torch.zeros(12, 3), torch.zeros(68, 2), np.arange(6), scale=scale) for i in range(6)]
    clips = phases + other
    for _ in range(30):
        group = sample_group(clips, 6, rng)
        picked = [(clips[c], s) for c, s in group]
        for i, (ci, si) in enumerate(picked):
            for cj, sj in picked[i + 1:]:
                if ci.source == cj.source:
                    assert abs(ci.frame_of(si) - cj.frame_of(sj)) >= 5 * scale
    assert LevelClip("x", torch.zeros(1, 1), torch.zeros(1, 1), np.arange(1)).source == "x"


def test_window_starts_from_the_numpy_valid_pyramid_match_the_torch_pyramid():
    """level_starts takes the valid flags down the pyramid in numpy (fast on short vectors); it
    must keep exactly the windows the torch pyramid (what the model's inputs go through) keeps."""
    from mssync.syncers.pyramid import temporal_pyramid
    from mssync.syncers.windows import VALID_AT_LEVEL, valid_at_level

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 300))
        valid = rng.random(n) > rng.random() * 0.3  # gaps of every density, and none
        for level in range(6):
            for kernel in (1, 3, 7):
                torch_l = temporal_pyramid(valid.astype(np.float32)[:, None], level + 1, kernel)[level][:, 0]
                assert np.array_equal(valid_at_level(valid, level, kernel) >= VALID_AT_LEVEL, torch_l >= VALID_AT_LEVEL)
