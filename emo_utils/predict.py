"""Inference: logits and probabilities for a batch of uint8 faces, with optional flip TTA; and deployment:
`python -m emo_utils.predict` (console script `emo-predict`) classifies images, folders and zips, finding
faces in photos with OpenCV's bundled Haar cascade, on a report's model.pt or an exported .onnx.

    emo-predict face.jpg                                   # one face crop, model reports/mini_xception/model.pt
    emo-predict test_faces/ --csv out.csv                  # class-named folders: accuracy and confusion too
    emo-predict photos.zip --detect-faces --annotate out/  # every face in every photo, boxes drawn
    emo-predict photo.jpg --model reports/mini_xception/model.onnx --detect-faces

cv2, onnxruntime, the training code and scikit-learn are imported where they are used: train.py imports
this module, and training needs none of them.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .augment import tta_views, to_float
from .data import IMAGE_SIZE, REPO_ROOT, to_gray_48


EVAL_SPLITS = ("test_private", "test_public", "test_all", "val")  # headline first, as the reports list them


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8, batch_size: int = 512, crop: int = 0, tta: bool | str = False,
                   device: torch.device | None = None) -> np.ndarray:
    """Logits (N, C) for uint8 images (N, 48, 48). `crop` takes the centre crop a model was trained on;
    `tta` averages the logits of several views (augment.tta_views: True = the image and its mirror image)."""
    device = device or next(model.parameters()).device
    images = torch.as_tensor(np.asarray(images_u8))
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        views = tta_views(to_float(images[start:start + batch_size].to(device)), crop, tta)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = sum(model(v.contiguous(memory_format=torch.channels_last)).float() for v in views) / len(views)
        outputs.append(logits.cpu())
    model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_splits(model: torch.nn.Module, data, splits=None, crop: int = 0, tta: bool | str = False) -> dict[str, np.ndarray]:
    """Softmax probabilities for each evaluation split of a FERData (all but train by default).

    Splits overlap (test_all holds both test halves), so each image is scored once and the splits are cut from it."""
    splits = splits or [s for s in EVAL_SPLITS if s in data.available_splits()]
    masks = {s: data.split_mask(s) for s in splits}
    scored = np.logical_or.reduce(list(masks.values()))
    probs = softmax(predict_logits(model, data.images[scored], crop=crop, tta=tta))
    return {s: probs[mask[scored]] for s, mask in masks.items()}


def seconds_per_image(model: torch.nn.Module, crop: int = 0, batch_size: int = 256, repeats: int = 3) -> float:
    """Inference time per 48x48 face at a given batch size (best of `repeats`), on the model's device."""
    import time

    faces = np.zeros((batch_size, 48, 48), dtype=np.uint8)
    predict_logits(model, faces, batch_size=batch_size, crop=crop)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict_logits(model, faces, batch_size=batch_size, crop=crop)
        best = min(best, time.perf_counter() - start)
    return best / batch_size


# ================================================================ deployment

REPORTS_DIR = REPO_ROOT / "reports"
MODEL_SUFFIXES = (".pt", ".onnx")
# Above the full-resolution photos of most cameras; an image over it is refused from its header, before any
# pixel is decoded, so a decompression bomb (a tiny PNG that claims 20000x20000) costs nothing.
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 200 * 2**20  # a file (or zip member) above this is not read at all
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


# ---------------------------------------------------------------- models

@dataclass
class Classifier:
    """A trained model behind one call: uint8 faces (N, 48, 48) in, logits or probabilities (N, C) out."""
    logits_fn: Callable[[np.ndarray], np.ndarray]
    class_names: list[str]
    crop: int  # the model sees the centre crop of this size (0: the whole 48x48 face)
    source: str  # the file it came from
    backend: str  # "torch" or "onnxruntime"

    def logits(self, faces_u8: np.ndarray) -> np.ndarray:
        faces_u8 = np.asarray(faces_u8, dtype=np.uint8)
        if not faces_u8.flags.writeable:  # arrays viewing PIL images are read-only; torch warns on those
            faces_u8 = faces_u8.copy()
        if len(faces_u8) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return self.logits_fn(faces_u8)

    def predict_proba(self, faces_u8: np.ndarray) -> np.ndarray:
        return softmax(self.logits(faces_u8))


