"""Where everything a run writes lives: every path under reports/ (what is published: weights, records, notebooks
run), runs/ (what is not: checkpoints, logs) and experiments/ (every run that is not a publish). The notebooks,
the training command line, the zoo and the reports all ask this module, so a model's folder is spelled once:

  the notebook's run         reports/<folder>/model.pt                       runs/<folder>/<key>/
  another seed S             reports/<folder>/seeds/S/model.pt               runs/<folder>/<key>/seedS/
  an ablation                reports/<folder>/ablations/<slug>/model.pt      runs/<folder>/<key>/ablations/<slug>/
  another seed of one        reports/<folder>/ablations/<slug>/seeds/S/...   runs/<folder>/<key>/ablations/<slug>/seedS/
  an experiment              experiments/<dataset>/<model>/<name or key>/    (its run state in run/ inside it)

<folder> is <model> for the budget its notebook reports by default, <model>_<budget> for the other, under
<dataset>/ for a dataset other than FER2013 (model_folder). <key> is a short hash of the run's config
(config_key): runs of two configs never share a last.pt, so a changed recipe never stops a later `make reports`.
Beside each model.pt sit the caches scored from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

from .core.checkpoint import CheckpointError
from .core.data import REPO_ROOT
from .core.datasets import DEFAULT_DATASET, check_name


def roots(base: str | os.PathLike) -> tuple[Path, Path]:
    """reports/ and runs/ under `base`: the repository's, or a folder of the zoo's own (zoo --out)."""
    return Path(base) / "reports", Path(base) / "runs"


REPORTS_DIR, RUNS_DIR = roots(REPO_ROOT)
EXPERIMENTS_DIR = REPO_ROOT / "experiments"  # git-ignored: what a notebook writes when it does not publish
NOTEBOOKS = REPO_ROOT / "notebooks"  # what `make reports` runs and the zoo trains from
FULL_SUFFIX = "_full"  # a notebook run again on its full-budget weights: reports/<notebook>_full.html
MAIN_RUN = "this recipe"  # the ablation table's row for the recipe unchanged; its seeds sit beside the zoo's
MODEL_FILE = "model.pt"


def slug(name: str) -> str:
    """A run's name as a folder name: '30-minute budget' -> '30_minute_budget'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def model_folder(model_name: str, budget: str, home_budget: str = "cpu", dataset: str = DEFAULT_DATASET) -> str:
    """A model's folder under reports/ and runs/: <model> for the budget its notebook reports by default (its
    `budget` parameter, `home_budget`), <model>_<budget> for the other, so a GPU run of the full recipe stands
    beside the CPU run's report (reports/vgg_gap_full) instead of replacing it; notebooks whose published recipe
    fits on a CPU (04, 05) report the full budget at home. FER2013's folders stay at the top (reports/<folder>);
    every other dataset's go under its own name (reports/<dataset>/<folder>), so a run never overwrites another
    dataset's report."""
    folder = model_name if budget == home_budget else f"{model_name}_{budget}"
    return folder if dataset == DEFAULT_DATASET else f"{check_name(dataset)}/{folder}"


# TrainConfig fields added after runs were first keyed: left out of the key while at their default, so adding one
# keeps the folder (and the last.pt) of every run in progress.
UNKEYED_AT_DEFAULT = {"consistency": 0.0}


def config_key(config, extra: str = "") -> str:
    """A short name for a TrainConfig (and `extra`, e.g. a trial's data subset): 10 hex digits of the sha256 of
    its JSON. Two configs that differ in any field get two keys."""
    fields = {k: v for k, v in asdict(config).items() if UNKEYED_AT_DEFAULT.get(k, object()) != v}
    text = json.dumps(fields, sort_keys=True, default=str) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def keyed_run_dir(run_dir: str | os.PathLike, config, extra: str = "") -> Path:
    """A run's checkpoints under its model's run folder, keyed by its config: runs/<folder>/<key>/."""
    return Path(run_dir) / config_key(config, extra)


def experiment_dir(dataset: str, model_name: str, name: str, root: str | os.PathLike | None = None) -> Path:
    """An experiment's folder: experiments/<dataset>/<model>/<name>/ (its README, metrics, figures, weights)."""
    return Path(root or EXPERIMENTS_DIR) / check_name(dataset) / model_name / slug(name)


def experiment_run_dir(report_dir: str | os.PathLike) -> Path:
    """An experiment's own run state (checkpoints), inside its folder."""
    return Path(report_dir) / "run"


def pages_dir(output_dir: str | os.PathLike, dataset: str = DEFAULT_DATASET) -> Path:
    """Where `make reports` writes a published notebook's executed copy and HTML: reports/ for FER2013,
    reports/<dataset>/ for another dataset, never over FER2013's pages. An experiment's go to experiments/<dataset>/."""
    return Path(output_dir) if dataset == DEFAULT_DATASET else Path(output_dir) / check_name(dataset)


