"""reports/README.md: the leaderboard of every model's metrics.json (best first, each with its 95% interval,
views, recipe and convergence), the figures the seeds published beside ours, and the index of executed notebooks.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..core.tta import VIEW_SETS, view_title
from ..core.datasets import DEFAULT_DATASET
from ..core.metrics import accuracy_interval, seed_interval
from ..paths import FULL_SUFFIX, MAIN_RUN, NOTEBOOKS, REPORTS_DIR, ablation_record
from .ensemble import USED_WEIGHT
from .plots import plot_leaderboard, save_figure
from .tables import short_device
from .views import SPLIT_TITLES, headline_split

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


def load_model_metrics(reports_dir: Path = REPORTS_DIR) -> list[dict]:
    records = []
    for path in sorted(Path(reports_dir).glob("*/metrics.json")):
        record = json.loads(path.read_text())
        record["_dir"] = path.parent.name
        records.append(record)
    return records


def record_dataset(record: dict) -> str:
    """The dataset a metrics.json was measured on (an ensemble's and an older report's name none: FER2013)."""
    return record.get("dataset") or DEFAULT_DATASET


def is_trial(record: dict) -> bool:
    """A trial run (a subset, a short schedule): labelled so in its metrics.json, and never ranked."""
    return bool(record.get("trial") or record.get("provenance", {}).get("trial"))


def records_by_dataset(reports_dir: Path = REPORTS_DIR) -> dict[str, list[dict]]:
    """Every report's metrics.json, by the dataset it names: FER2013's at reports/<model>/, another dataset's at
    reports/<dataset>/<model>/ (paths.model_folder). A record names its dataset, and only its own dataset's
    leaderboard ranks it, wherever it was written: a run of another dataset in a top-level folder never enters
    FER2013's table."""
    by_dataset: dict[str, list[dict]] = {}
    for record in load_model_metrics(reports_dir):
        by_dataset.setdefault(record_dataset(record), []).append(record)
    for folder in sorted(p for p in Path(reports_dir).iterdir() if p.is_dir() and not (p / "metrics.json").exists()):
        for record in load_model_metrics(folder):
            if record_dataset(record) == folder.name:
                record["_dir"] = f"{folder.name}/{record['_dir']}"  # links from reports/README.md
                by_dataset.setdefault(folder.name, []).append(record)
    return by_dataset


def is_capped(row: dict) -> bool:
    """A published (full) recipe stopped by a time cap before its schedule ended: not the recipe's result."""
    return row["budget"] == "full" and row["stop_reason"].startswith("time budget")


def leaderboard_rows(records: list[dict]) -> list[dict]:
    """One row per model, best headline accuracy first, with its 95% interval and how it was trained."""
    rows = []
    for r in records:
        p, split = r["provenance"], headline_split(r["splits"])
        m = r["splits"][split]
        members = p.get("members") or {}
        # A model's full-budget (GPU) report is its own row: named by its folder, vgg_gap_full beside vgg_gap.
        # Named by its folder (its dataset's section says which dataset); linked by its path from reports/.
        rows.append({"model": r["_dir"].split("/")[-1], "dir": r["_dir"], "split": split,
                     "accuracy": m["accuracy"], "n": m["n"],
                     "interval": accuracy_interval(m["accuracy"], m["n"]), "macro_f1": m["macro_f1"],
                     "whole": r["splits"].get("test_all", {}).get("accuracy"), "params": r["params"],
                     "clean": clean_of(r, split),
                     "views": p.get("tta", "flip"), "ensemble": "members" in p, "budget": p.get("budget", ""),
                     "members": (sum(w > USED_WEIGHT for w in members.values()), len(members)),
                     "epochs": (p.get("epochs_run"), p.get("epochs_asked")), "minutes": p["wall_seconds"] / 60,
                     "stop_reason": p.get("stop_reason", ""), "seed": p.get("seed"),
                     "device": short_device(p.get("device", "")),
                     # a run a time cap stopped has not converged (pages.convergence), whatever an older report says
                     "converged": False if p.get("stop_reason", "").startswith("time budget") else p.get("converged"),
                     "convergence": p.get("convergence", ""),
                     "published": PUBLISHED.get(r["model"]) if r["_dir"] == r["model"] else None})
    return sorted(rows, key=lambda row: -row["accuracy"])


