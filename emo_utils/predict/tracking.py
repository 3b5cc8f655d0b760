"""Faces followed across video frames: an IoU tracker, and each track's probabilities averaged over time.

Each detection joins the track whose box it overlaps most, greedily from the largest overlap down (SORT,
Bewley et al. 2016, without its Kalman filter: at video frame rates a face moves a few pixels between frames).
A detection that overlaps no track starts a new one with the next id. A track that no detection matches is
lost: it is held, out of sight, for KEEP_SECONDS, so a face the detector misses for a few frames comes back
with its id, but it is not handed out (nor classified) while lost: a face that has left the picture gets no
rows classified on the background where it was.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Haar's boxes for one face in consecutive frames overlap far more than this (IoU 0.8-1.0 on a still face);
# 0.3 is the threshold at which faces.match_faces counts a detection as a face.
MIN_IOU = 0.3
# A blink, a turn of the head or motion blur loses a face for a few frames; a lost track is only held (no rows,
# no classification), so holding it a second costs nothing visible and keeps its id through a longer miss.
KEEP_SECONDS = 1.0


def iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every box in a with every box in b, boxes as (x, y, w, h)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(inter > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]  # x, y, w, h: the last detection matched to it
    last_detected: float  # seconds into the video
    detected: bool = True  # this frame's box came from the detector, not held from an earlier frame
    lost: bool = False  # the last detection pass did not find it: held for its id, not shown or classified
    history: deque = field(default_factory=deque)  # (seconds, probabilities) inside the smoothing window

    def smooth(self, seconds: float, probs: np.ndarray, window: float) -> np.ndarray:
        """Add this frame's probabilities; return their mean over the last `window` seconds (this frame's
        alone when window is 0)."""
        self.history.append((seconds, np.asarray(probs, dtype=np.float64)))
        while self.history[0][0] <= seconds - window and len(self.history) > 1:
            self.history.popleft()
        return np.mean([p for _, p in self.history], axis=0)


class IouTracker:
    def __init__(self, min_iou: float = MIN_IOU, keep_seconds: float = KEEP_SECONDS):
        self.min_iou, self.keep_seconds = min_iou, keep_seconds
        self.tracks: list[Track] = []  # alive, by id
        self.next_id = 0  # also the number of tracks started so far

    def update(self, boxes, seconds: float) -> list[Track]:
        """The faces in sight after this frame's detections (x, y, w, h), by id. `boxes` None: the detector did
        not run on this frame, and every track in sight keeps its box. Lost tracks are held in self.tracks but
        not returned."""
        if boxes is None:
            for track in self.tracks:
                track.detected = False
            return [t for t in self.tracks if not t.lost]
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        ious = iou_matrix([t.box for t in self.tracks], boxes)
        track_of_box: dict[int, int] = {}  # detection index -> track index
        for flat in np.argsort(-ious, axis=None, kind="stable"):
            t, b = (int(i) for i in np.unravel_index(flat, ious.shape))
            if ious[t, b] < self.min_iou:
                break
            if b not in track_of_box and t not in track_of_box.values():
                track_of_box[b] = t
        for t, track in enumerate(self.tracks):
            track.detected = t in track_of_box.values()
            track.lost = not track.detected
        for b, t in track_of_box.items():
            self.tracks[t].box, self.tracks[t].last_detected = tuple(int(v) for v in boxes[b]), seconds
        self.tracks = [t for t in self.tracks if seconds - t.last_detected <= self.keep_seconds]
        for b in range(len(boxes)):  # left to right, as the detector returns them: new ids read left to right
            if b not in track_of_box:
                self.tracks.append(Track(self.next_id, tuple(int(v) for v in boxes[b]), seconds))
                self.next_id += 1
        return sorted((t for t in self.tracks if not t.lost), key=lambda t: t.id)
