"""Pages that agree, for every dataset: each leaderboard ranks only its own dataset's finished runs (never a trial),
its wording and intervals come from its own split's size, and one split is called one name everywhere."""
import json

import numpy as np

from emo_utils.core.metrics import accuracy_interval
from emo_utils.reports.leaderboard import front_page_results, write_index
from test_reports import leaderboard_rows_of, model_record, write_records


def small_record(name, accuracy, n=14, dataset="my_faces"):
    """A report of a dataset with only a test folder: 14 faces, as the issue's 49-face dataset had."""
    record = model_record(name, accuracy, n=n)
    record["dataset"] = dataset
    record["splits"]["test_all"]["macro_f1"] = accuracy
    record["splits"] = {"test_all": record["splits"]["test_all"] | {"n": n}, "val": record["splits"]["val"]}
    return record


def test_each_dataset_has_its_own_leaderboard_and_a_trial_is_never_ranked(tmp_path):
    reports = tmp_path / "reports"
    write_records(reports, [model_record("vgg_gap", 0.72), model_record("mini_xception", 0.68)])
    # The accident: another dataset's run published in a top-level folder, 100% on 14 faces.
    stray = small_record("mini_xception", 1.0)
    (reports / "mini_xception_full").mkdir()
    (reports / "mini_xception_full" / "metrics.json").write_text(json.dumps(stray))
    (reports / "my_faces" / "cnn3").mkdir(parents=True)
    (reports / "my_faces" / "cnn3" / "metrics.json").write_text(json.dumps(small_record("cnn3", 0.0)))
    trial = model_record("residual_gap", 0.9) | {"trial": True}  # a 2-minute trial that happened to score high
    write_records(reports, [trial])
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    fer, others = index.split("## Leaderboard (my_faces)")
    assert [row.split("]")[0][3:] for row in leaderboard_rows_of(fer)] == ["vgg_gap", "mini_xception"]
    assert "Best single model: **[vgg_gap]" in fer and "100.00" not in fer
    assert "Trial runs, never ranked (a subset and a short schedule): residual_gap." in fer
    assert [row.split("]")[0][3:] for row in leaderboard_rows_of(others)] == ["mini_xception_full", "cnn3"]
    assert "[cnn3](my_faces/cnn3/README.md)" in others and "whole test |" not in others  # test_all is the headline
    assert "residual_gap" not in others
    front = front_page_results(reports)
    assert "vgg_gap" in front and "mini_xception_full" not in front and "residual_gap" not in front


def test_a_small_datasets_interval_and_wording_come_from_its_own_size(tmp_path):
    reports = tmp_path / "reports"
    (reports / "my_faces" / "cnn3").mkdir(parents=True)
    (reports / "my_faces" / "cnn3" / "metrics.json").write_text(json.dumps(small_record("cnn3", 0.0)))
    (reports / "my_faces" / "tiny").mkdir(parents=True)
    (reports / "my_faces" / "tiny" / "metrics.json").write_text(json.dumps(small_record("tiny", 0.5)))
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    section = index.split("## Leaderboard (my_faces)")[1]
    low, high = accuracy_interval(0.5, 14)
    assert f"about +-{100 * (high - low) / 2:.1f} points on 14 faces" in section and "+-1.5" not in section
    assert "-0.0" not in index and "0.00 (0.0-21.5)" in section  # Wilson's bounds clamped at 0, never "-0.0"
    assert "notebook 01" not in index


