"""`mssync animate`: a portrait and a speech file become a talking-head video.

portrait -> the largest face, cropped the way the pipeline crops its training clips -> its
landmarks -> motion generated for the whole speech (any length) -> image view (and optionally the
landmark view beside it) -> H.264 + AAC mp4. Every input is checked before the slow part starts,
and the output file appears only once it is complete.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import CropSettings, LandmarkerSettings, RenderSettings
from .crop import face_box
from .errors import MediaError, MssyncError
from .generate import MotionGenerator
from .landmarks import detect_faces, open_landmarker
from .media import decode_audio, rms_dbfs
from .render import drive, draw_mesh, write_video
from .warp import PortraitWarper

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what the generator's audio features are computed at (the pipeline's crop.sample_rate)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".mp4", ".mkv", ".webm", ".mov"}


@dataclasses.dataclass(frozen=True)
class Portrait:
    image: np.ndarray  # (size, size, 3) uint8 RGB face crop
    landmarks: np.ndarray  # (478, 3) normalised to the crop
    faces_found: int


@dataclasses.dataclass(frozen=True)
class Pair:
    image: Path
    audio: Path
    out: Path


# --------------------------------------------------------------------------- inputs


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise MssyncError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise MssyncError(f"{path}: not a readable image ({exc})") from None


def crop_face(image: np.ndarray, faces: list, size: int, crop: CropSettings) -> np.ndarray:
    """The square head box the crop stage would choose for this face, resized to size x size."""
    height, width = image.shape[:2]
    box = face_box([faces[:1]], (width, height), crop)
    square = image[box.y:box.y + box.side, box.x:box.x + box.side]
    interpolation = cv2.INTER_AREA if box.side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def load_portrait(path: Path, size: int, landmarker: LandmarkerSettings, crop: CropSettings) -> Portrait:
    image = read_image(path)
    with open_landmarker(landmarker, video=False, num_faces=crop.max_faces) as detector:
        faces = detect_faces(detector, image)
        if not faces:
            raise MssyncError(f"{path}: no face found (a frontal, well-lit face works best)")
        if len(faces) > 1:
            log.warning("%s: %d faces found; animating the largest", path, len(faces))
        cropped = crop_face(image, faces, size, crop)
        crop_faces = detect_faces(detector, cropped)  # largest first: the animated face
    if not crop_faces:
        raise MssyncError(f"{path}: the face was found in the image but not in its {size}x{size} crop")
    return Portrait(cropped, crop_faces[0].landmarks, len(faces))


def load_speech(path: Path, min_seconds: float, min_rms_db: float) -> np.ndarray:
    if not path.is_file():
        raise MssyncError(f"{path}: no such audio file")
    try:
        samples = decode_audio(path, SAMPLE_RATE)
    except MediaError as exc:
        raise MssyncError(f"{path}: unreadable audio ({exc})") from None
    seconds = len(samples) / SAMPLE_RATE
    if seconds < min_seconds:
        raise MssyncError(f"{path}: {seconds:.2f} s of audio; at least {min_seconds:g} s is needed")
    level = rms_dbfs(samples)
    if level < min_rms_db:
        raise MssyncError(f"{path}: audio is silent ({level:.1f} dBFS RMS, below {min_rms_db:g})")
    return samples


def check_writable(out: Path) -> None:
    """Fail before any work if the output cannot be created (missing or read-only directory)."""
    if out.suffix.lower() != ".mp4":
        raise MssyncError(f"{out}: the output must be an .mp4 file")
    if out.is_dir():
        raise MssyncError(f"{out}: is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise MssyncError(f"{out}: cannot write there ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- animate


def animated_frames(portrait: Portrait, landmarks: np.ndarray, settings: RenderSettings) -> Iterator[np.ndarray]:
    """Image view, with the landmark view beside it when asked for."""
    warper = PortraitWarper(portrait.image, portrait.landmarks, settings)
    for target in landmarks:
        frame = warper.warp(target)
        yield np.concatenate([frame, draw_mesh(target, settings.size)], axis=1) if settings.landmark_view else frame


def animate(image: Path, audio: Path, out: Path, generator: MotionGenerator, settings: RenderSettings,
            landmarker: LandmarkerSettings, crop: CropSettings) -> dict:
    check_writable(out)
    samples = load_speech(audio, settings.min_audio_s, crop.min_audio_rms_db)
    with ThreadPoolExecutor(max_workers=1) as pool:  # audio features while MediaPipe finds the face
        mel = pool.submit(generator.mel_from_waveform, samples, SAMPLE_RATE)
        portrait = load_portrait(image, settings.size, landmarker, crop)
        landmarks = drive(generator, portrait.landmarks, mel.result(), settings)
    width = settings.size * (2 if settings.landmark_view else 1)
    frames = write_video(out, audio, animated_frames(portrait, landmarks, settings), len(landmarks),
                         (width, settings.size), settings, out.name)
    log.info("%s: %d frames (%.1f s) from %s + %s", out, frames, frames / 25, image, audio)
    return {"out": str(out), "frames": frames, "faces_found": portrait.faces_found}


# --------------------------------------------------------------------------- batches


def _files(directory: Path, suffixes: set[str]) -> dict[str, Path]:
    if not directory.is_dir():
        raise MssyncError(f"{directory}: not a directory")
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() in suffixes}


def pairs_from_dirs(image_dir: Path, audio_dir: Path, out_dir: Path) -> list[Pair]:
    """Portrait and speech with the same file stem make a pair: out_dir/<stem>.mp4."""
    images, audios = _files(image_dir, IMAGE_SUFFIXES), _files(audio_dir, AUDIO_SUFFIXES)
    unmatched = sorted(set(images) ^ set(audios))
    if unmatched:
        log.warning("no partner (same name in the other directory) for: %s", ", ".join(unmatched))
    pairs = [Pair(images[s], audios[s], out_dir / f"{s}.mp4") for s in sorted(set(images) & set(audios))]
    if not pairs:
        raise MssyncError(f"no image in {image_dir} has an audio file of the same name in {audio_dir}")
    return pairs


def pairs_from_csv(path: Path, out_dir: Path) -> list[Pair]:
    """CSV with columns image, audio and optionally out; relative paths are relative to the CSV."""
    base = path.parent
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "audio"} - set(reader.fieldnames or [])
        if missing:
            raise MssyncError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        pairs = []
        for row in reader:
            image, audio = base / row["image"], base / row["audio"]
            out = base / row["out"] if row.get("out") else out_dir / f"{image.stem}-{audio.stem}.mp4"
            pairs.append(Pair(image, audio, out))
    if not pairs:
        raise MssyncError(f"{path}: no rows")
    return pairs


def animate_batch(pairs: list[Pair], generator: MotionGenerator, settings: RenderSettings,
                  landmarker: LandmarkerSettings, crop: CropSettings) -> list[tuple[Pair, str]]:
    """Animate every pair; one bad pair is reported and skipped, the others still get made."""
    failures = []
    for i, pair in enumerate(pairs, 1):
        log.info("[%d/%d] %s + %s -> %s", i, len(pairs), pair.image.name, pair.audio.name, pair.out)
        try:
            animate(pair.image, pair.audio, pair.out, generator, settings, landmarker, crop)
        except MssyncError as exc:
            log.error("%s: %s", pair.out, exc)
            failures.append((pair, str(exc)))
    return failures
