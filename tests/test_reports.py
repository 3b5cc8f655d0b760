"""The reports pipeline: papermill runs, failures and time-outs named, the index and leaderboard, and the
project's own notebooks executed end to end on synthetic data."""
import hashlib
import json
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import make_fer_files, make_fer_zip, make_image_bytes
from emo_utils.core.data import load_dataset
from emo_utils.paths import NOTEBOOKS
from emo_utils.recipes import NotebookError
from emo_utils.reports.notebooks import run_reports
from emo_utils.reports.leaderboard import write_index

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


@pytest.mark.slow
def test_runs_notebooks_in_order_with_parameters_and_writes_html_and_index(folders, caplog):
    nb_dir, reports = folders
    log = nb_dir.parent / "ran.txt"  # each notebook appends what it ran with: the order and the parameters
    write_notebook(nb_dir / "01_first.ipynb", "x = 1", f"open({str(log)!r}, 'a').write(f'01 x={{x}}\\n')",
                   "print('answer', x * 2)")
    write_notebook(nb_dir / "02_second.ipynb", "y = 'a'\nrecipe = dict(lr=0.1,\n              epochs=2)",
                   f"open({str(log)!r}, 'a').write(f'02 y={{y}}\\n')", "print('second says', y)")
    run_reports(parameters={"x": 21, "y": "b"}, kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports,
                progress=False)
    assert log.read_text() == "01 x=21\n02 y=b\n"  # each notebook gets the parameters its cell names
    assert "Unable to parse" not in caplog.text  # papermill cannot read a recipe over two lines: not the user's news
    first = nbformat.read(reports / "01_first.ipynb", as_version=4)
    assert "answer 42" in "".join(o.get("text", "") for c in first.cells for o in c.get("outputs", []))
    assert "answer 42" in (reports / "01_first.html").read_text()
    index = (reports / "README.md").read_text()
    assert "[01_first.html](01_first.html)" in index and "[02_second.html](02_second.html)" in index

    # `--only 02`: 02 alone runs again, with its own default; 01's report stays as it was; the index keeps both.
    first_html = (reports / "01_first.html").read_bytes()
    (reports / "02_second.html").unlink()
    run_reports(only=["02"], kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert log.read_text() == "01 x=21\n02 y=b\n02 y=a\n"
    assert "second says a" in (reports / "02_second.html").read_text()
    assert (reports / "01_first.html").read_bytes() == first_html
    index = (reports / "README.md").read_text()
    assert "[01_first.html](01_first.html)" in index and "[02_second.html](02_second.html)" in index


def test_missing_parameters_tag_is_an_error(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_untagged.ipynb", "x = 1", tag=False)
    with pytest.raises(NotebookError, match="01_untagged.ipynb: no cell tagged 'parameters'"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports)


def test_a_kernel_that_dies_before_it_starts_is_started_again_and_only_that(folders, monkeypatch):
    import papermill

    from emo_utils.reports import notebooks
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_ok.ipynb", "x = 1", "print(x + 1)")
    real, calls = papermill.execute_notebook, []

    def first_start_fails(*args, **kwargs):  # two kernels picked one port: the first start dies before any cell
        calls.append(args[0])
        if len(calls) == 1:
            raise RuntimeError(notebooks.KERNEL_NEVER_STARTED)
        return real(*args, **kwargs)
    monkeypatch.setattr(papermill, "execute_notebook", first_start_fails)
    run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert len(calls) == 2 and (reports / "01_ok.html").exists()

    def never_starts(*args, **kwargs):
        calls.append(args[0])
        raise RuntimeError(notebooks.KERNEL_NEVER_STARTED)
    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", never_starts)
    with pytest.raises(NotebookError, match="01_ok.ipynb did not finish: RuntimeError: Kernel died before replying"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert len(calls) == notebooks.KERNEL_STARTS

    def other_failure(*args, **kwargs):  # a kernel that ran and then failed is reported, not restarted
        calls.append(args[0])
        raise RuntimeError("Kernel died")
    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", other_failure)
    with pytest.raises(NotebookError, match="did not finish: RuntimeError: Kernel died"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert len(calls) == 1


@pytest.mark.slow
def test_failing_notebook_stops_the_run_naming_notebook_and_cell(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_broken.ipynb", "x = 1", "y = 2", "raise ValueError('boom in the data')")
    write_notebook(nb_dir / "02_after.ipynb", "x = 1", "print(x)")
    with pytest.raises(NotebookError, match=r"01_broken.ipynb failed in cell .*ValueError: boom in the data"):
        run_reports(kernel=KERNEL, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert not (reports / "02_after.ipynb").exists()


@pytest.mark.slow
def test_hung_cell_fails_within_its_timeout_naming_the_notebook(folders):
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_hangs.ipynb", "x = 1", "import time\ntime.sleep(600)")
    start = time.time()
    with pytest.raises(NotebookError, match="01_hangs.ipynb did not finish"):
        run_reports(kernel=KERNEL, cell_timeout=3, notebooks_dir=nb_dir, reports_dir=reports, progress=False)
    assert time.time() - start < 60


@pytest.mark.slow
def test_reports_command_with_a_hung_notebook_exits_1_within_its_timeout(folders, capsys):
    """What `make reports` runs (`python -m emo_utils.reports`, i.e. main): exit status 1 and the notebook named
    on stderr."""
    from emo_utils.reports.notebooks import main
    nb_dir, reports = folders
    write_notebook(nb_dir / "01_fine.ipynb", "x = 1", "print(x)")
    write_notebook(nb_dir / "02_hangs.ipynb", "x = 1", "import time\ntime.sleep(600)")
    start = time.time()
    rc = main(["--kernel", KERNEL, "--cell-timeout", "3", "--notebooks-dir", str(nb_dir), "--reports-dir", str(reports)])
    stderr = capsys.readouterr().err
    assert rc == 1, stderr[-2000:]
    assert "make reports: 02_hangs.ipynb did not finish" in stderr
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


def cell_output(executed, starts: str) -> str:
    """What the code cell of an executed notebook whose source starts with `starts` printed or displayed (text)."""
    cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    cell = next(c for c in cells if c.source.startswith(starts))
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@pytest.mark.slow
def test_data_exploration_notebook_shows_the_counts_and_duplicates_of_its_data(synthetic_env):
    files = make_fer_files(n_train=6)  # 7 classes, each 6 train (5 + 1 val), 2 PublicTest, 2 PrivateTest
    train_face = next(p for p in files if p.startswith("train/happy/"))
    test_face = next(p for p in files if p.startswith("test/sad/PrivateTest_"))
    files[test_face] = files[train_face]  # one face in train and in test, under two labels
    files[next(p for p in files if p.startswith("train/angry/"))] = make_image_bytes(color=128)  # a blank frame
    zip_path = make_fer_zip(synthetic_env / "data", files=files)
    data = load_dataset(zip_path)
    train_face_is_in_train = data.split_mask("train")[list(data.names).index(train_face)]
    reports = synthetic_env / "reports"
    run_reports(only=["01"], parameters={"data_path": str(zip_path), "samples_per_class": 3}, kernel=KERNEL,
                reports_dir=reports, progress=False)
    executed = reports / "01_data_exploration.ipynb"
    loaded = cell_output(executed, "from pathlib import Path")
    assert f"sha256 {hashlib.sha256(zip_path.read_bytes()).hexdigest()}" in loaded
    assert loaded.startswith(f"{zip_path.name}\n") and str(zip_path.parent) not in loaded  # no machine path

    header, *rows = cell_output(executed, "counts = ").splitlines()
    splits = header.replace("share of train+val", "").split()
    total = next(row.split()[1:] for row in rows if row.startswith("total"))
    assert dict(zip(splits, map(int, total))) == {"train": 35, "val": 7, "test_public": 14, "test_private": 14,
                                                  "test_all": 28}

    found = {name.strip(): (int(exact), int(near)) for name, exact, near in
             re.findall(r"^([a-zA-Z/() ]+?)\s+(\d+)\s+(\d+)$", cell_output(executed, "duplicates = "), re.M)}
    assert {k: exact for k, (exact, near) in found.items()} == {
        "groups": 1, "faces in groups": 2, "groups within train/val": 0, "groups within test": 0,
        "groups across train/val and test": 1, "groups with conflicting labels": 1, "train/val groups (val inflated)": 0,
        "val faces with a copy in train": 0, "PublicTest faces with a copy in train": 0,
        "PrivateTest faces with a copy in train": int(train_face_is_in_train)}
    assert all(near >= exact for exact, near in found.values())  # near copies include the exact ones
    assert re.search(r"^blank\s+1$", cell_output(executed, "explore.blank_frames"), re.M)
    assert {Path(train_face).name, Path(test_face).name} <= set(re.split(r"[ =/\n]+", cell_output(executed, "for group")))
    sizes = {row.split()[0]: row.split()[1:3] for row in cell_output(executed, "explore.clean_split_sizes").splitlines()[2:]}
    assert sizes["PrivateTest"] == ["14", "13"]  # the copy of a training face is out
    figures = {c.source.split("(")[0] for c in nbformat.read(executed, as_version=4).cells
               for o in c.get("outputs", []) if "image/png" in o.get("data", {})}
    # the sample grid and the duplicate pairs show faces: local-only
    assert figures == {"plots.plot_class_counts", "plots.plot_mean_faces"}


@pytest.mark.parametrize("classes", [("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
                                     ("anger", "contempt", "disgust", "fear", "happy", "sadness")])
@pytest.mark.slow
def test_mini_xception_notebook_smoke_run_writes_a_full_report(synthetic_env, classes):
    zip_path = make_fer_zip(synthetic_env / "data", files=make_fer_files(classes, n_train=12, n_public=3, n_private=3))
    report_dir, reports = synthetic_env / "reports" / "mini_xception", synthetic_env / "reports"
    params = {"data_path": str(zip_path), "report_dir": str(report_dir), "run_dir": str(synthetic_env / "run"),
              "cpu_recipe": {"epochs": 1, "batch_size": 16, "augment": "flip"}, "device": "cpu",
              "cpu_ablations": {}}  # not its 220-epoch ablation: test_flagship covers ablations
    run_reports(only=["02"], parameters=params, kernel=KERNEL, reports_dir=reports, progress=False)
    record = json.loads((report_dir / "metrics.json").read_text())
    assert record["model"] == "mini_xception" and record["params"] > 0 and record["flops"] > 0
    assert set(record["splits"]) == {"test_private", "test_public", "test_all", "val", "test_private_clean",
                                     "test_public_clean", "test_all_clean"}
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
    assert f"{100 * record['splits']['test_private']['accuracy']:.2f} (" in board


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
    from emo_utils.paths import trained_models
    for path in ("mini_xception/model.pt", "vgg_gap/model.pt", "vgg_gap/ablations/30_minute_budget/model.pt",
                 "vgg_gap/model_no_vflip.pt", "ensemble/metrics.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    assert list(trained_models(tmp_path)) == ["mini_xception", "vgg_gap"]
    with_runs = trained_models(tmp_path, ablations=True)
    assert list(with_runs) == ["mini_xception", "vgg_gap", "vgg_gap/30_minute_budget"]
    assert with_runs["vgg_gap/30_minute_budget"] == tmp_path / "vgg_gap/ablations/30_minute_budget/model.pt"


def test_markdown_table_keeps_one_precision_per_column_one_missing_mark_short_devices_and_changes():
    from emo_utils.reports.tables import markdown_table
    table = markdown_table([
        {"run": "this recipe", "change": "-", "train min": 59.5, "val": 0.71254, "loss": 1.79234,
         "device": "cpu (Intel(R) Xeon(R) Processor, AVX512-BF16, AMX, 2 threads)"},
        {"run": "refit", "change": {"augment": {"crop": 40}, "lr": 0.2}, "train min": 61.0, "val": None,
         "loss": float("nan"), "device": "NVIDIA H100 80GB HBM3"}])
    header, rule, recipe, refit, _, changes = table.splitlines()
    assert header == "| run | min | val | loss | device |" and rule == "|---|---|---|---|---|"
    assert recipe == "| this recipe | 59.5 | 0.7125 | 1.79 | Xeon AMX x2 |"
    assert refit == "| refit | 61.0 | — | — | H100 |"  # not '61', not 'nan'
    assert changes == "What each run changes: **refit**: augment.crop 40, lr 0.2."  # short text under the table


def test_a_changes_text_shows_every_value_of_a_list_and_a_file_by_its_folder_and_name():
    from emo_utils.reports.tables import changes_text
    assert changes_text({"model_kwargs": {"widths": [32, 64]}, "augment": {"framing": {"scale": [0.78, 1.01, 1.5]}},
                         "distill_targets": "reports/ensemble/teacher_train.npz",
                         "init_weights": "reports/vgg_gap_full/model.pt"}) == (
        "model_kwargs.widths 32/64, augment.framing.scale 0.78/1.01/1.5, distill_targets ensemble/teacher_train.npz, "
        "init_weights vgg_gap_full/model.pt")


def test_ensemble_verdict_counts_the_plans_that_beat_their_best_member_and_names_the_misses():
    from emo_utils.reports.tables import ensemble_verdict
    row = lambda plan, views, gain: {"ensemble": plan, "test-time views": views, "test_private": 0.6 + gain / 100,  # noqa: E731
                                     "best member": "model_x", "best member test_private": 0.6,
                                     "gain (points)": gain, "beats best member": gain > 0}
    text = ensemble_verdict([row("seed pair, fitted weights", "center", 0.22), row("zoo, fitted weights", "flip", 0.44),
                             row("seed pair, equal weights", "flip", -0.73)])
    assert text.startswith("**2 of 3 plans beat their best member on PrivateTest.**")
    assert "largest gain: zoo, fitted weights (flip), +0.44 points" in text
    assert "Short of it: seed pair, equal weights (flip) -0.73 points." in text


# ---------------------------------------------------------------- the leaderboard

def model_record(name, accuracy, n=3589, views="flip", ensemble=False, params=100_000, converged=True):
    split = {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "auc_micro": 0.9, "auc_macro": 0.9, "ece": 0.03, "n": n}
    prov = {"wall_seconds": 600.0, "device": "cpu (x86_64, 1 threads)", "budget": "cpu", "epochs_run": 30,
            "epochs_asked": 40, "tta": views, "converged": converged, "convergence": "early stopping fired"}
    if ensemble:
        prov["members"] = {"a": 0.5, "b": 0.5}
    return {"model": name, "params": params, "flops": 1,
            "splits": {"test_private": split, "test_public": split, "test_all": {**split, "n": 2 * n}, "val": split},
            "provenance": prov}


def write_records(reports, records):
    for record in records:
        (reports / record["model"]).mkdir(parents=True, exist_ok=True)
        (reports / record["model"] / "metrics.json").write_text(json.dumps(record))


def leaderboard_rows_of(index):
    return [line for line in index.splitlines() if line.startswith("| [")]


def test_leaderboard_names_the_best_sorts_rows_shows_intervals_and_the_ties(tmp_path):
    from emo_utils.core.metrics import accuracy_interval
    reports = tmp_path / "reports"
    write_records(reports, [model_record("small", 0.55, converged=False), model_record("flagship", 0.7219, views="ten_crop"),
                            model_record("ensemble", 0.7305, ensemble=True), model_record("runner_up", 0.7150),
                            model_record("mini_xception", 0.6695)])
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    assert "Best single model: **[flagship](flagship/README.md), 72.19% PrivateTest** (95% interval" in index
    assert "Best ensemble: **[ensemble](ensemble/README.md), 73.05% PrivateTest**" in index
    rows = leaderboard_rows_of(index)
    assert [row.split("]")[0][3:] for row in rows] == ["ensemble", "flagship", "runner_up", "mini_xception", "small"]
    low, high = accuracy_interval(0.7219, 3589)
    assert f"72.19 ({100 * low:.1f}-{100 * high:.1f}) |" in rows[1] and "| ten_crop |" in rows[1]
    assert "| 2 of 2 members, 10 min |" in rows[0]  # an ensemble's members counted, not listed
    assert rows[0].count("**") == 2 and "**" not in "".join(rows[1:]).replace("**no**", "")  # only the best is bold
    assert "| **no** |" in rows[-1] and "| yes |" in rows[1]
    assert all(row.count(" | ") + 1 <= 8 for row in rows)  # at most 8 columns: the table fits a 1000-px page
    # 72.19 and 71.50 are inside each other's interval; 71.50 and 66.95 are not.
    assert "ensemble and flagship, flagship and runner_up" in index and "runner_up and mini_xception" not in index
    assert "0.69 acc, 0.68 F1, 0.91 AUC" in index  # the seed's published figures, named under the table
    assert (reports / "leaderboard.png").read_bytes()[:4] == b"\x89PNG" and "![leaderboard](leaderboard.png)" in index


def test_accuracy_interval_is_wilsons():
    from scipy.stats import binomtest
    from emo_utils.core.metrics import accuracy_interval
    for k, n in ((2591, 3589), (10, 10), (0, 40), (7, 13)):
        expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
        low, high = accuracy_interval(k / n, n)
        assert low == pytest.approx(expected.low, abs=1e-4) and high == pytest.approx(expected.high, abs=1e-4)


def history(val_accs):
    return [{"epoch": i + 1, "val_acc": a, "train_acc": a, "train_loss": 1.0, "val_loss": 1.0, "lr": 0.1}
            for i, a in enumerate(val_accs)]


def test_convergence_is_an_early_stop_or_a_flat_last_ten_epochs():
    from emo_utils.reports.pages import convergence
    assert convergence(history([0.5] * 3), "early stopping: no better val accuracy for 10 epochs")[0] is True
    flat = history([0.4 + 0.01 * i for i in range(20)] + [0.59 + 0.0004 * i for i in range(10)])
    assert convergence(flat, "all 30 planned epochs run") == (
        True, "flat: the last 10 epochs raised the best val accuracy by +0.36 points")
    rising = history([0.4 + 0.01 * i for i in range(30)])
    assert convergence(rising, "all 30 planned epochs run")[0] is False
    assert convergence(history([0.5] * 8), "all 8 planned epochs run") == (
        False, "only 8 epochs run: too few to see a plateau")


def test_an_annealed_schedule_is_not_called_converged_but_a_longer_run_of_its_recipe_is_named():
    from types import SimpleNamespace
    from emo_utils.reports.pages import convergence
    rising = history([0.4 + 0.01 * i for i in range(30)])  # best 0.69, +1.00 point over the last 10
    no_better = SimpleNamespace(history=history([0.4 + 0.006 * i for i in range(45)]))  # best 0.664
    converged, why = convergence(rising, "all 30 planned epochs run", longer=no_better)
    # The verdict reads the run alone (a notebook shows it before any longer run exists): still "no" ...
    assert converged is False and converged == convergence(rising, "all 30 planned epochs run")[0]
    # ... and the reason says what the longer run showed.
    assert why.endswith("as it annealed; the same recipe over 45 epochs reached no better best val accuracy (66.40% "
                        "against 69.00%)")
    better = SimpleNamespace(history=history([0.4 + 0.0075 * i for i in range(45)]))  # best 0.73
    assert "reached a better best val accuracy" in convergence(rising, "all 30 planned epochs run", longer=better)[1]
    shorter = SimpleNamespace(history=history([0.3] * 20))  # fewer epochs: says nothing about more of them
    assert "recipe over" not in convergence(rising, "all 30 planned epochs run", longer=shorter)[1]


def test_a_capped_run_never_converged_and_a_falling_tail_is_not_a_negative_raise():
    from emo_utils.reports.pages import convergence
    # unet_classifier_full: 50 of 150 epochs in a 7-min cap, its best val 28 epochs in: "converged: yes" before.
    falling = history([0.4 + 0.01 * i for i in range(28)] + [0.63 - 0.002 * i for i in range(22)])
    capped, why = convergence(falling, "time budget of 7 min: another epoch would not fit")
    assert capped is False and why == "a time cap stopped it after 50 epochs, before its schedule ended"
    converged, why = convergence(falling, "all 50 planned epochs run")
    assert converged and "-" not in why and why.endswith("(their best was 6.40 points lower)")


@pytest.mark.slow
def test_every_page_shows_one_number_per_model_and_views():
    """The committed reports: each model's metrics.json, README and the ensemble's members agree with the scored
    views kept beside the weights (probabilities re-read, labels from FER2013, skipped without it)."""
    from emo_utils.core.readers import DataError
    from emo_utils.core.data import load_dataset
    from emo_utils.paths import REPORTS_DIR as REPORTS
    from emo_utils.reports.views import SPLIT_TITLES
    from emo_utils.paths import views_cache
    from emo_utils.reports.views import scored_views
    try:
        data = load_dataset()
    except DataError as e:
        pytest.skip(f"needs the real FER2013 zip: {str(e).splitlines()[0]}")
    checked = 0
    for metrics_path in sorted(REPORTS.glob("*/metrics.json")):
        record = json.loads(metrics_path.read_text())
        model_path = metrics_path.parent / "model.pt"
        if record["model"] == "ensemble" or not views_cache(model_path).exists() or "tta" not in record["provenance"]:
            continue  # an ensemble, or a report written before views were scored and kept
        views = record["provenance"]["tta"]
        weights = "raw_model" if record["provenance"].get("weights") == "raw, last epoch" else "model"
        probs = scored_views(model_path, data, weights)[views]
        readme = (metrics_path.parent / "README.md").read_text()
        for split, summary in record["splits"].items():
            accuracy = float((probs[split].argmax(1) == data.split(split)[1]).mean())
            assert summary["accuracy"] == pytest.approx(accuracy, abs=1e-9), (record["model"], split)
            assert f"| {SPLIT_TITLES[split]} | {summary['n']} | {accuracy:.4f} |" in readme, (record["model"], split)
        checked += 1
    assert checked >= 5
    ensemble = json.loads((REPORTS / "ensemble" / "metrics.json").read_text())["provenance"]
    for member, views in ensemble.get("member_views", {}).items():
        if "/" not in member:
            assert json.loads((REPORTS / member / "metrics.json").read_text())["provenance"]["tta"] == views, member


def test_a_rerun_benchmark_replaces_its_section_and_keeps_the_others(tmp_path):
    from emo_utils.reports.pages import replace_section
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Time to accuracy, 2026-11-25\n\nold one\n\n"
                    "## Training throughput, 2026-11-25\n\nthroughput\n\n## Time to accuracy, 2026-11-26\n\nolder two\n")
    replace_section(path, "Time to accuracy", "new result", date="2026-11-27")
    text = path.read_text()
    assert "old one" not in text and "older two" not in text and text.count("## Time to accuracy") == 1
    assert text.index("## Time to accuracy, 2026-11-27\n\nnew result") < text.index("## Training throughput")
    assert text.startswith("# Benchmarks\n\nintro\n") and "throughput" in text
    replace_section(path, "Prediction latency", "fps", date="2026-11-27")
    assert path.read_text().rstrip().endswith("## Prediction latency, 2026-11-27\n\nfps")


def test_a_full_budget_report_is_its_own_row_without_the_seeds_published_figure(tmp_path):
    reports = tmp_path / "reports"
    full = model_record("mini_xception", 0.60)
    write_records(reports, [model_record("mini_xception", 0.6695)])
    (reports / "mini_xception_full").mkdir()
    (reports / "mini_xception_full" / "metrics.json").write_text(json.dumps(full))
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    names = [row.split("]")[0][3:] for row in leaderboard_rows_of(index)]
    assert names == ["mini_xception", "mini_xception_full"]
    assert "[mini_xception_full](mini_xception_full/README.md)" in index
    assert index.count("0.69 acc, 0.68 F1, 0.91 AUC") == 1  # the seed's figures beside its CPU row only


def test_a_run_a_time_cap_cut_short_is_listed_apart_as_capped_not_ranked(tmp_path):
    reports = tmp_path / "reports"
    capped = model_record("model_x", 0.70)  # higher than the finished run, yet not the recipe's result
    capped["provenance"].update(budget="full", device="NVIDIA H100 80GB HBM3", converged=False, epochs_run=24,
                                epochs_asked=10000, stop_reason="time budget of 7 min: another epoch would not fit")
    write_records(reports, [model_record("mini_xception", 0.6695)])
    (reports / "model_x_full").mkdir()
    (reports / "model_x_full" / "metrics.json").write_text(json.dumps(capped))
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    ranked, capped_part = index.split("### Capped runs (not ranked)")
    assert "Best single model: **[mini_xception]" in ranked and "model_x_full" not in ranked
    row = next(line for line in leaderboard_rows_of(capped_part))
    assert "| full: 24 ep, 7 min cap, H100 | **no** |" in row and "10000" not in row


def test_short_device_names_a_cpu_by_family_and_threads_and_a_gpu_by_its_model():
    from emo_utils.reports.tables import short_device
    assert short_device("cpu (Intel(R) Xeon(R) Processor, AVX512-BF16, AMX, 2 threads)") == "Xeon AMX x2"
    assert short_device("cpu (AMD EPYC, AVX512-BF16, no AMX, 1 threads)") == "EPYC x1"
    assert short_device("cpu (x86_64, 2 threads)") == "CPU x2"
    assert short_device("NVIDIA H100 80GB HBM3; cpu (x86_64, 1 threads); cpu (x86_64, 1 threads)") == "H100, CPU x1"


def test_make_reports_runs_a_training_notebook_again_on_its_committed_full_budget_weights(tmp_path):
    from emo_utils.paths import REPORTS_DIR
    from emo_utils.paths import NOTEBOOKS
    from emo_utils.reports.notebooks import full_budget_run
    training, evaluation = NOTEBOOKS / "09_train_vgg_gap.ipynb", NOTEBOOKS / "20_evaluation.ipynb"
    assert full_budget_run(training, tmp_path) is None  # no GPU weights committed
    (tmp_path / "vgg_gap_full").mkdir()
    (tmp_path / "vgg_gap_full" / "model.pt").write_bytes(b"")
    assert full_budget_run(training, tmp_path) == {"budget": "full", "report_dir": str(tmp_path / "vgg_gap_full"),
                                                   "run_dir": "../runs/vgg_gap_full"}  # seen from notebooks/
    if (REPORTS_DIR / "vgg_gap_full" / "model.pt").is_file():  # the repository's own: relative to notebooks/
        assert full_budget_run(training, REPORTS_DIR)["report_dir"] == "../reports/vgg_gap_full"
    assert full_budget_run(evaluation, tmp_path) is None  # not a training notebook


def test_seed_interval_is_students_t_over_the_seeds():
    from scipy import stats
    from emo_utils.core.metrics import seed_interval
    summary = seed_interval([0.70, 0.71, 0.725])
    low, high = stats.t.interval(0.95, 2, loc=np.mean([0.70, 0.71, 0.725]), scale=stats.sem([0.70, 0.71, 0.725]))
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.711667, abs=1e-6)
    assert summary["std"] == pytest.approx(np.std([0.70, 0.71, 0.725], ddof=1))
    assert (summary["low"], summary["high"]) == (pytest.approx(low), pytest.approx(high))


def test_a_prediction_interval_is_wider_than_the_means_by_the_new_seeds_own_spread():
    from emo_utils.core.metrics import prediction_interval, seed_interval
    values = [0.70, 0.71, 0.725]
    low, high = prediction_interval(values)
    mean_low, mean_high = seed_interval(values)["low"], seed_interval(values)["high"]
    assert (low + high) / 2 == pytest.approx(np.mean(values))
    assert (high - low) / (mean_high - mean_low) == pytest.approx(np.sqrt(1 + len(values)))  # sqrt(1 + 1/n) / sqrt(1/n)
    with pytest.raises(ValueError, match="needs 2 seeds, got 1"):
        prediction_interval([0.7])


def test_a_difference_of_seed_means_has_welchs_interval_around_it():
    from emo_utils.core.metrics import mean_difference
    ours, base = [0.72, 0.707, 0.715], [0.694, 0.71, 0.705]
    diff = mean_difference(ours, base)
    # Welch by hand: the standard error of each mean, the Welch-Satterthwaite degrees of freedom, Student's t.
    var_a, var_b = np.var(ours, ddof=1) / 3, np.var(base, ddof=1) / 3
    dof = (var_a + var_b) ** 2 / (var_a ** 2 / 2 + var_b ** 2 / 2)
    half = stats_t_quantile(dof) * np.sqrt(var_a + var_b)
    assert diff["difference"] == pytest.approx(np.mean(ours) - np.mean(base))
    assert (diff["low"], diff["high"]) == (pytest.approx(diff["difference"] - half), pytest.approx(diff["difference"] + half))
    swapped = mean_difference(base, ours)  # the other way round: the same interval, negated
    assert (swapped["low"], swapped["high"]) == (pytest.approx(-diff["high"]), pytest.approx(-diff["low"]))
    with pytest.raises(ValueError, match="needs 2 seeds of each, got 1 and 3"):
        mean_difference([0.72], base)


def stats_t_quantile(dof):
    from scipy import stats
    return stats.t.ppf(0.975, dof)


def test_trained_models_lists_further_seeds_with_the_ablations_and_spots_a_refit(tmp_path):
    import torch
    from emo_utils.core.checkpoint import CHECKPOINT_FORMAT, trained_on_val
    from emo_utils.paths import trained_models
    for path, refit in (("vgg_gap_full/model.pt", False), ("vgg_gap_full/seeds/2/model.pt", False),
                        ("vgg_gap_full/ablations/refit_on_train_val/model.pt", True),
                        ("vgg_gap_full/ablations/refit_on_train_val/seeds/1/model.pt", True)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": CHECKPOINT_FORMAT, "config": {"refit": refit}}, tmp_path / path)
    assert list(trained_models(tmp_path)) == ["vgg_gap_full"]
    found = trained_models(tmp_path, ablations=True)
    assert list(found) == ["vgg_gap_full", "vgg_gap_full/refit_on_train_val", "vgg_gap_full/seed2",
                           "vgg_gap_full/refit_on_train_val/seed1"]
    assert [name for name, path in found.items() if trained_on_val(path)] == ["vgg_gap_full/refit_on_train_val",
                                                                               "vgg_gap_full/refit_on_train_val/seed1"]


def test_leaderboard_and_model_readme_show_the_deduplicated_headline_beside_the_raw_one(tmp_path):
    from emo_utils.core.metrics import accuracy_interval
    from emo_utils.reports.pages import clean_lines
    reports = tmp_path / "reports"
    records = [model_record("flagship", 0.72, views="ten_crop"), model_record("runner_up", 0.71),
               model_record("old_report", 0.60)]  # written before the clean splits: no clean number, no error
    for record, clean_accuracy in zip(records[:2], (0.68, 0.69)):  # the clean split swaps the first two
        record["splits"]["test_private_clean"] = {**record["splits"]["test_private"], "accuracy": clean_accuracy,
                                                  "n": 3145}
    write_records(reports, records)
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    rows = leaderboard_rows_of(index)
    assert f"· {100 * 0.68:.2f} |" in rows[0] and "· dedup. |" in index  # its interval is on the model's page
    assert "deduplicated** (dedup., after the ·): the 3,145 faces" in index
    assert "·" not in rows[2]  # the report without a clean split shows its raw number alone
    assert all(row.count(" | ") + 1 <= 8 for row in rows)
    assert "3,145 faces" in index and "flagship 2 (raw 1), runner_up 1 (raw 2)" in index
    lines = clean_lines(records[0]["splits"], "test_private")  # the model's page: the interval the table leaves out
    low, high = accuracy_interval(0.68, 3145)
    assert "PrivateTest, deduplicated accuracy 68.00%" in lines[0] and f"{low:.1%} to {high:.1%}" in lines[0]
    assert "-4.00 points from the raw 72.00%" in lines[0]
    assert clean_lines(records[2]["splits"], "test_private") == []
    assert "Only 2 of 3 reports have it yet" in index


def test_the_front_page_results_table_is_written_between_its_markers_from_the_reports(tmp_path):
    from emo_utils.reports.leaderboard import RESULTS_END, RESULTS_START
    reports = tmp_path / "reports"
    flagship = model_record("vgg_gap", 0.7219, views="ten_crop")
    flagship["provenance"]["seed"] = 0
    write_records(reports, [flagship, model_record("ensemble", 0.7322, ensemble=True)])
    seeds = [{"run": f"seed {s}", "epochs": 82, "train min": 60.0, "device": "cpu (x86_64, 2 threads)",
              "test_private": acc} for s, acc in enumerate((0.7219, 0.7069, 0.7147))]
    (reports / "vgg_gap" / "ablations.json").write_text(json.dumps({"seeds": {"this recipe": seeds}}))
    (reports / "benchmarks.md").write_text(
        "# Benchmarks\n\n## Prediction latency, 2026-11-27\n\n`cmd` on x86_64 CPU, 2 threads (below, 1 and 2), torch "
        "2.14.1.\n\n| detector | onnxruntime |\n|---|---:|\n| video defaults (every 2) | 53.0 |\n\n"
        "| video setting | frames/s idle | frames/s, one core busy | faces boxed |\n|---|---:|---:|---:|\n"
        "| hog, every 3 | 20.1 | 18.0 | 0.833 |\n| **mtcnn low, every 8** | **33.5** | **31.2** | **0.956** |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Front\n\n{RESULTS_START}\nold table\n{RESULTS_END}\n\nafter\n")
    write_index(reports, tmp_path / "no_notebooks")
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{RESULTS_END}\n\nafter\n")
    table = text.split(RESULTS_START)[1].split(RESULTS_END)[0]
    assert "| best single model, [vgg_gap](reports/vgg_gap/README.md) | 72.19% PrivateTest (95% CI " in table
    assert "seed 0" in table and "| best ensemble, [ensemble](reports/ensemble/README.md) | 73.22% PrivateTest (" in table
    assert "| 71.45% PrivateTest (" in table and "mean of 3 seeds" in table  # the speedrun's seeds, named as a mean
    assert "| 31.2 frames/s with one core busy (33.5 idle) |" in table  # the default's row, the one in bold
    assert "(mtcnn low, every 8, faces boxed 0.956), x86_64 CPU, 1 thread |" in table  # the CPU, the table's threads
    assert "deduplicated" not in table and "photos" not in table  # rows only for what the reports hold


def test_the_front_page_gives_the_deduplicated_test_and_the_photo_pipeline_beside_the_best_model(tmp_path):
    from emo_utils.reports.leaderboard import front_page_results
    reports = tmp_path / "reports"
    flagship = model_record("vgg_gap", 0.7219, views="ten_crop")
    flagship["provenance"]["seed"] = 0
    flagship["splits"]["test_private_clean"] = {**flagship["splits"]["test_private"], "accuracy": 0.6941, "n": 2962}
    write_records(reports, [flagship])
    (reports / "benchmarks.md").write_text(
        "# Benchmarks\n\n## Faces in frames: the whole pipeline, 2026-12-06\n\n| detector setting | model | align | "
        "pipeline acc. | crop acc. | recall |\n|---|---|---|---:|---:|---:|\n"
        "| haar 1.1, >= 48 px, whole frame | flagship (vgg_gap) | off | 0.391 | 0.720 | 0.600 |\n"
        "| **hog, up 1 (photo, video)** | **Mini-Xception** | **on** | **0.471** | **0.650** | **0.725** |\n"
        "| **hog, up 1 (photo, video)** | **flagship (vgg_gap)** | **on** | **0.512** | **0.720** | **0.725** |\n")
    table = front_page_results(reports)
    assert ("| the same, test faces never seen in training | 69.41% PrivateTest, deduplicated (95% CI "
            in table) and "the 2,962 of its faces" in table
    assert ("| photos, [detect + classify](reports/benchmarks.md) | 51.2% of faces right (on their own crops: "
            "72.0%) | flagship (vgg_gap), emo-predict's photo defaults (hog, up 1, align on)" in table)
    # emo-predict's default model is the one with the best pipeline accuracy: the front page names that one
    (reports / "benchmarks.md").write_text((reports / "benchmarks.md").read_text().replace("0.471", "0.530"))
    assert "| 53.0% of faces right (on their own crops: 65.0%) | Mini-Xception, emo-predict" in front_page_results(reports)


def test_the_commit_is_clean_while_make_reports_rewrites_reports_and_the_front_page(tmp_path):
    import subprocess
    from emo_utils.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "reports").mkdir()
    for name in ("README.md", "code.py", "reports/index.md"):
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "first")
    (tmp_path / "README.md").write_text("results table rewritten\n")
    (tmp_path / "reports" / "index.md").write_text("regenerated\n")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+uncommitted")
    (tmp_path / "code.py").write_text("v2\n")
    assert git_commit(tmp_path) == clean + "+uncommitted"
