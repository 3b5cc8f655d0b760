"""Faces in pictures: decode an image safely, find frontal faces with OpenCV's bundled Haar cascade, crop each
as FER2013 frames a face and convert it to 48x48 grayscale exactly as the training data was, classify, and
draw boxes and labels. Also a photo-like collage of faces on a background, to measure what the detector finds.

No torch here: `emo-predict` (cli.py) and video.py build on this module, and `emo-predict --help` must not
wait for torch. cv2 is imported where it is used.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.readers import IMAGE_SIZE, to_gray, to_gray_48
from .detectors import DETECTORS, MTCNN_THRESHOLDS, Aligner, DetectorError, DlibDetector, MtcnnDetector

if TYPE_CHECKING:  # annotations only: importing it at run time would import torch
    from ..core.inference import Classifier

# Above the full-resolution photos of most cameras; an image over it is refused from its header, before any
# pixel is decoded, so a decompression bomb (a tiny PNG that claims 20000x20000) costs nothing.
MAX_PIXELS = 50_000_000
CASCADE = "haarcascade_frontalface_default.xml"
# FER2013's faces were registered by a face detector: on 200 test faces upscaled 2-3x, Haar's box covers 97% of
# the image's side (median), so a crop like the training data's is the box grown by 1.5% on each side. Wider
# crops did worse: on 225 PrivateTest faces found in collages, accuracy fell from 0.587 (margin 0) to 0.524
# (0.1) and 0.476 (0.2) with a partly trained Mini-Xception.
FACE_MARGIN = (1 / 0.97 - 1) / 2
# FER faces are 48 px: a smaller face would be upsampled, adding no detail, and each halving of the smallest
# face size roughly doubles the cascade's work.
MIN_FACE = 48
DETECT_MAX_SIDE = 1600  # a larger photo is searched on a copy scaled down to this; crops come from the original
ANNOTATE_MIN_SIDE = 384  # a smaller image is upscaled before drawing, so the labels stay legible


class PredictError(ValueError):
    """A model or input we cannot use at all; the message names it and the fix."""


class SkipFile(Exception):
    """One input file that cannot be classified; the run goes on with the others."""


# ---------------------------------------------------------------- images

def read_image(data: bytes, converted: list[str] | None = None) -> Image.Image:
    """Decode image bytes, refusing what we should not decode; raises SkipFile with the reason.

    EXIF rotation is applied, as a viewer would. `converted` receives a note for an image whose pixels
    need more than a plain grayscale conversion (transparency, 16 bits)."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise SkipFile("not an image (no format Pillow reads)") from None
    except Image.DecompressionBombError as e:  # Pillow's own limit, twice its MAX_IMAGE_PIXELS, checked on open
        raise SkipFile(f"too large, not decoded: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise SkipFile(f"unreadable image ({e})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise SkipFile(f"too large, not decoded: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the "
                       f"{MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb, or a photo to scale down first)")
    if width == 0 or height == 0:
        raise SkipFile(f"empty image ({width}x{height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipFile(f"cannot decode ({e}): the file is truncated or corrupt") from None
    if converted is not None:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            converted.append(f"{img.mode} (16/32-bit) image scaled to 8 bits by its maximum")
        elif img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            converted.append(f"{img.mode} image with transparency composited on white")
    return img


def face_box_with_margin(box, image_size: tuple[int, int], margin: float = FACE_MARGIN) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a square around a detector box (x, y, w, h), grown by `margin` of its side
    on every side and moved (not cut) to stay inside the image, so the face keeps its aspect ratio."""
    x, y, w, h = (float(v) for v in box)
    width, height = image_size
    side = min(max(w, h) * (1 + 2 * margin), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    return round(left), round(top), round(left + side), round(top + side)


class FaceDetector:
    """Frontal faces with OpenCV's bundled Haar cascade (Viola & Jones 2001): offline, no download."""
    kind = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_face: int = MIN_FACE,
                 max_side: int = DETECT_MAX_SIDE):
        import cv2

        folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = Path(folder) / CASCADE
        self.cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
        if self.cascade is None or self.cascade.empty():
            raise PredictError(f"OpenCV's face cascade {path} is missing or unreadable (opencv {cv2.__version__}). "
                               "OpenCV 5 no longer ships it in the main wheel: install 'opencv-python-headless<5'.")
        self.scale_factor, self.min_neighbors, self.min_face, self.max_side = (scale_factor, min_neighbors,
                                                                               min_face, max_side)

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) as x, y, w, h in pixels of `gray` (uint8, H x W), left to right."""
        import cv2

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        scale = min(1.0, self.max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        min_side = max(int(self.min_face * scale), 24)  # the cascade's own window is 24x24
        boxes = self.cascade.detectMultiScale(small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                              minSize=(min_side, min_side))
        boxes = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale).astype(np.int64)
        return boxes[np.argsort(boxes[:, 0], kind="stable")]


def make_detector(name: str = "haar", *, scale_factor: float = 1.1, min_face: int = MIN_FACE,
                  max_side: float = DETECT_MAX_SIDE, upsample: int = 1, thresholds=MTCNN_THRESHOLDS):
    """A detector by name (DETECTORS), each with detect(gray) -> boxes (n, 4: x, y, w, h).

    haar: OpenCV's cascade, `scale_factor` its pyramid step; hog, cnn: dlib's, the image doubled `upsample`
    times first (HOG's smallest face is 80 px at 0, 40 px at 1); mtcnn: facenet-pytorch's, its pyramid starting
    at `min_face`, `thresholds` its nets' face scores. Faces under `min_face` px are dropped."""
    if name == "haar":
        return FaceDetector(scale_factor, min_face=min_face, max_side=max_side)
    try:
        if name == "mtcnn":
            return MtcnnDetector(min_face=min_face, max_side=max_side, thresholds=thresholds)
        if name in DETECTORS:
            return DlibDetector(name, upsample=upsample, min_face=min_face, max_side=max_side)
    except DetectorError as e:
        raise PredictError(str(e)) from None
    raise PredictError(f"--detector {name}: unknown; use one of {', '.join(DETECTORS)}")


def landmarks_for(detector: str | None) -> str:
    """Whose 5 landmarks align the faces: MTCNN's own for its boxes, dlib's for every other detector's."""
    return "mtcnn" if detector == "mtcnn" else "dlib"


def make_aligner(landmarks: str = "dlib") -> Aligner:
    try:
        return Aligner(landmarks)
    except DetectorError as e:
        raise PredictError(f"--align: {e}") from None


def cut_faces(pixels: np.ndarray, gray: np.ndarray, boxes, margin: float = FACE_MARGIN,
              aligner: Aligner | None = None, eyes=None) -> np.ndarray:
    """The crops emo-predict classifies, (n, 48, 48) uint8: aligned on the eyes from `gray` with an aligner
    (on `eyes`, each box's eye pair, when they are known already), else squares with `margin` cut from `pixels`
    (crop_faces). An aligned face is framed as FER2013 frames one at the default margin; another margin shows
    that much more (or less) around it, as it does a square."""
    if aligner is not None:
        return aligner.crop(gray, boxes, zoom_out=(1 + 2 * margin) / (1 + 2 * FACE_MARGIN), eyes=eyes)
    return crop_faces(pixels, boxes, margin)


def extract_faces(img: Image.Image, detector=None, margin: float = FACE_MARGIN, aligner: Aligner | None = None,
                  boxes=None) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 faces (n, 48, 48) as the model was trained on, and their boxes (n, 4: x, y, w, h) or None.

    Without a detector or boxes the whole image is one face (a crop like FER2013's), converted exactly as the
    training data loader converts an image that is not 48x48 grayscale. `boxes` (the user's own, --boxes)
    are cut as given, with no detection."""
    if detector is None and boxes is None:
        return np.asarray(to_gray_48(img), dtype=np.uint8)[None], None
    gray = np.asarray(to_gray(img))
    if boxes is None:
        boxes = detector.detect(gray)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return cut_faces(gray, gray, boxes, margin, aligner), boxes


def crop_faces(pixels: np.ndarray, boxes, margin: float = FACE_MARGIN) -> np.ndarray:
    """uint8 faces (n, 48, 48) cut from `pixels` (H x W grayscale or H x W x 3 RGB) at boxes (x, y, w, h).

    Each crop is converted to gray by itself: the conversion works pixel by pixel, so a crop of an RGB video
    frame gives the same face as a crop of the whole frame in gray, at a fraction of the cost."""
    height, width = pixels.shape[:2]
    faces = []
    for box in boxes:
        left, top, right, bottom = face_box_with_margin(box, (width, height), margin)
        faces.append(np.asarray(to_gray_48(Image.fromarray(pixels[top:bottom, left:right])), dtype=np.uint8))
    return np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


@dataclass
class Face:
    box: tuple[int, int, int, int] | None  # x, y, w, h; None when the whole image is the face
    probs: np.ndarray
    class_names: list[str]
    name: str = ""  # drawn before the class: a video's face id, "#2"

    @property
    def predicted(self) -> str:
        return self.class_names[int(self.probs.argmax())]

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


def classify_image(img: Image.Image, classifier: Classifier, detector=None, margin: float = FACE_MARGIN,
                   aligner: Aligner | None = None) -> list[Face]:
    """Every face in one image (or the image as one face without a detector), classified."""
    faces, boxes = extract_faces(img, detector, margin, aligner)
    probs = classifier.predict_proba(faces)
    return [Face(None if boxes is None else tuple(int(v) for v in boxes[i]), probs[i], classifier.class_names)
            for i in range(len(faces))]


# Colour per class index (matplotlib's tab10, RGB), so a class looks the same in every annotated image.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def annotate(img: Image.Image, faces: list[Face]) -> Image.Image:
    """An RGB copy of `img` with each face's box and "class 87%" drawn on it (upscaled if small)."""
    if img.mode in ("RGBA", "LA", "P"):  # in colour, on white, as to_gray composites it
        rgba = img.convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        rgb = to_gray(img).convert("RGB") if img.mode.startswith("I") else img.convert("RGB")
    scale = max(1.0, min(ANNOTATE_MIN_SIDE / min(rgb.size), 4 * ANNOTATE_MIN_SIDE / max(rgb.size)))
    if scale > 1:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.NEAREST)
    canvas = np.array(rgb)
    draw_faces(canvas, faces, scale)
    return Image.fromarray(canvas)


def draw_faces(canvas: np.ndarray, faces: list[Face], scale: float = 1.0, bgr: bool = False) -> np.ndarray:
    """Draw each face's box and "class 87%" on an RGB (or, with bgr, an OpenCV BGR) uint8 array, in place;
    boxes are scaled by `scale`."""
    import cv2

    height, width = canvas.shape[:2]
    thickness = max(2, round(min(width, height) / 250))
    for face in faces:
        x, y, w, h = ((0, 0, width, height) if face.box is None
                      else tuple(round(v * scale) for v in face.box))
        colour = PALETTE[int(face.probs.argmax()) % len(PALETTE)][::-1 if bgr else 1]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"{face.name + ' ' if face.name else ''}{face.predicted} {face.confidence:.0%}"
        font_scale = max(0.5, min(w, 400) / 220)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = y - baseline - 2 if y - th - baseline - 4 >= 0 else y + th + baseline + thickness
        cv2.rectangle(canvas, (x, ty - th - 2), (x + tw + 4, ty + baseline), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return canvas


# ---------------------------------------------------------------- demo: a photo-like collage of faces

def make_collage(faces_u8: np.ndarray, face_px: int = 144, seed: int = 0,
                 size: tuple[int, int] | None = None) -> tuple[Image.Image, np.ndarray]:
    """RGB image with the 48x48 faces upscaled to face_px and pasted, one per cell of a grid, on a smooth
    background with a little noise: a stand-in for a group photo. `size` (width, height) defaults to cells of
    1.5 face_px. Returns the image and the pasted boxes (n, 4: x, y, w, h)."""
    rng = np.random.default_rng(seed)
    n = len(faces_u8)
    cols = max(1, math.ceil(math.sqrt(n * 1.5)))
    rows = max(1, math.ceil(n / cols))
    width, height = size or (cols * int(face_px * 1.5), rows * int(face_px * 1.5))
    cell_w, cell_h = width // cols, height // rows
    if min(cell_w, cell_h) < face_px:
        raise ValueError(f"{n} faces of {face_px} px do not fit in {width}x{height} ({cols}x{rows} cells)")
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    base = np.stack([90 + 80 * xx, 110 + 60 * yy, 150 - 50 * xx + 30 * np.sin(6 * yy)], axis=-1)
    canvas = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    boxes = []
    for i, face in enumerate(faces_u8):
        big = np.asarray(Image.fromarray(np.asarray(face, np.uint8)).resize((face_px, face_px), Image.BICUBIC))
        x = (i % cols) * cell_w + int(rng.integers(0, cell_w - face_px + 1))
        y = (i // cols) * cell_h + int(rng.integers(0, cell_h - face_px + 1))
        canvas[y:y + face_px, x:x + face_px] = big[..., None]
        boxes.append((x, y, face_px, face_px))
    return Image.fromarray(canvas), np.array(boxes, dtype=np.int64).reshape(-1, 4)


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


def match_faces(true_boxes, found: list[Face], min_iou: float = 0.3) -> list[Face | None]:
    """For each true box, the detected face that overlaps it most (IoU >= min_iou), or None."""
    matched = []
    for box in true_boxes:
        ious = [box_iou(box, f.box) for f in found]
        best = int(np.argmax(ious)) if ious else -1
        matched.append(found[best] if best >= 0 and ious[best] >= min_iou else None)
    return matched


