"""Test-time views, scored once per trained model and kept beside its weights.

Every page that shows a model (its own notebook, the evaluation notebook, the ensembles, the leaderboard)
needs the same thing: its probabilities on each evaluation split under each set of test-time views
(core/tta.py's table). Predicting them is most of what `make reports` costs on a CPU (ten crops of 10,000
faces for a crop-trained net), and predicting them on each page let two pages show two numbers for one
model. So they are scored once, written beside the model file (`model.pt` -> `model_views.npz`), and read
back everywhere. The file is keyed by the sha256 of the weights, of the data and of the split masks: other
weights, other data or another validation split are scored again, never reused. Each view set is stored under its
own name, so the file also says which view sets it holds: one the table gained since (tta.VIEW_SETS) is scored
alone and added, the others read back as they are.

The views a number was made with are chosen on the validation split (best_views) and always named with it.

The deduplicated test splits (data.CLEAN_SPLITS) are subsets of the test folder, so their probabilities are cut
from the stored test_all ones by masking: they add nothing to the key or the file, and nothing is predicted again.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.tta import TTA_VIEWS, VIEW_SETS, view_name, views_for
from ..core.checkpoint import load_checkpoint, load_trained
from ..core.data import SPLIT_TITLES
from ..core.readers import file_sha256
from ..core.files import read_keyed_arrays, write_atomically
from ..core.metrics import accuracy_interval, compute_metrics
from ..core.inference import EVAL_SPLITS, predict_splits
from ..paths import views_cache

SCORED_SPLITS = ("val", "test_private", "test_public")  # the splits a views table shows
# Every split a model is scored on, in the order reports list them: each test split followed by its clean version.
REPORTED_SPLITS = tuple(s for split in EVAL_SPLITS for s in (split, f"{split}_clean") if s != "val_clean")


def headline_split(splits) -> str:
    """PrivateTest, as papers report, where the data has it; else the whole test folder."""
    return "test_private" if "test_private" in splits else "test_all"


def cache_key(model_path: Path, data, weights: str) -> str:
    digest = hashlib.sha256(f"{file_sha256(model_path)} {weights} {data.sha256}".encode())
    for split in ("val", "test_all", "test_private", "test_public"):
        if split in data.available_splits():
            digest.update(np.packbits(data.split_mask(split)).tobytes())
    return digest.hexdigest()


def load_for_scoring(model_path: Path, weights: str = "model", device=None):
    """The model in a model file (or, with weights='raw_model', the raw last-epoch weights an EMA run keeps
    beside the averaged ones) and the crop it was trained on."""
    trained = load_trained(model_path, device)
    if weights != "model":
        checkpoint = load_checkpoint(model_path)
        if weights not in checkpoint:
            raise KeyError(f"{model_path} holds no {weights!r} weights (it has {sorted(checkpoint)}); "
                           "only a run with an EMA keeps its raw weights")
        trained.model.load_state_dict(checkpoint[weights])
    return trained.model.eval(), trained.crop


def _splits_from(stored: dict[str, np.ndarray], data) -> dict[str, np.ndarray]:
    """val and test_all as stored, cut into every evaluation split (test halves and clean splits from test_all)."""
    inside = data.split_mask("test_all")
    cut = {"val": stored["val"], "test_all": stored["test_all"]}
    for half in ("test_private", "test_public"):
        if half in data.available_splits():
            cut[half] = stored["test_all"][data.split_mask(half)[inside]]
    for clean in data.clean_splits():
        cut[clean] = stored["test_all"][data.split_mask(clean)[inside]]
    return {s: cut[s] for s in REPORTED_SPLITS if s in cut}


def _read_cache(path: Path, key: str) -> dict[str, dict[str, np.ndarray]]:
    """{view: {"val": ..., "test_all": ...}} stored in a views file whose key matches; {} for none, another key,
    or a file that cannot be read (it is scored again and overwritten)."""
    saved = read_keyed_arrays(path, key)
    views = [v for v in TTA_VIEWS if f"{v}/val" in saved]
    return {v: {s: saved[f"{v}/{s}"] for s in ("val", "test_all")} for v in views}


def scored_views(model_path, data, weights: str = "model", device=None, views: tuple[str, ...] | None = None
                 ) -> dict[str, dict[str, np.ndarray]]:
    """{view: {split: probabilities}} for every view set that differs for this model (of `views` only, when
    given: a trial scores the cheap ones), from the file beside it when its key matches; a view set it lacks
    (new in tta.VIEW_SETS, or the file is missing or another model's) is scored now and the file written again
    with it (atomically)."""
    model_path = Path(model_path)
    path, key = views_cache(model_path, weights), cache_key(model_path, data, weights)
    stored = _read_cache(path, key)
    # A file is written with every view set that differed for its model, so one holding a crop-only set was a
    # crop-trained model's: the table's sets for that kind of model that the file lacks are the ones to score.
    def restricted(names):
        return [v for v in names if views is None or v in views]
    wanted = restricted(views_for(int(any(VIEW_SETS[v].needs_crop for v in stored))))
    if not stored or any(v not in stored for v in wanted):
        model, crop = load_for_scoring(model_path, weights, device)
        wanted = restricted(views_for(crop))
        stored.update({v: predict_splits(model, data, ["val", "test_all"], crop=crop, tta=v)
                       for v in wanted if v not in stored})
        write_atomically(path, lambda f: np.savez_compressed(f, key=np.array(key), **{
            f"{v}/{s}": p.astype(np.float32) for v, by_split in stored.items() for s, p in by_split.items()}))
    return {v: _splits_from(stored[v], data) for v in wanted}


def accuracies(probs_by_split: dict, data, splits=SCORED_SPLITS) -> dict[str, float]:
    return {s: float((probs_by_split[s].argmax(1) == data.split(s)[1]).mean()) for s in splits if s in probs_by_split}


def view_rows(probs_by_view: dict[str, dict], data) -> list[dict]:
    return [{"test-time views": v, **accuracies(p, data)} for v, p in probs_by_view.items()]


def best_views(rows: list[dict]) -> str:
    """The view set with the best validation accuracy (the fewest views on a tie: they are cheaper)."""
    return max(rows, key=lambda r: (r["val"], -TTA_VIEWS.index(r["test-time views"])))["test-time views"]


def chosen_views(model_path, data, tta: bool | str | None = None, weights: str = "model", device=None,
                 views: tuple[str, ...] | None = None) -> tuple[str, dict[str, np.ndarray], list[dict]]:
    """(views, {split: probabilities} under them, the table of every view set): the views with the best
    validation accuracy when tta is None, else the views asked for."""
    probs_by_view = scored_views(model_path, data, weights, device, views)
    rows = view_rows(probs_by_view, data)
    chosen = best_views(rows) if tta is None else view_name(tta)
    if chosen not in probs_by_view:
        raise ValueError(f"{model_path}: test-time views {chosen!r} do not apply to this model; "
                         f"choose one of {list(probs_by_view)}")
    return chosen, probs_by_view[chosen], rows


@dataclass
class Evaluation:
    """A trained model scored under one set of test-time views: what every page shows of it."""
    views: str  # the view set behind every number here
    probs: dict[str, np.ndarray]  # {split: probabilities}
    metrics: dict[str, dict]  # {split: metrics.compute_metrics}
    view_table: list[dict]  # accuracy by split under every view set, to show how the views were chosen
    headline: str  # the split a report leads with


def evaluate(model_path, data, tta: bool | str | None = None, weights: str = "model", device=None,
             candidates: tuple[str, ...] | None = None) -> Evaluation:
    """Metrics of every evaluation split under the views with the best val accuracy (or those `tta` names),
    among `candidates` when given (a trial's cheap views)."""
    views, probs, rows = chosen_views(model_path, data, tta, weights, device, candidates)
    metrics = {split: compute_metrics(p, data.split(split)[1], data.class_names) for split, p in probs.items()}
    return Evaluation(views, probs, metrics, rows, headline_split(metrics))


def view_table_frame(rows: list[dict]) -> pd.DataFrame:
    """view_rows as a notebook table, one row per view set, the splits by their titles."""
    return pd.DataFrame(rows).set_index("test-time views").rename(columns=SPLIT_TITLES).round(4)


def seen_gap(probs_by_split: dict[str, np.ndarray], data, split: str = "test_private") -> dict:
    """Accuracy on the faces of a test split that have a copy in train or val (or are blank) against the rest
    (its clean split): how much a model gains from faces it has, in effect, already seen."""
    labels = data.split(split)[1]
    seen = data.seen_in_training()[data.split_mask(split)]
    right = probs_by_split[split].argmax(1) == labels
    seen_acc, rest_acc = float(right[seen].mean()) if seen.any() else float("nan"), float(right[~seen].mean())
    return {"seen faces": int(seen.sum()), "accuracy on seen": seen_acc, "other faces": int((~seen).sum()),
            "accuracy on the rest": rest_acc, "gain (points)": 100 * (seen_acc - rest_acc)}


def clean_comparison(evaluations: dict[str, Evaluation], data) -> pd.DataFrame:
    """Per model, under its own views: the headline split raw and deduplicated (with the clean accuracy's 95%
    Wilson interval), accuracy on the faces with a copy in train or val against the rest, and each model's rank
    by the raw and by the clean accuracy. Best raw first."""
    rows = {}
    for model, evaluation in evaluations.items():
        split = evaluation.headline
        clean = evaluation.metrics.get(f"{split}_clean")
        if clean is None:
            continue
        low, high = accuracy_interval(clean["accuracy"], clean["n"])
        gap = seen_gap(evaluation.probs, data, split)
        # Short column names, the interval in one cell: the table fits a 1000 px page.
        rows[model] = {"views": evaluation.views, "raw": evaluation.metrics[split]["accuracy"],
                       "deduplicated": clean["accuracy"], "95% CI": f"{low:.4f}-{high:.4f}",
                       "seen faces": gap["seen faces"], "on seen": gap["accuracy on seen"],
                       "on the rest": gap["accuracy on the rest"], "seen gain (pts)": gap["gain (points)"]}
    frame = pd.DataFrame(rows).T.sort_values("raw", ascending=False)
    frame["raw rank"] = range(1, len(frame) + 1)
    frame["clean rank"] = frame["deduplicated"].astype(float).rank(ascending=False, method="min").astype(int)
    return frame.infer_objects().round(4)


def ranking_change(frame: pd.DataFrame) -> str:
    """One sentence: whether the deduplicated split orders the models as the raw one does, and who moves."""
    moved = frame[frame["raw rank"] != frame["clean rank"]]
    if moved.empty:
        return f"The deduplicated split ranks all {len(frame)} models as the raw split does."
    return (f"The deduplicated split reorders {len(moved)} of {len(frame)} models: "
            + ", ".join(f"{m} {r['raw rank']} -> {r['clean rank']}" for m, r in moved.iterrows())
            + " (raw rank -> clean rank). Models closer than the 95% intervals are not ranked by either split.")
