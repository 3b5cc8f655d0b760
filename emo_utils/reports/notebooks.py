"""The runner behind `make reports`: each notebook executed headlessly through papermill on the project's kernel,
its parameters checked against the ones it declares before anything runs, and the executed copy and its HTML
written beside the reports; then the index and leaderboard (leaderboard.py) are rewritten from what they wrote.

It is one of the three writers of reports/ (with the zoo and an explicit publish=True): it passes publish=True to
every training notebook. A trial (--trial, `make reports TRIAL=1`) or a changed recipe (--set FIELD=VALUE, `make
reports SET="epochs=5"`, the notebook's `overrides`) is an experiment instead: its pages go to experiments/, and
reports/ is not touched (unless `-p publish True` asks for it). Another dataset's pages go under its name.

    python -m emo_utils.reports [--only 09 10] [-p budget full] [--set epochs=5] [--trial] [--retrain] [--index-only]
"""
from __future__ import annotations

import argparse
import ast
import fnmatch
import logging
import os
import sys
import time
from pathlib import Path

from ..core.data import REPO_ROOT
from ..core.datasets import DEFAULT_DATASET
from ..paths import NOTEBOOKS, REPORTS_DIR, model_dirs, model_file, model_folder, pages_dir
from ..recipes import (TRAINING_NOTEBOOKS, NotebookError, declared_parameters, home_budget, notebook_parameters,
                       parse_sets, parse_value)
from .leaderboard import write_index
from .nbform import without_machine_paths

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


# A kernel that dies before answering its first message ran no cell: jupyter_client picks free TCP ports and binds
# them later, so two kernels started at once (make test's two workers) can pick the same one and one dies with
# "Address already in use". Starting it again is safe; any other failure is reported at once.
KERNEL_NEVER_STARTED = "Kernel died before replying to kernel_info"
KERNEL_STARTS = 3


def execute_notebook(notebook: Path, output_dir: Path, parameters: dict, kernel: str, cell_timeout: int,
                     progress: bool = True, output_stem: str | None = None) -> Path:
    """Run one notebook through papermill; write the executed copy and its HTML to output_dir, named after the
    notebook or `output_stem`."""
    import papermill
    from nbconvert import HTMLExporter
    # papermill reads the parameters cell line by line to warn of unknown parameters, and cannot read a recipe
    # dict spread over several lines: it printed "Unable to parse line ..." for every such line of every notebook.
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)

    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{output_stem or notebook.stem}.ipynb"
    # The kernel `make setup` registers lives in this environment (--sys-prefix); put it first, so a kernel of
    # the same name registered by another checkout or user can never run our notebooks on the wrong code.
    own_kernels = str(Path(sys.prefix) / "share" / "jupyter")
    if os.environ.get("JUPYTER_PATH", "").split(os.pathsep)[0] != own_kernels:
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [own_kernels, os.environ.get("JUPYTER_PATH")]))
    try:
        for attempt in range(KERNEL_STARTS):
            try:
                papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, kernel_name=kernel,
                                           language="python", progress_bar=progress, execution_timeout=cell_timeout,
                                           cwd=str(notebook.parent), log_output=False)
                break
            except RuntimeError as e:
                if KERNEL_NEVER_STARTED not in str(e) or attempt == KERNEL_STARTS - 1:
                    raise
    except papermill.PapermillExecutionError as e:
        raise NotebookError(f"{notebook.name} failed in cell {e.exec_count} (index {e.cell_index}): "
                            f"{e.ename}: {e.evalue}. The partly executed copy is {executed}.") from e
    except Exception as e:  # a timeout or a dead kernel: name the notebook, keep the reason
        raise NotebookError(f"{notebook.name} did not finish: {type(e).__name__}: {str(e)[:500]}. "
                            f"The partly executed copy is {executed}.") from e
    strip_local_only_outputs(executed)
    without_machine_paths(executed, notebook.parent)
    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    (output_dir / f"{executed.stem}.html").write_text(collapse_parameter_cells(body))
    return executed


COLLAPSED_TAGS = ("parameters", "injected-parameters")