def clean_of(record: dict, split: str) -> dict | None:
    """The headline split's deduplicated version in a metrics.json (accuracy, n, Wilson interval), or None for a
    report written before the clean splits existed or data without them."""
    m = record["splits"].get(f"{split}_clean")
    if not m:
        return None
    return {"accuracy": m["accuracy"], "n": m["n"], "interval": accuracy_interval(m["accuracy"], m["n"])}


def _clean_heading(rows: list[dict]) -> str:
    # The deduplicated accuracy shares the headline's cell, under a short name the note below the table spells out:
    # a column of its own, or the whole word, would make the table too wide for a page.
    return " · dedup." if any(r["clean"] for r in rows) else ""


def _clean_cell(row: dict) -> str:
    if not row["clean"]:
        return ""
    # Its interval is on the model's page: with it the table no longer fits a page.
    return f" · {_percent(row['clean']['accuracy'])}"


def clean_note(rows: list[dict], split_title: str) -> str:
    """What the deduplicated test says about the table: its size, and whether it orders the models differently."""
    with_clean = [r for r in rows if r["clean"]]
    if not with_clean:
        return ""
    by_clean = [r["model"] for r in sorted(with_clean, key=lambda r: -r["clean"]["accuracy"])]
    by_raw = [r["model"] for r in with_clean]
    moved = [m for m, k in zip(by_raw, by_clean) if m != k]
    change = [100 * (r["clean"]["accuracy"] - r["accuracy"]) for r in with_clean]
    partial = (f" Only {len(with_clean)} of {len(rows)} reports have it yet (the others predate it)."
               if len(with_clean) < len(rows) else "")
    ranking = ("" if len(with_clean) < 2 else " It ranks the models as the raw split does." if not moved else
               " It ranks them differently: " + ", ".join(f"{m} {by_clean.index(m) + 1} (raw {by_raw.index(m) + 1})"
                                                          for m in moved) + ".")
    return (f"**{split_title}, deduplicated** (dedup., after the ·): the {with_clean[0]['clean']['n']:,} faces with no exact or "
            f"near copy in train or val and no blank frame, under the same views; it moves each model "
            f"{min(change):+.1f} to {max(change):+.1f} points." + ranking + partial)


def within_noise(rows: list[dict]) -> list[tuple[str, str]]:
    """Neighbouring rows whose accuracies lie inside each other's 95% intervals: the test does not rank them."""
    return [(a["model"], b["model"]) for a, b in zip(rows, rows[1:])
            if a["interval"][0] <= b["accuracy"] and b["interval"][1] >= a["accuracy"]]


def _trained_cell(row: dict) -> str:
    """How a row was trained, short enough for one line: budget, epochs (of those asked, or the cap that ended
    them), minutes, device."""
    if row["ensemble"]:
        used, total = row["members"]
        return f"{used} of {total} members, {row['minutes']:.0f} min"
    run, asked = row["epochs"]
    minutes = f"{row['minutes']:.0f} min"
    if row["stop_reason"].startswith("time budget"):
        cap = row["stop_reason"].removeprefix("time budget of ").split(":")[0]  # e.g. '60 min'
        epochs = f"{run} ep, {cap} cap"
        minutes = ""
    else:
        epochs = f"{run}/{asked} ep"
    return ", ".join(part for part in (f"{row['budget']}: {epochs}", minutes, row["device"]) if part)


def _converged_cell(row: dict) -> str:
    if row["converged"] is None:
        return "—"
    return "yes" if row["converged"] else "**no**"


