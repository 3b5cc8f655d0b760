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

from emo_utils.predict import choice, faces as face_ops, framing
from emo_utils.predict.detectors import MTCNN_THRESHOLDS
from emo_utils.predict.scenes import FRAME_SIZE, background, make_frames, paste  # noqa: F401 (tests use them)
from emo_utils.predict.classifier import set_threads
from emo_utils.core.data import REPO_ROOT, load_dataset
from emo_utils.predict.cli import load_classifier
from emo_utils.provenance import git_commit
from emo_utils.reports.pages import replace_section
from emo_utils.predict.tracking import iou_matrix
from emo_utils.predict.video import SETTINGS, min_face_for

MIN_IOU = 0.3  # as faces.match_faces counts a detection as a face
MODELS = {"flagship (vgg_gap)": "reports/vgg_gap/model.pt", "Mini-Xception": "reports/mini_xception/model.pt",
          # issue 38's fine-tunes for corrupted and detector-framed faces
          "robust flagship": "reports/vgg_gap_robust/model.pt", "robust Mini-Xception": "reports/mini_xception_robust/model.pt"}
# (name, make_detector keywords, the K of "faces found on every K-th frame" to time it with): emo-predict's
# settings and the alternatives. The photo settings detect on every frame; the webcam one on every 2nd and the
# video one on every 8th, with the tracker in between. Names are short enough for a table cell: "haar 1.1, >= 48 px" is the
# cascade's pyramid step and smallest face; HOG's smallest face is 80 px at upsample 0, 40 px at upsample 1.
CANDIDATES = [
    ("haar 1.1, >= 48 px, whole frame", dict(detector="haar", scale_factor=1.1, min_face=48, max_side=1600), (1,)),
    ("haar 1.1, >= 32 px, whole frame", dict(detector="haar", scale_factor=1.1, min_face=32, max_side=1600), (1,)),
    ("haar 1.1, >= 48 px, 480 px copy", dict(detector="haar", scale_factor=1.1, min_face=48, max_side=480), (2,)),
    ("haar 1.2, >= 80 px, 480 px copy", dict(detector="haar", scale_factor=1.2, min_face=80, max_side=480), (2,)),
    ("hog, upsample 0", dict(detector="hog", upsample=0, min_face=0, max_side=1600), (1, 2)),
    ("hog, upsample 1", dict(detector="hog", upsample=1, min_face=0, max_side=1600), (1, 2, 3)),
    ("cnn, upsample 0", dict(detector="cnn", upsample=0, min_face=0, max_side=1600), (1,)),
    ("mtcnn, >= 40 px", dict(detector="mtcnn", min_face=40, max_side=1600, thresholds=(0.6, 0.7, 0.7)), (1, 3)),
    ("mtcnn, >= 80 px", dict(detector="mtcnn", min_face=80, max_side=1600, thresholds=(0.6, 0.7, 0.7)), (1, 2, 3)),
    ("mtcnn low, >= 40 px", dict(detector="mtcnn", min_face=40, max_side=1600, thresholds=MTCNN_THRESHOLDS),
     (1, 2, 3, 4, 8)),
]
REPORT = REPO_ROOT / "reports" / "benchmarks.md"
CHOICE = choice.CHOICE_FILE  # emo-predict's default model and the numbers its --help states
SIZE_BINS = (40, 60, 100, 200)  # face sides in px: small (HOG needs upsampling), medium, large


def tilt_bins(max_rotation: float) -> tuple[float, ...]:
    """Three equal bins of |tilt| from 0 to --max-rotation degrees."""
    return tuple(round(max_rotation * k / 3, 1) for k in range(4))


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


