"""`mssync <command>`: one subcommand per pipeline stage. Argument parsing only; the work
lives in the stage modules so Snakemake rules, DVC stages and tests call the same code."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from mssync import __version__
from mssync.core.bounds import Bounded, schema_bound
from mssync.core.config import load_section
from mssync.core.constants import GENERATOR_PATH, MOTION_SPACE_PATH
from mssync.core.errors import MssyncError, require_artifact
from mssync.core.logs import configure_logging, timed
from mssync.core.reproducible import configure

log = logging.getLogger("mssync")

# Ranges of the numeric options that set no params.yaml value (those that do take the schema's:
# schema_bound). Checked when the command line is parsed, before any work starts.
THREADS = Bounded(int, 1, 256)  # torch and BLAS threads: a few per core at most help
FRAME_INDEX = Bounded(int, 0, 10_000_000)  # a frame of a features Parquet (over 100 h at 25 fps)
CACHE_HELP = "a split's motion cache prefix (data/motion/{split}, made by `mssync motion-cache`)"


def _add_settings(parser: argparse.ArgumentParser, *sections: str) -> None:
    for section in sections:
        parser.add_argument(
            f"--{section}-settings",
            dest=f"{section}_settings",
            metavar="JSON",
            help=f"the '{section}' section of params.yaml as JSON (Snakemake passes it)",
        )
    parser.add_argument("--params", default=None, help="params file used when no JSON settings are given")


def _settings(args: argparse.Namespace, section):
    """A section's settings: the one way every command gets them (core.config.load_section)."""
    name = section if isinstance(section, str) else section.SECTION
    return load_section(section, getattr(args, f"{name}_settings"), args.params)


def _paths(values: list[str]) -> list[Path]:
    return [Path(v) for v in values]


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_clips(args: argparse.Namespace) -> None:
    from mssync.data.clips import make_clips

    make_clips(manifest=Path(args.manifest), shard=args.shard, record=Path(args.record), raw_dir=Path(args.raw_dir),
               clips_dir=Path(args.clips_dir), shards=_settings(args, "shards"), download=_settings(args, "download"),
               crop=_settings(args, "crop"), landmarker=_settings(args, "landmarker"), strict=args.strict)


def cmd_features(args: argparse.Namespace) -> None:
    from mssync.features.features import make_features

    make_features(manifest=Path(args.manifest), shard=args.shard, record=Path(args.record),
                  raw_dir=Path(args.raw_dir), clips_dir=Path(args.clips_dir), features_dir=Path(args.features_dir),
                  previews_dir=Path(args.previews_dir), shards=_settings(args, "shards"),
                  features=_settings(args, "features"), preview=_settings(args, "preview"),
                  landmarker=_settings(args, "landmarker"), strict=args.strict)


def cmd_dataset(args: argparse.Namespace) -> None:
    from mssync.features.dataset import Fold, build_dataset

    fold = None if args.fold is None else Fold(args.fold, _settings(args, "crossval"))
    build_dataset(manifest=Path(args.manifest), raw_dir=Path(args.raw_dir), clips_dir=Path(args.clips_dir),
                  features_dir=Path(args.features_dir), out_dir=Path(args.out_dir), rejected_csv=Path(args.rejected),
                  settings=_settings(args, "dataset"), strict=args.strict, fold=fold)


