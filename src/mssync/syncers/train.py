"""Training one syncer level: group sampling, the loop, resumable checkpoints, per-epoch TSV.

Data (windows.py): each clip's syncer features (head pose + lip/jaw shape, from the motion space) and its
log-mel frames, standardised per clip (so a syncer learns co-variation, not who is speaking),
then taken down the temporal pyramid to the level. A contrastive group is `group_size`
non-overlapping windows of one clip when the clip is long enough (negatives are the same
speaker at other times, the hard case), otherwise windows of different clips.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from mssync.core.checkpoints import Curve, fingerprint, load_resume, save
from mssync.core.device import pick_device, to_device
from mssync.core.errors import ConfigError, MssyncError
from mssync.core.reproducible import provenance
from mssync.motion.balance import ClipDraws, clip_probabilities, log_shares
from mssync.motion.motion_cache import cache_index
from mssync.motion.space import MotionSpace
from mssync.syncers.model import Syncer, SyncerSettings, info_nce
from mssync.syncers.pyramid import MOTION_WINDOW
from mssync.syncers.windows import LevelClip, evaluation_groups, prepare_level

log = logging.getLogger(__name__)

# No wall-clock column: the same run writes the same curve (timings are in the log; the run's threads
# and device in the model's "run").
TSV_COLUMNS = ("epoch", "step", "margin", "train_loss", "train_top1", "val_loss", "val_top1", "val_chance")


@dataclasses.dataclass(frozen=True)
class SyncersSection:
    """params.yaml's `syncers` section: the chosen preset, each set's seed, the device.

    The rule hands over the section with only the chosen preset in it, so editing another preset
    reruns nothing; the checkpoint stores the preset it was trained with, so scoring code never
    needs this section again."""

    SECTION: ClassVar[str] = "syncers"
    preset_name: str
    preset: dict  # the chosen preset's values as in params.yaml (stored in the checkpoint)
    seeds: dict[str, int]  # set name -> base seed
    device: str
    max_speaker_share: float  # of the training windows drawn (motion/balance.py)

    @classmethod
    def from_params(cls, values: dict) -> "SyncersSection":
        return cls(preset_name=values["preset"], preset=dict(values["presets"][values["preset"]]),
                   seeds={name: s["seed"] for name, s in values["sets"].items()}, device=values["device"],
                   max_speaker_share=values["max_speaker_share"])

    @property
    def settings(self) -> SyncerSettings:
        return SyncerSettings.from_dict(self.preset)

    def seed(self, syncer_set: str, level: int) -> int:
        """Every (set, level) job draws its own stream: set seed * 100 + level."""
        if syncer_set not in self.seeds:
            raise ConfigError(f"syncers.sets has no set {syncer_set!r} (sets: {sorted(self.seeds)})")
        return self.seeds[syncer_set] * 100 + level


def sample_group(clips: list[LevelClip], size: int, rng: np.random.Generator,
                 draws: ClipDraws | None = None) -> list[tuple[int, int]]:
    """(clip index, start) pairs of one contrastive group; windows never overlap each other. Clips
    are drawn by `draws` (default: by their number of windows)."""
    draws = draws or ClipDraws.by_windows(np.array([len(c.starts) for c in clips]))
    c = draws(rng)
    same = clips[c].grid(int(rng.integers(MOTION_WINDOW)))
    if len(same) >= size:  # same speaker, other moments: the hard negatives
        return [(c, int(s)) for s in rng.choice(same, size, replace=False)]
    picked: list[tuple[int, int]] = []
    span = MOTION_WINDOW * clips[0].scale  # a window's length in video frames

    def fits(c: int, s: int) -> bool:
        return all(clips[pc].source != clips[c].source or abs(clips[pc].frame_of(ps) - clips[c].frame_of(s)) >= span
                   for pc, ps in picked)

    for _ in range(50 * size):  # different clips (repeats only where windows do not overlap in time)
        c = draws(rng)
        s = int(rng.choice(clips[c].starts))
        if fits(c, s):
            picked.append((c, s))
            if len(picked) == size:
                return picked
    # Random draws keep missing (a corpus with few, short clips): scan every window in random order,
    # so a group that exists is always found and a training run never fails on an unlucky draw.
    for c in rng.permutation(len(clips)):
        for s in rng.permutation(clips[c].starts):
            if fits(int(c), int(s)):
                picked.append((int(c), int(s)))
                if len(picked) == size:
                    return picked
    raise MssyncError(f"cannot draw {size} non-overlapping windows from {len(clips)} clips; lower group_size")


def sample_batch(clips: list[LevelClip], s: SyncerSettings, rng: np.random.Generator,
                 draws: ClipDraws | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    draws = draws or ClipDraws.by_windows(np.array([len(c.starts) for c in clips]))
    motion, audio = [], []
    for _ in range(s.groups_per_batch):
        for c, start in sample_group(clips, s.group_size, rng, draws):
            m, a = clips[c].windows(np.array([start]))
            motion.append(m)
            audio.append(a)
    return torch.cat(motion), torch.cat(audio)  # (B*G, 5, F), (B*G, 20, n_mels)


@torch.no_grad()
def validate(model: Syncer, clips: list[LevelClip], s: SyncerSettings, device: torch.device) -> dict[str, float]:
    """Same-clip top-1 retrieval (motion -> audio) among each group, and the margin-free loss."""
    model.eval()
    hits, chance, losses = [], [], []
    for clip in clips:
        for starts in evaluation_groups(clip, s.group_size):
            motion, audio = clip.windows(starts)
            m, a = model(motion.to(device), audio.to(device))
            sims = m @ a.T
            hits += (sims.argmax(dim=1) == torch.arange(len(starts), device=device)).tolist()
            chance += [1 / len(starts)] * len(starts)
            losses.append(float(info_nce(m[None], a[None], 0.0, s.temperature)))
    model.train()
    if not hits:
        raise MssyncError("no validation windows at this level: the val clips are too short")
    return {"val_loss": float(np.mean(losses)), "val_top1": float(np.mean(hits)), "val_chance": float(np.mean(chance))}


def train_syncer(
    *, train: Path, val: Path, space_path: Path, out: Path, metrics_tsv: Path, level: int, syncer_set: str,
    syncers: SyncersSection, kernel: int,
) -> dict:
    """Train (or resume) one set's syncer at `level`; `out` holds the best model on the val split,
    with its recipe (preset, seed, kernel), so whoever loads it needs no settings of its own."""
    settings, settings_dict, seed = syncers.settings, syncers.preset, syncers.seed(syncer_set, level)
    device = pick_device(syncers.device)
    space = MotionSpace.load(space_path)
    train_clips = prepare_level(train, space, level, kernel, phases=True)
    val_clips = prepare_level(val, space, level, kernel)
    if not train_clips or not val_clips:
        raise MssyncError(f"level {level}: no usable windows in the train or val split")
    n_features, n_mels = train_clips[0].motion.shape[1], train_clips[0].audio.shape[1]
    resume_path = out.with_suffix(".resume.pt")
    resumable = {k: v for k, v in settings_dict.items() if k != "steps"}  # more steps = the same run, longer
    key = fingerprint([cache_index(train), cache_index(val), space_path], settings=resumable, level=level, seed=seed, kernel=kernel,
                      max_speaker_share=syncers.max_speaker_share)
    speakers, windows = [c.speaker for c in train_clips], np.array([len(c.starts) for c in train_clips])
    log_shares(f"level {level}", speakers, windows, syncers.max_speaker_share)
    draw = ClipDraws(clip_probabilities(speakers, windows, syncers.max_speaker_share))

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Syncer(n_features, n_mels, settings, level).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, best = 0, {"val_top1": -1.0, "val_loss": float("inf"), "step": -1}
    best_model = None  # the state dict `out` is written from
    curve = Curve(metrics_tsv, resume_path, "curve", TSV_COLUMNS)
    state = load_resume(resume_path, key, "step", settings.steps)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, best, best_model = state["step"], state["best"], state["best_model"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        log.info("level %d: resuming at step %d of %d (best val top-1 %.3f)", level, step, settings.steps,
                 best["val_top1"])
    curve.start(state["curve_rows"] if state else 0)

    def write_model() -> None:
        save({"state_dict": best_model, "n_features": n_features, "n_mels": n_mels, "level": level,
              "settings": settings_dict, "seed": seed, "kernel": kernel, "best": best, "run": provenance(device)}, out)

    log.info("level %d: %d train clips (%d windows), %d val clips, %d features, device %s", level, len(train_clips),
             sum(len(c.starts) for c in train_clips), len(val_clips), n_features, device)

    model.train()
    started, running = time.perf_counter(), {"loss": [], "top1": []}
    progress = tqdm(total=settings.steps, initial=step, desc=f"syncer level {level}", mininterval=10, leave=False)
    while step < settings.steps:
        motion, audio = sample_batch(train_clips, settings, rng, draw)  # data
        motion = motion + settings.noise * torch.randn_like(motion)
        audio = audio + settings.noise * torch.randn_like(audio)
        m, a = model(to_device(motion, device), to_device(audio, device))  # forward
        groups = (settings.groups_per_batch, settings.group_size, -1)
        m, a = m.view(groups), a.view(groups)
        margin = settings.margin.at(step)
        loss = info_nce(m, a, margin, settings.temperature)  # loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # backward
        optimiser.step()
        step += 1
        progress.update()
        with torch.no_grad():
            top1 = (torch.bmm(m, a.transpose(1, 2)).argmax(-1) == torch.arange(settings.group_size, device=device)).float().mean()
        running["loss"].append(float(loss.detach()))
        running["top1"].append(float(top1))
        if step % settings.eval_every == 0 or step == settings.steps:  # log + checkpoint
            scores = validate(model, val_clips, settings, device)
            row = {"epoch": curve.rows + 1, "step": step, "margin": round(margin, 5),
                   "train_loss": round(np.mean(running["loss"]), 5), "train_top1": round(np.mean(running["top1"]), 4),
                   "val_loss": round(scores["val_loss"], 5), "val_top1": round(scores["val_top1"], 4),
                   "val_chance": round(scores["val_chance"], 4)}
            running = {"loss": [], "top1": []}
            better = (scores["val_top1"], -scores["val_loss"]) > (best["val_top1"], -best["val_loss"])
            if better or best_model is None:
                best = {"val_top1": scores["val_top1"], "val_loss": scores["val_loss"], "step": step,
                        "val_chance": scores["val_chance"]}  # gan.sync_weighting: validated reads the lift
                best_model = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                write_model()
            curve.append([row])
            save({"fingerprint": key, "model": model.state_dict(),
                  "optimiser": optimiser.state_dict(), "step": step, "best": best, "best_model": best_model,
                  "curve_rows": curve.rows, "numpy_rng": rng.bit_generator.state,
                  "torch_rng": torch.get_rng_state()}, resume_path)
            log.info("level %d step %d: train loss %.3f top-1 %.3f | val loss %.3f top-1 %.3f (chance %.3f); %.1f s",
                     level, step, row["train_loss"], row["train_top1"], scores["val_loss"], scores["val_top1"],
                     scores["val_chance"], time.perf_counter() - started)
    progress.close()
    if not out.is_file():  # a finished run resumed: its model was deleted, its checkpoint holds it
        write_model()
        log.info("level %d: run already finished at step %d; model and curve written from its checkpoint",
                 level, step)
    return best
