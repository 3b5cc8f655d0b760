"""Reports: run the notebooks headlessly, write each model's report, and the index with its leaderboard.

`make reports` calls `python -m emo_utils.reports`: every notebook in notebooks/ runs in order through
papermill on the project's kernel; the executed copy and its HTML land in reports/, and
reports/README.md is rewritten as an index and leaderboard from the reports/*/metrics.json files.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .data import REPO_ROOT
from .metrics import accuracy_interval, most_confused_pairs, summary
from .models import build_model, count_flops
from .plots import plot_leaderboard, save_figure
from .recipes import NotebookError, declared_parameters, notebook_parameters  # noqa: F401 (reports' API)
from .train import load_checkpoint
from .views import VIEW_TITLES, Evaluation, evaluate, headline_split

NOTEBOOKS = REPO_ROOT / "notebooks"
REPORTS = REPO_ROOT / "reports"
SPLIT_TITLES = {"test_private": "PrivateTest", "test_public": "PublicTest", "test_all": "Whole test folder",
                "val": "Validation (10% of train)"}

# Figures the seeds published, for the leaderboard's "published" column. test_all is the whole Kaggle test
# folder (7,178 images), which is what those repositories evaluate on.
PUBLISHED = {
    "mini_xception": {"split": "test_all", "accuracy": 0.69, "macro_f1": 0.68, "auc_micro": 0.91,
                      "source": "Mini-Xception seed (Arriaga et al. 2017 architecture), Kaggle test folder"},
    # Figures measured on other datasets name it in "dataset": shown beside ours, never as like for like.
    "cnn3": {"split": "test_all", "accuracy": 0.523, "dataset": "another dataset, not FER2013",
             "source": "3-conv CNN seed, 52.3% on another dataset (not FER2013)"},
    "unet_classifier": {"split": "test_all", "accuracy": 0.77, "dataset": "RAVDESS speech, 8 classes, not FER2013",
                        "source": "UNet-style seed, 77% on an 8-class dataset (not FER2013), 99.7% train accuracy"},
    # Best from-scratch single nets, both selected on the test split they report (we select on val).
    "vgg_gap": {"split": "test_private", "accuracy": 0.737,
                "source": "from-scratch records: VGG variant 73.28% (Khaireddin et al. 2021), ResNet18 with label "
                          "smoothing and mixup 73.7%; both chose epochs on the test split they report"},
    "model_x": {"split": "test_all", "accuracy": 0.50, "dataset": "another 6-class dataset, not FER2013",
                "source": "ensembling seed's Model X, about 50% on a 6-class dataset, neutral the hardest class"},
}

PUBLISHED_METRICS = (("accuracy", "acc"), ("macro_f1", "F1"), ("auc_micro", "AUC"))


def published_text(pub: dict | None) -> str:
    """The figures a seed published, only those it published, and on which dataset if not FER2013."""
    if not pub:
        return "—"
    text = ", ".join(f"{pub[key]:.3g} {label}" for key, label in PUBLISHED_METRICS if key in pub)
    where = [pub["dataset"]] if pub.get("dataset") else []
    if pub.get("split", "test_all") != "test_all":
        where.append(SPLIT_TITLES.get(pub["split"], pub["split"]))
    return text + (f" ({', '.join(where)})" if where else "")


# ---------------------------------------------------------------- provenance

def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # reports/ is what `make reports` rewrites as it goes: only a change elsewhere makes the code uncommitted.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+uncommitted" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def library_versions() -> dict:
    import sklearn
    import torch
    import torchvision
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def provenance(seed: int, data_sha256: str, meta: dict, budget: str) -> dict:
    """Where a result came from. `meta` is TrainResult.meta (device and wall time of the training run)."""
    versions = library_versions()
    return {"commit": git_commit(), "seed": seed, "data_sha256": data_sha256, "device": meta.get("device", ""),
            "torch": versions["torch"], "versions": versions, "wall_seconds": round(meta.get("wall_seconds", 0.0), 1),
            "epochs_run": meta.get("epochs_run", 0), "epochs_asked": meta.get("epochs_asked", 0),
            "best_epoch": meta.get("best_epoch", 0), "stop_reason": meta.get("stop_reason", ""), "budget": budget,
            "reused_weights": bool(meta.get("reused", False)),
            "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


CONVERGENCE_WINDOW = 10  # epochs
CONVERGENCE_TOLERANCE = 0.005  # half a point of val accuracy


def convergence(history: list[dict], stop_reason: str) -> tuple[bool, str]:
    """Whether a run trained until it stopped improving, and why we say so: early stopping fired, or its last
    CONVERGENCE_WINDOW epochs raised the best val accuracy by less than CONVERGENCE_TOLERANCE."""
    if stop_reason.startswith("early stopping"):
        return True, "early stopping fired"
    if len(history) <= CONVERGENCE_WINDOW:
        return False, f"only {len(history)} epochs run: too few to see a plateau"
    before = max(r["val_acc"] for r in history[:-CONVERGENCE_WINDOW])
    last = max(r["val_acc"] for r in history[-CONVERGENCE_WINDOW:])
    gain = 100 * (last - before)
    if gain < 100 * CONVERGENCE_TOLERANCE:
        return True, f"flat: the last {CONVERGENCE_WINDOW} epochs raised the best val accuracy by {gain:+.2f} points"
    return False, f"still rising: the last {CONVERGENCE_WINDOW} epochs raised the best val accuracy by {gain:+.2f} points"


def run_summary(meta: dict) -> pd.Series:
    """TrainResult.meta for a notebook: minutes instead of seconds, rounded, nothing printed to 15 digits."""
    shown = {k: v for k, v in meta.items() if k != "wall_seconds"}
    shown["minutes"] = round(meta.get("wall_seconds", 0.0) / 60, 1)
    shown["best_val_acc"] = round(meta.get("best_val_acc", 0.0), 4)
    return pd.Series(shown, dtype=object).to_frame("training run")


def comparison_note(title: str, evaluation: Evaluation, other_title: str, other_model: Path, data) -> str:
    """A sentence setting this model against another on the headline split, each under its own views chosen on
    val, read from the other's weights (not its report, which may be older), and whether the test can tell."""
    if not Path(other_model).exists():
        return f"No {other_title} weights ({other_model}) to compare with yet."
    other = evaluate(other_model, data)
    split = evaluation.headline
    ours, theirs = evaluation.metrics[split], other.metrics[split]
    gap = 100 * (ours["accuracy"] - theirs["accuracy"])
    low, high = accuracy_interval(ours["accuracy"], ours["n"])
    noise = 100 * (high - low) / 2
    verdict = (f"a gap of {gap:+.2f} points, inside the test's 95% noise of about +-{noise:.1f}: the two are not "
               "told apart" if abs(gap) < noise else
               f"{title} is {'ahead' if gap > 0 else 'behind'} by {abs(gap):.2f} points, beyond the test's 95% noise "
               f"of about +-{noise:.1f}")
    checkpoint = load_checkpoint(Path(other_model))
    meta, (converged, why) = checkpoint["meta"], convergence(checkpoint["history"], checkpoint["meta"]["stop_reason"])
    trained = (f"{other_title} ran {meta['epochs_run']} of {meta['epochs_asked']} epochs and "
               + ("converged" if converged else f"has **not** converged ({why}), so this is not its verdict"))
    return (f"**{title} against {other_title}** on {SPLIT_TITLES[split]}: accuracy {ours['accuracy']:.4f} "
            f"({evaluation.views}) vs {theirs['accuracy']:.4f} ({other.views}), macro-F1 {ours['macro_f1']:.3f} vs "
            f"{theirs['macro_f1']:.3f}: {verdict}. {trained}.")


