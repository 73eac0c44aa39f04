"""Audio/motion syncers: one contrastive encoder pair per pyramid level (MS-Sync stage A).

Reads top to bottom: settings (a preset from params.yaml), the inverted-residual 1-D ConvNeXt
block, the two encoders, the pair, and the loss. Each level sees a window of 5 motion samples
and 20 audio samples (0.2 * 2**level seconds) and maps both to L2-normalised embeddings whose
dot product says how well they go together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mssync.core import checkpoints
from mssync.core.errors import require_artifact
from mssync.syncers.pyramid import AUDIO_WINDOW, MOTION_WINDOW


@dataclasses.dataclass(frozen=True)
class MarginSchedule:
    start: float  # positive margin at step 0
    growth: float  # multiplied in every `every` steps ...
    every: int
    max: float  # ... up to this cap

    def at(self, step: int) -> float:
        return min(self.start * self.growth ** (step // self.every), self.max)


@dataclasses.dataclass(frozen=True)
class SyncerSettings:
    """One preset of params.yaml `syncers.presets` (paper: the method's sizes)."""

    motion_embed: int  # per-frame embedding width before the temporal ConvNeXt
    motion_widths: list[int]  # 4 stage widths of the motion encoder
    audio_widths: list[int]  # stem + 4 stage widths of the audio encoder
    blocks: list[int]  # blocks per stage (the first of each stage has stride 2)
    embed_dim: int  # output embedding size (512 in the method)
    dropout: float
    lr: float
    weight_decay: float
    temperature: float  # logits = cosine / temperature (the method: 1)
    margin: MarginSchedule
    group_size: int  # windows per contrastive group
    groups_per_batch: int
    steps: int
    eval_every: int
    noise: float  # std of Gaussian noise added to standardised inputs while training

    @classmethod
    def from_dict(cls, values: dict) -> "SyncerSettings":
        return cls(**{**values, "margin": MarginSchedule(**values["margin"])})


class LayerNorm1d(nn.Module):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class InvResX1D(nn.Module):
    """Depthwise conv -> LayerNorm -> 1x1 expand (x4) -> GELU -> 1x1 project, residual, GELU.

    `causal` pads on the left only, so output t sees inputs <= t * stride (the generator's audio
    encoder must not see the future beyond its declared lookahead)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dropout: float = 0.0,
                 causal: bool = False) -> None:
        super().__init__()
        self.left_pad = kernel - 1 if causal else 0
        self.depthwise = nn.Conv1d(c_in, c_in, kernel, stride, padding=0 if causal else (kernel - 1) // 2, groups=c_in)
        self.norm = LayerNorm1d(c_in)
        self.expand = nn.Conv1d(c_in, 4 * c_in, 1)
        self.project = nn.Conv1d(4 * c_in, c_out, 1)
        self.drop = nn.Dropout(dropout)
        self.shortcut = (
            nn.Identity() if c_in == c_out and stride == 1
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride), LayerNorm1d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, ceil(T / stride))
        h = self.depthwise(F.pad(x, (self.left_pad, 0)) if self.left_pad else x)
        h = self.project(F.gelu(self.expand(self.norm(h))))
        return F.gelu(self.shortcut(x) + self.drop(h))


def conv_stages(widths: list[int], blocks: list[int], c_in: int, dropout: float) -> nn.Sequential:
    """Stages of blocks; the first block of each stage halves the time axis."""
    layers: list[nn.Module] = []
    for width, n in zip(widths, blocks):
        layers.append(InvResX1D(c_in, width, stride=2, dropout=dropout))
        layers += [InvResX1D(width, width, dropout=dropout) for _ in range(n - 1)]
        c_in = width
    return nn.Sequential(*layers)


class MotionEncoder(nn.Module):
    """(B, 5, F) motion window -> (B, E) unit vector."""

    def __init__(self, n_features: int, s: SyncerSettings) -> None:
        super().__init__()
        self.frame = nn.Sequential(  # per-frame MLP embedding ("mlp" embed style)
            nn.Linear(n_features, s.motion_embed), nn.LayerNorm(s.motion_embed), nn.GELU(),
            nn.Linear(s.motion_embed, s.motion_embed),
        )
        self.stem = InvResX1D(s.motion_embed, s.motion_embed, dropout=s.dropout)
        self.stages = conv_stages(s.motion_widths, s.blocks, s.motion_embed, s.dropout)  # T: 5 -> 3 -> 2 -> 1 -> 1
        self.head = nn.Sequential(nn.Dropout(s.dropout), nn.Linear(s.motion_widths[-1], s.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.frame(x).transpose(1, 2)  # (B, C, 5)
        h = self.stages(self.stem(h)).mean(dim=2)  # (B, C)
        return F.normalize(self.head(h), dim=-1)


class AudioEncoder(nn.Module):
    """(B, 20, n_mels) log-mel window -> (B, E) unit vector."""

    def __init__(self, n_mels: int, s: SyncerSettings) -> None:
        super().__init__()
        stem_width, *stage_widths = s.audio_widths
        self.stem = InvResX1D(n_mels, stem_width, dropout=s.dropout)
        self.stages = conv_stages(stage_widths, s.blocks, stem_width, s.dropout)  # T: 20 -> 10 -> 5 -> 3 -> 2
        self.head = nn.Sequential(nn.Dropout(s.dropout), nn.Linear(stage_widths[-1], s.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x.transpose(1, 2))).mean(dim=2)  # (B, C)
        return F.normalize(self.head(h), dim=-1)


class Syncer(nn.Module):
    """The encoder pair of one pyramid level."""

    def __init__(self, n_motion_features: int, n_mels: int, settings: SyncerSettings, level: int) -> None:
        super().__init__()
        self.level = level
        self.motion = MotionEncoder(n_motion_features, settings)
        self.audio = AudioEncoder(n_mels, settings)

    def forward(self, motion: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert motion.shape[-2] == MOTION_WINDOW and audio.shape[-2] == AUDIO_WINDOW, (motion.shape, audio.shape)
        return self.motion(motion), self.audio(audio)

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> "Syncer":
        """A trained syncer, frozen and in eval mode, with the recipe it was trained with
        (`settings`, `kernel`, `seed`): scoring code reads them here instead of being told again.
        Checkpoints load with weights_only=True."""
        blob = checkpoints.load(require_artifact(path), device)
        settings = SyncerSettings.from_dict(blob["settings"])
        model = cls(blob["n_features"], blob["n_mels"], settings, blob["level"])
        model.load_state_dict(blob["state_dict"])
        model.settings, model.kernel, model.seed = settings, blob["kernel"], blob["seed"]
        return model.to(device).eval().requires_grad_(False)

    def similarity(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Cosine of matching windows, (B,): the sync score the generator's loss maximises."""
        m, a = self(motion, audio)
        return (m * a).sum(dim=-1)


def info_nce(motion: torch.Tensor, audio: torch.Tensor, margin: float, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE within groups: (G, N, E) x (G, N, E) -> scalar.

    Window i of a group pairs with audio i; the other N-1 windows are its negatives. The margin
    is subtracted from the positive logits only, so a pair must beat its negatives by at least
    `margin` in cosine before the loss stops pushing.
    """
    logits = torch.bmm(motion, audio.transpose(1, 2))  # (G, N, N) cosines
    eye = torch.eye(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    logits = (logits - margin * eye) / temperature
    target = torch.arange(logits.shape[-1], device=logits.device).expand(logits.shape[0], -1)
    motion_to_audio = F.cross_entropy(logits.flatten(0, 1), target.flatten())
    audio_to_motion = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.flatten())
    return motion_to_audio + audio_to_motion
