"""Issue 37's done-when, played end to end on a copy of the repository holding a published model and its `_full`
beside it (notebook 07 on a tiny recipe, synthetic faces): a JupyterLab user runs the training notebook outside
`make reports` (papermill by hand) with a changed recipe, on another dataset, unchanged and as a trial, and every
file under reports/ stays byte-identical; `make reports NB=07` then completes without retraining; the docs' "Add
a dataset" command writes reports/my_faces/ and leaves FER2013's reports byte-identical."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

import emo_utils
from conftest import make_fer_files, make_fer_folder, make_fer_zip
from emo_utils.paths import NOTEBOOKS
from emo_utils.reports.notebooks import run_reports

pytestmark = pytest.mark.slow  # runs notebooks end to end

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
TINY = dict(optimizer="sgd", lr=0.01, batch_size=16, epochs=1, scheduler="none", augment="flip",
            model_kwargs={"widths": [8, 16]})
CLASSES = ("anger", "happy", "sadness")


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the package and of notebook 07 (its recipes cut to one tiny epoch), with reports/model_x and
    reports/model_x_full published by `make reports` (the second as `-p budget full`, as a GPU run would be)."""
    root = tmp_path_factory.mktemp("workspace")
    repo = root / "repo"
    shutil.copytree(Path(emo_utils.__file__).parent, repo / "emo_utils", ignore=shutil.ignore_patterns("__pycache__"))
    notebook = nbformat.read(NOTEBOOKS / "07_train_model_x.ipynb", as_version=4)
    params = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\ncpu_recipe = {TINY!r}\nfull_recipe = dict(cpu_recipe, lr=0.02)\n"
    (repo / "notebooks").mkdir()
    nbformat.write(notebook, repo / "notebooks" / "07_train_model_x.ipynb")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(repo))  # the kernel imports the copy: its REPO_ROOT, reports/ and experiments/
    mp.setenv("EMO_CACHE", str(root / "cache"))
    mp.delenv("EMO_DATA", raising=False)
    zip_path = make_fer_zip(root / "data", n_train=8, n_public=2, n_private=2)
    faces = make_fer_folder(root, make_fer_files(CLASSES, n_train=8, n_public=0, n_private=0, n_plain=3), "my_faces")
    common = {"data_path": str(zip_path), "device": "cpu"}
    for extra in ({}, {"budget": "full"}):
        run_reports(only=["07"], parameters={**common, **extra}, kernel="python3", notebooks_dir=repo / "notebooks",
                    reports_dir=repo / "reports", progress=False)
    yield repo, common, faces
    mp.undo()


def run_by_hand(repo: Path, parameters: dict) -> Path:
    """The notebook run as in JupyterLab: papermill on the notebook itself, outside `make reports`."""
    import papermill
    (repo.parent / "lab").mkdir(exist_ok=True)
    out = repo.parent / "lab" / f"07_run{len(list((repo.parent / 'lab').iterdir()))}.ipynb"
    papermill.execute_notebook(str(repo / "notebooks" / "07_train_model_x.ipynb"), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(repo / "notebooks"), progress_bar=False)
    return out


