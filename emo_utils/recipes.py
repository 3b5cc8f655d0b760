"""A training notebook's parameters cell, read as data: the config a command line or the zoo trains
(notebook_config) and the names `make reports` checks parameters against; and the one reader of values given on a
command line (`--set FIELD=VALUE`, `-p NAME VALUE`). Shared by the apps, so the zoo and the notebook runner read a
notebook without importing each other."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from .core.config import TrainConfig, config_from_recipe
from .core.datasets import DEFAULT_DATASET


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


def notebook_config(params: dict, budget: str | None = None, seed: int | None = None, overrides: dict | None = None,
                    dataset: str | None = None) -> TrainConfig:
    """The config a notebook's parameters (notebook_parameters) train at `budget` (default: the notebook's), built
    as the notebook builds it, with config_from_recipe: its recipe for that budget, its overrides and label_mode,
    then `overrides` on top; seed and dataset the notebook's unless given."""
    budget = budget or params.get("budget", "cpu")
    notebook_label_mode = {"label_mode": params["label_mode"]} if params.get("label_mode") else {}
    return config_from_recipe(params["model_name"], params["full_recipe" if budget == "full" else "cpu_recipe"],
                              params.get("seed", 0) if seed is None else seed,
                              {**notebook_label_mode, **(params.get("overrides") or {}), **(overrides or {})},
                              dataset or params.get("dataset") or DEFAULT_DATASET)


TRAINING_NOTEBOOKS = "[0-9][0-9]_train_*.ipynb"  # the notebooks that train a model (02-09)


def parse_value(text: str):
    """A command-line value as a Python literal (5, 0.1, True, [1, 2], {'crop': 40}), else as the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: list[str]) -> dict:
    """`--set FIELD=VALUE` items as {field: value}, each VALUE read by parse_value."""
    return {name: parse_value(value) for name, _, value in (item.partition("=") for item in items)}
