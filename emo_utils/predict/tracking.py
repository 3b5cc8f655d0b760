"""Faces followed across video frames: an IoU tracker, and each track's probabilities averaged over time.

Between two detections each face in sight is followed (follow_box): its pixels in the last frame are sought
near where they were in this one, so a box stays on a face that moves or a camera that pans while the detector
runs only on every K-th frame.

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


# Following a face between detections: on copies of the frames at FOLLOW_SCALE (a quarter of the pixels), its
# box's patch is sought within FOLLOW_SEARCH of its side around where it was (a face moving 25 px between frames
# at 100 px); below MIN_MATCH (normalized correlation) the face is taken as hidden or blurred and its box held.
FOLLOW_SCALE = 0.5
FOLLOW_SEARCH = 0.25
MIN_MATCH = 0.5


def shrunk(gray: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(gray, None, fx=FOLLOW_SCALE, fy=FOLLOW_SCALE, interpolation=cv2.INTER_AREA)


def follow_box(previous: np.ndarray, current: np.ndarray, box) -> tuple[int, int, int, int]:
    """Where `box` (x, y, w, h in full-size pixels) of the frame `previous` lies in `current`, both shrunk():
    the best match of its patch within FOLLOW_SEARCH of its side; the box unchanged when the face is too small,
    at the frame's edge beyond its search, or matches poorly."""
    import cv2

    x, y, w, h = (v * FOLLOW_SCALE for v in box)
    rows, cols = previous.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in (max(x, 0), max(y, 0), min(x + w, cols), min(y + h, rows)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return tuple(box)
    pad = int(round(FOLLOW_SEARCH * max(w, h)))
    sx0, sy0, sx1, sy1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, cols), min(y1 + pad, rows)
    scores = cv2.matchTemplate(current[sy0:sy1, sx0:sx1], previous[y0:y1, x0:x1], cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    if not np.isfinite(best) or best < MIN_MATCH:
        return tuple(box)
    dx, dy = (sx0 + bx - x0) / FOLLOW_SCALE, (sy0 + by - y0) / FOLLOW_SCALE
    return (int(round(box[0] + dx)), int(round(box[1] + dy)), box[2], box[3])


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
    box: tuple[int, int, int, int]  # x, y, w, h: the last detection matched to it, followed since
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
        self.previous = None  # the last frame seen, shrunk(), to follow faces from

    def update(self, boxes, seconds: float, gray: np.ndarray | None = None) -> list[Track]:
        """The faces in sight after this frame's detections (x, y, w, h), by id. `boxes` None: the detector did
        not run on this frame, and every track in sight is followed from the last frame to this one (`gray`, the
        frame; without it, keeps its box). Lost tracks are held in self.tracks but not returned."""
        current = shrunk(gray) if gray is not None else None
        previous, self.previous = self.previous, current
        if boxes is None:
            for track in self.tracks:
                track.detected = False
                if not track.lost and previous is not None and current is not None:
                    track.box = follow_box(previous, current, track.box)
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
