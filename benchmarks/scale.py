"""How the corpus-wide stages grow with the corpus: prints JSON.

For each N (default 25, 250, 2,500, 25,000) it synthesises a project of N clips from real features
(the clips of --features, copied under new ids and speakers, with real download, crop and shard
records; no media work) and measures, each stage in its own process (peak RSS from wait4):
  - `snakemake -n` planning time for the whole DAG (the start-up sweep of every record included);
  - `mssync dataset`: time and peak RSS;
  - `mssync motion-space`: time and peak RSS;
  - `mssync motion-cache` of the train split: time and peak RSS;
  - the GAN trainer's and the level-3 syncer trainer's loaders on that cache (speaker-balanced
    draws): set-up time, windows/s and peak RSS.
Then the growth exponent of each between the two largest N: log(t2/t1) / log(N2/N1).

With --real-shard it also measures the per-clip overhead of the per-clip phase on real clips:
the wall time per clip of `mssync clips` + `mssync features` over one shard of 3 s GRID clips,
minus the bare decode + FaceLandmarker time on the same cropped frames.

    python benchmarks/scale.py --features data/features --sizes 25 250 2500 --real-shard 24
    python benchmarks/scale.py --sizes --real-shard 24    # the per-clip overhead alone
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEAKER_CLIPS = 10  # synthetic clips per synthetic speaker
LOADER_WINDOWS = 20_000


# Peak RSS through a small launcher: a process forked from this one inherits its (large) high-water
# mark in ru_maxrss on Linux; the launcher's own child starts from a fresh, small interpreter.
LAUNCH = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
          "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def run_measured(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd`; its wall seconds and peak RSS (MB, the kernel's accounting of that process)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCH, *cmd], cwd=cwd, capture_output=True)
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output.decode(errors='replace')[-3000:]}")
    peak_kb = int(proc.stdout.decode().rsplit("MAXRSS_KB", 1)[1].split()[0])
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1), "output": output}


def synthesise(root: Path, n: int, sources: list[Path], params: dict) -> None:
    """A project of n clips: features copied from `sources` under new ids, records as the stages write them."""
    from mssync.data.shards import group_shards
    from mssync.features.schema import decode_metadata, encode_metadata

    for folder in ("data/raw", "data/clips/shards", "data/features/shards", "data/previews", "config"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "workflow", "profiles"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / item)
    tables = [pq.read_table(path) for path in sources]
    ids = [f"syn-{i:06d}" for i in range(n)]
    rows = []
    for i, clip_id in enumerate(ids):
        table = tables[i % len(tables)]
        speaker = f"spk-{i // SPEAKER_CLIPS:05d}"
        meta = {**decode_metadata(table.schema.metadata), "clip_id": clip_id, "speaker": speaker}
        out = table.set_column(table.schema.get_field_index("clip_id"), "clip_id",
                               pa.array([clip_id] * table.num_rows, pa.string()))
        pq.write_table(out.replace_schema_metadata(encode_metadata(meta)), root / f"data/features/{clip_id}.parquet")
        frames = table.num_rows
        (root / f"data/raw/{clip_id}.mp4").write_bytes(b"\0")
        _json(root / f"data/raw/{clip_id}.json", {"clip_id": clip_id, "stage": "download", "status": "ok",
                                                  "file": f"{clip_id}.mp4", "bytes": 1, "speaker": speaker})
        _json(root / f"data/clips/{clip_id}.json", {"clip_id": clip_id, "stage": "crop", "status": "ok",
                                                    "speaker": speaker, "output": {"frames": frames, "fps": 25}})
        (root / f"data/previews/{clip_id}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"IEND\xaeB`\x82")
        rows.append({"id": clip_id, "url": f"file:{clip_id}.mp4", "speaker": speaker})
    with (root / "config/samples.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "url", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    for shard, members in group_shards(ids, params["shards"]["size"]).items():
        clips = [f"data/raw/{c}.json" for c in members] + [f"data/clips/{c}.json" for c in members]
        _json(root / f"data/clips/shards/{shard}.json", {"stage": "shard", "files": clips})
        features = [f"data/features/{c}.parquet" for c in members] + [f"data/previews/{c}.png" for c in members]
        _json(root / f"data/features/shards/{shard}.json", {"stage": "shard", "files": features})
    params = {**params, "manifest": "config/samples.csv"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content))


LOADER = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)  # as the trainer rules run (threads: 1): on tiny tensors more threads cost
from pathlib import Path
import yaml
from mssync.core.constants import STD_FLOOR
from mssync.motion.balance import ClipDraws, clip_probabilities
from mssync.motion.motion_cache import MotionCache
from mssync.motion.space import MotionSpace
params = yaml.safe_load(Path("params.yaml").read_text())
space = MotionSpace.load("models/motion_space.npz")
cache, wanted = Path("data/motion/train"), int(sys.argv[2])
t0 = time.perf_counter()
if sys.argv[1] == "gan":
    from mssync.gan.train import GanSettings, load_clips, sample_batch
    s = GanSettings.from_params(params["gan"])
    mean, std = MotionCache.open(cache).valid_motion_stats()
    clips = load_clips(cache, space, mean, np.maximum(std, STD_FLOOR), s.observed_frames + s.generated_frames)
    share, per_batch = s.max_speaker_share, s.batch
    draw = lambda p: sample_batch(clips, s, rng, p)
else:
    from mssync.syncers.train import SyncersSection, sample_batch
    from mssync.syncers.windows import prepare_level
    section = SyncersSection.from_params(params["syncers"])
    s = section.settings
    clips = prepare_level(cache, space, int(sys.argv[1][len("syncer"):]), params["pyramid"]["kernel"], phases=True)
    share, per_batch = section.max_speaker_share, s.groups_per_batch * s.group_size
    draw = lambda p: sample_batch(clips, s, rng, p)
p = ClipDraws(clip_probabilities([c.speaker for c in clips], np.array([len(c.starts) for c in clips]), share))
load_s = time.perf_counter() - t0
rng = np.random.default_rng(0); n = 0; t0 = time.perf_counter()
while n < wanted:
    draw(p); n += per_batch
print(f"LOADER {load_s:.3f} {n / (time.perf_counter() - t0):.1f}")
"""
LOADERS = {"gan_loader": "gan", "syncer_loader_level3": "syncer3"}


