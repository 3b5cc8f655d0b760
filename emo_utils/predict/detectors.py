"""Face detectors beside faces.py's Haar cascade, and crops aligned on the eyes as FER2013 frames a face.

    hog  dlib's frontal face detector (HOG features and a linear SVM; Dalal & Triggs 2005, King 2015)
    cnn  dlib's max-margin object detector CNN (mmod_human_face_detector.dat, from face-recognition-models)

Alignment: dlib's 5-point landmark model (shape_predictor_5_face_landmarks.dat) finds the corners of both eyes;
the face is rotated so the eyes are level, scaled and cropped so they land where FER2013's faces have them
(FER_LEFT_EYE, FER_RIGHT_EYE, measured by measure_fer_framing). Every model file ships with the
face-recognition-models wheel; nothing is downloaded. dlib and cv2 are imported where they are used.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.readers import IMAGE_SIZE, to_gray_48

DETECTORS = ("haar", "hog", "cnn")
# Where the eye centres sit in a 48x48 FER2013 face, (x, y) in pixels, image left and image right: the medians
# over the 1,375 of 2,000 seeded training faces (seed 0) on which dlib's HOG detector finds one face once the
# 48 px face is upsampled 4x, with the 5-point landmarks read inside that box (measure_fer_framing; `python -m
# emo_utils.predict.detectors` measures it again on the FER2013 that data.load_dataset finds, in about 20 s).
FER_LEFT_EYE = (15.0, 19.1)
FER_RIGHT_EYE = (32.6, 18.8)


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


class Aligner:
    """Faces cut so the eyes are level and where FER2013 has them, from dlib's 5-point landmarks."""

    def __init__(self, left_eye=FER_LEFT_EYE, right_eye=FER_RIGHT_EYE):
        dlib = import_dlib()
        self.dlib = dlib
        self.predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self.left_eye, self.right_eye = np.array(left_eye, np.float64), np.array(right_eye, np.float64)

    def eyes(self, gray: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye centre, image-right eye centre), (x, y) in pixels of `gray`, inside a face box."""
        x, y, w, h = (int(v) for v in box)
        shape = self.predictor(np.ascontiguousarray(gray, dtype=np.uint8), self.dlib.rectangle(x, y, x + w, y + h))
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
        # The 5-point model: 0-1 the corners of one eye, 2-3 of the other, 4 the base of the nose.
        centres = sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])
        return centres[0], centres[1]

    def crop(self, gray: np.ndarray, boxes) -> np.ndarray:
        """uint8 faces (n, 48, 48): each rotated so its eyes are level, scaled so they are as far apart as in
        FER2013 and placed where FER2013 has them. The warp is made at about the face's own resolution, then
        shrunk to 48 px as the training data was (data.to_gray_48), so a large face is not aliased."""
        import cv2

        faces = []
        for box in boxes:
            left, right = self.eyes(gray, box)
            eye_gap = max(float(np.hypot(*(right - left))), 1.0)
            zoom = max(1, round(eye_gap / float(self.right_eye[0] - self.left_eye[0])))  # output px per FER px
            scale = (self.right_eye[0] - self.left_eye[0]) * zoom / eye_gap
            angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
            centre = (left + right) / 2
            matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
            matrix[:, 2] += (self.left_eye + self.right_eye) / 2 * zoom - centre  # eye midpoint to its FER place
            side = IMAGE_SIZE * zoom
            warped = cv2.warpAffine(np.ascontiguousarray(gray, dtype=np.uint8), matrix, (side, side),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            faces.append(np.asarray(to_gray_48(Image.fromarray(warped)), dtype=np.uint8))
        return np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def measure_fer_framing(faces_u8: np.ndarray, upscale: int = 4) -> dict:
    """Where the eye centres sit in 48x48 faces: each face upsampled `upscale` times, found by dlib's HOG
    detector, its 5 landmarks read inside that box; the median over the faces found, in 48 px coordinates."""
    import cv2

    detector, aligner = DlibDetector("hog"), Aligner()
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
    return dict(faces=len(faces_u8), found=len(lefts), left_eye=left_eye, right_eye=right_eye)


if __name__ == "__main__":  # python -m emo_utils.predict.detectors: measure FER_LEFT_EYE and FER_RIGHT_EYE again
    from ..core.data import load_dataset

    images, _ = load_dataset().split("train")
    chosen = np.random.default_rng(0).choice(len(images), 2000, replace=False)
    print(measure_fer_framing(images[chosen]))
