"""Notebooks that JupyterLab leaves alone (issue 37, item 6): notebooks/ are stored in the bytes JupyterLab's save
writes, without outputs, and the nbstripout filter `make setup` installs strips a run's outputs from notebooks/ on
commit (so a Run All leaves `git status` clean) and never from reports/, the executed records."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from emo_utils.core.data import REPO_ROOT
from emo_utils.paths import NOTEBOOKS
from emo_utils.reports import nbform

COMMITTED = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_saving_a_committed_notebook_in_jupyterlab_changes_no_byte(path):
    raw = path.read_text(encoding="utf-8")
    saved = nbform.jupyter_bytes(nbformat.read(path, as_version=nbformat.NO_CONVERT))  # what its save writes
    assert saved == raw, f"{path.name}: not in Jupyter's form; run python -m emo_utils.reports.nbform {path.name}"
    assert nbform.committed_form(nbformat.reads(raw, as_version=nbformat.NO_CONVERT)) == raw  # the filter's too


def a_notebook(**metadata) -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                **metadata})
    nb.cells = [new_markdown_cell("# A chapter"), new_code_cell("print(6 * 7)")]
    return nb


def test_the_tool_writes_jupyters_form_without_what_a_run_adds(tmp_path, capsys):
    nb = a_notebook(language_info={"name": "python", "version": "3.11.9"}, widgets={"state": {}})
    nb.cells[1].execution_count = 3
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="42\n")]
    nb.cells[1].metadata["scrolled"] = True
    ids = [cell.id for cell in nb.cells]
    path = tmp_path / "demo.ipynb"
    path.write_text(nbformat.writes(nb, indent=4), encoding="utf-8")  # another indent: not Jupyter's bytes

    assert nbform.main(["--check", str(path)]) == 1
    assert "fix: python -m emo_utils.reports.nbform" in capsys.readouterr().out
    assert nbform.rewrite([path]) == [path]
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n "cells": [\n  {\n   "cell_type"') and text.endswith("}\n")  # indent 1, sorted
    again = nbformat.reads(text, as_version=4)
    assert [cell.id for cell in again.cells] == ids  # Jupyter's ids kept, not renumbered
    assert again.cells[1].outputs == [] and again.cells[1].execution_count is None
    assert again.cells[1].source == "print(6 * 7)" and again.cells[1].metadata == {}
    assert set(again.metadata) == {"kernelspec"}
    assert nbform.rewrite([path]) == [] and nbform.main(["--check", str(path)]) == 0


def test_a_missing_notebook_is_named(capsys):
    with pytest.raises(SystemExit) as exit:
        nbform.main(["--check", "notebooks/99_none.ipynb"])
    assert exit.value.code == 2 and "no such notebook: notebooks/99_none.ipynb" in capsys.readouterr().err


def test_the_filter_is_nbstripout_keeping_ids_and_the_attributes_scope_it_to_notebooks():
    config = nbform.filter_config("/venv/bin/python")
    assert config["filter.nbstripout.clean"] == '"/venv/bin/python" -m nbstripout --keep-id'
    assert config["filter.nbstripout.required"] == "true" and config["filter.nbstripout.extrakeys"]
    rules = [line.split() for line in (REPO_ROOT / ".gitattributes").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules == [["notebooks/**/*.ipynb", "filter=nbstripout", "diff=ipynb"]]


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def run_all(path):
    """A Run All and a save, as JupyterLab does them: outputs, counts and the kernel's language_info written back."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    nbformat.write(nb, path)


@pytest.mark.slow
def test_a_run_all_leaves_git_status_clean_for_notebooks_and_reports_keep_their_outputs(tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    shutil.copy(REPO_ROOT / ".gitattributes", repo / ".gitattributes")
    nbform.install_filter(repo, python=sys.executable)
    for folder in ("notebooks", "notebooks/drafts", "reports"):
        (repo / folder).mkdir()
        (repo / folder / "demo.ipynb").write_text(nbform.committed_form(a_notebook()), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "notebooks in the committed form")
    assert git(repo, "check-attr", "filter", "--", "notebooks/drafts/x.ipynb", "reports/x.ipynb").splitlines() == [
        "notebooks/drafts/x.ipynb: filter: nbstripout", "reports/x.ipynb: filter: unspecified"]

    for folder in ("notebooks", "notebooks/drafts", "reports"):
        run_all(repo / folder / "demo.ipynb")
    ran = nbformat.read(repo / "notebooks" / "demo.ipynb", as_version=4)
    assert ran.cells[1].outputs[0].text == "42\n" and "version" in ran.metadata.language_info  # saved with its run
    # Through the filter nothing changed in notebooks/; git status still lists them (it sees their new size) until
    # JupyterLab's save hook refreshes the index, which stages nothing.
    assert git(repo, "diff", "--name-only").splitlines() == ["reports/demo.ipynb"]
    refreshes = [nbform.refresh_git_index(os_path=str(repo / folder / "demo.ipynb"), model=None, contents_manager=None)
                 for folder in ("notebooks", "notebooks/drafts", "reports")]
    assert refreshes[2] is None and all(r.wait(60) == 0 for r in refreshes[:2])  # reports/ is not filtered
    assert git(repo, "status", "--porcelain").splitlines() == [" M reports/demo.ipynb"]

    edited = nbformat.read(repo / "notebooks" / "demo.ipynb", as_version=4)  # a real change is never staged
    edited.cells[1].source = "print(6 * 9)"
    nbformat.write(edited, repo / "notebooks" / "demo.ipynb")
    assert nbform.refresh_git_index(os_path=str(repo / "notebooks" / "demo.ipynb")) is None
    assert git(repo, "status", "--porcelain").splitlines() == [" M notebooks/demo.ipynb", " M reports/demo.ipynb"]
    git(repo, "add", "-A")
    kept = nbformat.reads(git(repo, "show", ":reports/demo.ipynb"), as_version=4)
    assert kept.cells[1].outputs[0].text == "42\n"  # the executed record keeps its outputs
    committed = nbformat.reads(git(repo, "show", ":notebooks/demo.ipynb"), as_version=4)
    assert committed.cells[1].source == "print(6 * 9)" and committed.cells[1].outputs == []


def test_the_save_hook_is_in_the_environments_jupyter_server_config(tmp_path, monkeypatch):
    from jupyter_server.serverapp import ServerApp
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    config_file = tmp_path / "etc" / "jupyter" / "jupyter_server_config.json"
    config_file.parent.mkdir(parents=True)
    config_file.write_text(json.dumps({"ServerApp": {"open_browser": False}}))  # a setting of someone else's
    assert nbform.install_save_hook(prefix=str(tmp_path)) == config_file
    assert json.loads(config_file.read_text())["ServerApp"] == {"open_browser": False}
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(config_file.parent))
    app = ServerApp()
    app.load_config_file()  # as `jupyter lab` reads its config
    manager = AsyncLargeFileManager(config=app.config, root_dir=str(tmp_path))  # JupyterLab's contents manager
    assert manager.post_save_hook is nbform.refresh_git_index


