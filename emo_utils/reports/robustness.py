"""Every model, and the ensemble, scored on the corruption and occlusion suite (corruptions.py, FER2013-C).

The suite scores a fixed, stratified sample of SUITE_FACES faces of the test split (all of them when it holds no
more), the same for every model, so models are compared on the same faces. Scoring a model on it is thirty-one
forward passes, minutes on a CPU, so each model's probabilities are scored once and kept beside its weights
(`model.pt` -> `model_corruptions.npz`, float16, compressed), as views.py keeps its clean ones. The file is keyed
by the sha256 of the weights and of the data, the indices of the faces scored, and the suite's version, seed and
severities: other weights, other data, another sample or another suite are scored again, never reused. It holds
one entry per view set asked for, so a model scored under several keeps them all.

The ensemble is never predicted: its probabilities are the weighted mix (ensemble.ensemble_probs) of its
members' stored probabilities, with the weights notebook 30 fitted on val (reports/ensemble/metrics.json), under
the views it was fitted with.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .corruptions import (HELD_OUT, SEEN, SEVERITIES, SUITE_SEED, SUITE_VERSION, condition_name, conditions,
                          corrupt)
from ..core.readers import DataError, file_sha256
from ..core.data import load_dataset
from .ensemble import ensemble_probs
from ..core.files import read_keyed_arrays, write_atomically
from ..core.inference import predict_logits, softmax
from ..paths import REPORTS_DIR, corruptions_cache, trained_models
from ..core.tta import view_name, view_title
from .views import SPLIT_TITLES, headline_split, load_for_scoring

CLEAN = "clean"
# One view set for every model: the ensemble's (its members must be scored under the views it was fitted with),
# and the views 12 of the 14 leaderboard models chose on val. The flagship's ten crops would cost five times as
# much (the whole suite on PrivateTest, 2 CPU cores: 110 minutes against 22 for flip, measured 2026-12-06).
SUITE_VIEWS = "flip"
# Ensemble members whose weights together make up this little of the mix are left out, and the rest renormalised:
# notebook 30's log-loss fit leaves 31 of its 42 members under 0.1% each (0.13% in all); without them, not one of
# the 3,589 PrivateTest predictions of its clean mix changes (flip views, measured 2026-12-06).
MIN_MEMBER_WEIGHT = 1e-3
# The suite scores 1,000 faces of its split, not PrivateTest deduplicated's 2,962: a model's accuracy under one
# condition is then known to about +-3 points (Wilson 95% interval, 2.5 to 3.1 points for accuracies of 80% to
# 50%), and models are compared on the same faces (paired), so their differences are known better than that. The
# whole split would cost 3 times the CPU time (the flagship alone took 22 minutes on 2 cores under flip views on
# the whole of PrivateTest, measured 2026-12-06).
SUITE_FACES = 1000


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` of the labels, each class drawn in proportion to its count, the same for a seed;
    every index when there are no more than `size`."""
    if len(labels) <= size:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    taken = np.floor(quota).astype(int)
    # The faces rounding down leaves over go to the classes with the largest remainders, so the sample is `size`.
    taken[np.argsort(taken - quota, kind="stable")[:size - taken.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in zip(classes, taken)]
    return np.sort(np.concatenate(picked))


def suite_sample(data, split: str) -> np.ndarray:
    """Indices into the data of the faces the suite scores: a stratified sample of SUITE_FACES faces of the
    split, seeded by SUITE_SEED, in the split's order."""
    in_split = np.flatnonzero(data.split_mask(split))
    return in_split[stratified_sample(data.labels[in_split], SUITE_FACES, SUITE_SEED)]


def faces_title(split: str, scored: int, total: int, code: bool = False) -> str:
    """"1,000 of the 2,962 faces of PrivateTest, deduplicated (a stratified sample, seed 0)", or "PrivateTest
    (3,589 faces)" when the suite scores the whole split; with `code`, the split's name too."""
    title, named = SPLIT_TITLES.get(split, split), f"{split}, " if code else ""
    if scored == total:
        return f"{title} ({named}{total:,} faces)"
    return f"{scored:,} of the {total:,} faces of {title} ({named}a stratified sample, seed {SUITE_SEED})"


def suite_split(data) -> str:
    """PrivateTest without the faces duplicated in train or val (issue 29, part 2) where the data has that
    split; else PrivateTest itself (or the whole test folder for a dataset without it)."""
    # The clean splits are in clean_splits(), never in available_splits() (a suite on FER2013 scored the raw
    # PrivateTest until this read the wrong list).
    if "test_private_clean" in data.clean_splits():
        return "test_private_clean"
    return headline_split(data.available_splits())


def cache_key(model_path: Path, data, split: str) -> str:
    suite = f"v{SUITE_VERSION} seed{SUITE_SEED} {sorted(SEVERITIES.items())}"
    digest = hashlib.sha256(f"{file_sha256(Path(model_path))} {data.sha256} {split} {suite}".encode())
    digest.update(suite_sample(data, split).astype(np.int64).tobytes())  # the faces scored: split and sample
    return digest.hexdigest()


def scored_corruptions(model_path, data, views: str = SUITE_VIEWS, device=None) -> dict[str, np.ndarray]:
    """{condition: probabilities on the suite's faces (suite_sample)} for the clean faces ("clean") and every
    corruption at every severity ("jpeg/2"), under `views`: read from the file beside the model when its key
    matches, else scored now and written there (atomically, keeping what it held for other views)."""
    model_path, views = Path(model_path), view_name(views)
    split = suite_split(data)
    path, key = corruptions_cache(model_path), cache_key(model_path, data, split)
    stored = read_keyed_arrays(path, key)  # {views/condition: probabilities}; {} for other weights, data or suite
    names = [CLEAN] + [condition_name(*c) for c in conditions()]
    if all(f"{views}/{name}" in stored for name in names):
        return {name: stored[f"{views}/{name}"].astype(np.float32) for name in names}
    started = time.perf_counter()
    model, crop = load_for_scoring(model_path, device=device)
    for name in names:
        corrupted = suite_faces(data, split, name)
        # float16 halves the file; its 3 significant digits cannot move an argmax between two classes that a
        # float32 would not already call a tie (the stored mix is what every table reads, ensemble included).
        stored[f"{views}/{name}"] = softmax(predict_logits(model, corrupted, crop=crop, tta=views)).astype(np.float16)
    write_atomically(path, lambda f: np.savez_compressed(f, key=np.array(key), **stored))
    faces = faces_title(split, len(suite_sample(data, split)), int(data.split_mask(split).sum()))
    print(f"scored {model_path} on the corruption suite under {views} ({len(names)} conditions on {faces}, "
          f"{time.perf_counter() - started:.0f} s): {path}", flush=True)
    return {name: stored[f"{views}/{name}"].astype(np.float32) for name in names}


_FACES: dict[tuple, np.ndarray] = {}  # the suite's faces, made once per process for every model scored


def suite_faces(data, split: str, name: str) -> np.ndarray:
    """The suite's faces of the split (suite_sample) under one condition ("clean" or "jpeg/2"), made once and
    kept while this process runs (the whole suite on 1,000 faces is 71 MB of uint8)."""
    sample = suite_sample(data, split)
    key = (data.sha256, split, sample.tobytes(), name)
    if key not in _FACES:
        faces = data.images[sample]
        _FACES[key] = faces if name == CLEAN else corrupt(faces, *_parse(name))
    return _FACES[key]


def _parse(name: str) -> tuple[str, int]:
    corruption, severity = name.split("/")
    return corruption, int(severity)


# ---------------------------------------------------------------- the ensemble

@dataclass
class EnsembleMix:
    """The members and weights of notebook 30's ensemble that enter the mix here."""
    weights: dict[str, float]  # {member: weight}, renormalised over the members kept
    paths: dict[str, Path]  # {member: model file}
    views: str  # the views every member is scored under here
    left_out: dict[str, float]  # members under MIN_MEMBER_WEIGHT, with their weights
    fitted_views: str = ""  # the views its weights were fitted under, when not `views`


def ensemble_mix(data, reports_dir=None, min_weight: float = MIN_MEMBER_WEIGHT,
                 views: str = SUITE_VIEWS) -> EnsembleMix | None:
    """The ensemble notebook 30 reported (reports/ensemble/metrics.json), its members under the suite's `views`,
    or None when there is none or it was fitted on other data (its weights say nothing about this data)."""
    reports_dir = Path(reports_dir or REPORTS_DIR)
    metrics_path = reports_dir / "ensemble" / "metrics.json"
    if not metrics_path.exists():
        return None
    provenance = json.loads(metrics_path.read_text())["provenance"]
    if provenance.get("data_sha256") != data.sha256:
        return None
    fitted, views = provenance.get("tta", "flip"), view_name(views)
    # The suite scores every model under one view set, the ensemble's members too, whatever views notebook 30
    # fitted its weights under (its own best per member, ten crops for some; or the centre crop), and the note
    # says so. Scoring members under the fitted views instead made a change of notebook 30's plan re-score the
    # whole pool's suites (hours on 2 cores) for one row.
    files = trained_models(reports_dir, ablations=True)
    missing = [m for m in provenance["members"] if m not in files]
    if missing:
        raise FileNotFoundError(f"{metrics_path} names members without weights under {reports_dir}: "
                                f"{', '.join(missing)}; run notebook 30 again (make reports NB=30)")
    kept = {m: w for m, w in provenance["members"].items() if w >= min_weight}
    total = sum(kept.values())
    return EnsembleMix({m: w / total for m, w in kept.items()}, {m: files[m] for m in kept}, views,
                       {m: w for m, w in provenance["members"].items() if w < min_weight},
                       "" if fitted == views else fitted)


def ensemble_corruptions(mix: EnsembleMix, data, device=None) -> dict[str, np.ndarray]:
    """{condition: the ensemble's probabilities}: each member's stored probabilities, mixed with its weight."""
    members = {m: scored_corruptions(path, data, mix.views, device) for m, path in mix.paths.items()}
    names = list(next(iter(members.values())))
    return {name: ensemble_probs([members[m][name] for m in mix.weights], list(mix.weights.values()))
            for name in names}


# ---------------------------------------------------------------- tables and the figure

def accuracy_rows(probs_by_condition: dict[str, np.ndarray], labels: np.ndarray) -> list[dict]:
    """One row per condition: corruption, severity (0 for the clean faces), accuracy."""
    rows = []
    for name, probs in probs_by_condition.items():
        corruption, severity = (CLEAN, 0) if name == CLEAN else _parse(name)
        rows.append({"corruption": corruption, "severity": severity,
                     "accuracy": float((probs.argmax(1) == labels).mean())})
    return rows


def summary_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: its views, clean accuracy, mean corruption accuracy (over every corruption and severity), the
    same over the types robust training sees and over those it never sees (corruptions.SEEN, HELD_OUT), relative
    robustness (mean corruption accuracy / clean), then each corruption's mean accuracy, seen types first."""
    rows = []
    for (model, views), group in table.groupby(["model", "views"], sort=False):
        clean = group.loc[group.corruption == CLEAN, "accuracy"].item()
        corrupted = group[group.corruption != CLEAN]
        per_corruption = corrupted.groupby("corruption", sort=False)["accuracy"].mean()
        rows.append({"model": model, "views": views, "clean": clean,
                     "mean corruption accuracy": corrupted.accuracy.mean(),
                     "seen": corrupted[corrupted.corruption.isin(SEEN)].accuracy.mean(),
                     "held out": corrupted[corrupted.corruption.isin(HELD_OUT)].accuracy.mean(),
                     "relative robustness": corrupted.accuracy.mean() / clean,
                     **{c: per_corruption[c] for c in (*SEEN, *HELD_OUT) if c in per_corruption}})
    return pd.DataFrame(rows).set_index("model").sort_values("mean corruption accuracy", ascending=False).round(4)


# Column names short enough for each table to fit a 1000-px page.
SHORT_NAMES = {"mean corruption accuracy": "mean corrupted", "relative robustness": "ratio",
               "gaussian_noise": "noise", "gaussian_blur": "blur", "brightness": "bright", "low_resolution": "low res",
               "rotation": "rotate", "eyes_occluded": "eyes", "mouth_occluded": "mouth", "random_square": "square"}
HEADLINE_COLUMNS = ["clean", "mean corruption accuracy", "seen", "held out", "relative robustness"]


def _short(types) -> str:
    return ", ".join(SHORT_NAMES.get(c, c) for c in types)


def _markdown_table(summary: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(SHORT_NAMES.get(c, c) for c in ["model", *columns]) + " |", "|---|" + "---:|" * len(columns)]
    for model, row in summary.iterrows():
        cells = [f"{row[c]:.2f}" if c == "relative robustness" else f"{100 * row[c]:.1f}" for c in columns]
        lines.append("| " + " | ".join([model, *cells]) + " |")
    return lines


def summary_markdown(summary: pd.DataFrame) -> str:
    """summary_frame's table as markdown in two tables that each fit a 1000-px page: the headline (clean, mean
    corrupted, its seen and held-out groups, the ratio) and each corruption's mean, seen types first; accuracies
    in percent (1 place), relative robustness as a ratio, under short column names. The views are left to the
    suite's note (one set for every model)."""
    per_corruption = [c for c in (*SEEN, *HELD_OUT) if c in summary.columns]
    return "\n".join(
        _markdown_table(summary, HEADLINE_COLUMNS)
        + ["", f"Accuracy in percent on the suite's faces: clean; the mean over every corruption and severity; the "
               f"same over the types robust training sees (seen: {_short(SEEN)}) and over those it never sees (held "
               f"out: {_short(HELD_OUT)}); ratio: mean corrupted / clean (relative robustness).", ""]
        + _markdown_table(summary, per_corruption)
        + ["", f"Each corruption's mean accuracy over its severities, in percent: the {len(SEEN)} seen types, then "
               f"the {len(HELD_OUT)} held out."])


@dataclass
class SuiteResult:
    table: pd.DataFrame  # one row per model, corruption and severity (severity 0: clean)
    summary: pd.DataFrame  # summary_frame(table)
    split: str  # the split scored
    faces: int  # the faces of it scored (suite_sample)
    split_faces: int  # the faces it holds
    note: str  # which faces, which views, and what the ensemble's row holds


def corruption_suite(model_files: dict[str, Path], data, views: str = SUITE_VIEWS, reports_dir=None,
                     device=None, ensemble: bool = True) -> SuiteResult:
    """Every model in `model_files` on the suite, under one view set, and notebook 30's ensemble unless
    `ensemble` is False (then none of its members is scored)."""
    mix = ensemble_mix(data, reports_dir, views=views) if ensemble else None
    if not model_files and mix is None:
        raise FileNotFoundError(f"{reports_dir or REPORTS_DIR} holds no trained model and no ensemble to score on the "
                                "corruption suite; `make reports` trains them")
    split = suite_split(data)
    labels = data.labels[suite_sample(data, split)]
    split_faces = int(data.split_mask(split).sum())
    probs = {model: scored_corruptions(path, data, views, device) for model, path in model_files.items()}
    view_of = dict.fromkeys(probs, view_name(views))
    note = (f"{faces_title(split, len(labels), split_faces, code=True)}; every model under "
            f"{view_title(view_name(views))} ({view_name(views)}); suite v{SUITE_VERSION}, seed {SUITE_SEED}.")
    if mix is not None:
        probs["ensemble"], view_of["ensemble"] = ensemble_corruptions(mix, data, device), mix.views
        note += (f" The ensemble: notebook 30's weights on its {len(mix.weights)} members over "
                 f"{MIN_MEMBER_WEIGHT:g} (renormalised; the {len(mix.left_out)} left out weigh "
                 f"{sum(mix.left_out.values()):.2%} in all), under {mix.views}"
                 + (f" (its weights were fitted with each member under {mix.fitted_views}; the suite scores one "
                    "view set per model)." if mix.fitted_views else "."))
    table = pd.DataFrame([{"model": model, "views": view_of[model], **row}
                          for model, by_condition in probs.items() for row in accuracy_rows(by_condition, labels)])
    return SuiteResult(table, summary_frame(table), split, len(labels), split_faces, note)


ROBUST_SUFFIX = "_robust"  # reports/<model>_robust/: a model's robust recipe (issue 38)


def figure_models(summary: pd.DataFrame, best: int = 6) -> list[str]:
    """The models a figure shows: the `best` by mean corrupted accuracy, then every robust model and the model
    its recipe was made from, so each robust row is drawn beside the one it improves on."""
    chosen = list(summary.index[:best])
    for model in summary.index:
        if model.endswith(ROBUST_SUFFIX):
            chosen += [m for m in (model.removesuffix(ROBUST_SUFFIX), model) if m in summary.index and m not in chosen]
    return chosen


def plot_corruption_curves(result: SuiteResult, models: list[str] | None = None):
    """Accuracy against severity (0: clean), one panel per corruption, the types robust training sees on the
    first row and the held-out types on the second, one line per model (named with its views); the title names
    the split and the suite."""
    table = result.table if models is None else result.table[result.table.model.isin(models)]
    columns = max(len(SEEN), len(HELD_OUT))
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.4), sharey=True, squeeze=False)
    panels = [(ax, c, "seen") for ax, c in zip(axes[0], SEEN)] + [(ax, c, "held out") for ax, c in zip(axes[1], HELD_OUT)]
    for ax, corruption, group_name in panels:
        for (model, views), group in table.groupby(["model", "views"], sort=False):
            curve = group[group.corruption.isin([CLEAN, corruption])].sort_values("severity")
            ax.plot(curve.severity, curve.accuracy, marker="o", ms=3, label=f"{model} ({views})",
                    lw=2.5 if model == "ensemble" else 1.2, ls="--" if model.endswith(ROBUST_SUFFIX) else "-")
        ax.set_title(f"{corruption.replace('_', ' ')} ({group_name})", fontsize=10)
        ax.set_xticks(range(len(SEVERITIES[corruption]) + 1))
        ax.set_xlabel("severity (0: clean)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in [*axes[0, len(SEEN):], *axes[1, len(HELD_OUT):]]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="model (views)")
    shown = table[["model", "views"]].drop_duplicates()
    names = (", ".join(f"{m} ({v})" for m, v in shown.itertuples(index=False)) if len(shown) <= 3
             else f"{len(shown)} models, each under the views its legend names")
    fig.suptitle(f"Corruptions and occlusions: {names} on {faces_title(result.split, result.faces, result.split_faces)}"
                 f", suite v{SUITE_VERSION} seed {SUITE_SEED}", fontsize=11)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """Score every leaderboard model (or those --models names) and the ensemble's members (unless
    --no-ensemble) on the suite, writing each one's model_corruptions.npz, so that notebook 20 only reads them
    (minutes on a GPU; hours on 2 CPU cores)."""
    parser = argparse.ArgumentParser(prog="python -m emo_utils.reports.robustness", description=main.__doc__)
    parser.add_argument("--data", default=None, help="the dataset (default: $EMO_DATA, data/, ../shared/data/)")
    parser.add_argument("--reports-dir", default=None, help="default: reports/")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--models", nargs="+", metavar="NAME", default=None,
                        help="score only these models (names of reports/<model>/model.pt; default: every one)")
    parser.add_argument("--no-ensemble", action="store_true", help="leave the ensemble and its members out")
    args = parser.parse_args(argv)
    model_files = trained_models(args.reports_dir)
    if args.models is not None:
        unknown = [m for m in args.models if m not in model_files]
        if unknown:
            parser.error(f"--models: no trained model {', '.join(unknown)} under {args.reports_dir or REPORTS_DIR}; "
                         f"choose from {', '.join(model_files) or 'none (train one first)'}")
        model_files = {m: model_files[m] for m in args.models}
    if args.device not in (None, "cpu", "cuda"):
        parser.error(f"--device {args.device!r}: choose cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device; leave --device out to use the CPU")
    device = torch.device(args.device) if args.device else None
    try:
        data = load_dataset(args.data)
    except DataError as e:
        parser.error(str(e).splitlines()[0])
    try:
        result = corruption_suite(model_files, data, reports_dir=args.reports_dir, device=device,
                                  ensemble=not args.no_ensemble)
    except (FileNotFoundError, ValueError) as e:  # no model, or an ensemble this suite cannot mix
        parser.error(str(e))
    print(result.note)
    print(result.summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
