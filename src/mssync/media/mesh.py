"""MediaPipe Face Mesh index tables: which of the 478 landmarks are what, in one place.

Every table here is an index into MediaPipe's canonical face mesh (the FaceLandmarker's 478
landmarks: 468 face points and 10 iris points). The contours of the preview sheets, the rigid
points of the motion space, the lips and jaw the syncers see and the rings the portrait warp
closes all come from here, so a table is never written twice with a chance to disagree.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_LANDMARKS = 478
N_BLENDSHAPES = 52

# Landmarks that move with the skull and (almost) not with speech or expression: forehead and
# midline (10, 151, 9, 8), nose bridge and tip (168, 6, 197, 195, 5, 4, 1), eye corners (33, 133,
# 362, 263), temples/cheek contour (234, 454, 127, 356, 21, 251) and upper forehead (109, 338, 67,
# 297). No mouth, jaw or eyelid points: those are expression.
RIGID_LANDMARKS = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263,
                   234, 454, 127, 356, 21, 251, 109, 338, 67, 297)
# MediaPipe Face Mesh lip loops (FACEMESH_LIPS order) and the lower face contour (jaw and chin).
OUTER_LIP_LANDMARKS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
INNER_LIP_LANDMARKS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIP_LANDMARKS = OUTER_LIP_LANDMARKS + INNER_LIP_LANDMARKS
JAW_LANDMARKS = (152, 148, 176, 149, 150, 136, 172, 58, 132, 377, 400, 378, 379, 365, 397, 288, 361)
SYNCER_LANDMARKS = LIP_LANDMARKS + JAW_LANDMARKS

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # inner-lip midpoints: their gap is the mouth opening
# Inner-lip landmark pairs (upper, lower) across the mouth, corner to corner: the opening is their mean gap.
MOUTH_PAIRS = ((80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318))
OUTER_LIP_SAMPLE = (0, 17, 37, 84, 267, 314, 40, 91, 270, 321)  # where the portrait's lip colour is read
FACE_WIDTH_LANDMARKS = (234, 454)  # right and left cheek extremes of the face oval: the face's width
OUTER_EYE_CORNERS = (33, 263)  # right and left outer eye corners: a width that expression barely moves

# Contours drawn on the preview sheets.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYEBROW = ((276, 283, 282, 295, 285), (300, 293, 334, 296, 336))
RIGHT_EYEBROW = ((46, 53, 52, 65, 55), (70, 63, 105, 66, 107))


# --------------------------------------------------------------------------- tessellation


def _ordered_ring(edges: list[tuple[int, int]]) -> list[int]:
    """Chain undirected edges that form one closed loop into its vertex order."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = edges[0][0]
    ring, previous = [start], None
    while True:
        current = ring[-1]
        nxt = next(n for n in neighbours[current] if n != previous)
        if nxt == start:
            return ring
        previous = current
        ring.append(nxt)


@lru_cache(maxsize=1)
def mediapipe_mesh() -> dict[str, np.ndarray]:
    """MediaPipe's face tessellation triangles and the rings of its holes and outline.

    The tessellation is published as edges, three per triangle in order; the rings are chained
    from the connection lists of the lips' inner contour, the eyes and the face oval."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    edges = np.array([(c.start, c.end) for c in C.FACE_LANDMARKS_TESSELATION]).reshape(-1, 3, 2)
    lips = [(c.start, c.end) for c in C.FACE_LANDMARKS_LIPS]
    inner_lip = [e for e in lips if set(e) <= set(INNER_LIP_LANDMARKS)]  # starts at the corner 78
    return {  # every ring starts at a corner (mouth 78, eyes 263 and 33), as _strip_triangles wants
        "face": edges[:, :, 0],
        "mouth": np.array(_ordered_ring(inner_lip)),
        "left_eye": np.array(_ordered_ring([(c.start, c.end) for c in C.FACE_LANDMARKS_LEFT_EYE])),
        "right_eye": np.array(_ordered_ring([(c.start, c.end) for c in C.FACE_LANDMARKS_RIGHT_EYE])),
        "oval": np.array(_ordered_ring([(c.start, c.end) for c in C.FACE_LANDMARKS_FACE_OVAL])),
        "edges": np.unique(np.sort(edges.reshape(-1, 2), axis=1), axis=0),
    }