def _percent(x: float) -> str:
    return f"{100 * x:.2f}"


# An ensemble whose members each run under their own best views (ensemble.PER_MEMBER) in a cell that fits.
SHORT_VIEWS = {"each member's best on val": "own best"}


def _interval(bounds: tuple[float, float]) -> str:
    # One decimal: a Wilson interval is points wide (+-1.5 on FER2013's PrivateTest), and the table must fit a page.
    return f"{100 * bounds[0]:.1f}-{100 * bounds[1]:.1f}"


def _table(rows: list[dict], best: float) -> list[str]:
    """The leaderboard's markdown table: accuracies in percent to 2 places (intervals to 1), one precision per
    column."""
    split_title = SPLIT_TITLES[rows[0]["split"]]
    # The whole test folder beside the headline, where the headline is another split (FER2013's PrivateTest).
    whole_column = any(row["split"] != "test_all" for row in rows)
    lines = [f"| model | views | {split_title} % (95% CI){_clean_heading(rows)} |"
             + (" whole test |" if whole_column else "") + " macro-F1 | params | trained | converged |", "|---|---|---:|" + ("---:|" if whole_column else "")
             + "---:|---:|---|---|"]
    for row in rows:
        acc = f"{_percent(row['accuracy'])} ({_interval(row['interval'])})"
        acc = (f"**{acc}**" if row["accuracy"] == best else acc) + _clean_cell(row)
        whole = (_percent(row["whole"]) if row["whole"] is not None else "—") + " | " if whole_column else ""
        views = SHORT_VIEWS.get(row["views"], row["views"])
        lines.append(f"| [{row['model']}]({row['dir']}/README.md) | {views} | {acc} | {whole}"
                     f"{row['macro_f1']:.3f} | {row['params'] / 1e6:.2f}M | {_trained_cell(row)} | {_converged_cell(row)} |")
    return lines


def leaderboard(records: list[dict]) -> str:
    """The answer first (best single model, best ensemble), then the ranking of runs that finished their recipe,
    then the runs a time cap cut short (a section of their own: they are not their recipe's result)."""
    trials = sorted(r["_dir"] for r in records if is_trial(r))
    all_rows = leaderboard_rows([r for r in records if not is_trial(r)])
    trial_note = (f"Trial runs, never ranked (a subset and a short schedule): {', '.join(trials)}." if trials else "")
    if not all_rows:
        return trial_note or "_No trained model yet: run `make reports`._"
    rows = [r for r in all_rows if not is_capped(r)]
    capped = [r for r in all_rows if is_capped(r)]
    split_title = SPLIT_TITLES[all_rows[0]["split"]]

    def named(row):
        low, high = row["interval"]
        seed = f", seed {row['seed']}" if row["seed"] is not None and not row["ensemble"] else ""
        return (f"**[{row['model']}]({row['dir']}/README.md), {row['accuracy']:.2%} {split_title}** (95% interval "
                f"{low:.1%} to {high:.1%}; {view_title(row['views'])}; {_trained_cell(row)}{seed})")

    singles = [r for r in rows if not r["ensemble"]]
    ensembles = [r for r in rows if r["ensemble"]]
    lead = [f"Best single model: {named(singles[0])}." if singles else "",
            f"Best ensemble: {named(ensembles[0])}." if ensembles else ""]
    lines = _table(rows, rows[0]["accuracy"]) if rows else []
    ties = within_noise(rows)
    low, high = all_rows[0]["interval"]
    notes = ["", f"Accuracies in percent, sorted by {split_title}; CI is Wilson's 95% interval, about "
             f"+-{100 * (high - low) / 2:.1f} points on {all_rows[0]['n']:,} faces. "
             + ("Neighbours inside each other's interval, which this test does not rank: "
                + ", ".join(f"{a} and {b}" for a, b in ties) + "." if ties else "No two neighbours are within noise."),
             "",
             "**views**: the test-time views behind every number of the row, chosen on the validation split "
             "(" + "; ".join(f"`{v.name}` {v.title}" for v in VIEW_SETS.values())
             + "; `own best`: each ensemble member under its own). "
             "**trained**: the recipe (`full`: the published "
             "one; `cpu`: the same model, loss and optimizer family fitted to CPU cores, what differs is in each "
             "README), epochs run of those asked (or the time cap that ended them), minutes and device (`CPU x2`: "
             "2 threads of an unnamed x86-64 CPU; the full name is in each metrics.json). **converged**: "
             "early stopping fired, or the last 10 epochs raised the best val accuracy by under half a point."]
    if clean_note(rows, split_title):
        notes += ["", clean_note(rows, split_title)]
    published = [f"[{r['model']}]({r['dir']}/README.md) {published_text(r['published'])}" for r in rows if r["published"]]
    if published:
        notes += ["", "Figures the seeds published (their README compares): " + "; ".join(published) + "."]
    if capped:
        notes += ["", "### Capped runs (not ranked)", "",
                  "The published recipe stopped by a time cap before its schedule ended, so these rows are not what "
                  "the recipe reaches; they are ranked neither above nor below the runs that finished.", ""]
        notes += _table(capped, -1.0)
    if trial_note:
        notes += ["", trial_note]
    return "\n".join([line for line in lead if line] + [""] + lines + notes)