def available_models(reports_dir: Path | None = None) -> list[str]:
    reports_dir = Path(reports_dir or REPORTS_DIR)
    if not reports_dir.is_dir():
        return []
    return sorted(d.name for d in reports_dir.iterdir()
                  if d.is_dir() and any((d / f"model{s}").is_file() for s in MODEL_SUFFIXES))


def resolve_model_path(spec: str | os.PathLike, reports_dir: Path | None = None) -> Path:
    """A model by report name (reports/<name>/model.pt, else model.onnx) or by path to a .pt or .onnx file."""
    reports_dir = Path(reports_dir or REPORTS_DIR)
    path = Path(spec)
    choices = available_models(reports_dir)
    listing = (f"models in {reports_dir}: {', '.join(choices)}" if choices
               else f"{reports_dir} holds no trained model yet (`make reports` trains them)")
    if path.is_dir() and (path / "model.pt").is_file():  # a report folder given as a path
        return path / "model.pt"
    if path.suffix in MODEL_SUFFIXES or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise PredictError(f"model file {path} does not exist; {listing}, or pass a path to a .pt or .onnx file.")
        return path
    for suffix in MODEL_SUFFIXES:
        candidate = reports_dir / str(spec) / f"model{suffix}"
        if candidate.is_file():
            return candidate
    raise PredictError(f"no model named {str(spec)!r} ({reports_dir / str(spec) / 'model.pt'} does not exist); "
                       f"{listing}, or pass a path to a .pt or .onnx file.")


def load_classifier(spec: str | os.PathLike, tta: bool = False, device: str | torch.device | None = None,
                    threads: int | None = None, reports_dir: Path | None = None) -> Classifier:
    """A report's model by name, a finished checkpoint (.pt) or an exported model (.onnx), ready to classify.

    `tta` averages each face with its mirror image; `threads` sets onnxruntime's intra-op threads."""
    path = resolve_model_path(spec, reports_dir)
    if path.suffix == ".onnx":
        from .export import onnx_classifier
        return onnx_classifier(path, tta=tta, threads=threads)
    from .augment import make_policy
    from .train import load_checkpoint, load_trained

    checkpoint = load_checkpoint(path)
    if "class_names" not in checkpoint or "num_classes" not in checkpoint:
        raise PredictError(f"{path} is a checkpoint of a run, not a finished model (it has no class names): pass "
                           "the run's final.pt or a report's model.pt.")
    result = load_trained(path, torch.device(device) if device is not None else default_device())
    crop = make_policy(result.config.augment).crop
    model = result.model

    def logits_fn(faces_u8):
        return predict_logits(model, faces_u8, crop=crop, tta=tta)

    return Classifier(logits_fn, list(checkpoint["class_names"]), crop, str(path), "torch")


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


def to_gray(img: Image.Image) -> Image.Image:
    """Full-resolution 8-bit grayscale by the same rules as data.to_gray_48, which then resizes to 48x48:
    so to_gray_48(to_gray(img)) == to_gray_48(img)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("L")


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


def extract_faces(img: Image.Image, detector: FaceDetector | None = None,
                  margin: float = FACE_MARGIN) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 faces (n, 48, 48) as the model was trained on, and their boxes (n, 4: x, y, w, h) or None.

    Without a detector the whole image is one face (a crop like FER2013's), converted exactly as the
    training data loader converts an image that is not 48x48 grayscale."""
    if detector is None:
        return np.asarray(to_gray_48(img), dtype=np.uint8)[None], None
    gray = to_gray(img)
    boxes = detector.detect(np.asarray(gray))
    faces = [np.asarray(to_gray_48(gray.crop(face_box_with_margin(b, gray.size, margin))), dtype=np.uint8)
             for b in boxes]
    return (np.stack(faces) if faces else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)), boxes


@dataclass
class Face:
    box: tuple[int, int, int, int] | None  # x, y, w, h; None when the whole image is the face
    probs: np.ndarray
    class_names: list[str]

    @property
    def predicted(self) -> str:
        return self.class_names[int(self.probs.argmax())]

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


def classify_image(img: Image.Image, classifier: Classifier, detector: FaceDetector | None = None,
                   margin: float = FACE_MARGIN) -> list[Face]:
    """Every face in one image (or the image as one face without a detector), classified."""
    faces, boxes = extract_faces(img, detector, margin)
    probs = classifier.predict_proba(faces)
    return [Face(None if boxes is None else tuple(int(v) for v in boxes[i]), probs[i], classifier.class_names)
            for i in range(len(faces))]


