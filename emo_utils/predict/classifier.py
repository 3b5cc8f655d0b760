"""A trained model as a Classifier, the one call emo-predict, video.py and the demo notebook classify faces with:
a report's model.pt (PyTorch) or an exported model.onnx (onnxruntime, no torch needed to run it).

An ONNX graph takes normalized faces (N, 1, S, S), S the model's evaluation crop (48 without one), and returns
logits (N, C); its metadata holds the class names and the crop (export.py writes both).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.augment import PIXEL_MEAN, PIXEL_STD
from ..core.checkpoint import CheckpointError, load_trained
from ..paths import resolve_model_path
from .faces import PredictError
from ..core.inference import Classifier, predict_logits

INPUT, OUTPUT = "faces", "logits"


def normalize_faces(faces_u8: np.ndarray, crop: int = 0) -> np.ndarray:
    """uint8 faces (N, 48, 48) to the graph's input (N, 1, S, S) float32: augment.to_float and
    augment.center_crop in numpy, the same float32 operations in the same order."""
    x = (np.asarray(faces_u8, dtype=np.uint8)[:, None].astype(np.float32) / np.float32(255.0)
         - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    if crop and crop < x.shape[-1]:
        top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2
        x = x[..., top:top + crop, left:left + crop]
    return np.ascontiguousarray(x)


def set_threads(threads: int, cv2_threads: int | None = None) -> tuple[int, int]:
    """Set torch's and OpenCV's thread counts for this process; returns the earlier ones, to set back.
    onnxruntime's are per session (make_session)."""
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads if cv2_threads is None else cv2_threads)
    return before


def make_session(model_bytes_or_path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = str(model_bytes_or_path) if isinstance(model_bytes_or_path, (str, Path)) else model_bytes_or_path
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_classifier(path: str | os.PathLike, tta: bool = False, threads: int | None = None) -> Classifier:
    """An exported model as a Classifier."""
    path = Path(path)
    try:
        session = make_session(path, threads)
    except Exception as e:  # onnxruntime raises its own exception types for a broken file
        raise PredictError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:200]}). "
                           "Export it again with `python -m emo_utils.predict.export`.") from e
    meta = session.get_modelmeta().custom_metadata_map
    if "class_names" not in meta or "crop" not in meta:
        raise PredictError(f"{path}: no class names or crop in its metadata, so it was not written by "
                           "emo_utils.predict.export. Export it again with `python -m emo_utils.predict.export`.")
    crop = int(meta["crop"])

    def logits_fn(faces_u8):
        x = normalize_faces(faces_u8, crop)
        logits = session.run([OUTPUT], {INPUT: x})[0]
        if tta:
            logits = (logits + session.run([OUTPUT], {INPUT: np.ascontiguousarray(x[..., ::-1])})[0]) / 2
        return logits

    return Classifier(logits_fn, json.loads(meta["class_names"]), crop, str(path), "onnxruntime")


def load_classifier(spec: str | os.PathLike, tta: bool = False, device: str | None = None,
                    threads: int | None = None, reports_dir: Path | None = None) -> Classifier:
    """A report's model by name, a finished checkpoint (.pt) or an exported model (.onnx), ready to classify;
    a PredictError names what cannot be used and the fix.

    `tta` averages each face with its mirror image; `threads` sets onnxruntime's intra-op threads (torch's
    are process-wide: set_threads)."""
    try:
        path = resolve_model_path(spec, reports_dir)
        if path.suffix == ".onnx":
            return onnx_classifier(path, tta=tta, threads=threads)
        if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip; checked before unpickling
            raise PredictError(f"{path}: unreadable checkpoint: not a PyTorch checkpoint (a model.pt is a zip "
                               "archive; this one is truncated, corrupt or another kind of file). Use a model.pt "
                               "from reports/<model>/ or a .onnx export; for your own run, delete it to start "
                               "again, or retrain (retrain=True, `make reports RETRAIN=1`).")
        result = load_trained(path, torch.device(device) if device is not None else None)
    except CheckpointError as e:
        raise PredictError(str(e)) from e
    except PredictError:
        raise
    except (RuntimeError, KeyError, ValueError, EOFError, OSError) as e:  # torch.load on a file not ours
        raise PredictError(f"{path}: unreadable checkpoint ({type(e).__name__}): not a checkpoint emo_utils "
                           "wrote. Use a model.pt from reports/<model>/ or a .onnx export.") from None
    model, crop = result.model, result.crop

    def logits_fn(faces_u8):
        return predict_logits(model, faces_u8, crop=crop, tta=tta)

    return Classifier(logits_fn, result.class_names, crop, str(path), "torch")
