"""The zoo's plan: which runs it makes of the training notebooks (each notebook's seeds, then its ablations) and
where each one writes, the same places the notebook itself reads them from. runner.py runs the plan."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.config import TrainConfig
from ..core.datasets import DEFAULT_DATASET
from ..core.trial import TRIAL_FACES, TRIAL_SEED
from ..paths import (NOTEBOOKS, ablation_model_path, ablation_run_dir, config_key, experiment_dir, experiment_run_dir,
                     keyed_run_dir, model_dirs, model_file, model_folder, seed_model_path, seed_run_dir, slug)
from ..recipes import TRAINING_NOTEBOOKS, chapter_config, home_budget, notebook_parameters, parse_sets, with_seed


@dataclass(eq=False)  # compared and hashed by identity: a run is a key of the running processes
class Run:
    """One training run of the zoo and what is known of it so far."""

    name: str  # what the table and the summary call it
    notebook: Path
    model: str
    seed: int
    budget: str
    config: TrainConfig  # what the run trains: its notebook's recipe, the zoo's --set, then an ablation's changes
    changes: dict  # those overrides on the recipe: the zoo's --set, then an ablation's
    model_path: Path
    run_dir: Path
    planned: int  # the recipe's epochs until the run's own plan is read from its checkpoint
    early_stops: bool  # the run may end before `planned`: its ETA is an upper bound
    trial: bool = False  # a trial (core/trial.py): a subset of the data, written under experiments/, never published
    status: str = "queued"  # queued, running, done, reused, failed, stopped, not started
    returncode: int | None = None
    started: float | None = None  # time.time() of this zoo's start of it, and of its end
    ended: float | None = None
    epoch: int = 0
    best_val_acc: float | None = None
    seconds_per_epoch: float | None = None
    wall_seconds: float | None = None
    checkpoint_mtime: float = 0.0
    job_id: str | None = None  # its SLURM job under --executor slurm (slurm.py)

    @property
    def log(self) -> Path:
        return self.run_dir / "zoo.log"


def find_notebooks(selected: list[str]) -> list[Path]:
    """Training notebooks by name prefix ("02", "09_train") or path; all of them when none is named."""
    training = sorted(NOTEBOOKS.glob(TRAINING_NOTEBOOKS))
    if not selected:
        return training
    chosen = []
    for item in selected:
        if item.endswith(".ipynb") and Path(item).is_file():
            chosen.append(Path(item).resolve())
            continue
        matches = [nb for nb in training if nb.name.startswith(item)]
        if not matches:
            raise SystemExit(f"zoo: no training notebook matches {item!r}; the training notebooks are "
                             f"{', '.join(nb.name for nb in training)}, or pass a path to an .ipynb")
        chosen += matches
    return list(dict.fromkeys(chosen))


def seeds_by_notebook(specs: list[str], notebooks: list[Path]) -> dict[Path, list[int]]:
    """`--seeds 0,1,2` (every notebook) and `--seeds 09=0,1,2` (notebooks starting with 09), later ones winning."""
    seeds = {}
    for spec in specs:
        prefix, _, values = spec.rpartition("=")
        try:
            numbers = [int(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"zoo: --seeds {spec!r}: expected SEEDS or PREFIX=SEEDS, SEEDS like 0,1,2") from None
        targets = [nb for nb in notebooks if nb.name.startswith(prefix)]
        if not targets:
            raise SystemExit(f"zoo: --seeds {spec!r}: no selected notebook starts with {prefix!r}")
        seeds.update({nb: numbers for nb in targets})
    return seeds


def notebook_ablations(params: dict, budget: str, report_dir: Path,
                       run_dir: Path) -> dict[str, tuple[dict, Path, Path]]:
    """{slug: (changes, model path, run dir)} of the runs a notebook trains beside its recipe (its
    `<budget>_ablations` table), where ablation.train_ablations puts them, so the notebook finds them there."""
    return {slug(name): (changes, ablation_model_path(report_dir, name), ablation_run_dir(run_dir, name))
            for name, changes in (params.get(f"{budget}_ablations") or {}).items()}


def plan_runs(notebooks: list[Path], budget: str | None, seeds: dict[Path, list[int]], sets: list[str],
              report_root: Path, run_root: Path, ablations: bool = True, trial: bool = False,
              dataset: str | None = None) -> list[Run]:
    """The runs in order: each notebook's seeds in the order named, then every notebook's ablations. Each run's
    config is the notebook's (recipes.chapter_config, as the notebook's chapter builds it) with the zoo's `sets`
    on top, its checkpoints keyed by that config (runs/<folder>/<key>/, as the chapter keys them); `dataset`
    (datasets.py's names) for every run, else each notebook's own, its folders under reports/<dataset>/. A trial
    trains the notebook's seed alone, where the notebook's trial writes (experiments/), never the ablations."""
    runs, extra = [], []
    zoo_changes = parse_sets(sets)
    for notebook in notebooks:
        params = notebook_parameters(notebook)
        model, default_seed = params["model_name"], params.get("seed", 0)
        run_budget = budget or params.get("budget", "cpu")
        base = chapter_config(params, run_budget, None, zoo_changes, dataset or params.get("dataset") or DEFAULT_DATASET,
                              trial=trial)
        if trial:
            key = config_key(base, f"trial{TRIAL_FACES}{TRIAL_SEED}")
            report_dir = experiment_dir(base.dataset, model, f"trial_{key}", report_root.parent / "experiments")
            run_dir = experiment_run_dir(report_dir)
        else:
            folder = model_folder(model, run_budget, home_budget(params), base.dataset)  # e.g. reports/vgg_gap_full
            report_dir, run_dir = model_dirs(folder, report_root, run_root)
            run_dir = keyed_run_dir(run_dir, base)

        def planned_run(name: str, seed: int, changes: dict, model_path: Path, run_path: Path) -> Run:
            config = with_seed(base, seed, changes)
            return Run(name=name, notebook=notebook, model=model, seed=seed, budget=run_budget, config=config,
                       changes={**zoo_changes, **changes}, model_path=model_path, run_dir=run_path,
                       planned=config.epochs, early_stops=bool(config.early_stop_patience or config.time_budget_min),
                       trial=trial)
        for seed in ([default_seed] if trial else seeds.get(notebook, [default_seed])):
            if seed == default_seed:
                seed_model, seed_run = model_file(report_dir), run_dir
            else:
                seed_model, seed_run = seed_model_path(report_dir, seed), seed_run_dir(run_dir, seed)
            runs.append(planned_run(model, seed, {}, seed_model, seed_run))
        if ablations and not trial and default_seed in seeds.get(notebook, [default_seed]):
            for name, (changes, model_path, ablation_run) in notebook_ablations(
                    params, run_budget, report_dir, run_dir).items():
                extra.append(planned_run(f"{model} {name}", default_seed, changes, model_path, ablation_run))
    return runs + extra
