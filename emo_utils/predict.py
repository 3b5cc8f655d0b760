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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import video
# faces.py's names are also answered here, where they lived before (predict.make_collage, predict.FaceDetector).
from .faces import (ANNOTATE_MIN_SIDE, DETECT_MAX_SIDE, FACE_MARGIN, MAX_PIXELS, MIN_FACE, Face,  # noqa: F401
                    FaceDetector, PredictError, SkipFile, annotate, box_iou, classify_image, extract_faces,
                    face_box_with_margin, make_collage, match_faces, read_image, to_gray)

if TYPE_CHECKING:
    from .inference import Classifier


def load_classifier(spec, tta: bool = False, device: str | None = None, threads: int | None = None,
                    reports_dir: Path | None = None) -> Classifier:
    """classifier.load_classifier: a report's model by name, a finished .pt or an exported .onnx, ready to
    classify; a PredictError names what cannot be used."""
    from .classifier import load_classifier as load  # torch: only once a model is asked for

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
    from .inputs import evaluation_text, predict_inputs, summary_text, write_csv  # scikit-learn, once past --help

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
    except PredictError as e:
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