DATASET_TITLES = {"fer2013": "FER2013", "ferplus": "FER+", "rafdb": "RAF-DB (basic)", "affectnet": "AffectNet",
                  "ckplus": "CK+"}


def dataset_sections(reports_dir: Path = REPORTS_DIR) -> list[str]:
    """A leaderboard section for each dataset other than FER2013 (records_by_dataset), under the dataset's own
    headline split."""
    lines = []
    for dataset, records in sorted(records_by_dataset(reports_dir).items()):
        if dataset != DEFAULT_DATASET:
            lines += [f"## Leaderboard ({DATASET_TITLES.get(dataset, dataset)})", "", leaderboard(records), ""]
    return lines


def fer2013_records(reports_dir: Path = REPORTS_DIR) -> list[dict]:
    """The reports FER2013's leaderboard, figure and front page rank: FER2013's, trial runs left out."""
    return [r for r in records_by_dataset(reports_dir).get(DEFAULT_DATASET, []) if not is_trial(r)]


def leaderboard_figure(records: list[dict], path: Path) -> Path:
    """Accuracy against parameters for every model, with the FER2013 figures the seeds published marked."""
    rows = leaderboard_rows(records)
    points = {r["model"]: (r["params"], r["accuracy"], r["interval"]) for r in rows}
    published = {r["model"]: (r["params"], r["published"]["accuracy"], SPLIT_TITLES[r["published"]["split"]])
                 for r in rows if r["published"] and not r["published"].get("dataset")}
    capped = {r["model"] for r in rows if is_capped(r)}
    return save_figure(plot_leaderboard(points, published, SPLIT_TITLES[rows[0]["split"]], capped), path)


RESULTS_START, RESULTS_END = "<!-- results: written by `make reports` (leaderboard.py) -->", "<!-- end of results -->"


def video_default(text: str) -> dict | None:
    """emo-predict's video default in benchmarks.md's video-settings table (benchmarks/predict_latency.py: the
    default's row in bold): its setting, frames/s idle and with one core busy, faces boxed, and the device."""
    part = next((p for p in text.split("\n## ") if p.startswith("Prediction latency")), "")
    table = next((t for t in part.split("\n\n") if t.startswith("| video setting |")), "")
    row = next((line for line in table.splitlines() if line.startswith("| **")), None)
    if row is None:
        return None
    setting, idle, busy, boxed = (c.strip().strip("*") for c in row.strip("|").split("|"))
    device = re.search(r" on (.+?)(?: \(.*?\))?, torch", part)  # without a note such as "(below, 1 and 2)"
    cpu = re.sub(r", \d+ threads?$", "", device.group(1)) if device else ""  # the run's threads: not this table's
    return dict(setting=setting, idle=idle, busy=busy, boxed=boxed, device=cpu)


