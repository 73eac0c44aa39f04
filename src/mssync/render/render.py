"""Motion -> pictures: the landmark view, the image view, videos, contact sheets, warp fidelity.

Generated motion is retargeted to the portrait (expression movement about the roll-out's own
rest face, see retarget_expression), decoded to 478 landmarks and made *relative* to the
portrait: frame t is the portrait's own landmarks plus (decode(m_t) - decode(m_0)). Frame 0
therefore reproduces the portrait exactly, and identity detail the 40-component motion space
cannot hold stays put.

`mssync render-clips` (the render rule) renders every test clip from its own first frame and
audio, next to the ground truth: real video | real mesh | generated mesh | generated image view.
It also measures how faithful the warp itself is, separately from the generator: frame 0 warped
by frame k's *real* landmarks against the real frame k (PSNR/SSIM inside the face oval), with and
without the mouth fill.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mssync.core.atomic import atomic_path, write_json_atomic
from mssync.core.config import RenderSettings
from mssync.core.constants import FPS
from mssync.core.errors import MssyncError
from mssync.core.reproducible import provenance, training_runs
from mssync.gan.generate import MotionGenerator
from mssync.media.ffmpeg import iter_frames, open_video_writer, probe, read_wav
from mssync.media.mesh import mediapipe_mesh
from mssync.media.sheets import get_font, pick_frames, spread_indices
from mssync.motion.clips import iter_clips
from mssync.motion.space import POSE_DIM, MotionSpace
from mssync.render.warp import SUBPIXEL_BITS, PortraitWarper, face_region_mask, to_pixels

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; JSON has no infinity
MESH_BACKGROUND = (18, 18, 22)
MESH_COLOUR = (60, 110, 150)
CONTOUR_COLOURS = {"oval": (235, 235, 235), "left_eye": (0, 200, 255), "right_eye": (0, 200, 255),
                   "mouth": (255, 0, 200)}
CAPTION_H = 22
SHEET_GAP = 4


# --------------------------------------------------------------------------- motion -> landmarks


def adjust_motion(motion: np.ndarray, still: bool, head_scale: float, expression_scale: float) -> np.ndarray:
    """Scale head motion and expression about frame 0; `still` keeps frame 0's head pose (lips only)."""
    out = np.array(motion, np.float32, copy=True)
    pose_gain = 0.0 if still else head_scale
    out[:, :POSE_DIM] = motion[0, :POSE_DIM] + pose_gain * (motion[:, :POSE_DIM] - motion[0, :POSE_DIM])
    out[:, POSE_DIM:] = motion[0, POSE_DIM:] + expression_scale * (motion[:, POSE_DIM:] - motion[0, POSE_DIM:])
    return out


def retarget_expression(motion: np.ndarray) -> np.ndarray:
    """Keep the portrait's identity: expression = frame 0's + (generated - the roll-out's own mean).

    Within a few frames the generator's expression settles near the training speakers' average
    face (on the test split, the mean generated expression lies ~40 % closer to the training mean
    than the real first frame does), which would morph the portrait's face shape. Only the
    movement about that rest shape is transferred; frame 0 stays the portrait's."""
    out = np.array(motion, np.float32, copy=True)
    if len(motion) > 1:
        rest = motion[1:, POSE_DIM:].mean(axis=0)
        out[1:, POSE_DIM:] = motion[0, POSE_DIM:] + (motion[1:, POSE_DIM:] - rest)
    return out


def relative_landmarks(space: MotionSpace, motion: np.ndarray, portrait_landmarks: np.ndarray) -> np.ndarray:
    decoded = space.decode(motion)
    return (decoded - decoded[:1] + portrait_landmarks[None]).astype(np.float32)


def drive(generator: MotionGenerator, portrait_landmarks: np.ndarray, mel: np.ndarray, settings: RenderSettings,
          n_frames: int | None = None) -> np.ndarray:
    """Speech (log-mel, generator.mel_from_waveform) -> (T, 478, 3) landmarks of the portrait's face."""
    import torch

    torch.manual_seed(settings.seed)  # the generator is deterministic today; a sampling one would obey this
    motion = generator.generate(portrait_landmarks, mel, n_frames)
    motion = adjust_motion(retarget_expression(motion), settings.still, settings.head_scale, settings.expression_scale)
    return relative_landmarks(generator.space, motion, portrait_landmarks)


