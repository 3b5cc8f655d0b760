"""A dataset looked at before any model sees it (notebook 01): its exact and near duplicates and pixel statistics.
The duplicates themselves are found in duplicates.py (data.py builds the clean test splits from them); this module
counts and shows them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.data import CLEAN_SPLITS, SPLIT_TITLES, FERData
from ..core.readers import TEST_PRIVATE, TEST_PUBLIC, TRAIN
from ..core.duplicates import CORRELATIONS, NEAR_CORRELATION, conflicting_groups, groups_touching


def _group_counts(data: FERData, group: np.ndarray) -> dict:
    """Groups within train/val (the Training folder), within test, across the two, and with two labels or more; how
    many val, PublicTest and PrivateTest faces have a copy in train (the 90% of the Training folder models fit)."""
    is_training_folder = data.source_split == TRAIN
    members = group >= 0
    ids = np.unique(group[members])
    training_share = np.bincount(group[members], weights=is_training_folder[members], minlength=group.max() + 1)[ids]
    sizes = np.bincount(group[members], minlength=group.max() + 1)[ids]
    conflicting = conflicting_groups(group, data.labels)
    train = data.split_mask("train")
    has_train_copy = groups_touching(group, train)
    counts = {"groups": len(ids), "faces in groups": int(members.sum()),
              "groups within train/val": int((training_share == sizes).sum()),
              "groups within test": int((training_share == 0).sum()),
              "groups across train/val and test": int(((training_share > 0) & (training_share < sizes)).sum()),
              "groups with conflicting labels": len(np.unique(group[conflicting])),
              "train/val groups (val inflated)": len(np.unique(group[members & data.val_mask & has_train_copy]))}
    for split, code in (("val", None), ("PublicTest", TEST_PUBLIC), ("PrivateTest", TEST_PRIVATE)):
        faces = data.val_mask if code is None else data.source_split == code
        counts[f"{split} faces with a copy in train"] = int((faces & has_train_copy).sum())
    return counts


def duplicate_report(data: FERData, threshold: float = NEAR_CORRELATION) -> pd.DataFrame:
    """Exact copies (the same decoded bytes) and near copies (correlating at `threshold` or more, exact ones included),
    one column each: groups within and across splits, groups with conflicting labels, faces with a copy in train.

    FER2013 is known to hold duplicates and blank frames; a copy across train and test leaks test answers into
    training, a copy across train and val inflates what every choice is made on, two labels are label noise."""
    dup = data.duplicates
    return pd.DataFrame({"exact": _group_counts(data, dup.group("exact")),
                         f"near (correlation >= {threshold})": _group_counts(data, dup.group("near", threshold))})


def blank_frames(data: FERData) -> pd.Series:
    """Blank frames (one grey level) and near-blank ones (pixel std under duplicates.NEAR_BLANK_STD), per split."""
    dup = data.duplicates
    return pd.Series({"blank": int(dup.blank.sum()), "near-blank (not blank)": int((dup.near_blank & ~dup.blank).sum()),
                      **{f"blank or near-blank in {SPLIT_TITLES.get(s, s)}": int((dup.near_blank & data.split_mask(s)).sum())
                         for s in data.available_splits()}}, name="frames")


def threshold_counts(data: FERData) -> pd.DataFrame:
    """Per correlation threshold: candidate pairs from it up to the next threshold, near groups, faces in them, the
    largest group, and the PrivateTest faces a clean split would lose, to show where unrelated faces start to pair up."""
    dup, rows = data.duplicates, []
    is_training_folder = data.source_split == TRAIN
    for low, high in zip(CORRELATIONS, CORRELATIONS[1:] + (1.01,)):
        group = dup.near_group(low)
        seen = groups_touching(group, is_training_folder)
        in_band = (dup.pair_correlation >= low) & (dup.pair_correlation < high)
        rows.append({"correlation at least": low, "pairs below the next threshold": int(in_band.sum()),
                     "groups": len(np.unique(group[group >= 0])), "faces in groups": int((group >= 0).sum()),
                     "largest group": int(np.bincount(group[group >= 0]).max()) if (group >= 0).any() else 0,
                     "PrivateTest faces with a copy in train/val": int((seen & (data.source_split == TEST_PRIVATE)).sum())})
    return pd.DataFrame(rows).set_index("correlation at least")


def clean_split_sizes(data: FERData) -> pd.DataFrame:
    """Each test split and its clean version (duplicates and blank frames out): faces, and the share kept."""
    rows = [{"split": SPLIT_TITLES[raw], "faces": int(data.split_mask(raw).sum()), "clean faces": int(data.split_mask(clean).sum())}
            for clean, raw in CLEAN_SPLITS.items() if clean in data.clean_splits()]
    frame = pd.DataFrame(rows).set_index("split")
    frame["share kept"] = (frame["clean faces"] / frame["faces"]).round(3)
    return frame


def pairs_between(data: FERData, low: float, high: float, k: int = 6, seed: int = 0) -> list[tuple[int, int]]:
    """Up to k random candidate pairs of faces (indices) that correlate in [low, high)."""
    dup = data.duplicates
    band = np.flatnonzero((dup.pair_correlation >= low) & (dup.pair_correlation < high))
    chosen = np.random.default_rng(seed).choice(band, size=min(k, len(band)), replace=False) if len(band) else []
    return [(int(dup.pair_i[p]), int(dup.pair_j[p])) for p in chosen]


def plot_pairs_by_threshold(data: FERData, thresholds=CORRELATIONS, k: int = 6, seed: int = 0):
    """One row per correlation band (a threshold up to the next), k pairs side by side, each face titled with its
    label. Faces: local only."""
    bands = list(zip(thresholds, tuple(thresholds[1:]) + (1.01,)))
    fig, axes = plt.subplots(len(bands), 2 * k, squeeze=False, figsize=(1.0 * 2 * k + 1, 1.15 * len(bands)))
    for row, (low, high) in enumerate(bands):
        pairs = pairs_between(data, low, high, k, seed)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col // 2 < len(pairs):
                face = pairs[col // 2][col % 2]
                ax.imshow(data.images[face], cmap="gray", vmin=0, vmax=255)
                ax.set_title(data.class_names[data.labels[face]][:7], fontsize=7)
        axes[row, 0].set_ylabel(f"{low:.2f}-{min(high, 1):.2f}", rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return fig


def example_groups(data: FERData, kind: str = "near", k: int = 5) -> list[list[str]]:
    """The file names of the first k groups that span the Training folder and the test folder."""
    group = data.duplicates.group(kind)
    across = groups_touching(group, data.source_split == TRAIN) & (data.source_split != TRAIN)
    ids = list(dict.fromkeys(group[across].tolist()))[:k]
    return [[str(n) for n in data.names[group == g]] for g in ids]


def pixel_statistics(data: FERData) -> dict:
    """Mean and std of pixel values (0..255) per split and per class."""
    per_split = {s: (float(data.split(s)[0].mean()), float(data.split(s)[0].std())) for s in data.available_splits()}
    per_class = {c: (float(data.images[data.labels == i].mean()), float(data.images[data.labels == i].std()))
                 for i, c in enumerate(data.class_names)}
    return {"per_split": per_split, "per_class": per_class}