def cmd_motion_space(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.motion.motion_space import fit_motion_space

    fit_motion_space(train=Path(args.train), val=Path(args.val), test=Path(args.test), out=Path(args.out),
                     metrics=Path(args.metrics), settings=_settings(args, "motion"),
                     crop_size=_settings(args, "crop").size)


def cmd_motion_cache(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.motion.motion_cache import write_motion_cache

    write_motion_cache(split=Path(args.split), space_path=Path(args.space), prefix=Path(args.out))


def cmd_train_syncer(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.syncers.train import SyncersSection, train_syncer

    train_syncer(train=Path(args.train), val=Path(args.val), space_path=Path(args.space), out=Path(args.out),
                 metrics_tsv=Path(args.metrics), level=args.level, syncer_set=args.set,
                 syncers=_settings(args, SyncersSection), kernel=_settings(args, "pyramid").kernel)


def cmd_eval_syncers(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.syncers.evaluate import evaluate_syncers

    evaluate_syncers(test=Path(args.test), space_path=Path(args.space), models=_paths(args.models), out=Path(args.out))


def cmd_train_gan(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.gan.train import GanSettings, train_gan

    train_gan(train=Path(args.train), val=Path(args.val), space_path=Path(args.space), syncer_paths=_paths(args.syncers),
              out=Path(args.out), train_tsv=Path(args.train_curve), val_tsv=Path(args.val_curve),
              settings=_settings(args, GanSettings))


def cmd_eval_gan(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.gan.evaluate import evaluate_generator

    evaluate_generator(test=Path(args.test), space_path=Path(args.space), generator_path=Path(args.model),
                       syncer_paths=_paths(args.syncers), out=Path(args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.evaluation.evaluate import EvaluationSettings, evaluate

    evaluate(test=Path(args.test), space_path=Path(args.space), model=Path(args.model), ablations=_paths(args.ablations),
             syncer_paths=_paths(args.syncers), settings=_settings(args, EvaluationSettings),
             crop_size=_settings(args, "crop").size, out=Path(args.out), details_out=Path(args.details),
             tables_dir=Path(args.tables_dir), plots_dir=Path(args.plots_dir))


def cmd_crossval(args: argparse.Namespace) -> None:
    configure(1)  # numpy only, seeded bootstrap: one thread keeps the sums in one order
    from mssync.evaluation.crossval import run_crossval

    run_crossval(details=_paths(args.details), splits=_paths(args.splits), syncer_metrics=_paths(args.syncer_metrics),
                 settings=_settings(args, "crossval"), out_dir=Path(args.out_dir))


def cmd_report(args: argparse.Namespace) -> None:
    from mssync.evaluation.report import build_report, gan_runs

    build_report(metrics_path=Path(args.metrics), details_path=Path(args.details), plots_dir=Path(args.plots_dir),
                 gan_runs=gan_runs(_paths(args.gan_curves)), syncer_curves=_paths(args.syncer_curves),
                 syncer_metrics_path=_optional_path(args.syncer_metrics),
                 videos=_optional_path(args.videos),
                 render_metrics=_optional_path(args.render_metrics), out=Path(args.out))


def cmd_generate(args: argparse.Namespace) -> None:
    from mssync.media.ffmpeg import require_audio_stream

    require_audio_stream(args.audio)  # the inputs first: before the slow imports and the model
    _require_models(args)
    configure(args.threads)
    from mssync.core.constants import SAMPLE_RATE
    from mssync.gan.generate import MotionGenerator, first_frame, generate_to_parquet
    from mssync.media.ffmpeg import decode_audio

    with timed(log, "loading the generator"):
        generator = MotionGenerator.load(args.model, args.space, device=args.device)
    first = first_frame(landmarks=_optional_path(args.landmarks),
                        reference=_optional_path(args.reference), frame=args.reference_frame)
    samples = decode_audio(Path(args.audio), SAMPLE_RATE)
    generate_to_parquet(generator, first, samples, SAMPLE_RATE, Path(args.out), args.clip_id or Path(args.audio).stem,
                        {"audio": str(args.audio), "reference": args.reference or args.landmarks})


def cmd_render_clips(args: argparse.Namespace) -> None:
    configure(args.threads)
    from mssync.render.render import render_test_clips

    render_test_clips(test=Path(args.test), clips_dir=Path(args.clips_dir), model=Path(args.model),
                      space=Path(args.space), out_dir=Path(args.out_dir), metrics=Path(args.metrics),
                      settings=_settings(args, "render"), device=args.device)


def cmd_animate(args: argparse.Namespace) -> None:
    # The speech worker is forked first: it imports librosa (~1-2 s in a new process) while this
    # process reads the settings and imports torch and MediaPipe, which also start threads.
    from mssync.render.animate_inputs import SpeechFeatures, check_pair, collect_pairs, with_overrides

    pairs, single = collect_pairs(image=_optional_path(args.image), audio=_optional_path(args.audio),
                                  out=_optional_path(args.out), image_dir=_optional_path(args.image_dir),
                                  audio_dir=_optional_path(args.audio_dir), pairs_csv=_optional_path(args.pairs),
                                  out_dir=Path(args.out_dir))
    if single:
        check_pair(pairs[0])  # a batch checks each pair in turn: a bad one is reported and skipped
    _require_models(args)
    with SpeechFeatures() as speech:
        settings = with_overrides(_settings(args, "render"), still=args.still, head_scale=args.head_scale,
                                  expression_scale=args.expression_scale, size=args.size,
                                  landmark_view=args.landmark_view, seed=args.seed, mouth_fill=args.mouth_fill)
        landmarker, crop = _settings(args, "landmarker"), _settings(args, "crop")
        speech.prefetch([pair.audio for pair in pairs], _settings(args, "features"), settings.min_audio_s,
                        crop.min_audio_rms_db)
        import gc

        from mssync.gan.generate import MotionGenerator
        from mssync.render.animate import animate_pairs

        gc.freeze()  # the imported modules stay for the process's life: keep the collector off them
        configure(args.threads)
        with timed(log, "loading the generator"):
            generator = MotionGenerator.load(args.model, args.space, device=args.device)
        animate_pairs(pairs, single, generator=generator, settings=settings, landmarker=landmarker, crop=crop,
                      speech=speech)


def _require_models(args: argparse.Namespace) -> None:
    """The generator and motion space exist, or one line saying what makes them (before torch loads)."""
    require_artifact(args.model, GENERATOR_PATH)
    require_artifact(args.space, MOTION_SPACE_PATH)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the data phase (workflow/rules/data.smk)."""
    p = sub.add_parser("clips", help="download then crop every clip of one shard (256x256 25 fps video + 16 kHz wav)")
    _add_shard_arguments(p)
    p.add_argument("--raw-dir", default="data/raw", help="downloads and their records ({clip}.json)")
    p.add_argument("--clips-dir", default="data/clips", help="crops: {clip}.mp4, {clip}.wav, {clip}.json")
    _add_settings(p, "shards", "download", "crop", "landmarker")
    p.set_defaults(func=cmd_clips)


def _add_shard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True)
    p.add_argument("--shard", required=True, help="which shard of the manifest's clips (e.g. 003of016)")
    p.add_argument("--record", required=True, help="the shard record: every clip's outcome and files (JSON)")
    p.add_argument("--strict", action="store_true", help="a clip that cannot be used is an error")


def _add_features_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the features phase (features.smk)."""
    p = sub.add_parser("features", help="landmarks, pose, blendshapes, log-mel Parquet and previews of one shard")
    _add_shard_arguments(p)
    p.add_argument("--raw-dir", default="data/raw")
    p.add_argument("--clips-dir", default="data/clips")
    p.add_argument("--features-dir", default="data/features", help="{clip}.parquet ({clip}.json if it failed)")
    p.add_argument("--previews-dir", default="data/previews", help="{clip}.png contact sheets, rejected clips too")
    _add_settings(p, "shards", "features", "preview", "landmarker")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("dataset", help="consolidate clips into train/val/test Parquet, split by speaker")
    p.add_argument("--manifest", required=True)
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--clips-dir", required=True)
    p.add_argument("--features-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--rejected", required=True, help="CSV of every rejected clip with its stage and reason")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--fold", type=Bounded(int, 0, 99), default=None,
                   help="write cross-validation fold N (0-based; crossval settings) instead of the main split")
    _add_settings(p, "dataset", "crossval")
    p.set_defaults(func=cmd_dataset)


def _add_syncer_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the motion space and syncers (syncers.smk)."""
    p = sub.add_parser("motion-space", help="fit pose + expression PCA on train; report reconstruction error")
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True, help="models/motion_space.npz")
    p.add_argument("--metrics", required=True, help="JSON with the test-split reconstruction error")
    p.add_argument("--threads", type=THREADS, default=1, help="BLAS threads")
    _add_settings(p, "motion", "crop")
    p.set_defaults(func=cmd_motion_space)

    p = sub.add_parser("motion-cache", help="encode a split into the motion space once: .npy arrays read a clip at a time")
    p.add_argument("--split", required=True, help="data/dataset/{split}.parquet")
    p.add_argument("--space", required=True, help="models/motion_space.npz")
    p.add_argument("--out", required=True, help="prefix data/motion/{split}: .motion.npy .valid.npy .mel.npy .clips.json")
    p.add_argument("--threads", type=THREADS, default=1, help="BLAS threads")
    p.set_defaults(func=cmd_motion_cache)

    p = sub.add_parser("train-syncer", help="train one syncer level (resumes from its checkpoint)")
    p.add_argument("--train", required=True, help=CACHE_HELP)
    p.add_argument("--val", required=True, help=CACHE_HELP)
    p.add_argument("--space", required=True, help="models/motion_space.npz")
    p.add_argument("--level", type=schema_bound("pyramid.levels[]"), required=True, help="the syncer level")
    p.add_argument("--set", required=True, help="the syncer set (a syncers.sets name: its seed)")
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads")
    p.add_argument("--out", required=True, help="best model on val (models/syncers/{set}/level{l}.pt)")
    p.add_argument("--metrics", required=True, help="per-epoch TSV")
    _add_settings(p, "syncers", "pyramid")
    p.set_defaults(func=cmd_train_syncer)

    p = sub.add_parser("eval-syncers", help="held-out retrieval, LSE-C/D and offsets per level")
    p.add_argument("--test", required=True, help=CACHE_HELP)
    p.add_argument("--space", required=True)
    p.add_argument("--models", nargs="+", required=True, help="one set's syncers; each is scored with its own recipe")
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_eval_syncers)


def _add_gan_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the gan phase (gan.smk) and motion-only generation."""
    p = sub.add_parser("train-gan", help="train the MS-Sync generator against the frozen loss syncers (resumes)")
    p.add_argument("--train", required=True, help=CACHE_HELP)
    p.add_argument("--val", required=True, help=CACHE_HELP)
    p.add_argument("--space", required=True)
    p.add_argument("--syncers", nargs="*", default=[], help="the loss syncers, one per level of gan.sync_levels")
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads")
    p.add_argument("--out", required=True, help="models/generator.pt")
    p.add_argument("--train-curve", required=True, help="per-iteration TSV of every loss term")
    p.add_argument("--val-curve", required=True, help="validation TSV")
    _add_settings(p, "gan")
    p.set_defaults(func=cmd_train_gan)

    p = sub.add_parser("eval-gan", help="generated vs static vs real vs mismatched audio, per syncer level")
    p.add_argument("--test", required=True, help=CACHE_HELP)
    p.add_argument("--space", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--syncers", nargs="+", required=True, help="the *evaluation* syncers, one per level")
    p.add_argument("--threads", type=THREADS, default=1,
                   help="torch threads (several torch jobs per core slow each other a lot)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_eval_gan)

    p = sub.add_parser("generate", help="first frame + speech -> motion (and landmarks) Parquet, any length")
    p.add_argument("--model", default=GENERATOR_PATH)
    p.add_argument("--space", default=MOTION_SPACE_PATH)
    p.add_argument("--audio", required=True, help="any audio ffmpeg reads (wav, mp3, m4a, a video's track)")
    first = p.add_mutually_exclusive_group(required=True)
    first.add_argument("--reference", help="a features Parquet (data/features/X.parquet) to take frame 0 from")
    first.add_argument("--landmarks", help="a .npy of (478, 3) MediaPipe landmarks of the first frame")
    p.add_argument("--reference-frame", type=FRAME_INDEX, default=0, help="the frame of --reference to start from")
    p.add_argument("--clip-id", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=THREADS, default=2, help="torch threads")
    p.add_argument("-o", "--out", required=True, help="output Parquet: motion and decoded landmarks per frame")
    p.set_defaults(func=cmd_generate)


def _add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the evaluate phase (evaluate.smk)."""
    p = sub.add_parser("evaluate", help="test-split sync, head dynamics and lips for MS-Sync, ablations, baselines")
    p.add_argument("--test", required=True, help=CACHE_HELP)
    p.add_argument("--space", required=True)
    p.add_argument("--model", required=True, help="models/generator.pt")
    p.add_argument("--ablations", nargs="*", default=[], help="models/ablations/{name}/generator.pt")
    p.add_argument("--syncers", nargs="+", required=True, help="the *evaluation* syncers, one per level")
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads")
    p.add_argument("--out", required=True, help="results/metrics.json")
    p.add_argument("--details", required=True, help="per-clip numbers, curves and histograms (JSON)")
    p.add_argument("--tables-dir", required=True, help="sync.tsv, dynamics.tsv, lips.tsv")
    p.add_argument("--plots-dir", required=True, help="PNG plots")
    _add_settings(p, "evaluation", "crop")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("crossval", help="pool the folds' held-out scores: speaker-bootstrap intervals, paired differences")
    p.add_argument("--details", nargs="+", required=True, help="folds/fold{k}/results/seed{s}/evaluation/details.json")
    p.add_argument("--splits", nargs="+", required=True, help="folds/fold{k}/data/dataset/splits.csv")
    p.add_argument("--syncer-metrics", nargs="+", required=True,
                   help="folds/fold{k}/results/syncers/eval_metrics.json (per-clip retrieval: measurability)")
    p.add_argument("--out-dir", required=True, help="summary.json, intervals.tsv, differences.tsv, forest.png, report.html")
    _add_settings(p, "crossval")
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("report", help="results/report.html: tables, plots, training curves, videos (offline)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--details", required=True)
    p.add_argument("--plots-dir", required=True, help="the evaluation's PNGs; training-curve PNGs are added here")
    p.add_argument("--gan-curves", nargs="+", required=True, help="train.tsv val.tsv of each run (main first)")
    p.add_argument("--syncer-curves", nargs="*", default=[])
    p.add_argument("--syncer-metrics", default=None, help="results/syncers/eval_metrics.json")
    p.add_argument("--videos", default=None, help="results/videos: {clip}.mp4 and {clip}.png")
    p.add_argument("--render-metrics", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)


def _add_render_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the render phase (render.smk) and `mssync animate`."""
    p = sub.add_parser("render-clips", help="render every test clip: real | real mesh | generated mesh | image view")
    p.add_argument("--test", required=True, help="data/dataset/test.parquet")
    p.add_argument("--clips-dir", required=True, help="data/clips (the cropped video and wav of each clip)")
    p.add_argument("--model", required=True)
    p.add_argument("--space", required=True)
    p.add_argument("--out-dir", required=True, help="results/videos: <clip>.mp4 and its contact sheet <clip>.png")
    p.add_argument("--metrics", required=True, help="warp fidelity JSON")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads")
    _add_settings(p, "render")
    p.set_defaults(func=cmd_render_clips)

    p = sub.add_parser("animate", help="portrait + speech -> talking-head mp4 (H.264 + AAC); batches too")
    p.add_argument("--image", help="portrait (jpg, png, ...): the largest face is animated")
    p.add_argument("--audio", help="speech: any audio ffmpeg reads, any length >= render.min_audio_s")
    p.add_argument("-o", "--out", help="output .mp4")
    p.add_argument("--image-dir", help="batch: portraits, paired with --audio-dir files of the same name")
    p.add_argument("--audio-dir", help="batch: speech files")
    p.add_argument("--pairs", help="batch: CSV with columns image, audio[, out]")
    p.add_argument("--out-dir", default="results/animate", help="batch output directory")
    p.add_argument("--model", default=GENERATOR_PATH)
    p.add_argument("--space", default=MOTION_SPACE_PATH)
    p.add_argument("--still", action="store_true", default=None, help="lips only: keep the portrait's head pose")
    p.add_argument("--head-scale", type=schema_bound("render.head_scale"),
                   help="scale head motion (1 = as generated, 0 = still; default render.head_scale)")
    p.add_argument("--expression-scale", type=schema_bound("render.expression_scale"),
                   help="scale lips/jaw/brow motion (1 = as generated; default render.expression_scale)")
    p.add_argument("--size", type=schema_bound("render.size"), help="face crop size in pixels (default render.size)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--landmark-view", dest="landmark_view", action="store_true", default=None,
                      help="draw the generated mesh beside the face")
    view.add_argument("--no-landmark-view", dest="landmark_view", action="store_false")
    p.add_argument("--no-mouth-fill", dest="mouth_fill", action="store_false", default=None,
                   help="stretch the portrait's lips instead of painting a mouth interior")
    p.add_argument("--seed", type=schema_bound("render.seed"),
                   help="seed for any randomness in generation (default render.seed)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=THREADS, default=2, help="torch threads")
    p.add_argument("--params", default="params.yaml", help="render, landmarker, crop and features settings")
    p.set_defaults(func=cmd_animate, render_settings=None, landmarker_settings=None, crop_settings=None,
                   features_settings=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mssync", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mssync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_features_commands(sub)
    _add_syncer_commands(sub)
    _add_gan_commands(sub)
    _add_render_commands(sub)
    _add_evaluation_commands(sub)
    for subparser in sub.choices.values():
        _document_ranges(subparser)
    return parser


def _document_ranges(parser: argparse.ArgumentParser) -> None:
    """Add each range-checked option's range to its help text, so --help states what is accepted."""
    for action in parser._actions:
        if isinstance(action.type, Bounded):
            action.help = f"{action.help}; {action.type}" if action.help else str(action.type)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except MssyncError as exc:
        print(f"mssync {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
