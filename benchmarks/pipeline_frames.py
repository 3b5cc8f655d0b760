"""The whole emo-predict pipeline on faces in frames: detect, crop (square or aligned), classify; a missed face
counts as wrong (issue 29, part 4; issue 30 chooses its detector defaults from it).

A seeded sample of --faces PrivateTest faces (test_private_clean, the faces with no duplicate in train or val,
when the data has that split; else test_private, and the script says which) is pasted into 640x480 frames, 1-4
faces a frame, each upscaled to 40-200 px (log-uniform), at a random free position, turned by up to
--max-rotation degrees, on one of three backgrounds (a smooth gradient, blurred noise, stripes), with camera
noise; --empty frames hold no face at all. Every detector setting runs emo-predict's own code on every frame
(faces.make_detector, faces.cut_faces: the functions the CLI uses), and each model classifies what it found.

Per setting and model: pipeline accuracy (faces found and labelled right / all faces) beside crop accuracy (the
same model on the same faces' own 48x48 crops: the baseline, measured in the same run), recall (a detection
overlapping the pasted box with IoU >= 0.3, one detection per face), false detections per frame (on the frames
with faces, and on the face-free ones), and frames/s idle and with a busy-loop process on another core (one
thread for torch, onnxruntime is not used here, OpenCV and dlib; a video setting detects on every K-th frame,
so its frames/s is 1 / (detection / K + crops and classification)). --write puts two tables into
reports/benchmarks.md: accuracy per setting, model and crop, and frames/s per setting and crop (the flagship's;
the model changes it little, and the text says by how much), emo-predict's defaults in bold.

    python benchmarks/pipeline_frames.py [--faces 1000] [--cnn-frames 25] [--write]
    # the accuracy in parts, untimed, beside other work; then only the timing, e.g. with training paused:
    python benchmarks/pipeline_frames.py --no-timing --only haar --accuracy-to acc_haar.json
    python benchmarks/pipeline_frames.py --no-timing --only "hog|cnn" --accuracy-to acc_dlib.json
    python benchmarks/pipeline_frames.py --accuracy-from "acc_haar.json|acc_dlib.json" --write

The dlib CNN detector takes seconds per 640x480 frame on one CPU thread: it runs on the first --cnn-frames frames
only (and is timed on a few), and its rows say so.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from emo_utils.predict import faces as face_ops
from emo_utils.predict.classifier import set_threads
from emo_utils.core.data import REPO_ROOT, load_dataset
from emo_utils.predict.cli import load_classifier
from emo_utils.provenance import git_commit
from emo_utils.reports.pages import replace_section
from emo_utils.predict.tracking import iou_matrix
from emo_utils.predict.video import SETTINGS, min_face_for

FRAME_SIZE = (640, 480)
MIN_IOU = 0.3  # as faces.match_faces counts a detection as a face
MODELS = {"flagship (vgg_gap)": "reports/vgg_gap/model.pt", "Mini-Xception": "reports/mini_xception/model.pt"}
# (name, make_detector keywords, the K of "faces found on every K-th frame" to time it with): emo-predict's
# settings and the alternatives. The photo settings detect on every frame; the webcam one on every 2nd and the
# video one on every 3rd, with the tracker in between. Names are short enough for a table cell: "haar 1.1, >= 48 px" is the
# cascade's pyramid step and smallest face; HOG's smallest face is 80 px at upsample 0, 40 px at upsample 1.
CANDIDATES = [
    ("haar 1.1, >= 48 px, whole frame", dict(detector="haar", scale_factor=1.1, min_face=48, max_side=1600), (1,)),
    ("haar 1.1, >= 32 px, whole frame", dict(detector="haar", scale_factor=1.1, min_face=32, max_side=1600), (1,)),
    ("haar 1.1, >= 48 px, 480 px copy", dict(detector="haar", scale_factor=1.1, min_face=48, max_side=480), (2,)),
    ("haar 1.2, >= 80 px, 480 px copy", dict(detector="haar", scale_factor=1.2, min_face=80, max_side=480), (2,)),
    ("hog, upsample 0", dict(detector="hog", upsample=0, min_face=0, max_side=1600), (1, 2)),
    ("hog, upsample 1", dict(detector="hog", upsample=1, min_face=0, max_side=1600), (1, 2, 3)),
    ("cnn, upsample 0", dict(detector="cnn", upsample=0, min_face=0, max_side=1600), (1,)),
]
REPORT = REPO_ROOT / "reports" / "benchmarks.md"


def background(rng, kind: int) -> np.ndarray:
    """An RGB 640x480 background: a smooth gradient, blurred noise (clutter), or stripes (a wall, blinds)."""
    width, height = FRAME_SIZE
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    if kind == 0:
        c = rng.uniform(40, 200, 3)
        base = np.stack([c[0] + 60 * xx, c[1] + 40 * yy, c[2] - 40 * xx + 20 * np.sin(6 * yy)], axis=-1)
    elif kind == 1:
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), 8)
        base = 128 + (noise - noise.mean()) * 4
    else:
        period, angle = rng.uniform(20, 80), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) * max(height, width) / period)
        base = np.stack([110 + 50 * wave] * 3, axis=-1) * rng.uniform(0.7, 1.3, 3)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255)


def paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int, side: int, angle: float):
    """The 48x48 face upscaled to side px and turned by angle degrees about its centre, pasted at (x, y):
    the turned square's corners show the background, as around a real face."""
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    turned = cv2.warpAffine(big, matrix, (side, side), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((side, side), np.float32), matrix, (side, side), flags=cv2.INTER_LINEAR)
    region = canvas[y:y + side, x:x + side]
    region[:] = region * (1 - mask[..., None]) + turned[..., None] * mask[..., None]