def test_the_hook_make_setup_installed_here_is_one_jupyterlab_can_import():
    """make setup runs `python -m emo_utils.reports.nbform --install-filter`: the hook it wrote must name the module
    by its import path (once it named __main__, and JupyterLab would not start)."""
    from jupyter_server.utils import import_item
    config_file = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.json"
    if not config_file.exists():
        pytest.skip(f"make setup has not installed the save hook in this environment ({sys.prefix})")
    hook = json.loads(config_file.read_text())["ContentsManager"]["post_save_hook"]
    assert import_item(hook) is nbform.refresh_git_index, hook


# ---------------------------------------------------------------- executed notebooks: no machine paths

def absolute_paths(value) -> list[str]:
    """Every string in a notebook's JSON that holds an absolute path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    return re.findall(r"(?<![\w.])/(?:tmp|work|home|root|Users|mnt|var|private)/\S*", value) \
        if isinstance(value, str) else []


def test_papermills_record_of_an_executed_notebook_is_rewritten_without_machine_paths(tmp_path):
    root = tmp_path / "clone"
    data_zip = tmp_path / "data" / "fer2013.zip"
    nb = a_notebook()
    injected = new_code_cell(f'# Parameters\ndata_path = "{data_zip}"\nepochs = 1\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, injected)
    nb.metadata["papermill"] = {"input_path": str(root / "notebooks" / "demo.ipynb"),
                                "output_path": str(root / "reports" / "demo.ipynb"),
                                "parameters": {"data_path": str(data_zip), "epochs": 1, "name": "demo"},
                                "environment_variables": {}, "version": "2.7.0"}
    executed = root / "reports" / "demo.ipynb"
    executed.parent.mkdir(parents=True)
    nbformat.write(nb, executed)
    assert absolute_paths(json.loads(executed.read_text()))  # the planted paths are found

    nbform.without_machine_paths(executed, run_in=root / "notebooks", root=root)
    text = executed.read_text()
    assert absolute_paths(json.loads(text)) == []
    record = json.loads(text)["metadata"]["papermill"]
    assert record["input_path"] == "notebooks/demo.ipynb" and record["output_path"] == "reports/demo.ipynb"
    assert record["parameters"] == {"data_path": "../../data/fer2013.zip", "epochs": 1, "name": "demo"}
    cell = nbformat.reads(text, as_version=4).cells[1]
    assert cell.source == '# Parameters\ndata_path = "../../data/fer2013.zip"\nepochs = 1\n'  # the same file from notebooks/
    assert text == nbform.jupyter_bytes(nbformat.reads(text, as_version=nbformat.NO_CONVERT))


@pytest.mark.slow
def test_make_reports_writes_executed_notebooks_without_machine_paths(tmp_path):
    from emo_utils.reports.notebooks import run_reports

    (tmp_path / "nb").mkdir()
    nb = a_notebook()
    parameters = new_code_cell("out = None")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells.insert(1, parameters)
    nbformat.write(nb, tmp_path / "nb" / "01_demo.ipynb")
    written = tmp_path / "written.txt"
    run_reports(parameters={"out": str(written)}, kernel="python3", notebooks_dir=tmp_path / "nb",
                reports_dir=tmp_path / "reports", progress=False)
    executed = json.loads((tmp_path / "reports" / "01_demo.ipynb").read_text())
    assert absolute_paths(executed) == [], absolute_paths(executed)
    record = executed["metadata"]["papermill"]
    assert record["input_path"] == os.path.relpath(tmp_path / "nb" / "01_demo.ipynb", REPO_ROOT)
    assert record["parameters"]["out"] == "../written.txt"
