"""`mssync animate`: a portrait and a speech file become a talking-head video.

portrait -> the largest face, cropped the way the pipeline crops its training clips -> its
landmarks -> motion generated for the whole speech (any length) -> image view (and optionally the
landmark view beside it) -> H.264 + AAC mp4. Every input is checked before the slow part starts,
and the output file appears only once it is complete.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from mssync.core.config import CropSettings, LandmarkerSettings, RenderSettings
from mssync.core.constants import FPS
from mssync.core.errors import MssyncError
from mssync.core.logs import timed
from mssync.data.crop import face_box
from mssync.gan.generate import MotionGenerator
from mssync.media.face_shape import shape_drift
from mssync.media.images import read_image
from mssync.media.landmarks import detect_faces, open_landmarker
from mssync.render.animate_inputs import Pair, SpeechFeatures, check_pair, speech_log_mel
from mssync.render.render import draw_mesh, drive, write_video
from mssync.render.warp import PortraitWarper

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Portrait:
    image: np.ndarray  # (size, size, 3) uint8 RGB face crop
    landmarks: np.ndarray  # (478, 3) normalised to the crop
    faces_found: int


# --------------------------------------------------------------------------- inputs


def crop_face(image: np.ndarray, faces: list, size: int, crop: CropSettings) -> np.ndarray:
    """The square head box the crop stage would choose for this face, resized to size x size."""
    height, width = image.shape[:2]
    box = face_box([faces[:1]], (width, height), crop)
    square = image[box.y:box.y + box.side, box.x:box.x + box.side]
    interpolation = cv2.INTER_AREA if box.side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def load_portrait(path: Path, size: int, landmarker: LandmarkerSettings, crop: CropSettings) -> Portrait:
    """The portrait file, upright (its EXIF orientation applied), cropped around its largest face."""
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


# --------------------------------------------------------------------------- animate


def animated_frames(portrait: Portrait, landmarks: np.ndarray, settings: RenderSettings) -> Iterator[np.ndarray]:
    """Image view, with the landmark view beside it when asked for."""
    warper = PortraitWarper(portrait.image, portrait.landmarks, settings)
    for target in landmarks:
        frame = warper.warp(target)
        yield np.concatenate([frame, draw_mesh(target, settings.size)], axis=1) if settings.landmark_view else frame


def animate(image: Path, audio: Path, out: Path, generator: MotionGenerator, settings: RenderSettings,
            landmarker: LandmarkerSettings, crop: CropSettings, speech: SpeechFeatures | None = None) -> dict:
    """`speech`, when given, has the audio features ready (or on their way) from its worker process;
    the face is found first, while they are still being computed there."""
    check_pair(Pair(image, audio, out))
    with timed(log, f"{image}: finding and cropping the face"):
        portrait = load_portrait(image, settings.size, landmarker, crop)
    with timed(log, f"{audio}: audio features (decoding and log-mel, or waiting for the speech worker)"):
        mel = (speech.log_mel if speech else speech_log_mel)(audio, generator.features, settings.min_audio_s,
                                                              crop.min_audio_rms_db)
    with timed(log, f"{out}: generating the motion"):
        landmarks = drive(generator, portrait.landmarks, mel, settings)
    width = settings.size * (2 if settings.landmark_view else 1)
    with timed(log, f"{out}: rendering and encoding"):
        frames = write_video(out, audio, animated_frames(portrait, landmarks, settings), len(landmarks),
                             (width, settings.size), settings, out.name)
    log.info("%s: %d frames (%.1f s) from %s + %s", out, frames, frames / FPS, image, audio)
    shape = shape_against_portrait(portrait.landmarks, landmarks, settings.size)
    log.info("%s: face shape against the portrait's: %s", out, ", ".join(f"{k} {v:.3f}" for k, v in shape.items()))
    return {"out": str(out), "frames": frames, "faces_found": portrait.faces_found, "shape_vs_portrait": shape}


def shape_against_portrait(portrait: np.ndarray, driven: np.ndarray, size: int) -> dict[str, float]:
    """How far the animated face leaves the portrait's own shape: the drift of its size and of its
    width over eye distance with the portrait as frame 0, and the first frame's mean landmark
    distance from the portrait in pixels (a retargeting that does not start on the portrait shows here)."""
    drift = shape_drift(np.concatenate([portrait[None], driven]))
    first_px = float(np.linalg.norm((driven[0] - portrait)[:, :2], axis=-1).mean() * size)
    return {**drift, "first_frame_px": first_px}


# --------------------------------------------------------------------------- batches


def animate_pairs(pairs: list[Pair], single: bool, *, generator: MotionGenerator, settings: RenderSettings,
                  landmarker: LandmarkerSettings, crop: CropSettings, speech: SpeechFeatures | None = None) -> None:
    """`mssync animate`: one pair (its failure is the command's), or a batch (each failure reported,
    the others still made, then one error that lists them)."""
    if single:
        pair = pairs[0]
        animate(pair.image, pair.audio, pair.out, generator, settings, landmarker, crop, speech)
        return
    failures = animate_batch(pairs, generator, settings, landmarker, crop, speech)
    if failures:
        raise MssyncError(f"{len(failures)} of {len(pairs)} pairs failed: "
                          + "; ".join(f"{pair.out.name}: {why}" for pair, why in failures))


def animate_batch(pairs: list[Pair], generator: MotionGenerator, settings: RenderSettings,
                  landmarker: LandmarkerSettings, crop: CropSettings,
                  speech: SpeechFeatures | None = None) -> list[tuple[Pair, str]]:
    """Animate every pair; one bad pair is reported and skipped, the others still get made. With
    `speech`, the next pairs' audio features are computed while this pair renders."""
    if speech is not None:
        speech.prefetch([pair.audio for pair in pairs], generator.features, settings.min_audio_s,
                        crop.min_audio_rms_db)
    failures = []
    for i, pair in enumerate(pairs, 1):
        log.info("[%d/%d] %s + %s -> %s", i, len(pairs), pair.image.name, pair.audio.name, pair.out)
        try:
            animate(pair.image, pair.audio, pair.out, generator, settings, landmarker, crop, speech)
        except MssyncError as exc:
            log.error("%s: %s", pair.out, exc)
            failures.append((pair, str(exc)))
    return failures