def make_frames(faces_u8: np.ndarray, empty: int, max_rotation: float, seed: int):
    """(frames RGB uint8, boxes per frame (n, 4), face indices per frame): every face pasted once."""
    rng = np.random.default_rng(seed)
    frames, boxes, which = [], [], []
    order, start = rng.permutation(len(faces_u8)), 0
    while start < len(order):
        count = int(rng.integers(1, 5))
        canvas = background(rng, int(rng.integers(0, 3)))
        placed, indices = [], []
        for index in order[start:start + count]:
            for _ in range(50):  # a free spot: no overlap with the faces already placed
                side = int(round(math.exp(rng.uniform(math.log(40), math.log(200)))))
                x, y = int(rng.integers(0, FRAME_SIZE[0] - side)), int(rng.integers(0, FRAME_SIZE[1] - side))
                if not placed or iou_matrix([(x, y, side, side)], placed).max() == 0:
                    break
            else:
                continue
            paste(canvas, faces_u8[index], x, y, side, rng.uniform(-max_rotation, max_rotation))
            placed.append((x, y, side, side))
            indices.append(index)
        start += count
        frames.append(np.clip(canvas + rng.normal(0, 2, canvas.shape), 0, 255).astype(np.uint8))
        boxes.append(np.array(placed, np.int64).reshape(-1, 4))
        which.append(np.array(indices, np.int64))
    for _ in range(empty):
        frames.append(np.clip(background(rng, int(rng.integers(0, 3))), 0, 255).astype(np.uint8))
        boxes.append(np.zeros((0, 4), np.int64))
        which.append(np.zeros(0, np.int64))
    return frames, boxes, which


def match(truth, found) -> tuple[np.ndarray, int]:
    """For each true box, the index of the detection matched to it (-1: missed), greedily by IoU >= MIN_IOU,
    one detection per face; and the number of detections matched to no face (false detections)."""
    matched = np.full(len(truth), -1)
    if len(truth) and len(found):
        ious = iou_matrix(truth, found)
        for flat in np.argsort(-ious, axis=None, kind="stable"):
            t, f = np.unravel_index(flat, ious.shape)
            if ious[t, f] < MIN_IOU:
                break
            if matched[t] < 0 and f not in matched:
                matched[t] = f
    return matched, int(len(found) - (matched >= 0).sum())


def fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def accuracy_pass(args, frames, grays, truth, which, labels, classifiers, crop_correct, aligner) -> dict:
    """Per setting: recall, false detections, and per model and crop (square, aligned) pipeline accuracy.
    Untimed: it may run beside other work."""
    accuracy = {}
    for name, keywords, _ in CANDIDATES:
        if args.only and not any(part in name for part in args.only.split("|")):
            continue
        keywords = dict(keywords)
        detector = face_ops.make_detector(keywords.pop("detector"), **keywords)
        seen = list(range(min(args.cnn_frames, len(frames)) if detector.kind == "cnn" else len(frames)))
        found_all = [detector.detect(grays[i]) for i in seen]
        faces_seen = np.concatenate([which[i] for i in seen])
        false_face = false_empty = 0
        matched_all = []
        for i, found in zip(seen, found_all):
            matched, extra = match(truth[i], found)
            matched_all.append(matched)
            if len(truth[i]):
                false_face += extra
            else:
                false_empty += extra
        pipeline = {}
        for align in (False, True):  # every detection cut (square, or aligned), one batch per model
            crops = [face_ops.cut_faces(frames[i], grays[i], found, aligner=aligner if align else None)
                     for i, found in zip(seen, found_all)]
            for model, classifier in classifiers.items():
                predicted = classifier.predict_proba(np.concatenate(crops)).argmax(1)
                ok, at = [], 0
                for i, found, matched in zip(seen, found_all, matched_all):
                    own = predicted[at:at + len(found)]
                    at += len(found)
                    ok += [bool(m >= 0 and own[m] == labels[f]) for m, f in zip(matched, which[i])]
                pipeline[f"{model}|{align}"] = float(np.mean(ok))
        frames_with = sum(len(truth[i]) > 0 for i in seen)
        frames_without = len(seen) - frames_with
        accuracy[name] = dict(kind=detector.kind, frames=len(seen), faces=len(faces_seen), pipeline=pipeline,
                              crop={m: float(c[faces_seen].mean()) for m, c in crop_correct.items()},
                              recall=float((np.concatenate(matched_all) >= 0).mean()),
                              false_face=false_face / max(frames_with, 1),
                              false_empty=false_empty / frames_without if frames_without else None)
        print(f"{name}: recall {accuracy[name]['recall']:.3f} on {len(seen)} frames", flush=True)
    return accuracy