def first_output(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    opening = next(c for c in nb.cells if c.cell_type == "code" and "train_chapter(" in c.source)
    return next(o["text"] for o in opening.outputs if o.get("name") == "stdout").splitlines()[0]


def test_a_notebook_run_outside_make_reports_never_writes_reports_and_make_reports_then_reuses(repo):
    repo, common, faces = repo
    reports, experiments = repo / "reports", repo / "experiments"
    assert metrics(reports / "model_x")["provenance"]["published"] is True
    assert metrics(reports / "model_x_full")["provenance"]["budget"] == "full"
    published = snapshot(reports)

    changed = run_by_hand(repo, {**common, "overrides": {"epochs": 2}})
    line = first_output(changed)
    assert line.startswith("experiment: writing to experiments/fer2013/model_x/") and "publish=True" in line
    other = run_by_hand(repo, {"dataset": "my_faces", "data_path": str(faces), "device": "cpu"})
    unchanged = run_by_hand(repo, common)
    trial = run_by_hand(repo, {**common, "trial": True})
    assert snapshot(reports) == published  # byte-identical: nothing under reports/ was written

    runs = {p.parent.name: metrics(p.parent) for p in (experiments / "fer2013" / "model_x").glob("*/metrics.json")}
    assert sorted(r["provenance"]["epochs_run"] for r in runs.values()) == [1, 2, 2]  # unchanged, changed, trial
    (trial_run,) = [r for name, r in runs.items() if name.startswith("trial_")]
    assert trial_run["provenance"]["trial"] is True and trial_run["provenance"]["published"] is False
    (trial_dir,) = (experiments / "fer2013" / "model_x").glob("trial_*")
    assert (trial_dir / "README.md").read_text().startswith("# Trial run, not a result: ")
    # The unchanged run started from a copy of the published weights: re-evaluated, not retrained.
    assert [r["provenance"]["reused_weights"] for n, r in runs.items() if not n.startswith("trial_")].count(True) == 1
    assert metrics(next((experiments / "my_faces" / "model_x").iterdir()))["dataset"] == "my_faces"
    assert all(first_output(nb).startswith(("experiment: ", "trial: ")) for nb in (other, unchanged, trial))

    # `make reports NB=07` completes afterwards, on the committed weights (both budgets), retraining nothing.
    run_reports(only=["07"], parameters=common, kernel="python3", notebooks_dir=repo / "notebooks",
                reports_dir=reports, progress=False)
    for folder in ("model_x", "model_x_full"):
        assert metrics(reports / folder)["provenance"]["reused_weights"] is True, folder
    assert (reports / "07_train_model_x_full.html").is_file()


def add_a_dataset_parameters(faces: Path) -> dict:
    """Step 2 of docs/design.md's "Add a dataset", its `make reports ... PARAMS="..."` as parameters."""
    section = DESIGN.read_text().split("## Add a dataset", 1)[1].split("\n## ", 1)[0]
    command = re.search(r'`make reports NB=(\d+) PARAMS="([^"]*)"`', section)
    pairs = re.findall(r"-p (\S+) (\S+)", command.group(2))
    return {name: (str(faces) if name == "data_path" else value) for name, value in pairs}


def test_the_docs_add_a_dataset_command_leaves_fer2013s_reports_byte_identical(repo):
    repo, common, faces = repo
    reports = repo / "reports"
    before = snapshot(reports)
    parameters = add_a_dataset_parameters(faces)
    assert parameters["dataset"] == "my_faces"
    run_reports(only=["07"], parameters={**parameters, "device": "cpu"}, kernel="python3",
                notebooks_dir=repo / "notebooks", reports_dir=reports, progress=False)
    assert metrics(reports / "my_faces" / "model_x")["dataset"] == "my_faces"
    assert (reports / "my_faces" / "07_train_model_x.html").is_file()  # its page under its name
    after = snapshot(reports)
    index = ("README.md", "leaderboard.png")  # the index (leaderboard.py) lists every dataset: rewritten
    fer2013 = {path: digest for path, digest in before.items() if path not in index}
    assert {path: after[path] for path in fer2013} == fer2013  # no `_full` rerun, no page over FER2013's
    assert not (reports / "my_faces" / "model_x_full").exists()


def test_the_docs_add_a_model_steps_leave_the_other_models_reports_byte_identical(repo):
    """docs/design.md's "Add a model" on this copy (which holds model_x and model_x_full): a model file, notebook 05
    copied to slot 10 with a tiny recipe, then `make reports NB=10`."""
    from test_add_a_model import recipe_code
    repo, common, _ = repo
    reports = repo / "reports"
    before = snapshot(reports)
    (repo / "emo_utils" / "core" / "models" / "tiny_net.py").write_text(recipe_code())
    notebook = nbformat.read(NOTEBOOKS / "05_train_cnn3.ipynb", as_version=4)
    params = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace('model_name = "cnn3"', 'model_name = "tiny_net"')
    params.source += ("\nfull_recipe = dict(optimizer='adam', lr=1e-2, batch_size=16, epochs=2, scheduler='none', "
                      "augment='flip')\ncpu_recipe = full_recipe\n")
    nbformat.write(notebook, repo / "notebooks" / "10_train_tiny_net.ipynb")
    run_reports(only=["10"], parameters=common, kernel="python3", notebooks_dir=repo / "notebooks",
                reports_dir=reports, progress=False)
    assert metrics(reports / "tiny_net")["provenance"]["published"] is True
    after = snapshot(reports)
    others = {path: digest for path, digest in before.items() if path not in ("README.md", "leaderboard.png")}
    assert {path: after[path] for path in others} == others
