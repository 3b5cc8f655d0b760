"""Deployment: `python -m emo_utils.predict` (console script `emo-predict`) classifies images, folders, zips,
a video or a live camera, on a report's model.pt or an exported .onnx, and writes a CSV.

    emo-predict face.jpg                                   # one face crop, model reports/mini_xception/model.pt
    emo-predict test_faces/ --csv out.csv                  # class-named folders: accuracy and confusion too
    emo-predict photos.zip --detect-faces --annotate out/  # every face in every photo, boxes drawn
    emo-predict photo.jpg --model reports/mini_xception/model.onnx --detect-faces
    emo-predict clip.mp4 --annotate clip_annotated.mp4     # faces followed over time: CSV, plot, video (video.py)
    emo-predict --camera 0                                 # the same, live, until q or Ctrl-C

Finding, cropping and drawing faces is faces.py; following them through a video is video.py and tracking.py.
torch, onnxruntime, the training code and scikit-learn are imported only once a model is loaded: `--help` and
a mistyped argument answer at once, and train.py, which imports this module, needs none of them.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import os
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from PIL import Image

from . import video
from .data import REPO_ROOT
# faces.py's names are also answered here, where they lived before (predict.make_collage, predict.FaceDetector).
from .faces import (ANNOTATE_MIN_SIDE, DETECT_MAX_SIDE, FACE_MARGIN, MAX_PIXELS, MIN_FACE, Face,  # noqa: F401
                    FaceDetector, PredictError, SkipFile, annotate, box_iou, classify_image, extract_faces,
                    face_box_with_margin, make_collage, match_faces, read_image, to_gray)

if TYPE_CHECKING:
    from .inference import Classifier

# Inference moved to inference.py so that this module imports no torch; `from emo_utils.predict import
# predict_logits` (train.py, the notebooks) still works, and imports torch when it is asked for.
_FROM_INFERENCE = ("Classifier", "EVAL_SPLITS", "default_device", "predict_logits", "predict_splits",
                   "seconds_per_image", "softmax")


def __getattr__(name: str):
    if name in _FROM_INFERENCE:
        from . import inference
        return getattr(inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


REPORTS_DIR = REPO_ROOT / "reports"
MODEL_SUFFIXES = (".pt", ".onnx")
MAX_FILE_BYTES = 200 * 2**20  # a file (or zip member) above this is not read at all


# ---------------------------------------------------------------- models

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


def load_classifier(spec: str | os.PathLike, tta: bool = False, device: str | None = None,
                    threads: int | None = None, reports_dir: Path | None = None) -> Classifier:
    """A report's model by name, a finished checkpoint (.pt) or an exported model (.onnx), ready to classify.

    `tta` averages each face with its mirror image; `threads` sets onnxruntime's intra-op threads."""
    path = resolve_model_path(spec, reports_dir)
    if path.suffix == ".onnx":
        from .export import onnx_classifier
        return onnx_classifier(path, tta=tta, threads=threads)
    import torch

    from .augment import make_policy
    from .inference import Classifier, default_device, predict_logits
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