# Colour per class index (matplotlib's tab10, RGB), so a class looks the same in every annotated image.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def annotate(img: Image.Image, faces: list[Face]) -> Image.Image:
    """An RGB copy of `img` with each face's box and "class 87%" drawn on it (upscaled if small)."""
    import cv2

    if img.mode in ("RGBA", "LA", "P"):  # in colour, on white, as to_gray composites it
        rgba = img.convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        rgb = to_gray(img).convert("RGB") if img.mode.startswith("I") else img.convert("RGB")
    scale = max(1.0, min(ANNOTATE_MIN_SIDE / min(rgb.size), 4 * ANNOTATE_MIN_SIDE / max(rgb.size)))
    if scale > 1:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.NEAREST)
    canvas = np.array(rgb)
    height, width = canvas.shape[:2]
    thickness = max(2, round(min(width, height) / 250))
    for face in faces:
        x, y, w, h = ((0, 0, width, height) if face.box is None
                      else tuple(round(v * scale) for v in face.box))
        colour = PALETTE[int(face.probs.argmax()) % len(PALETTE)]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"{face.predicted} {face.confidence:.0%}"
        font_scale = max(0.5, min(w, 400) / 220)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = y - baseline - 2 if y - th - baseline - 4 >= 0 else y + th + baseline + thickness
        cv2.rectangle(canvas, (x, ty - th - 2), (x + tw + 4, ty + baseline), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return Image.fromarray(canvas)


# ---------------------------------------------------------------- inputs: a file, a folder, a zip

@dataclass
class InputFile:
    name: str  # as the CSV and the messages show it: a path, or the zip's path and the member inside it
    relative: PurePosixPath  # where --annotate writes it, under the annotation folder
    folder: str  # the folder holding it, a class name when the inputs are sorted into class folders
    read: Callable[[], bytes]


def _read_file(path: Path) -> Callable[[], bytes]:
    def read():
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SkipFile(f"{size / 2**20:.0f} MiB is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit for one image")
        return path.read_bytes()
    return read


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read():
        if info.file_size > MAX_FILE_BYTES:
            raise SkipFile(f"{info.file_size / 2**20:.0f} MiB uncompressed is over the "
                           f"{MAX_FILE_BYTES / 2**20:.0f} MiB limit for one image")
        try:
            return archive.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as e:
            raise SkipFile(f"corrupt zip entry ({e})") from None
    return read


def _hidden(parts) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def iter_inputs(paths, skip: Callable[[str, str], None]) -> Iterator[InputFile]:
    """Every file under the given images, folders and zips, in sorted order; a zip is read in place, never
    extracted. An input with nothing in it is reported with skip(name, reason)."""
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path).parts))
            if not files:
                skip(f"{path}{os.sep}", "empty folder: no files in it")
            for f in files:
                rel = PurePosixPath(path.name, *f.relative_to(path).parts)
                yield InputFile(str(f), rel, f.parent.name, _read_file(f))
        elif path.suffix.lower() == ".zip":
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                skip(str(path), f"not a readable zip ({e})")
                continue
            with archive:
                members = sorted((i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename)
                members = [i for i in members if not _hidden(PurePosixPath(i.filename).parts)]
                if not members:
                    skip(str(path), "empty zip: no files in it")
                for info in members:
                    # Names are only displayed and used under the annotation folder: '..' and roots are dropped.
                    parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("/", "..")]
                    rel = PurePosixPath(path.stem, *parts)
                    yield InputFile(f"{path}/{'/'.join(parts)}", rel, parts[-2] if len(parts) > 1 else "",
                                    _read_member(archive, info))
        else:
            yield InputFile(str(path), PurePosixPath(path.name), path.resolve().parent.name, _read_file(path))


def annotation_path(out_dir: Path, relative: PurePosixPath) -> Path:
    keep = relative.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
    return Path(out_dir, *relative.parts[:-1], relative.name if keep else relative.name + ".png")


# ---------------------------------------------------------------- a run over many inputs

