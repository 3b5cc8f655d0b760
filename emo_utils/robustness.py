"""Every model, and the ensemble, scored on the corruption and occlusion suite (corruptions.py, FER2013-C).

Scoring a model on the suite is thirty forward passes over the test split, minutes on a CPU, so each model's
probabilities are scored once and kept beside its weights (`model.pt` -> `model_corruptions.npz`, float16,
compressed), as views.py keeps its clean ones. The file is keyed by the sha256 of the weights and of the data,
the faces of the split scored, and the suite's version, seed and severities: other weights, other data or
another suite are scored again, never reused. It holds one entry per view set asked for, so a model scored
under several keeps them all.

The ensemble is never predicted: its probabilities are the weighted mix (ensemble.ensemble_probs) of its
members' stored probabilities, with the weights notebook 11 fitted on val (reports/ensemble/metrics.json), under
the views it was fitted with.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .checkpoint import REPORTS_DIR, trained_models
from .corruptions import CORRUPTIONS, SEVERITIES, SUITE_SEED, SUITE_VERSION, condition_name, conditions, corrupt
from .data import DataError, file_sha256, load_dataset
from .ensemble import ensemble_probs
from .files import write_atomically
from .inference import predict_logits, softmax
from .views import SPLIT_TITLES, VIEW_TITLES, headline_split, load_for_scoring, view_name

CLEAN = "clean"
# One view set for every model: the ensemble's (its members must be scored under the views it was fitted with),
# and the views 12 of the 14 leaderboard models chose on val. The flagship's ten crops would cost five times as
# much (the whole suite on PrivateTest, 2 CPU cores: 110 minutes against 22 for flip, measured 2026-12-06).
SUITE_VIEWS = "flip"
# Ensemble members whose weights together make up this little of the mix are left out, and the rest renormalised:
# notebook 11's log-loss fit leaves 31 of its 42 members under 0.1% each (0.13% in all); without them, not one of
# the 3,589 PrivateTest predictions of its clean mix changes (flip views, measured 2026-12-06).
MIN_MEMBER_WEIGHT = 1e-3


def suite_split(data) -> str:
    """PrivateTest without the faces duplicated in train or val (issue 29, part 2) where the data has that
    split; else PrivateTest itself (or the whole test folder for a dataset without it)."""
    splits = data.available_splits()
    return "test_private_clean" if "test_private_clean" in splits else headline_split(splits)


def cache_path(model_path: Path) -> Path:
    return Path(model_path).with_name(f"{Path(model_path).stem}_corruptions.npz")


def cache_key(model_path: Path, data, split: str) -> str:
    suite = f"v{SUITE_VERSION} seed{SUITE_SEED} {sorted(SEVERITIES.items())}"
    digest = hashlib.sha256(f"{file_sha256(Path(model_path))} {data.sha256} {split} {suite}".encode())
    digest.update(np.packbits(data.split_mask(split)).tobytes())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray]:
    """{views/condition: probabilities} stored under this key, or {} when the file is missing, unreadable,
    or made for other weights, data or suite."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as saved:
            if str(saved["key"]) != key:
                return {}
            return {name: saved[name] for name in saved.files if name != "key"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}  # unreadable or from an older layout: scored again and overwritten


def scored_corruptions(model_path, data, views: str = SUITE_VIEWS, device=None) -> dict[str, np.ndarray]:
    """{condition: probabilities on the suite's split} for the clean faces ("clean") and every corruption at
    every severity ("jpeg/2"), under `views`: read from the file beside the model when its key matches, else
    scored now and written there (atomically, keeping what it held for other views)."""
    model_path, views = Path(model_path), view_name(views)
    split = suite_split(data)
    path, key = cache_path(model_path), cache_key(model_path, data, split)
    stored = _read_cache(path, key)
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
    print(f"scored {model_path} on the corruption suite under {views} ({len(names)} conditions of "
          f"{len(data.split(split)[1]):,} faces, {time.perf_counter() - started:.0f} s): {path}", flush=True)
    return {name: stored[f"{views}/{name}"].astype(np.float32) for name in names}


