"""Losses. Targets are class indices or soft (B, C) distributions (mixup)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """n / (C * n_c), as scikit-learn's class_weight='balanced'."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, optional class weights."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits, targets):
        log_probs = F.log_softmax(logits.float(), dim=1)
        soft = soft_targets(targets, logits.shape[1], self.label_smoothing)
        focal = (1 - log_probs.exp()).pow(self.gamma)
        per_class = -soft * focal * log_probs
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(1).mean()


def soft_targets(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    soft = targets if targets.dim() == 2 else F.one_hot(targets, num_classes).float()
    return soft * (1 - smoothing) + smoothing / num_classes


class SoftCrossEntropy(nn.Module):
    """Cross-entropy with label smoothing and class weights that also takes soft targets."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits, targets):
        if targets.dim() == 1:
            return F.cross_entropy(logits.float(), targets, weight=self.weight, label_smoothing=self.label_smoothing)
        per_class = -soft_targets(targets, logits.shape[1], self.label_smoothing) * F.log_softmax(logits.float(), 1)
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(1).mean()


def jensen_shannon(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Jensen-Shannon divergence between two predictions of each face (in nats, 0 to
    ln 2): AugMix's consistency term (Hendrycks et al. 2020), here between a face and its corrupted copy."""
    p, q = F.softmax(logits_a.float(), 1), F.softmax(logits_b.float(), 1)
    log_mean = ((p + q) / 2).clamp_min(1e-7).log()
    return (F.kl_div(log_mean, p, reduction="batchmean") + F.kl_div(log_mean, q, reduction="batchmean")) / 2


def make_loss(name: str, label_smoothing=0.0, focal_gamma=2.0, class_weights=None) -> nn.Module:
    if name in ("ce", "cross_entropy"):
        return SoftCrossEntropy(class_weights, label_smoothing)
    if name == "focal":
        return FocalLoss(focal_gamma, class_weights, label_smoothing)
    raise KeyError(f"unknown loss {name!r}; choose 'ce' or 'focal'")
