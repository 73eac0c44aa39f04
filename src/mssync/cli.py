"""`mssync <command>`: one subcommand per pipeline stage. Argument parsing only; the work
lives in the stage modules so Snakemake rules, DVC stages and tests call the same code."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from . import __version__
from .config import load_section
from .errors import MssyncError

log = logging.getLogger("mssync")


def _add_settings(parser: argparse.ArgumentParser, *sections: str) -> None:
    for section in sections:
        parser.add_argument(
            f"--{section}-settings",
            dest=f"{section}_settings",
            metavar="JSON",
            help=f"the '{section}' section of params.yaml as JSON (Snakemake passes it)",
        )
    parser.add_argument("--params", default=None, help="params file used when no JSON settings are given")


def _settings(args: argparse.Namespace, section: str):
    return load_section(section, getattr(args, f"{section}_settings"), args.params)


def cmd_download(args: argparse.Namespace) -> None:
    from .download import download_clip
    from .manifest import manifest_by_id

    entry = manifest_by_id(args.manifest).get(args.clip)
    if entry is None:
        raise MssyncError(f"{args.manifest}: no clip with id {args.clip!r}")
    download_clip(entry, _settings(args, "download"), Path(args.out), Path(args.record), strict=args.strict)


def cmd_crop(args: argparse.Namespace) -> None:
    from .crop import crop_clip

    crop_clip(
        raw_record=Path(args.raw_record),
        out_dir=Path(args.out_dir),
        settings=_settings(args, "crop"),
        landmarker=_settings(args, "landmarker"),
        strict=args.strict,
    )


def cmd_features(args: argparse.Namespace) -> None:
    from .features import extract_features

    extract_features(
        crop_record=Path(args.crop_record),
        out=Path(args.out),
        settings=_settings(args, "features"),
        landmarker=_settings(args, "landmarker"),
    )


def cmd_dataset(args: argparse.Namespace) -> None:
    from .dataset import build_dataset

    build_dataset(
        manifest=Path(args.manifest),
        raw_dir=Path(args.raw_dir),
        clips_dir=Path(args.clips_dir),
        features_dir=Path(args.features_dir),
        out_dir=Path(args.out_dir),
        rejected_csv=Path(args.rejected),
        settings=_settings(args, "dataset"),
        strict=args.strict,
    )


def cmd_preview(args: argparse.Namespace) -> None:
    from .preview import make_preview

    make_preview(
        raw_record=Path(args.raw_record),
        crop_record=Path(args.crop_record),
        features=Path(args.features) if args.features else None,
        out=Path(args.out),
        settings=_settings(args, "preview"),
        landmarker=_settings(args, "landmarker"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mssync", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mssync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch one manifest clip (mirror, http(s), file, zip member, youtube)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--clip", required=True)
    p.add_argument("--out", required=True, help="where the clip goes (data/raw/{clip}.mp4)")
    p.add_argument("--record", required=True, help="record JSON, written even when the clip is rejected")
    p.add_argument("--strict", action="store_true", help="a clip that cannot be obtained is an error")
    _add_settings(p, "download")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("crop", help="find one stable face box; write 256x256 25 fps video + 16 kHz mono wav")
    p.add_argument("--raw-record", required=True, help="download record (data/raw/{clip}.json)")
    p.add_argument("--out-dir", required=True, help="data/clips: {clip}.mp4, {clip}.wav, {clip}.json")
    p.add_argument("--strict", action="store_true")
    _add_settings(p, "crop", "landmarker")
    p.set_defaults(func=cmd_crop)

    p = sub.add_parser("features", help="per-frame landmarks, pose, blendshapes and log-mel audio to Parquet")
    p.add_argument("--crop-record", required=True, help="crop record (data/clips/{clip}.json)")
    p.add_argument("--out", required=True, help="data/features/{clip}.parquet")
    _add_settings(p, "features", "landmarker")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("dataset", help="consolidate clips into train/val/test Parquet, split by speaker")
    p.add_argument("--manifest", required=True)
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--clips-dir", required=True)
    p.add_argument("--features-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--rejected", required=True, help="CSV of every rejected clip with its stage and reason")
    p.add_argument("--strict", action="store_true")
    _add_settings(p, "dataset")
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("preview", help="PNG contact sheet of crop frames with landmarks (or why rejected)")
    p.add_argument("--raw-record", required=True)
    p.add_argument("--crop-record", required=True)
    p.add_argument("--features", default=None)
    p.add_argument("--out", required=True)
    _add_settings(p, "preview", "landmarker")
    p.set_defaults(func=cmd_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except MssyncError as exc:
        print(f"mssync {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
