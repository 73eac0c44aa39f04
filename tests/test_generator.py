"""MS-Sync generator and discriminators on synthetic tensors: shapes, causality, the gate, sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mssync.gan.model import (
    AUDIO_PER_FRAME,
    AudioPyramid,
    Branches,
    FrameDiscriminator,
    Generator,
    GeneratorSettings,
    SequenceDiscriminator,
    causal_upsample,
    hinge_d,
    hinge_g,
)

REPO = Path(__file__).resolve().parents[1]
GAN = yaml.safe_load((REPO / "params.yaml").read_text())["gan"]

TINY = GeneratorSettings(frame_dim=16, audio_dim=16, hidden=8, branch_dim=16, head_depth=1, transformer_layers=1,
                         transformer_heads=2, context=40, lookahead=2, disc_dim=16, disc_hidden=16,
                         windows=[5, 10, 20, 40])
D = 15
GROUPS = [0, 0, 0, 1, 1, 1, 2] + [3] * 8
N_MELS = 8

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(D, N_MELS, GROUPS, TINY).eval()


def mel_for(batch: int, n_frames: int, seed: int = 1) -> torch.Tensor:
    """Log-mel rows covering n_frames video frames plus the lookahead."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, AUDIO_PER_FRAME * (n_frames + TINY.lookahead), N_MELS, generator=g)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- shapes


@torch.no_grad()
@pytest.mark.parametrize("prefix_frames", [3, 1])
def test_generator_rolls_out_every_frame_after_the_first(prefix_frames):
    model, n = tiny_generator(), 12
    out = model(torch.randn(2, prefix_frames, D), mel_for(2, n), n)
    assert out.shape == (2, n - 1, D) and torch.isfinite(out).all()


@torch.no_grad()
def test_discriminator_and_pyramid_shapes():
    seq, frame = SequenceDiscriminator(D, TINY).eval(), FrameDiscriminator(D, TINY).eval()
    assert seq(torch.randn(3, 2, D), torch.randn(3, 40, D)).shape == (3,)
    assert frame(torch.randn(3, 40, D)).shape == (3, 40)
    n = 17  # not a multiple of the coarsest stride (8)
    streams = AudioPyramid(N_MELS, TINY).eval()(torch.randn(2, AUDIO_PER_FRAME * n, N_MELS), n)
    assert len(streams) == AudioPyramid.LEVELS == 4
    assert all(s.shape == (2, n, TINY.audio_dim) for s in streams)


# ----------------------------------------------------------------------------- causality


@torch.no_grad()
@pytest.mark.parametrize("k", [6, 10, 15])
def test_later_audio_never_changes_earlier_frames(k):
    """Frame f hears mel rows < 4 (f + 1 + lookahead): changing the audio of frames >= k leaves
    every frame < k - lookahead bit-identical and changes frame k - lookahead itself."""
    model, n = tiny_generator(), 20
    prefix, mel = torch.randn(2, 3, D), mel_for(2, n)
    changed = mel.clone()
    changed[:, AUDIO_PER_FRAME * k:] += torch.randn_like(changed[:, AUDIO_PER_FRAME * k:])
    a, b = model(prefix, mel, n), model(prefix, changed, n)
    first_free = k - TINY.lookahead  # output index i is frame i + 1
    assert torch.equal(a[:, :first_free - 1], b[:, :first_free - 1])
    assert not torch.equal(a[:, first_free - 1], b[:, first_free - 1])  # the boundary is exact, not vacuous


@torch.no_grad()
def test_audio_streams_are_causal_per_level():
    """Every pyramid level at frame t depends only on mel rows of frames <= t (before the lookahead shift)."""
    pyramid, n, k = AudioPyramid(N_MELS, TINY).eval(), 32, 13
    mel = torch.randn(1, AUDIO_PER_FRAME * n, N_MELS)
    changed = mel.clone()
    changed[:, AUDIO_PER_FRAME * k:] = torch.randn_like(changed[:, AUDIO_PER_FRAME * k:])
    for level, (a, b) in enumerate(zip(pyramid(mel, n), pyramid(changed, n))):
        assert torch.equal(a[:, :k], b[:, :k]), f"level {level} reads the future"
        assert not torch.equal(a[:, k:], b[:, k:]), f"level {level} ignores the audio"


@torch.no_grad()
def test_teacher_forcing_is_causal():
    """The predictions of frames 1..2 are made from true frames 0..1: true frame 2 cannot change them."""
    model, n = tiny_generator(), 10
    prefix, mel = torch.randn(2, 3, D), mel_for(2, n)
    changed = prefix.clone()
    changed[:, 2] += 1.0
    a, b = model(prefix, mel, n), model(changed, mel, n)
    assert torch.equal(a[:, :2], b[:, :2])
    assert not torch.equal(a[:, 2:], b[:, 2:])  # frame 3 onwards is predicted from frame 2