def accuracy_pass(args, frames, grays, truth, which, angles, labels, classifiers, crop_correct, aligners) -> dict:
    """Per setting: recall (overall, by face size and by tilt), false detections, how the aligned crop frames a
    face, and per model and crop (square, aligned) pipeline accuracy. Untimed: it may run beside other work."""
    accuracy = {}
    for name, keywords, _ in CANDIDATES:
        if args.only and not any(part in name for part in args.only.split("|")):
            continue
        keywords = dict(keywords)
        detector = face_ops.make_detector(keywords.pop("detector"), **keywords)
        aligner = aligners[face_ops.landmarks_for(detector.kind)]
        seen = list(range(min(args.cnn_frames, len(frames)) if detector.kind == "cnn" else len(frames)))
        found_all = [detector.detect(grays[i]) for i in seen]
        faces_seen = np.concatenate([which[i] for i in seen])
        false_face = false_empty = 0
        matched_all, transforms = [], []
        for i, found in zip(seen, found_all):
            matched, extra = match(truth[i], found)
            matched_all.append(matched)
            transforms += framing.framing_of(truth[i], angles[i], found, matched, grays[i], aligner)
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
        matched_seen = np.concatenate(matched_all)
        sizes = np.concatenate([truth[i][:, 2] for i in seen]).astype(np.float64)
        tilts = np.abs(np.concatenate([angles[i] for i in seen]))
        accuracy[name] = dict(kind=detector.kind, frames=len(seen), faces=len(faces_seen), pipeline=pipeline,
                              crop={m: float(c[faces_seen].mean()) for m, c in crop_correct.items()},
                              recall=float((matched_seen >= 0).mean()),
                              recall_size=framing.binned_recall(matched_seen, sizes, SIZE_BINS),
                              recall_tilt=framing.binned_recall(matched_seen, tilts, tilt_bins(args.max_rotation)),
                              framing=framing.percentiles(transforms),
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
    parser.add_argument("--timing-to", help="save the timing pass's frames/s to this JSON file")
    parser.add_argument("--timing-from", help="read the frames/s from this JSON file, or files a|b (made by "
                                              "--timing-to with the same arguments) instead of timing")
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
    frames, truth, which, angles = make_frames(faces_u8, args.empty, args.max_rotation, args.seed)
    with_faces = sum(len(t) > 0 for t in truth)
    print(f"{len(frames)} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]}: {with_faces} with faces, {args.empty} without")
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]

    classifiers = {name: load_classifier(REPO_ROOT / path, device="cpu") for name, path in MODELS.items()}
    crop_correct = {name: c.predict_proba(faces_u8).argmax(1) == labels for name, c in classifiers.items()}
    aligners = {landmarks: face_ops.make_aligner(landmarks) for landmarks in ("dlib", "mtcnn")}

    if args.accuracy_from:  # one file, or several (a|b) made by runs with --only, side by side
        accuracy, made = {}, []
        for part in args.accuracy_from.split("|"):
            accuracy.update(json.loads(Path(part).read_text()))
            made.append(accuracy.pop("_made_at", commit))
        accuracy["_made_at"] = " and ".join(dict.fromkeys(made))  # each part's commit, once
    else:
        accuracy = accuracy_pass(args, frames, grays, truth, which, angles, labels, classifiers, crop_correct,
                                 aligners)
    if args.accuracy_to:
        Path(args.accuracy_to).write_text(json.dumps(dict(accuracy, _made_at=commit), indent=1))
    made_at = accuracy.pop("_made_at", commit)
    speeds = {}  # (setting, every, model, align) -> frames/s {"idle", "busy"}
    if args.timing_from:
        speeds = {(name, int(every), model, align == "True"): fps for part in args.timing_from.split("|")
                  for key, fps in json.loads(Path(part).read_text()).items()
                  for name, every, model, align in [key.split("|")]}
    for name, keywords, everies in CANDIDATES:
        if name not in accuracy or args.no_timing or args.timing_from:
            continue
        seconds = timing_pass(args, name, dict(keywords), frames, grays, classifiers,
                              aligners[face_ops.landmarks_for(keywords["detector"])])
        for every in everies:
            for model in classifiers:
                for align in (False, True):
                    fps = speeds[name, every, model, align] = {
                        load: 1 / (seconds[load, "detect"] / every + seconds[load, model, align])
                        for load in ("idle", "busy")}
                    print(f"{name + (f', every {every}' if every > 1 else ''):40s} {model:19s} align "
                          f"{'on ' if align else 'off'}: frames/s {fps['idle']:.1f} idle, {fps['busy']:.1f} busy",
                          flush=True)
    if args.timing_to:
        Path(args.timing_to).write_text(json.dumps({"|".join(map(str, key)): fps for key, fps in speeds.items()}))
    for name, a in accuracy.items():
        for key, pipeline in a["pipeline"].items():
            model, align = key.split("|")
            print(f"{name:40s} {model:19s} align {'on ' if align == 'True' else 'off'}: pipeline {pipeline:.3f} "
                  f"(crops {a['crop'][model]:.3f}), recall {a['recall']:.3f}, false/frame {a['false_face']:.3f} "
                  f"with faces, {fmt(a['false_empty'])} without ({a['frames']} frames)")
    wall = time.perf_counter() - started
    print(f"wall time {wall / 60:.1f} min")
    if args.write:
        argv = argv if argv is not None else sys.argv[1:]
        out = write(args, argv, accuracy, speeds, split, len(chosen), len(frames), with_faces, data.sha256, wall,
                    commit, made_at)
        print(f"written to {out} and {write_choice(argv, accuracy, speeds, len(chosen), commit)}")


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
        elif keywords["detector"] == "mtcnn":
            same &= (min_face_for("mtcnn", s["min_face"]) == keywords["min_face"]
                     and tuple(keywords["thresholds"]) == MTCNN_THRESHOLDS)
        else:
            same &= s["upsample"] == keywords["upsample"]
        if same:
            names.append(setting)
    return names