def test_wilson_bounds_stay_in_0_1_and_never_print_as_minus_zero():
    for n in (1, 3, 7, 14, 49, 3589):
        for right in {0, 1, n // 2, n - 1, n}:
            low, high = accuracy_interval(right / n, n)
            assert 0.0 <= low <= right / n <= high <= 1.0
            assert not f"{low:.1%}".startswith("-") and not f"{100 * low:.1f}".startswith("-")
    assert np.copysign(1.0, accuracy_interval(0.0, 14)[0]) == 1.0


def test_a_small_datasets_model_page_and_leaderboard_fit_the_page_and_speak_of_its_own_splits(tmp_path):
    from conftest import make_fer_folder
    from emo_utils.core import datasets
    from emo_utils.core.config import TrainConfig
    from emo_utils.core.train import train
    from emo_utils.provenance import provenance
    from emo_utils.reports.pages import write_model_report
    from emo_utils.reports.views import evaluate
    from test_report_readability import TABLE_BUDGET, markdown_tables, table_width
    classes = ("calm", "frown", "smile", "surprised", "disgusted", "afraid", "neutral")  # 49 faces, as in the issue
    faces = make_fer_folder(tmp_path, name="my_faces", classes=classes, n_train=5, n_public=0, n_private=0, n_plain=2)
    data = datasets.load_named("my_faces", faces)
    report_dir = tmp_path / "reports" / "my_faces" / "mini_xception_full"
    report_dir.mkdir(parents=True)
    config = TrainConfig(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=64, epochs=2,
                         augment="none", dataset="my_faces")
    result = train(config, data, tmp_path / "run", model_path=report_dir / "model.pt", progress=False)
    evaluation = evaluate(report_dir / "model.pt", data, device="cpu")
    readme = write_model_report(report_dir, "Tiny", result, evaluation, provenance(0, data.sha256, result.meta, "full"),
                                {}).read_text()
    index = write_index(tmp_path / "reports", tmp_path / "no_notebooks").read_text()
    for page, text in (("README", readme), ("index", index)):
        for table in markdown_tables(text):
            assert table_width(table) <= TABLE_BUDGET, (page, table[0])
        for fer2013_only in ("+-1.5", "notebook 01", "-0.0", "PrivateTest", "7,178", "10% of train"):
            assert fer2013_only not in text.split("## Leaderboard (my_faces)")[-1], (page, fer2013_only)
    low, high = accuracy_interval(evaluation.metrics["test_all"]["accuracy"], 14)
    assert f"about +-{100 * (high - low) / 2:.1f} points on 14 faces" in index


def test_a_split_has_one_name_on_tables_and_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from emo_utils.core.metrics import summary_frame
    from emo_utils.reports.plots import plot_class_counts
    from emo_utils.reports.views import view_table_frame
    counts = {"train": np.array([5, 6]), "val": np.array([1, 1]), "test_private": np.array([2, 2])}
    figure = plot_class_counts(counts, ["calm", "smile"])
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    plt.close(figure)
    assert legend == ["Train", "Validation", "PrivateTest"]
    metrics = {"test_private": {"accuracy": 0.5, "macro_f1": 0.4, "auc_micro": 0.6, "auc_macro": 0.6, "ece": 0.1, "n": 4}}
    assert list(summary_frame(metrics).index) == ["PrivateTest"]
    table = view_table_frame([{"test-time views": "center", "val": 0.5, "test_private": 0.4, "test_public": 0.3}])
    assert list(table.columns) == ["Validation", "PrivateTest", "PublicTest"]


def test_every_notebook_is_titled_with_its_number():
    import nbformat
    from emo_utils.paths import NOTEBOOKS
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        assert first.source.startswith(f"# {path.name[:2]} · "), (path.name, first.source.splitlines()[0])


def test_a_capped_run_is_not_converged_on_the_leaderboard_whatever_an_older_report_says(tmp_path):
    reports = tmp_path / "reports"
    capped = model_record("unet_classifier", 0.46)  # as reports/unet_classifier_full said before: "yes"
    capped["provenance"].update(budget="full", converged=True, stop_reason="time budget of 7 min: another epoch "
                                "would not fit", convergence="flat: the last 10 epochs raised the best val accuracy "
                                "by -3.69 points")
    write_records(reports, [model_record("mini_xception", 0.68)])
    (reports / "unet_classifier_full").mkdir()
    (reports / "unet_classifier_full" / "metrics.json").write_text(json.dumps(capped))
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    row = next(r for r in leaderboard_rows_of(index) if "unet_classifier_full" in r)
    assert row.endswith("| **no** |")


def test_a_device_column_has_one_style_short_names_and_one_mark_for_none():
    from emo_utils.reports.tables import markdown_table
    table = markdown_table([{"run": "a", "device": "-"}, {"run": "b", "device": "cpu (AMD EPYC, AVX512-BF16, 1 threads)"},
                            {"run": "c", "device": "NVIDIA H100 80GB HBM3"}, {"run": "d", "device": ""}])
    cells = [line.split(" | ")[1].rstrip(" |") for line in table.splitlines()[2:]]
    assert cells == ["—", "EPYC x1", "H100", "—"]


def test_a_model_right_on_every_face_gets_its_page_written():
    from emo_utils.core.metrics import compute_metrics
    from emo_utils.reports.pages import interpretation
    labels = np.array([0, 0, 1, 1, 2, 2, 0])
    probs = np.eye(3)[labels] * 0.9 + 0.1 / 3  # right on all 7 faces: the IndexError in pages.py
    metrics = {"test_all": compute_metrics(probs, labels, ["calm", "frown", "smile"])}
    notes = interpretation("tiny", metrics, [], "test_all", "my_faces")
    assert "No face is taken for another class." in notes and "of 7 faces" in notes[0]
    probs[0] = np.eye(3)[1]  # one calm face taken for frown
    notes = interpretation("tiny", {"test_all": compute_metrics(probs, labels, ["calm", "frown", "smile"])}, [],
                           "test_all", "my_faces")
    assert "The most frequent confusion is calm taken for frown: 1 face, 33.3% of all calm faces." in notes
