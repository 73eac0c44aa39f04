"""MediaPipe Tasks FaceLandmarker: opening it, and turning its results into arrays.

mediapipe 1.x has only the Tasks API. VIDEO mode needs strictly increasing timestamps and
landmarkers must be closed explicitly (the destructor prints errors at exit), hence the
context manager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from mssync.core.config import LandmarkerSettings
from mssync.core.errors import SetupError

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Face:
    landmarks: np.ndarray  # (478, 3) float32: x, y in [0, 1] of the image, z relative (same scale as x)

    def box_px(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Landmark bounding box (x0, y0, x1, y1) in pixels."""
        x = self.landmarks[:, 0] * width
        y = self.landmarks[:, 1] * height
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())

    def size_px(self, width: int, height: int) -> float:
        x0, y0, x1, y1 = self.box_px(width, height)
        return max(x1 - x0, y1 - y0)


@lru_cache(maxsize=8)
def model_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_path(settings: LandmarkerSettings) -> str:
    path = Path(settings.model)
    if not path.is_file():
        raise SetupError(
            f"face landmarker model not found at {path} (landmarker.model in params.yaml); "
            "get face_landmarker.task from MediaPipe's model page"
        )
    return str(path)


@contextlib.contextmanager
def open_landmarker(
    settings: LandmarkerSettings,
    *,
    video: bool,
    num_faces: int = 1,
    blendshapes: bool = False,
    matrices: bool = False,
) -> Iterator[object]:
    """A FaceLandmarker in VIDEO (tracking) or IMAGE (independent frames) mode."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ INFO lines out of rule logs
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=_model_path(settings)),
        running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
        num_faces=num_faces,
        min_face_detection_confidence=settings.min_detection_confidence,
        min_face_presence_confidence=settings.min_presence_confidence,
        min_tracking_confidence=settings.min_tracking_confidence,
        output_face_blendshapes=blendshapes,
        output_facial_transformation_matrixes=matrices,
    )
    landmarker = vision.FaceLandmarker.create_from_options(options)
    try:
        yield landmarker
    finally:
        landmarker.close()


class ImageLandmarker:
    """An IMAGE-mode FaceLandmarker opened on first use and kept open until `close()`, for a shard job
    that looks at still frames of many clips (the crop's face probe).

    IMAGE mode keeps nothing from one `detect` to the next (every frame runs the face detector
    afresh), so one instance gives the same faces as a fresh one per clip, without loading the model
    per clip. VIDEO mode is different: it tracks the face from the previous frame, so a tracker
    carried into the next clip would start from the last clip's face; it is opened per clip."""

    def __init__(self, settings: LandmarkerSettings, *, num_faces: int):
        self.settings, self.num_faces = settings, num_faces
        self._stack: contextlib.ExitStack | None = None
        self._landmarker: object | None = None

    def get(self) -> object:
        if self._landmarker is None:
            stack = contextlib.ExitStack()
            self._landmarker = stack.enter_context(open_landmarker(self.settings, video=False, num_faces=self.num_faces))
            self._stack = stack
        return self._landmarker

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._landmarker = None, None

    def __enter__(self) -> "ImageLandmarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_mp_image(frame: np.ndarray) -> object:
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))


def landmarks_array(face_landmarks: list) -> np.ndarray:
    return np.array([(p.x, p.y, p.z) for p in face_landmarks], dtype=np.float32)


def detect_faces(landmarker: object, frame: np.ndarray) -> list[Face]:
    """All faces in one frame (IMAGE mode), largest first."""
    result = landmarker.detect(to_mp_image(frame))  # type: ignore[attr-defined]
    faces = [Face(landmarks_array(lms)) for lms in result.face_landmarks]
    height, width = frame.shape[:2]
    return sorted(faces, key=lambda f: -f.size_px(width, height))
