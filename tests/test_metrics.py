"""metrics.py agrees with scikit-learn and with hand-worked examples; plots.py draws and saves figures."""
import json

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere, so the tests never need a display

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, log_loss,
                             precision_recall_fscore_support, roc_auc_score)

from emo_utils.core import metrics
from emo_utils.reports import plots

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def random_example(n=600, num_classes=7, seed=0):
    """Noisy logits with some signal on the true class, so every metric is between chance and perfect."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), labels] += 1.5
    return softmax(logits), labels


def labels_drawn_from(probs, rng):
    """One label per row, sampled from that row's probabilities: a perfectly calibrated classifier."""
    cumulative = probs.cumsum(axis=1)
    u = rng.random((len(probs), 1))
    return np.minimum((u > cumulative).sum(axis=1), probs.shape[1] - 1)


# --- compute_metrics against scikit-learn ---

def test_matches_sklearn_on_random_example():
    probs, labels = random_example()
    preds = probs.argmax(axis=1)
    m = metrics.compute_metrics(probs, labels, CLASSES)
    one_hot = np.eye(len(CLASSES))[labels]

    assert m["n"] == len(labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert m["auc_macro"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert m["auc_micro"] == pytest.approx(roc_auc_score(one_hot, probs, average="micro"))
    assert m["nll"] == pytest.approx(log_loss(labels, probs, labels=range(len(CLASSES))))
    assert m["confusion"] == confusion_matrix(labels, preds).tolist()
    # Sanity: there is signal, but it is not perfect.
    assert 1 / len(CLASSES) < m["accuracy"] < 0.95 and 0.5 < m["auc_macro"] < 1

    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, zero_division=0)
    per_class_auc = roc_auc_score(one_hot, probs, average=None)
    for c, name in enumerate(CLASSES):
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(precision[c])
        assert row["recall"] == pytest.approx(recall[c])
        assert row["f1"] == pytest.approx(f1[c])
        assert row["support"] == support[c]
        assert row["auc"] == pytest.approx(per_class_auc[c])

    normalized = np.array(m["confusion_normalized"])
    assert np.allclose(normalized.sum(axis=1), 1.0)
    assert np.allclose(np.diag(normalized), recall)


def test_result_is_plain_json():
    probs, labels = random_example(n=100)
    m = metrics.compute_metrics(probs, labels, CLASSES)
    assert json.loads(json.dumps(m)) == m  # only built-in types, no numpy scalars or arrays


def test_summary_keys():
    probs, labels = random_example(n=100)
    m = metrics.compute_metrics(probs, labels, CLASSES)
    s = metrics.summary(m)
    assert list(s) == ["accuracy", "macro_f1", "auc_micro", "auc_macro", "ece", "n"]
    assert all(s[k] == m[k] for k in s)


# --- hand-worked examples ---

def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 1, 0])
    probs = np.full((6, 3), 0.05)
    probs[np.arange(6), labels] = 0.9
    m = metrics.compute_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["auc_micro"] == 1.0 and m["auc_macro"] == 1.0
    assert m["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    # Every sample is correct at confidence 0.9: one bin, accuracy 1, gap 0.1.
    assert m["ece"] == pytest.approx(0.1)
    assert m["nll"] == pytest.approx(-np.log(0.9))


def test_ece_and_nll_by_hand():
    # sample  probs        label  confidence  predicted  correct  bin (width 1/15, (lo, hi])
    #   0     [0.9, 0.1]   0      0.9         0          1        conf*15 = 13.5  -> bin 13
    #   1     [0.65, 0.35] 1      0.65        0          0        conf*15 = 9.75  -> bin 9
    #   2     [0.3, 0.7]   1      0.7         1          1        conf*15 = 10.5  -> bin 10
    # Each sample has a bin to itself, so ECE = mean |correct - confidence|
    #   = (|1 - 0.9| + |0 - 0.65| + |1 - 0.7|) / 3 = (0.1 + 0.65 + 0.3) / 3 = 0.35.
    # NLL = -(ln 0.9 + ln 0.35 + ln 0.7) / 3.
    probs = np.array([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    m = metrics.compute_metrics(probs, labels, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["ece"] == pytest.approx(0.35)
    assert m["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.35) + np.log(0.7)) / 3)
    assert m["confusion"] == [[1, 0], [1, 1]]
    assert m["confusion_normalized"] == [[1.0, 0.0], [0.5, 0.5]]

    r = metrics.reliability(probs, labels)
    assert r["ece"] == m["ece"]
    assert r["bin_count"].tolist() == [0] * 9 + [1, 1, 0, 0, 1, 0]
    assert r["bin_accuracy"][[9, 10, 13]].tolist() == [0.0, 1.0, 1.0]
    assert r["bin_confidence"][[9, 10, 13]] == pytest.approx([0.65, 0.7, 0.9])
    assert np.isnan(r["bin_accuracy"][0])  # empty bins are NaN, not a made-up 0


def test_ece_shared_bin_by_hand():
    # Four samples, all at confidence 0.8, two of them right: one bin, ECE = |0.5 - 0.8| = 0.3.
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.2, 0.8], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 0])
    assert metrics.compute_metrics(probs, labels, ["a", "b"])["ece"] == pytest.approx(0.3)


# --- calibration on synthetic data ---

def test_ece_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(50_000, 7))
    probs = softmax(logits)
    labels = labels_drawn_from(probs, rng)
    calibrated = metrics.compute_metrics(probs, labels, CLASSES)["ece"]
    # Same labels, logits sharpened by temperature 0.25: confidence rises, accuracy does not.
    overconfident = metrics.compute_metrics(softmax(logits / 0.25), labels, CLASSES)["ece"]
    assert calibrated < 0.02
    assert overconfident > 0.15


# --- missing classes ---

def test_class_absent_from_labels():
    probs, labels = random_example(n=300, num_classes=4, seed=3)
    labels = np.where(labels == 2, 0, labels)  # class 2 never occurs, but the model still predicts it
    names = ["a", "b", "c", "d"]
    m = metrics.compute_metrics(probs, labels, names)
    assert m["per_class"]["c"]["auc"] is None
    assert m["per_class"]["c"]["support"] == 0 and m["per_class"]["c"]["recall"] == 0.0
    present = [m["per_class"][n]["auc"] for n in ("a", "b", "d")]
    assert m["auc_macro"] == pytest.approx(np.mean(present))
    assert m["confusion_normalized"][2] == [0.0] * 4
    assert len(m["confusion"]) == 4 and sum(m["confusion"][2]) == 0
    json.dumps(m)  # None becomes null

    curves = metrics.roc_curves(probs, labels, 4)
    assert set(curves) == {0, 1, 3, "micro", "macro"}
    assert curves[0][2] == pytest.approx(m["per_class"]["a"]["auc"])
    assert curves["micro"][2] == pytest.approx(m["auc_micro"])


def test_roc_macro_curve_is_the_interpolated_mean():
    probs, labels = random_example(n=400, num_classes=3, seed=5)
    curves = metrics.roc_curves(probs, labels, 3)
    fpr, tpr, area = curves["macro"]
    assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == pytest.approx(1)
    assert np.all(np.diff(fpr) > 0)
    expected = np.mean([np.interp(fpr, curves[c][0], curves[c][1]) for c in range(3)], axis=0)
    assert np.allclose(tpr, expected)
    # Interpolation changes the area a little, not a lot.
    assert area == pytest.approx(np.mean([curves[c][2] for c in range(3)]), abs=0.01)


# --- most confused pairs ---

def test_most_confused_pairs_order():
    confusion = np.array([[50, 3, 7],
                          [10, 40, 0],
                          [7, 1, 20]])
    pairs = metrics.most_confused_pairs(confusion, ["x", "y", "z"], k=4)
    assert pairs == [("y", "x", 10, pytest.approx(10 / 50)),
                     ("x", "z", 7, pytest.approx(7 / 60)),   # ties (7 and 7) go to the lower true index
                     ("z", "x", 7, pytest.approx(7 / 28)),
                     ("x", "y", 3, pytest.approx(3 / 60))]
    # The diagonal and empty cells are never reported, so asking for more gives only the 5 real ones.
    assert len(metrics.most_confused_pairs(confusion, ["x", "y", "z"], k=100)) == 5


# --- plots ---

@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    # disgust and neutral have fewer images than per_class=8, so their rows end in blank cells.
    labels = np.repeat(np.arange(len(CLASSES)), [10, 3, 10, 10, 10, 10, 5])
    images = rng.integers(0, 256, size=(len(labels), 48, 48), dtype=np.uint8)
    return images, labels


def history_rows():
    val_acc = [0.30, 0.45, 0.52, 0.50, 0.52]
    return [dict(epoch=e + 1, train_loss=1.8 - 0.2 * e, val_loss=1.7 - 0.1 * e, train_acc=0.3 + 0.1 * e,
                 val_acc=a, lr=1e-3 * 0.5 ** e) for e, a in enumerate(val_acc)]


def figures(faces):
    """(name, figure, expected number of axes) for every plot function."""
    images, labels = faces
    probs, fake_labels = random_example(n=300)
    counts = {"train": np.bincount(labels, minlength=7), "val": np.bincount(labels[::3], minlength=7)}
    m = metrics.compute_metrics(probs, fake_labels, CLASSES)
    f1 = {"cnn": {c: v["f1"] for c, v in m["per_class"].items()}, "vit": {c: 0.5 for c in CLASSES}}
    return [
        ("class_counts", plots.plot_class_counts(counts, CLASSES), 1),
        ("sample_grid", plots.plot_sample_grid(images, labels, CLASSES, per_class=8), 7 * 8),
        ("mean_faces", plots.plot_mean_faces(images, labels, CLASSES), 7 + 1),
        ("history", plots.plot_history(history_rows()), 3),
        ("confusion", plots.plot_confusion(m["confusion"], CLASSES), 1),
        ("confusion_counts", plots.plot_confusion(m["confusion"], CLASSES, normalize=False, title="t"), 1),
        ("roc", plots.plot_roc(probs, fake_labels, CLASSES), 1),
        ("reliability", plots.plot_reliability(probs, fake_labels), 2),
        ("f1_heatmap", plots.plot_per_class_f1_heatmap(f1), 1),
        ("schedules", plots.plot_schedules({"short": history_rows()[:3], "long": history_rows()}), 1),
    ]


def test_the_schedule_figure_draws_each_runs_val_and_train_curves_and_names_its_best():
    fig = plots.plot_schedules({"43 epochs": history_rows()[:3], "82 epochs": history_rows()}, "vgg_gap")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {"43 epochs: val (best 0.520)", "43 epochs: train", "82 epochs: val (best 0.520)",
                          "82 epochs: train"}
    assert len(lines["82 epochs: train"].get_xdata()) == 5 and lines["82 epochs: train"].get_linestyle() == ":"
    assert lines["43 epochs: val (best 0.520)"].get_color() != lines["82 epochs: val (best 0.520)"].get_color()
    assert fig.axes[0].get_title() == "vgg_gap"
    plt.close(fig)


@pytest.mark.slow
def test_plots_return_figures_and_save(faces, tmp_path):
    for name, fig, n_axes in figures(faces):
        assert isinstance(fig, Figure), name
        assert len(fig.axes) == n_axes, name
        path = plots.save_figure(fig, tmp_path / "nested" / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 1000, name
        assert not plt.fignum_exists(fig.number), name  # save_figure closed it


def test_a_one_epoch_history_draws_markers_and_titles_name_the_model():
    fig = plots.plot_history(history_rows()[:1], "Mini-Xception")
    val_line = next(line for line in fig.axes[0].lines if line.get_label() == "validation")
    assert val_line.get_marker() == "o" and len(val_line.get_xdata()) == 1
    assert fig._suptitle.get_text() == "Mini-Xception: learning curves"
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3 and all(ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


def test_plot_details(faces):
    fig = plots.plot_history(history_rows())
    # The best epoch is the first to reach the top val_acc (epoch 3), as train.py keeps best.pt.
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == 3
    assert fig.axes[2].get_yscale() == "log"
    plt.close(fig)

    probs, labels = random_example(n=300)
    fig = plots.plot_reliability(probs, labels)
    assert f"{metrics.reliability(probs, labels)['ece']:.3f}" in fig.axes[0].get_title()
    plt.close(fig)

    fig = plots.plot_roc(probs, labels, CLASSES)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == len(CLASSES) + 2 and legend[-1].startswith("macro")
    plt.close(fig)

    images, labels = faces
    fig = plots.plot_sample_grid(images, labels, CLASSES, per_class=8)
    assert [fig.axes[r * 8].get_ylabel() for r in range(7)] == CLASSES
    assert len(fig.axes[1 * 8 + 3].images) == 0  # disgust has 3 images: the 4th cell is blank
    plt.close(fig)

    fig = plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"])
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0%", "100%", "25%", "75%"]
    plt.close(fig)