def table_row(cells: list[str], bold: bool) -> str:
    return "| " + " | ".join(f"**{c}**" if bold else c for c in cells) + " |\n"


def detail_tables(args, accuracy) -> str:
    """Recall by face size and tilt per detector setting, and how its aligned crop frames a face against
    FER2013's own crop (percentiles over the faces found; framing.py), for training on crops framed alike."""
    recall_rows, framing_rows = "", ""
    tilts = tilt_bins(args.max_rotation)
    sizes_head = [f"{low:g}-{high:g} px" for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:])]
    tilts_head = [f"tilt {low:g}-{high:g}°" for low, high in zip(tilts[:-1], tilts[1:])]
    for name, keywords, _ in CANDIDATES:
        if name not in accuracy:
            continue
        a = accuracy[name]
        defaults = defaults_of(keywords, True)
        shown = name + (f" ({', '.join(defaults)})" if defaults else "")
        recall_rows += table_row([shown, f"{a['recall']:.3f}", *(fmt(v) for v in a["recall_size"].values()),
                                  *(fmt(v) for v in a["recall_tilt"].values())], bool(defaults))
        for quantity, shown_quantity in (("scale", "scale"), ("dx", "x offset (px)"), ("dy", "y offset (px)"),
                                         ("angle", "rotation (°)")):
            values = a.get("framing", {}).get(quantity)
            if values is not None:
                framing_rows += table_row([shown, shown_quantity, *(f"{v:.2f}" for v in values)], bool(defaults))
    percentiles = [f"{p}%" for p in framing.PERCENTILES]
    return ("\nRecall by face side and by tilt (|angle| turned), all faces each setting saw:\n\n"
            "| detector setting | recall | " + " | ".join(sizes_head + tilts_head) + " |\n|---|"
            + "---:|" * (1 + len(sizes_head) + len(tilts_head)) + "\n" + recall_rows
            + ("\nHow the detector and the aligner frame a face (aligned crops): the similarity transform from a "
               "face's own 48x48 FER2013 crop to the crop the pipeline cut of it, computed exactly from where the "
               "face was pasted and the aligner's warp (emo_utils/predict/framing.py), percentiles over the faces "
               "found. scale: crop px per original px (over 1: the face is larger, framed tighter, than FER2013 "
               "frames it); x and y offset: where the original face's centre lands, in px of the 48 px crop from "
               "its centre (positive: right, down); rotation: degrees the face stands turned in the crop "
               "(counter-clockwise positive).\n\n"
               "| detector setting | quantity | " + " | ".join(percentiles) + " |\n|---|---|"
               + "---:|" * len(percentiles) + "\n" + framing_rows if framing_rows else "") + "\n")


def setting_candidate(setting: str) -> tuple[str, int] | None:
    """The candidate (name, K) that is emo-predict's setting, with its crop."""
    for name, keywords, everies in CANDIDATES:
        for every in everies:
            if setting in defaults_of(keywords, SETTINGS[setting]["align"], every):
                return name, every
    return None