# ---------------------------------------------------------------- a model's report

def _fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def results_table(metrics_by_split: dict) -> str:
    lines = ["| split | n | accuracy | macro-F1 | AUC micro | AUC macro | ECE |", "|---|---:|---:|---:|---:|---:|---:|"]
    for split, m in metrics_by_split.items():
        lines.append(f"| {SPLIT_TITLES.get(split, split)} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} | "
                     f"{_fmt(m['auc_micro'])} | {_fmt(m['auc_macro'])} | {_fmt(m['ece'])} |")
    return "\n".join(lines)


def per_class_table(metrics: dict) -> str:
    lines = ["| class | precision | recall | F1 | AUC | support |", "|---|---:|---:|---:|---:|---:|"]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {_fmt(c['precision'], 3)} | {_fmt(c['recall'], 3)} | {_fmt(c['f1'], 3)} | "
                     f"{_fmt(c['auc'], 3)} | {c['support']} |")
    return "\n".join(lines)


def interpretation(model_name: str, metrics_by_split: dict, history: list[dict], headline: str) -> list[str]:
    """A few sentences read off the numbers, so the text can never disagree with the tables."""
    m = metrics_by_split[headline]
    per_class = m["per_class"]
    ranked = sorted(per_class, key=lambda c: per_class[c]["f1"])
    names = list(per_class)
    true_name, pred_name, count, share = most_confused_pairs(m["confusion"], names, k=1)[0]
    notes = [f"On {SPLIT_TITLES.get(headline, headline)} the model is right on {m['accuracy']:.1%} of {m['n']} faces "
             f"(macro-F1 {m['macro_f1']:.3f}). The easiest class is **{ranked[-1]}** (F1 {per_class[ranked[-1]]['f1']:.3f}) "
             f"and the hardest **{ranked[0]}** (F1 {per_class[ranked[0]]['f1']:.3f}).",
             f"The most frequent confusion is {true_name} taken for {pred_name}: {count} faces, "
             f"{share:.1%} of all {true_name} faces."]
    if history:
        best = max(history, key=lambda r: r["val_acc"])
        gap = best["train_acc"] - best["val_acc"]
        fit = ("it still underfits: train accuracy (under augmentation) is below validation accuracy"
               if gap < 0 else f"train accuracy (under augmentation) is {100 * gap:.1f} points above validation accuracy")
        notes.append(f"The best validation accuracy during training (no TTA), {best['val_acc']:.1%}, came at epoch "
                     f"{best['epoch']} of {len(history)}; there {fit}.")
    ece = m["ece"]
    notes.append(f"Expected calibration error is {ece:.3f}: " + (
        "confidences can be read almost as probabilities." if ece < 0.03 else
        "confidences are somewhat off; temperature scaling on the validation split would tighten them."
        if ece < 0.08 else "confidences are poorly calibrated; do not read them as probabilities."))
    published = PUBLISHED.get(model_name)
    if published:
        ours = metrics_by_split[published["split"]]
        verdict = []
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("auc_micro", "micro-AUC")):
            if key in published:
                sign = "above" if ours[key] > published[key] else "below"
                verdict.append(f"{label} {ours[key]:.3f} vs {published[key]:.3g} ({ours[key] - published[key]:+.3f}, {sign})")
        split_title = SPLIT_TITLES[published["split"]]
        if published.get("dataset"):
            notes.append(f"The seed published its figures on {published['dataset']}: not a like-for-like comparison. "
                         f"Beside ours on {split_title}: " + "; ".join(verdict) + ".")
        else:
            notes.append(f"Against the published figures on {split_title}: " + "; ".join(verdict) + ".")
    return notes


