"""Training the MS-Sync generator: data windows, the multi-scale sync loss, the GAN loop.

One iteration = one discriminator step then one generator step (hinge losses), as in the method.
The generator's loss is  w_adv L_adv + w_sync L_sync + w_sup L_sup + w_rec L_rec  where L_sync is
minus the mean cosine that the frozen 'loss' syncers give the 43-frame track [true frame 0,
reconstructed frames 1-2, generated frames 3-42] against its audio, averaged over gan.sync_levels.
Every iteration's loss terms go to a TSV; validation roll-outs every eval_every iterations.

Validation rolls each val clip out from its first frame and scores what a viewer would judge
(on held-out val speakers): the sync cosine of the loss syncers, how far the mouth opens and how
fast the head moves against the real clip (ratios: geometric means over clips). Their
`selection_score` (sync cosine minus the mean per-clip |log ratio| of mouth amplitude and pose
speed: a generator that syncs by barely moving loses) drives early stopping: with `patience` > 0 the generator kept is the best-scoring
validation's, and training stops after `patience` validations without a better one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch

from mssync.core.checkpoints import Curve, fingerprint, load_resume, save
from mssync.core.checkpoints import load as load_checkpoint
from mssync.core.constants import STD_FLOOR
from mssync.core.device import pick_device, to_device
from mssync.core.errors import MssyncError
from mssync.core.reproducible import provenance
from mssync.gan.model import (
    AUDIO_PER_FRAME,
    FrameDiscriminator,
    Generator,
    GeneratorSettings,
    SequenceDiscriminator,
    hinge_d,
    hinge_g,
)
from mssync.media.audio import standardise_audio
from mssync.media.face_shape import RATIO_FLOOR, mouth_amplitude_ratio, mouth_opening
from mssync.motion.balance import ClipDraws, clip_probabilities, log_shares
from mssync.motion.clips import ClipArrayCache
from mssync.motion.dynamics import pose_velocity_std
from mssync.motion.motion_cache import CachedClip, MotionCache, cache_index, load_cache
from mssync.motion.space import EXPRESSION, LOG_SCALE, ROTATION, TRANSLATION, MotionSpace
from mssync.syncers.model import Syncer
from mssync.syncers.pyramid import AUDIO_WINDOW, MOTION_WINDOW, temporal_pyramid

log = logging.getLogger(__name__)

# No wall-clock column: the same run writes the same curve (timings are in the log; the run's threads
# and device in the generator's "run").
TRAIN_COLUMNS = ("iteration", "d_loss", "d_real", "d_fake", "g_total", "g_adv", "g_sync", "g_sup", "g_rec")
VAL_COLUMNS = ("iteration", "val_sync_cos", "val_l2", "val_pose_velocity_ratio", "val_mouth_amplitude_ratio",
               "val_score")
SYNC_AUDIO_PAD = 4 * AUDIO_WINDOW  # audio rows added (replicated) at a track's end so every motion window has audio


@dataclasses.dataclass(frozen=True)
class GanSettings:
    """params.yaml's `gan` section with its chosen preset unpacked: the generator's whole recipe."""

    SECTION: ClassVar[str] = "gan"
    model: GeneratorSettings
    batch: int
    iterations: int
    lr_g: float
    lr_d: float
    eval_every: int
    val_frames: int
    sync_levels: list[int]
    sync_weighting: str  # uniform | validated (validated_sync_weights)
    loss_weights: dict[str, float]
    observed_frames: int
    generated_frames: int
    rollout_pull: float  # drift control for long roll-outs (validation, evaluation, generation)
    seed: int
    max_speaker_share: float  # of the training windows drawn (motion/balance.py)
    device: str  # auto | cpu | cuda: where it trains, not part of the recipe
    patience: int = 0  # validations without a better selection score before stopping; 0: train every iteration

    @classmethod
    def from_params(cls, gan: dict) -> "GanSettings":
        preset = gan["presets"][gan["preset"]]
        return cls(model=GeneratorSettings(**preset["model"]), **{k: v for k, v in preset.items() if k != "model"},
                   sync_levels=list(gan["sync_levels"]), sync_weighting=gan["sync_weighting"],
                   loss_weights=dict(gan["loss_weights"]),
                   observed_frames=gan["observed_frames"], generated_frames=gan["generated_frames"],
                   rollout_pull=gan["rollout_pull"], seed=gan["seed"], max_speaker_share=gan["max_speaker_share"],
                   device=gan["device"])


def motion_groups(space: MotionSpace) -> list[int]:
    """Gate groups: rotation, translation, scale, expression (the softmax gate is per group)."""
    groups = np.zeros(space.dim, int)
    groups[ROTATION], groups[TRANSLATION], groups[LOG_SCALE], groups[EXPRESSION] = 0, 1, 2, 3
    return groups.tolist()


class GanClip:
    """A training or validation clip: its window starts in memory, its arrays made when first read
    (from the motion cache, positioned reads) and kept in a bounded LRU, so memory does not grow with
    the corpus: motion (T, D) standardised with the train statistics; mel (4T, n_mels) standardised
    per clip; feature_mean / feature_std (F,), per-clip statistics of the syncer features (as the
    syncers saw them)."""

    def __init__(self, clip_id: str, starts: np.ndarray, speaker: str,
                 make: Callable[[], tuple[torch.Tensor, ...]], arrays: ClipArrayCache) -> None:
        self.clip_id, self.starts, self.speaker = clip_id, starts, speaker
        self._make, self._arrays = make, arrays

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self._arrays.get(self.clip_id, self._make)

    motion = property(lambda self: self._tensors()[0])
    mel = property(lambda self: self._tensors()[1])
    feature_mean = property(lambda self: self._tensors()[2])
    feature_std = property(lambda self: self._tensors()[3])


def window_starts(valid: np.ndarray, window: int) -> np.ndarray:
    """Starts of the windows of `window` frames that are valid throughout."""
    if len(valid) < window:
        return np.zeros(0, int)
    return np.flatnonzero(np.lib.stride_tricks.sliding_window_view(np.asarray(valid), window).all(axis=1))


def load_clips(cache: Path, space: MotionSpace, mean: np.ndarray, std: np.ndarray, window: int,
               arrays: ClipArrayCache | None = None) -> list[GanClip]:
    arrays = arrays or ClipArrayCache()
    return [GanClip(clip_id, window_starts(clip.valid, window), clip.speaker or clip_id,
                    functools.partial(_clip_tensors, space, clip, mean, std), arrays)
            for clip_id, clip in sorted(load_cache(cache).items())]


def _clip_tensors(space: MotionSpace, clip: CachedClip, mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, ...]:
    motion, valid = np.asarray(clip.motion), np.asarray(clip.valid)
    features = space.syncer_features(motion)[valid]
    return (torch.from_numpy(((motion - mean) / std).astype(np.float32)),
            torch.from_numpy(standardise_audio(np.asarray(clip.mel)).astype(np.float32)),
            torch.from_numpy(features.mean(0).astype(np.float32)),
            torch.from_numpy(np.maximum(features.std(0), STD_FLOOR).astype(np.float32)))


def audio_rows(mel: torch.Tensor, start: int, n_frames: int) -> torch.Tensor:
    """The mel rows of frames [start, start + n_frames), replicating the last row past the clip's end."""
    rows = mel[AUDIO_PER_FRAME * start:AUDIO_PER_FRAME * (start + n_frames)]
    missing = AUDIO_PER_FRAME * n_frames - len(rows)
    return torch.cat([rows, rows[-1:].expand(missing, -1)]) if missing > 0 else rows


