"""Images, folders and zips classified in one run: every file read in place (a zip is never extracted), faces
found or taken whole, classified in batches across images, and the run's CSV, summary and, when the inputs sit
in folders named after the classes, accuracy and the confusion matrix. emo-predict (cli.py) is its command
line; a video or a camera is video.py's.
"""
from __future__ import annotations

import csv
import difflib
import os
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from PIL import Image

from .faces import FACE_MARGIN, Face, FaceDetector, PredictError, SkipFile, annotate, extract_faces, read_image
from .detectors import Aligner
from ..core.files import write_csv as write_rows
from ..core.metrics import compute_metrics
from ..core.readers import unsafe_member
from .video import is_video

if TYPE_CHECKING:  # annotations only: importing it at run time would import torch
    from ..core.inference import Classifier

MAX_FILE_BYTES = 200 * 2**20  # a file (or zip member) above this is not read at all


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


def input_folders(paths) -> set[str]:
    """The names of the folders holding files under the inputs (zips by their member paths, read from the
    zip's directory, no image decoded): what a --class-map folder must be one of."""
    names = set()
    for path in map(Path, paths):
        if path.is_dir():
            names.update(p.parent.name for p in path.rglob("*") if p.is_file())
        elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names.update(Path(n).parent.name for n in archive.namelist() if not n.endswith("/"))
        else:
            names.add(path.resolve().parent.name)
    return names


def read_boxes(path: str) -> dict[str, np.ndarray]:
    """--boxes: file -> boxes (n, 4: x, y, w, h) from a CSV with columns file, x, y, w, h."""
    boxes: dict[str, list] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"file", "x", "y", "w", "h"} - set(reader.fieldnames or [])
            if missing:
                raise PredictError(f"--boxes {path}: no column {', '.join(sorted(missing))}; the header must be "
                                   "file,x,y,w,h (one row per face)")
            for line, row in enumerate(reader, start=2):
                try:
                    box = [int(float(row[k])) for k in ("x", "y", "w", "h")]
                except (TypeError, ValueError):
                    raise PredictError(f"--boxes {path}, line {line}: x, y, w, h must be numbers (pixels), got "
                                       f"{[row[k] for k in ('x', 'y', 'w', 'h')]}") from None
                if box[2] < 1 or box[3] < 1:
                    raise PredictError(f"--boxes {path}, line {line}: width and height must be 1 or more, got "
                                       f"w={box[2]}, h={box[3]}")
                boxes.setdefault(row["file"], []).append(box)
    except (OSError, UnicodeDecodeError) as e:
        raise PredictError(f"--boxes {path}: cannot read it as a CSV ({e}); give a CSV file file,x,y,w,h") from None
    if not boxes:
        raise PredictError(f"--boxes {path}: no rows; give one row per face: file,x,y,w,h")
    return {name: np.array(rows, np.int64) for name, rows in boxes.items()}


def boxes_inside(boxes: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """The --boxes rows of one image that overlap it, and a note per row wholly outside it, left out: its crop
    would be the image's edge pixels, classified as a face without a word."""
    width, height = image_size
    x, y, w, h = boxes.T
    inside = (x < width) & (y < height) & (x + w > 0) & (y + h > 0)
    notes = [f"box x={b[0]}, y={b[1]}, w={b[2]}, h={b[3]} lies wholly outside the {width}x{height} image: left "
             "out (check the row's file and coordinates)" for b in boxes[~inside]]
    return boxes[inside], notes


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
                   log: Callable[[str], None] | None = None, class_map: dict[str, str] | None = None,
                   aligner: Aligner | None = None, boxes_by_file: dict[str, np.ndarray] | None = None) -> PredictionRun:
    """Classify every image under `paths` (images, folders, zips); a file that cannot be used is logged and
    skipped, and the run goes on. Faces are classified in batches across images. A face's label is its
    folder's name when that names a class, after `class_map` (folder name -> class, e.g. fearful -> fear).
    `boxes_by_file` (file name as listed, or its base name -> boxes x, y, w, h): the user's own face boxes,
    cut instead of detecting faces; an image it does not list is skipped."""
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
        if is_video(item.name):
            skip(item.name, "a video, not an image: run emo-predict on it alone (one video at a time)")
            continue
        notes: list[str] = []
        try:
            img = read_image(item.read(), notes)
            run.images_read += 1
            for note in notes:
                run.notes.append((item.name, note))
                log(f"note {item.name}: {note}")
            given = None
            if boxes_by_file is not None:
                keys = dict.fromkeys([item.name, PurePosixPath(item.name).name])  # as listed, and its base name
                rows = [boxes_by_file[k] for k in keys if k in boxes_by_file]
                given = np.concatenate(rows) if rows else None
                if given is None:
                    raise SkipFile("no box for it in --boxes (rows are file, x, y, w, h)")
                given, outside = boxes_inside(given, img.size)
                for note in outside:
                    run.notes.append((item.name, note))
                    log(f"note {item.name}: {note}")
                if not len(given):
                    raise SkipFile(f"every --boxes row for it lies wholly outside the {img.width}x{img.height} image")
            faces, boxes = extract_faces(img, detector, margin, aligner, given)
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
            skip(item.name, f"no face found ({detector.kind} detector, faces of {detector.min_face} px and larger); "
                            "if the image is already a face crop, run without --detect-faces")
            if annotate_dir is None:
                continue
        pending.append((item, faces, boxes, img if annotate_dir is not None else None))
        if sum(len(f) for _, f, _, _ in pending) >= batch_size or (annotate_dir is not None and len(pending) >= 8):
            flush()
    flush()
    return run


def write_csv(run: PredictionRun, path: str | os.PathLike) -> Path:
    return write_rows(path, run.columns(), run.rows)


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
