"""Classification metrics from softmax outputs: accuracy, F1, one-vs-rest AUC, calibration, confusion.

Everything takes probs (N, C) and integer labels (N,) and is plain numpy / scikit-learn, so it runs
anywhere a model's outputs were saved. compute_metrics returns only built-in Python types, so its
result can go to json.dump as it is.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t as student_t, ttest_ind
from sklearn.metrics import (auc, confusion_matrix, f1_score, precision_recall_fscore_support,
                             roc_auc_score, roc_curve)

from .data import SPLIT_TITLES

SUMMARY_KEYS = ("accuracy", "macro_f1", "auc_micro", "auc_macro", "ece", "n")
NLL_EPS = 1e-12  # floor on the true class's probability, so one confident mistake cannot give inf


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"need probs (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    return probs, labels


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    # Not label_binarize: with two classes it returns a single column.
    return np.eye(num_classes, dtype=np.int64)[labels]


def _has_both(column: np.ndarray) -> bool:
    return 0 < column.sum() < column.size


def _bin_stats(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    """Per equal-width confidence bin: count, mean confidence, accuracy (NaN where empty), and ECE."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Bins are (lo, hi] as in Guo et al. 2017; a confidence of exactly 0 goes to the first bin.
    bin_index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bin_index, minlength=n_bins)
    conf_sum = np.bincount(bin_index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_index, weights=correct, minlength=n_bins)
    filled = count > 0
    bin_confidence = np.full(n_bins, np.nan)
    bin_accuracy = np.full(n_bins, np.nan)
    bin_confidence[filled] = conf_sum[filled] / count[filled]
    bin_accuracy[filled] = correct_sum[filled] / count[filled]
    gaps = np.abs(bin_accuracy[filled] - bin_confidence[filled])
    ece = float(np.sum(count[filled] / max(len(labels), 1) * gaps))
    return count, bin_confidence, bin_accuracy, ece


def compute_metrics(probs, labels, class_names, n_bins: int = 15) -> dict:
    """All metrics for one split. Keys: accuracy, macro_f1, auc_micro, auc_macro, ece, nll, n,
    per_class {name: {precision, recall, f1, support, auc}}, confusion, confusion_normalized."""
    probs, labels = _check(probs, labels)
    num_classes = probs.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} probability columns")
    class_ids = list(range(num_classes))
    preds = probs.argmax(axis=1)
    one_hot = _one_hot(labels, num_classes)

    # AUC is only defined for a class that has both positives and negatives in this split.
    class_auc = [float(roc_auc_score(one_hot[:, c], probs[:, c])) if _has_both(one_hot[:, c]) else None
                 for c in class_ids]
    defined = [a for a in class_auc if a is not None]
    auc_macro = float(np.mean(defined)) if defined else None
    auc_micro = float(roc_auc_score(one_hot.ravel(), probs.ravel())) if _has_both(one_hot.ravel()) else None

    # labels=range(C) so a class absent from this split still gets a row (all zeros).
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=class_ids, zero_division=0)
    # Macro F1 as scikit-learn computes it by default: over classes that are true or predicted,
    # so a class missing from the split and never predicted does not count as an F1 of 0.
    macro_f1 = float(f1_score(labels, preds, average="macro", zero_division=0)) if len(labels) else 0.0

    confusion = confusion_matrix(labels, preds, labels=class_ids)
    row_totals = confusion.sum(axis=1, keepdims=True)
    confusion_normalized = np.divide(confusion, row_totals, out=np.zeros(confusion.shape),
                                     where=row_totals > 0)

    true_class_prob = probs[np.arange(len(labels)), labels]
    nll = float(-np.mean(np.log(np.clip(true_class_prob, NLL_EPS, 1.0)))) if len(labels) else 0.0
    _, _, _, ece = _bin_stats(probs, labels, n_bins)

    per_class = {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                        "support": int(support[c]), "auc": class_auc[c]}
                 for c, name in enumerate(class_names)}
    return {
        "accuracy": float(np.mean(preds == labels)) if len(labels) else 0.0,
        "macro_f1": macro_f1,
        "auc_micro": auc_micro,
        "auc_macro": auc_macro,
        "ece": ece,
        "nll": nll,
        "n": int(len(labels)),
        "per_class": per_class,
        "confusion": confusion.astype(int).tolist(),
        "confusion_normalized": confusion_normalized.tolist(),
    }


def summary(metrics: dict) -> dict:
    """The headline numbers of one split, as they go into metrics.json."""
    return {key: metrics[key] for key in SUMMARY_KEYS}


