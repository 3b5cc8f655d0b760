"""Ablations: what each choice of a recipe is worth, measured, for a report's ablation table.

Two kinds of rows. Test-time choices (which views to average, EMA or raw weights) cost no training: they are
scored on one trained model. Training-time choices are whole runs, each the main recipe with one change
(`ablations` in a training notebook: a name and the TrainConfig fields it changes), trained with the same
seed and budget and kept beside the report, so `make reports` re-evaluates them without retraining.
Every choice is made on the validation split; the test columns are shown, never used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.checkpoint import TrainResult, load_checkpoint
from ..core.config import TrainConfig
from ..core.metrics import mean_difference, prediction_interval, seed_interval
from ..paths import (MAIN_RUN, ablation_model_path, ablation_run_dir, model_file, run_seed_dir, seed_model_path,
                    seed_model_paths, seed_run_dir)
from ..recipes import with_changes, with_seed
from .tables import changes_text
from ..core.train import train
from .views import SCORED_SPLITS, accuracies, evaluate, scored_views

SEED_SPLITS = ("val", "test_private", "test_public", "test_all", "test_private_clean")  # the last where data has it


def weight_candidates(model_path: Path) -> dict[str, str]:
    """{row name: weights key} of a model file: an EMA run keeps its last epoch's raw weights beside the
    averaged ones (train.py), so both are candidates; any other run has one set."""
    if "raw_model" in load_checkpoint(model_path):
        return {"EMA": "model", "raw, last epoch": "raw_model"}
    return {"trained": "model"}


def weight_rows(model_path: Path, data, views: tuple[str, ...] | None = None) -> tuple[list[dict], str]:
    """Each candidate's accuracies with flip TTA, and the weights key with the best val accuracy (`views`: the
    view sets scored meanwhile, all by default; flip among them)."""
    candidates = weight_candidates(Path(model_path))
    rows = [{"weights": name, **accuracies(scored_views(model_path, data, key, views=views)["flip"], data)}
            for name, key in candidates.items()]
    return rows, candidates[max(rows, key=lambda row: row["val"])["weights"]]


def train_ablations(config: TrainConfig, ablations: dict[str, dict], data, run_dir: Path, report_dir: Path,
                    device=None, retrain: bool = False) -> dict[str, TrainResult]:
    """Train (or reuse) `config` (the chapter's, recipes.chapter_config) with each ablation's changes on top;
    weights go to report_dir/ablations/<slug>/, checkpoints to run_dir/ablations/<slug>/."""
    results = {}
    for name, changes in ablations.items():
        model_path = ablation_model_path(report_dir, name)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"ablation {name!r}: {changes_text(changes)}", flush=True)
        results[name] = train(with_changes(config, changes), data, ablation_run_dir(run_dir, name), device=device,
                              retrain=retrain, model_path=model_path, progress=False)
    return results


def run_row(name: str, change: dict | str, result: TrainResult, data, tta: str, probs_by_view: dict[str, dict]) -> dict:
    """One training run's row: its budget as spent and on what device (a time cap fits fewer epochs on slower
    cores), and its accuracies under the views `tta` and with flip TTA, read from the run's scored views
    (views.scored_views of the weights chosen for it). A refit learnt the val split, so its val accuracy is a
    training accuracy and is left blank."""
    scores = accuracies(probs_by_view[tta], data, (*SCORED_SPLITS, "test_private_clean"))  # clean where data has it
    if result.config.refit:
        scores["val"] = None
    return {"run": name, "change": change, "epochs": result.meta["epochs_run"],
            "train min": round(result.meta["wall_seconds"] / 60, 1), "device": result.meta["device"], **scores,
            "test_private, flip TTA": accuracies(probs_by_view["flip"], data, ["test_private"]).get("test_private")}


def seed_rows(report_dir: Path, data, tta: str | None = None) -> list[dict]:
    """The recipe's seeds side by side: the notebook's seed (report_dir/model.pt) and every further seed the zoo
    trained (report_dir/seeds/<seed>/model.pt), each with the epochs it ran, where and for how long, under the
    views chosen on its own val (or `tta`), then their mean, std and 95% interval for each split. A single seed
    gives one row and no summary."""
    rows = []
    for path in [model_file(report_dir)] + seed_model_paths(report_dir):
        evaluation, saved = evaluate(path, data, tta), load_checkpoint(path)
        rows.append({"run": f"seed {saved['config']['seed']}", "epochs": saved["meta"]["epochs_run"],
                     "train min": round(saved["meta"]["wall_seconds"] / 60, 1), "device": saved["meta"]["device"],
                     "views": evaluation.views,
                     **{split: evaluation.metrics[split]["accuracy"] for split in SEED_SPLITS
                        if split in evaluation.metrics}})
    if len(rows) > 1:
        splits = [split for split in SEED_SPLITS if split in rows[0]]
        stats = {split: seed_interval([row[split] for row in rows]) for split in splits}
        blank = {"epochs": "-", "train min": "-", "device": "-", "views": "-"}
        rows.append({"run": f"mean of {len(rows)}", **blank, **{s: stats[s]["mean"] for s in splits}})
        rows.append({"run": "std", **blank, **{s: stats[s]["std"] for s in splits}})
        rows.append({"run": "95% interval of the mean", **blank,
                     **{s: f"{stats[s]['low']:.4f}-{stats[s]['high']:.4f}" for s in splits}})
    return rows


def replay(result: TrainResult) -> dict:
    """The changes that replay a time-capped run without its cap: the epochs the cap fitted, with the one-cycle
    schedule planned for them from the start (the capped run re-planned it after each epoch and ended on the same
    plan). Another seed of that run then trains the same schedule on any machine, however fast its cores; a run
    without a cap is replayed as it is."""
    if not result.config.time_budget_min:
        return {}
    return {"epochs": result.meta["epochs_run"], "time_budget_min": 0}


def train_run_seeds(config: TrainConfig, ablations: dict[str, dict], runs: dict[str, TrainResult],
                    run_seeds: dict[str, list[int]], data, run_dir: Path, report_dir: Path, device=None,
                    retrain: bool = False) -> dict[str, Path]:
    """Further seeds of training runs ({run name: [seed, ...]}, MAIN_RUN for the recipe itself, whose result
    `runs` must then hold), each the run's config (`config` with the ablation's changes) replayed (`replay`) with
    another seed; weights in run_seed_dir(report_dir, name)/seeds/<seed>/. Returns {run name: its folder}."""
    for name, seeds in run_seeds.items():
        changes = {**ablations.get(name, {}), **replay(runs[name])}
        checkpoints = Path(run_dir) if name == MAIN_RUN else ablation_run_dir(run_dir, name)
        for seed in seeds:
            model_path = seed_model_path(run_seed_dir(report_dir, name), seed)
            model_path.parent.mkdir(parents=True, exist_ok=True)
            print(f"{name!r}, seed {seed}: {changes_text(changes)}", flush=True)
            train(with_seed(config, seed, changes), data, seed_run_dir(checkpoints, seed),
                  device=device, retrain=retrain, model_path=model_path, progress=False)
    return {name: run_seed_dir(report_dir, name) for name in run_seeds}


def training_rows(result: TrainResult, main_probs: dict[str, dict], runs: dict[str, TrainResult],
                  ablations: dict[str, dict], report_dir: Path, data, views: str) -> list[dict]:
    """The ablation table: this recipe's row (main_probs: scored_views of the weights chosen for it), then one
    row per training-time ablation, all under the same test-time views."""
    rows = [run_row(MAIN_RUN, "-", result, data, views, main_probs)]
    rows += [run_row(name, ablations[name], run, data, views,
                     scored_views(ablation_model_path(report_dir, name), data)) for name, run in runs.items()]
    return rows


def seed_accuracies(seeds: list[dict], split: str = "test_private") -> list[float]:
    """The accuracy on `split` of each seed in a seed_rows table, its mean, std and interval rows left out."""
    return [row[split] for row in seeds if row["run"].startswith("seed ")]


def refit_lines(rows: list[dict], seeds: list[dict]) -> list[str]:
    """Each refit among the training rows (val blank: it trained on val) against the recipe trained on train
    alone: its PrivateTest beside the recipe's seeds' mean (seed_rows), in signed points, and whether it leaves
    the 95% prediction interval of one more train-only seed (a refit is one run, not a mean). With one seed of the
    recipe, its row in `rows` is the comparison, and nothing can be said about noise."""
    accuracies_by_seed = seed_accuracies(seeds)
    if len(accuracies_by_seed) > 1:
        stats, (low, high) = seed_interval(accuracies_by_seed), prediction_interval(accuracies_by_seed)
        base, against = stats["mean"], (f"{100 * stats['mean']:.2f}% +- {100 * stats['std']:.2f} (mean of "
                                         f"{stats['n']} seeds, each under the views chosen on its own val)")
    else:
        base = next(row["test_private"] for row in rows if row["run"] == MAIN_RUN)
        against = f"{100 * base:.2f}% (one seed)"
    lines = []
    for row in (row for row in rows if row["val"] is None):
        if len(accuracies_by_seed) < 2:
            verdict = "one seed of each, so seed-to-seed noise is not measured"
        else:
            where = "above" if row["test_private"] > high else "below" if row["test_private"] < low else "inside"
            verdict = (f"{where} the 95% prediction interval of one more train-only seed ({100 * low:.2f}-"
                       f"{100 * high:.2f}%)" + (": not evidence of a difference" if where == "inside" else ""))
        lines.append(f"- **{row['run']}** ({row['epochs']} epochs on train + val, its last epoch, under this "
                     f"recipe's views): PrivateTest {100 * row['test_private']:.2f}% against {against} for "
                     f"{MAIN_RUN} on train alone: {100 * (row['test_private'] - base):+.2f} points, {verdict}.")
    return lines


def seed_comparison_lines(seeds: dict[str, list[dict]], comparisons: dict[str, str]) -> list[str]:
    """For each {run: baseline run} whose seeds both were trained (seed_rows of each in `seeds`), the run's
    PrivateTest mean against the baseline's, in signed points, with the 95% interval of the difference (Welch):
    a gain or a loss only when the interval leaves zero. A pair with a single seed on a side is said to be one.
    Where every seed on both sides was scored on PrivateTest deduplicated, a second line compares them there."""
    lines = []
    for name, baseline in comparisons.items():
        runs, bases = seeds.get(name, []), seeds.get(baseline, [])
        if not seed_accuracies(runs) or not seed_accuracies(bases):
            continue  # not trained in this budget
        lines.append(_seed_comparison(name, baseline, "test_private", runs, bases))
        if all(row.get("test_private_clean") is not None for row in runs + bases if row["run"].startswith("seed ")):
            lines.append(_seed_comparison(name, baseline, "test_private_clean", runs, bases))
    return lines


COMPARED_SPLITS = {"test_private": "PrivateTest", "test_private_clean": "PrivateTest deduplicated"}


def _seed_comparison(name: str, baseline: str, split: str, runs: list[dict], bases: list[dict]) -> str:
    runs, bases = seed_accuracies(runs, split), seed_accuracies(bases, split)
    head = (f"- **{name}** against **{baseline}**: {COMPARED_SPLITS[split]} {100 * np.mean(runs):.2f}% "
            f"against {100 * np.mean(bases):.2f}% (means of {len(runs)} and {len(bases)} seeds): "
            f"{100 * (np.mean(runs) - np.mean(bases)):+.2f} points")
    if min(len(runs), len(bases)) < 2:
        return head + "; one seed on a side, so seed-to-seed noise is not measured."
    diff = mean_difference(runs, bases)
    verdict = ("a gain" if diff["low"] > 0 else "a loss" if diff["high"] < 0
               else "not distinguishable from seed-to-seed noise")
    return head + (f", 95% interval of the difference {100 * diff['low']:+.2f} to {100 * diff['high']:+.2f} (Welch):"
                   f" {verdict}.")


def paired_seed_lines(name: str, baseline: str, runs: list[dict], bases: list[dict]) -> list[str]:
    """A run whose seed k starts from the baseline's seed k (a fine-tune from each seed of its base model), against
    the baseline seed by seed (seed_rows of each), on PrivateTest and, where both were scored there, PrivateTest
    deduplicated: the mean of the per-seed differences with its 95% interval (Student's t on the differences, a
    paired comparison, since a pair shares its start)."""
    lines = []
    for split, title in COMPARED_SPLITS.items():
        ours, theirs = ({row["run"]: row.get(split) for row in rows if row["run"].startswith("seed ")}
                        for rows in (runs, bases))
        pairs = [seed for seed in ours if ours[seed] is not None and theirs.get(seed) is not None]
        if not pairs:
            continue
        differences = [ours[seed] - theirs[seed] for seed in pairs]
        head = (f"- **{name}** against **{baseline}**, seed by seed ({', '.join(pairs)}): {title} "
                f"{100 * np.mean([ours[s] for s in pairs]):.2f}% against {100 * np.mean([theirs[s] for s in pairs]):.2f}%"
                f": {100 * np.mean(differences):+.2f} points")
        if len(pairs) < 2:
            lines.append(head + "; one pair, so seed-to-seed noise is not measured.")
            continue
        stats = seed_interval(differences)
        verdict = ("a gain" if stats["low"] > 0 else "a loss" if stats["high"] < 0
                   else "not distinguishable from seed-to-seed noise")
        lines.append(head + f" (per seed {', '.join(f'{100 * d:+.2f}' for d in differences)}), 95% interval of the "
                            f"mean difference {100 * stats['low']:+.2f} to {100 * stats['high']:+.2f} (paired t): {verdict}.")
    return lines


SCREEN_NOTE = ("Each idea alone, one change to the screen's short budget, on the same seed and under this recipe's "
               "test-time views; the gains are in points over the screen's reference run. One seed each: a gain "
               "inside seed-to-seed noise (the Seeds section of a recipe with several seeds measures it) is not "
               "evidence, and what helps after ten epochs may not help after forty.\n\n")


def against_reference(rows: list[dict], reference: str, prefix: str) -> list[dict]:
    """The rows whose run name starts with `prefix` (a screen of ideas, each one change to a shared short
    budget, named by its run), each with its val and PrivateTest gain over the `reference` row in signed points,
    best val first; none without a reference row (a budget whose recipe has no screen)."""
    base = next((row for row in rows if row["run"] == reference), None)
    if base is None:
        return []
    # The run's name says its change; every screen run shares the budget, so PublicTest is left to ablations.json.
    screen = [{**{key: value for key, value in row.items() if key not in ("change", "test_public")},
               "val gain (points)": f"{100 * (row['val'] - base['val']):+.2f}",
               "test_private gain (points)": f"{100 * (row['test_private'] - base['test_private']):+.2f}"}
              for row in rows if row["run"].startswith(prefix)]
    return sorted(screen, key=lambda row: (row["run"] != reference, -row["val"]))
