"""Small synthetic datasets that a model can learn: each class is a pair of bright blobs at its own height, plus noise."""
from __future__ import annotations

import numpy as np

from emo_utils.core.readers import TEST_PRIVATE, TEST_PUBLIC, TRAIN
from emo_utils.core.data import FERData

# A Mini-Xception narrow enough that an epoch on make_learnable_data() takes a second: TrainConfig(**FAST, ...).
FAST = dict(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=32)


def class_images(num_classes: int, per_class: int, seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for c in range(num_classes):
        # Two blobs mirrored about the vertical axis, at a height that tells the class: flips keep the label.
        cy = 6 + 36 * c / max(num_classes - 1, 1)
        blob = sum(150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0 ** 2)) for cx in (14, 34))
        for _ in range(per_class):
            shift = tuple(rng.integers(-1, 2, size=2))
            moved = np.roll(blob, shift, axis=(0, 1))
            images.append(np.clip(60 + moved + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels, dtype=np.int64)


def make_learnable_data(num_classes: int = 7, train_per_class: int = 40, test_per_class: int = 10,
                        seed: int = 0) -> FERData:
    """A FERData in memory with train, val, test_public and test_private splits."""
    train_x, train_y = class_images(num_classes, train_per_class, seed)
    test_x, test_y = class_images(num_classes, test_per_class, seed + 1)
    splits = np.concatenate([np.full(len(train_y), TRAIN),
                             np.where(np.arange(len(test_y)) % 2 == 0, TEST_PUBLIC, TEST_PRIVATE)]).astype(np.int8)
    return FERData(images=np.concatenate([train_x, test_x]), labels=np.concatenate([train_y, test_y]),
                   source_split=splits, names=np.array([f"img{i}" for i in range(len(splits))]),
                   class_names=[f"class{c}" for c in range(num_classes)], sha256=f"synthetic-{seed}",
                   source="synthetic")
