"""ONNX export: a trained model as one self-contained .onnx file that onnxruntime runs without torch.

    python -m emo_utils.predict.export --model mini_xception        # writes reports/mini_xception/model.onnx
    emo-predict faces/ --model reports/mini_xception/model.onnx

The graph takes normalized faces (N, 1, S, S), S the model's evaluation crop (48 without one), with a
dynamic batch dimension, and returns logits (N, C). The file's metadata holds what a caller needs besides
the graph: class names, crop and the pixel normalization. Every export is checked against PyTorch on
random faces at batch 1 and 5 before it is written. Running an exported model is classifier.py's.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.augment import PIXEL_MEAN, PIXEL_STD
from ..core.checkpoint import CheckpointError, load_trained
from ..paths import resolve_model_path
from .classifier import INPUT, OUTPUT, graph_views, load_classifier, make_session, normalize_faces, onnx_classifier
from ..core.readers import IMAGE_SIZE
from ..core.files import write_atomically
from ..core.inference import Classifier, predict_logits

OPSET = 17
EXPORT_ATOL = 1e-4  # onnxruntime against PyTorch, on logits


class ExportError(RuntimeError):
    pass


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, class_names, crop: int = 0,
                source: str = "", check_batches=(1, 5)) -> Path:
    """Write `model` as ONNX with a dynamic batch dimension and its metadata, after checking that onnxruntime
    gives PyTorch's logits (within EXPORT_ATOL) at each batch size in check_batches."""
    data = onnx_bytes(model, class_names, crop, source, check_batches)
    return write_atomically(path, lambda f: f.write(data))


def onnx_bytes(model: torch.nn.Module, class_names, crop: int = 0, source: str = "", check_batches=(1, 5)) -> bytes:
    """export_onnx's file, in memory."""
    import onnx

    model = copy.deepcopy(model).float().cpu().eval()
    size = crop or IMAGE_SIZE
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export-based default (dynamo=True) needs onnxscript, an extra
        # dependency, and gives the same graph for a plain CNN like ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 1, size, size),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"class_names": json.dumps(list(class_names)), "crop": str(int(crop)), "input_size": str(size),
                "pixel_mean": repr(PIXEL_MEAN), "pixel_std": repr(PIXEL_STD), "source": str(source),
                "preprocessing": "48x48 8-bit grayscale face; x = (pixel / 255 - pixel_mean) / pixel_std; "
                                 "centre crop of input_size when crop > 0"}
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "emo_utils.predict.export"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    worst = max_difference(model, data, crop, check_batches)
    if worst > EXPORT_ATOL:
        raise ExportError(f"the ONNX graph's logits differ from PyTorch's by {worst:.2e} (> {EXPORT_ATOL:g}); "
                          "not writing it.")
    return data


def in_memory_classifier(spec, tta: bool | str | None = False, threads: int | None = None,
                         reports_dir: Path | None = None) -> Classifier:
    """load_classifier's model run by onnxruntime, exported in memory as it loads (checked against PyTorch's
    logits like every export): the video path's classifier, as onnxruntime classifies a few faces at a time
    several times faster than torch on a CPU (benchmarks.md, "Prediction latency"). An .onnx file, or views the
    graph cannot take (those of another size than its crop), load as load_classifier loads them."""
    loaded = load_classifier(spec, tta, "cpu", threads, reports_dir)  # every check of the file, first
    if loaded.backend == "onnxruntime" or loaded.views not in graph_views(loaded.crop):
        return loaded
    result = load_trained(loaded.source, torch.device("cpu"))
    try:
        data = onnx_bytes(result.model, result.class_names, result.crop, source=loaded.source)
    except ExportError:  # an op onnxruntime computes differently: PyTorch's answers, at PyTorch's speed
        return loaded
    return onnx_classifier(data, tta=loaded.views, threads=threads, source=loaded.source)


def max_difference(model: torch.nn.Module, onnx_model, crop: int = 0, batches=(1, 5), seed: int = 0) -> float:
    """Largest |logit difference| between `model` and the ONNX graph (bytes or path) on random faces."""
    session = make_session(onnx_model)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batches:
        faces = rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        expected = predict_logits(model, faces, crop=crop)
        got = session.run([OUTPUT], {INPUT: normalize_faces(faces, crop)})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def read_metadata(path: str | os.PathLike) -> dict:
    session = make_session(path)
    return dict(session.get_modelmeta().custom_metadata_map)


def export_checkpoint(model_spec: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """A report's model (by name) or a finished .pt as ONNX, by default beside it as model.onnx."""
    path = resolve_model_path(model_spec)
    if path.suffix != ".pt":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (.pt) to export.")
    result = load_trained(path, torch.device("cpu"))
    out = Path(out) if out else path.with_suffix(".onnx")
    return export_onnx(result.model, out, result.class_names, result.crop, source=str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a trained model to ONNX (dynamic batch), checked "
                                                 "against PyTorch with onnxruntime.")
    parser.add_argument("--model", default="mini_xception", help="a model in reports/ by name, or a .pt path")
    parser.add_argument("--out", help="the .onnx file to write (default: beside the .pt, as model.onnx)")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.model, args.out)
    except (CheckpointError, ExportError) as e:
        print(f"export: {e}", file=sys.stderr)
        return 2 if not isinstance(e, ExportError) else 1
    meta = read_metadata(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB; classes {', '.join(json.loads(meta['class_names']))}; "
          f"input (N, 1, {meta['input_size']}, {meta['input_size']}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
