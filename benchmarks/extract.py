"""Features-stage throughput versus a bare FaceLandmarker loop, on the same frames, in one run.

The features stage decodes the cropped clip with ffmpeg, runs the landmarker in VIDEO mode,
computes log-mel audio and writes Parquet; the bare loop only calls detect_for_video on the
same frames, already decoded into memory. The ratio says how much the stage costs on top of
the landmarker itself. Prints one JSON object.

    python benchmarks/extract.py [--crop-record data/clips/hdtf-ted-lieu.json] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from mssync.core.config import FeatureSettings, LandmarkerSettings, load_params
from mssync.core.records import read_record
from mssync.features.features import extract_features
from mssync.media.ffmpeg import iter_frames
from mssync.media.landmarks import open_landmarker, to_mp_image

REPO = Path(__file__).resolve().parents[1]


def bare_landmarker_fps(frames: list, fps: int, settings: LandmarkerSettings) -> float:
    """detect_for_video alone, with the options the stage uses (blendshapes + matrices)."""
    with open_landmarker(settings, video=True, num_faces=1, blendshapes=True, matrices=True) as landmarker:
        start = time.perf_counter()
        for t, frame in enumerate(frames):
            landmarker.detect_for_video(to_mp_image(frame), int(round(t * 1000 / fps)))
        return len(frames) / (time.perf_counter() - start)


def stage_fps(record: Path, n_frames: int, features: FeatureSettings, landmarker: LandmarkerSettings) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        extract_features(crop_record=record, out=Path(tmp) / "bench.parquet", settings=features, landmarker=landmarker)
        return n_frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-record", default=str(REPO / "data/clips/hdtf-ted-lieu.json"),
                        help="a crop record from the pipeline (run `snakemake --cores all data_phase` first)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds after one warm-up; medians reported")
    args = parser.parse_args()

    params = load_params(args.params)
    features, landmarker = FeatureSettings(**params["features"]), LandmarkerSettings(**params["landmarker"])
    record_path = Path(args.crop_record)
    record = read_record(record_path)
    output = record["output"]
    frames = list(iter_frames(record_path.parent / output["video"], (output["size"], output["size"])))

    stage_fps(record_path, len(frames), features, landmarker)  # warm-up: imports, numba caches, model load
    stage, bare = [], []
    for _ in range(args.rounds):
        stage.append(stage_fps(record_path, len(frames), features, landmarker))
        bare.append(bare_landmarker_fps(frames, output["fps"], landmarker))
    print(json.dumps({
        "benchmark": "extract",
        "clip": record["clip_id"],
        "frames": len(frames),
        "frame_size": output["size"],
        "rounds": args.rounds,
        "features_stage_fps": round(statistics.median(stage), 1),
        "bare_landmarker_fps": round(statistics.median(bare), 1),
        "ratio": round(statistics.median(stage) / statistics.median(bare), 3),
        "all_stage_fps": [round(v, 1) for v in stage],
        "all_bare_fps": [round(v, 1) for v in bare],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }, indent=2))


if __name__ == "__main__":
    main()