def unsafe_member(name: str) -> bool:
    """A zip entry whose path is absolute or climbs out with '..', which data.load_dataset refuses too."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (len(parts) > 0 and ":" in parts[0])


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
                unsafe = [i for i in members if unsafe_member(i.filename)]
                for info in unsafe:  # before the hidden-file filter, which would drop '..' without a word
                    skip(f"{path}/{info.filename}", "unsafe path (absolute or with '..'): not read")
                members = [i for i in members if i not in unsafe and not _hidden(PurePosixPath(i.filename).parts)]
                if not members and not unsafe:
                    skip(str(path), "empty zip: no files in it")
                for info in members:
                    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
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
    other_folders: Counter = field(default_factory=Counter)  # faces per folder named after no class

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
                   log: Callable[[str], None] | None = None, class_map: dict[str, str] | None = None) -> PredictionRun:
    """Classify every image under `paths` (images, folders, zips); a file that cannot be used is logged and
    skipped, and the run goes on. Faces are classified in batches across images. A face's label is its
    folder's name when that names a class, after `class_map` (folder name -> class, e.g. fearful -> fear)."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    run = PredictionRun(list(classifier.class_names))
    pending: list[tuple[InputFile, np.ndarray, np.ndarray | None, Image.Image | None]] = []
    class_names = set(classifier.class_names)
    class_map = class_map or {}

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
            label = class_map.get(item.folder, item.folder)
            if label not in class_names:
                label = ""
                run.other_folders[item.folder] += len(faces)
            for i, p in enumerate(image_probs):
                box = ("", "", "", "") if boxes is None else tuple(int(v) for v in boxes[i])
                row = dict(file=item.name, face=i, x=box[0], y=box[1], w=box[2], h=box[3], label=label,
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
        if video.is_video(item.name):
            skip(item.name, "a video, not an image: run emo-predict on it alone (one video at a time)")
            continue
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


def nearest_class(folder: str, class_names) -> str | None:
    """The class a folder's name most likely means (fearful: fear, happiness: happy, Anger: angry), or None."""
    name, lower = folder.lower(), [c.lower() for c in class_names]
    for c, low in zip(class_names, lower):  # the class's first four letters begin the name: sadness, surprised
        if name.startswith(low[:4]):
            return c
    close = difflib.get_close_matches(name, lower, n=1, cutoff=0.6)
    return class_names[lower.index(close[0])] if close else None


def evaluation_text(run: PredictionRun) -> str | None:
    """Accuracy, macro-F1 and the confusion matrix of the faces whose folder names their class, and the folders
    that name no class with the class each most likely means; None when no folder names or resembles a class."""
    from .metrics import compute_metrics

    probs, labels = run.labelled()
    nearest = {folder: nearest_class(folder, run.class_names) for folder in sorted(run.other_folders)}
    if len(labels) == 0 and not any(nearest.values()):
        return None
    lines = []
    if len(labels):
        m = compute_metrics(probs, labels, run.class_names)
        # Over the classes with faces here: a class no folder holds has no F1 to speak of, and scikit-learn's
        # macro average would count it as 0 whenever the model predicts it.
        present = [c for c in run.class_names if m["per_class"][c]["support"] > 0]
        macro_f1 = float(np.mean([m["per_class"][c]["f1"] for c in present]))
        predicted = np.asarray(m["confusion"]).sum(axis=0) > 0
        absent = [c for i, c in enumerate(run.class_names) if c not in present and predicted[i]]
        lines.append(f"accuracy {m['accuracy']:.4f} ({int(round(m['accuracy'] * m['n']))} of {m['n']} faces in folders "
                     f"named after a class), macro-F1 {macro_f1:.4f} over the {len(present)} classes present"
                     + (f" ({m['macro_f1']:.4f} counting {', '.join(absent)} at F1 0: predicted, but no face here "
                        "is one)" if absent else ""))
    if nearest:
        described = [f"{folder} ({run.other_folders[folder]} face(s), "
                     + (f"nearest class {cls})" if cls else "no class close)") for folder, cls in nearest.items()]
        lines.append(f"{sum(run.other_folders.values())} face(s) in folders named after no class of the model, not "
                     f"counted: {', '.join(described)}")
        if any(nearest.values()):
            pairs = ",".join(f"{folder}={cls}" for folder, cls in nearest.items() if cls)
            lines.append(f"to count them, map the folders to classes: --class-map {pairs}")
    if len(labels):
        lines += ["confusion matrix (rows: true class from the folder name, columns: predicted):",
                  format_confusion(m["confusion"], run.class_names)]
    return "\n".join(lines)


def summary_text(run: PredictionRun, csv_path: Path | None) -> str:
    lines = [f"{run.files_seen} file(s) seen, {run.images_read} image(s) read, {len(run.rows)} face(s) classified"
             + (f", {run.annotated} annotated image(s) written" if run.annotated else "")
             + (f"; predictions in {csv_path}" if csv_path else "; no face classified: nothing written")]
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

# ---------------------------------------------------------------- command line

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="emo-predict", description="Classify the facial expression in images, folders of images, zips, a video "
        "or a live camera. Writes a CSV (file, face box, label from a class-named folder, predicted class, "
        "probabilities); when the inputs sit in folders named after the classes, prints accuracy and the confusion "
        "matrix. For a video or a camera it follows each face over time and writes a CSV with a row per face per "
        "frame and a plot of each face's emotions over time.")
    parser.add_argument("inputs", nargs="*", help="image files, folders (searched recursively), zips, or one video "
                        f"({', '.join(video.VIDEO_SUFFIXES)})")
    parser.add_argument("--model", default="mini_xception",
                        help="a model in reports/ by name (reports/<name>/model.pt), or a path to a .pt or .onnx file "
                             "(default: %(default)s)")
    parser.add_argument("--csv", help="where to write the predictions (default: predictions.csv; for clip.mp4, "
                                      "clip_emotions.csv, with the plot beside it as clip_emotions.png)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the CSV, plot or annotated video if they exist (else the run refuses to start)")
    parser.add_argument("--detect-faces", action="store_true",
                        help="find faces with OpenCV's Haar cascade and classify each (for photos; always on for a "
                             "video or a camera); without it each image is taken to be one face crop, like FER2013's")
    parser.add_argument("--annotate", metavar="PATH",
                        help="write each image with its boxes and labels under this folder; for a video or a camera, "
                             "the annotated video to this .mp4 or .avi file (or into this folder)")
    parser.add_argument("--class-map", metavar="FOLDER=CLASS,...",
                        help="count faces in folders named unlike the model's classes, e.g. "
                             "--class-map fearful=fear,surprised=surprise")
    parser.add_argument("--margin", type=float, default=FACE_MARGIN,
                        help="share of the face box added on each side before cropping (default: %(default).3f, "
                             "which frames a face as FER2013 does)")
    parser.add_argument("--min-face", type=int, default=MIN_FACE,
                        help="smallest face to find, in pixels (default: %(default)s)")
    parser.add_argument("--scale-factor", type=float, default=1.1,
                        help="Haar pyramid step: larger is faster and misses more faces (default: %(default)s)")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--device", help="torch device for a .pt model (default: CUDA when present, else CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="faces classified in one call, across images (default: %(default)s); memory, not "
                             "results, depends on it")
    group = parser.add_argument_group("video and camera")
    group.add_argument("--camera", type=int, metavar="N",
                       help="read live from camera N (0 is the first); q in the window or Ctrl-C stops it")
    group.add_argument("--every", type=positive_int, default=video.EVERY, metavar="K",
                       help="find faces on every K-th frame and follow them in between (default: %(default)s)")
    group.add_argument("--detect-size", type=int, default=video.DETECT_SIZE, metavar="PX",
                       help="find faces on a copy of the frame scaled down to this longer side; faces are still "
                            "cropped from the full frame. 0: the whole frame (default: %(default)s)")
    group.add_argument("--smooth", type=non_negative, default=video.SMOOTH_SECONDS, metavar="SECONDS",
                       help="average each face's probabilities over this many seconds; 0 for none "
                            "(default: %(default)s)")
    return parser


