"""Generating motion with a trained MS-Sync generator: the Python API behind `mssync generate`.

    from mssync.gan.generate import MotionGenerator
    gen = MotionGenerator.load("models/generator.pt", "models/motion_space.npz")
    motion = gen.generate(first_landmarks, mel)          # (T, D), any length of audio
    landmarks = gen.space.decode(motion)                 # (T, 478, 3)

The first frame sets identity and starting pose; the audio drives everything after it. The
transformer's context slides over the last 40 frames, so the length is only bounded by memory
for the audio features (a few MB per minute).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from mssync import __version__
from mssync.core import checkpoints
from mssync.core.config import FeatureSettings
from mssync.core.constants import FPS, GENERATOR_PATH
from mssync.core.device import pick_device
from mssync.core.errors import MssyncError, require_artifact
from mssync.features.schema import encode_metadata, list_column_to_numpy, nested_list, read_table, write_table
from mssync.gan.model import AUDIO_PER_FRAME, Generator, GeneratorSettings
from mssync.media.audio import log_mel, standardise_audio
from mssync.media.mesh import N_LANDMARKS
from mssync.motion.space import MotionSpace

log = logging.getLogger(__name__)

FEATURE_KEYS = ("n_mels", "hop_ms", "win_ms", "n_fft", "preemphasis")


@dataclasses.dataclass
class MotionGenerator:
    model: Generator
    space: MotionSpace
    mean: np.ndarray  # motion standardisation the generator was trained with
    std: np.ndarray
    features: FeatureSettings  # how to turn a waveform into the log-mel the generator expects
    device: torch.device
    pull: float = 0.0  # drift control of long roll-outs (gan.rollout_pull at training time)

    @classmethod
    def load(cls, model_path: str | Path, space_path: str | Path, device: str = "auto") -> "MotionGenerator":
        blob = checkpoints.load(require_artifact(model_path, GENERATOR_PATH))
        space = MotionSpace.load(space_path)
        if blob["motion_dim"] != space.dim:
            raise MssyncError(f"{model_path} was trained on {blob['motion_dim']}-D motion, {space_path} is {space.dim}-D")
        model = Generator(blob["motion_dim"], blob["n_mels"], blob["groups"], GeneratorSettings(**blob["model"]))
        model.load_state_dict(blob["generator"])
        target = pick_device(device)
        return cls(model.to(target).eval(), space, blob["motion_mean"].numpy(), blob["motion_std"].numpy(),
                   FeatureSettings(**blob["features"]), target, float(blob.get("rollout_pull", 0.0)))

    def mel_from_waveform(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return log_mel(samples, sample_rate, self.features)

    @torch.inference_mode()
    def generate(self, first: np.ndarray, mel: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """first: (478, 3) landmarks or (D,) motion of frame 0; mel: (n, n_mels) log-mel at 4 per frame.
        Returns (T, D) motion, T = n_frames or len(mel) // 4."""
        start = self.space.encode(first[None], np.ones(1, bool), smooth=False)[0][0] if first.ndim == 2 else first
        n = n_frames or len(mel) // AUDIO_PER_FRAME
        if n < 2:
            raise MssyncError(f"audio too short: {len(mel)} mel frames make {n} video frame(s)")
        mel = standardise_audio(mel)  # per file, as in training
        rows = AUDIO_PER_FRAME * (n + self.model.s.lookahead)
        mel = np.concatenate([mel, np.repeat(mel[-1:], max(rows - len(mel), 0), axis=0)])[:rows]
        prefix = torch.as_tensor((start - self.mean) / self.std, dtype=torch.float32, device=self.device)[None, None]
        audio = torch.as_tensor(mel, dtype=torch.float32, device=self.device)[None]
        rolled = self.model(prefix, audio, n, self.pull)[0].cpu().numpy()
        motion = np.concatenate([prefix[0].cpu().numpy(), rolled]) * self.std + self.mean
        return motion.astype(np.float32)


def motion_table(clip_id: str, motion: np.ndarray, landmarks: np.ndarray, fps: int, metadata: dict) -> pa.Table:
    frames = np.arange(len(motion), dtype=np.int32)
    table = pa.table({
        "clip_id": pa.array([clip_id] * len(motion), pa.string()),
        "frame": pa.array(frames),
        "time_s": pa.array(frames / fps, pa.float64()),
        "motion": nested_list(motion),
        "landmarks": nested_list(landmarks),
    })
    return table.replace_schema_metadata(encode_metadata({"mssync_version": __version__, "fps": fps, **metadata}))


def generate_to_parquet(generator: MotionGenerator, first: np.ndarray, samples: np.ndarray, sample_rate: int,
                        out: Path, clip_id: str, source: dict) -> np.ndarray:
    mel = generator.mel_from_waveform(samples, sample_rate)
    motion = generator.generate(first, mel)
    landmarks = generator.space.decode(motion)
    write_table(out, motion_table(clip_id, motion, landmarks, 1000 // (AUDIO_PER_FRAME * generator.features.hop_ms),
                                  {"motion_dim": generator.space.dim, **source}))
    log.info("%s: %d frames (%.1f s) -> %s", clip_id, len(motion), len(motion) / FPS, out)
    return motion


def first_frame(*, landmarks: Path | None = None, reference: Path | None = None, frame: int = 0) -> np.ndarray:
    """Frame 0 of a generation: a .npy of (478, 3) landmarks, or frame `frame` of a features Parquet."""
    if landmarks is not None:
        first = np.load(landmarks)
        if first.shape != (N_LANDMARKS, 3):
            raise MssyncError(f"{landmarks}: expected ({N_LANDMARKS}, 3) landmarks, got {first.shape}")
        return first.astype(np.float32)
    if reference is None:
        raise MssyncError("give the first frame as landmarks (.npy) or a reference features Parquet")
    table, _ = read_table(reference, columns=["landmarks", "face_found"])
    found = table["face_found"].to_numpy()
    if frame >= len(found) or not found[frame]:
        raise MssyncError(f"{reference}: frame {frame} has no face (or does not exist)")
    return list_column_to_numpy(table["landmarks"].slice(frame, 1))[0]

