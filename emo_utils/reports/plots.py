"""Figures for the data and the results. Every function returns a matplotlib Figure and shows nothing.

No backend is chosen here, so a notebook keeps its inline backend; scripts can call save_figure,
which writes a PNG and closes the figure so long runs do not pile up open figures.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from emo_utils.core import metrics
from emo_utils.core.data import SPLIT_TITLES


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Write fig as PNG to path (making its folders), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_class_counts(counts: dict[str, np.ndarray], class_names):
    """Grouped bars: images per class, one colour per split. counts maps split -> per-class counts."""
    rows = [{"split": SPLIT_TITLES.get(split, split), "class": name, "count": int(n)}
            for split, per_class in counts.items() for name, n in zip(class_names, per_class)]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(class_names)), 4))
    sns.barplot(data=pd.DataFrame(rows), x="class", y="count", hue="split", order=list(class_names), ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set(xlabel="", ylabel="images", title="Images per class and split")
    ax.margins(y=0.1)  # room for the count labels above the tallest bar
    return fig


def plot_sample_grid(images, labels, class_names, per_class: int = 8, seed: int = 0):
    """A grid of random examples: one row per class, per_class images in each (blank if fewer exist)."""
    images, labels = np.asarray(images), np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(class_names), per_class, squeeze=False,
                             figsize=(1.1 * per_class + 1, 1.1 * len(class_names)))
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col, ax in enumerate(axes[row]):
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap="gray", vmin=0, vmax=255)
            # Ticks off but the axis kept on, so the row label (a ylabel) still shows.
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def plot_mean_faces(images, labels, class_names):
    """The pixel-wise mean face of each class, then the mean over all images in the last panel."""
    images, labels = np.asarray(images, dtype=np.float64), np.asarray(labels)
    panels = [(name, images[labels == c]) for c, name in enumerate(class_names)] + [("all", images)]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * len(panels), 2.0), squeeze=False)
    for ax, (name, members) in zip(axes[0], panels):
        if len(members):
            # Each panel is stretched to its own range: a mean face spans few grey levels.
            ax.imshow(members.mean(axis=0), cmap="gray")
        ax.set_title(f"{name}\n(n={len(members)})", fontsize=9)
        ax.axis("off")
    return fig


def plot_history(history: list[dict], title: str = ""):
    """Loss, accuracy and learning rate per epoch; a dashed line marks the best validation accuracy. Two rows
    of panels, so the curves stay legible when a README shows the figure 740 px wide; markers when there are
    few epochs (a run of one epoch is a dot, not an empty axis)."""
    epochs = [row["epoch"] for row in history]
    best = history[int(np.argmax([row["val_acc"] for row in history]))]  # first epoch at the max, as train.py keeps
    marker = "o" if len(history) <= 20 else None
    fig = plt.figure(figsize=(9, 6.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.4, 1])
    acc_ax, loss_ax, lr_ax = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    for ax, key, name in ((acc_ax, "acc", "accuracy"), (loss_ax, "loss", "loss")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker=marker, label="train (augmented)")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker=marker, label="validation")
        ax.set(xlabel="epoch", ylabel=name, title=name.capitalize())
    lr_ax.plot(epochs, [row["lr"] for row in history], color="tab:green", marker=marker)
    lr_ax.set(title="Learning rate", xlabel="epoch", ylabel="learning rate", yscale="log")
    for ax in (acc_ax, loss_ax, lr_ax):
        ax.axvline(best["epoch"], color="gray", linestyle="--", linewidth=1,
                   label=f"best val accuracy {best['val_acc']:.3f} (epoch {best['epoch']})")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=9, loc="lower right"), loss_ax.legend(fontsize=8)
    fig.suptitle(f"{title}: learning curves" if title else "Learning curves")
    fig.tight_layout()
    return fig


def plot_schedules(histories: dict[str, list[dict]], title: str = ""):
    """One recipe at several schedule lengths: validation accuracy (solid) and training accuracy on augmented
    faces (dotted) per epoch, one colour per run; where the solid line of a longer run ends lower, the extra
    epochs overfit (the gap to the dotted line grows) rather than learn."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for (name, history), colour in zip(histories.items(), plt.cm.tab10.colors):
        epochs = [row["epoch"] for row in history]
        best = max(row["val_acc"] for row in history)
        ax.plot(epochs, [row["val_acc"] for row in history], color=colour, label=f"{name}: val (best {best:.3f})")
        ax.plot(epochs, [row["train_acc"] for row in history], color=colour, linestyle=":", linewidth=1,
                label=f"{name}: train")
    ax.set(xlabel="epoch", ylabel="accuracy (centre crop)", title=title or "Schedule length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def plot_confusion(confusion, class_names, normalize: bool = True, title=None):
    """Annotated confusion heatmap, rows = true class. normalize divides each row by its support."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if normalize:
        totals = confusion.sum(axis=1, keepdims=True)
        confusion = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    size = max(5, 0.8 * len(class_names) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    # No colorbar: the annotations carry the numbers, and one axis keeps the layout simple.
    sns.heatmap(confusion, annot=True, fmt=".0%" if normalize else ".0f", cmap="Blues", cbar=False,
                vmin=0, vmax=1 if normalize else None, square=True,
                xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set(xlabel="predicted", ylabel="true",
           title=title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"))
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_roc(probs, labels, class_names, title: str = "ROC, one vs rest (AUC)"):
    """One-vs-rest ROC curve per class, plus micro and macro averages; AUCs in the legend."""
    curves = metrics.roc_curves(probs, labels, len(class_names))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for c, name in enumerate(class_names):
        if c in curves:  # a class without both outcomes in this split has no curve
            fpr, tpr, area = curves[c]
            ax.plot(fpr, tpr, linewidth=1, label=f"{name} ({area:.3f})")
    for key, style in (("micro", ":"), ("macro", "--")):
        if key in curves:
            fpr, tpr, area = curves[key]
            ax.plot(fpr, tpr, color="black", linestyle=style, linewidth=2, label=f"{key} avg ({area:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_reliability(probs, labels, n_bins: int = 15, title: str = ""):
    """Reliability diagram: accuracy per confidence bin against the diagonal, and the bin counts beneath."""
    stats = metrics.reliability(probs, labels, n_bins)
    edges, width = stats["bin_edges"], 1.0 / n_bins
    fig, (acc_ax, count_ax) = plt.subplots(2, 1, sharex=True, figsize=(5, 6),
                                           gridspec_kw={"height_ratios": [3, 1]})
    # Empty bins have NaN accuracy; draw them as no bar.
    acc_ax.bar(edges[:-1], np.nan_to_num(stats["bin_accuracy"]), width=width, align="edge",
               edgecolor="black", linewidth=0.5, label="accuracy")
    acc_ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    acc_ax.set(ylabel="accuracy", ylim=(0, 1), title=f"{title}Reliability (ECE {stats['ece']:.3f})")
    acc_ax.legend(fontsize=8, loc="upper left")
    count_ax.bar(edges[:-1], stats["bin_count"], width=width, align="edge", color="gray")
    count_ax.set(xlabel="confidence (max probability)", ylabel="count", xlim=(0, 1))
    fig.tight_layout()
    return fig


def plot_per_class_f1_heatmap(f1_by_model: dict[str, dict[str, float]], title: str = "F1 per class"):
    """Models (rows) by classes (columns), annotated F1; classes in the order they first appear. `title` should
    name the split and views, e.g. 'F1 per class, PrivateTest, each model under its views chosen on val'."""
    classes = list(dict.fromkeys(name for per_class in f1_by_model.values() for name in per_class))
    table = pd.DataFrame.from_dict(f1_by_model, orient="index").reindex(columns=classes)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * table.shape[1] + 2), max(2.5, 0.5 * table.shape[0] + 1.5)))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, cbar=False, ax=ax)
    ax.set(xlabel="class", ylabel="", title=title)
    ax.tick_params(axis="y", rotation=0)
    return fig


def show_and_save(fig, path, dpi: int = 120) -> Path:
    """Show the figure in the notebook (so the executed HTML has it), then save it as a PNG for the report."""
    try:
        from IPython.display import display
        display(fig)
    except ImportError:
        pass
    return save_figure(fig, path, dpi)


def report_figures(report_dir, history, probs, labels, metrics_of_split, class_names, title: str = ""
                   ) -> dict[str, Path]:
    """The figures every model report carries, shown and saved; returns {caption: png path}. `title` names
    the model, split and test-time views, e.g. "Mini-Xception · PrivateTest · flip"."""
    report_dir = Path(report_dir)
    prefix = f"{title}\n" if title else ""
    confusion = metrics_of_split["confusion"]
    return {
        "Learning curves": show_and_save(plot_history(history, title.split(" · ")[0]), report_dir / "learning_curves.png"),
        "Confusion matrix (row-normalized)": show_and_save(
            plot_confusion(confusion, class_names, title=f"{prefix}confusion matrix (row-normalised)"),
            report_dir / "confusion.png"),
        "Confusion matrix (counts)": show_and_save(
            plot_confusion(confusion, class_names, normalize=False, title=f"{prefix}confusion matrix (counts)"),
            report_dir / "confusion_counts.png"),
        "ROC curves (one-vs-rest)": show_and_save(plot_roc(probs, labels, class_names, title=f"{prefix}ROC, one vs rest (AUC)"),
                                                  report_dir / "roc.png"),
        "Reliability diagram": show_and_save(plot_reliability(probs, labels, title=prefix), report_dir / "reliability.png"),
    }


def _place_labels(ax, texts):
    """Move point labels apart so none overlaps another or a point (adjustText), with a thin line to its point."""
    from adjustText import adjust_text
    if texts:
        points = [text.get_position() for text in texts]  # each label starts on its point: avoid every point
        adjust_text(texts, x=[x for x, _ in points], y=[y for _, y in points], ax=ax,
                    arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5))


def plot_tradeoff(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str = "PrivateTest accuracy",
                  log_x: bool = True, title: str = ""):
    """One labelled dot per model: accuracy against parameters, FLOPs or inference time. `title` should name
    the split, the views and, for a time, the device it was measured on."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    texts = []
    for name, (x, y) in points.items():
        ax.scatter(x, y, s=40, color="tab:blue")  # one colour: the labels name the models, no legend needed
        texts.append(ax.text(x, y, name, fontsize=8))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} against {xlabel}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _place_labels(ax, texts)
    return fig


