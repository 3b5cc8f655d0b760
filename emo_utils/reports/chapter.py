"""One training chapter: what every training notebook (02-09) does between its parameters and its prose.

    chapter = train_chapter(globals())   # the notebook's parameters, read by name

builds the config (recipes.chapter_config, the one way the zoo builds it too), decides where the run writes,
trains (or reuses a finished model of the same config), and evaluates under the views chosen on val; the
notebook then shows its results and calls chapter.figures() and chapter.write_report().

Where a run writes. reports/ is the published record: only `make reports` (which passes publish=True), the zoo's
runs and an explicit publish=True write there. Every other run (JupyterLab, papermill by hand, a trial) is an
experiment: its README, metrics, figures and weights go to experiments/<dataset>/<model>/<run_name or config key>/,
its checkpoints in run/ inside it. A trial (trial=True) trains a seeded stratified subset for two epochs
(core/trial.py), skips ablations and seeds, is labelled "trial" in its title and metrics.json, and is never
published.
"""
from __future__ import annotations

from ..core.data import REPO_ROOT

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.augment import make_policy
from ..core.checkpoint import TrainResult, load_checkpoint
from ..core.config import TrainConfig, config_differences
from ..core.datasets import DEFAULT_DATASET, load_named
from ..core.train import train
from ..core.trial import TRIAL_FACES, TRIAL_SEED, trial_subset
from ..paths import (MAIN_RUN, ablation_model_path, experiment_dir, experiment_run_dir, config_key, keyed_run_dir, model_dirs,
                     model_file, model_folder, run_seed_dir, seed_model_paths, views_cache)
from ..provenance import provenance
from ..recipes import chapter_config, home_budget
from . import ablation, plots
from .pages import show_headline, write_model_report
from .views import SPLIT_TITLES, Evaluation, evaluate, scored_views

# What a chapter reads of a notebook's namespace: these names, and every <budget>_recipe, _ablations, _run_seeds.
PARAMETERS = ("model_name", "budget", "home_budget", "data_path", "dataset", "label_mode", "seed", "retrain", "tta",
              "device", "report_dir", "run_dir", "overrides", "publish", "trial", "run_name")
TABLES = ("_recipe", "_ablations", "_run_seeds")
TRIAL_VIEWS = ("center", "flip")  # a trial's test-time views: two passes, not the fifteen of every view set
HOW_TO_PUBLISH = "publish with `make reports NB=<this notebook's number>` or publish=True in the parameters cell"


def shown(path) -> str:
    """A path as an executed page prints it: relative to the repository when inside it (no machine's paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


class ChapterError(ValueError):
    """A chapter's parameters that cannot run: one line in the notebook, no traceback (IPython asks for this)."""

    def _render_traceback_(self):
        return [f"ChapterError: {self}"]


def chapter_parameters(namespace: dict) -> dict:
    """The notebook's parameters out of its namespace (globals()), by name."""
    return {k: v for k, v in namespace.items() if k in PARAMETERS or (k.endswith(TABLES) and not k.startswith("_"))}