def write_model_report(report_dir, model_name: str, title: str, metrics_by_split: dict, history: list[dict],
                       config: dict, meta: dict, prov: dict, params: int, flops: int, figures: dict[str, str],
                       recipe_note: str = "", headline: str = "test_private", sections: dict[str, str] | None = None,
                       views: str = "flip", view_table: list[dict] | None = None) -> Path:
    """reports/<model>/README.md and metrics.json. `figures` maps a caption to a PNG path inside report_dir;
    `views` names the test-time views behind every number (views.py), `view_table` the accuracy of each."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    headline = headline if headline in metrics_by_split else "test_all"
    converged, why = convergence(history, prov["stop_reason"])
    prov = {**prov, "tta": views, "converged": converged, "convergence": why}
    record = {"model": model_name, "params": int(params), "flops": int(flops),
              "splits": {s: summary(m) for s, m in metrics_by_split.items()}, "provenance": prov}
    (report_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")

    m = metrics_by_split[headline]
    low, high = accuracy_interval(m["accuracy"], m["n"])
    lines = [f"# {title}", "",
             "_Generated by `make reports` from the executed notebook; do not edit by hand._", "",
             f"**{SPLIT_TITLES.get(headline, headline)} accuracy {m['accuracy']:.2%}** (95% interval {low:.1%} to "
             f"{high:.1%}, {m['n']:,} faces), macro-F1 {m['macro_f1']:.3f}; test-time views: **{VIEW_TITLES.get(views, views)}** "
             f"(`{views}`, chosen on the validation split). Every number on this page uses these views.", "",
             f"- Budget: **{prov['budget']}** recipe, trained on {prov['device']} for {prov['wall_seconds'] / 60:.1f} "
             f"min, {prov['epochs_run']} of {prov['epochs_asked']} epochs asked (stopped: {prov['stop_reason']}); "
             f"best validation epoch {prov['best_epoch']}. Converged: **{'yes' if converged else 'no'}** ({why})."
             + (" Weights re-evaluated from the committed model.pt, not retrained." if prov["reused_weights"] else ""),
             f"- {params:,} parameters, {flops / 1e6:.1f} MFLOPs per 48x48 image (forward).",
             f"- Commit `{prov['commit']}`, seed {prov['seed']}, data sha256 `{prov['data_sha256'][:16]}…`, "
             f"torch {prov['torch']}, evaluated {prov['evaluated_at']}.", ""]
    if recipe_note:
        lines += [recipe_note, ""]
    lines += ["## Results", "", results_table(metrics_by_split), "",
              "Model, epoch and test-time views were selected on the validation split only; test splits were never "
              "looked at during training.", "", "## What the numbers say", ""]
    lines += [f"- {note}" for note in interpretation(model_name, metrics_by_split, history, headline)]
    lines += ["", f"## Per class ({SPLIT_TITLES.get(headline, headline)})", "", per_class_table(metrics_by_split[headline]), ""]
    if view_table:
        lines += ["## Test-time views", "", "Accuracy by split under each set of views; the row with the best "
                  "validation accuracy is the one reported.", "", markdown_table(view_table), ""]
    for title_, body in (sections or {}).items():
        lines += [f"## {title_}", "", body, ""]
    for caption, path in figures.items():
        lines += [f"### {caption}", "", f"![{caption}]({Path(path).name})", ""]
    crop = config["augment"].get("crop", 0) if isinstance(config.get("augment"), dict) else 0
    lines += ["## Recipe", "", "```json", json.dumps(config, indent=2), "```", "",
              "## Load the weights", "", f"This reproduces the {SPLIT_TITLES.get(headline, headline)} accuracy above.",
              "", "```python",
              "from emo_utils.data import load_dataset",
              "from emo_utils.inference import predict_splits",
              "from emo_utils.train import load_trained",
              "data = load_dataset()",
              f"result = load_trained('reports/{report_dir.name}/model.pt')  # TrainResult: .model, .config, .history",
              f"probs = predict_splits(result.model, data, ['{headline}'], crop={crop}, tta='{views}')['{headline}']",
              f"print((probs.argmax(1) == data.split('{headline}')[1]).mean())  # {m['accuracy']:.4f}", "```", ""]
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a GitHub table; fractions (accuracies, weights) to 4 places, larger floats (minutes,
    losses) to 4 significant digits, so 59.5 minutes reads 59.5, not 59.5000."""
    def cell(v):
        if not isinstance(v, float):
            return str(v)
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.4g}"
    head = list(rows[0])
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows])


