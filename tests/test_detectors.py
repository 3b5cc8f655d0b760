"""emo-predict's detectors and crops (issue 30): dlib's HOG detector beside Haar, crops aligned on the eyes, the
user's own boxes, a tracker that holds a lost face out of sight, the video default finding what the photo default
finds, thread counts set and restored, and every bad argument stopped before any image is read. Issue 38: MTCNN
(facenet-pytorch) and its landmarks, --margin with alignment, --boxes rows outside the image."""
import csv
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_rows, run_cli
from emo_utils.predict import detectors, faces, inputs, cli as predict, video
from test_video import drawn_face
from tiny_model import tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(model_path):
    return predict.load_classifier(model_path)


def frame_with_faces(boxes, size=(320, 240), angle=0.0, seed=0) -> np.ndarray:
    """An RGB frame with a drawn face (test_video.drawn_face) of side w at each box (x, y, w, w), turned by
    `angle` degrees, on a grey background with a little noise."""
    rng = np.random.default_rng(seed)
    canvas = np.full((size[1], size[0]), 120.0)
    for x, y, w, _ in boxes:
        face = drawn_face(size=w).astype(np.float64)
        if angle:
            matrix = cv2.getRotationMatrix2D((w / 2, w / 2), angle, 1.0)
            face = cv2.warpAffine(face, matrix, (w, w), borderMode=cv2.BORDER_REPLICATE)
        canvas[y:y + w, x:x + w] = face
    canvas = np.clip(canvas + rng.normal(0, 2, canvas.shape), 0, 255).astype(np.uint8)
    return np.repeat(canvas[..., None], 3, axis=2)


# ---------------------------------------------------------------- detectors and alignment

def test_every_detector_finds_the_drawn_faces_where_they_are():
    boxes = [(30, 40, 110, 110), (180, 60, 120, 120)]
    gray = cv2.cvtColor(frame_with_faces(boxes), cv2.COLOR_RGB2GRAY)
    for name in ("haar", "hog"):
        found = faces.make_detector(name, upsample=1).detect(gray)
        assert len(found) == 2, (name, found)
        assert all(faces.box_iou(b, f) > 0.3 for b, f in zip(boxes, found)), (name, found)
    assert len(faces.make_detector("hog").detect(np.full((240, 320), 120, np.uint8))) == 0


def test_aligned_crop_levels_the_eyes_of_a_turned_face():
    box = (60, 40, 160, 160)
    aligner = faces.make_aligner()
    upright = cv2.cvtColor(frame_with_faces([box]), cv2.COLOR_RGB2GRAY)
    turned = cv2.cvtColor(frame_with_faces([box], angle=20), cv2.COLOR_RGB2GRAY)
    left, right = aligner.eyes(turned, box)
    assert abs(np.degrees(np.arctan2(*(right - left)[::-1]))) > 10  # the landmarks see the turn
    aligned_upright, aligned_turned = aligner.crop(upright, [box])[0], aligner.crop(turned, [box])[0]
    square_turned = faces.crop_faces(turned, [box])[0]
    # aligned, the turned face looks like the upright one; cut square, it does not
    assert np.abs(aligned_turned.astype(int) - aligned_upright).mean() < \
        0.6 * np.abs(square_turned.astype(int) - aligned_upright).mean()
    left, right = aligner.eyes(cv2.resize(aligned_turned, None, fx=4, fy=4), (0, 0, 192, 192))
    assert abs(np.degrees(np.arctan2(*(right - left)[::-1]))) < 5
    for eye, fer in zip((left / 4, right / 4), (detectors.FER_LEFT_EYE, detectors.FER_RIGHT_EYE)):
        assert np.hypot(*(eye - fer)) < 4, (eye, fer)


def test_fer_framing_is_measured_from_faces(monkeypatch):
    # measure_fer_framing on drawn faces whose eyes sit at a known place: x 16 and 32, y 20 of 48
    measured = detectors.measure_fer_framing(np.stack([drawn_face(m / 4) for m in range(4)]))
    assert measured["found"] >= 2
    assert abs(measured["left_eye"][0] - 16) < 3 and abs(measured["right_eye"][0] - 32) < 3
    assert abs(measured["left_eye"][1] - 20) < 3


