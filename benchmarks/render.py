"""Rendering speed: image-view frames per second on one core, and `mssync animate` end to end.

1. Warp: a sample clip's first frame warped by the clip's own real landmarks, frame after frame
   (250 frames, after a warm-up), on one core (cv2 and torch limited to one thread), mouth fill on.
   The median of 3 runs. Goal: at least 100 frames/s at 256x256.
2. `mssync animate` as a user runs it (a new process: imports, portrait detection and crop,
   generation, warp, H.264 + AAC encode) for 10 s of speech, median of 3 runs, both views and
   image view only. Goal: under 5 s on the 2-core machine. Needs the trained models
   (models/generator.pt, models/motion_space.npz: run `snakemake --cores all` first).

    python benchmarks/render.py [--runs 3] [--seconds 10]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP = "vox2-00086"  # the test clip the warp is timed on
PORTRAIT_CLIP = "hdtf-ted-lieu"  # a frame of it is the animate portrait; its audio is the speech
GOAL_FPS = 100.0
GOAL_ANIMATE_S = 5.0


def warp_fps(runs: int, frames: int) -> dict:
    import cv2
    import torch

    from mssync.core.config import load_section
    from mssync.features.schema import list_column_to_numpy, read_table
    from mssync.media.ffmpeg import iter_frames
    from mssync.render.warp import PortraitWarper

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    settings = load_section("render", None, REPO / "params.yaml")
    features = REPO / "data" / "features" / f"{CLIP}.parquet"
    video = REPO / "data" / "clips" / f"{CLIP}.mp4"
    table, _ = read_table(features, columns=["landmarks"])
    landmarks = list_column_to_numpy(table["landmarks"])
    portrait = next(iter(iter_frames(video, (settings.size, settings.size))))
    warper = PortraitWarper(portrait, landmarks[0], settings)
    for k in range(20):
        warper.warp(landmarks[k % len(landmarks)])
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for k in range(frames):
            warper.warp(landmarks[k % len(landmarks)])
        rates.append(frames / (time.perf_counter() - start))
    return {"frames_per_s": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates],
            "size": settings.size, "frames": frames, "clip": CLIP, "goal_frames_per_s": GOAL_FPS,
            "meets_goal": statistics.median(rates) >= GOAL_FPS, "mean_triangles": int(len(warper.triangles))}


def make_inputs(workdir: Path, seconds: float) -> tuple[Path, Path]:
    source = SHARED / "data" / "clips" / f"{PORTRAIT_CLIP}.mp4"
    portrait, speech = workdir / "portrait.png", workdir / "speech.wav"
    quiet = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error"]
    subprocess.run([*quiet, "-ss", "2", "-i", str(source), "-frames:v", "1", str(portrait)], check=True)
    subprocess.run([*quiet, "-ss", "5", "-i", str(source), "-t", str(seconds), "-vn", "-ac", "1", str(speech)],
                   check=True)
    return portrait, speech


def animate_seconds(runs: int, seconds: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        portrait, speech = make_inputs(workdir, seconds)
        times = []
        for i in range(runs):
            out = workdir / f"out{i}.mp4"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "mssync", "animate", "--image", str(portrait), "--audio",
                                   str(speech), "-o", str(out), *extra], cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"mssync animate failed: {proc.stderr[-2000:]}")
    median = statistics.median(times)
    return {"wall_s": round(median, 2), "runs": [round(t, 2) for t in times], "speech_s": seconds,
            "x_realtime": round(seconds / median, 2), "goal_s": GOAL_ANIMATE_S, "meets_goal": median < GOAL_ANIMATE_S,
            "options": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=250)
    args = parser.parse_args()
    for needed in ("models/generator.pt", "models/motion_space.npz", f"data/features/{CLIP}.parquet"):
        if not (REPO / needed).is_file():
            raise SystemExit(f"{needed} is missing: run `snakemake --cores all` first")
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "warp_one_core": warp_fps(args.runs, args.frames),
        "animate_both_views": animate_seconds(args.runs, args.seconds, []),
        "animate_image_view_only": animate_seconds(args.runs, args.seconds, ["--no-landmark-view"]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