def trained_models(reports_dir: Path = None, ablations: bool = False) -> dict[str, Path]:
    """{model name: reports/<model>/model.pt} for every model with committed weights; with `ablations`, also each
    training-time ablation's weights (reports/<model>/ablations/<run>/model.pt), named `<model>/<run>`."""
    root = Path(reports_dir or REPORTS)
    found = {p.parent.name: p for p in sorted(root.glob("*/model.pt"))}
    if ablations:
        found.update({f"{p.parents[2].name}/{p.parent.name}": p for p in sorted(root.glob("*/ablations/*/model.pt"))})
    return found


def ensemble_verdict(rows: list[dict]) -> str:
    """A sentence per outcome from evaluate_plans' rows: how many plans beat their best member on the headline
    split, and by how much the others miss, so a reader need not scan the table for it."""
    headline = next(k for k in rows[0] if k.startswith("best member ")).removeprefix("best member ")
    name = lambda r: f"{r['ensemble']} ({r['test-time views']})"  # noqa: E731
    wins = [r for r in rows if r["beats best member"]]
    text = f"**{len(wins)} of {len(rows)} plans beat their best member on {headline}.**"
    if wins:
        top = max(wins, key=lambda r: r["gain (points)"])
        text += f" The largest gain: {name(top)}, {top['gain (points)']:+.2f} points."
    misses = [r for r in rows if not r["beats best member"]]
    if misses:
        text += " Short of it: " + "; ".join(f"{name(r)} {r['gain (points)']:+.2f}" for r in misses) + " points."
    return text