@pytest.mark.real_data
@pytest.mark.slow
def test_mtcnn_finds_the_fer2013_faces_of_a_collage_and_its_landmarks_align_them():
    from emo_utils.core.data import load_dataset
    from emo_utils.core.readers import DataError
    try:
        images, _ = load_dataset().split("test_private")
    except DataError as e:
        pytest.skip(f"needs the real FER2013 (../shared/data/fer2013.zip or $EMO_DATA): {str(e).splitlines()[0]}")
    chosen = images[np.random.default_rng(0).choice(len(images), 8, replace=False)]
    collage, pasted = faces.make_collage(chosen, face_px=96, seed=0, size=(640, 480))
    gray = np.asarray(collage.convert("L"))
    found = faces.make_detector("mtcnn", min_face=40).detect(gray)
    hits = [max(range(len(found)), key=lambda k: faces.box_iou(box, found[k])) for box in pasted]
    recalled = [i for i, (box, k) in enumerate(zip(pasted, hits)) if faces.box_iou(box, found[k]) >= 0.3]
    assert len(recalled) >= 7 and len(found) <= 8, (pasted, found)  # FER2013 faces, cropped tight: most found
    aligner = faces.make_aligner("mtcnn")
    in_fer = []  # each face's eyes in its own 48 px crop's pixels
    for i in recalled:
        x, y, side, _ = pasted[i]
        in_fer.append([(eye - (x, y)) * 48 / side for eye in aligner.eyes(gray, found[hits[i]])])
    # FER2013's cropper frames faces alike, not identically: the median eyes sit where it puts them
    for eye, fer in zip(np.median(in_fer, axis=0), (detectors.MTCNN_FER_LEFT_EYE, detectors.MTCNN_FER_RIGHT_EYE)):
        assert np.hypot(*(eye - fer)) < 3, (in_fer, fer)
    # aligned, each face comes back most like its own 48x48 crop (correlation), of all the collage's faces
    crops = aligner.crop(gray, found[[hits[i] for i in recalled]]).reshape(len(recalled), -1).astype(float)
    own = chosen[recalled].reshape(len(recalled), -1).astype(float)
    similar = np.corrcoef(crops, own)[:len(recalled), len(recalled):]
    assert (similar.argmax(axis=1) == np.arange(len(recalled))).mean() >= 0.85, similar.round(2)


def test_mtcnn_landmarks_level_the_eyes_of_a_turned_drawn_face():
    box = (60, 40, 160, 160)
    aligner = faces.make_aligner("mtcnn")
    turned = cv2.cvtColor(frame_with_faces([box], angle=20), cv2.COLOR_RGB2GRAY)
    left, right = aligner.eyes(turned, box)
    assert abs(np.degrees(np.arctan2(*(right - left)[::-1])) + 20) < 6  # the landmarks see the turn
    aligned = aligner.crop(turned, [box])[0]
    left, right = aligner.eyes(cv2.resize(aligned, None, fx=4, fy=4), (0, 0, 192, 192))
    assert abs(np.degrees(np.arctan2(*(right - left)[::-1]))) < 5
    for eye, fer in zip((left / 4, right / 4), (detectors.MTCNN_FER_LEFT_EYE, detectors.MTCNN_FER_RIGHT_EYE)):
        assert np.hypot(*(eye - fer)) < 3, (eye, fer)
    assert len(faces.make_detector("mtcnn").detect(np.full((240, 320), 120, np.uint8))) == 0


def test_margin_frames_an_aligned_face_wider_or_tighter():
    box = (60, 40, 160, 160)
    gray = cv2.cvtColor(frame_with_faces([box]), cv2.COLOR_RGB2GRAY)
    aligner = faces.make_aligner()
    default = faces.cut_faces(gray, gray, [box], aligner=aligner)[0]
    np.testing.assert_array_equal(default, aligner.crop(gray, [box])[0])  # the default margin: FER2013's framing
    eye_gaps = {}
    for margin in (faces.FACE_MARGIN, 0.3):
        crop = faces.cut_faces(gray, gray, [box], margin=margin, aligner=aligner)[0]
        left, right = aligner.eyes(cv2.resize(crop, None, fx=4, fy=4), (0, 0, 192, 192))
        eye_gaps[margin] = np.hypot(*(right - left)) / 4
    # 0.3 on each side shows (1 + 0.6) / (1 + 2 * 0.0155) of the face's width: the eyes that much closer
    expected = eye_gaps[faces.FACE_MARGIN] * (1 + 2 * faces.FACE_MARGIN) / 1.6
    assert abs(eye_gaps[0.3] - expected) < 1.5, eye_gaps