def sample_batch(clips: list[GanClip], s: GanSettings, rng: np.random.Generator,
                 draws: ClipDraws | None = None) -> dict[str, torch.Tensor]:
    """A batch of training windows; clips drawn by `draws` (default: by their windows)."""
    window = s.observed_frames + s.generated_frames
    draws = draws or ClipDraws.by_windows(np.array([len(c.starts) for c in clips]))
    picks = [(clips[i], int(rng.choice(clips[i].starts))) for i in draws(rng, s.batch)]
    return {
        "motion": torch.stack([c.motion[t:t + window] for c, t in picks]),  # (B, W, D)
        "mel": torch.stack([audio_rows(c.mel, t, window + s.model.lookahead) for c, t in picks]),  # (B, 4(W+L), M)
        "sync_mel": torch.stack([audio_rows(c.mel, t, window + SYNC_AUDIO_PAD // AUDIO_PER_FRAME) for c, t in picks]),
        "feature_mean": torch.stack([c.feature_mean for c, _ in picks]),
        "feature_std": torch.stack([c.feature_std for c, _ in picks]),
    }


def validated_sync_weights(paths: list[Path]) -> dict[int, float]:
    """gan.sync_weighting: validated. A level's weight is its loss syncer's validation top-1 lift
    above chance, (top-1 - chance) / (1 - chance), clipped at 0 and divided by the best level's lift:
    the level that measures sync best keeps the paper's weight, a level at chance gets none (its
    gradient would be noise), and with no level above chance the sync loss is off."""
    lifts = {}
    for path in paths:
        blob = load_checkpoint(path)
        best = blob.get("best", {})
        if "val_chance" not in best:
            raise MssyncError(f"{path}: the checkpoint has no validation chance level (trained before "
                              f"gan.sync_weighting existed); retrain the syncer")
        lifts[int(blob["level"])] = max(0.0, (best["val_top1"] - best["val_chance"]) / (1.0 - best["val_chance"]))
    top = max(lifts.values(), default=0.0)
    return {level: (lift / top if top > 0 else 0.0) for level, lift in sorted(lifts.items())}


class SyncLoss(torch.nn.Module):
    """-mean cosine of the frozen syncers over every stride-1 window of a track, per level; with
    `level_weights`, each level's mean is weighted (still divided by the number of levels)."""

    def __init__(self, syncers: dict[int, Syncer], space: MotionSpace, mean: np.ndarray, std: np.ndarray, kernel: int,
                 level_weights: dict[int, float] | None = None):
        super().__init__()
        self.syncers = torch.nn.ModuleDict({str(level): m for level, m in syncers.items()})
        self.level_weights = {level: float((level_weights or {}).get(level, 1.0)) for level in syncers}
        weight, bias = space.syncer_matrix()
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32))  # motion -> syncer features
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.kernel = kernel

    def scores(self, track: torch.Tensor, mel: torch.Tensor, f_mean: torch.Tensor, f_std: torch.Tensor) -> dict[int, torch.Tensor]:
        """track (B, T, D) standardised motion, mel (B, 4T + pad, M) -> level: (B, windows) cosines."""
        motion = track * self.std + self.mean
        features = ((motion @ self.weight + self.bias) - f_mean[:, None]) / f_std[:, None]
        top = max(int(level) for level in self.syncers) + 1
        motion_levels = temporal_pyramid(features, top, self.kernel)
        audio_levels = temporal_pyramid(mel, top, self.kernel)
        out = {}
        for key, syncer in self.syncers.items():
            m, a = motion_levels[int(key)], audio_levels[int(key)]
            n = min(m.shape[1] - MOTION_WINDOW, (a.shape[1] - AUDIO_WINDOW) // 4) + 1
            if n < 1:  # a track shorter than one window at this level (short validation clips)
                continue
            mw = m.unfold(1, MOTION_WINDOW, 1)[:, :n].permute(0, 1, 3, 2)  # (B, n, 5, F)
            aw = a.unfold(1, AUDIO_WINDOW, 4)[:, :n].permute(0, 1, 3, 2)  # (B, n, 20, M)
            cos = syncer.similarity(mw.flatten(0, 1), aw.flatten(0, 1)).view(m.shape[0], n)
            out[int(key)] = cos
        return out

    def forward(self, track, mel, f_mean, f_std) -> torch.Tensor:
        if not len(self.syncers):
            return track.new_zeros(())
        scores = self.scores(track, mel, f_mean, f_std)
        if not scores:
            raise MssyncError(f"a {track.shape[1]}-frame track has no window at sync levels {list(self.syncers)}")
        return -torch.stack([self.level_weights[level] * s.mean() for level, s in scores.items()]).mean()


def feature_settings(cache: Path) -> dict:
    """How the training audio was featurised, so generate() can treat new audio the same way."""
    meta = MotionCache.open(cache).index["features"]
    return {"n_mels": meta["n_mels"], "hop_ms": meta["hop_ms"], "win_ms": meta["win_ms"], "n_fft": meta["n_fft"],
            "fmin": meta["mel_fmin"], "fmax": meta["mel_fmax"], "preemphasis": meta["preemphasis"]}


def ratio_penalty(ratios: list[float]) -> float:
    """Mean |ln ratio| over clips (NaNs skipped): 0 when every clip moves as its real one, and a clip
    2x too fast costs as much as one 2x too slow (they do not cancel, as in an averaged ratio)."""
    logs = [abs(np.log(max(r, RATIO_FLOOR))) for r in ratios if np.isfinite(r)]
    return float(np.mean(logs)) if logs else 0.0


def geometric_mean(ratios: list[float]) -> float:
    finite = [np.log(max(r, RATIO_FLOOR)) for r in ratios if np.isfinite(r)]
    return float(np.exp(np.mean(finite))) if finite else float("nan")


def selection_score(sync_cos: float, mouth_ratios: list[float], pose_ratios: list[float]) -> float:
    """Higher is better: validation sync cosine (0 without sync syncers) minus the per-clip log misfit
    of the mouth amplitude and of the pose speed against the real clips."""
    sync = sync_cos if np.isfinite(sync_cos) else 0.0
    return float(sync - ratio_penalty(mouth_ratios) - ratio_penalty(pose_ratios))


@dataclasses.dataclass
class EarlyStopping:
    """The best validation so far and how many validations since: stop after `patience` without progress."""

    patience: int
    best_score: float = -np.inf
    best_iteration: int = 0
    since_best: int = 0

    def update(self, score: float, iteration: int) -> bool:
        """Record one validation; True when it is the best so far."""
        if score > self.best_score:
            self.best_score, self.best_iteration, self.since_best = score, iteration, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict:
        return dataclasses.asdict(self)


@torch.no_grad()
def validate(generator: Generator, sync: SyncLoss, clips: list[GanClip], s: GanSettings, space: MotionSpace,
             mean: np.ndarray, std: np.ndarray, device: torch.device) -> dict[str, float]:
    """Roll out val_frames from each val clip's first frame; sync, distance to truth, pose speed and
    mouth amplitude against the real clip, and the selection score of the whole."""
    generator.eval()
    cos, l2, ratios, mouths = [], [], [], []
    for clip in clips:
        n = min(s.val_frames, len(clip.motion))
        truth = clip.motion[:n].to(device)
        mel = audio_rows(clip.mel, 0, n + generator.s.lookahead)[None].to(device)
        fake = torch.cat([truth[None, :1], generator(truth[None, :1], mel, n, s.rollout_pull)], dim=1)  # (1, n, D)
        sync_mel = audio_rows(clip.mel, 0, n + SYNC_AUDIO_PAD // AUDIO_PER_FRAME)[None].to(device)
        if len(sync.syncers):
            scores = sync.scores(fake, sync_mel, clip.feature_mean[None].to(device), clip.feature_std[None].to(device))
            if scores:
                cos.append(float(torch.stack([v.mean() for v in scores.values()]).mean()))
        l2.append(float(((fake[0] - truth) ** 2).sum(-1).mean()))
        real_motion, fake_motion = truth.cpu().numpy() * std + mean, fake[0].cpu().numpy() * std + mean
        ratios.append(pose_velocity_std(fake_motion) / max(pose_velocity_std(real_motion), 1e-9))
        mouths.append(mouth_amplitude_ratio(mouth_opening(space.decode(fake_motion), 1),
                                            mouth_opening(space.decode(real_motion), 1)))
    generator.train()
    sync_cos = float(np.mean(cos)) if cos else float("nan")
    return {"val_sync_cos": sync_cos, "val_l2": float(np.mean(l2)),
            "val_pose_velocity_ratio": geometric_mean(ratios), "val_mouth_amplitude_ratio": geometric_mean(mouths),
            "val_score": selection_score(sync_cos, mouths, ratios)}


def load_loss_syncers(paths: list[Path], sync_levels: list[int], device: torch.device) -> tuple[dict[int, Syncer], int | None]:
    """The frozen loss syncers by level (read from their checkpoints, not from file names), and the
    pyramid kernel they were trained with, which the sync loss must use too."""
    syncers = {}
    for path in paths:
        syncer = Syncer.load(path, device)
        if syncer.level in syncers:
            raise MssyncError(f"{path}: a second syncer for level {syncer.level}")
        syncers[syncer.level] = syncer
    if sorted(syncers) != sorted(sync_levels):
        raise MssyncError(f"the syncers given are for levels {sorted(syncers)}, gan.sync_levels asks for {sorted(sync_levels)}")
    kernels = {s.kernel for s in syncers.values()}
    if len(kernels) > 1:
        raise MssyncError(f"the loss syncers were trained with different pyramid kernels {sorted(kernels)}")
    return syncers, next(iter(kernels), None)


def train_gan(*, train: Path, val: Path, space_path: Path, syncer_paths: list[Path], out: Path, train_tsv: Path,
              val_tsv: Path, settings: GanSettings) -> dict:
    """Train (or resume) the generator; `out` holds the generator and what generate() needs."""
    device = pick_device(settings.device)
    seed = settings.seed
    syncers, kernel = load_loss_syncers(syncer_paths, settings.sync_levels, device)
    space = MotionSpace.load(space_path)
    window = settings.observed_frames + settings.generated_frames
    mean, std = MotionCache.open(train).valid_motion_stats()
    std = np.maximum(std, STD_FLOOR)
    train_clips = load_clips(train, space, mean, std, window)
    val_clips = load_clips(val, space, mean, std, 1)
    if not any(len(c.starts) for c in train_clips):
        raise MssyncError(f"no train clip has {window} consecutive frames with a face")
    n_mels = train_clips[0].mel.shape[1]
    speakers, windows = [c.speaker for c in train_clips], np.array([len(c.starts) for c in train_clips])
    log_shares("generator", speakers, windows, settings.max_speaker_share)
    draw = ClipDraws(clip_probabilities(speakers, windows, settings.max_speaker_share))

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = Generator(space.dim, n_mels, motion_groups(space), settings.model).to(device)
    seq_d = SequenceDiscriminator(space.dim, settings.model).to(device)
    frame_d = FrameDiscriminator(space.dim, settings.model).to(device)
    weights = validated_sync_weights(syncer_paths) if settings.sync_weighting == "validated" else None
    if weights is not None:
        log.info("validated sync weights by level: %s", {level: round(w, 3) for level, w in weights.items()})
    sync = SyncLoss(syncers, space, mean, std, kernel, weights).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr_g, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam([*seq_d.parameters(), *frame_d.parameters()], lr=settings.lr_d, betas=(0.0, 0.999))

    resume_path = out.with_suffix(".resume.pt")
    resumable = dataclasses.asdict(dataclasses.replace(settings, iterations=0, device=""))  # more iterations = same run
    key = fingerprint([cache_index(train), cache_index(val), space_path, *sorted(syncer_paths)], settings=resumable, seed=seed, kernel=kernel)
    iteration, train_rows = 0, []  # train rows not yet appended to the curve
    curves = {name: Curve(path, resume_path, name, columns)
              for name, path, columns in (("train", train_tsv, TRAIN_COLUMNS), ("val", val_tsv, VAL_COLUMNS))}
    state = load_resume(resume_path, key, "iteration", settings.iterations)
    stopping, best = EarlyStopping(settings.patience), None  # best: the kept generator's weights (patience > 0)
    if state is not None:
        for module, name in ((generator, "generator"), (seq_d, "seq_d"), (frame_d, "frame_d"), (opt_g, "opt_g"), (opt_d, "opt_d")):
            module.load_state_dict(state[name])
        iteration = state["iteration"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        stopping = EarlyStopping(**state["early_stopping"])
        best = state["best_generator"]
        log.info("resuming at iteration %d of %d", iteration, settings.iterations)
    for name, curve in curves.items():
        curve.start(state["curve_rows"][name] if state else 0)

    def write_model() -> None:
        """The generator kept: the latest weights, or with early stopping the best validation's."""
        kept = best if best is not None else generator.state_dict()
        save({"generator": kept, "run": provenance(device), "model": dataclasses.asdict(settings.model),
              "motion_dim": space.dim, "n_mels": n_mels, "groups": motion_groups(space),
              "features": feature_settings(train), "rollout_pull": settings.rollout_pull,
              "motion_mean": torch.as_tensor(mean), "motion_std": torch.as_tensor(std),
              "iteration": stopping.best_iteration if best is not None else iteration,
              "trained_iterations": iteration, "early_stopping": stopping.state(),
              "sync_levels": list(settings.sync_levels), "seed": seed,
              "sync_weighting": settings.sync_weighting, "sync_weights": sync.level_weights}, out)

    w = settings.loss_weights
    obs = settings.observed_frames
    log.info("generator %.2f M parameters, discriminators %.2f M; %d train clips; sync levels %s; device %s",
             sum(p.numel() for p in generator.parameters()) / 1e6,
             sum(p.numel() for p in [*seq_d.parameters(), *frame_d.parameters()]) / 1e6,
             len(train_clips), settings.sync_levels, device)

    started = time.perf_counter()
    while iteration < settings.iterations and not stopping.stop:
        batch = {k: to_device(v, device) for k, v in sample_batch(train_clips, settings, rng, draw).items()}  # data
        motion = batch["motion"]
        observed, future = motion[:, 1:obs], motion[:, obs:]

        with torch.no_grad():  # discriminator step on a fake made without gradients
            fake = generator(motion[:, :obs], batch["mel"], window)[:, obs - 1:]
        real_score = seq_d(observed, future), frame_d(future)
        fake_score = seq_d(observed, fake), frame_d(fake)
        d_loss = hinge_d(real_score[0], fake_score[0]) + hinge_d(real_score[1], fake_score[1])
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        predicted = generator(motion[:, :obs], batch["mel"], window)  # generator step: frames 1 .. W-1
        rec, pred = predicted[:, :obs - 1], predicted[:, obs - 1:]
        adv = hinge_g(seq_d(observed, pred)) + hinge_g(frame_d(pred))
        track = torch.cat([motion[:, :1], predicted], dim=1)  # [true frame 0, reconstructed, generated]
        sync_loss = sync(track, batch["sync_mel"], batch["feature_mean"], batch["feature_std"])
        sup = ((pred - future) ** 2).sum(-1).mean()
        rec_loss = ((rec - motion[:, 1:obs]) ** 2).sum(-1).mean()
        g_loss = w["adv"] * adv + w["sync"] * sync_loss + w["sup"] * sup + w["rec"] * rec_loss
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        iteration += 1

        d_loss, g_loss, adv, sync_loss, sup, rec_loss = (float(v.detach()) for v in (d_loss, g_loss, adv, sync_loss, sup, rec_loss))
        train_rows.append({"iteration": iteration, "d_loss": round(float(d_loss), 5),
                           "d_real": round(float(real_score[0].detach().mean()), 5), "d_fake": round(float(fake_score[0].detach().mean()), 5),
                           "g_total": round(float(g_loss), 5), "g_adv": round(float(adv), 5),
                           "g_sync": round(float(sync_loss), 5), "g_sup": round(float(sup), 5),
                           "g_rec": round(float(rec_loss), 5)})
        if iteration % settings.eval_every == 0 or iteration == settings.iterations:  # validate + checkpoint
            scores = validate(generator, sync, val_clips, settings, space, mean, std, device)
            if stopping.update(scores["val_score"], iteration) and settings.patience > 0:
                best = {k: v.detach().clone() for k, v in generator.state_dict().items()}
            val_row = {"iteration": iteration, **{k: round(v, 5) for k, v in scores.items()}}
            log.info("iteration %d: D %.3f | G adv %.3f sync %.3f sup %.3f rec %.4f | val sync %.3f l2 %.2f pose-vel x%.2f"
                     " mouth x%.2f score %.3f (best %.3f at %d); %.1f s", iteration, float(d_loss), float(adv),
                     float(sync_loss), float(sup), float(rec_loss), scores["val_sync_cos"], scores["val_l2"],
                     scores["val_pose_velocity_ratio"], scores["val_mouth_amplitude_ratio"], scores["val_score"],
                     stopping.best_score, stopping.best_iteration, time.perf_counter() - started)
            curves["train"].append(train_rows)
            curves["val"].append([val_row])
            train_rows = []
            write_model()
            save({"fingerprint": key, "generator": generator.state_dict(), "seq_d": seq_d.state_dict(),
                  "frame_d": frame_d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                  "iteration": iteration, "curve_rows": {name: c.rows for name, c in curves.items()},
                  "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                  "early_stopping": stopping.state(), "best_generator": best}, resume_path)
            if stopping.stop:
                log.info("early stop at iteration %d: %d validations without a better score than %.3f (iteration %d)",
                         iteration, stopping.patience, stopping.best_score, stopping.best_iteration)
    if not out.is_file():  # a finished run resumed: its generator was deleted, its checkpoint holds it
        write_model()
        log.info("run already finished at iteration %d; generator and curves written from its checkpoint", iteration)
    return {"iterations": iteration, "seconds": time.perf_counter() - started}