def plot_leaderboard(points: dict[str, tuple[float, float, tuple[float, float]]],
                     published: dict[str, tuple[float, float, str]], split_title: str, capped: set[str] = frozenset()):
    """Every model's accuracy (with its 95% interval) against its parameters; runs a time cap cut short in grey;
    the figures the seeds published on this same split are hollow markers at the same parameter count, joined to
    ours by a dotted line (a figure on another split is named in the leaderboard's text, not plotted here)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    texts = []
    for name, (params, acc, (low, high)) in points.items():
        colour = "0.6" if name in capped else "tab:blue"
        ax.errorbar(params, acc, yerr=[[acc - low], [high - acc]], fmt="o", capsize=3, color=colour,
                    label=("time-capped run (not ranked)" if name in capped and name == min(capped) else None))
        texts.append(ax.text(params, acc, name, fontsize=8, color="0.4" if name in capped else "black"))
    same_split = {name: v for name, v in published.items() if v[2] == split_title}
    for i, (name, (params, acc, where)) in enumerate(same_split.items()):
        ax.scatter(params, acc, s=70, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label=f"published by the seed ({split_title})" if i == 0 else None)
        texts.append(ax.text(params, acc, f"{name}, published", fontsize=7, color="tab:red"))
        ax.plot([params, params], [acc, points[name][1]], color="tab:red", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set(xlabel="parameters (log scale)", ylabel=f"{split_title} accuracy",
           title=f"FER2013 {split_title} accuracy against model size\n(each model under its views chosen on val; "
                 "bars: 95% interval)")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    if same_split or capped:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _place_labels(ax, texts)
    return fig