def front_page_results(reports_dir: Path = REPORTS_DIR) -> str:
    """The README's results table, read from the reports: the best single model and ensemble (with intervals and
    seeds), the CPU speedrun's mean over its seeds, and video frames per second; each row links its report."""
    rows = [r for r in leaderboard_rows(fer2013_records(reports_dir)) if not is_capped(r)]
    if not rows:
        return "_No results yet: run `make reports`._"
    split_title = SPLIT_TITLES[rows[0]["split"]]
    lines = ["| result | number | how it was measured |", "|---|---|---|"]

    def accuracy(row):
        low, high = row["interval"]
        return f"{_percent(row['accuracy'])}% {split_title} (95% CI {_percent(low)}-{_percent(high)})"
    singles, ensembles = [r for r in rows if not r["ensemble"]], [r for r in rows if r["ensemble"]]
    if singles:
        best = singles[0]
        lines.append(f"| best single model, [{best['model']}](reports/{best['dir']}/README.md) | {accuracy(best)} | "
                     f"one run (seed {best['seed']}), {best['views']} views; {_trained_cell(best)} |")
        if best["clean"]:  # the same number without the test faces it may have seen in training (issue 29)
            clean, (low, high) = best["clean"], best["clean"]["interval"]
            lines.append(f"| the same, test faces never seen in training | {_percent(clean['accuracy'])}% {split_title}"
                         f", deduplicated (95% CI {_percent(low)}-{_percent(high)}) | the {clean['n']:,} of its faces "
                         f"with no exact or near copy in train or val, same run and views |")
    if ensembles:
        best = ensembles[0]
        lines.append(f"| best ensemble, [{best['model']}](reports/{best['dir']}/README.md) | {accuracy(best)} | "
                     f"{best['members'][0]} of {best['members'][1]} members (each one seed), {best['views']} views |")
    ablations = ablation_record(Path(reports_dir) / "vgg_gap")
    if ablations.exists():
        seeds = json.loads(ablations.read_text()).get("seeds", {}).get(MAIN_RUN, [])
        runs = [r for r in seeds if r["run"].startswith("seed ")]
        if len(runs) > 1:
            stats = seed_interval([r["test_private"] for r in runs])
            devices = ", ".join(dict.fromkeys(short_device(r["device"]) for r in runs))
            minutes = max(r["train min"] for r in runs)
            lines.append(f"| CPU speedrun, [vgg_gap](reports/vgg_gap/README.md) | {_percent(stats['mean'])}% "
                         f"{split_title} (95% CI {_percent(stats['low'])}-{_percent(stats['high'])}) | mean of "
                         f"{stats['n']} seeds (CI: "
                         f"of the mean), {runs[0]['epochs']} epochs, up to {minutes:.0f} min each on {devices} |")
    benchmarks = Path(reports_dir) / "benchmarks.md"
    video = video_default(benchmarks.read_text()) if benchmarks.exists() else None
    if video:
        lines.append(f"| video, [detect + classify](reports/benchmarks.md) | {video['busy']} frames/s with one core "
                     f"busy ({video['idle']} idle) | six faces panning in 640x480 frames, emo-predict's video "
                     f"defaults ({video['setting']}, faces boxed {video['boxed']}), {video['device']}, 1 thread |")
    photo = photo_pipeline(benchmarks.read_text()) if benchmarks.exists() else None
    if photo:
        lines.append(f"| photos, [detect + classify](reports/benchmarks.md) | {photo['pipeline']}% of faces right "
                     f"(on their own crops: {photo['crop']}%) | {photo['model']}, emo-predict's photo defaults "
                     f"({photo['setting']}, align {photo['align']}) on FER2013 faces in 640x480 frames; a missed face "
                     "counts as wrong |")
    return "\n".join(lines)