def write_choice(argv, accuracy, speeds, n_faces, commit, path: Path | None = None) -> Path | None:
    """choice.CHOICE_FILE: the model with the best pipeline accuracy under the photo default (emo-predict's
    default model) beside the others, and each setting's recall and frames/s, for --help."""
    photo = setting_candidate("photo")
    if photo is None or photo[0] not in accuracy:
        return None
    align = SETTINGS["photo"]["align"]
    a = accuracy[photo[0]]
    models = {Path(MODELS[label]).parent.name: dict(label=label, pipeline=a["pipeline"][f"{label}|{align}"],
                                                   crop=a["crop"][label]) for label in MODELS if label in a["crop"]}
    best = max(models, key=lambda name: models[name]["pipeline"])
    settings = {}
    for setting in SETTINGS:
        found = setting_candidate(setting)
        if found is None or found[0] not in accuracy:
            continue
        name, every = found
        fps = speeds.get((name, every, models[best]["label"], SETTINGS[setting]["align"]), {})
        settings[setting] = dict(candidate=name, every=every, recall=accuracy[name]["recall"],
                                 fps_idle=fps.get("idle"), fps_busy=fps.get("busy"))
    out = Path(path or CHOICE)
    out.write_text(json.dumps(dict(command=shown_command(argv), commit=commit, faces=n_faces, model=best,
                                   models=models, settings=settings), indent=1) + "\n")
    return out


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
        for model in (m for m in MODELS if m in a["crop"]):  # a pass saved before a model was added lacks it
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
    partial = {m: [name for name, a in accuracy.items() if m in a["crop"]] for m in MODELS
               if not all(m in a["crop"] for a in accuracy.values())}
    partial_note = "".join(f" {m} was measured under {', '.join(names)} only." for m, names in partial.items())
    chosen = "; ".join(f"{k}: {v['detector']}" + (f" upsample {v['upsample']}" if v["detector"] in ("hog", "cnn")
                                                   else "")
                       + f", align {'on' if v['align'] else 'off'}, every {v['every']}" for k, v in SETTINGS.items())
    body = (f"`{shown_command(argv)}` on {cpu_name()}, 1 thread (torch, OpenCV, dlib), torch {torch.__version__}, "
            f"opencv {cv2.__version__}; commit {commit_text(commit)}; data sha256 `{checksum[:12]}`; seed "
            f"{args.seed}; wall time {wall / 60:.1f} min; 1-minute load average {os.getloadavg()[0]:.1f} at the end "
            "(the machine is shared). "
            + (f"Accuracy, recall and false detections from an untimed pass with the same arguments at commit "
               f"{commit_text(made_at)} (`--accuracy-to`, run beside other work); frames/s from this run's timing "
               "pass" + (" (run just before, saved with `--timing-to`)" if args.timing_from else "") + ". "
               if args.accuracy_from else "")
            + "\n\n"
            f"{n_faces} faces of split `{split}` (seeded sample), 40-200 px, turned by up to {args.max_rotation:g} "
            f"degrees, 1-4 a frame on three kinds of background, in {with_faces} frames of {FRAME_SIZE[0]}x"
            f"{FRAME_SIZE[1]}, and {n_frames - with_faces} frames with no face. Detector settings: haar 1.1, >= 48 "
            "px is OpenCV's cascade with pyramid step 1.1 and faces of 48 px and up, on the whole frame or on a "
            "copy 480 px wide; dlib's HOG finds faces of 80 px and up without upsampling, 40 px and up upsampled "
            f"once; dlib's CNN runs on the first {args.cnn_frames} frames only; mtcnn, >= 40 px is facenet-pytorch's "
            "MTCNN with its pyramid starting at faces of 40 px and its nets' default face scores (0.6, 0.7, 0.7), "
            f"mtcnn low at emo-predict's lower ones {MTCNN_THRESHOLDS}; aligned on its own landmarks. In bold, "
            "named after them: "
            f"emo-predict's defaults (emo_utils/predict/video.py SETTINGS), chosen from these tables: {chosen}.\n\n"
            "Pipeline accuracy counts a missed face as wrong; crop accuracy is the same model on the same faces' "
            "own 48x48 crops (the baseline, same run); recall: a detection with IoU >= 0.3, one per face; false "
            "detections per frame with faces and per face-free frame. Every frame is a still, detected on its "
            "own, so a setting's accuracy does not depend on how often video finds faces." + partial_note + "\n\n"
            "| detector setting | model | align | pipeline acc. | crop acc. | recall | false det./frame | "
            "false det./empty frame |\n|---|---|---|---:|---:|---:|---:|---:|\n" + accuracy_rows + "\n"
            + detail_tables(args, accuracy)
            + ("frames/s of the flagship: detection (divided by K when faces are found on every K-th frame, the "
               "tracker in between) plus crops and classification, idle and with a busy-loop process pinned to one "
               "of the 2 cores. The model adds little to a frame's time: " + model_note + ".\n\n"
               "| detector setting | align | frames/s idle | frames/s, one core busy |\n|---|---|---:|---:|\n"
               + speed_rows if speed_rows else "No timing pass in this run (`--no-timing`): no frames/s.\n"))
    return replace_section(path or REPORT, "Faces in frames: the whole pipeline", body)


if __name__ == "__main__":
    main()
