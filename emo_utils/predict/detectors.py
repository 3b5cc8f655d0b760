"""Face detectors beside faces.py's Haar cascade, and crops aligned on the eyes as FER2013 frames a face.

    hog  dlib's frontal face detector (HOG features and a linear SVM; Dalal & Triggs 2005, King 2015)
    cnn  dlib's max-margin object detector CNN (mmod_human_face_detector.dat, from face-recognition-models)
    mtcnn  the multi-task cascaded CNN (Zhang et al. 2016) of facenet-pytorch, whose three nets ship in its wheel

Alignment: 5 landmarks give the eyes, from dlib's 5-point model (shape_predictor_5_face_landmarks.dat: the
corners of both eyes) or from MTCNN's last net (ONet: the eye centres, the nose and the mouth corners); the
face is rotated so the eyes are level, scaled and cropped so they land where FER2013's faces have them
(FER_LEFT_EYE, FER_RIGHT_EYE, measured by measure_fer_framing). Every model file ships with the
face-recognition-models or facenet-pytorch wheel; nothing is downloaded. dlib, cv2 and torch are imported where
they are used.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.readers import IMAGE_SIZE, to_gray_48

DETECTORS = ("haar", "hog", "cnn", "mtcnn")
# Where the eye centres sit in a 48x48 FER2013 face, (x, y) in pixels, image left and image right: the medians
# over the 1,375 of 2,000 seeded training faces (seed 0) on which dlib's HOG detector finds one face once the
# 48 px face is upsampled 4x, with the 5-point landmarks read inside that box (measure_fer_framing; `python -m
# emo_utils.predict.detectors` measures it again, for both, on the FER2013 that data.load_dataset finds, in about
# 3 minutes).
FER_LEFT_EYE = (15.0, 19.1)
FER_RIGHT_EYE = (32.6, 18.8)
# The same for MTCNN's eye landmarks (the eye centres, read by its ONet in its own boxes), on 1,703 of the same
# 2,000 faces; they sit a little higher and further apart than the midpoints of dlib's eye corners.
MTCNN_FER_LEFT_EYE = (15.0, 18.4)
MTCNN_FER_RIGHT_EYE = (33.3, 18.1)


class DetectorError(ValueError):
    """A detector's model file or library is missing; the message names the package to install."""