def write_ensemble_report(report_dir, rows: list[dict], chosen: str, views: str, weights: dict[str, float],
                          metrics_by_split: dict, member_files: dict[str, Path], data_sha256: str,
                          member_views: dict[str, str] | None = None) -> Path:
    """reports/ensemble/: README.md with every plan's table, and metrics.json (shared shape) for the ensemble
    chosen on validation accuracy. `views` names the test-time views the members were averaged under;
    member_views, when each member had its own, says which."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    used = [m for m, w in weights.items() if w > 1e-6]  # a member weighted 0 never runs: it costs nothing
    checkpoints = {m: load_checkpoint(member_files[m]) for m in used}  # each member read once
    metas = {m: checkpoint["meta"] for m, checkpoint in checkpoints.items()}
    flops = sum(count_flops(build_model(c["config"]["model"], c["num_classes"], **c["config"]["model_kwargs"]))
                for c in checkpoints.values())  # an ensemble runs every member
    prov = provenance(0, data_sha256, {"device": "; ".join(sorted({meta["device"] for meta in metas.values()})),
                                       "wall_seconds": sum(meta["wall_seconds"] for meta in metas.values())}, "cpu")
    own_views = {m: member_views[m] for m in used} if member_views else None
    prov.update(members=weights, tta=views, selected_on="val accuracy")
    if own_views:
        prov["member_views"] = own_views
    record = {"model": "ensemble", "params": int(sum(meta["params"] for meta in metas.values())), "flops": int(flops),
              "splits": {s: summary(m) for s, m in metrics_by_split.items()}, "provenance": prov}
    (report_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown_table(rows)
    lines = ["# Ensembles", "", "_Generated by `make reports` (notebook 11); do not edit by hand._", "",
             "Weighted averages of the members' softmax outputs. Weights are fitted on the validation split only "
             "(log-loss over the simplex, or Caruana greedy selection); every ensemble is compared with its best "
             "member, also chosen on validation accuracy.", "",
             f"**Chosen on validation accuracy:** {chosen}, test-time views: {views}; weights "
             + ", ".join(f"{m} {w:.3f}" + (f" ({own_views[m]})" if own_views and m in own_views else "")
                         for m, w in weights.items()) + ".", "",
             results_table(metrics_by_split), "", "## Every plan", "", ensemble_verdict(rows), "", table, "",
             f"Members trained for {prov['wall_seconds'] / 60:.1f} min in all on {prov['device']}; commit "
             f"`{prov['commit']}`, data sha256 `{data_sha256[:16]}…`.", ""]
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def replace_section(path: Path, title: str, body: str, date: str | None = None) -> Path:
    """Write `## <title>, <date>` and body into a markdown file in place of every earlier section with that
    title (whatever its date), so a benchmark rerun supersedes its old result instead of piling up beside it."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    heading = f"## {title}, {date or dt.date.today().isoformat()}"
    parts = text.split("\n## ")
    head, sections = parts[0], ["## " + p for p in parts[1:]]
    is_ours = [section.split("\n", 1)[0].rsplit(",", 1)[0] == f"## {title}" for section in sections]
    new = f"{heading}\n\n{body.strip()}\n"
    where = is_ours.index(True) if any(is_ours) else len(sections)
    kept = [s_ for s_, ours in zip(sections, is_ours) if not ours]
    kept.insert(min(where, len(kept)), new)
    path.write_text("\n".join([head.rstrip("\n") + "\n"] + [s_.rstrip("\n") + "\n" for s_ in kept]))
    return path


# ---------------------------------------------------------------- index and leaderboard

def load_model_metrics(reports_dir: Path = REPORTS) -> list[dict]:
    records = []
    for path in sorted(Path(reports_dir).glob("*/metrics.json")):
        record = json.loads(path.read_text())
        record["_dir"] = path.parent.name
        records.append(record)
    return records


def short_device(device: str) -> str:
    """'cpu (x86_64, 2 threads)' -> 'CPU x2'; a GPU keeps its name; several devices are joined."""
    def one(d):
        if d.startswith("cpu"):
            threads = d.split(",")[-1].strip(" )").split(" ")[0]
            return f"CPU x{threads}" if threads.isdigit() else "CPU"
        return d
    return ", ".join(dict.fromkeys(one(d.strip()) for d in device.split(";")))


