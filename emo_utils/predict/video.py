"""Video and camera: each face's emotions over time.

The detector runs on every `every`-th frame, on a copy scaled down to `detect_size` pixels; an IoU tracker
(tracking.py) follows each face across frames and gives it an id; every face is classified on every frame at
its track's box, and its probabilities are averaged over the last `smooth` seconds. Out come a row per face per
frame (time, frame, face id, box, class, confidence, one probability per class), an annotated video, and a plot
of each face's emotions over time.

    emo-predict clip.mp4 --annotate clip_annotated.mp4   # clip_emotions.csv, clip_emotions.png
    emo-predict --camera 0                                # live until q or Ctrl-C, then the same files

A capture is anything with OpenCV's read() -> (ok, BGR frame) and release(): cv2.VideoCapture for files and
cameras, FrameList for frames in memory. cv2 and matplotlib are imported where they are used.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from tqdm import tqdm

from .faces import DETECT_MAX_SIDE, FACE_MARGIN, MIN_FACE, PALETTE, Face, PredictError, cut_faces, draw_faces
from .detectors import MTCNN_MIN_FACE, Aligner
from ..core.files import write_csv
from .tracking import IouTracker

if TYPE_CHECKING:  # annotations only: importing it at run time would import torch
    from ..core.inference import Classifier

# Containers OpenCV's bundled FFmpeg reads; an input with one of these suffixes is read as a video.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
# On the recall benchmark of benchmarks/predict_latency.py (200 FER2013 PrivateTest faces of 80-140 px in 50
# collages of 640x480), the tracked video path finds 78.5% of the faces on a copy 480 px wide, as many as the
# photo path on the whole frame; on a copy 400 px wide, 73.8%.
DETECT_SIZE = 480
# Finding faces on every K-th frame divides the detector's cost by K, and each face is still classified on every
# frame at its track's box, which follows the face between detections (tracking.follow_box). The webcam (HOG
# without upsampling, the cheaper detector) needs only K = 2 for 30 frames/s; a video file's MTCNN K = 8 (267 ms
# between detections at 30 frames/s; on the six-face panning clip of benchmarks/predict_latency.py the followed
# boxes stay on 0.96 of the faces; held where they were detected, on 0.91 in a probe).
EVERY = 2
VIDEO_EVERY = 8
# Averaging half a second of frames damps the flicker of the class from frame to frame; facial expressions
# last from half a second to four seconds.
SMOOTH_SECONDS = 0.5
FALLBACK_FPS = 30.0  # when a file or a camera does not say its frame rate
# emo-predict's detector settings for photos (--detect-faces), video files and a camera; any flag overrides one
# entry. Chosen on benchmarks/pipeline_frames.py (reports/benchmarks.md, "Faces in frames": 1,000 PrivateTest
# faces of 40-200 px, turned by up to 15 degrees, in 640x480 frames; 1 thread, a shared 2-core machine), issue 38:
# - photo: MTCNN (facenet-pytorch) at MTCNN_THRESHOLDS, faces of 40 px and up, aligned on its own landmarks:
#   recall and pipeline accuracy the best of every setting (the table has them; dlib's HOG upsampled once, issue
#   30's default, found 0.686 of the faces, MTCNN at facenet-pytorch's own thresholds 0.848), no false detection
#   on the 100 face-free frames.
# - video: the photo's MTCNN on every 8th frame, each face followed between detections (tracking.follow_box)
#   and its eyes carried with its box (carried_eyes), classified by VIDEO_MODEL through onnxruntime. On six faces
#   a camera pans across (reports/benchmarks.md, "Prediction latency": benchmarks/predict_latency.py), 51.7
#   frames/s idle and 56.8 with one core busy on a 2-core EPYC with AVX2 only, 0.956 of the faces boxed on every
#   frame; dlib's HOG on every 3rd frame (issue 30's default) ran at 27.6 / 29.4 and boxed 0.833 (it misses one
#   face of the six), MTCNN on every 6th at 32.7 / 31.2.
# - webcam: a face before a webcam is large, so HOG without upsampling (faces >= 80 px) on every 2nd frame, the
#   cheapest detector that finds large faces (recall 0.743 on faces of 100-200 px).
# The model a video or a camera classifies with unless --model names one: the robust Mini-Xception, 0.9 points
# below the robust flagship on the frames benchmark's photo pipeline (59.3% against 60.2%, inside its noise) and
# 0.25 ms a face through onnxruntime (benchmarks.md); six faces through the robust flagship took 14 ms on
# onnxruntime and 24 ms on torch in a probe with one core busy, most of a 30 frames/s frame's 33 ms.
VIDEO_MODEL = "mini_xception_robust"
# min_face None: each detector's own smallest face (HOG's window decides it; Haar's is MIN_FACE, MTCNN's
# MTCNN_MIN_FACE).
SETTINGS = {
    "photo": dict(detector="mtcnn", upsample=1, scale_factor=1.1, min_face=None, detect_size=DETECT_MAX_SIDE,
                  every=1, align=True),
    "video": dict(detector="mtcnn", upsample=1, scale_factor=1.1, min_face=None, detect_size=DETECT_MAX_SIDE,
                  every=VIDEO_EVERY, align=True),
    "webcam": dict(detector="hog", upsample=0, scale_factor=1.1, min_face=None, detect_size=DETECT_MAX_SIDE,
                   every=EVERY, align=True),
}


def min_face_for(detector: str, min_face: int | None) -> int:
    """The smallest face a detector looks for when --min-face is left out: Haar's MIN_FACE, MTCNN's pyramid
    start, and for dlib's detectors their window's size (1: no limit of ours)."""
    if min_face is not None:
        return min_face
    return {"haar": MIN_FACE, "mtcnn": MTCNN_MIN_FACE}.get(detector, 1)


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(path: str | os.PathLike):
    """(capture, frames per second, number of frames or None) for a video file."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    size = Path(path).stat().st_size
    # A writer closed before its first frame leaves an MP4 of a few hundred bytes: its header (the moov atom)
    # and no frames, which FFmpeg declines to open. A cut-off file has no moov atom.
    if not capture.isOpened() and size < 1024 and b"moov" in Path(path).read_bytes():
        raise PredictError(f"{path}: an empty video: {size} bytes, a header and no frames. Record or export it "
                           "again.")
    if not capture.isOpened():
        raise PredictError(f"{path}: OpenCV cannot open it as a video (not a video, truncated, or a codec its "
                           f"bundled FFmpeg lacks). Convert it, e.g. `ffmpeg -i {path} -c:v mpeg4 clip.mp4`.")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if count == 0 and not capture.grab():
        capture.release()
        raise PredictError(f"{path}: an empty video: it opens but holds no frames. Record or export it again.")
    if count == 0:  # the grab above took the first frame: start again
        capture.release()
        capture = cv2.VideoCapture(str(path))
    return capture, (fps if fps and fps > 0 else FALLBACK_FPS), (count if count > 0 else None)


