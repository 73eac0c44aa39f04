"""Piecewise-affine warp of a portrait by a moving face mesh: the image view's renderer.

The portrait is cut into triangles once. MediaPipe's face tessellation gives 852 triangles with
three holes (mouth, eyes); those holes are closed with triangles of their own rim, and a ring of
background triangles joins the face oval to fixed points on the image border, so hair, neck and
background stretch smoothly as the head moves while the frame edge stays put.

Each output frame moves the same triangles to new landmark positions. Every output pixel takes its
colour from the portrait through the affine map of the triangle it lands in (backward mapping:
no holes, one bilinear `cv2.remap` per frame). Triangles are drawn back to front (background,
then the hole fills, then the face by depth), so a turning head covers its own far side.

When the mouth opens wider than in the portrait, stretching the portrait's closed lips across
the gap looks wrong; the mouth fill paints a dark cavity with a band of upper teeth instead,
faded in with the extra opening.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy.spatial import Delaunay

from mssync.core.config import RenderSettings
from mssync.media.mesh import MOUTH_PAIRS, N_LANDMARKS, OUTER_LIP_SAMPLE, mediapipe_mesh

SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision: 1/16 pixel
REFERENCE_SIZE = 256  # the *_px settings are in pixels of a 256 crop; they scale with the size
CAVITY_DARKNESS = 0.28  # the cavity is the portrait's lip colour at this brightness
TEETH_COLOUR = np.array([178, 172, 162], np.float32)  # off-white in the mouth's shade
FILL_BLUR = (5, 5)  # softens the cavity/teeth edges and their blend into the lips (pixels at any size)


# --------------------------------------------------------------------------- topology


def _strip_triangles(ring: np.ndarray) -> np.ndarray:
    """Triangulate a convex-ish closed ring by zig-zagging between its two halves.

    Rings of the mouth and eyes run corner -> one lid -> other corner -> other lid; pairing the
    lids gives triangles that span the opening, which is what opens when the mouth does."""
    n = len(ring)
    left, right = 0, n - 1
    tris = []
    step = 1
    while right - left > 1:
        if step % 2:
            tris.append((ring[left], ring[left + 1], ring[right]))
            left += 1
        else:
            tris.append((ring[left], ring[right - 1], ring[right]))
            right -= 1
        step += 1
    return np.array(tris, np.int64)


def border_points(size: int, per_side: int) -> np.ndarray:
    """Fixed anchors along the image edge (pixel-centre coordinates), corners included."""
    ticks = np.linspace(-0.5, size - 0.5, per_side + 1)
    top = np.stack([ticks[:-1], np.full(per_side, -0.5)], 1)
    right = np.stack([np.full(per_side, size - 0.5), ticks[:-1]], 1)
    bottom = np.stack([ticks[::-1][:-1], np.full(per_side, size - 0.5)], 1)
    left = np.stack([np.full(per_side, -0.5), ticks[::-1][:-1]], 1)
    return np.concatenate([top, right, bottom, left]).astype(np.float64)


def _background_triangles(oval_px: np.ndarray, oval_ids: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Delaunay triangles between the face oval and the border, keeping those outside the oval."""
    points = np.concatenate([oval_px, border])
    ids = np.concatenate([oval_ids, N_LANDMARKS + np.arange(len(border))])
    tri = Delaunay(points).simplices
    centroids = points[tri].mean(axis=1).astype(np.float32)
    contour = oval_px.astype(np.float32).reshape(-1, 1, 2)
    outside = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) < 0 for x, y in centroids])
    return ids[tri[outside]]


@dataclasses.dataclass(frozen=True)
class Topology:
    """Triangles over the 478 landmarks followed by the fixed border points, in drawing layers."""

    background: np.ndarray  # (B, 3)
    holes: np.ndarray  # (H, 3): mouth interior and eyes
    face: np.ndarray  # (F, 3)
    mouth: np.ndarray  # indices into `holes` of the mouth interior triangles
    border: np.ndarray  # (P, 2) fixed border points, pixels

    @property
    def triangles(self) -> np.ndarray:
        return np.concatenate([self.background, self.holes, self.face])


def build_topology(source_px: np.ndarray, size: int, per_side: int) -> Topology:
    mesh = mediapipe_mesh()
    border = border_points(size, per_side)
    mouth = _strip_triangles(mesh["mouth"])
    eyes = np.concatenate([_strip_triangles(mesh["left_eye"]), _strip_triangles(mesh["right_eye"])])
    background = _background_triangles(source_px[mesh["oval"]], mesh["oval"], border)
    return Topology(background=background, holes=np.concatenate([mouth, eyes]), face=mesh["face"],
                    mouth=np.arange(len(mouth)), border=border)


# --------------------------------------------------------------------------- geometry