def parse_class_map(text: str | None) -> dict[str, str]:
    mapping = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        folder, sep, cls = (part.strip() for part in pair.partition("="))
        if not (sep and folder and cls):
            raise PredictError(f"--class-map: {pair!r} is not FOLDER=CLASS; give pairs separated by commas, e.g. "
                               "--class-map fearful=fear,surprised=surprise")
        mapping[folder] = cls
    return mapping


@dataclass
class Outputs:
    """What a run will write, decided before the model is loaded so a clash costs nothing."""
    csv: Path
    plot: Path | None = None  # video and camera only
    annotated_video: Path | None = None  # video and camera with --annotate

    def files(self) -> list[Path]:
        return [p for p in (self.csv, self.plot, self.annotated_video) if p is not None]


def plan_outputs(args) -> Outputs:
    """Check the inputs and the output paths; a PredictError names what is wrong and the fix."""
    videos = [p for p in args.inputs if video.is_video(p)]
    if args.camera is not None and args.inputs:
        raise PredictError(f"--camera reads from a camera and takes no inputs, but got {', '.join(args.inputs)}; "
                           "run those separately.")
    if args.camera is None and not args.inputs:
        raise PredictError("nothing to classify: give images, folders, zips or a video, or --camera N.")
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise PredictError(f"input not found: {', '.join(missing)}")
    if videos and len(args.inputs) > 1:
        raise PredictError(f"a video is read alone, one per run, but got {', '.join(args.inputs)}; run emo-predict "
                           "once per video (for f in *.mp4; do emo-predict \"$f\"; done).")
    if args.camera is None and not videos:
        outputs = Outputs(Path(args.csv or "predictions.csv"))
    else:
        stem = Path(videos[0]).stem if videos else f"camera{args.camera}"
        csv_path = Path(args.csv or f"{stem}_emotions.csv")
        annotated = None
        if args.annotate:
            annotated = (Path(args.annotate) if video.is_video(args.annotate)
                         else Path(args.annotate) / f"{stem}_annotated.mp4")
        outputs = Outputs(csv_path, csv_path.with_suffix(".png"), annotated)
    if outputs.csv.is_dir():
        raise PredictError(f"--csv {outputs.csv} is a folder; give a file name, e.g. {outputs.csv / 'predictions.csv'}")
    existing = [str(p) for p in outputs.files() if p.exists()]
    if existing and not args.force:
        raise PredictError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: pass --force to "
                           f"overwrite, or {'--csv' if outputs.plot is None else '--csv and --annotate'} to write "
                           "elsewhere.")
    return outputs