def open_camera(index: int):
    """(capture, its frames per second) for camera number `index`."""
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise PredictError(f"camera {index} cannot be opened: there is no such camera, this program may not use "
                           "it, or another program holds it. Try --camera 1, or give a video file instead.")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, (fps if fps and fps > 0 else FALLBACK_FPS)


def open_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]):
    """An OpenCV VideoWriter for BGR frames of `size` (width, height): MJPG in .avi, MPEG-4 Part 2 otherwise
    (the codecs the bundled FFmpeg writes; it has no H.264 encoder)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise PredictError(f"{path}: OpenCV cannot write a video there; use a .mp4 or .avi name in a folder you "
                           "can write to.")
    return writer


def write_clip(pictures, path: str | os.PathLike, fps: int = 10, seconds: float = 3.0, noise: float = 3.0,
               seed: int = 0) -> Path:
    """A video that shows each picture (PIL) for an equal share of `seconds`, with a camera's noise (Gaussian,
    `noise` grey levels, seeded) on every frame: a stand-in clip for demos, tests and benchmarks."""
    rng = np.random.default_rng(seed)
    frames = int(fps * seconds)
    writer = open_writer(path, fps, pictures[0].size)
    try:
        for i in range(frames):
            picture = np.asarray(pictures[i * len(pictures) // frames].convert("RGB"))[..., ::-1].astype(float)
            writer.write(np.clip(picture + rng.normal(0, noise, picture.shape), 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return Path(path)


class Window:
    """A live OpenCV window; show() returns False once q or Esc is pressed."""

    def __init__(self, title: str = "emo-predict"):
        import cv2

        self.title = title
        cv2.namedWindow(title)

    def show(self, frame_bgr: np.ndarray) -> bool:
        import cv2

        cv2.imshow(self.title, frame_bgr)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self):
        import cv2

        cv2.destroyWindow(self.title)


def open_window() -> Window | None:
    """A window where there is a display and OpenCV can draw one; None otherwise: opencv-python-headless, the
    project's dependency, has no windows at all (opencv-python<5 has them, and the same face cascade)."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    try:
        return Window()
    except cv2.error:
        return None