def model_dirs(folder: str, reports_dir: str | os.PathLike | None = None,
               runs_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """A model's report folder (its weights, README and records) and run folder (its checkpoints and logs)."""
    return Path(reports_dir or REPORTS_DIR) / folder, Path(runs_dir or RUNS_DIR) / folder


def model_file(report_dir: str | os.PathLike) -> Path:
    return Path(report_dir) / MODEL_FILE


def ablation_model_path(report_dir: str | os.PathLike, name: str) -> Path:
    return Path(report_dir) / "ablations" / slug(name) / MODEL_FILE


def ablation_run_dir(run_dir: str | os.PathLike, name: str) -> Path:
    return Path(run_dir) / "ablations" / slug(name)


def seed_model_path(report_dir: str | os.PathLike, seed: int) -> Path:
    """Another seed of the run whose weights are in report_dir."""
    return Path(report_dir) / "seeds" / str(seed) / MODEL_FILE


def seed_init_weights(init_weights: str, seed: int) -> str:
    """Where another seed of a fine-tune starts (init_weights, relative to the repository): the base model's own
    run of that seed (seed_model_path beside it) when it has one, so the seeds of a fine-tune vary their base model
    too; else the same weights."""
    seeded = seed_model_path(Path(init_weights).parent, seed)
    return seeded.as_posix() if (REPO_ROOT / seeded).is_file() else init_weights


def seed_run_dir(run_dir: str | os.PathLike, seed: int) -> Path:
    return Path(run_dir) / f"seed{seed}"


def run_config_file(run_dir: str | os.PathLike) -> Path:
    """The config a zoo run trains, as JSON: the zoo writes it, the run's training command line reads it."""
    return Path(run_dir) / "config.json"


def slurm_logs(runs_dir: str | os.PathLike) -> Path:
    """submitit's own files (its job scripts, pickles and stdout/stderr, a folder per job) of a zoo on SLURM."""
    return Path(runs_dir) / "slurm"


def slurm_job_file(run_dir: str | os.PathLike) -> Path:
    """The SLURM job that last trained a run (zoo/slurm.py): a zoo started again never submits it twice."""
    return Path(run_dir) / "slurm_job"


def seed_model_paths(report_dir: str | os.PathLike) -> list[Path]:
    """Every further seed's weights of the run in report_dir (seed_model_path), in order of their folder names."""
    return sorted(Path(report_dir).glob(f"seeds/*/{MODEL_FILE}"))


def run_seed_dir(report_dir: str | os.PathLike, name: str) -> Path:
    """Where a training run's weights and its further seeds (seeds/<seed>/model.pt) are: the recipe's own run
    (MAIN_RUN) keeps its seeds in report_dir/seeds/, beside the zoo's; an ablation in its own folder."""
    return Path(report_dir) if name == MAIN_RUN else ablation_model_path(report_dir, name).parent


def views_cache(model_path: str | os.PathLike, weights: str = "model") -> Path:
    """A model's scored views (views.py), beside it: model.pt -> model_views.npz, model_raw_model_views.npz."""
    model_path = Path(model_path)
    suffix = "" if weights == "model" else f"_{weights}"
    return model_path.with_name(f"{model_path.stem}{suffix}_views.npz")


def corruptions_cache(model_path: str | os.PathLike) -> Path:
    """A model's scores on the corruption suite (robustness.py), beside it: model.pt -> model_corruptions.npz."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_corruptions.npz")


def ablation_record(report_dir: str | os.PathLike) -> Path:
    """What a training notebook measured beside its recipe (views, weights, runs, seeds), as JSON."""
    return Path(report_dir) / "ablations.json"


def trained_models(reports_dir: str | os.PathLike | None = None, ablations: bool = False,
                   suffixes: tuple[str, ...] = (".pt",)) -> dict[str, Path]:
    """{model name: reports/<model>/model.pt} for every model with weights. With `suffixes` (".pt", ".onnx"), a
    model with only an exported model.onnx counts too (the first suffix found wins); with `ablations`, also each
    training-time ablation's weights (reports/<model>/ablations/<run>/model.pt), named `<model>/<run>`, and each
    further seed's (reports/<model>/seeds/<seed>/model.pt), named `<model>/seed<seed>`, and each further seed of an
    ablation run (reports/<model>/ablations/<run>/seeds/<seed>/model.pt), named `<model>/<run>/seed<seed>`."""
    root = Path(reports_dir or REPORTS_DIR)
    found = {}
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        files = [folder / f"model{suffix}" for suffix in suffixes if (folder / f"model{suffix}").is_file()]
        if files:
            found[folder.name] = files[0]
    if ablations:
        found.update({f"{p.parents[2].name}/{p.parent.name}": p for p in sorted(root.glob("*/ablations/*/model.pt"))})
        found.update({f"{p.parents[2].name}/seed{p.parent.name}": p for p in sorted(root.glob("*/seeds/*/model.pt"))})
        found.update({f"{p.parents[4].name}/{p.parents[2].name}/seed{p.parent.name}": p
                      for p in sorted(root.glob("*/ablations/*/seeds/*/model.pt"))})
    return found


MODEL_SUFFIXES = (".pt", ".onnx")  # a report's model.pt, or the model.onnx exported from it


def resolve_model_path(spec: str | os.PathLike, reports_dir: str | os.PathLike | None = None) -> Path:
    """A model by report name (reports/<name>/model.pt, else model.onnx) or by path to a .pt or .onnx file."""
    reports_dir = Path(reports_dir or REPORTS_DIR)
    path = Path(spec)
    choices = list(trained_models(reports_dir, suffixes=MODEL_SUFFIXES))
    listing = (f"models in {reports_dir}: {', '.join(choices)}" if choices
               else f"{reports_dir} holds no trained model yet (`make reports` trains them)")
    if path.is_dir() and model_file(path).is_file():  # a report folder given as a path
        return model_file(path)
    if path.suffix in MODEL_SUFFIXES or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise CheckpointError(f"model file {path} does not exist; {listing}, or pass a path to a .pt or .onnx "
                                  "file.")
        return path
    for suffix in MODEL_SUFFIXES:
        candidate = reports_dir / str(spec) / f"model{suffix}"
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"no model named {str(spec)!r} ({model_file(reports_dir / str(spec))} does not "
                          f"exist); {listing}, or pass a path to a .pt or .onnx file.")
