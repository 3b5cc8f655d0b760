"""Ablations: what each choice of a recipe is worth, measured, for a report's ablation table.

Two kinds of rows. Test-time choices (which views to average, EMA or raw weights) cost no training: they are
scored on one trained model. Training-time choices are whole runs, each the main recipe with one change
(`ablations` in a training notebook: a name and the TrainConfig fields it changes), trained with the same
seed and budget and kept beside the report, so `make reports` re-evaluates them without retraining.
Every choice is made on the validation split; the test columns are shown, never used.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import torch

from .augment import TTA_VIEWS, make_policy
from .predict import predict_splits
from .train import TrainResult, config_from_recipe, train

SCORED_SPLITS = ("val", "test_private", "test_public")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def accuracies(probs_by_split: dict, data, splits=SCORED_SPLITS) -> dict[str, float]:
    return {s: float((probs_by_split[s].argmax(1) == data.split(s)[1]).mean()) for s in splits if s in probs_by_split}


def view_probs(model: torch.nn.Module, data, crop: int, views=TTA_VIEWS) -> dict[str, dict]:
    """Probabilities of every split under each test-time view set (augment.tta_views); ten_crop only for a
    model trained on crops."""
    return {v: predict_splits(model, data, crop=crop, tta=v) for v in views if v != "ten_crop" or crop}


def view_rows(probs_by_view: dict[str, dict], data) -> list[dict]:
    return [{"test-time views": v, **accuracies(p, data)} for v, p in probs_by_view.items()]


def best_views(rows: list[dict]) -> str:
    """The view set with the best validation accuracy (the fewest views on a tie: they are cheaper)."""
    return max(rows, key=lambda r: (r["val"], -TTA_VIEWS.index(r["test-time views"])))["test-time views"]


def raw_weights(result: TrainResult, checkpoint: dict) -> torch.nn.Module | None:
    """The last epoch's raw weights of an EMA run (train.py stores them beside the EMA ones), else None."""
    if "raw_model" not in checkpoint:
        return None
    model = copy.deepcopy(result.model)
    model.load_state_dict(checkpoint["raw_model"])
    return model.eval()


def train_ablations(model_name: str, recipe: dict, seed: int, overrides: dict, ablations: dict[str, dict], data,
                    run_dir: Path, report_dir: Path, device=None, retrain: bool = False) -> dict[str, TrainResult]:
    """Train (or reuse) the recipe with each ablation's changes; weights go to report_dir/ablations/<slug>/."""
    results = {}
    for name, changes in ablations.items():
        config = config_from_recipe(model_name, recipe, seed, {**overrides, **changes})
        model_dir = Path(report_dir) / "ablations" / slug(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        print(f"ablation {name!r}: {changes}", flush=True)
        results[name] = train(config, data, Path(run_dir) / "ablations" / slug(name), device=device,
                              retrain=retrain, model_path=model_dir / "model.pt", progress=False)
    return results


def run_row(name: str, change: str, result: TrainResult, data, tta, model: torch.nn.Module | None = None,
            probs_by_view: dict[str, dict] | None = None) -> dict:
    """One training run's row: its budget as spent, and its accuracies with the given test-time views
    (of `model` when given: the weights chosen for the run, else the run's own). `probs_by_view` (view_probs
    of that same model) saves predicting again: ten crops of every split take minutes on a CPU."""
    crop = make_policy(result.config.augment).crop
    known = probs_by_view or {}

    def probs(view, splits):
        return known[view] if view in known else predict_splits(model or result.model, data, splits, crop=crop,
                                                                tta=view)

    return {"run": name, "change": change, "epochs": result.meta["epochs_run"],
            "train min": round(result.meta["wall_seconds"] / 60, 1),
            **accuracies(probs(tta, SCORED_SPLITS), data),
            "test_private, flip TTA": accuracies(probs("flip", ["test_private"]), data).get("test_private")}
