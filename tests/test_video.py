"""emo-predict on a video and a camera: faces followed across frames with stable ids, probabilities smoothed over
time, a CSV row per face per frame, an annotated video that reads back, a plot; the camera path through a fake
capture that stops on q and on Ctrl-C; bad video inputs named with their fix."""
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from emo_utils.predict import cli as predict, tracking, video, faces as face_finder
from conftest import read_rows, run_cli
from tiny_model import tiny_model

FPS = 4.0  # frame times 0, 0.25, 0.5, ... are exact in binary, so window edges in the smoothing tests are too
FRAME_SIZE = (208, 112)  # width, height: two 64 px faces side by side


def drawn_face(mouth_open: float = 0.0, size: int = 48) -> np.ndarray:
    """A cartoon face (head, eyes, brows, nose, mouth) that OpenCV's Haar cascade finds, unlike the blobs of
    synthetic.py: the tests need faces the detector sees without FER2013."""
    s = size / 48
    img = np.full((size, size), 170, np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(19 * s), int(23 * s)), 0, 0, 360, 205, -1)
    for ex in (16, 32):
        cv2.ellipse(img, (int(ex * s), int(20 * s)), (int(4.5 * s), int(2.5 * s)), 0, 0, 360, 40, -1)
        cv2.line(img, (int((ex - 5.5) * s), int(14.5 * s)), (int((ex + 5.5) * s), int(14.5 * s)), 60,
                 max(1, int(1.5 * s)))
    cv2.line(img, (c, int(22.5 * s)), (c, int(30 * s)), 150, max(1, int(2 * s)))
    cv2.ellipse(img, (c, int(36 * s)), (int(7 * s), int(2.5 * s + 3 * mouth_open * s)), 0, 0, 360, 70, -1)
    return img


def still_clip(n_frames: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """BGR frames of one still collage of two drawn faces, each with its own sensor-like noise, and the boxes
    where the faces were pasted."""
    collage, pasted = face_finder.make_collage(np.stack([drawn_face(0), drawn_face(1)]), face_px=64, seed=0,
                                           size=FRAME_SIZE)
    base = np.asarray(collage)[..., ::-1].astype(np.float64)
    rng = np.random.default_rng(seed)
    frames = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(n_frames)]
    return frames, pasted