def model_file(name: str) -> Path:
    """A model file of the face-recognition-models package, found without importing it (its __init__ needs
    pkg_resources, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations)), "models", name) if spec else None
    if path is None or not path.is_file():
        raise DetectorError(f"dlib's model file {name} is missing: pip install face-recognition-models (it ships "
                            "the file; nothing is downloaded at run time)")
    return path


def import_dlib():
    try:
        import dlib
    except ImportError:
        raise DetectorError("dlib is not installed: pip install dlib-bin (a prebuilt wheel, no compiler), or use "
                            "--detector haar") from None
    return dlib


class DlibDetector:
    """dlib's HOG (`kind="hog"`) or CNN (`kind="cnn"`) face detector, with faces.FaceDetector's detect().

    `upsample` doubles the image that many times first: HOG's window is 80 px, so upsample 1 finds faces from
    about 40 px, at four times the work. `max_side` scales a larger frame down before detection (boxes are
    given in the frame's pixels)."""

    def __init__(self, kind: str = "hog", upsample: int = 0, min_face: int = 0, max_side: float = float("inf")):
        dlib = import_dlib()
        self.kind, self.upsample, self.min_face, self.max_side = kind, upsample, min_face, max_side
        if kind == "hog":
            self.detector = dlib.get_frontal_face_detector()
        elif kind == "cnn":
            self.detector = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
        else:
            raise ValueError(f"unknown dlib detector {kind!r}: hog or cnn")

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) as x, y, w, h in pixels of `gray` (uint8, H x W), left to right."""
        import cv2

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        scale = min(1.0, self.max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        found = self.detector(small, self.upsample)
        rects = [d.rect for d in found] if self.kind == "cnn" else list(found)
        boxes = np.array([(r.left(), r.top(), r.width(), r.height()) for r in rects], np.float64).reshape(-1, 4)
        boxes = np.round(boxes / scale).astype(np.int64)
        boxes = boxes[np.minimum(boxes[:, 2], boxes[:, 3]) >= self.min_face]
        return boxes[np.argsort(boxes[:, 0], kind="stable")]


def import_mtcnn():
    """facenet-pytorch's MTCNN class. The package pins torch<2.3 and numpy<2, which are stale: `make setup`
    installs it without its dependencies (it needs only torch, torchvision, numpy and Pillow, which we have)."""
    try:
        from facenet_pytorch.models.mtcnn import MTCNN
    except ImportError:
        raise DetectorError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch (its three "
                            "nets ship in the wheel; --no-deps because it pins an old torch), or use --detector "
                            "hog") from None
    return MTCNN


# MTCNN's first net (PNet) sees 12 px windows; the image pyramid starts at 12 / min_face, so each halving of the
# smallest face quadruples the first stage's work. The benchmark's and emo-predict's smallest faces are 40 px.
MTCNN_MIN_FACE = 40
# The three nets' face scores emo-predict uses. facenet-pytorch's defaults (0.6, 0.7, 0.7) found 0.854 of 233
# faces in 96 frames of the frames benchmark (every 4th); these found 0.927, with 8 false detections on those
# frames against 6, and none on 34 face-free frames (both: benchmarks/pipeline_frames.py has the full table).
MTCNN_THRESHOLDS = (0.4, 0.4, 0.3)


class MtcnnDetector:
    """facenet-pytorch's MTCNN (PNet, RNet, ONet: Zhang et al. 2016) with faces.FaceDetector's detect(), on CPU.

    `thresholds` are the three nets' face scores (MTCNN_THRESHOLDS); `max_side` scales a larger frame
    down before detection."""
    kind = "mtcnn"

    def __init__(self, min_face: int = MTCNN_MIN_FACE, max_side: float = float("inf"),
                 thresholds=MTCNN_THRESHOLDS):
        self.net = import_mtcnn()(keep_all=True, min_face_size=min_face, thresholds=list(thresholds),
                                  select_largest=False, device="cpu")
        self.min_face, self.max_side = min_face, max_side

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) as x, y, w, h in pixels of `gray` (uint8, H x W), left to right."""
        import cv2
        import torch

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        scale = min(1.0, self.max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        with torch.inference_mode():
            corners, _ = self.net.detect(np.repeat(small[..., None], 3, axis=2))  # its nets take RGB
        corners = np.zeros((0, 4)) if corners is None else np.asarray(corners, np.float64).reshape(-1, 4)
        boxes = np.column_stack([corners[:, :2], corners[:, 2:] - corners[:, :2]]) / scale
        boxes = np.round(boxes).astype(np.int64)
        boxes = boxes[np.minimum(boxes[:, 2], boxes[:, 3]) >= 1]
        return boxes[np.argsort(boxes[:, 0], kind="stable")]


class OnetLandmarks:
    """MTCNN's last net (ONet) on a face box: its 5 landmarks (eye centres, nose, mouth corners), as MTCNN reads
    them at detection, for a box from any detector (or the user's)."""

    def __init__(self):
        self.onet = import_mtcnn()(device="cpu").onet

    def __call__(self, gray: np.ndarray, boxes) -> np.ndarray:
        """(n, 5, 2) landmarks, (x, y) in pixels of `gray`; each box is made square about its centre and cut
        at 48x48 as MTCNN's third stage cuts it (area resampling, pixels scaled to -1..1)."""
        import cv2
        import torch

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        patches, squares = [], []
        for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
            side = max(w, h)
            left, top = x + w / 2 - side / 2, y + h / 2 - side / 2
            shift = np.float64([[1, 0, -left], [0, 1, -top]])  # the square at its own resolution, black outside
            square = cv2.warpAffine(gray, shift, (max(int(round(side)), 1),) * 2, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT)
            patches.append(cv2.resize(square, (48, 48), interpolation=cv2.INTER_AREA))
            squares.append((left, top, side))
        if not patches:
            return np.zeros((0, 5, 2))
        batch = (torch.from_numpy(np.stack(patches)).float()[:, None].repeat(1, 3, 1, 1) - 127.5) * 0.0078125
        with torch.inference_mode():
            points = self.onet(batch)[1].numpy()  # (n, 10): 5 x then 5 y, as shares of the box's side
        squares = np.array(squares)
        xs = squares[:, :1] + points[:, :5] * squares[:, 2:]
        ys = squares[:, 1:2] + points[:, 5:] * squares[:, 2:]
        return np.stack([xs, ys], axis=-1)


class Aligner:
    """Faces cut so the eyes are level and where FER2013 has them, from 5 landmarks: dlib's 5-point model
    (`landmarks="dlib"`) or MTCNN's ONet (`"mtcnn"`)."""

    def __init__(self, landmarks: str = "dlib", left_eye=None, right_eye=None):
        self.landmarks = landmarks
        fer_eyes = (FER_LEFT_EYE, FER_RIGHT_EYE) if landmarks == "dlib" else (MTCNN_FER_LEFT_EYE, MTCNN_FER_RIGHT_EYE)
        left_eye, right_eye = left_eye or fer_eyes[0], right_eye or fer_eyes[1]
        if landmarks == "dlib":
            self.dlib = import_dlib()
            self.predictor = self.dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        elif landmarks == "mtcnn":
            self.onet = OnetLandmarks()
        else:
            raise ValueError(f"unknown landmarks {landmarks!r}: dlib or mtcnn")
        self.left_eye, self.right_eye = np.array(left_eye, np.float64), np.array(right_eye, np.float64)

    def eyes(self, gray: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye centre, image-right eye centre), (x, y) in pixels of `gray`, inside a face box."""
        return self.eye_pairs(gray, [box])[0]

    def eye_pairs(self, gray: np.ndarray, boxes) -> list[tuple[np.ndarray, np.ndarray]]:
        """eyes() for every box, the MTCNN landmarks in one batch."""
        if self.landmarks == "mtcnn":
            points = self.onet(gray, boxes)
            return [tuple(sorted(p[:2], key=lambda e: e[0])) for p in points]  # 0, 1: the eye centres
        pairs = []
        for box in boxes:
            x, y, w, h = (int(v) for v in box)
            shape = self.predictor(np.ascontiguousarray(gray, dtype=np.uint8),
                                   self.dlib.rectangle(x, y, x + w, y + h))
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
            # The 5-point model: 0-1 the corners of one eye, 2-3 of the other, 4 the base of the nose.
            pairs.append(tuple(sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])))
        return pairs

    def matrices(self, gray: np.ndarray, boxes, zoom_out: float = 1.0, eyes=None) -> list[tuple[np.ndarray, int]]:
        """Per box, (2x3 affine from `gray` to the face warped at `zoom` times 48 px, zoom): the eyes level, as
        far apart as in FER2013 and where FER2013 has them; `zoom_out` > 1 shows more around the face (the same
        eye midpoint, the face smaller by that factor), < 1 less. zoom is about the face's own resolution, so
        a large face is warped without aliasing and shrunk to 48 px after (crop). `eyes`: each box's eye pair
        when already known (the video path carries them between detections), else read by eye_pairs."""
        import cv2

        found = []
        fer_gap = float(self.right_eye[0] - self.left_eye[0])
        for left, right in (self.eye_pairs(gray, boxes) if eyes is None else eyes):
            eye_gap = max(float(np.hypot(*(right - left))), 1.0)
            zoom = max(1, round(eye_gap / fer_gap / zoom_out))  # output px per FER px
            scale = fer_gap * zoom / eye_gap / zoom_out
            angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
            centre = (left + right) / 2
            matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
            fer_centre = IMAGE_SIZE / 2 + ((self.left_eye + self.right_eye) / 2 - IMAGE_SIZE / 2) / zoom_out
            matrix[:, 2] += fer_centre * zoom - centre  # eye midpoint to its FER place
            found.append((matrix, zoom))
        return found

    def crop(self, gray: np.ndarray, boxes, zoom_out: float = 1.0, eyes=None) -> np.ndarray:
        """uint8 faces (n, 48, 48): each warped by matrices(), then shrunk to 48 px as the training data was
        (data.to_gray_48)."""
        import cv2

        faces = []
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        for matrix, zoom in self.matrices(gray, boxes, zoom_out, eyes):
            side = IMAGE_SIZE * zoom
            warped = cv2.warpAffine(gray, matrix, (side, side), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            faces.append(np.asarray(to_gray_48(Image.fromarray(warped)), dtype=np.uint8))
        return np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def measure_fer_framing(faces_u8: np.ndarray, upscale: int = 4, landmarks: str = "dlib") -> dict:
    """Where the eye centres sit in 48x48 faces: each face upsampled `upscale` times, found by dlib's HOG
    detector (or MTCNN, for its landmarks), the 5 landmarks read inside that box; the median over the faces
    found, in 48 px coordinates."""
    import cv2

    detector = DlibDetector("hog") if landmarks == "dlib" else MtcnnDetector()
    aligner = Aligner(landmarks)
    lefts, rights = [], []
    for face in faces_u8:
        big = cv2.resize(np.asarray(face, np.uint8), None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        boxes = detector.detect(big)
        if len(boxes) == 1:
            left, right = aligner.eyes(big, boxes[0])
            lefts.append(left / upscale)
            rights.append(right / upscale)
    lefts, rights = np.array(lefts).reshape(-1, 2), np.array(rights).reshape(-1, 2)
    left_eye, right_eye = (tuple(float(v) for v in np.median(eyes, axis=0).round(1)) for eyes in (lefts, rights))
    return dict(landmarks=landmarks, faces=len(faces_u8), found=len(lefts), left_eye=left_eye, right_eye=right_eye)


if __name__ == "__main__":  # python -m emo_utils.predict.detectors: measure FER_LEFT_EYE and FER_RIGHT_EYE again
    from ..core.data import load_dataset

    images, _ = load_dataset().split("train")
    chosen = np.random.default_rng(0).choice(len(images), 2000, replace=False)
    for landmarks in ("dlib", "mtcnn"):
        print(measure_fer_framing(images[chosen], landmarks=landmarks))
