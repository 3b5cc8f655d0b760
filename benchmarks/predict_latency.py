"""Inference speed on CPU: torch eager against onnxruntime, and detect + classify on a 640x480 frame, one run.

Measured in the same run, on the same thread count (2 by default, the target machine's cores):
  - batch-1 latency of one face, preprocessing included (uint8 48x48 in, logits out), torch eager vs onnxruntime;
  - batched throughput (faces/s at --batch), both backends;
  - frames per second of the whole photo path (grayscale, Haar cascade, crops, classification) on a 640x480
    frame holding four upscaled FER2013 test faces (synthetic faces when the data is absent), with the
    detector's defaults and with a webcam preset (pyramid step 1.2, faces of 80 px and up).

    python benchmarks/predict_latency.py [--model mini_xception] [--threads 2] [--iters 300] [--write]

Targets: detect + classify at 30 frames/s or more; onnxruntime at least 1.5x torch eager at batch 1.
--write appends the result, with this command line, to reports/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch
from PIL import Image

from emo_utils import predict
from emo_utils.data import CSV_EMOTIONS, REPO_ROOT, DataError, find_dataset
from emo_utils.export import export_onnx, onnx_classifier
from emo_utils.models import build_model

TARGET_FPS = 30.0
TARGET_ORT_SPEEDUP = 1.5
FRAME_SIZE = (640, 480)


def median_seconds(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def torch_classifier(model_spec: str) -> tuple[predict.Classifier, torch.nn.Module, str]:
    """The named model on CPU; an untrained Mini-Xception (same architecture, same speed) when the default
    model has not been trained yet."""
    try:
        classifier = predict.load_classifier(model_spec, device="cpu")
    except predict.PredictError as e:
        if model_spec != "mini_xception":
            raise
        print(f"note: {e}\nnote: timing an untrained mini_xception instead (same architecture, so the same speed)")
        model = build_model("mini_xception", len(CSV_EMOTIONS)).eval()
        classifier = predict.Classifier(lambda faces: predict.predict_logits(model, faces), sorted(CSV_EMOTIONS), 0,
                                        "untrained mini_xception", "torch")
        return classifier, model, "untrained mini_xception"
    from emo_utils.train import load_trained

    return classifier, load_trained(classifier.source, torch.device("cpu")).model, classifier.source


def frame_faces(n: int = 4) -> tuple[np.ndarray, str]:
    """n FER2013 test faces read straight from the zip, or synthetic faces when it is absent."""
    try:
        source = find_dataset()
        if source.suffix == ".zip":
            with zipfile.ZipFile(source) as archive:
                names = sorted(m for m in archive.namelist()
                               if m.startswith("test/happy/") and m.endswith(".jpg"))[:n]
                faces = [np.asarray(Image.open(io.BytesIO(archive.read(m))).convert("L")) for m in names]
            if len(faces) == n:
                return np.stack(faces), f"{n} FER2013 test faces from {source.name}"
    except DataError:
        pass
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), f"{n} synthetic faces (no FER2013 zip found)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini_xception", help="a model in reports/ by name, or a .pt path")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch, onnxruntime and OpenCV")
    parser.add_argument("--iters", type=int, default=300, help="timed batch-1 calls (frames: a third as many)")
    parser.add_argument("--batch", type=int, default=256, help="batch size for the throughput measurement")
    parser.add_argument("--write", action="store_true", help="append the result to reports/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    warmup = max(2, min(20, args.iters // 5))

    eager, model, model_name = torch_classifier(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", eager.class_names, eager.crop, source=model_name)
        ort = onnx_classifier(onnx_path, threads=args.threads)
    print(f"model {model_name}; {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, opencv {cv2.__version__}; {platform.processor() or platform.machine()}")

    rng = np.random.default_rng(0)
    one, many = (rng.integers(0, 256, (n, 48, 48), dtype=np.uint8) for n in (1, args.batch))
    results = {}
    for name, classifier in (("torch eager", eager), ("onnxruntime", ort)):
        latency = median_seconds(lambda: classifier.logits(one), args.iters, warmup)
        batched = median_seconds(lambda: classifier.logits(many), max(3, args.iters // 20), 2)
        results[name] = dict(latency_ms=latency * 1e3, faces_per_s=args.batch / batched)
        print(f"{name:12s} batch 1: {latency * 1e3:7.3f} ms/face   batch {args.batch}: "
              f"{args.batch / batched:9.0f} faces/s")
    speedup = results["torch eager"]["latency_ms"] / results["onnxruntime"]["latency_ms"]
    print(f"onnxruntime vs torch eager at batch 1: {speedup:.2f}x "
          f"({'meets' if speedup >= TARGET_ORT_SPEEDUP else 'misses'} the {TARGET_ORT_SPEEDUP}x target)")

    faces, faces_from = frame_faces()
    frame, pasted = predict.make_collage(faces, face_px=120, seed=0, size=FRAME_SIZE)
    frame_rgb = np.asarray(frame)  # what a camera hands over: an RGB array
    presets = {"defaults": predict.FaceDetector(),
               "webcam (step 1.2, faces >= 80 px)": predict.FaceDetector(scale_factor=1.2, min_face=80)}
    frame_iters = max(3, args.iters // 3)
    fps = {}
    print(f"frame {FRAME_SIZE[0]}x{FRAME_SIZE[1]} with {faces_from}:")
    for preset, detector in presets.items():
        found = predict.classify_image(Image.fromarray(frame_rgb), ort, detector)
        detect_only = median_seconds(lambda: detector.detect(np.asarray(predict.to_gray(Image.fromarray(frame_rgb)))),
                                     frame_iters, 2)
        for name, classifier in (("onnxruntime", ort), ("torch eager", eager)):
            seconds = median_seconds(lambda: predict.classify_image(Image.fromarray(frame_rgb), classifier, detector),
                                     frame_iters, 2)
            fps[preset, name] = 1 / seconds
            print(f"  {preset:34s} {name:12s} {1 / seconds:6.1f} frames/s ({seconds * 1e3:6.1f} ms, of which "
                  f"detection {detect_only * 1e3:5.1f} ms); {len(found)} of {len(pasted)} faces found"
                  f" -> {'meets' if 1 / seconds >= TARGET_FPS else 'misses'} the {TARGET_FPS:.0f} fps target")

    if args.write:
        out = REPO_ROOT / "reports" / "benchmarks.md"
        if not out.exists():
            out.write_text("# Benchmarks\n\n_Appended by the scripts in benchmarks/; each line states its command._\n")
        backend_rows = "".join(f"| {k} | {v['latency_ms']:.3f} | {v['faces_per_s']:.0f} |\n"
                               for k, v in results.items())
        frame_rows = "".join(f"| {p} | {fps[p, 'onnxruntime']:.1f} | {fps[p, 'torch eager']:.1f} |\n" for p in presets)
        with open(out, "a") as f:
            f.write(f"\n## Prediction latency, {dt.date.today()}\n\n"
                    f"`python benchmarks/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}` on "
                    f"{platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}, onnxruntime "
                    f"{onnxruntime.__version__}, model {model_name}.\n\n"
                    f"| backend | batch 1 (ms/face) | batch {args.batch} (faces/s) |\n|---|---:|---:|\n{backend_rows}"
                    f"\nonnxruntime vs torch eager at batch 1: **{speedup:.2f}x** (target {TARGET_ORT_SPEEDUP}x).\n\n"
                    f"Detect + classify on a {FRAME_SIZE[0]}x{FRAME_SIZE[1]} frame ({faces_from}), frames/s "
                    f"(target {TARGET_FPS:.0f}):\n\n| detector | onnxruntime | torch eager |\n|---|---:|---:|\n"
                    f"{frame_rows}")
        print(f"appended to {out}")

if __name__ == "__main__":
    main()
