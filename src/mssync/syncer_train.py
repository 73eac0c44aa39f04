"""Training one syncer level: window sampling, the loop, resumable checkpoints, per-epoch TSV.

Data: each clip's syncer features (head pose + lip/jaw shape, from the motion space) and its
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

import numpy as np
import torch
from tqdm import tqdm

from .errors import MssyncError
from .motion import MotionSpace, load_split
from .pyramid import AUDIO_PER_MOTION, AUDIO_WINDOW, MOTION_WINDOW, temporal_pyramid
from .syncer import Syncer, SyncerSettings, info_nce, pick_device
from .training import fingerprint, load_resume, read_tsv, save, write_tsv

log = logging.getLogger(__name__)

STD_FLOOR = 1e-6
VALID_AT_LEVEL = 0.999  # a coarse sample is usable when (almost) all frames under it are
TSV_COLUMNS = ("epoch", "step", "margin", "train_loss", "train_top1", "val_loss", "val_top1", "val_chance", "seconds")


@dataclasses.dataclass
class LevelClip:
    """One clip at one pyramid level, ready for windowing."""

    clip_id: str
    motion: torch.Tensor  # (T_l, F) standardised syncer features
    audio: torch.Tensor  # (T_la, n_mels) standardised log-mel
    starts: np.ndarray  # usable window starts, in level-l motion samples
    source: str = ""  # the clip it comes from (phase-shifted copies share it)
    phase: int = 0  # first video frame of the pyramid (see prepare_level)
    scale: int = 1  # video frames per level-l sample (2**level)

    def __post_init__(self) -> None:
        self.source = self.source or self.clip_id

    def frame_of(self, start: int) -> int:
        """Video frame where a level-l window starts, to compare windows across phases."""
        return self.phase + start * self.scale

    def grid(self, offset: int) -> np.ndarray:
        """Non-overlapping window starts on the grid offset, offset + 5, ..."""
        return self.starts[(self.starts - offset) % MOTION_WINDOW == 0]

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        motion = torch.stack([self.motion[s:s + MOTION_WINDOW] for s in starts])  # (N, 5, F)
        audio = torch.stack([self.audio[AUDIO_PER_MOTION * s:AUDIO_PER_MOTION * s + AUDIO_WINDOW] for s in starts])
        return motion, audio  # (N, 5, F), (N, 20, n_mels)


def standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-dimension z-score; a dimension that does not vary (a still head) is exactly 0, not
    float rounding noise blown up by a tiny divisor."""
    ref = (x[mask] if mask is not None and mask.any() else x).astype(np.float64)
    std = ref.std(axis=0)
    scaled = (x - ref.mean(axis=0)) / np.where(std < STD_FLOOR, np.inf, std)
    return scaled.astype(np.float32)


def standardise_audio(mel: np.ndarray) -> np.ndarray:
    """Per-file z-score of the log-mel the generator sees, the same at training and generation time
    (the floor only guards a band that never changes, as in digital silence)."""
    return (mel - mel.mean(0)) / np.maximum(mel.std(0), STD_FLOOR)