_FACES: dict[tuple, np.ndarray] = {}  # the suite's faces, made once per process for every model scored


def suite_faces(data, split: str, name: str) -> np.ndarray:
    """The split's faces under one condition ("clean" or "jpeg/2"), made once and kept while this process runs
    (the whole suite on PrivateTest is 250 MB of uint8)."""
    key = (data.sha256, split, np.packbits(data.split_mask(split)).tobytes(), name)
    if key not in _FACES:
        faces = data.split(split)[0]
        _FACES[key] = faces if name == CLEAN else corrupt(faces, *_parse(name))
    return _FACES[key]


def _parse(name: str) -> tuple[str, int]:
    corruption, severity = name.split("/")
    return corruption, int(severity)


# ---------------------------------------------------------------- the ensemble

@dataclass
class EnsembleMix:
    """The members and weights of notebook 11's ensemble that enter the mix here."""
    weights: dict[str, float]  # {member: weight}, renormalised over the members kept
    paths: dict[str, Path]  # {member: model file}
    views: str  # the views its weights were fitted under, every member's here
    left_out: dict[str, float]  # members under MIN_MEMBER_WEIGHT, with their weights


def ensemble_mix(data, reports_dir=None, min_weight: float = MIN_MEMBER_WEIGHT) -> EnsembleMix | None:
    """The ensemble notebook 11 reported (reports/ensemble/metrics.json), or None when there is none or it was
    fitted on other data (its weights say nothing about this data)."""
    reports_dir = Path(reports_dir or REPORTS_DIR)
    metrics_path = reports_dir / "ensemble" / "metrics.json"
    if not metrics_path.exists():
        return None
    provenance = json.loads(metrics_path.read_text())["provenance"]
    if provenance.get("data_sha256") != data.sha256:
        return None
    views = provenance.get("tta", "flip")
    if views not in ("center", "flip"):  # each member under its own views: they are in its model_views.npz
        raise ValueError(f"{metrics_path}: the ensemble mixes members under {views!r}; the suite scores members "
                         "under one view set (center or flip)")
    files = trained_models(reports_dir, ablations=True)
    missing = [m for m in provenance["members"] if m not in files]
    if missing:
        raise FileNotFoundError(f"{metrics_path} names members without weights under {reports_dir}: "
                                f"{', '.join(missing)}; run notebook 11 again (make reports NB=11)")
    kept = {m: w for m, w in provenance["members"].items() if w >= min_weight}
    total = sum(kept.values())
    return EnsembleMix({m: w / total for m, w in kept.items()}, {m: files[m] for m in kept}, views,
                       {m: w for m, w in provenance["members"].items() if w < min_weight})


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
    """Per model: its views, clean accuracy, mean corruption accuracy (over every corruption and severity),
    relative robustness (mean corruption accuracy / clean), then each corruption's mean accuracy."""
    rows = []
    for (model, views), group in table.groupby(["model", "views"], sort=False):
        clean = group.loc[group.corruption == CLEAN, "accuracy"].item()
        corrupted = group[group.corruption != CLEAN]
        per_corruption = corrupted.groupby("corruption", sort=False)["accuracy"].mean()
        rows.append({"model": model, "views": views, "clean": clean, "mean corruption accuracy":
                     corrupted.accuracy.mean(), "relative robustness": corrupted.accuracy.mean() / clean,
                     **per_corruption.to_dict()})
    return pd.DataFrame(rows).set_index("model").sort_values("mean corruption accuracy", ascending=False).round(4)


@dataclass
class SuiteResult:
    table: pd.DataFrame  # one row per model, corruption and severity (severity 0: clean)
    summary: pd.DataFrame  # summary_frame(table)
    split: str  # the split scored
    faces: int  # its size
    note: str  # which views, and what the ensemble's row holds


