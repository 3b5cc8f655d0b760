"""docs/design.md's "Add a model", followed step by step on a tiny net in a copy of the package: one model file,
one notebook copied from 05 into the first free training slot, `make reports NB=10`; the model ends up with its
own report and a row on the leaderboard."""
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

import emo_utils
from conftest import make_fer_zip
from emo_utils.paths import NOTEBOOKS
from emo_utils.reports.notebooks import run_reports

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def recipe_code() -> str:
    """The model file the recipe shows (its first python block)."""
    section = DESIGN.read_text().split("## Add a model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return "\n".join(line[3:] if line.startswith("   ") else line for line in block.splitlines()) + "\n"


@pytest.mark.slow
def test_a_new_model_is_one_file_and_one_notebook_and_lands_on_the_leaderboard(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(Path(emo_utils.__file__).parent, repo / "emo_utils", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "emo_utils" / "core" / "models" / "tiny_net.py").write_text(recipe_code())  # step 1

    notebook = nbformat.read(NOTEBOOKS / "05_train_cnn3.ipynb", as_version=4)  # step 2
    params = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    params.source = re.sub(r'model_name = "cnn3"', 'model_name = "tiny_net"', params.source)
    params.source += ("\nfull_recipe = dict(optimizer='adam', lr=1e-2, batch_size=16, epochs=2, scheduler='none', "
                      "augment='flip')\ncpu_recipe = full_recipe\n")
    for cell in notebook.cells:
        cell.source = cell.source.replace("3-conv CNN", "Tiny net")
    (repo / "notebooks").mkdir()
    nbformat.write(notebook, repo / "notebooks" / "10_train_tiny_net.ipynb")

    monkeypatch.setenv("PYTHONPATH", str(repo))  # the notebook's kernel imports the copy, with the new model in it
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    data = make_fer_zip(tmp_path / "data", n_train=6, n_public=2, n_private=2)
    run_reports(only=["10"], parameters={"data_path": str(data), "device": "cpu"}, kernel="python3",  # step 3
                notebooks_dir=repo / "notebooks", reports_dir=repo / "reports", progress=False)

    record = json.loads((repo / "reports" / "tiny_net" / "metrics.json").read_text())
    assert record["model"] == "tiny_net" and record["provenance"]["epochs_run"] == 2
    assert (repo / "reports" / "tiny_net" / "model.pt").is_file()
    assert "# Tiny net" in (repo / "reports" / "tiny_net" / "README.md").read_text()
    board = (repo / "reports" / "README.md").read_text()
    assert any(line.startswith("| [tiny_net](") for line in board.splitlines()), board
