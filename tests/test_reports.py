"""The reports pipeline: papermill runs, failures and time-outs named, the index and leaderboard, and the
project's own notebooks executed end to end on synthetic data."""
import json
import os
import subprocess
import sys
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import make_fer_files, make_fer_zip
from emo_utils.reports import NOTEBOOKS, NotebookError, run_reports, write_index

KERNEL = "python3"  # the running interpreter's own kernel: the tests need no registered kernel


def write_notebook(path, parameters_source, *sources, tag=True):
    nb = new_notebook()
    params = new_code_cell(parameters_source)
    if tag:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# tiny"), params] + [new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "nb").mkdir()
    return tmp_path / "nb", tmp_path / "reports"


def test_runs_notebooks_in_order_with_parameters_and_writes_html_and_index(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_first.ipynb", "x = 1", "print('answer', x * 2)")
    write_notebook(nb_dir / "02_second.ipynb", "y = 'a'", "print('second says', y)")
    run_reports(parameters={"x": 21}, kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    first = nbformat.read(reports / "01_first.ipynb", as_version=4)
    assert "answer 42" in "".join(o.get("text", "") for c in first.cells for o in c.get("outputs", []))
    assert "answer 42" in (reports / "01_first.html").read_text()
    index = (reports / "README.md").read_text()
    assert "[01_first.html](01_first.html)" in index and "[02_second.html](02_second.html)" in index
    run_reports(only=["02"], kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)


def test_undeclared_parameter_is_an_error(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_first.ipynb", "x = 1", "print(x)")
    with pytest.raises(NotebookError, match="'z' is not declared by 01_first.ipynb"):
        run_reports(parameters={"z": 3}, kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports)
    assert not (reports / "01_first.html").exists()


def test_missing_parameters_tag_is_an_error(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_untagged.ipynb", "x = 1", tag=False)
    with pytest.raises(NotebookError, match="01_untagged.ipynb: no cell tagged 'parameters'"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports)


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_broken.ipynb", "x = 1", "y = 2", "raise ValueError('boom in the data')")
    write_notebook(nb_dir / "02_after.ipynb", "x = 1", "print(x)")
    with pytest.raises(NotebookError, match=r"01_broken.ipynb failed in cell .*ValueError: boom in the data"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert not (reports / "02_after.ipynb").exists()


def test_hung_cell_fails_within_its_timeout_naming_the_notebook(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_hangs.ipynb", "x = 1", "import time\ntime.sleep(600)")
    start = time.time()
    with pytest.raises(NotebookError, match="01_hangs.ipynb did not finish"):
        run_reports(kernel=KERNEL, cell_timeout=3, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert time.time() - start < 60


def test_reports_command_with_a_hung_notebook_exits_1_within_its_timeout(folders):
    """What `make reports` runs, in its own process: exit status 1 and the notebook named on stderr."""
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_fine.ipynb", "x = 1", "print(x)")
    write_notebook(nb_dir / "02_hangs.ipynb", "x = 1", "import time\ntime.sleep(600)")
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "emo_utils.reports", "--kernel", KERNEL, "--cell-timeout", "3",
                           "--notebooks-dir", str(nb_dir), "--reports-dir", str(reports)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "make reports: 02_hangs.ipynb did not finish" in done.stderr
    assert time.time() - start < 90
    assert (reports / "01_fine.html").exists()  # the notebook that finished keeps its report


def test_committed_notebooks_have_no_outputs_and_a_parameters_cell_first():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks, "notebooks/ is empty"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs: strip them"
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell is not 'parameters'"


# ---------------------------------------------------------------- the project's notebooks on synthetic data

@pytest.fixture
def synthetic_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMO_DATA", raising=False)
    return tmp_path


def test_data_exploration_notebook_runs_on_synthetic_data(synthetic_env):
    zip_path = make_fer_zip(synthetic_env / "data", n_train=6)
    reports = synthetic_env / "reports"
    run_reports(only=["01"], parameters={"data_path": str(zip_path), "samples_per_class": 3}, kernel=KERNEL,
                reports_dir=reports, progress=False)
    html = (reports / "01_data_exploration.html").read_text()
    assert "Exact duplicates" in html and "groups_across_train_test" in html and "image/png" in html


@pytest.mark.parametrize("classes", [("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
                                     ("anger", "contempt", "disgust", "fear", "happy", "sadness")])
def test_mini_xception_notebook_smoke_run_writes_a_full_report(synthetic_env, classes):
    zip_path = make_fer_zip(synthetic_env / "data", files=make_fer_files(classes, n_train=12, n_public=3, n_private=3))
    report_dir, reports = synthetic_env / "reports" / "mini_xception", synthetic_env / "reports"
    params = {"data_path": str(zip_path), "report_dir": str(report_dir), "run_dir": str(synthetic_env / "run"),
              "cpu_recipe": {"epochs": 1, "batch_size": 16, "augment": "flip"}, "device": "cpu"}
    run_reports(only=["02"], parameters=params, kernel=KERNEL, reports_dir=reports, progress=False)
    record = json.loads((report_dir / "metrics.json").read_text())
    assert record["model"] == "mini_xception" and record["params"] > 0 and record["flops"] > 0
    assert set(record["splits"]) == {"test_private", "test_public", "test_all", "val"}
    for split in record["splits"].values():
        assert set(split) == {"accuracy", "macro_f1", "auc_micro", "auc_macro", "ece", "n"}
    assert record["splits"]["test_private"]["n"] == 3 * len(classes)
    assert {"commit", "seed", "data_sha256", "device", "torch", "wall_seconds", "epochs_run", "epochs_asked",
            "budget"} <= set(record["provenance"])
    assert record["provenance"]["epochs_run"] == 1 and record["provenance"]["budget"] == "cpu"
    for name in ("README.md", "model.pt", "learning_curves.png", "confusion.png", "roc.png", "reliability.png"):
        assert (report_dir / name).stat().st_size > 0, name
    readme = (report_dir / "README.md").read_text()
    assert "PrivateTest" in readme and classes[1] in readme and "load_trained" in readme
    board = write_index(reports, NOTEBOOKS).read_text()
    assert "[mini_xception](mini_xception/README.md)" in board
    assert f"{record['splits']['test_private']['accuracy']:.4f}" in board


def test_local_only_outputs_never_reach_reports(folders):
    nb_dir, reports = folders
    path = write_notebook(nb_dir / "01_faces.ipynb", "x = 1", "print('secret' + ' face pixels')", "print('public', x)")
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].metadata["tags"] = ["local-only"]
    nbformat.write(nb, path)
    run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    for produced in (reports / "01_faces.ipynb", reports / "01_faces.html"):
        text = produced.read_text()
        assert "secret face pixels" not in text  # the source spells it in two pieces
        assert "never redistributes FER2013" in text and "public 1" in text


def test_trained_models_lists_reports_and_on_request_the_ablation_runs(tmp_path):
    from emo_utils.reports import trained_models
    for path in ("mini_xception/model.pt", "vgg_gap/model.pt", "vgg_gap/ablations/30_minute_budget/model.pt",
                 "vgg_gap/model_no_vflip.pt", "ensemble/metrics.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    assert list(trained_models(tmp_path)) == ["mini_xception", "vgg_gap"]
    with_runs = trained_models(tmp_path, ablations=True)
    assert list(with_runs) == ["mini_xception", "vgg_gap", "vgg_gap/30_minute_budget"]
    assert with_runs["vgg_gap/30_minute_budget"] == tmp_path / "vgg_gap/ablations/30_minute_budget/model.pt"


def test_markdown_table_keeps_four_places_for_fractions_and_drops_padding_on_minutes():
    from emo_utils.reports import markdown_table
    table = markdown_table([{"run": "this recipe", "epochs": 82, "train min": 59.5, "val": 0.71254, "loss": 1.79234}])
    header, rule, row = table.splitlines()
    assert header == "| run | epochs | train min | val | loss |" and rule == "|---|---|---|---|---|"
    assert row == "| this recipe | 82 | 59.5 | 0.7125 | 1.792 |"


def test_ensemble_verdict_counts_the_plans_that_beat_their_best_member_and_names_the_misses():
    from emo_utils.reports import ensemble_verdict
    row = lambda plan, views, gain: {"ensemble": plan, "test-time views": views, "test_private": 0.6 + gain / 100,  # noqa: E731
                                     "best member": "model_x", "best member test_private": 0.6,
                                     "gain (points)": gain, "beats best member": gain > 0}
    text = ensemble_verdict([row("seed pair, fitted weights", "center", 0.22), row("zoo, fitted weights", "flip", 0.44),
                             row("seed pair, equal weights", "flip", -0.73)])
    assert text.startswith("**2 of 3 plans beat their best member on test_private.**")
    assert "largest gain: zoo, fitted weights (flip), +0.44 points" in text
    assert "Short of it: seed pair, equal weights (flip) -0.73 points." in text