def corruption_suite(model_files: dict[str, Path], data, views: str = SUITE_VIEWS, reports_dir=None,
                     device=None) -> SuiteResult:
    """Every model in `model_files` and notebook 11's ensemble on the suite, under one view set."""
    mix = ensemble_mix(data, reports_dir)
    if not model_files and mix is None:
        raise FileNotFoundError(f"{reports_dir or REPORTS_DIR} holds no trained model and no ensemble to score on the "
                                "corruption suite; `make reports` trains them")
    split = suite_split(data)
    labels = data.split(split)[1]
    probs = {model: scored_corruptions(path, data, views, device) for model, path in model_files.items()}
    view_of = dict.fromkeys(probs, view_name(views))
    note = (f"{SPLIT_TITLES.get(split, split)} ({split}, {len(labels):,} faces); every model under "
            f"{VIEW_TITLES.get(view_name(views), views)} ({view_name(views)}); suite v{SUITE_VERSION}, seed {SUITE_SEED}.")
    if mix is not None:
        probs["ensemble"], view_of["ensemble"] = ensemble_corruptions(mix, data, device), mix.views
        note += (f" The ensemble: notebook 11's weights on its {len(mix.weights)} members over "
                 f"{MIN_MEMBER_WEIGHT:g} (renormalised; the {len(mix.left_out)} left out weigh "
                 f"{sum(mix.left_out.values()):.2%} in all), under {mix.views}.")
    table = pd.DataFrame([{"model": model, "views": view_of[model], **row}
                          for model, by_condition in probs.items() for row in accuracy_rows(by_condition, labels)])
    return SuiteResult(table, summary_frame(table), split, len(labels), note)


def plot_corruption_curves(result: SuiteResult, models: list[str] | None = None):
    """Accuracy against severity (0: clean), one panel per corruption, one line per model (named with its
    views); the title names the split and the suite."""
    table = result.table if models is None else result.table[result.table.model.isin(models)]
    columns = 5
    fig, axes = plt.subplots(-(-len(CORRUPTIONS) // columns), columns, figsize=(3.2 * columns, 6.4),
                             sharey=True, squeeze=False)
    for ax, corruption in zip(axes.flat, CORRUPTIONS):
        for (model, views), group in table.groupby(["model", "views"], sort=False):
            curve = group[group.corruption.isin([CLEAN, corruption])].sort_values("severity")
            ax.plot(curve.severity, curve.accuracy, marker="o", ms=3, label=f"{model} ({views})",
                    lw=2.5 if model == "ensemble" else 1.2)
        ax.set_title(corruption.replace("_", " "), fontsize=10)
        ax.set_xticks(range(len(SEVERITIES[corruption]) + 1))
        ax.set_xlabel("severity (0: clean)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes.flat[len(CORRUPTIONS):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="model (views)")
    shown = table[["model", "views"]].drop_duplicates()
    names = (", ".join(f"{m} ({v})" for m, v in shown.itertuples(index=False)) if len(shown) <= 3
             else f"{len(shown)} models, each under the views its legend names")
    fig.suptitle(f"Corruptions and occlusions: {names} on {SPLIT_TITLES.get(result.split, result.split)} "
                 f"({result.faces:,} faces), suite v{SUITE_VERSION} seed {SUITE_SEED}", fontsize=11)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """Score every leaderboard model and the ensemble's members on the suite, writing each one's
    model_corruptions.npz, so that notebook 10 only reads them (minutes on a GPU; hours on 2 CPU cores)."""
    parser = argparse.ArgumentParser(prog="python -m emo_utils.robustness", description=main.__doc__)
    parser.add_argument("--data", default=None, help="the dataset (default: $EMO_DATA, data/, ../shared/data/)")
    parser.add_argument("--reports-dir", default=None, help="default: reports/")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    args = parser.parse_args(argv)
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
        result = corruption_suite(trained_models(args.reports_dir), data, reports_dir=args.reports_dir, device=device)
    except (FileNotFoundError, ValueError) as e:  # no model, or an ensemble this suite cannot mix
        parser.error(str(e))
    print(result.note)
    print(result.summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