# ---------------------------------------------------------------- --boxes

def test_boxes_csv_classifies_the_users_own_boxes(model_path, tmp_path, capsys):
    boxes = [(30, 40, 110, 110), (180, 60, 120, 120)]
    photo, other = tmp_path / "photo.png", tmp_path / "other.png"
    Image.fromarray(frame_with_faces(boxes)).save(photo)
    Image.fromarray(frame_with_faces(boxes[:1])).save(other)
    box_csv = tmp_path / "boxes.csv"
    with open(box_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "x", "y", "w", "h"])
        writer.writerows([("photo.png", *boxes[1]), (str(photo), 5, 5, 30, 30)])
    code, _, err = run_cli(capsys, photo, other, "--model", model_path, "--boxes", box_csv, "--csv",
                           tmp_path / "out.csv")
    assert code == 0, err
    _, rows = read_rows(tmp_path / "out.csv")
    got = sorted(tuple(int(r[k]) for k in "xywh") for r in rows)
    assert got == sorted([(5, 5, 30, 30), boxes[1]]), "the boxes as given, no detection"
    assert "other.png: no box for it in --boxes" in err
    assert "wholly outside" not in err
    # the crop of a given box is the crop the detector's path cuts for that box
    faces_cut, _ = faces.extract_faces(Image.open(photo), boxes=[boxes[1]])
    np.testing.assert_array_equal(faces_cut[0], faces.crop_faces(np.asarray(Image.open(photo).convert("L")),
                                                                  [boxes[1]])[0])


# ---------------------------------------------------------------- tracking: a face that blinks out

class MissingDetector:
    """A detector that returns the true boxes, less the faces `missing` names for a frame (frame -> indices)."""
    kind = "fake"

    def __init__(self, boxes, missing):
        self.boxes, self.missing, self.calls = boxes, missing, 0

    def detect(self, gray):
        frame, self.calls = self.calls, self.calls + 1
        return np.array([b for i, b in enumerate(self.boxes) if i not in self.missing.get(frame, ())]).reshape(-1, 4)


def test_a_face_that_blinks_out_gets_no_rows_and_keeps_its_id(classifier):
    boxes = [(20, 40, 100, 100), (190, 40, 100, 100)]
    with_both, right_only = frame_with_faces(boxes), frame_with_faces(boxes[1:])
    frames = [with_both] * 4 + [right_only] * 3 + [with_both] * 4  # the left face leaves for frames 4-6
    detector = MissingDetector(boxes, {4: {0}, 5: {0}, 6: {0}})
    run = video.predict_video(video.FrameList([f[..., ::-1] for f in frames]), classifier, detector, fps=10,
                              every=1, smooth=0, progress=False)
    faces_per_frame = [[r["face"] for r in run.rows if r["frame"] == i] for i in range(len(frames))]
    assert faces_per_frame == [[0, 1]] * 4 + [[1]] * 3 + [[0, 1]] * 4  # no rows while gone; the same id back
    assert run.faces_followed == 2


def test_ids_survive_a_detector_that_misses_frames_with_every_2(classifier):
    boxes = [(20, 40, 100, 100), (190, 40, 100, 100)]
    frames = [frame_with_faces(boxes)[..., ::-1]] * 16
    detector = MissingDetector(boxes, {1: {0, 1}, 2: {1}, 3: {0}})  # detection calls 1-3: frames 2, 4, 6
    run = video.predict_video(video.FrameList(frames), classifier, detector, fps=10, every=2, smooth=0,
                              progress=False)
    assert run.faces_followed == 2 and {r["face"] for r in run.rows} == {0, 1}
    assert [r["face"] for r in run.rows if r["frame"] in (2, 3)] == []  # both missed: held out of sight
    assert [r["face"] for r in run.rows if r["frame"] == 4] == [0]
    assert [r["face"] for r in run.rows if r["frame"] == 15] == [0, 1]


# ---------------------------------------------------------------- the defaults

