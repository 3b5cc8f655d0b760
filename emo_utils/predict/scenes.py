"""Faces in frames, for measuring the pipeline: FER2013's 48x48 faces pasted into 640x480 frames at known
places, sizes and angles, on backgrounds a detector must not mistake for faces (benchmarks/pipeline_frames.py,
benchmarks/predict_latency.py). faces.make_collage is the simpler demo: a grid of upright faces.
"""
from __future__ import annotations

import math

import numpy as np

from .tracking import iou_matrix

FRAME_SIZE = (640, 480)


def background(rng, kind: int) -> np.ndarray:
    """An RGB 640x480 background: a smooth gradient, blurred noise (clutter), or stripes (a wall, blinds)."""
    import cv2

    width, height = FRAME_SIZE
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    if kind == 0:
        c = rng.uniform(40, 200, 3)
        base = np.stack([c[0] + 60 * xx, c[1] + 40 * yy, c[2] - 40 * xx + 20 * np.sin(6 * yy)], axis=-1)
    elif kind == 1:
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), 8)
        base = 128 + (noise - noise.mean()) * 4
    else:
        period, angle = rng.uniform(20, 80), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) * max(height, width) / period)
        base = np.stack([110 + 50 * wave] * 3, axis=-1) * rng.uniform(0.7, 1.3, 3)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255)


def paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int, side: int, angle: float):
    """The 48x48 face upscaled to side px and turned by angle degrees about its centre, pasted at (x, y):
    the turned square's corners show the background, as around a real face."""
    import cv2

    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    turned = cv2.warpAffine(big, matrix, (side, side), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((side, side), np.float32), matrix, (side, side), flags=cv2.INTER_LINEAR)
    region = canvas[y:y + side, x:x + side]
    region[:] = region * (1 - mask[..., None]) + turned[..., None] * mask[..., None]


def make_frames(faces_u8: np.ndarray, empty: int, max_rotation: float, seed: int):
    """(frames RGB uint8, boxes per frame (n, 4), face indices per frame, angles per frame in degrees): every face
    pasted once."""
    rng = np.random.default_rng(seed)
    frames, boxes, which, angles = [], [], [], []
    order, start = rng.permutation(len(faces_u8)), 0
    while start < len(order):
        count = int(rng.integers(1, 5))
        canvas = background(rng, int(rng.integers(0, 3)))
        placed, indices, turns = [], [], []
        for index in order[start:start + count]:
            for _ in range(50):  # a free spot: no overlap with the faces already placed
                side = int(round(math.exp(rng.uniform(math.log(40), math.log(200)))))
                x, y = int(rng.integers(0, FRAME_SIZE[0] - side)), int(rng.integers(0, FRAME_SIZE[1] - side))
                if not placed or iou_matrix([(x, y, side, side)], placed).max() == 0:
                    break
            else:
                continue
            turns.append(rng.uniform(-max_rotation, max_rotation))
            paste(canvas, faces_u8[index], x, y, side, turns[-1])
            placed.append((x, y, side, side))
            indices.append(index)
        start += count
        frames.append(np.clip(canvas + rng.normal(0, 2, canvas.shape), 0, 255).astype(np.uint8))
        boxes.append(np.array(placed, np.int64).reshape(-1, 4))
        which.append(np.array(indices, np.int64))
        angles.append(np.array(turns, np.float64))
    for _ in range(empty):
        frames.append(np.clip(background(rng, int(rng.integers(0, 3))), 0, 255).astype(np.uint8))
        boxes.append(np.zeros((0, 4), np.int64))
        which.append(np.zeros(0, np.int64))
        angles.append(np.zeros(0, np.float64))
    return frames, boxes, which, angles