def to_pixels(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Normalised MediaPipe x, y (0..1 of the image) -> pixel-centre coordinates (cv2.remap's)."""
    return np.asarray(landmarks, np.float64)[..., :2] * size - 0.5


def affine_maps(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Per triangle, A (3, 2) with [x, y, 1] @ A = the source point of destination point (x, y).

    dst, src: (M, 3, 2) vertices. Degenerate destination triangles cover no pixel; they get the
    identity so the solve stays finite."""
    ones = np.ones((*dst.shape[:2], 1))
    d = np.concatenate([dst, ones], axis=2)
    det = np.linalg.det(d)
    flat = np.abs(det) < 1e-9
    d[flat] = np.eye(3)
    maps = np.linalg.solve(d, src)
    maps[flat] = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    return maps


def mouth_opening(landmarks_px: np.ndarray) -> float:
    pairs = np.asarray(MOUTH_PAIRS)
    return float(np.linalg.norm(landmarks_px[pairs[:, 0]] - landmarks_px[pairs[:, 1]], axis=1).mean())


def face_region_mask(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """Pixels inside the face oval: where warp quality is measured (PSNR/SSIM)."""
    mask = np.zeros((size, size), np.uint8)
    oval = np.round(landmarks_px[mediapipe_mesh()["oval"]] * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [oval], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return mask.astype(bool)


# --------------------------------------------------------------------------- the warper


class PortraitWarper:
    """Warps one portrait to any number of target meshes; build once, call per frame."""

    def __init__(self, portrait: np.ndarray, landmarks: np.ndarray, settings: RenderSettings):
        if portrait.shape[:2] != (settings.size, settings.size):
            raise ValueError(f"portrait is {portrait.shape[:2]}, render.size is {settings.size}")
        self.portrait = np.ascontiguousarray(portrait)
        self.settings = settings
        self.size = settings.size
        self.scale = settings.size / REFERENCE_SIZE
        self.source_px = to_pixels(landmarks, self.size)
        self.topology = build_topology(self.source_px, self.size, settings.border_points)
        self.triangles = self.topology.triangles
        self.source_points = np.concatenate([self.source_px, self.topology.border])
        self.source_opening = mouth_opening(self.source_px)
        self.n_background = len(self.topology.background)
        self.n_holes = len(self.topology.holes)
        self.mouth_ids = self.n_background + self.topology.mouth + 1  # +1: id 0 is "no triangle"
        lip = portrait[tuple(np.clip(np.round(self.source_px[list(OUTER_LIP_SAMPLE)][:, ::-1]), 0, self.size - 1)
                             .astype(int).T)]
        self.cavity_colour = (lip.astype(np.float32).mean(0) * CAVITY_DARKNESS)
        grid = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        self._ys, self._xs = grid[0], grid[1]

    def _draw_order(self, dst_landmarks: np.ndarray) -> np.ndarray:
        """Triangle indices back to front: background, hole fills, then face by decreasing depth."""
        depth = dst_landmarks[self.topology.face, 2].mean(axis=1)
        face = self.n_background + self.n_holes + np.argsort(-depth, kind="stable")
        return np.concatenate([np.arange(self.n_background + self.n_holes), face])

    def triangle_ids(self, dst_points: np.ndarray, order: np.ndarray) -> np.ndarray:
        """(size, size) uint16: 1 + the triangle drawn last over each pixel, 0 where none."""
        ids = np.zeros((self.size, self.size), np.uint16)
        fixed = np.round(dst_points[self.triangles] * (1 << SUBPIXEL_BITS)).astype(np.int32)
        for index in order:
            cv2.fillConvexPoly(ids, fixed[index], int(index) + 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        return ids

    def warp(self, dst_landmarks: np.ndarray, mouth_fill: bool | None = None) -> np.ndarray:
        """The portrait moved onto (478, 3) normalised landmarks; (size, size, 3) uint8."""
        dst_px = to_pixels(dst_landmarks, self.size)
        dst_points = np.concatenate([dst_px, self.topology.border])
        ids = self.triangle_ids(dst_points, self._draw_order(dst_landmarks))
        maps = np.concatenate([np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]),
                               affine_maps(dst_points[self.triangles], self.source_points[self.triangles])])
        maps = maps.astype(np.float32)[ids]  # (size, size, 3, 2)
        map_x = self._xs * maps[..., 0, 0] + self._ys * maps[..., 1, 0] + maps[..., 2, 0]
        map_y = self._xs * maps[..., 0, 1] + self._ys * maps[..., 1, 1] + maps[..., 2, 1]
        out = cv2.remap(self.portrait, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fill = self.settings.mouth_fill if mouth_fill is None else mouth_fill
        if fill:
            self._fill_mouth(out, ids, dst_px)
        return out

    def mouth_fill_strength(self, dst_px: np.ndarray) -> float:
        extra = mouth_opening(dst_px) - self.source_opening - self.settings.mouth_open_px * self.scale
        return float(np.clip(extra / (self.settings.mouth_ramp_px * self.scale), 0.0, 1.0))

    def _fill_mouth(self, out: np.ndarray, ids: np.ndarray, dst_px: np.ndarray) -> None:
        """Paint the cavity and upper teeth over the mouth-interior triangles, in place."""
        strength = self.mouth_fill_strength(dst_px)
        if strength <= 0:
            return
        ring = dst_px[mediapipe_mesh()["mouth"]]
        x0, y0 = np.maximum(np.floor(ring.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(ring.max(0)).astype(int) + 2, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        inside = np.isin(ids[y0:y1, x0:x1], self.mouth_ids)
        if not inside.any():
            return
        depth = np.cumsum(inside, axis=0)  # rows of mouth above and including each pixel, per column
        height = inside.sum(axis=0, keepdims=True)
        teeth = inside & (depth <= np.ceil(self.settings.teeth_fraction * height))
        colour = cv2.GaussianBlur(np.where(teeth[..., None], TEETH_COLOUR, self.cavity_colour).astype(np.float32),
                                  FILL_BLUR, 0)
        alpha = cv2.GaussianBlur(inside.astype(np.float32), FILL_BLUR, 0)[..., None] * strength
        patch = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)