def collapse_parameter_cells(html: str) -> str:
    """Fold the parameters cells (the defaults and papermill's overrides) of an executed notebook's HTML into a
    <details> a reader opens on demand, so the first screen shows the chapter's result, not 60 lines of recipe."""
    for tag in COLLAPSED_TAGS:
        marker = f"celltag_{tag}"
        start = html.find(marker)
        while start != -1:
            open_end = html.index(">", start) + 1  # the end of the cell's opening <div ...>
            next_cell = html.find('<div class="jp-Cell ', open_end)
            close = html.rfind("</div>", open_end, next_cell if next_cell != -1 else len(html))
            summary = "Parameters (papermill's overrides)" if tag == "injected-parameters" else "Parameters"
            html = (html[:open_end] + f"<details><summary>{summary}: click to show</summary>"
                    + html[open_end:close] + "</details>" + html[close:])
            start = html.find(marker, close)
    return html


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


def extra_budget_runs(notebook: Path, output_dir: Path, dataset: str = DEFAULT_DATASET) -> list[tuple[str, dict]]:
    """[(suffix, parameters)] that re-run a training notebook on the committed weights of each of its other
    budgets: reports/<model>_full/model.pt (a GPU run of the zoo), reports/<model>_robust/model.pt (a fine-tune
    on camera corruptions), ... for every <budget>_recipe but its home one. FER2013's only: another dataset's
    run never re-runs FER2013's folders."""
    if dataset != DEFAULT_DATASET or not fnmatch.fnmatch(notebook.name, TRAINING_NOTEBOOKS):
        return []
    params = notebook_parameters(notebook)
    budgets = [k.removesuffix("_recipe") for k, v in params.items() if k.endswith("_recipe") and isinstance(v, dict)]
    runs = []
    for budget in budgets:
        if budget in (home_budget(params), params.get("budget", "cpu")):
            continue  # its own report is this budget's already
        report_dir, run_dir = model_dirs(model_folder(params["model_name"], budget, home_budget(params)),
                                         reports_dir=output_dir)
        if not model_file(report_dir).is_file():
            continue

        def seen_from_the_notebook(path: Path) -> str:  # papermill runs it in its folder; no machine's paths in reports
            return os.path.relpath(path, notebook.parent) if path.resolve().is_relative_to(REPO_ROOT) else str(path)
        runs.append((f"_{budget}", {"budget": budget, "report_dir": seen_from_the_notebook(report_dir),
                                    "run_dir": seen_from_the_notebook(run_dir)}))
    return runs


def full_budget_run(notebook: Path, output_dir: Path, dataset: str = DEFAULT_DATASET) -> dict | None:
    """The parameters that re-run a training notebook on its committed full-budget weights, or None."""
    return dict(extra_budget_runs(notebook, output_dir, dataset)).get("_full")


def is_experiment(parameters: dict) -> bool:
    """Whether a `make reports` run is an experiment rather than a publish: a trial, or a changed recipe, unless
    publish=True was asked for."""
    if "publish" in parameters:
        return not parameters["publish"]
    return bool(parameters.get("trial") or parameters.get("overrides"))