def run_video(args, classifier: Classifier, outputs: Outputs, log: Callable[[str], None]) -> int:
    """A video file or a camera through video.predict_video, then its CSV, plot and summary."""
    detector = FaceDetector(args.scale_factor, min_face=args.min_face, max_side=args.detect_size or float("inf"))
    if args.camera is not None:
        capture, fps = video.open_camera(args.camera)
        source, total, clock = f"camera {args.camera}", None, time.monotonic
        window = video.open_window()
        if window is None:
            log("note: no window to show the camera in (no display, or opencv-python-headless, which has no "
                "windows; opencv-python<5 has them): " + (f"the annotated video goes to {outputs.annotated_video}"
                                                          if outputs.annotated_video else
                                                          "pass --annotate camera.mp4 to keep the boxes and labels")
                + "; press Ctrl-C to stop")
    else:
        source = args.inputs[0]
        capture, fps, total = video.open_video(source)
        clock, window = None, None
    run = video.predict_video(capture, classifier, detector, fps=fps, every=args.every, smooth=args.smooth,
                              margin=args.margin, annotate=outputs.annotated_video, window=window, clock=clock,
                              total=total, source=source)
    written = []
    if run.rows:
        written.append(f"predictions in {video.write_video_csv(run, outputs.csv)}")
        written.append(f"plot in {video.plot_emotions(run, outputs.plot)}")
    if outputs.annotated_video is not None and run.frames:
        written.append(f"annotated video in {outputs.annotated_video}")
    log(video.video_summary(run, args.every, args.detect_size, written))
    return 0 if run.rows else 1


def main(argv=None) -> int:
    """0: at least one face classified; 1: nothing could be classified; 2: a bad argument, model or input."""
    args = build_parser().parse_args(argv)

    def log(message: str):
        print(message, file=sys.stderr, flush=True)

    try:
        outputs = plan_outputs(args)
        class_map = parse_class_map(args.class_map)
    except PredictError as e:
        log(f"emo-predict: {e}")
        return 2
    from .train import CheckpointError

    try:
        classifier = load_classifier(args.model, tta=args.tta, device=args.device)
        unknown = {folder: cls for folder, cls in class_map.items() if cls not in classifier.class_names}
        if unknown:
            raise PredictError(f"--class-map {','.join(f'{f}={c}' for f, c in unknown.items())}: "
                               f"{', '.join(repr(c) for c in unknown.values())} not among the model's classes "
                               f"({', '.join(classifier.class_names)})")
        log(f"model {classifier.source} ({classifier.backend}, classes {', '.join(classifier.class_names)})")
        if args.camera is not None or video.is_video(args.inputs[0]):
            return run_video(args, classifier, outputs, log)
        detector = FaceDetector(args.scale_factor, min_face=args.min_face) if args.detect_faces else None
    except (PredictError, CheckpointError) as e:
        log(f"emo-predict: {e}")
        return 2
    run = predict_inputs(args.inputs, classifier, detector, args.margin, args.annotate, args.batch_size, log,
                         class_map)
    csv_path = write_csv(run, outputs.csv) if run.rows else None
    evaluation = evaluation_text(run)
    if evaluation:
        print(evaluation)
    log(summary_text(run, csv_path))
    return 0 if run.rows else 1


if __name__ == "__main__":
    sys.exit(main())