@pytest.mark.real_data
@pytest.mark.slow
def test_photo_default_finds_every_face_the_video_default_finds():
    # Video keeps the cheaper HOG for frames/s (video.SETTINGS); a photo, where time matters less, must never
    # miss a face that the video path would have found.
    from emo_utils.core.data import load_dataset
    from emo_utils.core.readers import DataError
    from emo_utils.predict.scenes import make_frames
    try:
        images, _ = load_dataset().split("test_private")
    except DataError as e:
        pytest.skip(f"needs the real FER2013 (../shared/data/fer2013.zip or $EMO_DATA): {str(e).splitlines()[0]}")

    def settings_detector(name):
        s = video.SETTINGS[name]
        return faces.make_detector(s["detector"], scale_factor=s["scale_factor"],
                                   min_face=video.min_face_for(s["detector"], s["min_face"]),
                                   max_side=s["detect_size"] or float("inf"), upsample=s["upsample"])
    photo, film = settings_detector("photo"), settings_detector("video")
    chosen = images[np.random.default_rng(3).choice(len(images), 16, replace=False)]
    frames, _, _, _ = make_frames(chosen, empty=0, max_rotation=10, seed=3)  # as the frames benchmark pastes them
    checked = 0
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        by_photo, by_video = photo.detect(gray), film.detect(gray)
        for box in by_video:
            checked += 1
            assert max((faces.box_iou(box, b) for b in by_photo), default=0) >= 0.3, (by_video, by_photo)
    assert checked >= 8


def test_threads_are_set_for_the_run_and_restored(model_path, tmp_path, capsys, monkeypatch):
    seen = []
    real = predict.load_classifier

    def spy(*args, **kwargs):
        classifier = real(*args, **kwargs)
        logits = classifier.logits_fn
        classifier.logits_fn = lambda x: (seen.append((torch.get_num_threads(), cv2.getNumThreads())), logits(x))[1]
        return classifier
    monkeypatch.setattr(predict, "load_classifier", spy)
    face = tmp_path / "face.png"
    Image.fromarray(drawn_face()).save(face)
    before = torch.get_num_threads(), cv2.getNumThreads()
    monkeypatch.setenv("EMO_THREADS", "2")
    assert run_cli(capsys, face, "--model", model_path, "--csv", tmp_path / "a.csv")[0] == 0
    assert run_cli(capsys, face, "--model", model_path, "--csv", tmp_path / "b.csv", "--threads", 1)[0] == 0
    assert seen == [(2, 2), (1, 1)]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


# ---------------------------------------------------------------- bad arguments: one line, exit 2, nothing read

def test_bad_arguments_stop_before_any_image_is_read(model_path, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    (photos / "happy").mkdir(parents=True)
    Image.fromarray(drawn_face()).save(photos / "happy" / "a.png")
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a checkpoint")
    empty_video = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(empty_video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48)).release()
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    bad_boxes = tmp_path / "bad_boxes.csv"
    bad_boxes.write_text("file,x,y,w,h\na.png,1,2,0,5\n")
    cases = [
        (["--camera", -1], "--camera -1: a camera number is 0 or more"),
        ([photos, "--device", "cuda:99"], "--device cuda:99: no such CUDA device here"),
        ([photos, "--device", "potato"], "--device potato: not a torch device name"),
        ([photos, "--model", not_a_model], f"{not_a_model}: unreadable checkpoint: not a PyTorch checkpoint"),
        ([photos, "--detect-size", -5], "--detect-size -5: must be 0 or more"),
        ([photos, "--min-face", 0], "--min-face 0: must be 1 or more"),
        ([photos, "--threads", 0], "--threads 0: must be 1 or more"),
        ([photos, "--upsample", 5], "--upsample 5: at most 3"),
        ([photos, "--margin", -0.6], "--margin -0.6: must be between -0.25 and 1.0"),
        ([photos, "--margin", 3], "--margin 3.0: must be between"),
        ([photos, "--scale-factor", 1.0], "--scale-factor 1.0: must be over 1"),
        ([photos, "--class-map", "fearful=fear"], "--class-map: no folder named 'fearful' among the inputs"),
        ([photos, "--class-map", "happy=sad,happy=fear"], "--class-map: folder 'happy' is given twice"),
        ([photos, "--csv", a_file / "out.csv"], f"{a_file / 'out.csv'}: cannot be written"),
        ([photos, "--annotate", a_file / "drawn"], "cannot be written"),
        ([empty_video], f"{empty_video}: an empty video"),
        ([photos, "--boxes", tmp_path / "nope.csv"], "--boxes"),
        ([photos, "--boxes", bad_boxes], "line 2: width and height must be 1 or more"),
        ([empty_video, "--boxes", bad_boxes], "--boxes is for images"),
    ]

    def no_image(*args, **kwargs):
        raise AssertionError("an image was read before the arguments were checked")
    monkeypatch.setattr(inputs, "read_image", no_image)
    monkeypatch.setattr(inputs, "extract_faces", no_image)
    monkeypatch.setattr(video, "predict_video", no_image)
    before = sorted(p for p in tmp_path.rglob("*"))
    for argv, message in cases:
        argv = [*argv, "--model", model_path] if "--model" not in argv else argv
        code, out, err = run_cli(capsys, *argv, "--csv", tmp_path / "p.csv") if "--csv" not in argv else \
            run_cli(capsys, *argv)
        lines = [line for line in err.splitlines() if line.startswith("emo-predict:")]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and message in lines[0], (argv, err)
        assert "Traceback" not in err
    assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing written"