@dataclass
class Chapter:
    params: dict
    budget: str
    config: TrainConfig
    data: object  # core.data.FERData (a trial's subset of it)
    report_dir: Path
    run_dir: Path
    published: bool
    trial: bool
    result: TrainResult | None = None
    evaluation: Evaluation | None = None
    weights: list[dict] = field(default_factory=list)  # EMA or raw weights, each with flip TTA (ablation.weight_rows)
    weights_key: str = "model"  # the weights chosen on val

    @property
    def model_path(self) -> Path:
        return model_file(self.report_dir)

    @property
    def ablations(self) -> dict[str, dict]:
        return {} if self.trial else (self.params.get(f"{self.budget}_ablations") or {})

    @property
    def run_seeds(self) -> dict[str, list[int]]:
        return {} if self.trial else (self.params.get(f"{self.budget}_run_seeds") or {})

    def train_ablations(self) -> dict[str, TrainResult]:
        """The recipe with each of the budget's ablations' changes (none in a trial), beside the report."""
        if self.trial and self.params.get(f"{self.budget}_ablations"):
            print("trial: ablations skipped")
        return ablation.train_ablations(self.config, self.ablations, self.data, self.run_dir, self.report_dir,
                                        self.params.get("device"), self.params.get("retrain", False))

    def against_base(self, seeds: dict[str, list[dict]]) -> list[str]:
        """Each fine-tune's seeds ({run name: ablation.seed_rows}, "this recipe" and the runs in run_seeds) against
        the seeds of the model it fine-tunes, seed by seed, as each seed starts from its base's own seed: what the
        fine-tune costs or buys on clean faces. Published runs only, since an experiment's data would score the
        base's seeds again beside their weights under reports/."""
        if not (self.config.init_weights and self.published) or self.trial:
            return []
        lines, base_seeds = [], {}
        for name, rows in seeds.items():
            # A run may fine-tune another base than the recipe's (an ablation changing init_weights).
            start = self.ablations.get(name, {}).get("init_weights", self.config.init_weights)
            base = (REPO_ROOT / start).parent
            if base not in base_seeds:
                base_seeds[base] = ablation.seed_rows(base, self.data, self.params.get("tta"))
            lines += ablation.paired_seed_lines(name, f"the model it fine-tunes ({base.name})", rows, base_seeds[base])
        return lines

    def train_run_seeds(self, runs: dict[str, TrainResult]) -> dict[str, Path]:
        """Further seeds of the recipe and its ablations (none in a trial): {run name: its folder}."""
        return ablation.train_run_seeds(self.config, self.ablations, {ablation.MAIN_RUN: self.result, **runs},
                                        self.run_seeds, self.data, self.run_dir, self.report_dir,
                                        self.params.get("device"), self.params.get("retrain", False))

    def training_rows(self, runs: dict[str, TrainResult]) -> list[dict]:
        """The ablation table: this recipe's row, then one per ablation, under the chosen views."""
        return ablation.training_rows(self.result, scored_views(self.model_path, self.data, self.weights_key), runs,
                                      self.ablations, self.report_dir, self.data, self.evaluation.views)

    def corruption_table(self) -> str:
        """A recipe that trains on corruptions (augment.corrupt): it, its seeds and its ablations on notebook 20's
        corruption suite, seen and held-out types apart, with the seeds' mean; '' for any other recipe or a trial.
        Each model's scores are read from beside its weights (model_corruptions.npz), as notebook 20 reads them."""
        from .robustness import corruption_suite, summary_markdown  # scoring needs torch and the suite: only here

        if self.trial or not make_policy(self.config.augment).corrupt:
            return ""
        runs = {MAIN_RUN: self.model_path}  # each run's notebook seed, then its further seeds
        runs.update({name: ablation_model_path(self.report_dir, name) for name in self.ablations
                     if ablation_model_path(self.report_dir, name).is_file()})
        models, seeds_of = {}, {}
        for name, path in runs.items():
            seed_files = seed_model_paths(run_seed_dir(self.report_dir, name))
            labels = [f"{name}, seed {seed_file.parent.name}" for seed_file in seed_files]
            models.update({name: path, **dict(zip(labels, seed_files))})
            seeds_of[name] = [name, *labels]
        suite = corruption_suite(models, self.data, device=self.params.get("device"), ensemble=False)
        means = [seed_mean_line(name, suite.summary.loc[rows]) for name, rows in seeds_of.items() if len(rows) > 1]
        return "\n\n".join([suite.note, summary_markdown(suite.summary)] + means)

    def figures(self, title: str) -> dict[str, Path]:
        """The report's figures on the headline split under the chosen views, titled '<title> · <split> · <views>'."""
        ev, headline = self.evaluation, self.evaluation.headline
        return plots.report_figures(self.report_dir, self.result.history, ev.probs[headline],
                                    self.data.split(headline)[1], ev.metrics[headline], self.data.class_names,
                                    title=f"{title} · {SPLIT_TITLES[headline]} · {ev.views}")

    def provenance(self, **extra) -> dict:
        """Where the result came from (provenance.py), with whether it is published and, for a trial, that it is."""
        prov = provenance(self.config.seed, self.data.sha256, self.result.meta, self.budget)
        return {**prov, **({"trial": True} if self.trial else {}), "published": self.published, **extra}

    def published_model(self, model_name: str, budget: str = "cpu") -> Path:
        """Another notebook's published model of this dataset (for a comparison): beside this report when it is
        published, else a copy of reports/' in this experiment's folder (compared/<model>/)."""
        if self.published:
            return model_file(self.report_dir.parent / model_name)
        source = model_file(model_dirs(model_folder(model_name, budget, budget, self.config.dataset))[0])
        if not source.is_file():
            return source  # comparison_note says it is missing
        # A copy, with its scored views: scoring it on this run's data (a trial's subset) writes its cache, and an
        # experiment never writes under reports/.
        copy = self.report_dir / "compared" / model_name / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        for path in (source, views_cache(source)):
            if path.is_file():
                shutil.copy2(path, copy.parent / path.name)
        return copy

    def write_report(self, title: str, figures: dict, sections: dict | None = None, recipe_note: str = "",
                     longer: TrainResult | None = None, record: dict | None = None, prov: dict | None = None) -> Path:
        """README.md and metrics.json (and `record` as ablations.json) where the chapter writes. A trial's title
        and metrics.json say so; an experiment's README says it is not published."""
        if self.trial:
            title = f"Trial run, not a result: {title}"
        if self.config.init_weights:  # a fine-tune (the robust recipes): its minutes are its own, not its base's
            title = f"{title}, fine-tuned by the {self.budget} recipe"
            recipe_note = (f"Fine-tuned from `{self.config.init_weights}` (sha256 "
                           f"`{self.result.meta.get('init_weights_sha256', '?')[:16]}…`) for {self.config.epochs} "
                           "epochs; the minutes above are the fine-tune's alone, not the base model's training."
                           + (f"\n\n{recipe_note}" if recipe_note else ""))
        if not self.published:
            recipe_note = (f"_An experiment, not published ({self.report_dir}); {HOW_TO_PUBLISH}._"
                           + (f"\n\n{recipe_note}" if recipe_note else ""))
        readme = write_model_report(self.report_dir, title, self.result, self.evaluation, self.provenance(**(prov or {})), figures,
                                    recipe_note=recipe_note, sections=sections, longer=longer)
        if record is not None:
            (self.report_dir / "ablations.json").write_text(json.dumps(record, indent=1))
        print(f"wrote {shown(readme)}")
        return readme