def level_clip(clip_id: str, features: np.ndarray, mel: np.ndarray, valid: np.ndarray, level: int,
               kernel: int) -> LevelClip | None:
    """A clip's syncer features (T, F) and log-mel (4T, M), standardised per clip, at `level`."""
    frame_audio = np.repeat(valid, AUDIO_PER_MOTION)[: len(mel)]
    motion_l = temporal_pyramid(standardise(features, valid), level + 1, kernel)[level]
    audio_l = temporal_pyramid(standardise(mel, frame_audio), level + 1, kernel)[level]
    valid_l = temporal_pyramid(valid.astype(np.float32)[:, None], level + 1, kernel)[level][:, 0] >= VALID_AT_LEVEL
    n = min(len(motion_l) - MOTION_WINDOW, (len(audio_l) - AUDIO_WINDOW) // AUDIO_PER_MOTION) + 1
    starts = np.flatnonzero([valid_l[i:i + MOTION_WINDOW].all() for i in range(max(n, 0))])
    if not len(starts):
        return None
    return LevelClip(clip_id, torch.from_numpy(motion_l), torch.from_numpy(audio_l), starts)


def prepare_level(split: Path, space: MotionSpace, level: int, kernel: int, phases: bool = False) -> list[LevelClip]:
    """Every clip of a split at `level`, with the starts of its fully valid windows.

    `phases` (training only): each stride-2 step keeps every second sample, so starting the pyramid
    at frame 0, 1, ..., 2**level - 1 gives 2**level different coarse sequences of the same clip.
    The coarse levels, starved of windows on small corpora, see all of them."""
    clips = []
    for clip_id, clip in sorted(load_split(split, space).items()):
        features = space.syncer_features(clip.motion)
        for phase in range(2**level if phases else 1):
            lc = level_clip(f"{clip_id}@{phase}" if phases else clip_id, features[phase:],
                            clip.mel[AUDIO_PER_MOTION * phase:], clip.valid[phase:], level, kernel)
            if lc is not None:
                lc.source, lc.phase, lc.scale = clip_id, phase, 2**level
                clips.append(lc)
    return clips


def sample_group(clips: list[LevelClip], size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(clip index, start) pairs of one contrastive group; windows never overlap each other."""
    weights = np.array([len(c.starts) for c in clips], float)
    c = int(rng.choice(len(clips), p=weights / weights.sum()))
    same = clips[c].grid(int(rng.integers(MOTION_WINDOW)))
    if len(same) >= size:  # same speaker, other moments: the hard negatives
        return [(c, int(s)) for s in rng.choice(same, size, replace=False)]
    picked: list[tuple[int, int]] = []
    span = MOTION_WINDOW * clips[0].scale  # a window's length in video frames
    for _ in range(50 * size):  # different clips (repeats only where windows do not overlap in time)
        c = int(rng.choice(len(clips), p=weights / weights.sum()))
        s = int(rng.choice(clips[c].starts))
        if all(clips[pc].source != clips[c].source or abs(clips[pc].frame_of(ps) - clips[c].frame_of(s)) >= span
               for pc, ps in picked):
            picked.append((c, s))
            if len(picked) == size:
                return picked
    raise MssyncError(f"cannot draw {size} non-overlapping windows from {len(clips)} clips; lower group_size")


def sample_batch(clips: list[LevelClip], s: SyncerSettings, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    motion, audio = [], []
    for _ in range(s.groups_per_batch):
        for c, start in sample_group(clips, s.group_size, rng):
            m, a = clips[c].windows(np.array([start]))
            motion.append(m)
            audio.append(a)
    return torch.cat(motion), torch.cat(audio)  # (B*G, 5, F), (B*G, 20, n_mels)


def evaluation_groups(clip: LevelClip, size: int) -> list[np.ndarray]:
    """Deterministic same-clip groups: on each of the 5 window grids, consecutive chunks of up to
    `size` non-overlapping windows (every window is a query once; each group's windows are disjoint)."""
    groups = []
    for offset in range(MOTION_WINDOW):
        grid = clip.grid(offset)
        groups += [grid[i:i + size] for i in range(0, len(grid), size) if len(grid[i:i + size]) >= 2]
    return groups


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


def load_syncer(path: Path, device: torch.device | str = "cpu") -> Syncer:
    """A trained syncer, frozen and in eval mode (checkpoints load with weights_only=True)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = Syncer(blob["n_features"], blob["n_mels"], SyncerSettings.from_dict(blob["settings"]), blob["level"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval().requires_grad_(False)


def train_syncer(
    train: Path, val: Path, space_path: Path, out: Path, metrics_tsv: Path, level: int,
    settings: SyncerSettings, settings_dict: dict, kernel: int, seed: int, device_name: str = "auto",
) -> dict:
    """Train (or resume) the level's syncer; `out` holds the best model on the val split."""
    device = pick_device(device_name)
    space = MotionSpace.load(space_path)
    train_clips = prepare_level(train, space, level, kernel, phases=True)
    val_clips = prepare_level(val, space, level, kernel)
    if not train_clips or not val_clips:
        raise MssyncError(f"level {level}: no usable windows in the train or val split")
    n_features, n_mels = train_clips[0].motion.shape[1], train_clips[0].audio.shape[1]
    resume_path = out.with_suffix(".resume.pt")
    resumable = {k: v for k, v in settings_dict.items() if k != "steps"}  # more steps = the same run, longer
    key = fingerprint([train, val, space_path], settings=resumable, level=level, seed=seed, kernel=kernel)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Syncer(n_features, n_mels, settings, level).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, best, rows = 0, {"val_top1": -1.0, "val_loss": float("inf"), "step": -1}, []
    state = load_resume(resume_path, key)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, best = state["step"], state["best"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        rows = read_tsv(metrics_tsv, lambda row: int(row["epoch"]) <= step // settings.eval_every)
        log.info("level %d: resuming at step %d (best val top-1 %.3f)", level, step, best["val_top1"])
    log.info("level %d: %d train clips (%d windows), %d val clips, %d features, device %s", level, len(train_clips),
             sum(len(c.starts) for c in train_clips), len(val_clips), n_features, device)

    model.train()
    started, running = time.perf_counter(), {"loss": [], "top1": []}
    progress = tqdm(total=settings.steps, initial=step, desc=f"syncer level {level}", mininterval=10, leave=False)
    while step < settings.steps:
        motion, audio = sample_batch(train_clips, settings, rng)  # data
        motion = motion + settings.noise * torch.randn_like(motion)
        audio = audio + settings.noise * torch.randn_like(audio)
        m, a = model(motion.to(device), audio.to(device))  # forward
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
            rows.append({"epoch": len(rows) + 1, "step": step, "margin": round(margin, 5),
                         "train_loss": round(np.mean(running["loss"]), 5), "train_top1": round(np.mean(running["top1"]), 4),
                         "val_loss": round(scores["val_loss"], 5), "val_top1": round(scores["val_top1"], 4),
                         "val_chance": round(scores["val_chance"], 4),
                         "seconds": round(time.perf_counter() - started, 1)})
            running = {"loss": [], "top1": []}
            better = (scores["val_top1"], -scores["val_loss"]) > (best["val_top1"], -best["val_loss"])
            if better or not out.is_file():
                best = {"val_top1": scores["val_top1"], "val_loss": scores["val_loss"], "step": step}
                save({"state_dict": model.state_dict(), "n_features": n_features,
                       "n_mels": n_mels, "level": level, "settings": settings_dict, "seed": seed,
                       "kernel": kernel, "best": best}, out)
            write_tsv(metrics_tsv, TSV_COLUMNS, rows)
            save({"fingerprint": key, "model": model.state_dict(),
                   "optimiser": optimiser.state_dict(), "step": step, "best": best,
                   "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, resume_path)
            log.info("level %d step %d: train loss %.3f top-1 %.3f | val loss %.3f top-1 %.3f (chance %.3f)", level,
                     step, rows[-1]["train_loss"], rows[-1]["train_top1"], scores["val_loss"], scores["val_top1"],
                     scores["val_chance"])
    progress.close()
    return best
