"""The pages a run writes: whether it converged, each model's README and metrics.json, and the ensemble's.
Where a result came from (commit, versions, device) is provenance.py's; `make reports` is __main__.py's.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from ..core.checkpoint import TrainResult, load_checkpoint
from ..core.duplicates import CANDIDATE_BITS, HASH, NEAR_BLANK_STD, NEAR_CORRELATION
from ..core.tta import view_title
from .leaderboard import DATASET_TITLES, PUBLISHED
from ..core.metrics import accuracy_interval, most_confused_pairs, summary
from ..core.models import build_model, count_flops
from ..provenance import provenance
from .ensemble import PRUNE_WEIGHT, USED_WEIGHT
from .tables import ensemble_verdict, markdown_table, per_class_table, plan_weights, plans_table, results_table, short_device
from .views import SPLIT_TITLES, Evaluation, evaluate, headline_split

CONVERGENCE_WINDOW = 10  # epochs
CONVERGENCE_TOLERANCE = 0.005  # half a point of val accuracy


def convergence(history: list[dict], stop_reason: str, longer: TrainResult | None = None) -> tuple[bool, str]:
    """Whether a run trained until it stopped improving, and why we say so: early stopping fired, or its last
    CONVERGENCE_WINDOW epochs raised the best val accuracy by less than CONVERGENCE_TOLERANCE. A run a time cap
    stopped has not converged, whatever its curve: the cap, not the plateau, ended it. The verdict reads the run
    alone, so the notebook page, the README and the leaderboard give the same one; `longer`, the same recipe
    over more epochs, only adds what it shows (an annealed schedule's val accuracy rises to its last epoch by
    design, so its own tail cannot show the plateau; a longer schedule can)."""
    if stop_reason.startswith("early stopping"):
        return True, "early stopping fired"
    if stop_reason.startswith("time budget"):
        return False, f"a time cap stopped it after {len(history)} epochs, before its schedule ended"
    if len(history) <= CONVERGENCE_WINDOW:
        return False, f"only {len(history)} epochs run: too few to see a plateau"
    before = max(r["val_acc"] for r in history[:-CONVERGENCE_WINDOW])
    last = max(r["val_acc"] for r in history[-CONVERGENCE_WINDOW:])
    gain = 100 * (last - before)
    if gain <= 0:
        return True, (f"flat: the last {CONVERGENCE_WINDOW} epochs did not beat the best val accuracy before them "
                      f"(their best was {-gain:.2f} points lower)")
    if gain < 100 * CONVERGENCE_TOLERANCE:
        return True, f"flat: the last {CONVERGENCE_WINDOW} epochs raised the best val accuracy by {gain:+.2f} points"
    why = f"still rising: the last {CONVERGENCE_WINDOW} epochs raised the best val accuracy by {gain:+.2f} points"
    if longer is not None and len(longer.history) > len(history):
        theirs = max(r["val_acc"] for r in longer.history)
        reached = "no better" if theirs < last + CONVERGENCE_TOLERANCE else "a better"
        why += (f" as it annealed; the same recipe over {len(longer.history)} epochs reached {reached} best val "
                f"accuracy ({theirs:.2%} against {last:.2%})")
    return False, why


def run_summary(meta: dict) -> pd.DataFrame:
    """TrainResult.meta for a notebook as one short row: epochs, why it stopped, minutes, the device by its short
    name (the full string is in metrics.json), parameters in millions."""
    return pd.DataFrame([{"epochs": f"{meta.get('epochs_run', 0)} of {meta.get('epochs_asked', 0)}",
                          "stopped": meta.get("stop_reason", ""), "minutes": round(meta.get("wall_seconds", 0.0) / 60, 1),
                          "device": short_device(meta.get("device", "")),
                          "best val (no TTA)": round(meta.get("best_val_acc", 0.0), 4),
                          "params": f"{meta.get('params', 0) / 1e6:.2f}M",
                          "weights": "reused" if meta.get("reused") else "trained now"}]).set_index("epochs")


def headline_text(evaluation: Evaluation, prov: dict, converged: bool) -> str:
    """The one sentence a model's page opens with: headline accuracy and its 95% interval, the run and seed, the
    views, the budget as spent (a time cap named as one) and the device."""
    m = evaluation.metrics[evaluation.headline]
    low, high = accuracy_interval(m["accuracy"], m["n"])
    views = evaluation.views
    capped = prov["budget"] == "full" and prov["stop_reason"].startswith("time budget")
    return (f"**{SPLIT_TITLES.get(evaluation.headline, evaluation.headline)} {m['accuracy']:.2%}** (95% interval "
            f"{low:.1%} to {high:.1%}, {m['n']:,} faces; one run, seed {prov['seed']}) under "
            f"**{view_title(views)}** (`{views}`, chosen on val); **{prov['budget']}** budget"
            + (" **cut short by a time cap**" if capped else "")
            + f": {budget_text(prov)}, {short_device(prov['device'])}. Converged: **{'yes' if converged else 'no'}**.")


def show_headline(evaluation: Evaluation, result: TrainResult, budget: str, seed: int):
    """A notebook's headline, shown right after training (IPython Markdown), the same sentence as its README's."""
    from IPython.display import Markdown
    prov = {**result.meta, "budget": budget, "seed": seed, "stop_reason": result.meta.get("stop_reason", ""),
            "device": result.meta.get("device", "")}
    converged, _ = convergence(result.history, prov["stop_reason"])
    return Markdown(headline_text(evaluation, prov, converged))


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

def dedup_lines(prov: dict) -> list[str]:
    """A bullet saying which training faces a `dedup` run left out (train.dedup_keep), if it was one."""
    removed = prov.get("dedup_removed")
    if not removed:
        return []
    reasons = ", ".join(f"{n:,} {why}" for why, n in removed.items() if why not in ("faces before", "faces left out"))
    return [f"- Deduplicated training (`dedup=True`): {removed['faces left out']:,} of {removed['faces before']:,} "
            f"training faces left out ({reasons}; a face may have both reasons)."]


def clean_definition(metrics_by_split: dict) -> dict:
    """What the *_clean splits of a metrics.json left out, so a reader can rebuild them."""
    if not any(split.endswith("_clean") for split in metrics_by_split):
        return {}
    return {"clean_splits": f"test faces without an exact or near copy in train or val (candidates {HASH} within "
                            f"{CANDIDATE_BITS} bits, correlating at {NEAR_CORRELATION} or more over 1-px shifts) and "
                            f"without blank frames (pixel std < {NEAR_BLANK_STD})"}


def clean_lines(metrics_by_split: dict, headline: str) -> list[str]:
    """The headline split without the faces that have a copy in train or val (data.CLEAN_SPLITS), with its 95%
    interval, beside the raw number: what the model does on faces it cannot have seen. Nothing where the data
    has no clean split."""
    clean = f"{headline}_clean"
    if clean not in metrics_by_split:
        return []
    m, raw = metrics_by_split[clean], metrics_by_split[headline]
    low, high = accuracy_interval(m["accuracy"], m["n"])
    return [f"**{SPLIT_TITLES.get(clean, clean)} accuracy {m['accuracy']:.2%}** (95% interval {low:.1%} to {high:.1%}, "
            f"{m['n']:,} faces: those with no exact or near copy in train or val and no blank frame), "
            f"{100 * (m['accuracy'] - raw['accuracy']):+.2f} points from the raw {raw['accuracy']:.2%}, under the same "
            f"views.", ""]


def interpretation(model_name: str, metrics_by_split: dict, history: list[dict], headline: str,
                   dataset: str = "fer2013") -> list[str]:
    """A few sentences read off the numbers, so the text can never disagree with the tables."""
    m = metrics_by_split[headline]
    per_class = m["per_class"]
    ranked = sorted(per_class, key=lambda c: per_class[c]["f1"])
    names = list(per_class)
    confused = most_confused_pairs(m["confusion"], names, k=1)  # none for a model right on every face
    notes = [f"On {SPLIT_TITLES.get(headline, headline)} the model is right on {m['accuracy']:.1%} of {m['n']:,} faces "
             f"(macro-F1 {m['macro_f1']:.3f}). The easiest class is **{ranked[-1]}** (F1 {per_class[ranked[-1]]['f1']:.3f}) "
             f"and the hardest **{ranked[0]}** (F1 {per_class[ranked[0]]['f1']:.3f}).",
             "No face is taken for another class." if not confused else
             "The most frequent confusion is {0} taken for {1}: {2} face{4}, {3:.1%} of all {0} faces.".format(
                 *confused[0], "" if confused[0][2] == 1 else "s")]
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
    published = PUBLISHED.get(model_name) if dataset == "fer2013" else None  # the seeds' figures are FER2013's
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


def budget_text(prov: dict) -> str:
    """Epochs and minutes as a reader should take them: '82 epochs in its 60-min cap, 59.5 min' for a time-capped
    run, '150 of 150 epochs, 123.0 min' otherwise."""
    minutes = f"{prov['wall_seconds'] / 60:.1f} min"
    if prov["stop_reason"].startswith("time budget"):
        cap = prov["stop_reason"].removeprefix("time budget of ").split(":")[0]
        return f"{prov['epochs_run']} epochs in its {cap} cap, {minutes}"
    return f"{prov['epochs_run']} of {prov['epochs_asked']} epochs, {minutes}"


def write_model_report(report_dir, title: str, result: TrainResult, evaluation: Evaluation, prov: dict,
                       figures: dict[str, str], recipe_note: str = "", sections: dict[str, str] | None = None,
                       longer: TrainResult | None = None) -> Path:
    """reports/<model>/README.md and metrics.json of a trained model (train.train or checkpoint.load_trained)
    under its test-time views (views.evaluate), every number under those views. `prov` is provenance() of the
    run, `figures` maps a caption to a PNG path inside report_dir, `sections` a heading to markdown, `longer`
    the same recipe run over more epochs, if one was (see convergence)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    model_name, history, config = result.config.model, result.history, asdict(result.config)
    metrics_by_split, headline, views = evaluation.metrics, evaluation.headline, evaluation.views
    params, flops = result.meta["params"], count_flops(result.model)
    converged, why = convergence(history, prov["stop_reason"], longer)
    prov = {**prov, "tta": views, "converged": converged, "convergence": why, **clean_definition(metrics_by_split)}
    dataset = result.config.dataset
    record = {"model": model_name, "dataset": dataset, "label_mode": result.config.label_mode, "params": int(params),
              "flops": int(flops), "splits": {s: summary(m) for s, m in metrics_by_split.items()}, "provenance": prov}
    (report_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")

    m = metrics_by_split[headline]
    capped = prov["budget"] == "full" and prov["stop_reason"].startswith("time budget")
    if capped:  # the published recipe cut short: say so before any number, and in the title
        title = f"{title}: time-capped run, not the recipe's result"
    lines = [f"# {title}", "", headline_text(evaluation, prov, converged), "", *clean_lines(metrics_by_split, headline)]
    if capped:
        lines += [f"> A time cap stopped the published recipe after {prov['epochs_run']} of {prov['epochs_asked']} "
                  "epochs, before its schedule ended: this is what the cap allowed, not what the recipe reaches. "
                  "The leaderboard lists it under capped runs, not in the ranking.", ""]
    lines += ["_Generated by `make reports` from the executed notebook; do not edit by hand. Every number on this "
              "page uses the views above._", "",
              f"- Stopped: {prov['stop_reason']}; best validation epoch {prov['best_epoch']}. Converged: {why}."
              + (" Weights re-evaluated from the committed model.pt, not retrained." if prov["reused_weights"] else ""),
              f"- Dataset: **{DATASET_TITLES.get(dataset, dataset)}**"
              + (f", trained on the annotators' vote distributions (label mode `{result.config.label_mode}`)"
                 if result.config.label_mode != "majority" else "") + ".",
              *dedup_lines(prov),
              f"- {params / 1e6:.2f}M parameters, {flops / 1e6:.1f} MFLOPs per 48x48 image (forward); macro-F1 "
              f"{m['macro_f1']:.3f}.",
              f"- Commit `{prov['commit'][:12]}`, seed {prov['seed']}, data sha256 `{prov['data_sha256'][:16]}…`, "
              f"torch {prov['torch']}, evaluated {prov['evaluated_at'][:10]}; device: {prov['device']}.", ""]
    if recipe_note:
        lines += [recipe_note, ""]
    lines += ["## Results", "", results_table(metrics_by_split), "",
              "Model, epoch and test-time views were selected on the validation split only; test splits were never "
              "looked at during training.", "", "## What the numbers say", ""]
    lines += [f"- {note}" for note in interpretation(model_name, metrics_by_split, history, headline, dataset)]
    lines += ["", f"## Per class ({SPLIT_TITLES.get(headline, headline)})", "", per_class_table(metrics_by_split[headline]), ""]
    if evaluation.view_table:
        lines += ["## Test-time views", "", "Accuracy by split under each set of views; the row with the best "
                  "validation accuracy is the one reported.", "", markdown_table(evaluation.view_table), ""]
    for title_, body in (sections or {}).items():
        lines += [f"## {title_}", "", body, ""]
    for caption, path in figures.items():
        lines += [f"### {caption}", "", f"![{caption}]({Path(path).name})", ""]
    lines += ["## Recipe", "", "<details><summary>The config this run trained with (TrainConfig, JSON)</summary>", "",
              "```json", json.dumps(config, indent=2), "```", "", "</details>", "",
              "## Load the weights", "", f"This reproduces the {SPLIT_TITLES.get(headline, headline)} accuracy above.",
              "", "```python",
              "from emo_utils.core.checkpoint import load_trained",
              *(["from emo_utils.core.data import load_dataset", "from emo_utils.core.inference import predict_splits",
                 "data = load_dataset()"] if dataset == "fer2013" else
                ["from emo_utils.core.datasets import load_named", "from emo_utils.core.inference import predict_splits",
                 f"data = load_named({dataset!r}, 'path/to/{dataset}', {result.config.label_mode!r})"]),
              f"result = load_trained('reports/{report_dir.name if dataset == 'fer2013' else f'{dataset}/{report_dir.name}'}"
              "/model.pt')  # TrainResult: .model, .config, .history",
              f"probs = predict_splits(result.model, data, ['{headline}'], crop={result.crop}, tta='{views}')['{headline}']",
              f"print((probs.argmax(1) == data.split('{headline}')[1]).mean())  # {m['accuracy']:.4f}", "```", ""]
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def write_ensemble_report(report_dir, rows: list[dict], chosen: str, views: str, weights: dict[str, float],
                          metrics_by_split: dict, member_files: dict[str, Path], data_sha256: str,
                          member_views: dict[str, str] | None = None) -> Path:
    """reports/ensemble/: README.md with every plan's table, and metrics.json (shared shape) for the ensemble
    chosen on validation accuracy. `views` names the test-time views the members were averaged under;
    member_views, when each member had its own, says which."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    used = [m for m, w in weights.items() if w > USED_WEIGHT]  # a member weighted 0 never runs: it costs nothing
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
    params = int(sum(meta["params"] for meta in metas.values()))
    record = {"model": "ensemble", "params": params, "flops": int(flops),
              "splits": {s: summary(m) for s, m in metrics_by_split.items()}, "provenance": prov}
    (report_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    headline = headline_split(metrics_by_split)
    m = metrics_by_split[headline]
    low, high = accuracy_interval(m["accuracy"], m["n"])
    heaviest = sorted(((w, name) for name, w in weights.items() if w > USED_WEIGHT), reverse=True)
    weight_lines = [f"- {name} {w:.3f}" + (f" ({own_views[name]})" if own_views and name in own_views else "")
                    for w, name in heaviest]
    lines = ["# Ensembles", "",
             f"**{SPLIT_TITLES.get(headline, headline)} {m['accuracy']:.2%}** (95% interval {low:.1%} to {high:.1%}, "
             f"{m['n']:,} faces) for **{chosen}** under {view_title(views)}: {len(used)} of "
             f"{len(weights)} members (each one seed's weights), {params / 1e6:.2f}M parameters, "
             f"{prov['wall_seconds'] / 60:.0f} min of training in all on {short_device(prov['device'])}. Chosen, "
             "like its weights, on the validation split only.", "",
             "_Generated by `make reports` (notebook 30); do not edit by hand._", "",
             f"<details><summary>The chosen ensemble's weights ({len(used)} members that run, heaviest first)"
             "</summary>", ""] + weight_lines + ["", "</details>", "",
             "Weighted averages of the members' softmax outputs. Weights are fitted on the validation split only "
             f"(log-loss over the simplex, with members weighted under {PRUNE_WEIGHT:g} dropped and the rest refitted, "
             "or Caruana greedy selection); every ensemble is compared with its best member, also chosen on "
             "validation accuracy.", "",
             results_table(metrics_by_split), "", "## Every plan", "", ensemble_verdict(rows), "", plans_table(rows), "",
             plan_weights(rows), "",
             f"Commit `{prov['commit'][:12]}`, data sha256 `{data_sha256[:16]}…`; devices the members trained on: "
             f"{prov['device']}.", ""]
    readme = report_dir / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def show_report_headline(readme: Path):
    """A report's opening paragraph (its headline, after the title) as IPython Markdown, for a notebook to show
    the result it wrote where a reader sees it first."""
    from IPython.display import Markdown
    paragraphs = [p for p in Path(readme).read_text().split("\n\n") if p.strip() and not p.startswith("# ")]
    return Markdown(paragraphs[0])


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