def timing_pass(args, name, keywords, frames, grays, classifiers, aligner) -> dict:
    """Seconds per frame of detection and of cut + classify per model and crop, frame by frame as the CLI works,
    idle and with a busy-loop process pinned to core 0, on the first --timed-frames frames (fewer for cnn)."""
    detector = face_ops.make_detector(keywords.pop("detector"), **keywords)
    timed = list(range(max(2, args.timed_frames // 20) if detector.kind == "cnn" else args.timed_frames))
    found_all = [detector.detect(grays[i]) for i in timed]
    seconds = {}
    for load in ("idle", "busy"):
        busy = multiprocessing.Process(target=busy_loop, daemon=True) if load == "busy" else None
        if busy:
            busy.start()
            time.sleep(0.2)
        try:
            t0 = time.perf_counter()
            for i in timed:
                detector.detect(grays[i])
            seconds[load, "detect"] = (time.perf_counter() - t0) / len(timed)
            for model, classifier in classifiers.items():
                for align in (False, True):
                    t0 = time.perf_counter()
                    for i, found in zip(timed, found_all):
                        classifier.predict_proba(face_ops.cut_faces(frames[i], grays[i], found,
                                                                    aligner=aligner if align else None))
                    seconds[load, model, align] = (time.perf_counter() - t0) / len(timed)
        finally:
            if busy:
                busy.terminate()
                busy.join()
    return seconds


def busy_loop():
    os.sched_setaffinity(0, {0})
    while True:
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1000, help="PrivateTest faces in the frames (seeded sample)")
    parser.add_argument("--empty", type=int, default=100, help="frames with no face, for false detections")
    parser.add_argument("--max-rotation", type=float, default=15.0, help="faces turned by up to this, degrees")
    parser.add_argument("--cnn-frames", type=int, default=25, help="frames the slow dlib CNN detector runs on")
    parser.add_argument("--timed-frames", type=int, default=40, help="frames timed idle and busy per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="run only the settings whose name contains this (or one of a|b|c)")
    parser.add_argument("--write", action="store_true", help="write the table into reports/benchmarks.md")
    parser.add_argument("--accuracy-to", help="save the accuracy pass (untimed) to this JSON file")
    parser.add_argument("--accuracy-from", help="read the accuracy pass from this JSON file, or files a|b (made "
                                                "with the same arguments) and only time: e.g. under "
                                                "with-training-paused")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing pass")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    commit = git_commit()  # the code this run starts with: a later checkout or edit does not change what it ran
    set_threads(1)

    data = load_dataset()
    split = "test_private_clean" if "test_private_clean" in data.clean_splits() else "test_private"
    images, labels = data.split(split)
    chosen = np.random.default_rng(args.seed).choice(len(images), min(args.faces, len(images)), replace=False)
    faces_u8, labels = images[chosen], labels[chosen]
    print(f"split {split}: {len(chosen)} of its {len(images)} faces (seed {args.seed}), data {data.sha256[:12]}")
    frames, truth, which = make_frames(faces_u8, args.empty, args.max_rotation, args.seed)
    with_faces = sum(len(t) > 0 for t in truth)
    print(f"{len(frames)} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]}: {with_faces} with faces, {args.empty} without")
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]

    classifiers = {name: load_classifier(REPO_ROOT / path, device="cpu") for name, path in MODELS.items()}
    crop_correct = {name: c.predict_proba(faces_u8).argmax(1) == labels for name, c in classifiers.items()}
    aligner = face_ops.make_aligner()

    if args.accuracy_from:  # one file, or several (a|b) made by runs with --only, side by side
        accuracy, made = {}, []
        for part in args.accuracy_from.split("|"):
            accuracy.update(json.loads(Path(part).read_text()))
            made.append(accuracy.pop("_made_at", commit))
        accuracy["_made_at"] = " and ".join(dict.fromkeys(made))  # each part's commit, once
    else:
        accuracy = accuracy_pass(args, frames, grays, truth, which, labels, classifiers, crop_correct, aligner)
    if args.accuracy_to:
        Path(args.accuracy_to).write_text(json.dumps(dict(accuracy, _made_at=commit), indent=1))
    made_at = accuracy.pop("_made_at", commit)
    speeds = {}  # (setting, every, model, align) -> frames/s {"idle", "busy"}
    for name, keywords, everies in CANDIDATES:
        if name not in accuracy or args.no_timing:
            continue
        seconds = timing_pass(args, name, dict(keywords), frames, grays, classifiers, aligner)
        for every in everies:
            for model in classifiers:
                for align in (False, True):
                    fps = speeds[name, every, model, align] = {
                        load: 1 / (seconds[load, "detect"] / every + seconds[load, model, align])
                        for load in ("idle", "busy")}
                    print(f"{name + (f', every {every}' if every > 1 else ''):40s} {model:19s} align "
                          f"{'on ' if align else 'off'}: frames/s {fps['idle']:.1f} idle, {fps['busy']:.1f} busy",
                          flush=True)
    for name, a in accuracy.items():
        for key, pipeline in a["pipeline"].items():
            model, align = key.split("|")
            print(f"{name:40s} {model:19s} align {'on ' if align == 'True' else 'off'}: pipeline {pipeline:.3f} "
                  f"(crops {a['crop'][model]:.3f}), recall {a['recall']:.3f}, false/frame {a['false_face']:.3f} "
                  f"with faces, {fmt(a['false_empty'])} without ({a['frames']} frames)")
    wall = time.perf_counter() - started
    print(f"wall time {wall / 60:.1f} min")
    if args.write:
        out = write(args, argv if argv is not None else sys.argv[1:], accuracy, speeds, split, len(chosen),
                    len(frames), with_faces, data.sha256, wall, commit, made_at)
        print(f"written to {out}")


def shown_command(argv: list[str]) -> str:
    """The command line as a reader of the repository can rerun it: a file argument by its name, never this
    machine's path to it (--accuracy-from /tmp/a/acc_haar.json|/tmp/a/acc_dlib.json -> acc_haar.json|...)."""
    def shown(arg):
        flag, eq, value = arg.rpartition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        if "/" in value:
            value = "|".join(Path(part).name for part in value.split("|"))
        return flag + eq + value
    return " ".join(["python", f"benchmarks/{Path(__file__).name}", *map(shown, argv)])


def commit_text(commit: str) -> str:
    """reports.git_commit()'s 'sha' or 'sha+uncommitted' as a reader reads it; several joined by ' and '."""
    if " and " in commit:
        return " and ".join(commit_text(part) for part in commit.split(" and "))
    sha, _, dirty = commit.partition("+")
    return f"`{sha}`" + (" with uncommitted changes" if dirty else "")


def defaults_of(keywords: dict, align: bool, every: int | None = None) -> list[str]:
    """The emo-predict settings (video.SETTINGS: photo, video, webcam) a candidate is, with this crop (and, when
    given, this K of "faces found on every K-th frame")."""
    names = []
    for setting, s in SETTINGS.items():
        same = (s["detector"] == keywords["detector"] and s["align"] == align
                and (s["detect_size"] or math.inf) == keywords["max_side"] and every in (None, s["every"]))
        if keywords["detector"] == "haar":  # a dlib detector's smallest face is its window's (min_face_for)
            same &= (s["scale_factor"] == keywords["scale_factor"]
                     and min_face_for("haar", s["min_face"]) == keywords["min_face"])
        else:
            same &= s["upsample"] == keywords["upsample"]
        if same:
            names.append(setting)
    return names


def table_row(cells: list[str], bold: bool) -> str:
    return "| " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |\n"


def write(args, argv, accuracy, speeds, split, n_faces, n_frames, with_faces, checksum, wall, commit, made_at,
          path: Path | None = None) -> Path:
    """Two tables into reports/benchmarks.md: accuracy per setting, model and crop; frames/s per setting (with
    its K) and crop, the flagship's. emo-predict's defaults in bold."""
    from emo_utils.core.distributed import cpu_name

    flagship = next(iter(MODELS))
    accuracy_rows, speed_rows = "", ""
    for name, keywords, everies in CANDIDATES:
        if name not in accuracy:
            continue
        a = accuracy[name]
        for model in MODELS:
            for align in (False, True):
                defaults = defaults_of(keywords, align)
                shown = (name + (f" ({a['frames']} frames)" if a["kind"] == "cnn" else "")
                         + (f" ({', '.join(defaults)})" if defaults else ""))
                accuracy_rows += table_row(
                    [shown, model, "on" if align else "off", f"{a['pipeline'][f'{model}|{align}']:.3f}",
                     f"{a['crop'][model]:.3f}", f"{a['recall']:.3f}", f"{a['false_face']:.3f}",
                     "—" if a["false_empty"] is None else f"{a['false_empty']:.3f}"], bool(defaults))
        for every in everies:
            for align in (False, True):
                if (name, every, flagship, align) not in speeds:
                    continue
                fps = speeds[name, every, flagship, align]
                defaults = defaults_of(keywords, align, every)
                shown = (name + (f", every {every}" if every > 1 else "")
                         + (f" ({', '.join(defaults)})" if defaults else ""))
                speed_rows += table_row([shown, "on" if align else "off", f"{fps['idle']:.1f}",
                                         f"{fps['busy']:.1f}"], bool(defaults))
    # How much the model changes the speed: every other model's frames/s against the flagship's, same row.
    ratios = [fps[load] / speeds[name, every, flagship, align][load]
              for (name, every, model, align), fps in speeds.items() if model != flagship for load in fps]
    others = ", ".join(m for m in MODELS if m != flagship)
    model_note = (f"{others}'s frames/s differ from these by {100 * (min(ratios) - 1):+.0f}% to "
                  f"{100 * (max(ratios) - 1):+.0f}% (the log has both)" if ratios else "")
    chosen = "; ".join(f"{k}: {v['detector']}" + (f" upsample {v['upsample']}" if v["detector"] != "haar" else "")
                       + f", align {'on' if v['align'] else 'off'}, every {v['every']}" for k, v in SETTINGS.items())
    body = (f"`{shown_command(argv)}` on {cpu_name()}, 1 thread (torch, OpenCV, dlib), torch {torch.__version__}, "
            f"opencv {cv2.__version__}; commit {commit_text(commit)}; data sha256 `{checksum[:12]}`; seed "
            f"{args.seed}; wall time {wall / 60:.1f} min; 1-minute load average {os.getloadavg()[0]:.1f} at the end "
            "(the machine is shared). "
            + (f"Accuracy, recall and false detections from an untimed pass with the same arguments at commit "
               f"{commit_text(made_at)} (`--accuracy-to`, run beside other work); frames/s from this run's timing "
               "pass. " if args.accuracy_from else "")
            + "\n\n"
            f"{n_faces} faces of split `{split}` (seeded sample), 40-200 px, turned by up to {args.max_rotation:g} "
            f"degrees, 1-4 a frame on three kinds of background, in {with_faces} frames of {FRAME_SIZE[0]}x"
            f"{FRAME_SIZE[1]}, and {n_frames - with_faces} frames with no face. Detector settings: haar 1.1, >= 48 "
            "px is OpenCV's cascade with pyramid step 1.1 and faces of 48 px and up, on the whole frame or on a "
            "copy 480 px wide; dlib's HOG finds faces of 80 px and up without upsampling, 40 px and up upsampled "
            f"once; dlib's CNN runs on the first {args.cnn_frames} frames only. In bold, named after them: "
            f"emo-predict's defaults (emo_utils/predict/video.py SETTINGS), chosen from these tables: {chosen}.\n\n"
            "Pipeline accuracy counts a missed face as wrong; crop accuracy is the same model on the same faces' "
            "own 48x48 crops (the baseline, same run); recall: a detection with IoU >= 0.3, one per face; false "
            "detections per frame with faces and per face-free frame. Every frame is a still, detected on its "
            "own, so a setting's accuracy does not depend on how often video finds faces.\n\n"
            "| detector setting | model | align | pipeline acc. | crop acc. | recall | false det./frame | "
            "false det./empty frame |\n|---|---|---|---:|---:|---:|---:|---:|\n" + accuracy_rows + "\n"
            + ("frames/s of the flagship: detection (divided by K when faces are found on every K-th frame, the "
               "tracker in between) plus crops and classification, idle and with a busy-loop process pinned to one "
               "of the 2 cores. The model adds little to a frame's time: " + model_note + ".\n\n"
               "| detector setting | align | frames/s idle | frames/s, one core busy |\n|---|---|---:|---:|\n"
               + speed_rows if speed_rows else "No timing pass in this run (`--no-timing`): no frames/s.\n"))
    return replace_section(path or REPORT, "Faces in frames: the whole pipeline", body)


if __name__ == "__main__":
    main()