def check_publishable(report_dir: Path, dataset: str, budget: str) -> None:
    """A publish never writes over another dataset's or another budget's results (their metrics.json says)."""
    record_path = Path(report_dir) / "metrics.json"
    if not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return
    theirs = (record.get("dataset", DEFAULT_DATASET), record.get("provenance", {}).get("budget", budget))
    if theirs != (dataset, budget):
        raise ChapterError(f"{report_dir} holds {theirs[0]} results of the {theirs[1]} budget; this run is {dataset} "
                           f"at the {budget} budget. Publish it to its own folder (leave report_dir=None) or run it as "
                           "an experiment (publish=False).")


def placement(params: dict, config: TrainConfig, budget: str, published: bool, trial: bool) -> tuple[Path, Path]:
    """(report folder, run folder) of a chapter: a published run in reports/<folder> with its checkpoints in
    runs/<folder>/<config key>/; an experiment in experiments/<dataset>/<model>/<run_name or key>/ with its
    checkpoints in run/ inside it. A report_dir or run_dir parameter wins."""
    subset = f"trial{TRIAL_FACES}{TRIAL_SEED}" if trial else ""
    if published:
        report_dir, run_root = model_dirs(model_folder(config.model, budget, home_budget(params), config.dataset))
        run_dir = keyed_run_dir(run_root, config, subset)
    else:
        key = config_key(config, subset)
        name = params.get("run_name") or (f"trial_{key}" if trial else key)
        report_dir = experiment_dir(config.dataset, config.model, name)
        run_dir = experiment_run_dir(report_dir)
    if params.get("report_dir") is not None:
        report_dir = Path(params["report_dir"])
    if params.get("run_dir") is not None:
        run_dir = keyed_run_dir(params["run_dir"], config, subset)
    return report_dir, run_dir


