"""MS-Sync generator and discriminators (stage B of the method), in the motion space.

Reads top to bottom: settings, the audio feature pyramid, the generator (frame encoder, causal
transformer over past frames, 4 audio branches + 1 audio-free branch merged by a softmax gate per
motion group, residual output), then the two discriminators and the hinge losses.

Motion is the motion space's vector (pose 7 + expression K), standardised per dimension with
train statistics. The audio encoder is causal with a fixed lookahead: the frame predicted at t+1
hears audio up to frame t+1+lookahead, never more, so generation can stream and the output up to a
frame never changes when later audio changes.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from mssync.syncers.model import InvResX1D

AUDIO_PER_FRAME = 4  # log-mel frames per video frame (schema.py's alignment rule)


@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
    """A `gan.presets` entry of params.yaml (paper: the method's widths)."""

    frame_dim: int  # per-frame motion embedding (coord_dim, 512 in the method)
    audio_dim: int  # audio feature width per pyramid level (512)
    hidden: int  # transformer output projection h_t (64)
    branch_dim: int  # branch trunk width (272)
    head_depth: int  # residual MLP blocks in each mask/leaf head
    transformer_layers: int
    transformer_heads: int
    context: int  # past frames the transformer sees (40)
    lookahead: int  # future video frames of audio a prediction may hear
    disc_dim: int  # discriminator frame embedding (512)
    disc_hidden: int  # sequence discriminator LSTM width (1024)
    windows: list[int]  # sequence discriminator window sizes (5, 10, 20, 40)


# ----------------------------------------------------------------------------- audio pyramid


def causal_upsample(x: torch.Tensor, factor: int, length: int) -> torch.Tensor:
    """(B, C, T_c) at 1/factor of the frame rate -> (B, C, length), linear between the two latest
    completed coarse samples (so frame t never reads a coarse sample that covers frames > t)."""
    t = torch.arange(length, device=x.device)
    j = torch.clamp(t // factor, max=x.shape[-1] - 1)
    alpha = ((t % factor).float() / factor).to(x.dtype)
    previous, current = x[..., torch.clamp(j - 1, min=0)], x[..., j]
    return previous + alpha * (current - previous)


class AudioPyramid(nn.Module):
    """(B, 4T, n_mels) log-mel -> 4 streams (B, T, audio_dim) at 25, 12.5, 6.25, 3.125 Hz."""

    LEVELS = 4

    def __init__(self, n_mels: int, s: GeneratorSettings) -> None:
        super().__init__()
        d = s.audio_dim
        self.trunk = nn.Sequential(  # 100 Hz -> 25 Hz: one vector per video frame
            InvResX1D(n_mels, d // 8, causal=True), InvResX1D(d // 8, d // 4, stride=2, causal=True),
            InvResX1D(d // 4, d // 2, causal=True), InvResX1D(d // 2, d, stride=2, causal=True),
        )
        self.down = nn.ModuleList(InvResX1D(d, d, kernel=7, stride=2, causal=True) for _ in range(self.LEVELS - 1))

    def forward(self, mel: torch.Tensor, n_frames: int) -> list[torch.Tensor]:
        level = self.trunk(mel.transpose(1, 2))  # (B, d, T)
        streams = [level[..., :n_frames]]
        for k, block in enumerate(self.down, start=1):
            level = block(level)  # (B, d, T / 2**k)
            streams.append(causal_upsample(level, 2**k, n_frames))
        return [x.transpose(1, 2) for x in streams]  # 4 x (B, T, d)


# ----------------------------------------------------------------------------- generator


class GroupedLinear(nn.Module):
    """n independent linear layers applied at once: (B, n, in) -> (B, n, out) (grouped 1x1 conv)."""

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-d_in**-0.5, d_in**-0.5))
        self.bias = nn.Parameter(torch.zeros(n, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class GroupedHead(nn.Module):
    """Per branch: residual MLP blocks (LayerNorm, linear, GELU) then an output layer."""

    def __init__(self, n: int, width: int, depth: int, d_out: int) -> None:
        super().__init__()
        self.norms = nn.ParameterList(nn.Parameter(torch.ones(n, width)) for _ in range(depth))
        self.blocks = nn.ModuleList(GroupedLinear(n, width, width) for _ in range(depth))
        self.out = GroupedLinear(n, width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, width) -> (B, n, d_out)
        for norm, block in zip(self.norms, self.blocks):
            x = x + F.gelu(block(F.layer_norm(x, x.shape[-1:]) * norm))
        return self.out(x)


class Branches(nn.Module):
    """The 4 audio branches and the audio-free bias branch, each with its own weights.

    Each branch proposes a motion increment (leaf) and gate logits per motion group (mask); the
    bias branch gets zeros where the others get audio, so it can only use the past motion."""

    N = AudioPyramid.LEVELS + 1

    def __init__(self, in_dim: int, width: int, depth: int, motion_dim: int, n_groups: int) -> None:
        super().__init__()
        self.trunk = GroupedLinear(self.N, in_dim, width)
        self.mask = GroupedHead(self.N, width, depth, n_groups)
        self.leaf = GroupedHead(self.N, width, depth, motion_dim)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, 5, in)
        h = F.gelu(self.trunk(u))
        return self.mask(h), self.leaf(h)  # (B, 5, groups), (B, 5, D)


class Generator(nn.Module):
    """Autoregressive residual motion prediction from past motion and the audio pyramid."""

    def __init__(self, motion_dim: int, n_mels: int, groups: list[int], s: GeneratorSettings) -> None:
        super().__init__()
        self.s, self.motion_dim = s, motion_dim
        self.register_buffer("group_index", torch.tensor(groups), persistent=False)  # motion dim -> gate group
        n_groups = max(groups) + 1
        self.frame = nn.Sequential(  # 7.1: per-frame motion encoder
            nn.Linear(motion_dim, s.frame_dim), nn.LayerNorm(s.frame_dim), nn.Linear(s.frame_dim, 2 * s.frame_dim),
            nn.GELU(), nn.Linear(2 * s.frame_dim, s.frame_dim))
        self.audio = AudioPyramid(n_mels, s)
        layer = nn.TransformerEncoderLayer(s.frame_dim, s.transformer_heads, 2 * s.frame_dim, dropout=0.0,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, s.transformer_layers, enable_nested_tensor=False)
        self.to_hidden = nn.Linear(s.frame_dim, s.hidden)
        self.branches = Branches(s.hidden + s.frame_dim + s.audio_dim, s.branch_dim, s.head_depth, motion_dim, n_groups)
        self.fuse = nn.Linear(Branches.N * motion_dim, motion_dim)

    def audio_streams(self, mel: torch.Tensor, n_frames: int) -> list[torch.Tensor]:
        """Per-frame audio features with the lookahead applied: stream[t] hears audio <= t + lookahead.

        `mel` must cover n_frames + lookahead video frames ((B, 4 * (n_frames + lookahead), n_mels))."""
        streams = self.audio(mel, n_frames + self.s.lookahead)
        return [x[:, self.s.lookahead:self.s.lookahead + n_frames] for x in streams]

    def step(self, context: torch.Tensor, audio_next: list[torch.Tensor]) -> torch.Tensor:
        """One increment: context (B, L, frame_dim) of past frame embeddings (last = current frame),
        audio features of the frame to predict -> delta (B, D)."""
        length = context.shape[1]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=context.device), diagonal=1)
        h = self.to_hidden(self.transformer(context, mask=causal)[:, -1])  # (B, hidden)
        past = torch.cat([h, context[:, -1]], dim=-1)  # (B, hidden + frame_dim)
        audio = torch.stack([*audio_next, torch.zeros_like(audio_next[0])], dim=1)  # (B, 5, audio_dim); none for the bias branch
        masks, leaves = self.branches(torch.cat([past[:, None].expand(-1, Branches.N, -1), audio], dim=-1))
        gates = torch.softmax(masks, dim=1)  # (B, 5, groups): softmax over the branches, per motion group
        gated = gates[..., self.group_index] * leaves  # (B, 5, D)
        return self.fuse(gated.flatten(1))

    def forward(self, prefix: torch.Tensor, mel: torch.Tensor, n_frames: int, pull: float = 0.0) -> torch.Tensor:
        """Roll out n_frames frames. prefix (B, P, D): known frames 0..P-1 (teacher-forced);
        returns (B, n_frames - 1, D): the prediction of every frame 1..n_frames-1, where the
        predictions of frames 1..P-1 are made from the true previous frame.

        `pull` > 0 draws every autoregressive step back towards frame 0 by that fraction of the
        deviation (a time constant of 1 / pull frames). Long roll-outs otherwise drift like a random
        walk out of the training range (the method's known failure on long sequences); training
        windows use pull = 0."""
        audio = self.audio_streams(mel, n_frames)
        embeddings: list[torch.Tensor] = []
        predictions: list[torch.Tensor] = []
        for t in range(n_frames - 1):
            current = prefix[:, t] if t < prefix.shape[1] else predictions[-1]
            embeddings.append(self.frame(current))
            context = torch.stack(embeddings[-self.s.context:], dim=1)
            delta = self.step(context, [a[:, t + 1] for a in audio])
            predictions.append(current + delta - pull * (current - prefix[:, 0]))
        return torch.stack(predictions, dim=1)


# ----------------------------------------------------------------------------- discriminators


def sn_linear(a: int, b: int) -> nn.Module:
    return spectral_norm(nn.Linear(a, b))


class FrameDiscriminator(nn.Module):
    """Scores each frame on its own: is this a plausible face configuration?"""

    def __init__(self, motion_dim: int, s: GeneratorSettings) -> None:
        super().__init__()
        self.net = nn.Sequential(sn_linear(motion_dim, s.disc_dim), nn.LeakyReLU(0.2), sn_linear(s.disc_dim, s.disc_dim // 2),
                                 nn.LeakyReLU(0.2), sn_linear(s.disc_dim // 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T)
        return self.net(x).squeeze(-1)


class SequenceDiscriminator(nn.Module):
    """Multi-window LSTM discriminator conditioned on the observed past (projection, distance decay)."""

    def __init__(self, motion_dim: int, s: GeneratorSettings) -> None:
        super().__init__()
        self.windows = s.windows
        self.frame = nn.Sequential(sn_linear(motion_dim, s.disc_dim), nn.LeakyReLU(0.2))
        self.lstm = nn.LSTM(s.disc_dim, s.disc_hidden, batch_first=True)
        h = s.disc_hidden
        self.phi, self.psi = sn_linear(h, 2 * h), sn_linear(2 * h, 2 * h)
        self.v, self.a = sn_linear(2 * h, h), sn_linear(2 * h, 1)
        self.beta = nn.Parameter(torch.tensor(5.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, hidden): last LSTM state
        return self.lstm(self.frame(x))[1][0][-1]

    def forward(self, observed: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """observed (B, P, D) true past (conditioning, frame 0 excluded by the caller), candidate
        (B, n, D) -> (B,) score, averaged over chunks and window sizes."""
        y = self.encode(observed)  # (B, h)
        sequence = torch.cat([observed, candidate], dim=1)
        first = observed.shape[1]  # index of the first candidate frame
        scores = []
        for w in self.windows:
            starts = [s for s in range(-observed.shape[1], candidate.shape[1] - w + 1, max(w // 2, 1))]
            chunks = torch.stack([sequence[:, first + s:first + s + w] for s in starts], dim=1)  # (B, C, w, D)
            z = self.encode(chunks.flatten(0, 1)).view(len(observed), len(starts), -1)  # (B, C, h)
            phi = F.relu(self.phi(z))
            decay = torch.tensor([max(s, 1) for s in starts], device=z.device, dtype=z.dtype) ** (-1 / self.beta)
            projection = decay[None, :, None] * (y[:, None] * self.v(phi)).sum(-1, keepdim=True)
            scores.append(self.a(projection + F.relu(self.psi(phi))).squeeze(-1).mean(dim=1))
        return torch.stack(scores).sum(0) / len(self.windows)


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()