class FrameList:
    """A capture over frames in memory, for tests and benchmarks: read() and release() as cv2.VideoCapture."""

    def __init__(self, frames):
        self.frames, self.index = list(frames), 0

    def read(self):
        if self.index >= len(self.frames):
            return False, None
        self.index += 1
        return True, self.frames[self.index - 1]

    def release(self):
        pass


def read_frames(capture):
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield frame


# ---------------------------------------------------------------- the frame loop

@dataclass
class VideoRun:
    source: str  # the file, or "camera 0"
    class_names: list[str]
    rows: list[dict] = field(default_factory=list)  # one per face per frame, the CSV's rows
    frames: int = 0
    faces_followed: int = 0  # tracks started
    seconds: float = 0.0  # wall time of the frame loop
    stopped: str = ""  # why it ended before the last frame, if it did

    def columns(self) -> list[str]:
        return (["time", "frame", "face", "x", "y", "w", "h", "detected", "predicted", "confidence"]
                + [f"p_{name}" for name in self.class_names])


def carried_eyes(aligner: Aligner, gray: np.ndarray, tracks, eyes_of: dict) -> list[tuple]:
    """Each track's eye centres in this frame: read by the aligner where the detector found the face this frame
    (or the track is new), else carried with its box from the last reading, as follow_box moves the box. Reading
    landmarks for every face on every frame cost the video path a third of its time with MTCNN's ONet (six
    faces, benchmarks/predict_latency.py)."""
    fresh = [t for t in tracks if t.detected or t.id not in eyes_of]
    for t, pair in zip(fresh, aligner.eye_pairs(gray, [t.box for t in fresh]) if fresh else []):
        eyes_of[t.id] = tuple(np.asarray(e, np.float64) - t.box[:2] for e in pair)
    return [tuple(e + t.box[:2] for e in eyes_of[t.id]) for t in tracks]