def adopt_published(chapter: Chapter) -> None:
    """An experiment of the published config starts from the published weights (a copy of every model file and
    its scored caches), so running an unchanged notebook in JupyterLab re-evaluates instead of retraining, and
    writes nothing under reports/."""
    published_dir, _ = model_dirs(model_folder(chapter.config.model, chapter.budget, home_budget(chapter.params),
                                               chapter.config.dataset))
    source = model_file(published_dir)
    if chapter.model_path.exists() or not source.is_file() or chapter.params.get("retrain"):
        return
    saved = load_checkpoint(source)
    if config_differences(saved["config"], chapter.config) or saved.get("data_sha256") != chapter.data.sha256:
        return
    for path in published_dir.rglob("*"):
        if path.is_file() and (path.suffix == ".pt" or path.name.endswith(("_views.npz", "_corruptions.npz"))):
            target = chapter.report_dir / path.relative_to(published_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    print(f"starting from the published weights of {published_dir.name} (a copy; reports/ is not written)")


def open_chapter(namespace: dict) -> Chapter:
    """A training notebook's opening: its parameters checked, its config built, where it writes said in one line,
    the data loaded (a trial's subset of it)."""
    params = chapter_parameters(namespace)
    published, trial = bool(params.get("publish")), bool(params.get("trial"))
    if published and trial:
        raise ChapterError("a trial is never published: set trial=False to publish, or publish=False to try.")
    budget = params.get("budget", "cpu")
    try:
        config = chapter_config(params)
    except (TypeError, RuntimeError) as e:  # an unknown field in a recipe or overrides; a budget without a recipe
        raise ChapterError(str(e)) from None
    report_dir, run_dir = placement(params, config, budget, published, trial)
    if published:
        check_publishable(report_dir, config.dataset, budget)
        print(f"publishing to {shown(report_dir)} (checkpoints in {shown(run_dir)})")
    else:
        print(f"{'trial' if trial else 'experiment'}: writing to {shown(report_dir)}, not reports/"
              + ("" if trial else f"; {HOW_TO_PUBLISH}"))
    data = load_named(config.dataset, params.get("data_path"), config.label_mode)
    if trial:
        data = trial_subset(data)
    print(f"{Path(str(data.source)).name}: {len(data.images):,} images{' (trial subset)' if trial else ''}, "
          f"{data.num_classes} classes {data.class_names}")
    chapter = Chapter(params, budget, config, data, report_dir, run_dir, published, trial)
    if not published and not trial:
        adopt_published(chapter)
    return chapter


def train_chapter(namespace: dict, show: bool = True) -> Chapter:
    """open_chapter, then train (or reuse the finished model of this config and data), choose the weights (EMA
    or raw, on val with flip TTA) and evaluate under the views chosen on val (or the `tta` parameter)."""
    chapter = open_chapter(namespace)
    chapter.report_dir.mkdir(parents=True, exist_ok=True)
    params = chapter.params
    chapter.result = train(chapter.config, chapter.data, chapter.run_dir, device=params.get("device"),
                           retrain=params.get("retrain", False), model_path=chapter.model_path)
    views = TRIAL_VIEWS if chapter.trial else None  # a trial scores the cheap views only
    chapter.weights, chapter.weights_key = ablation.weight_rows(chapter.model_path, chapter.data, views)
    chapter.evaluation = evaluate(chapter.model_path, chapter.data, params.get("tta"), weights=chapter.weights_key,
                                  candidates=views)
    if show:
        from IPython.display import display
        from .pages import run_summary
        display(run_summary(chapter.result.meta))
        label = f"{chapter.budget}, trial" if chapter.trial else chapter.budget
        display(show_headline(chapter.evaluation, chapter.result, label, chapter.config.seed))
    return chapter


def seed_mean_line(name: str, seeds) -> str:
    """A run's seeds on the corruption suite (rows of its summary), as one line of means, with the std of the two
    numbers the robust targets are set on."""
    return (f"{name[0].upper()}{name[1:]}, mean of {len(seeds)} seeds: clean {100 * seeds['clean'].mean():.1f}, mean "
            f"corrupted {100 * seeds['mean corruption accuracy'].mean():.1f} (std "
            f"{100 * seeds['mean corruption accuracy'].std():.1f}), seen {100 * seeds['seen'].mean():.1f}, "
            f"held out {100 * seeds['held out'].mean():.1f} (std {100 * seeds['held out'].std():.1f}).")
