"""Inference: logits and probabilities for a batch of uint8 faces, with optional flip TTA."""
from __future__ import annotations

import numpy as np
import torch

from .augment import center_crop, to_float


EVAL_SPLITS = ("test_private", "test_public", "test_all", "val")  # headline first, as the reports list them


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8, batch_size: int = 512, crop: int = 0, tta: bool = False,
                   device: torch.device | None = None) -> np.ndarray:
    """Logits (N, C) for uint8 images (N, 48, 48). `crop` takes the centre crop a model was trained on;
    `tta` averages the logits of each image and its mirror image."""
    device = device or next(model.parameters()).device
    images = torch.as_tensor(np.asarray(images_u8))
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = center_crop(to_float(images[start:start + batch_size].to(device)), crop)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        outputs.append(logits.cpu())
    model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_splits(model: torch.nn.Module, data, splits=None, crop: int = 0, tta: bool = False) -> dict[str, np.ndarray]:
    """Softmax probabilities for each evaluation split of a FERData (all but train by default)."""
    splits = splits or [s for s in EVAL_SPLITS if s in data.available_splits()]
    return {s: softmax(predict_logits(model, data.split(s)[0], crop=crop, tta=tta)) for s in splits}
