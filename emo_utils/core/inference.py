"""Inference: logits and probabilities for a batch of uint8 faces (N, 48, 48), with optional flip TTA, and the
Classifier that puts a trained model (PyTorch or ONNX) behind one call.

Training, evaluation and ensembling import these from here; emo_utils.predict.cli (the command line) still answers
for them under their old names, importing this module (and torch) only when they are asked for.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .augment import to_float
from .tta import tta_views


EVAL_SPLITS = ("test_private", "test_public", "test_all", "val")  # headline first, as the reports list them


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8, batch_size: int = 512, crop: int = 0, tta: bool | str = False,
                   device: torch.device | None = None) -> np.ndarray:
    """Logits (N, C) for uint8 images (N, 48, 48). `crop` takes the centre crop a model was trained on;
    `tta` averages the logits of several views (tta.VIEW_SETS: True = the image and its mirror image)."""
    device = device or next(model.parameters()).device
    images = torch.as_tensor(np.asarray(images_u8))
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        views = tta_views(to_float(images[start:start + batch_size].to(device)), crop, tta)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = sum(model(v.contiguous(memory_format=torch.channels_last)).float() for v in views) / len(views)
        outputs.append(logits.cpu())
    model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_splits(model: torch.nn.Module, data, splits=None, crop: int = 0, tta: bool | str = False) -> dict[str, np.ndarray]:
    """Softmax probabilities for each evaluation split of a FERData (all but train by default).

    Splits overlap (test_all holds both test halves), so each image is scored once and the splits are cut from it."""
    splits = splits or [s for s in EVAL_SPLITS if s in data.available_splits()]
    masks = {s: data.split_mask(s) for s in splits}
    scored = np.logical_or.reduce(list(masks.values()))
    probs = softmax(predict_logits(model, data.images[scored], crop=crop, tta=tta))
    return {s: probs[mask[scored]] for s, mask in masks.items()}


def seconds_per_image(model: torch.nn.Module, crop: int = 0, batch_size: int = 256, repeats: int = 3) -> float:
    """Inference time per 48x48 face at a given batch size (best of `repeats`), on the model's device."""
    faces = np.zeros((batch_size, 48, 48), dtype=np.uint8)
    predict_logits(model, faces, batch_size=batch_size, crop=crop)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict_logits(model, faces, batch_size=batch_size, crop=crop)
        best = min(best, time.perf_counter() - start)
    return best / batch_size


@dataclass
class Classifier:
    """A trained model behind one call: uint8 faces (N, 48, 48) in, logits or probabilities (N, C) out."""
    logits_fn: Callable[[np.ndarray], np.ndarray]
    class_names: list[str]
    crop: int  # the model sees the centre crop of this size (0: the whole 48x48 face)
    source: str  # the file it came from
    backend: str  # "torch" or "onnxruntime"
    views: str = "center"  # the test-time views whose logits it averages (tta.VIEW_SETS)

    def logits(self, faces_u8: np.ndarray) -> np.ndarray:
        faces_u8 = np.asarray(faces_u8, dtype=np.uint8)
        if not faces_u8.flags.writeable:  # arrays viewing PIL images are read-only; torch warns on those
            faces_u8 = faces_u8.copy()
        if len(faces_u8) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return self.logits_fn(faces_u8)

    def predict_proba(self, faces_u8: np.ndarray) -> np.ndarray:
        return softmax(self.logits(faces_u8))