def measure_corpus(n: int, sources: list[Path], params: dict, work: Path) -> dict:
    root = work / f"n{n}"
    started = time.perf_counter()
    synthesise(root, n, sources, params)
    result: dict = {"clips": n, "synthesis_seconds": round(time.perf_counter() - started, 1)}
    frames = sum(pq.ParquetFile(p).metadata.num_rows for p in sorted((root / "data/features").glob("*.parquet")))
    result["frames"] = frames
    plan = run_measured(["snakemake", "-n", "--cores", "1", "--quiet", "rules"], root)
    result["dry_run"] = {k: plan[k] for k in ("seconds", "peak_rss_mb")}
    progress(n, "dry_run", result["dry_run"])
    dataset = run_measured(["mssync", "dataset", "--manifest", "config/samples.csv", "--raw-dir", "data/raw",
                            "--clips-dir", "data/clips", "--features-dir", "data/features", "--out-dir",
                            "data/dataset", "--rejected", "data/rejected.csv", "--params", "params.yaml"], root)
    result["dataset"] = {k: dataset[k] for k in ("seconds", "peak_rss_mb")}
    progress(n, "dataset", result["dataset"])
    splits = ["--train", "data/dataset/train.parquet", "--val", "data/dataset/val.parquet",
              "--test", "data/dataset/test.parquet"]
    fit = run_measured(["mssync", "motion-space", *splits, "--out", "models/motion_space.npz",
                        "--metrics", "results/motion_space.json", "--params", "params.yaml"], root)
    result["motion_space"] = {k: fit[k] for k in ("seconds", "peak_rss_mb")}
    progress(n, "motion_space", result["motion_space"])
    cache = run_measured(["mssync", "motion-cache", "--split", "data/dataset/train.parquet",
                          "--space", "models/motion_space.npz", "--out", "data/motion/train"], root)
    result["motion_cache_train"] = {k: cache[k] for k in ("seconds", "peak_rss_mb")}
    progress(n, "motion_cache_train", result["motion_cache_train"])
    for name, which in LOADERS.items():
        loader = run_measured([sys.executable, "-c", LOADER, which, str(LOADER_WINDOWS)], root)
        load_s, rate = loader["output"].decode().split("LOADER ", 1)[1].split()[:2]
        result[name] = {"load_seconds": float(load_s), "windows_per_second": float(rate),
                        "seconds": loader["seconds"], "peak_rss_mb": loader["peak_rss_mb"]}
        progress(n, name, result[name])
    shutil.rmtree(root)
    return result


def progress(n: int, stage: str, values: dict) -> None:
    """Each stage's numbers on stderr as soon as it ends: a long run stopped early keeps them."""
    print(json.dumps({"clips": n, "stage": stage, **values}), file=sys.stderr, flush=True)


