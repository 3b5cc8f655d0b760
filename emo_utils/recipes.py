"""A training notebook's parameters cell, read as data: the config a notebook, a command line or the zoo trains
(chapter_config, the one way to build it) and the names `make reports` checks parameters against; and the one reader of values given on a
command line (`--set FIELD=VALUE`, `-p NAME VALUE`). Shared by the apps, so the zoo and the notebook runner read a
notebook without importing each other."""
from __future__ import annotations

import ast
import json
from dataclasses import asdict, fields
from pathlib import Path

from .core.config import TrainConfig, config_from_recipe
from .core.datasets import DEFAULT_DATASET
from .core.trial import trial_changes
from .paths import seed_init_weights


class NotebookError(RuntimeError):
    pass


def parameters_source(notebook: Path) -> str:
    """The source of the notebook's cell tagged 'parameters' (the cell papermill overrides). Read as plain JSON,
    not with nbformat, so a machine with only torch and numpy (a rented GPU) can train from a notebook."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NotebookError(f"{notebook}: not a readable notebook ({type(e).__name__}: {e}).") from e
    tagged = [c for c in cells if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise NotebookError(f"{notebook}: no cell tagged 'parameters'. Tag the first code cell 'parameters' "
                            "(JupyterLab: property inspector, cell tags).")
    source = tagged[0]["source"]
    return source if isinstance(source, str) else "".join(source)


def declared_parameters(notebook: Path, source: str | None = None) -> dict[str, str]:
    """Names assigned in the notebook's parameters cell (`source`, read from the notebook when not given), each
    with the source of its default."""
    source = parameters_source(Path(notebook)) if source is None else source
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise NotebookError(f"{notebook}: the parameters cell is not valid Python ({e}).") from e
    defaults = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        default = ast.get_source_segment(source, node.value) if getattr(node, "value", None) else ""
        defaults.update({t.id: default or "" for t in targets if isinstance(t, ast.Name)})
    return defaults


def notebook_parameters(notebook: Path) -> dict:
    """The values of a notebook's parameters cell, run in an empty namespace (our own notebooks' cells hold
    literals and dict(...) calls), so a command line trains with exactly the recipe the notebook shows."""
    source = parameters_source(Path(notebook))
    declared = declared_parameters(Path(notebook), source)
    namespace: dict = {}
    exec(compile(source, f"{notebook} (parameters cell)", "exec"), namespace)
    return {name: namespace[name] for name in declared}


def home_budget(params: dict) -> str:
    """The budget a notebook reports at reports/<model> (paths.model_folder): its `home_budget` parameter where it
    declares one (04, 05, whose published recipe fits on a CPU: "full"), else "cpu"."""
    return params.get("home_budget") or "cpu"


def recipe_for(params: dict, budget: str) -> dict:
    """The notebook's recipe for a budget: its `<budget>_recipe` parameter (cpu_recipe, full_recipe, robust_recipe)."""
    recipe = params.get(f"{budget}_recipe")
    if not isinstance(recipe, dict):
        have = sorted(k.removesuffix("_recipe") for k, v in params.items() if k.endswith("_recipe") and isinstance(v, dict))
        raise NotebookError(f"budget {budget!r}: the notebook has no {budget}_recipe; choose one of {have}.")
    return recipe


def chapter_config(params: dict, budget: str | None = None, seed: int | None = None, overrides: dict | None = None,
                   dataset: str | None = None, trial: bool | None = None) -> TrainConfig:
    """The config a training notebook's parameters (a dict: notebook_parameters, or the notebook's own globals)
    train: the one way every notebook, the training command line and the zoo build it. Fields are taken in this
    order, each over the one before:

      1. the recipe for the budget (`budget`, else the notebook's): cpu_recipe, full_recipe or robust_recipe
      2. the notebook's label_mode parameter
      3. a trial's short schedule (core/trial.py) when `trial` (else the notebook's `trial` parameter) is on
      4. the notebook's `overrides` parameter (`make reports SET="epochs=5"` fills it)
      5. `overrides` given here (the zoo's and the training command line's --set)
      6. the model name, the seed (given, else the notebook's) and the dataset (given, else the notebook's)
    """
    if "model" in {**(params.get("overrides") or {}), **(overrides or {})}:  # step 6 would overwrite it unsaid
        raise ValueError(f"an override sets model, but a notebook trains its own model ({params['model_name']}); "
                         "give that model's notebook (notebooks/NN_train_<model>.ipynb) instead")
    budget = budget or params.get("budget", "cpu")
    trial = params.get("trial", False) if trial is None else trial
    fields = {**recipe_for(params, budget),
              **({"label_mode": params["label_mode"]} if params.get("label_mode") else {}),
              **(trial_changes() if trial else {}),
              **(params.get("overrides") or {}), **(overrides or {})}
    return config_from_recipe(params["model_name"], fields, params.get("seed", 0) if seed is None else seed, None,
                              dataset or params.get("dataset") or DEFAULT_DATASET)


def with_changes(config: TrainConfig, changes: dict) -> TrainConfig:
    """A config with some fields changed (an ablation's, a further seed's), every other field kept."""
    return TrainConfig.from_dict({**asdict(config), **changes})


def with_seed(config: TrainConfig, seed: int, changes: dict | None = None) -> TrainConfig:
    """Another seed of a run (an ablation's changes on top): for a fine-tune, from its base model's run of that
    seed when there is one (paths.seed_init_weights)."""
    seeded = with_changes(config, {**(changes or {}), "seed": seed})
    if seeded.init_weights:
        seeded = with_changes(seeded, {"init_weights": seed_init_weights(seeded.init_weights, seed)})
    return seeded


TRAINING_NOTEBOOKS = "[0-9][0-9]_train_*.ipynb"  # the notebooks that train a model (02-09)


def parse_value(text: str):
    """A command-line value as a Python literal (5, 0.1, True, [1, 2], {'crop': 40}), else as the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: list[str]) -> dict:
    """`--set FIELD=VALUE` items as {field: value}, each VALUE read by parse_value; a FIELD that TrainConfig does
    not have, or an item without '=', is a NotebookError naming it."""
    known = {f.name for f in fields(TrainConfig)}
    sets = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or name.strip() not in known:
            raise NotebookError(f"--set {item!r}: expected FIELD=VALUE with FIELD a recipe field "
                                f"(TrainConfig: {', '.join(sorted(known))}), e.g. --set epochs=5.")
        sets[name.strip()] = parse_value(value)
    return sets