# --------------------------------------------------------------------------- the landmark view


def draw_mesh(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The face mesh on a dark background: tessellation, with oval, eyes and lips brighter."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = MESH_BACKGROUND
    fixed = np.round(to_pixels(landmarks, size) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    mesh = mediapipe_mesh()
    cv2.polylines(canvas, list(fixed[mesh["edges"]]), False, MESH_COLOUR, 1, cv2.LINE_AA, SUBPIXEL_BITS)
    for name, colour in CONTOUR_COLOURS.items():
        cv2.polylines(canvas, [fixed[mesh[name]]], True, colour, 1, cv2.LINE_AA, SUBPIXEL_BITS)
    return canvas


# --------------------------------------------------------------------------- videos


def write_video(out: Path, audio: Path, frames: Iterable[np.ndarray], n_frames: int, size: tuple[int, int],
                settings: RenderSettings, desc: str) -> int:
    """Encode frames (with a progress bar) and mux `audio`; `out` appears only when complete."""
    with open_video_writer(out, size, FPS, audio, crf=settings.crf, preset=settings.encoder_preset,
                           audio_bitrate=settings.audio_bitrate) as writer:
        for frame in tqdm(frames, total=n_frames, desc=desc, unit="frame", mininterval=1.0, file=sys.stderr):
            writer.write(frame)
    return writer.frames


def contact_sheet(video: Path, out: Path, count: int, labels: list[str]) -> None:
    """Frames decoded back from the finished video (what a viewer sees), one row each, captioned."""
    info = probe(video)
    n_frames = int(round(info.duration_s * FPS))
    width, height = info.display_size
    rows = list(pick_frames(iter_frames(video, (width, height)), spread_indices(n_frames, count)))
    font = get_font(13)
    panel = width // max(len(labels), 1)
    sheet = Image.new("RGB", (width, CAPTION_H + len(rows) * (height + CAPTION_H + SHEET_GAP)), MESH_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, label in enumerate(labels):
        draw.text((i * panel + 6, 4), label, font=font, fill=(235, 235, 235))
    y = CAPTION_H
    for index, frame in rows:
        draw.text((6, y + 4), f"frame {index}  ({index / FPS:.2f} s)", font=font, fill=(170, 170, 180))
        sheet.paste(Image.fromarray(frame), (0, y + CAPTION_H))
        y += height + CAPTION_H + SHEET_GAP
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


# --------------------------------------------------------------------------- warp fidelity


def masked_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(reference[mask], test[mask]):
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(reference[mask], test[mask], data_range=255)), PSNR_CAP_DB)


def masked_ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(reference, test, channel_axis=2, data_range=255, full=True)
    return float(full[mask].mean())


def reenactment_fidelity(frames: list[np.ndarray], landmarks: np.ndarray, found: np.ndarray, first: int,
                         settings: RenderSettings) -> dict:
    """Frame `first` warped by each later frame's real landmarks vs that real frame, in the face oval."""
    warper = PortraitWarper(frames[first], landmarks[first], settings)
    identity = masked_psnr(frames[first], warper.warp(landmarks[first]),
                           face_region_mask(to_pixels(landmarks[first], settings.size), settings.size))
    scores: dict[str, list[float]] = {key: [] for key in ("psnr_fill", "ssim_fill", "psnr_no_fill", "ssim_no_fill")}
    for k in range(first + settings.fidelity_stride, len(frames), settings.fidelity_stride):
        if not found[k]:
            continue
        mask = face_region_mask(to_pixels(landmarks[k], settings.size), settings.size)
        for fill in (True, False):
            suffix = "fill" if fill else "no_fill"
            warped = warper.warp(landmarks[k], mouth_fill=fill)
            scores[f"psnr_{suffix}"].append(masked_psnr(frames[k], warped, mask))
            scores[f"ssim_{suffix}"].append(masked_ssim(frames[k], warped, mask))
    result = {key: float(np.mean(values)) if values else None for key, values in scores.items()}
    return {**result, "fidelity_frames": len(scores["psnr_fill"]), "identity_psnr_db": identity}


# --------------------------------------------------------------------------- the render stage


def first_face_frame(found: np.ndarray) -> int:
    hits = np.flatnonzero(found)
    if not len(hits):
        raise MssyncError("no frame of the clip has a face")
    return int(hits[0])


def decode_clip(video: Path, size: int) -> list[np.ndarray]:
    info = probe(video)
    frames = list(iter_frames(video, info.display_size))
    if frames and frames[0].shape[:2] != (size, size):
        frames = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def test_clip_panels(frames: list[np.ndarray], real: np.ndarray, generated: np.ndarray,
                     warper: PortraitWarper, size: int) -> Iterator[np.ndarray]:
    """real video | real mesh | generated mesh | generated image view, per frame."""
    for t in range(len(generated)):
        yield np.concatenate([frames[t], draw_mesh(real[t], size), draw_mesh(generated[t], size),
                              warper.warp(generated[t])], axis=1)


TEST_PANELS = ["real video", "real landmarks", "generated landmarks", "generated (portrait warp)"]


def render_clip(clip_id: str, cols: dict[str, np.ndarray], clips_dir: Path, out_dir: Path,
                generator: MotionGenerator, settings: RenderSettings) -> dict:
    frames = decode_clip(clips_dir / f"{clip_id}.mp4", settings.size)
    found, real = cols["face_found"].astype(bool), cols["landmarks"]
    n = min(len(frames), len(real))
    first = first_face_frame(found[:n])
    frames, real, found = frames[first:n], real[first:n], found[first:n]
    samples, rate = read_wav(clips_dir / f"{clip_id}.wav")
    samples = samples[int(round(first / FPS * rate)):]
    generated = drive(generator, real[0], generator.mel_from_waveform(samples, rate), settings, n_frames=len(frames))
    warper = PortraitWarper(frames[0], real[0], settings)
    video = out_dir / f"{clip_id}.mp4"
    written = write_video(video, clips_dir / f"{clip_id}.wav", test_clip_panels(frames, real, generated, warper,
                          settings.size), len(generated), (4 * settings.size, settings.size), settings, clip_id)
    contact_sheet(video, out_dir / f"{clip_id}.png", settings.sheet_frames, TEST_PANELS)
    fidelity = reenactment_fidelity(frames, real, found, 0, settings)
    log.info("%s: %d frames; warp fidelity PSNR %.2f dB (no fill %.2f), SSIM %.3f (no fill %.3f)", clip_id, written,
             fidelity["psnr_fill"] or float("nan"), fidelity["psnr_no_fill"] or float("nan"),
             fidelity["ssim_fill"] or float("nan"), fidelity["ssim_no_fill"] or float("nan"))
    return {"frames": written, "first_frame": first, "video": video.name, **fidelity}


def render_test_clips(*, test: Path, clips_dir: Path, model: Path, space: Path, out_dir: Path, metrics: Path,
                      settings: RenderSettings, device: str = "auto") -> dict:
    generator = MotionGenerator.load(model, space, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_clip = {clip_id: render_clip(clip_id, cols, clips_dir, out_dir, generator, settings)  # a clip at a time
                for clip_id, cols in iter_clips(test, ["face_found", "landmarks"])}
    if not per_clip:
        raise MssyncError(f"{test}: no clips to render")
    keys = ("psnr_fill", "ssim_fill", "psnr_no_fill", "ssim_no_fill")
    summary = {key: float(np.mean([c[key] for c in per_clip.values() if c[key] is not None])) for key in keys}
    summary["identity_psnr_db_min"] = min(c["identity_psnr_db"] for c in per_clip.values())
    report = {"split": str(test), "clips": per_clip, "mean": summary, "run": provenance(generator.device),
              "training_runs": training_runs({"generator": model}),
              "about": "warp fidelity: first frame warped by frame k's real landmarks vs real frame k, inside the "
                       "face oval; identity: the first frame warped by its own landmarks (PSNR capped at "
                       f"{PSNR_CAP_DB:.0f} dB)"}
    write_json_atomic(metrics, report)
    return report
