"""Ensembles: a weighted average of members' softmax outputs, weights fitted on the validation split only.

Two ways to choose weights, both on validation probabilities:
  - fit_weights: minimise the log-loss of the weighted average over the simplex (softmax-parameterised,
    L-BFGS), the seed's "weighted average" with weights learned instead of hand-set; fit_pruned then drops the
    members it weights under a thousandth and refits the rest;
  - greedy_selection: Caruana et al. 2004, forward selection with replacement of the member that most
    improves validation log-loss; the counts become the weights.
Test probabilities only ever enter through ensemble_probs, after the weights are fixed. Members are averaged
under the same test-time views (centre crop, flip) or each under its own, chosen on val (best_view_probs), all
read from each member's scored views (views.py), so a member shows here the numbers of its own report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ..core.metrics import compute_metrics
from .views import chosen_views, headline_split, scored_views, view_name

LOG_EPS = 1e-12


def ensemble_probs(member_probs: list[np.ndarray], weights) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return np.tensordot(weights / weights.sum(), np.stack(member_probs), axes=1)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], LOG_EPS, None)).mean())


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def fit_weights(val_probs: list[np.ndarray], val_labels: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the validation log-loss of the weighted average."""
    stacked = np.stack(val_probs)  # (M, N, C)
    true_class = stacked[:, np.arange(len(val_labels)), val_labels]  # (M, N)

    def loss_and_grad(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        p = np.clip(w @ true_class, LOG_EPS, None)
        loss = -np.log(p).mean()
        grad_w = -(true_class / p).mean(axis=1)  # d loss / d w
        return loss, w * (grad_w - w @ grad_w)  # chain rule through the softmax

    result = minimize(loss_and_grad, np.zeros(len(val_probs)), jac=True, method="L-BFGS-B")
    w = np.exp(result.x - result.x.max())
    return w / w.sum()


PRUNE_WEIGHT = 1e-3  # a fitted weight under this moves the mix by under a thousandth; L-BFGS on the softmax never
# reaches an exact zero, so without pruning every candidate would run in the deployed ensemble


def fit_pruned(val_probs: dict[str, np.ndarray], val_labels: np.ndarray) -> dict[str, float]:
    """fit_weights, then the members weighted under PRUNE_WEIGHT dropped (weight 0) and the others refitted on
    val, until every member kept carries at least PRUNE_WEIGHT: the ensemble runs only the nets that matter."""
    kept = list(val_probs)
    while True:
        weights = dict(zip(kept, fit_weights([val_probs[n] for n in kept], val_labels).tolist()))
        heavy = [n for n in kept if weights[n] >= PRUNE_WEIGHT]
        if len(heavy) == len(kept):
            return {n: weights.get(n, 0.0) for n in val_probs}
        kept = heavy


def greedy_selection(val_probs: dict[str, np.ndarray], val_labels: np.ndarray, rounds: int = 25) -> dict[str, float]:
    """Caruana forward selection with replacement on validation log-loss; returns {member: weight}."""
    names = list(val_probs)
    counts = dict.fromkeys(names, 0)
    total = np.zeros_like(next(iter(val_probs.values())))
    best_loss = np.inf
    for step in range(1, rounds + 1):
        losses = {n: log_loss((total + val_probs[n]) / step, val_labels) for n in names}
        name = min(losses, key=losses.get)
        if losses[name] >= best_loss - 1e-6:
            break
        best_loss = losses[name]
        counts[name] += 1
        total += val_probs[name]
    used = sum(counts.values())
    return {n: c / used for n, c in counts.items() if c}


def member_probs(model_files: dict[str, Path], data, tta: bool | str, device=None) -> dict[str, dict[str, np.ndarray]]:
    """{member: {split: probs}} for every evaluation split under the test-time views `tta`, read from each
    member's scored views (views.py), on the crop it was trained with."""
    return {name: scored_views(path, data, device=device)[view_name(tta)] for name, path in model_files.items()}


USED_WEIGHT = 1e-6  # a member weighted at most this never runs: it costs nothing and is not counted as used
PER_MEMBER = "each member's best on val"  # the view label of best_view_probs' probabilities


def best_view_probs(model_files: dict[str, Path], data, device=None
                    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Each member under its own test-time views, those with the best validation accuracy (the fewest views on
    a tie), so a model trained on random crops brings its ten crops to the average: the same views, and so the
    same numbers, as the member's own report. Returns ({member: {split: probs}}, {member: chosen views})."""
    probs, chosen = {}, {}
    for name, path in model_files.items():
        chosen[name], probs[name], _ = chosen_views(path, data, device=device)
    return probs, chosen


def fit_on_validation(probs: dict[str, dict[str, np.ndarray]], val_labels: np.ndarray, method: str) -> dict[str, float]:
    """A weight for every member in `probs` (0 for those left out), read from their 'val' split alone."""
    val = {name: splits["val"] for name, splits in probs.items()}
    if method == "equal":
        return {name: 1 / len(val) for name in val}
    if method == "logloss":
        return fit_pruned(val, val_labels)
    if method == "greedy":  # a weight for every candidate, 0 for those never picked, as the other methods give
        picked = greedy_selection(val, val_labels)
        return {name: picked.get(name, 0.0) for name in val}
    raise KeyError(f"unknown ensemble method {method!r}; choose equal, logloss or greedy")


def combine(probs: dict[str, dict[str, np.ndarray]], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """The ensemble's probabilities on every split, with fixed weights."""
    names = list(weights)
    splits = probs[names[0]].keys()
    return {s: ensemble_probs([probs[n][s] for n in names], [weights[n] for n in names]) for s in splits}


def evaluate_plans(plans: dict[str, tuple[list[str], str]], probs_by_view: dict[str, dict], data) -> tuple[list[dict], dict]:
    """Fit every plan (members, method) on val under each set of test-time views, and score it on every split.

    probs_by_view: {views: {member: {split: probs}}}, e.g. "center", "flip" and PER_MEMBER. Each ensemble is
    compared with its best member under the same views, chosen by validation accuracy as any selection here is.
    Returns table rows and {(plan, views): (weights, metrics by split)}.
    """
    rows, results = [], {}
    for views, probs in probs_by_view.items():
        splits = list(next(iter(probs.values())))
        labels = {s: data.split(s)[1] for s in splits}
        headline = headline_split(splits)
        for plan, (members, method) in plans.items():
            members = [m for m in members if m in probs]
            if len(members) < 2:
                continue
            subset = {m: probs[m] for m in members}
            weights = fit_on_validation(subset, labels["val"], method)
            best_member = max(members, key=lambda m: accuracy(probs[m]["val"], labels["val"]))
            combined = combine(subset, weights)
            metrics = {s: compute_metrics(combined[s], labels[s], data.class_names) for s in splits}
            member_acc = accuracy(probs[best_member][headline], labels[headline])
            used = {m: w for m, w in weights.items() if w > USED_WEIGHT}
            rows.append({"ensemble": plan, "test-time views": views, "members": f"{len(used)} of {len(members)}",
                         "weights": ", ".join(f"{m} {w:.3f}" for m, w in sorted(used.items(), key=lambda kv: -kv[1])),
                         "val": metrics["val"]["accuracy"],
                         **{s: metrics[s]["accuracy"] for s in splits if s != "val"},
                         f"macro_f1 ({headline})": metrics[headline]["macro_f1"], f"ece ({headline})": metrics[headline]["ece"],
                         "best member": best_member, f"best member {headline}": member_acc,
                         "gain (points)": 100 * (metrics[headline]["accuracy"] - member_acc),
                         "beats best member": metrics[headline]["accuracy"] > member_acc})
            results[plan, views] = (weights, metrics)
    return rows, results
