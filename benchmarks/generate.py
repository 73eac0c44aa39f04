"""Generation speed: motion frames per second and real-time factor for 10 s of speech, on CPU.

Times the default preset's generator (params.yaml `gan.preset`) rolling out 250 frames (10 s at
25 fps) from one first frame under inference mode, after one warm-up run; the median of 3 runs
is reported. Feature extraction (log-mel of the 10 s waveform) is timed separately and added
for the end-to-end figure. With models/generator.pt (the pipeline ran) the trained weights are
used, else a randomly initialised generator of the same preset (motion_dim 47, n_mels 26):
speed does not depend on the weights. Prints one JSON object.

    python benchmarks/generate.py [--threads 2] [--seconds 10] [--runs 3] [--preset paper]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mssync.core.config import FeatureSettings, load_params
from mssync.gan.model import AUDIO_PER_FRAME, Generator, GeneratorSettings
from mssync.media.audio import log_mel

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_RATE = 16000
FPS = 25
GOAL_X_REALTIME = 20.0  # the target: at least 20x faster than real time


def load_generator(model: Path, space: Path, params: dict, preset: str | None) -> tuple[Generator, FeatureSettings, str, str]:
    """(generator in eval mode on CPU, its feature settings, 'trained' | 'random-init', where from)."""
    if preset is None and model.is_file() and space.is_file():
        from mssync.gan.generate import MotionGenerator

        loaded = MotionGenerator.load(model, space, device="cpu")
        return loaded.model, loaded.features, "trained", str(model.relative_to(REPO) if model.is_relative_to(REPO) else model)
    gan = params["gan"]
    preset = preset or gan["preset"]
    settings = GeneratorSettings(**gan["presets"][preset]["model"])
    torch.manual_seed(0)
    model = Generator(47, 26, [0, 0, 0, 1, 1, 1, 2] + [3] * 40, settings).eval()
    return model, FeatureSettings(**{**params["features"], "n_mels": 26}), "random-init", f"gan.presets.{preset}"


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """`seconds` of a real sample clip's audio (looped) when the shared clips are there, else synthetic."""
    clip = SHARED / "data/clips/vox2-00015.mp4"
    if clip.is_file():
        from mssync.media.ffmpeg import decode_audio

        samples = decode_audio(clip, SAMPLE_RATE)
        n = int(seconds * SAMPLE_RATE)
        return np.resize(samples, n).astype(np.float32), f"{clip.name} (looped)"
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = 0.1 * rng.standard_normal(len(t)) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.05 * np.sin(2 * np.pi * 180 * t)
    return samples.astype(np.float32), "synthetic"


def timed(fn, runs: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--model", default=str(REPO / "models/generator.pt"))
    parser.add_argument("--space", default=str(REPO / "models/motion_space.npz"))
    parser.add_argument("--preset", default=None, help="time a randomly initialised generator of this gan preset "
                        "(e.g. paper) instead of the trained/default one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to generate for")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    model, features, weights, source = load_generator(Path(args.model), Path(args.space), params, args.preset)
    samples, audio_source = speech(args.seconds)

    feature_s, feature_runs = timed(lambda: log_mel(samples, SAMPLE_RATE, features), args.runs)
    mel = log_mel(samples, SAMPLE_RATE, features)
    frames = len(mel) // AUDIO_PER_FRAME
    rows = AUDIO_PER_FRAME * (frames + model.s.lookahead)
    mel = np.concatenate([mel, np.repeat(mel[-1:], max(rows - len(mel), 0), axis=0)])[:rows]
    mel = (mel - mel.mean(0)) / np.maximum(mel.std(0), 1e-6)
    audio = torch.as_tensor(mel, dtype=torch.float32)[None]
    prefix = torch.zeros(1, 1, model.motion_dim)

    def generate() -> torch.Tensor:
        with torch.inference_mode():
            return model(prefix, audio, frames)

    generate_s, generate_runs = timed(generate, args.runs)
    audio_s = len(samples) / SAMPLE_RATE
    end_to_end = audio_s / (generate_s + feature_s)
    print(json.dumps({
        "benchmark": "generate",
        "weights": weights, "model": source,
        "generator_parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "motion_dim": model.motion_dim, "settings": dataclasses.asdict(model.s),
        "device": "cpu", "threads": args.threads,
        "audio": {"seconds": audio_s, "source": audio_source},
        "frames": frames,  # video frames of the audio: frame 0 is given, the other frames - 1 are predicted
        "runs": args.runs,
        "generate_s_median": round(generate_s, 4), "generate_s_runs": [round(s, 4) for s in generate_runs],
        "frames_per_s": round(frames / generate_s, 1),
        "x_realtime_generate": round(audio_s / generate_s, 1),
        "features_s_median": round(feature_s, 4), "features_s_runs": [round(s, 4) for s in feature_runs],
        "x_realtime_end_to_end": round(end_to_end, 1),
        "goal_x_realtime": GOAL_X_REALTIME, "meets_goal": bool(end_to_end >= GOAL_X_REALTIME),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                    "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    }, indent=2))


if __name__ == "__main__":
    main()