def photo_pipeline(text: str) -> dict | None:
    """emo-predict's photo defaults in benchmarks.md's faces-in-frames accuracy table (benchmarks/pipeline_frames.py:
    the defaults' rows in bold, named after their settings), in percent: the model with the best pipeline accuracy,
    which is the model emo-predict picks by default from the same benchmark (predict/pipeline_choice.json)."""
    part = next((p for p in text.split("\n## ") if p.startswith("Faces in frames")), "")
    table = next((t for t in part.split("\n\n") if "| pipeline acc. | crop acc." in t), "")  # not the framing tables
    rows = []
    for line in table.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and "(photo" in cells[0] and line.lstrip("| ").startswith("**"):
            rows.append({"setting": cells[0].split(" (")[0], "model": cells[1], "align": cells[2],
                         # one decimal: the table gives three places of a fraction
                         "pipeline": f"{100 * float(cells[3]):.1f}", "crop": f"{100 * float(cells[4]):.1f}"})
    return max(rows, key=lambda row: float(row["pipeline"]), default=None)


def write_front_page(readme: Path, reports_dir: Path = REPORTS_DIR) -> Path | None:
    """Rewrite the results table between the README's markers (none: leave the README alone)."""
    readme = Path(readme)
    if not readme.exists() or RESULTS_START not in readme.read_text():
        return None
    text = readme.read_text()
    head, rest = text.split(RESULTS_START, 1)
    tail = rest.split(RESULTS_END, 1)[1]
    readme.write_text(f"{head}{RESULTS_START}\n{front_page_results(reports_dir)}\n{RESULTS_END}{tail}")
    return readme


def write_index(reports_dir: Path = REPORTS_DIR, notebooks_dir: Path = NOTEBOOKS) -> Path:
    reports_dir = Path(reports_dir)
    records = records_by_dataset(reports_dir).get(DEFAULT_DATASET, [])
    lines = ["# Reports", "", "_Generated by `make reports`; every number here comes from an executed notebook._", "",
             "## Leaderboard (FER2013)", "", leaderboard(records), "",
             "PrivateTest is the headline split, as in papers; 'whole test' is all 7,178 images of the Kaggle test "
             "folder. Model, epoch and view selection used the validation split (a stratified, seeded 10% of train) "
             "only.", ""]
    if fer2013_records(reports_dir):
        figure = leaderboard_figure(fer2013_records(reports_dir), reports_dir / "leaderboard.png")
        lines += [f"![{figure.stem}]({figure.name})", ""]
    lines += dataset_sections(reports_dir)
    lines += ["## Notebooks", "", "| notebook | executed HTML | executed notebook |", "|---|---|---|"]
    for nb in sorted(Path(notebooks_dir).glob("*.ipynb")):
        html, executed = reports_dir / f"{nb.stem}.html", reports_dir / f"{nb.stem}.ipynb"
        lines.append(f"| `{nb.name}` | " + (f"[{html.name}]({html.name})" if html.exists() else "not run yet")
                     + " | " + (f"[{executed.name}]({executed.name})" if executed.exists() else "—") + " |")
        full_html = reports_dir / f"{nb.stem}{FULL_SUFFIX}.html"  # the same notebook on its GPU (full) weights
        if full_html.exists():
            lines.append(f"| `{nb.name}`, full budget | [{full_html.name}]({full_html.name}) | "
                         f"[{full_html.stem}.ipynb]({full_html.stem}.ipynb) |")
    extra = sorted(p.name for p in reports_dir.glob("*.md") if p.name != "README.md")
    if extra:
        lines += ["", "## Other reports", ""] + [f"- [{name}]({name})" for name in extra]
    index = reports_dir / "README.md"
    index.write_text("\n".join(lines) + "\n")
    write_front_page(reports_dir.parent / "README.md", reports_dir)  # the repository's front page
    return index
