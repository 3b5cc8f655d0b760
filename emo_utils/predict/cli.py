"""Deployment: `python -m emo_utils.predict` (console script `emo-predict`) classifies images, folders, zips,
a video or a live camera, on a report's model.pt or an exported .onnx, and writes a CSV.

    emo-predict face.jpg                                   # one face crop, model reports/mini_xception/model.pt
    emo-predict test_faces/ --csv out.csv                  # class-named folders: accuracy and confusion too
    emo-predict photos.zip --detect-faces --annotate out/  # every face in every photo, boxes drawn
    emo-predict photo.jpg --model reports/mini_xception/model.onnx --detect-faces
    emo-predict clip.mp4 --annotate clip_annotated.mp4     # faces followed over time: CSV, plot, video (video.py)
    emo-predict --camera 0                                 # the same, live, until q or Ctrl-C

Finding, cropping and drawing faces is faces.py; reading images, folders and zips and the run over them is
inputs.py; following faces through a video is video.py and tracking.py; loading a model is classifier.py.
torch and scikit-learn are imported only once the arguments are checked (the two imports inside functions
below, the only ones in emo_utils): `--help` and a mistyped argument answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import choice as benchmark_choice, video
from .detectors import DETECTORS
from .faces import FACE_MARGIN, MIN_FACE, PredictError, landmarks_for, make_aligner, make_detector
from .video import SETTINGS
from ..core.tta import TTA_VIEWS  # no torch: --help answers at once

# A margin below -0.25 cuts a face to less than half its box, and the crop stops holding a face (at -0.6 every
# face got the same prediction); above 1 a face is under a third of its crop.
MARGIN_RANGE = (-0.25, 1.0)
# Inference on a few faces at a time gains little from more threads, and torch's all-cores default stalls when
# another process holds a core (issue 30: 32.5 frames/s idle, 11.2 with one busy core beside it, 22.7 with one
# thread under the same load). EMO_THREADS or --threads changes it.
THREADS_ENV = "EMO_THREADS"
DEFAULT_THREADS = 1


def default_threads() -> int:
    text = os.environ.get(THREADS_ENV, "")
    return int(text) if text.strip().isdigit() and int(text) > 0 else DEFAULT_THREADS

if TYPE_CHECKING:
    from ..core.inference import Classifier


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_classifier(spec, tta: bool | str | None = False, device: str | None = None, threads: int | None = None,
                    reports_dir: Path | None = None, moving: bool = False) -> Classifier:
    """classifier.load_classifier: a report's model by name, a finished .pt or an exported .onnx, ready to
    classify; a PredictError names what cannot be used. `moving` (a video or a camera): on the CPU the model
    runs through onnxruntime, exported in memory as it loads (export.in_memory_classifier)."""
    from .classifier import load_classifier as load  # torch: only once a model is asked for

    if moving and (device == "cpu" or (device is None and not torch_has_cuda())):
        from .export import in_memory_classifier

        return in_memory_classifier(spec, tta, threads, reports_dir)
    return load(spec, tta, device, threads, reports_dir)


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
    chosen = benchmark_choice.read_choice()
    parser.add_argument("--model",
                        help="a model in reports/ by name (reports/<name>/model.pt), or a path to a .pt or .onnx file "
                             f"({benchmark_choice.model_help(chosen)}; for a video or a camera, "
                             f"{video.VIDEO_MODEL}, run by onnxruntime: a few faces a frame at 30 frames/s)"
                             .replace("%", "%%"))  # argparse's escape
    parser.add_argument("--csv", help="where to write the predictions (default: predictions.csv; for clip.mp4, "
                                      "clip_emotions.csv, with the plot beside it as clip_emotions.png)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the CSV, plot or annotated video if they exist (else the run refuses to start)")
    parser.add_argument("--detect-faces", action="store_true",
                        help="find faces and classify each (for photos; always on for a video or a camera); without "
                             "it each image is taken to be one face crop, like FER2013's")
    parser.add_argument("--detector", choices=DETECTORS,
                        help="haar: OpenCV's cascade; hog: dlib's HOG detector; cnn: dlib's CNN detector (slow on a "
                             "CPU); mtcnn: facenet-pytorch's MTCNN. Default: " +
                             "; ".join(f"{k} {v['detector']}"
                                       + benchmark_choice.setting_help(chosen, k, v["detector"], v["every"])
                                       for k, v in SETTINGS.items()))
    parser.add_argument("--upsample", type=int, metavar="N",
                        help="hog and cnn: double the image N times before detection (1 finds faces down to about "
                             "40 px, at four times the work). Default: " +
                             "; ".join(f"{k} {v['upsample']}" for k, v in SETTINGS.items()))
    parser.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                        help="rotate each face so its eyes are level and crop it with FER2013's framing, from 5 "
                             "landmarks (MTCNN's with --detector mtcnn, else dlib's); --margin then shows more or less "
                             "around the face than FER2013 does. Default: " +
                             "; ".join(f"{k} {'on' if v['align'] else 'off'}" for k, v in SETTINGS.items()))
    parser.add_argument("--boxes", metavar="CSV",
                        help="classify your own face boxes, no detection: a CSV with columns file, x, y, w, h (one "
                             "row per face; file as given on the command line or its base name)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"threads for torch, onnxruntime and OpenCV (default: ${THREADS_ENV} or "
                             f"{DEFAULT_THREADS}: a few faces at a time gain little from more, and all cores stall "
                             "when another program holds one)")
    parser.add_argument("--annotate", metavar="PATH",
                        help="write each image with its boxes and labels under this folder; for a video or a camera, "
                             "the annotated video to this .mp4 or .avi file (or into this folder)")
    parser.add_argument("--class-map", metavar="FOLDER=CLASS,...",
                        help="count faces in folders named unlike the model's classes, e.g. "
                             "--class-map fearful=fear,surprised=surprise")
    parser.add_argument("--margin", type=float, default=FACE_MARGIN,
                        help="share of the face box added on each side before cropping (default: %(default).3f, "
                             "which frames a face as FER2013 does)")
    parser.add_argument("--min-face", type=int, default=None,
                        help="smallest face to find, in pixels (default: " +
                             f"haar {MIN_FACE}; mtcnn {video.MTCNN_MIN_FACE}; hog and cnn: any size their window "
                             "finds)")
    parser.add_argument("--scale-factor", type=float, default=None,
                        help="Haar pyramid step, over 1: larger is faster and misses more faces (default: " +
                             "; ".join(f"{k} {v['scale_factor']}" for k, v in SETTINGS.items()) + ")")
    parser.add_argument("--views", choices=TTA_VIEWS, help="test-time views whose predictions are averaged "
                        "(default: those the model's report chose on val, so accuracy matches its report; the centre "
                        "crop for a model without a report, and for a video or camera, where frames/s matter)")
    parser.add_argument("--tta", action="store_true", default=None, help="the same as --views flip: each face "
                        "with its mirror image")
    parser.add_argument("--device", help="torch device for a .pt model (default: CUDA when present, else CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="faces classified in one call, across images (default: %(default)s); memory, not "
                             "results, depends on it")
    group = parser.add_argument_group("video and camera")
    group.add_argument("--camera", type=int, metavar="N",
                       help="read live from camera N (0 is the first); q in the window or Ctrl-C stops it")
    group.add_argument("--every", type=positive_int, default=None, metavar="K",
                       help="find faces on every K-th frame and follow them in between (default: " +
                            "; ".join(f"{k} {v['every']}" for k, v in SETTINGS.items() if k != "photo") + ")")
    group.add_argument("--detect-size", type=int, default=None, metavar="PX",
                       help="find faces on a copy of the frame scaled down to this longer side; faces are still "
                            "cropped from the full frame. 0: the whole frame (default: " +
                            "; ".join(f"{k} {v['detect_size']}" for k, v in SETTINGS.items()) + ")")
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
        if folder in mapping:
            raise PredictError(f"--class-map: folder {folder!r} is given twice ({folder}={mapping[folder]} and "
                               f"{folder}={cls}); give each folder one class.")
        mapping[folder] = cls
    return mapping


def writable(path: Path) -> bool:
    """Whether `path` can be created: its nearest existing folder is a folder we may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def setting_of(args) -> str:
    if args.camera is not None:
        return "webcam"
    return "video" if args.inputs and video.is_video(args.inputs[0]) else "photo"


