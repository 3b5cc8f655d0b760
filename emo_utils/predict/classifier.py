"""A trained model as a Classifier, the one call emo-predict, video.py and the demo notebook classify faces with:
a report's model.pt (PyTorch) or an exported model.onnx (onnxruntime, no torch needed to run it).

An ONNX graph takes normalized faces (N, 1, S, S), S the model's evaluation crop (48 without one), and returns
logits (N, C); its metadata holds the class names and the crop (export.py writes both).

Either averages the logits of a set of test-time views (core/tta.py): by default a report's model runs under the
views its report chose on val and every number of its report was made with (metrics.json's provenance "tta"), so
emo-predict's accuracy on the same faces is the report's.
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
from ..core.readers import IMAGE_SIZE
from ..core.tta import TTA_VIEWS, tta_views, view_name
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


def report_views(model_path: Path) -> str | None:
    """The test-time views a report chose on val for the model file beside its metrics.json (provenance "tta"),
    or None where there is no such report (a run's own checkpoint, an ablation, a copied file)."""
    metrics = Path(model_path).parent / "metrics.json"
    try:
        chosen = json.loads(metrics.read_text())["provenance"]["tta"]
        return view_name(chosen)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_views(model_path: Path, tta: bool | str | None) -> str:
    """The views to classify with: those asked for (True: centre + mirror, False: the centre crop, or a name),
    or with None the report's chosen views, the centre crop where the model has no report."""
    if tta is None:
        return report_views(model_path) or "center"
    try:
        return view_name(tta)
    except ValueError as e:
        raise PredictError(str(e)) from None


def graph_views(crop: int) -> list[str]:
    """The view sets an exported graph can average: those whose every view is the size it takes (its crop)."""
    whole = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    fitting = []
    for name in TTA_VIEWS:
        try:
            if all(v.shape[-1] == (crop or IMAGE_SIZE) for v in tta_views(whole, crop, name)):
                fitting.append(name)
        except ValueError:  # ten crops of a model trained on the whole face
            pass
    return fitting


def onnx_classifier(path: str | os.PathLike | bytes, tta: bool | str = False, threads: int | None = None,
                    source: str | None = None) -> Classifier:
    """An exported model (its file, or the file's bytes and the `source` they came from) as a Classifier,
    averaging the views `tta` names (the graph takes crops of one size, so a view set of another size, the whole
    face of a crop-trained model, needs its model.pt)."""
    model = path
    path = Path(source) if isinstance(path, bytes) else Path(path)
    views = view_name(tta)
    try:
        session = make_session(model if isinstance(model, bytes) else path, threads)
    except Exception as e:  # onnxruntime raises its own exception types for a broken file
        raise PredictError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:200]}). "
                           "Export it again with `python -m emo_utils.predict.export`.") from e
    meta = session.get_modelmeta().custom_metadata_map
    if "class_names" not in meta or "crop" not in meta:
        raise PredictError(f"{path}: no class names or crop in its metadata, so it was not written by "
                           "emo_utils.predict.export. Export it again with `python -m emo_utils.predict.export`.")
    crop = int(meta["crop"])
    fitting = graph_views(crop)
    if views not in fitting:
        raise PredictError(f"{path}: test-time views {views!r} show the model faces of another size than its "
                           f"ONNX graph takes ({crop or IMAGE_SIZE} px); use its model.pt, or --views "
                           f"{' or '.join(fitting)}")

    def logits_fn(faces_u8):
        whole = torch.from_numpy(normalize_faces(faces_u8))  # the views are cut from the whole face, as in PyTorch
        shown = tta_views(whole, crop, views)
        return sum(session.run([OUTPUT], {INPUT: np.ascontiguousarray(v.numpy())})[0] for v in shown) / len(shown)

    return Classifier(logits_fn, json.loads(meta["class_names"]), crop, str(path), "onnxruntime", views)


def load_classifier(spec: str | os.PathLike, tta: bool | str | None = False, device: str | None = None,
                    threads: int | None = None, reports_dir: Path | None = None) -> Classifier:
    """A report's model by name, a finished checkpoint (.pt) or an exported model (.onnx), ready to classify;
    a PredictError names what cannot be used and the fix.

    `tta` names the test-time views (core/tta.py; True: the face and its mirror image, False: the centre crop),
    None the views its report chose on val (emo-predict's default); `threads` sets onnxruntime's intra-op
    threads (torch's are process-wide: set_threads)."""
    try:
        path = resolve_model_path(spec, reports_dir)
        views = resolve_views(path, tta)
        if path.suffix == ".onnx":
            return onnx_classifier(path, tta=views, threads=threads)
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
    try:
        tta_views(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE), crop, views)
    except ValueError as e:  # ten crops of a model trained on the whole face
        raise PredictError(f"{path}: {e}; choose --views center or flip") from None

    def logits_fn(faces_u8):
        return predict_logits(model, faces_u8, crop=crop, tta=views)

    return Classifier(logits_fn, result.class_names, crop, str(path), "torch", views)