def leaderboard_rows(records: list[dict]) -> list[dict]:
    """One row per model, best headline accuracy first, with its 95% interval and how it was trained."""
    rows = []
    for r in records:
        p, split = r["provenance"], headline_split(r["splits"])
        m = r["splits"][split]
        rows.append({"model": r["model"], "dir": r["_dir"], "split": split, "accuracy": m["accuracy"], "n": m["n"],
                     "interval": accuracy_interval(m["accuracy"], m["n"]), "macro_f1": m["macro_f1"],
                     "whole": r["splits"].get("test_all", {}).get("accuracy"), "params": r["params"],
                     "views": p.get("tta", "flip"), "ensemble": "members" in p, "budget": p.get("budget", ""),
                     "epochs": (p.get("epochs_run"), p.get("epochs_asked")), "minutes": p["wall_seconds"] / 60,
                     "device": short_device(p.get("device", "")), "converged": p.get("converged"),
                     "convergence": p.get("convergence", ""), "published": PUBLISHED.get(r["model"])})
    return sorted(rows, key=lambda row: -row["accuracy"])


def within_noise(rows: list[dict]) -> list[tuple[str, str]]:
    """Neighbouring rows whose accuracies lie inside each other's 95% intervals: the test does not rank them."""
    return [(a["model"], b["model"]) for a, b in zip(rows, rows[1:])
            if a["interval"][0] <= b["accuracy"] and b["interval"][1] >= a["accuracy"]]


def _trained_cell(row: dict) -> str:
    if row["ensemble"]:
        return f"members' {row['minutes']:.0f} min"
    run, asked = row["epochs"]
    return f"{row['budget']}: {run}/{asked} ep, {row['minutes']:.0f} min, {row['device']}"


def _converged_cell(row: dict) -> str:
    if row["converged"] is None:
        return "—"
    return "yes" if row["converged"] else "**no**"


def leaderboard(records: list[dict]) -> str:
    """The answer first (best single model, best ensemble), then the table, then what it cannot tell apart."""
    rows = leaderboard_rows(records)
    if not rows:
        return "_No trained model yet: run `make reports`._"
    split_title = SPLIT_TITLES[rows[0]["split"]]

    def named(row):
        low, high = row["interval"]
        return (f"**[{row['model']}]({row['dir']}/README.md), {row['accuracy']:.2%} {split_title}** (95% interval "
                f"{low:.1%} to {high:.1%}, {VIEW_TITLES.get(row['views'], row['views'])})")

    singles = [r for r in rows if not r["ensemble"]]
    ensembles = [r for r in rows if r["ensemble"]]
    lead = [f"Best single model: {named(singles[0])}." if singles else "",
            f"Best ensemble: {named(ensembles[0])}." if ensembles else ""]
    head = ["| model | views | " + f"{split_title} (95% interval)" + " | whole test | macro-F1 | params | trained | converged |",
            "|---|---|---:|---:|---:|---:|---|---|"]
    best = rows[0]["accuracy"]
    lines = []
    for row in rows:
        low, high = row["interval"]
        acc = f"{row['accuracy']:.4f} ({low:.3f}-{high:.3f})"
        acc = f"**{acc}**" if row["accuracy"] == best else acc
        whole = f"{row['whole']:.4f}" if row["whole"] is not None else "—"
        lines.append(f"| [{row['model']}]({row['dir']}/README.md) | {row['views']} | {acc} | {whole} | "
                     f"{row['macro_f1']:.3f} | {row['params'] / 1e6:.2f}M | {_trained_cell(row)} | {_converged_cell(row)} |")
    ties = within_noise(rows)
    notes = ["", f"Sorted by {split_title} accuracy; the 95% interval is Wilson's, about +-1.5 points on "
             f"{rows[0]['n']:,} faces. "
             + ("Neighbours inside each other's interval, which this test does not rank: "
                + ", ".join(f"{a} and {b}" for a, b in ties) + "." if ties else "No two neighbours are within noise."),
             "",
             "**views**: the test-time views behind every number of the row, chosen on the validation split "
             "(`center` the centre crop; `flip` it and its mirror; `full_flip` the whole face and its mirror; "
             "`ten_crop` four corners and the centre, each mirrored). **trained**: the recipe (`full`: the published "
             "one, or the flagship's GPU recipe; `cpu`: the same model, loss and optimizer family fitted to 2 CPU "
             "cores, what differs is in each README), epochs run of those asked, minutes and device. **converged**: "
             "early stopping fired, or the last 10 epochs raised the best val accuracy by under half a point."]
    published = [f"[{r['model']}]({r['dir']}/README.md) {published_text(r['published'])}" for r in rows if r["published"]]
    if published:
        notes += ["", "Figures the seeds published (their README compares): " + "; ".join(published) + "."]
    return "\n".join([line for line in lead if line] + [""] + head + lines + notes)