def resolve_settings(args):
    """Fill every detector flag the user left out from the setting's defaults (video.SETTINGS)."""
    setting = setting_of(args)
    defaults = SETTINGS[setting]
    for name in ("detector", "upsample", "scale_factor", "min_face", "detect_size", "every", "align"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.model is None:
        args.model = video.VIDEO_MODEL if setting != "photo" else benchmark_choice.default_model(
            benchmark_choice.read_choice())
    args.min_face = video.min_face_for(args.detector, args.min_face)
    if args.threads is None:
        args.threads = default_threads()


def check_arguments(args):
    """Every argument checked before a model is loaded or an image read; a PredictError names the problem and
    the fix."""
    if args.camera is not None and args.camera < 0:
        raise PredictError(f"--camera {args.camera}: a camera number is 0 or more (0 is the first camera)")
    for flag, value, least in (("--min-face", args.min_face, 1), ("--detect-size", args.detect_size, 0),
                               ("--upsample", args.upsample, 0), ("--threads", args.threads, 1)):
        if value < least:
            raise PredictError(f"{flag} {value}: must be {least} or more" + (" (0: the whole frame)"
                                                                             if flag == "--detect-size" else ""))
    if args.upsample > 3:
        raise PredictError(f"--upsample {args.upsample}: at most 3 (each doubles the image; 1 finds 40 px faces)")
    if not MARGIN_RANGE[0] <= args.margin <= MARGIN_RANGE[1]:
        raise PredictError(f"--margin {args.margin}: must be between {MARGIN_RANGE[0]} and {MARGIN_RANGE[1]} (a "
                           f"share of the face box added on each side; {FACE_MARGIN:.3f} frames a face as FER2013 does)")
    if args.scale_factor <= 1:
        raise PredictError(f"--scale-factor {args.scale_factor}: must be over 1 (each step of the Haar pyramid "
                           "shrinks the image by it; 1.1 is thorough, 1.2 faster)")
    if args.device is not None:
        check_device(args.device)
    if args.boxes is not None:
        if args.camera is not None or video.is_video(args.inputs[0] if args.inputs else ""):
            raise PredictError("--boxes is for images: a video or a camera finds its faces on every frame; run "
                               "without --boxes")
        if not Path(args.boxes).is_file():
            raise PredictError(f"--boxes {args.boxes}: no such file; give a CSV file,x,y,w,h")
    videos = [p for p in args.inputs if video.is_video(p) and Path(p).is_file()]
    if len(videos) == 1 and len(args.inputs) == 1:  # empty or unreadable: said before the model is loaded
        video.open_video(videos[0])[0].release()


def check_device(device: str):
    """A torch device that exists here; torch is imported for it (only when --device is given)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise PredictError(f"--device {device}: not a torch device name; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise PredictError(f"--device {device}: no such CUDA device here ({torch.cuda.device_count()} found); use "
                           "--device cpu, or leave --device out")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise PredictError(f"--device {device}: MPS is not available here; use --device cpu, or leave it out")


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
    targets = [*outputs.files(), *([Path(args.annotate) / "x"] if args.annotate and outputs.plot is None else [])]
    for path in targets:
        if not writable(path):
            raise PredictError(f"{path.parent if path.name == 'x' else path}: cannot be written (its folder is "
                               "missing a write permission, or a file stands where a folder should); choose "
                               "another path with --csv or --annotate")
    existing = [str(p) for p in outputs.files() if p.exists()]
    if existing and not args.force:
        raise PredictError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: pass --force to "
                           f"overwrite, or {'--csv' if outputs.plot is None else '--csv and --annotate'} to write "
                           "elsewhere.")
    return outputs


def make_face_finder(args, setting: str):
    """(detector, aligner) for the run from the resolved flags."""
    max_side = args.detect_size or float("inf")
    detector = make_detector(args.detector, scale_factor=args.scale_factor, min_face=args.min_face,
                             max_side=max_side, upsample=args.upsample)
    return detector, (make_aligner(landmarks_for(args.detector)) if args.align else None)


def run_video(args, classifier: Classifier, outputs: Outputs, log: Callable[[str], None]) -> int:
    """A video file or a camera through video.predict_video, then its CSV, plot and summary."""
    detector, aligner = make_face_finder(args, setting_of(args))
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
                              margin=args.margin, aligner=aligner, annotate=outputs.annotated_video, window=window,
                              clock=clock, total=total, source=source)
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
        resolve_settings(args)
        check_arguments(args)
        outputs = plan_outputs(args)
        class_map = parse_class_map(args.class_map)
        from .inputs import input_folders, read_boxes  # scikit-learn, once past --help
        if class_map:
            folders = input_folders(args.inputs)
            unknown = [f for f in class_map if f not in folders]
            if unknown:
                raise PredictError(f"--class-map: no folder named {', '.join(map(repr, unknown))} among the inputs "
                                   f"(folders: {', '.join(sorted(folders)[:12]) or 'none'}); check the spelling")
        boxes_by_file = read_boxes(args.boxes) if args.boxes else None
    except PredictError as e:
        log(f"emo-predict: {e}")
        return 2
    from .classifier import set_threads  # torch, once the arguments are checked

    threads_before = set_threads(args.threads)
    try:
        classifier = load_classifier(args.model, tta=asked_views(args), device=args.device, threads=args.threads,
                                     moving=setting_of(args) != "photo")
        return classify(args, classifier, outputs, class_map, boxes_by_file, log)
    except PredictError as e:
        log(f"emo-predict: {e}")
        return 2
    finally:  # this process's thread counts as they were (tests and notebooks call main in-process)
        set_threads(*threads_before)


def asked_views(args) -> str | None:
    """The test-time views a run asked for (--views, or --tta's flip); None for the model's own (its report's
    choice), except on a video or camera, which take the centre crop unless asked: views multiply the work."""
    if args.views and args.tta and args.views != "flip":
        raise PredictError(f"--tta is --views flip, and --views asks for {args.views}: give one of them")
    if args.views or args.tta:
        return args.views or "flip"
    return "center" if args.camera is not None or (args.inputs and video.is_video(args.inputs[0])) else None


def classify(args, classifier: Classifier, outputs: Outputs, class_map, boxes_by_file, log) -> int:
    """The run itself, once everything is checked and the model loaded."""
    from .inputs import evaluation_text, predict_inputs, summary_text, write_csv  # scikit-learn, once past --help

    try:
        unknown = {folder: cls for folder, cls in class_map.items() if cls not in classifier.class_names}
        if unknown:
            raise PredictError(f"--class-map {','.join(f'{f}={c}' for f, c in unknown.items())}: "
                               f"{', '.join(repr(c) for c in unknown.values())} not among the model's classes "
                               f"({', '.join(classifier.class_names)})")
        # The model as the user named it (a name, or their path), never the machine's path to a report's file.
        log(f"model {args.model} ({classifier.backend}, views {classifier.views}, "
            f"classes {', '.join(classifier.class_names)}; "
            f"{args.threads} thread(s))")
        if args.camera is not None or video.is_video(args.inputs[0]):
            return run_video(args, classifier, outputs, log)
        detector, aligner = None, None
        if boxes_by_file is not None:  # the user's boxes: no detector
            aligner = make_aligner(landmarks_for(args.detector)) if args.align else None
        elif args.detect_faces:
            detector, aligner = make_face_finder(args, "photo")
    except PredictError as e:
        log(f"emo-predict: {e}")
        return 2
    run = predict_inputs(args.inputs, classifier, detector, args.margin, args.annotate, args.batch_size, log,
                         class_map, aligner, boxes_by_file)
    csv_path = write_csv(run, outputs.csv) if run.rows else None
    evaluation = evaluation_text(run)
    if evaluation:
        print(evaluation)
    log(summary_text(run, csv_path))
    return 0 if run.rows else 1