def exponents(results: list[dict]) -> dict:
    """Growth exponent of each stage's time and RSS between the two largest corpora."""
    if len(results) < 2:
        return {}
    a, b = results[-2], results[-1]
    ratio = math.log(b["clips"] / a["clips"])
    out = {"between": [a["clips"], b["clips"]]}
    for stage in ("dry_run", "dataset", "motion_space", "motion_cache_train", *LOADERS):
        out[stage] = {"seconds": round(math.log(b[stage]["seconds"] / a[stage]["seconds"]) / ratio, 3),
                      "peak_rss_mb": round(math.log(b[stage]["peak_rss_mb"] / a[stage]["peak_rss_mb"]) / ratio, 3)}
    return out


def per_clip_overhead(n_clips: int, params: dict, work: Path) -> dict:
    """Per-clip wall time of one shard of 3 s GRID clips through `clips` and `features`, minus the
    bare decode + FaceLandmarker (VIDEO mode) time on the same cropped frames, in this process."""
    import numpy as np

    from mssync.core.config import LandmarkerSettings, settings_from_mapping
    from mssync.media.ffmpeg import iter_frames
    from mssync.media.landmarks import open_landmarker, to_mp_image

    shared = REPO.parent / "shared/data"
    rows = [r for r in csv.DictReader((REPO / "config/samples.csv").open()) if r["id"].startswith("grid-s1-")][:n_clips]
    root = work / "real"
    (root / "config").mkdir(parents=True)
    with (root / "config/samples.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    params = {**params, "manifest": "config/samples.csv", "shards": {"size": n_clips}}
    params["download"] = {**params["download"], "mirror_dir": str(shared / "clips")}
    params["landmarker"] = {**params["landmarker"], "model": str(REPO.parent / "shared/models/face_landmarker.task")}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--manifest", "config/samples.csv", "--shard", "000of001", "--params", "params.yaml"]
    clips = run_measured(["mssync", "clips", *common, "--record", "clips.json"], root)
    features = run_measured(["mssync", "features", *common, "--record", "features.json"], root)
    landmarker = settings_from_mapping(LandmarkerSettings, params["landmarker"])
    frames_total, started = 0, time.perf_counter()
    for row in rows:
        video = root / f"data/clips/{row['id']}.mp4"
        if not video.is_file():
            continue
        with open_landmarker(landmarker, video=True, num_faces=1, blendshapes=True, matrices=True) as lm:
            for t, frame in enumerate(iter_frames(video, (params["crop"]["size"],) * 2, threads=1)):
                lm.detect_for_video(to_mp_image(np.ascontiguousarray(frame)), int(t * 40))
                frames_total += 1
    bare = time.perf_counter() - started
    n = len(rows)
    total = clips["seconds"] + features["seconds"]
    return {"clips": n, "frames": frames_total, "clips_job_seconds": clips["seconds"],
            "features_job_seconds": features["seconds"], "wall_per_clip_s": round(total / n, 3),
            "bare_decode_landmarks_per_clip_s": round(bare / n, 3),
            "overhead_per_clip_s": round((total - bare) / n, 3),
            "breakdown_per_clip_s": stage_breakdown(root, {"clips": clips, "features": features}, n)}


def stage_breakdown(root: Path, jobs: dict[str, dict], n: int) -> dict:
    """Where a clip's wall time goes, from the shard records' per-clip stage times: each stage's mean
    over the shard, and each job's time outside its clips (interpreter start, imports, model loads)."""
    out: dict[str, float] = {}
    for step, job in jobs.items():
        record = json.loads((root / f"{step}.json").read_text())
        for clip in record["clips"]:
            for stage, seconds in clip["seconds"].items():
                out[stage] = out.get(stage, 0.0) + seconds / n
        out[f"{step}_job_outside_clips"] = (job["seconds"] - sum(sum(c["seconds"].values()) for c in record["clips"])) / n
    return {stage: round(seconds, 3) for stage, seconds in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="data/features", help="real features Parquets to copy from")
    parser.add_argument("--sizes", type=int, nargs="*", default=[25, 250, 2500, 25000],
                        help="corpus sizes to synthesise; none (`--sizes` alone) with --real-shard measures only that")
    parser.add_argument("--real-shard", type=int, default=0, help="measure the per-clip overhead on this many GRID clips")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sources = sorted(Path(args.features).glob("*.parquet"))
    if args.sizes and not sources:
        raise SystemExit(f"no features in {args.features}: run the pipeline first")
    if not args.sizes and not args.real_shard:
        raise SystemExit("nothing to measure: give --sizes, --real-shard or both")
    work = Path(args.work or tempfile.mkdtemp(prefix="mssync-scale-"))
    results = []
    for n in args.sizes:
        results.append(measure_corpus(n, sources, params, work))
        print(json.dumps(results[-1]), file=sys.stderr)
    report = {"source_clips": len(sources), "threads": os.cpu_count(), "sizes": results, "exponents": exponents(results)}
    if args.real_shard:
        report["per_clip_overhead"] = per_clip_overhead(args.real_shard, params, work)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
