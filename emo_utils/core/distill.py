"""Distillation (Hinton et al. 2015): a net learns from an ensemble's outputs on the training faces.

The teacher is an ensemble notebook 30 chose on val: its metrics.json names the members, their weights and each
member's test-time views. The teacher's probabilities on every training face are computed once (a forward pass
per member and view, the views' logits averaged, as everywhere else) and kept in a file keyed by the data's
checksum. TrainConfig.distill_targets names that file; the training step then learns from
(1 - distill_weight) x the labels + distill_weight x the teacher, the teacher softened by distill_temperature
(each probability to the power 1/T, renormalised: T > 1 lifts the classes it ranks second and third).

The teacher's file is written by `python -m emo_utils.zoo.teacher`; this module reads it for the training step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Each row to the power 1/T, renormalised: the distribution softmax(logits / T) would give."""
    powered = np.power(np.clip(probs, 1e-12, None), 1.0 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def read_teacher(path: Path, data_sha256: str, num_faces: int, temperature: float = 1.0) -> np.ndarray:
    """The teacher's probabilities on the training faces, softened; refused when they were computed on other
    data or another training split."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no teacher probabilities. Write them with `python -m emo_utils.zoo.teacher "
                                f"--out {path}` (after notebook 30 has chosen the ensemble).")
    with np.load(path) as saved:
        probs, sha = saved["probs"], str(saved["data_sha256"])
    if sha != data_sha256 or len(probs) != num_faces:
        raise ValueError(f"{path} holds the teacher's outputs on {len(probs)} faces of data {sha[:16]}…, not on "
                         f"these {num_faces} training faces of {data_sha256[:16]}…: write it again for this data "
                         "with `python -m emo_utils.zoo.teacher`.")
    return soften(probs, temperature)