@dataclass
class PredictionRun:
    class_names: list[str]
    rows: list[dict] = field(default_factory=list)  # one per face, the CSV's rows
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, what was converted)
    files_seen: int = 0
    images_read: int = 0
    annotated: int = 0

    def columns(self) -> list[str]:
        return (["file", "face", "x", "y", "w", "h", "label", "predicted", "confidence"]
                + [f"p_{name}" for name in self.class_names])

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs, labels) of the faces whose folder is named after one of the model's classes."""
        index = {name: i for i, name in enumerate(self.class_names)}
        rows = [r for r in self.rows if r["label"] in index]
        probs = np.array([[r[f"p_{c}"] for c in self.class_names] for r in rows], dtype=np.float64)
        return probs.reshape(len(rows), len(self.class_names)), np.array([index[r["label"]] for r in rows], np.int64)


def predict_inputs(paths, classifier: Classifier, detector: FaceDetector | None = None, margin: float = FACE_MARGIN,
                   annotate_dir: str | os.PathLike | None = None, batch_size: int = 256,
                   log: Callable[[str], None] | None = None) -> PredictionRun:
    """Classify every image under `paths` (images, folders, zips); a file that cannot be used is logged and
    skipped, and the run goes on. Faces are classified in batches across images."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    run = PredictionRun(list(classifier.class_names))
    pending: list[tuple[InputFile, np.ndarray, np.ndarray | None, Image.Image | None]] = []
    class_names = set(classifier.class_names)

    def skip(name: str, reason: str):  # logged as it happens, kept for the summary
        run.skipped.append((name, reason))
        log(f"skipped {name}: {reason}")

    def flush():
        if not pending:
            return
        probs = classifier.predict_proba(np.concatenate([faces for _, faces, _, _ in pending]))
        start = 0
        for item, faces, boxes, img in pending:
            image_probs, start = probs[start:start + len(faces)], start + len(faces)
            for i, p in enumerate(image_probs):
                box = ("", "", "", "") if boxes is None else tuple(int(v) for v in boxes[i])
                row = dict(file=item.name, face=i, x=box[0], y=box[1], w=box[2], h=box[3],
                           label=item.folder if item.folder in class_names else "",
                           predicted=run.class_names[int(p.argmax())], confidence=float(p.max()))
                row.update({f"p_{c}": float(v) for c, v in zip(run.class_names, p)})
                run.rows.append(row)
            if img is not None:
                faces_found = [Face(None if boxes is None else tuple(int(v) for v in boxes[i]), image_probs[i],
                                    run.class_names) for i in range(len(faces))]
                target = annotation_path(Path(annotate_dir), item.relative)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    annotate(img, faces_found).save(target)
                    run.annotated += 1
                except (OSError, ValueError) as e:
                    log(f"note {item.name}: annotated copy not written to {target} ({e})")
        pending.clear()

    for item in iter_inputs(paths, skip):
        run.files_seen += 1
        notes: list[str] = []
        try:
            img = read_image(item.read(), notes)
            run.images_read += 1
            for note in notes:
                run.notes.append((item.name, note))
                log(f"note {item.name}: {note}")
            faces, boxes = extract_faces(img, detector, margin)
        except SkipFile as e:
            skip(item.name, str(e))
            continue
        except (OSError, ValueError) as e:  # a decoder error that only shows while converting
            skip(item.name, f"cannot convert ({type(e).__name__}: {e})")
            continue
        except Exception as e:  # one odd file (a malformed EXIF block, say) must not end the run
            skip(item.name, f"unexpected error ({type(e).__name__}: {e})")
            continue
        if len(faces) == 0:
            skip(item.name, f"no face found (Haar cascade, faces of {detector.min_face} px and larger); if the "
                            "image is already a face crop, run without --detect-faces")
            if annotate_dir is None:
                continue
        pending.append((item, faces, boxes, img if annotate_dir is not None else None))
        if sum(len(f) for _, f, _, _ in pending) >= batch_size or (annotate_dir is not None and len(pending) >= 8):
            flush()
    flush()
    return run


def write_csv(run: PredictionRun, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=run.columns())
        writer.writeheader()
        for row in run.rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def format_confusion(confusion, class_names) -> str:
    """A plain-text confusion matrix: rows are the true classes, columns the predicted ones."""
    width = max(6, *(len(c) for c in class_names)) + 1
    lines = [" " * width + "".join(f"{c:>{width}}" for c in class_names)]
    lines += [f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row) for name, row in zip(class_names, confusion)]
    return "\n".join(lines)


def evaluation_text(run: PredictionRun) -> str | None:
    """Accuracy, macro-F1 and the confusion matrix of the faces whose folder names their class; None if none does."""
    from .metrics import compute_metrics

    probs, labels = run.labelled()
    if len(labels) == 0:
        return None
    m = compute_metrics(probs, labels, run.class_names)
    unlabelled = len(run.rows) - len(labels)
    return "\n".join([
        f"accuracy {m['accuracy']:.4f} ({int(round(m['accuracy'] * m['n']))} of {m['n']} faces in folders named after "
        f"a class), macro-F1 {m['macro_f1']:.4f}" + (f"; {unlabelled} face(s) in other folders not counted"
                                                     if unlabelled else ""),
        "confusion matrix (rows: true class from the folder name, columns: predicted):",
        format_confusion(m["confusion"], run.class_names)])


def summary_text(run: PredictionRun, csv_path: Path | None) -> str:
    lines = [f"{run.files_seen} file(s) seen, {run.images_read} image(s) read, {len(run.rows)} face(s) classified"
             + (f", {run.annotated} annotated image(s) written" if run.annotated else "")
             + (f"; predictions in {csv_path}" if csv_path else "")]
    if run.notes:
        lines.append(f"converted {len(run.notes)} image(s) before classifying: "
                     + "; ".join(f"{name} ({note})" for name, note in run.notes[:5])
                     + (" ..." if len(run.notes) > 5 else ""))
    if run.skipped:
        lines.append(f"skipped {len(run.skipped)}:")
        lines += [f"  {name}: {reason}" for name, reason in run.skipped]
    else:
        lines.append("nothing skipped")
    return "\n".join(lines)


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


# ---------------------------------------------------------------- command line

def build_parser():
    parser = argparse.ArgumentParser(
        prog="emo-predict", description="Classify the facial expression in images, folders of images or zips. "
        "Writes a CSV (file, face box, label from a class-named folder, predicted class, probabilities); when the "
        "inputs sit in folders named after the classes, prints accuracy and the confusion matrix.")
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or zips")
    parser.add_argument("--model", default="mini_xception",
                        help="a model in reports/ by name (reports/<name>/model.pt), or a path to a .pt or .onnx file "
                             "(default: %(default)s)")
    parser.add_argument("--csv", default="predictions.csv",
                        help="where to write the predictions (default: %(default)s)")
    parser.add_argument("--detect-faces", action="store_true",
                        help="find faces with OpenCV's Haar cascade and classify each (for photos); without it each "
                             "image is taken to be one face crop, like FER2013's")
    parser.add_argument("--annotate", metavar="DIR", help="write each image with its boxes and labels under DIR")
    parser.add_argument("--margin", type=float, default=FACE_MARGIN,
                        help="share of the face box added on each side before cropping (default: %(default).3f, "
                             "which frames a face as FER2013 does)")
    parser.add_argument("--min-face", type=int, default=MIN_FACE,
                        help="smallest face to find, in pixels (default: %(default)s)")
    parser.add_argument("--scale-factor", type=float, default=1.1,
                        help="Haar pyramid step: larger is faster and misses more faces (default: %(default)s)")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--device", help="torch device for a .pt model (default: CUDA when present, else CPU)")
    parser.add_argument("--batch-size", type=int, default=256)
    return parser


def main(argv=None) -> int:
    """0: at least one face classified; 1: nothing could be classified; 2: a bad model or a missing input."""
    args = build_parser().parse_args(argv)
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        print(f"emo-predict: input not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    from .train import CheckpointError

    try:
        classifier = load_classifier(args.model, tta=args.tta, device=args.device)
        detector = FaceDetector(args.scale_factor, min_face=args.min_face) if args.detect_faces else None
    except (PredictError, CheckpointError) as e:
        print(f"emo-predict: {e}", file=sys.stderr)
        return 2
    print(f"model {classifier.source} ({classifier.backend}, classes {', '.join(classifier.class_names)})",
          file=sys.stderr)
    run = predict_inputs(args.inputs, classifier, detector, args.margin, args.annotate, args.batch_size)
    csv_path = write_csv(run, args.csv)
    evaluation = evaluation_text(run)
    if evaluation:
        print(evaluation)
    print(summary_text(run, csv_path), file=sys.stderr)
    return 0 if run.rows else 1


if __name__ == "__main__":
    sys.exit(main())