def predict_video(capture, classifier: Classifier, detector, *, fps: float = FALLBACK_FPS,
                  every: int = EVERY, smooth: float = SMOOTH_SECONDS, margin: float = FACE_MARGIN,
                  aligner: Aligner | None = None,
                  annotate: str | os.PathLike | None = None, window: Window | None = None,
                  clock: Callable[[], float] | None = None, total: int | None = None, progress: bool = True,
                  source: str = "video") -> VideoRun:
    """Every face in every frame of `capture`, followed and classified; see the module's docstring.

    Time is frame / fps for a file; a camera passes `clock` (time.monotonic) and time is what it measures.
    Frames with boxes, labels and frames per second drawn go to the video file `annotate` (at `fps`) and to
    `window`. q in the window or Ctrl-C stops the loop, and the run keeps what it has."""
    import cv2

    run = VideoRun(source, list(classifier.class_names))
    writer = None
    tracker = IouTracker()
    eyes_of: dict[int, tuple] = {}  # track id -> its eyes, relative to its box (carried_eyes)
    recent = deque(maxlen=30)  # wall-clock stamps of the last frames, for the frames/s drawn on each frame
    # disable=None: a bar in a terminal, none in a log file or a notebook
    bar = tqdm(total=total, unit="frame", desc=source, disable=None if progress else True, file=sys.stderr)
    started = time.perf_counter()
    clock_start = clock() if clock else 0.0
    try:
        for index, frame in enumerate(read_frames(capture)):
            seconds = clock() - clock_start if clock else index / fps
            if frame.ndim == 3 and frame.shape[2] == 4:  # some cameras hand over BGRA
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
            gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            boxes = detector.detect(gray) if index % every == 0 else None
            tracks = tracker.update(boxes, seconds, gray)
            # Crops come from the colour frame (RGB, as a photo is read) so a face is converted exactly as in
            # a photo; the detector's gray may differ from it by one level here and there.
            eyes = carried_eyes(aligner, gray, tracks, eyes_of) if aligner is not None else None
            probs = classifier.predict_proba(cut_faces(gray if frame.ndim == 2 else frame[..., ::-1], gray,
                                                       [t.box for t in tracks], margin, aligner, eyes))
            faces = []
            for track, p in zip(tracks, probs):
                smoothed = track.smooth(seconds, p, smooth)
                faces.append(Face(track.box, smoothed, run.class_names, f"#{track.id}"))
                row = dict(time=round(seconds, 3), frame=index, face=track.id, x=track.box[0], y=track.box[1],
                           w=track.box[2], h=track.box[3], detected=int(track.detected),
                           predicted=faces[-1].predicted, confidence=faces[-1].confidence)
                row.update({f"p_{c}": float(v) for c, v in zip(run.class_names, smoothed)})
                run.rows.append(row)
            run.frames += 1
            recent.append(time.perf_counter())
            bar.update()
            if annotate is not None or window is not None:
                canvas = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
                draw_faces(canvas, faces, bgr=True)
                if len(recent) > 1:
                    rate = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)
                    cv2.putText(canvas, f"{rate:.1f} fps", (8, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                                (255, 255, 255), 2, cv2.LINE_AA)  # bottom left, clear of the labels above faces
                if annotate is not None:
                    if writer is None:  # opened on the first frame, whose size it must have
                        writer = open_writer(annotate, fps, (canvas.shape[1], canvas.shape[0]))
                    writer.write(canvas)
                if window is not None and not window.show(canvas):
                    run.stopped = "q pressed"
                    break
    except KeyboardInterrupt:
        run.stopped = "interrupted (Ctrl-C)"
    finally:
        run.seconds = time.perf_counter() - started
        run.faces_followed = tracker.next_id
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
        if window is not None:
            window.close()
    if not run.stopped and total and run.frames < total - 1:  # the frame count in a header is sometimes 1 off
        run.stopped = (f"read {run.frames} of the {total} frames its header announces: the rest could not be "
                       "decoded (a truncated file?)")
    return run


# ---------------------------------------------------------------- what a run writes

def write_video_csv(run: VideoRun, path: str | os.PathLike) -> Path:
    return write_csv(path, run.columns(), run.rows, exact=("time",))


def plot_emotions(run: VideoRun, path: str | os.PathLike, max_faces: int = 6) -> Path:
    """One panel per face (the `max_faces` seen longest), its smoothed probabilities stacked over time."""
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window or changes the notebook's backend

    by_face: dict[int, list[dict]] = {}
    for row in run.rows:
        by_face.setdefault(row["face"], []).append(row)
    shown = sorted(sorted(by_face, key=lambda face: -len(by_face[face]))[:max_faces])
    fig = Figure(figsize=(9, 1.6 + 1.4 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    colours = [np.array(PALETTE[i % len(PALETTE)]) / 255 for i in range(len(run.class_names))]
    for ax, face in zip(axes, shown):
        rows = by_face[face]
        times = [r["time"] for r in rows]
        ax.stackplot(times, *[[r[f"p_{c}"] for r in rows] for c in run.class_names], labels=run.class_names,
                     colors=colours)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"face #{face}")
    left_out = f" (the {len(shown)} faces seen longest of {len(by_face)})" if len(by_face) > len(shown) else ""
    axes[0].set_title(f"{Path(run.source).name}: emotions over time{left_out}")
    axes[-1].set_xlabel("time (s)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def video_summary(run: VideoRun, every: int, detect_size: int, written: list[str]) -> str:
    rate = run.frames / run.seconds if run.seconds > 0 else 0.0
    faces_per_frame = len(run.rows) / max(run.frames, 1)
    which = "every frame" if every == 1 else f"1 frame in {every}"
    lines = [f"{run.source}: {run.frames} frame(s) in {run.seconds:.1f} s, {rate:.1f} frames/s (faces found on {which}"
             f"{f', at {detect_size} px' if detect_size else ''}); {run.faces_followed} face(s) followed, "
             f"{faces_per_frame:.1f} per frame, {len(run.rows)} row(s)"]
    if run.stopped:
        lines.append(f"stopped early: {run.stopped}")
    if not run.rows:
        written = [f"no face found in {run.frames} frame(s): no CSV or plot written", *written]
    lines.append("; ".join(written))
    return "\n".join(lines)