def test_a_box_wholly_outside_the_image_is_left_out_with_a_note(model_path, tmp_path, capsys):
    photo, beside = tmp_path / "photo.png", tmp_path / "beside.png"
    Image.fromarray(frame_with_faces([(30, 40, 110, 110)])).save(photo)  # 320x240
    Image.fromarray(frame_with_faces([(30, 40, 110, 110)])).save(beside)
    box_csv = tmp_path / "boxes.csv"
    box_csv.write_text("file,x,y,w,h\nphoto.png,30,40,110,110\nphoto.png,400,10,50,50\nphoto.png,-80,0,60,60\n"
                       "photo.png,300,200,50,50\nbeside.png,0,300,40,40\n")
    code, _, err = run_cli(capsys, photo, beside, "--model", model_path, "--boxes", box_csv, "--csv",
                           tmp_path / "out.csv")
    assert code == 0, err
    _, rows = read_rows(tmp_path / "out.csv")
    got = sorted(tuple(int(r[k]) for k in "xywh") for r in rows)
    assert got == [(30, 40, 110, 110), (300, 200, 50, 50)], "the partly inside box is kept, as given"
    assert "photo.png: box x=400, y=10, w=50, h=50 lies wholly outside the 320x240 image: left out" in err
    assert "photo.png: box x=-80, y=0, w=60, h=60 lies wholly outside" in err
    assert "beside.png: every --boxes row for it lies wholly outside the 320x240 image" in err


def test_mtcnn_without_facenet_pytorch_is_one_line_naming_the_install(model_path, tmp_path, capsys, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.fromarray(frame_with_faces([(30, 40, 110, 110)])).save(photo)
    monkeypatch.setitem(sys.modules, "facenet_pytorch.models.mtcnn", None)  # as if it were not installed
    code, _, err = run_cli(capsys, photo, "--model", model_path, "--detect-faces", "--detector", "mtcnn",
                           "--csv", tmp_path / "out.csv")
    lines = [line for line in err.splitlines() if line.startswith("emo-predict:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "facenet-pytorch is not installed: pip install --no-deps facenet-pytorch" in lines[0]
    assert not (tmp_path / "out.csv").exists()


def test_the_users_boxes_align_on_mtcnns_landmarks_with_detector_mtcnn(model_path, tmp_path, capsys):
    box = (60, 40, 160, 160)
    photo = tmp_path / "photo.png"
    Image.fromarray(frame_with_faces([box], angle=20)).save(photo)
    box_csv = tmp_path / "boxes.csv"
    box_csv.write_text("file,x,y,w,h\nphoto.png,60,40,160,160\n")
    for detector in ("hog", "mtcnn"):
        code, _, err = run_cli(capsys, photo, "--model", model_path, "--boxes", box_csv, "--align", "--detector",
                               detector, "--csv", tmp_path / f"{detector}.csv")
        assert code == 0, err
    probabilities = [np.array([float(v) for k, v in read_rows(tmp_path / f"{d}.csv")[1][0].items()
                               if k.startswith("p_")]) for d in ("hog", "mtcnn")]
    assert not np.allclose(*probabilities)  # each detector's own landmarks cut the face
