"""Syncer training throughput: windows per second per pyramid level, on this machine.

Times real optimisation steps of the chosen preset on the real train split (after a few warm-up
steps), one thread per job as the Snakemake rule runs it. Prints one JSON object.

    python benchmarks/syncers.py [--preset cpu] [--steps 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mssync.core.config import load_params
from mssync.core.device import pick_device
from mssync.motion.space import MotionSpace
from mssync.syncers.model import Syncer, SyncerSettings, info_nce
from mssync.syncers.train import sample_batch
from mssync.syncers.windows import prepare_level

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 5


def windows_per_second(level: int, settings: SyncerSettings, space: MotionSpace, kernel: int, steps: int,
                       device: torch.device) -> dict:
    clips = prepare_level(REPO / "data/motion/train", space, level, kernel)
    model = Syncer(clips[0].motion.shape[1], clips[0].audio.shape[1], settings, level).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(0)
    groups = (settings.groups_per_batch, settings.group_size, -1)
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        motion, audio = sample_batch(clips, settings, rng)
        m, a = model(motion.to(device), audio.to(device))
        loss = info_nce(m.view(groups), a.view(groups), settings.margin.at(step), settings.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    windows = steps * settings.groups_per_batch * settings.group_size
    return {"windows_per_s": round(windows / seconds, 1), "steps_per_s": round(steps / seconds, 2),
            "train_windows_available": int(sum(len(c.starts) for c in clips)),
            "seconds_for_preset_steps": round(settings.steps * seconds / steps, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--preset", default=None, help="default: the one params.yaml selects")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    preset = args.preset or params["syncers"]["preset"]
    settings = SyncerSettings.from_dict(params["syncers"]["presets"][preset])
    space = MotionSpace.load(REPO / "models/motion_space.npz")
    device = pick_device(args.device)
    levels = {f"level{level}": windows_per_second(level, settings, space, params["pyramid"]["kernel"], args.steps, device)
              for level in params["pyramid"]["levels"]}
    print(json.dumps({"benchmark": "syncers", "preset": preset, "threads": args.threads, "device": str(device),
                      "batch_windows": settings.groups_per_batch * settings.group_size, "levels": levels,
                      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                  "torch": torch.__version__}}, indent=2))


if __name__ == "__main__":
    main()