def leaderboard_figure(records: list[dict], path: Path) -> Path:
    """Accuracy against parameters for every model, with the FER2013 figures the seeds published marked."""
    rows = leaderboard_rows(records)
    points = {r["model"]: (r["params"], r["accuracy"], r["interval"]) for r in rows}
    published = {r["model"]: (r["params"], r["published"]["accuracy"], SPLIT_TITLES[r["published"]["split"]])
                 for r in rows if r["published"] and not r["published"].get("dataset")}
    return save_figure(plot_leaderboard(points, published, SPLIT_TITLES[rows[0]["split"]]), path)


def write_index(reports_dir: Path = REPORTS, notebooks_dir: Path = NOTEBOOKS) -> Path:
    reports_dir = Path(reports_dir)
    records = load_model_metrics(reports_dir)
    lines = ["# Reports", "", "_Generated by `make reports`; every number here comes from an executed notebook._", "",
             "## Leaderboard (FER2013)", "", leaderboard(records), "",
             "PrivateTest is the headline split, as in papers; 'whole test' is all 7,178 images of the Kaggle test "
             "folder. Model, epoch and view selection used the validation split (a stratified, seeded 10% of train) "
             "only.", ""]
    if records:
        figure = leaderboard_figure(records, reports_dir / "leaderboard.png")
        lines += [f"![{figure.stem}]({figure.name})", ""]
    lines += ["## Notebooks", "", "| notebook | executed HTML | executed notebook |", "|---|---|---|"]
    for nb in sorted(Path(notebooks_dir).glob("*.ipynb")):
        html, executed = reports_dir / f"{nb.stem}.html", reports_dir / f"{nb.stem}.ipynb"
        lines.append(f"| `{nb.name}` | " + (f"[{html.name}]({html.name})" if html.exists() else "not run yet")
                     + " | " + (f"[{executed.name}]({executed.name})" if executed.exists() else "—") + " |")
    extra = sorted(p.name for p in reports_dir.glob("*.md") if p.name != "README.md")
    if extra:
        lines += ["", "## Other reports", ""] + [f"- [{name}]({name})" for name in extra]
    index = reports_dir / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


# ---------------------------------------------------------------- running notebooks

def default_type(default: str) -> type | None:
    """The type a parameter's default declares: a literal's, or dict/list/tuple for a dict(...) call and the
    like. None (any value goes) for a None default or any other expression."""
    try:
        node = ast.parse(default, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("dict", "list", "tuple"):
        return {"dict": dict, "list": list, "tuple": tuple}[node.func.id]
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return None if value is None else type(value)


def check_parameter_type(notebook: Path, name: str, value, default: str) -> None:
    """A value papermill would inject must have its default's type: caught here, before the notebook runs,
    instead of as a TypeError an hour into training. An int passes for a float, a tuple for a list."""
    declared = default_type(default)
    if declared is None:
        return
    if declared is bool or isinstance(value, bool):  # a bool is an int to isinstance, never to a notebook
        fits = declared is bool and isinstance(value, bool)
    elif declared is float:
        fits = isinstance(value, (int, float))
    elif declared in (list, tuple):
        fits = isinstance(value, (list, tuple))
    else:
        fits = isinstance(value, declared)
    if not fits:
        shown = " ".join(default.split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise NotebookError(f"{notebook.name}: parameter {name!r} is declared `{name} = {shown}`, "
                            f"{_a(declared)}, but got {value!r}, {_a(type(value))}. Pass {_a(declared)} "
                            f"(`-p {name} VALUE` reads VALUE as a Python literal), or give the parameter a None "
                            "default in the notebook to accept anything.")


def _a(kind: type) -> str:
    return ("an " if kind.__name__[0] in "aeiou" else "a ") + kind.__name__


def execute_notebook(notebook: Path, output_dir: Path, parameters: dict, kernel: str, cell_timeout: int,
                     progress: bool = True) -> Path:
    """Run one notebook through papermill; write the executed copy and its HTML to output_dir."""
    import papermill
    from nbconvert import HTMLExporter

    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / notebook.name
    # The kernel `make setup` registers lives in this environment (--sys-prefix); put it first, so a kernel of
    # the same name registered by another checkout or user can never run our notebooks on the wrong code.
    own_kernels = str(Path(sys.prefix) / "share" / "jupyter")
    if os.environ.get("JUPYTER_PATH", "").split(os.pathsep)[0] != own_kernels:
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [own_kernels, os.environ.get("JUPYTER_PATH")]))
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, kernel_name=kernel, language="python",
                                   progress_bar=progress, execution_timeout=cell_timeout, cwd=str(notebook.parent),
                                   log_output=False)
    except papermill.PapermillExecutionError as e:
        raise NotebookError(f"{notebook.name} failed in cell {e.exec_count} (index {e.cell_index}): "
                            f"{e.ename}: {e.evalue}. The partly executed copy is {executed}.") from e
    except Exception as e:  # a timeout or a dead kernel: name the notebook, keep the reason
        raise NotebookError(f"{notebook.name} did not finish: {type(e).__name__}: {str(e)[:500]}. "
                            f"The partly executed copy is {executed}.") from e
    strip_local_only_outputs(executed)
    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    (output_dir / f"{notebook.stem}.html").write_text(body)
    return executed