@torch.no_grad()
def test_rollout_streams_a_shorter_run_is_a_prefix_of_a_longer_one():
    model = tiny_generator()
    prefix, mel = torch.randn(1, 1, D), mel_for(1, 60)
    long = model(prefix, mel, 60)
    short = model(prefix, mel[:, :AUDIO_PER_FRAME * (25 + TINY.lookahead)], 25)
    assert torch.allclose(short, long[:, :24], atol=1e-5)


def test_causal_upsample_reads_only_completed_coarse_samples():
    """Output t mixes coarse samples t // f - 1 and t // f only, with weights 1 - a and a = (t mod f) / f."""
    for factor in (2, 4, 8):
        coarse = 5
        length = coarse * factor
        x = torch.arange(1.0, coarse + 1)[None, None] * torch.tensor([1.0, -3.0])[None, :, None]  # (1, 2, Tc)
        jac = torch.autograd.functional.jacobian(lambda v: causal_upsample(v, factor, length), x)[0, 0, :, 0, 0]
        for t in range(length):
            j, alpha = t // factor, (t % factor) / factor
            expected = torch.zeros(coarse)
            if j == 0:
                expected[0] = 1.0
            else:
                expected[j - 1], expected[j] = 1 - alpha, alpha
            assert torch.allclose(jac[t], expected), (factor, t, jac[t])
            assert not jac[t, j + 1:].any()  # nothing that covers later frames
        out = causal_upsample(x, factor, length)
        ramp = torch.arange(length, dtype=torch.float32) / factor  # a coarse ramp comes back linear, one step late
        assert torch.allclose(out[0, 0, factor:], ramp[factor:])
        assert torch.allclose(out[0, 1], -3 * out[0, 0])


# ----------------------------------------------------------------------------- the gate


@torch.no_grad()
def test_gate_is_a_softmax_over_the_five_branches_and_the_bias_branch_hears_no_audio():
    model = tiny_generator()
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(_module, args):
        seen["u"] = args[0].clone()

    def hook(_module, _args, output):
        seen["masks"], seen["leaves"] = output

    handles = [model.branches.register_forward_pre_hook(pre_hook), model.branches.register_forward_hook(hook)]
    try:
        context = torch.randn(4, 7, TINY.frame_dim)
        audio = [torch.randn(4, TINY.audio_dim) for _ in range(AudioPyramid.LEVELS)]
        delta = model.step(context, audio)
    finally:
        for h in handles:
            h.remove()

    u, masks, leaves = seen["u"], seen["masks"], seen["leaves"]
    assert u.shape == (4, Branches.N, TINY.hidden + TINY.frame_dim + TINY.audio_dim)
    assert not u[:, 4, -TINY.audio_dim:].any()  # the audio-free bias branch
    for level in range(AudioPyramid.LEVELS):  # each audio branch hears its own level
        assert torch.equal(u[:, level, -TINY.audio_dim:], audio[level])
    assert torch.equal(u[:, :, :-TINY.audio_dim], u[:, :1, :-TINY.audio_dim].expand(-1, Branches.N, -1))  # same past
    assert masks.shape == (4, Branches.N, max(GROUPS) + 1) and leaves.shape == (4, Branches.N, D)

    gates = torch.softmax(masks, dim=1)
    assert torch.allclose(gates.sum(dim=1), torch.ones(4, max(GROUPS) + 1))
    per_dim = gates[:, :, GROUPS]  # one gate per motion group, shared by the group's dimensions
    expected = model.fuse((per_dim * leaves).flatten(1))
    assert delta.shape == (4, D) and torch.allclose(delta, expected, atol=1e-6)
    other_axis = model.fuse((torch.softmax(masks, dim=2)[:, :, GROUPS] * leaves).flatten(1))
    assert not torch.allclose(delta, other_axis, atol=1e-4)  # the softmax is across branches, not groups


# ----------------------------------------------------------------------------- losses and sizes


def test_hinge_losses():
    real, fake = torch.full((8,), 2.0), torch.full((8,), -2.0)
    assert float(hinge_d(real, fake)) == 0.0
    assert float(hinge_d(fake, real)) == pytest.approx(6.0)  # 3 + 3
    scores = torch.randn(16)
    assert torch.equal(hinge_g(scores), -scores.mean())


def test_parameter_counts_of_the_presets():
    groups = [0, 0, 0, 1, 1, 1, 2] + [3] * 40  # D = 47: pose 7 + 40 expression components
    paper = GeneratorSettings(**GAN["presets"]["paper"]["model"])
    generator = n_params(Generator(47, 26, groups, paper))
    discriminators = n_params(SequenceDiscriminator(47, paper)) + n_params(FrameDiscriminator(47, paper))
    print(f"paper preset: generator {generator / 1e6:.2f} M, discriminators {discriminators / 1e6:.2f} M")
    assert 10e6 < generator < 60e6  # the method's ~35 M; our mask/leaf heads are lighter
    assert 1e6 < discriminators < 40e6  # the method's ~24 M
    cpu = GeneratorSettings(**GAN["presets"]["cpu"]["model"])
    small = n_params(Generator(47, 26, groups, cpu))
    print(f"cpu preset: generator {small / 1e6:.3f} M")
    assert small < 1e6