def run_notebooks(only=None, parameters=None, retrain=False, kernel="emo-fer", cell_timeout=4 * 3600,
                  notebooks_dir: Path = NOTEBOOKS, output_dir: Path = REPORTS_DIR, progress=True) -> list[Path]:
    """Run the notebooks whose names start with one of `only` (all by default) in order, each with the
    parameters it declares; a parameter no selected notebook declares, or of another type than its default,
    is a NotebookError before anything runs. Training notebooks get publish=True unless this is an experiment
    (is_experiment); then the pages go to experiments/ beside output_dir, and another dataset's under its name."""
    parameters = dict(parameters or {})
    notebooks = select_notebooks(notebooks_dir, only)
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    if parameters.get("trial") and parameters.get("publish"):
        raise NotebookError("a trial is never published: drop -p publish True, or TRIAL=1.")
    for name in parameters:
        if not any(name in d for d in declared.values()):
            raise NotebookError(f"parameter {name!r} is not declared by {', '.join(nb.name for nb in notebooks)}; "
                                f"declared: {sorted(set().union(*declared.values()))}. Use one of those names, "
                                "or add it to the notebook's parameters cell.")
    for nb in notebooks:
        for name, value in parameters.items():
            if name in declared[nb]:
                check_parameter_type(nb, name, value, declared[nb][name])
    experiment = is_experiment(parameters)
    if retrain:
        parameters["retrain"] = True
    dataset = parameters.get("dataset", DEFAULT_DATASET)
    # An experiment's pages under experiments/<dataset>/ (every dataset by name there), never beside the reports.
    pages = Path(output_dir).parent / "experiments" / dataset if experiment else pages_dir(output_dir, dataset)
    # Each notebook with the parameters given; then a training notebook again on each other budget's weights, where
    # some were committed (unless the budget was given: then the caller chose one; never for an experiment).
    jobs = []
    for nb in notebooks:
        nb_params = {k: v for k, v in parameters.items() if k in declared[nb]}
        if "publish" in declared[nb] and "publish" not in nb_params:
            nb_params["publish"] = not experiment
        jobs.append((nb, nb_params, nb.stem))
        extra = [] if "budget" in parameters or experiment else extra_budget_runs(nb, Path(output_dir), dataset)
        for suffix, budget_params in extra:  # retrain another budget where it was trained (a GPU: the zoo)
            jobs.append((nb, {**nb_params, **budget_params, "retrain": False}, nb.stem + suffix))
    done = []
    for i, (nb, nb_params, stem) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {stem} {nb_params or ''}", flush=True)
        start = time.time()
        done.append(execute_notebook(nb, pages, nb_params, kernel, cell_timeout, progress, stem))
        print(f"[{i}/{len(jobs)}] {stem} done in {time.time() - start:.0f}s -> {pages / (stem + '.html')}", flush=True)
    return done


# ---------------------------------------------------------------- make reports

def run_reports(only=None, parameters=None, retrain=False, kernel="emo-fer", cell_timeout=4 * 3600,
                notebooks_dir: Path = NOTEBOOKS, reports_dir: Path = REPORTS_DIR, progress=True) -> list[Path]:
    """Run the notebooks (notebooks.run_notebooks), then rewrite reports/README.md from what they wrote."""
    done = run_notebooks(only, parameters, retrain, kernel, cell_timeout, notebooks_dir, reports_dir, progress)
    if not is_experiment(dict(parameters or {})):  # an experiment wrote nothing under reports/ to index
        write_index(reports_dir, notebooks_dir)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emo_utils.reports",
                                     description="Run the notebooks with papermill and regenerate reports/.")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a papermill parameter (Python literal or string); repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field (the training notebooks' `overrides`), VALUE a Python literal; "
                        "repeatable. An experiment: written under experiments/, not reports/")
    parser.add_argument("--trial", action="store_true", help="a trial run of each training notebook (a subset, two "
                        "epochs; written under experiments/, never published)")
    parser.add_argument("--retrain", action="store_true", help="retrain instead of reusing committed weights")
    parser.add_argument("--kernel", default="emo-fer")
    parser.add_argument("--cell-timeout", type=int, default=4 * 3600, help="seconds one cell may run")
    parser.add_argument("--index-only", action="store_true", help="only rewrite reports/README.md")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS,
                        help="where the notebooks are (default: notebooks/)")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where the reports go (default: reports/)")
    args = parser.parse_args(argv)
    if args.index_only:
        print(write_index(args.reports_dir, args.notebooks_dir))
        return 0
    try:
        parameters = {k: parse_value(v) for k, v in args.parameter}
        if args.set:
            parameters["overrides"] = {**parameters.get("overrides", {}), **parse_sets(args.set)}
        if args.trial:
            parameters["trial"] = True
        run_reports(args.only, parameters, args.retrain, args.kernel, args.cell_timeout, args.notebooks_dir,
                    args.reports_dir)
    except NotebookError as e:
        print(f"make reports: {e}", file=sys.stderr)
        return 1
    return 0