LOCAL_ONLY_TAG = "local-only"
LOCAL_ONLY_NOTE = ("[output not kept in reports/: it shows individual dataset faces, and this project never "
                   "redistributes FER2013. Run the notebook locally to see it.]\n")


def strip_local_only_outputs(executed: Path) -> None:
    """Replace the outputs of cells tagged 'local-only' (sample faces) with a note, in the executed copy."""
    import nbformat
    from nbformat.v4 import new_output

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and LOCAL_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            cell.outputs = [new_output("stream", name="stdout", text=LOCAL_ONLY_NOTE)]
    nbformat.write(nb, executed)


def select_notebooks(notebooks_dir: Path, only: list[str] | None) -> list[Path]:
    notebooks = sorted(Path(notebooks_dir).glob("*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) or nb.stem == o for o in only)]
        if not notebooks:
            raise NotebookError(f"no notebook in {notebooks_dir} starts with {only}")
    return notebooks


def run_reports(only=None, parameters=None, retrain=False, kernel="emo-fer", cell_timeout=4 * 3600,
                notebooks_dir: Path = NOTEBOOKS, reports_dir: Path = REPORTS, progress=True) -> list[Path]:
    parameters = dict(parameters or {})
    notebooks = select_notebooks(notebooks_dir, only)
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    for name in parameters:
        if not any(name in d for d in declared.values()):
            raise NotebookError(f"parameter {name!r} is not declared by {', '.join(nb.name for nb in notebooks)}; "
                                f"declared: {sorted(set().union(*declared.values()))}. Use one of those names, "
                                "or add it to the notebook's parameters cell.")
    for nb in notebooks:
        for name, value in parameters.items():
            if name in declared[nb]:
                check_parameter_type(nb, name, value, declared[nb][name])
    if retrain:
        parameters["retrain"] = True
    done = []
    for i, nb in enumerate(notebooks, 1):
        nb_params = {k: v for k, v in parameters.items() if k in declared[nb]}
        print(f"[{i}/{len(notebooks)}] {nb.name} {nb_params or ''}", flush=True)
        start = time.time()
        done.append(execute_notebook(nb, Path(reports_dir), nb_params, kernel, cell_timeout, progress))
        print(f"[{i}/{len(notebooks)}] {nb.name} done in {time.time() - start:.0f}s -> "
              f"{Path(reports_dir) / (nb.stem + '.html')}", flush=True)
    write_index(reports_dir, notebooks_dir)
    return done


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks with papermill and regenerate reports/.")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a papermill parameter (Python literal or string); repeatable")
    parser.add_argument("--retrain", action="store_true", help="retrain instead of reusing committed weights")
    parser.add_argument("--kernel", default="emo-fer")
    parser.add_argument("--cell-timeout", type=int, default=4 * 3600, help="seconds one cell may run")
    parser.add_argument("--index-only", action="store_true", help="only rewrite reports/README.md")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS,
                        help="where the notebooks are (default: notebooks/)")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS, help="where the reports go (default: reports/)")
    args = parser.parse_args(argv)
    if args.index_only:
        print(write_index(args.reports_dir, args.notebooks_dir))
        return 0
    try:
        run_reports(args.only, {k: parse_value(v) for k, v in args.parameter}, args.retrain, args.kernel,
                    args.cell_timeout, args.notebooks_dir, args.reports_dir)
    except NotebookError as e:
        print(f"make reports: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