def roc_curves(probs, labels, num_classes: int) -> dict:
    """{class_index: (fpr, tpr, auc)} for every class with both outcomes, plus 'micro' and 'macro'.

    Macro follows scikit-learn's ROC example: each class's tpr is interpolated onto the union of all
    fpr points and averaged; its area is that curve's, so it can differ slightly from auc_macro.
    """
    probs, labels = _check(probs, labels)
    one_hot = _one_hot(labels, num_classes)
    curves = {}
    for c in range(num_classes):
        if _has_both(one_hot[:, c]):
            fpr, tpr, _ = roc_curve(one_hot[:, c], probs[:, c])
            curves[c] = (fpr, tpr, float(auc(fpr, tpr)))
    if _has_both(one_hot.ravel()):
        fpr, tpr, _ = roc_curve(one_hot.ravel(), probs.ravel())
        curves["micro"] = (fpr, tpr, float(auc(fpr, tpr)))
    per_class = [curves[c] for c in range(num_classes) if c in curves]
    if per_class:
        all_fpr = np.unique(np.concatenate([fpr for fpr, _, _ in per_class]))
        mean_tpr = np.mean([np.interp(all_fpr, fpr, tpr) for fpr, tpr, _ in per_class], axis=0)
        curves["macro"] = (all_fpr, mean_tpr, float(auc(all_fpr, mean_tpr)))
    return curves


def reliability(probs, labels, n_bins: int = 15) -> dict:
    """Reliability-diagram data over equal-width confidence bins.

    Keys: bin_edges (n_bins+1,), bin_confidence, bin_accuracy (n_bins,; NaN for empty bins),
    bin_count (n_bins,), ece (float, the same value compute_metrics reports).
    """
    probs, labels = _check(probs, labels)
    count, bin_confidence, bin_accuracy, ece = _bin_stats(probs, labels, n_bins)
    return {"bin_edges": np.linspace(0.0, 1.0, n_bins + 1), "bin_confidence": bin_confidence,
            "bin_accuracy": bin_accuracy, "bin_count": count, "ece": ece}


def most_confused_pairs(confusion, class_names, k: int = 5) -> list[tuple[str, str, int, float]]:
    """The k largest off-diagonal cells as (true_name, predicted_name, count, share_of_true).

    share_of_true is count over the true class's support. Pairs that never occur are left out;
    ties go to the lower (true, predicted) index so the order is stable.
    """
    confusion = np.asarray(confusion)
    row_totals = confusion.sum(axis=1)
    pairs = [(int(confusion[t, p]), t, p) for t in range(len(confusion)) for p in range(len(confusion))
             if t != p and confusion[t, p] > 0]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [(class_names[t], class_names[p], count, count / float(row_totals[t]))
            for count, t, p in pairs[:k]]


def accuracy_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z=1.96) of an accuracy measured on n faces, within [0, 1]: about +-1.5 points
    on FER2013's 3,589 PrivateTest faces, about +-25 on 14, so two models closer than that are not ranked by the
    test."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Wilson's bounds lie in [0, 1]; rounding can put them a hair outside (a "-0.0%" lower bound at 0 of 14 right).
    low, high = float(centre - half), float(centre + half)
    # At 0 or n right the bound is exactly 0 or 1; rounding lands a hair either side, and -0.0 prints as "-0.0%".
    return (0.0 if low < 1e-12 else low), (1.0 if high > 1 - 1e-12 else high)


def seed_interval(values, confidence: float = 0.95) -> dict:
    """Mean, sample std and Student-t interval of the mean over seeds: with 3 seeds the interval is
    mean +- 4.30 std / sqrt(3), wide on purpose, since three runs say little about a fourth."""
    values = np.asarray(values, dtype=float)
    n, mean = len(values), float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    half = float(student_t.ppf((1 + confidence) / 2, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def prediction_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Where one more seed of the same recipe would land with the given probability (Student's t, mean +- t std
    sqrt(1 + 1/n)): what a single other run, e.g. a refit, is to be read against, rather than the mean's interval."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        raise ValueError(f"a prediction interval needs 2 seeds, got {n}")
    half = float(student_t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) * np.sqrt(1 + 1 / n))
    return float(values.mean()) - half, float(values.mean()) + half


def mean_difference(values, baseline, confidence: float = 0.95) -> dict:
    """Difference of two seed means (values minus baseline) with Welch's t interval, which does not assume the two
    recipes vary alike from seed to seed. Needs two seeds of each."""
    if min(len(values), len(baseline)) < 2:
        raise ValueError(f"a difference of means needs 2 seeds of each, got {len(values)} and {len(baseline)}")
    interval = ttest_ind(values, baseline, equal_var=False).confidence_interval(confidence)
    return {"difference": float(np.mean(values) - np.mean(baseline)), "low": float(interval.low),
            "high": float(interval.high)}


def summary_frame(metrics_by_split: dict):
    """The headline numbers of each split as a DataFrame for a notebook: counts as integers, the rest to 4 places,
    each split by its title (PrivateTest)."""
    frame = pd.DataFrame({SPLIT_TITLES.get(split, split): summary(m) for split, m in metrics_by_split.items()}).T
    return frame.astype({"n": int}).round(4)


def prediction_counts(probs, labels, class_names) -> pd.DataFrame:
    """How often each class is predicted against how often it is true: a model that collapses onto a few
    classes shows it here before any accuracy does."""
    predicted = np.bincount(np.asarray(probs).argmax(1), minlength=len(class_names))
    true = np.bincount(np.asarray(labels), minlength=len(class_names))
    return pd.DataFrame({"predicted": predicted, "true": true}, index=list(class_names))