def write_clip(path, frames, fps=FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def read_back(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = list(video.read_frames(capture))
    capture.release()
    return frames


def box_edge_change(annotated: np.ndarray, original: np.ndarray, boxes) -> tuple[float, float]:
    """Mean absolute change along the middle half of each box's left edge, where the box is drawn, and the
    median change over the pixels outside the boxes (labels and frames per second cover a few of them)."""
    drawn, outside = np.zeros(original.shape[:2], bool), np.ones(original.shape[:2], bool)
    for x, y, w, h in boxes:
        drawn[y + h // 4:y + 3 * h // 4, x] = True
        outside[max(0, y - 3):y + h + 3, max(0, x - 3):x + w + 3] = False
    change = np.abs(annotated.astype(int) - original.astype(int)).mean(axis=2)
    return float(change[drawn].mean()), float(np.median(change[outside]))


class FakeCapture(video.FrameList):
    """A capture over frames that records its release; Ctrl-C arrives when frame `interrupt_at` is read."""

    def __init__(self, frames, interrupt_at: int | None = None):
        super().__init__(frames)
        self.interrupt_at, self.released = interrupt_at, False

    def read(self):
        if self.index == self.interrupt_at:
            raise KeyboardInterrupt
        return super().read()

    def release(self):
        self.released = True


class FakeWindow:
    """video.Window's show() and close(); q is 'pressed' on the `quit_at`-th frame shown."""

    def __init__(self, quit_at: int):
        self.quit_at, self.shown, self.closed = quit_at, [], False

    def show(self, frame_bgr) -> bool:
        self.shown.append(frame_bgr.copy())
        return len(self.shown) < self.quit_at

    def close(self):
        self.closed = True


class FakeClock:
    def __init__(self, step: float):
        self.now, self.step = 100.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(model_path):
    return predict.load_classifier(model_path)


# ---------------------------------------------------------------- the tracker

def test_iou_tracker_keeps_ids_starts_new_ones_and_drops_faces_gone_too_long():
    tracker = tracking.IouTracker(keep_seconds=0.5)
    left, right = (10, 10, 50, 50), (100, 10, 50, 50)
    assert [(t.id, t.box) for t in tracker.update([left, right], 0.0)] == [(0, left), (1, right)]
    moved_left, moved_right = (14, 12, 50, 50), (96, 10, 52, 52)
    tracks = tracker.update([moved_right, moved_left], 0.1)  # order of detections does not decide the ids
    assert [(t.id, t.box, t.detected) for t in tracks] == [(0, moved_left, True), (1, moved_right, True)]
    tracks = tracker.update(None, 0.2)  # no detection on this frame: boxes held
    assert [(t.id, t.box, t.detected) for t in tracks] == [(0, moved_left, False), (1, moved_right, False)]
    tracks = tracker.update([moved_left], 0.5)  # right face missed: held out of sight, not handed out
    assert [(t.id, t.detected) for t in tracks] == [(0, True)]
    assert [t.id for t in tracker.tracks] == [0, 1] and tracker.tracks[1].lost
    assert [t.id for t in tracker.update(None, 0.55)] == [0]  # nor on the frames between detections
    tracks = tracker.update([moved_left, moved_right], 0.6)  # back within keep_seconds: the same id
    assert [(t.id, t.detected) for t in tracks] == [(0, True), (1, True)]
    tracks = tracker.update([moved_left], 0.7)
    tracks = tracker.update([moved_left, (200, 80, 40, 40)], 1.2)  # right face gone 0.6 s: dropped; new face: id 2
    assert [(t.id, t.detected) for t in tracks] == [(0, True), (2, True)]
    assert [t.id for t in tracker.tracks] == [0, 2] and tracker.next_id == 3


def test_iou_tracker_gives_a_detection_to_the_track_it_overlaps_most():
    tracker = tracking.IouTracker()
    tracker.update([(0, 0, 40, 40), (30, 0, 40, 40)], 0.0)
    tracks = tracker.update([(28, 0, 40, 40)], 0.1)  # overlaps both tracks; track 1 by far the most
    assert [(t.id, t.detected) for t in tracks] == [(1, True)]  # track 0 is lost: held, not handed out
    assert tracking.iou_matrix([(0, 0, 10, 10)], [(0, 0, 10, 10), (5, 0, 10, 10), (20, 20, 5, 5)]).tolist() == \
        [[1.0, pytest.approx(50 / 150), 0.0]]


def test_track_smoothing_is_the_mean_over_the_last_seconds():
    track = tracking.Track(0, (0, 0, 10, 10), 0.0)
    probs = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.array([1.0, 0.0])]
    smoothed = [track.smooth(i * 0.25, p, window=0.5) for i, p in enumerate(probs)]
    # a 0.5 s window at 4 frames/s holds this frame and the one before
    np.testing.assert_allclose(smoothed, [[1, 0], [0.5, 0.5], [0.25, 0.75], [0.75, 0.25]])
    raw = tracking.Track(1, (0, 0, 10, 10), 0.0)
    np.testing.assert_allclose([raw.smooth(i * 0.25, p, window=0) for i, p in enumerate(probs)], probs)


# ---------------------------------------------------------------- a video file, end to end

@pytest.mark.slow
def test_video_end_to_end_csv_rows_stable_ids_annotated_video_and_plot(model_path, tmp_path, capsys):
    frames, pasted = still_clip(12)
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames)
    csv_path, annotated = tmp_path / "out" / "clip.csv", tmp_path / "out" / "annotated.mp4"
    # HOG: drawn faces are faces to it, not to MTCNN (the video default), which wants real ones
    code, _, err = run_cli(capsys, clip, "--model", model_path, "--csv", csv_path, "--annotate", annotated,
                           "--every", 2, "--smooth", 0.5, "--detector", "hog")
    assert code == 0, err
    columns, rows = read_rows(csv_path)
    assert columns == (["time", "frame", "face", "x", "y", "w", "h", "detected", "predicted", "confidence"]
                       + [f"p_{c}" for c in predict.load_classifier(model_path).class_names])
    assert sorted({int(r["frame"]) for r in rows}) == list(range(12))
    for frame in range(12):
        in_frame = [r for r in rows if int(r["frame"]) == frame]
        # one id per face for the whole still clip, numbered left to right
        assert [r["face"] for r in in_frame] == ["0", "1"], in_frame
        assert int(in_frame[0]["x"]) < int(in_frame[1]["x"])
        assert all(float(r["time"]) == pytest.approx(frame / FPS) for r in in_frame)
        assert all(r["detected"] == ("1" if frame % 2 == 0 else "0") for r in in_frame)  # --every 2
        for row, box in zip(in_frame, pasted):
            assert face_finder.box_iou(tuple(int(row[k]) for k in "xywh"), box) > 0.5
            probs = np.array([float(row[c]) for c in columns[10:]])
            assert probs.sum() == pytest.approx(1, abs=1e-5) and float(row["confidence"]) == probs.max()

    written = read_back(annotated)
    assert len(written) == 12 and written[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    boxes = [tuple(int(r[k]) for k in "xywh") for r in rows if r["frame"] == "5"]
    on_boxes, elsewhere = box_edge_change(written[5], read_back(clip)[5], boxes)
    # boxes drawn where the faces are; the rest of the frame as it was, but for the codec's noise
    assert on_boxes > 20 and elsewhere < 8, (on_boxes, elsewhere)
    with Image.open(csv_path.with_suffix(".png")) as plot:
        assert plot.size[0] > 400 and plot.size[1] > 200
    summary = err[err.index("clip.mp4: 12 frame(s)"):]
    assert re.search(r"\d+\.\d frames/s", summary) and "2 face(s) followed" in summary
    assert f"predictions in {csv_path}" in summary and f"annotated video in {annotated}" in summary

    before = {p: p.read_bytes() for p in (csv_path, csv_path.with_suffix(".png"), annotated)}
    code, _, err = run_cli(capsys, clip, "--model", model_path, "--csv", csv_path, "--annotate", annotated)
    assert code == 2 and "already exist" in err and "--force" in err and str(csv_path) in err
    assert all(p.read_bytes() == content for p, content in before.items())
    code, _, err = run_cli(capsys, clip, "--model", model_path, "--csv", csv_path, "--annotate", annotated,
                           "--force", "--every", 1)
    assert code == 0, err
    assert {r["detected"] for r in read_rows(csv_path)[1]} == {"1"}


def test_smoothed_probabilities_are_the_mean_of_the_raw_ones_over_the_window(classifier):
    frames, _ = still_clip(6, seed=3)
    detector = face_finder.FaceDetector()
    raw = video.predict_video(FakeCapture(frames), classifier, detector, fps=FPS, every=1, smooth=0, progress=False)
    smooth = video.predict_video(FakeCapture(frames), classifier, detector, fps=FPS, every=1, smooth=0.5,
                                 progress=False)
    columns = [f"p_{c}" for c in classifier.class_names]

    def probs(run, face):
        return np.array([[r[c] for c in columns] for r in run.rows if r["face"] == face])

    for face in (0, 1):
        p_raw, p_smooth = probs(raw, face), probs(smooth, face)
        assert len(p_raw) == 6 and not np.allclose(p_raw[1:], p_raw[:-1])  # the noise moves them: a real test
        np.testing.assert_allclose(p_smooth[0], p_raw[0])
        np.testing.assert_allclose(p_smooth[1:], (p_raw[1:] + p_raw[:-1]) / 2, atol=1e-12)


# ---------------------------------------------------------------- the camera path, through a fake capture

def test_camera_loop_stops_on_q_and_on_ctrl_c_and_keeps_what_it_has(classifier, tmp_path):
    frames, _ = still_clip(10)
    detector = face_finder.FaceDetector()
    capture, window = FakeCapture(frames), FakeWindow(quit_at=4)
    run = video.predict_video(capture, classifier, detector, window=window, clock=FakeClock(0.05),
                              annotate=tmp_path / "q.avi", progress=False, source="camera 0")
    assert run.stopped == "q pressed" and run.frames == 4 and len(window.shown) == 4
    assert capture.released and window.closed
    assert sorted({r["frame"] for r in run.rows}) == [0, 1, 2, 3]
    assert [r["time"] for r in run.rows if r["face"] == 0] == [0.05, 0.1, 0.15, 0.2]  # times from the clock
    assert len(read_back(tmp_path / "q.avi")) == 4  # MJPG in .avi: the other codec the bundled FFmpeg writes
    boxes = [(r["x"], r["y"], r["w"], r["h"]) for r in run.rows if r["frame"] == 3]
    on_boxes, elsewhere = box_edge_change(window.shown[-1], frames[3], boxes)
    assert on_boxes > 20 and elsewhere == 0, (on_boxes, elsewhere)
    assert all(np.array_equal(a, b) for a, b in zip(frames, still_clip(10)[0]))  # drawn on copies, not the frames

    capture = FakeCapture(frames, interrupt_at=6)
    run = video.predict_video(capture, classifier, detector, clock=FakeClock(0.05), progress=False)
    assert run.stopped == "interrupted (Ctrl-C)" and run.frames == 6 and capture.released
    assert sorted({r["frame"] for r in run.rows}) == list(range(6))


@pytest.mark.slow
def test_camera_command_line_writes_what_it_has_after_ctrl_c(model_path, tmp_path, capsys, monkeypatch):
    frames, _ = still_clip(8)
    monkeypatch.setattr(video, "open_camera", lambda index: (FakeCapture(frames, interrupt_at=5), 30.0))
    monkeypatch.setattr(video, "open_window", lambda: None)  # as on a machine with no display
    monkeypatch.chdir(tmp_path)
    # --upsample 1: the drawn faces are 64 px, under the webcam default's 80 px (HOG without upsampling)
    code, _, err = run_cli(capsys, "--camera", 0, "--model", model_path, "--annotate", tmp_path, "--upsample", 1)
    assert code == 0, err
    assert "note: no window" in err and f"annotated video goes to {tmp_path / 'camera0_annotated.mp4'}" in err
    assert "stopped early: interrupted (Ctrl-C)" in err
    _, rows = read_rows(tmp_path / "camera0_emotions.csv")
    assert sorted({int(r["frame"]) for r in rows}) == list(range(5))
    times = [float(r["time"]) for r in rows if r["face"] == "0"]
    assert times == sorted(times) and times[-1] > times[0]  # wall-clock time, not frame / fps
    assert (tmp_path / "camera0_emotions.png").stat().st_size > 0
    assert len(read_back(tmp_path / "camera0_annotated.mp4")) == 5


# ---------------------------------------------------------------- bad video inputs

def test_bad_video_inputs_are_named_with_the_fix(model_path, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    code, _, err = run_cli(capsys, broken, "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 2 and f"{broken}: OpenCV cannot open it as a video" in err and "ffmpeg -i" in err
    assert not (tmp_path / "p.csv").exists()

    frames, _ = still_clip(2)
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames)
    face = tmp_path / "face.png"
    Image.fromarray(drawn_face()).save(face)
    for argv, message in [([clip, face], "a video is read alone, one per run"),
                          ([clip, clip], "a video is read alone"),
                          (["--camera", 0, face], "--camera reads from a camera and takes no inputs"),
                          ([], "nothing to classify: give images, folders, zips or a video, or --camera N")]:
        code, _, err = run_cli(capsys, *argv, "--model", model_path, "--csv", tmp_path / "p.csv")
        assert code == 2 and message in err, (argv, err)

    class Closed:
        def __init__(self, index):
            pass

        def isOpened(self):
            return False

    monkeypatch.setattr(cv2, "VideoCapture", Closed)
    code, _, err = run_cli(capsys, "--camera", 3, "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 2 and "camera 3 cannot be opened" in err and "Try --camera 1" in err
    monkeypatch.undo()

    with pytest.raises(SystemExit):
        predict.build_parser().parse_args([str(clip), "--every", "0"])
    capsys.readouterr()

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(drawn_face()).save(folder / "face.png")
    (folder / "holiday.mp4").write_bytes(clip.read_bytes())
    code, _, err = run_cli(capsys, folder, "--model", model_path, "--csv", tmp_path / "mixed.csv")
    assert code == 0 and re.search(r"skipped \S*holiday.mp4: a video, not an image: run emo-predict on it alone", err)


def test_a_video_without_faces_writes_no_csv_and_says_so(model_path, tmp_path, capsys):
    blank = [np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 128, np.uint8) for _ in range(3)]
    clip = tmp_path / "blank.mp4"
    write_clip(clip, blank)
    code, _, err = run_cli(capsys, clip, "--model", model_path, "--csv", tmp_path / "blank.csv")
    assert code == 1 and "no face found in 3 frame(s): no CSV or plot written" in err
    assert not (tmp_path / "blank.csv").exists() and not (tmp_path / "blank.png").exists()


def test_write_clip_shows_each_picture_for_its_share_of_the_clip(tmp_path):
    dark, bright = Image.new("RGB", (64, 48), (20, 20, 20)), Image.new("RGB", (64, 48), (230, 230, 230))
    path = video.write_clip([dark, bright], tmp_path / "clip.mp4", fps=10, seconds=1.2, noise=2.0)
    frames = read_back(path)
    assert len(frames) == 12 and frames[0].shape == (48, 64, 3)
    means = [float(f.mean()) for f in frames]
    assert all(m < 60 for m in means[:6]) and all(m > 190 for m in means[6:])


def test_between_detections_a_box_follows_its_face_as_the_camera_pans():
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (480, 900)).astype(np.uint8), (0, 0), 3)  # texture to match on
    scene = cv2.normalize(scene, None, 0, 255, cv2.NORM_MINMAX)
    face = (200, 150, 100, 100)
    tracker = tracking.IouTracker()
    for frame, pan in enumerate(range(0, 60, 4)):  # the camera moves 4 px right a frame: the scene 4 px left
        gray = np.ascontiguousarray(scene[:, pan:pan + 640])
        tracks = tracker.update([face] if frame == 0 else None, frame / 30, gray)
    assert abs(tracks[0].box[0] - (face[0] - pan)) <= 2 and abs(tracks[0].box[1] - face[1]) <= 2
    held = tracking.IouTracker()
    held.update([face], 0.0, np.ascontiguousarray(scene[:, :640]))
    flat = np.full((480, 640), 128, np.uint8)  # nothing to match: the box is held where it was
    assert held.update(None, 1 / 30, flat)[0].box == face
    assert tracking.IouTracker().update([face], 0.0)[0].box == face  # no frame given: nothing to follow from


def test_eyes_are_read_where_the_face_was_detected_and_carried_with_its_box_between(monkeypatch):
    from emo_utils.predict.detectors import Aligner

    aligner = Aligner("dlib")
    frame = cv2.resize(drawn_face(0), (120, 120))
    gray = np.full((240, 320), 170, np.uint8)
    gray[60:180, 80:200] = frame
    reads = []
    eye_pairs = aligner.eye_pairs
    monkeypatch.setattr(aligner, "eye_pairs", lambda g, boxes: reads.append(len(boxes)) or eye_pairs(g, boxes))
    tracker, eyes_of = tracking.IouTracker(), {}
    tracks = tracker.update([(80, 60, 120, 120)], 0.0)
    read = video.carried_eyes(aligner, gray, tracks, eyes_of)
    assert reads == [1] and np.allclose(read[0], eye_pairs(gray, [(80, 60, 120, 120)])[0])
    tracks[0].box, tracks[0].detected = (84, 61, 120, 120), False  # followed 4 px right, 1 down; no detection
    carried = video.carried_eyes(aligner, gray, tracks, eyes_of)
    assert reads == [1]  # no new reading
    assert all(np.allclose(c, r + (4, 1)) for c, r in zip(carried[0], read[0]))
    tracks[0].detected = True  # found again by the detector: read afresh
    video.carried_eyes(aligner, gray, tracks, eyes_of)
    assert reads == [1, 1]


def test_a_video_runs_its_model_through_onnxruntime_with_torchs_answers(model_path):
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    on_torch = predict.load_classifier(model_path, tta="center", device="cpu")
    moving = predict.load_classifier(model_path, tta="center", device="cpu", moving=True)
    assert (on_torch.backend, moving.backend) == ("torch", "onnxruntime")
    np.testing.assert_allclose(moving.predict_proba(faces), on_torch.predict_proba(faces), atol=1e-4)
    assert predict.load_classifier(model_path, tta="flip", device="cpu", moving=True).views == "flip"


def test_a_video_or_a_camera_without_model_takes_the_video_model_and_a_photo_the_benchmarks(tmp_path):
    from emo_utils.predict import choice

    clip = tmp_path / "clip.mp4"
    for argv, expected in (([str(clip)], video.VIDEO_MODEL), (["--camera", "0"], video.VIDEO_MODEL),
                           (["face.png"], choice.default_model(choice.read_choice())),
                           ([str(clip), "--model", "mini_xception"], "mini_xception")):
        args = predict.build_parser().parse_args(argv)
        predict.resolve_settings(args)
        assert args.model == expected, argv
