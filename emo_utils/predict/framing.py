"""How emo-predict's crop frames a face, against FER2013's own 48x48 crop of it: the similarity transform (scale,
offset, rotation) from the original face to the crop the pipeline cut, for faces pasted into frames at a known
place (benchmarks/pipeline_frames.py). Issue 38 trains on crops jittered the way the detector and aligner frame a
face; these are the distributions to sample from.

Every matrix maps pixel centres (OpenCV's convention: pixel i covers i - 0.5 .. i + 0.5) and is 3x3, so they
compose by multiplication. A resize from n to m pixels maps x to (x + 0.5) * m / n - 0.5, as cv2.resize and
Pillow's resize do.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.readers import IMAGE_SIZE

PERCENTILES = (5, 25, 50, 75, 95)
QUANTITIES = ("scale", "dx", "dy", "angle")


def resize_matrix(scale_x: float, scale_y: float | None = None) -> np.ndarray:
    """Pixel centres of an image resized by these factors."""
    scale_y = scale_x if scale_y is None else scale_y
    return np.array([[scale_x, 0, 0.5 * scale_x - 0.5], [0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1]])


def affine3(matrix_2x3) -> np.ndarray:
    return np.vstack([np.asarray(matrix_2x3, np.float64), [0, 0, 1]])


def paste_matrix(x: float, y: float, side: int, angle: float) -> np.ndarray:
    """A 48x48 face into the frame as pipeline_frames.paste puts it: resized to side px, turned by `angle`
    degrees (counter-clockwise, cv2.getRotationMatrix2D's sense) about the square's centre, placed at (x, y)."""
    import cv2

    turn = affine3(cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0))
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]]) @ turn @ resize_matrix(side / IMAGE_SIZE)


def square_crop_matrix(left: float, top: float, right: float) -> np.ndarray:
    """Frame to the 48 px face that faces.crop_faces cuts from the square (left, top, right, bottom)."""
    return resize_matrix(IMAGE_SIZE / (right - left)) @ np.array([[1, 0, -left], [0, 1, -top], [0, 0, 1]])


def aligned_crop_matrix(warp_2x3: np.ndarray, zoom: int) -> np.ndarray:
    """Frame to the 48 px face that detectors.Aligner.crop cuts: its warp to 48 * zoom px, then the shrink."""
    return resize_matrix(1 / zoom) @ affine3(warp_2x3)


def similarity(face_to_crop: np.ndarray) -> dict:
    """scale (crop px per original px: over 1, the crop is tighter than FER2013's), dx, dy (where the original
    face's centre lands, in crop px from the crop's centre: positive is right and down) and angle (degrees the
    face is turned in the crop, counter-clockwise positive) of a 3x3 similarity transform."""
    a, b = face_to_crop[0, 0], face_to_crop[0, 1]
    centre = (IMAGE_SIZE - 1) / 2
    dx, dy = (face_to_crop @ [centre, centre, 1])[:2] - centre
    return dict(scale=float(math.hypot(a, b)), dx=float(dx), dy=float(dy), angle=float(math.degrees(math.atan2(b, a))))


def percentiles(transforms: list[dict]) -> dict:
    """Per quantity, its PERCENTILES over the faces (None when there is none)."""
    if not transforms:
        return {q: None for q in QUANTITIES}
    return {q: [float(v) for v in np.percentile([t[q] for t in transforms], PERCENTILES)] for q in QUANTITIES}


def binned_recall(matched: np.ndarray, values: np.ndarray, edges) -> dict:
    """Recall of the faces whose value lies in each bin [edges[k], edges[k + 1]) (the last bin closed), by the
    bin's label "a-b"; None for a bin with no face."""
    recall = {}
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (values >= low) & ((values < high) if k < len(edges) - 2 else (values <= high))
        recall[f"{low:g}-{high:g}"] = float((matched[inside] >= 0).mean()) if inside.any() else None
    return recall


def framing_of(truth, angles, found, matched, gray, aligner) -> list[dict]:
    """For each face found, the similarity transform from its original 48x48 face to the aligned crop the
    pipeline cut: scale, offset and rotation."""
    hits = [(t, m) for t, m in enumerate(matched) if m >= 0]
    if aligner is None or not hits:
        return []
    warps = aligner.matrices(gray, found[[m for _, m in hits]])
    return [similarity(aligned_crop_matrix(warp, zoom) @ paste_matrix(
        *truth[t][:3], angles[t])) for (t, _), (warp, zoom) in zip(hits, warps)]
