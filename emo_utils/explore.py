"""A dataset looked at before any model sees it (notebook 01): its exact duplicates and pixel statistics.
Nothing in training reads them, so they sit beside the loader (data.py), not in it."""
from __future__ import annotations

import hashlib

import numpy as np

from .data import TRAIN, FERData


def duplicate_report(data: FERData) -> dict:
    """Exact duplicate images (byte-identical after decoding) within and across splits.

    FER2013 is known to hold duplicates and blank frames; a duplicate across train and test leaks
    test answers into training, and a duplicate with two labels is label noise.
    """
    keys = np.array([hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest() for img in data.images])
    _, group_of, group_sizes = np.unique(keys, return_inverse=True, return_counts=True)
    in_group = group_sizes[group_of] > 1
    is_train = data.source_split == TRAIN
    groups = {}
    for i in np.flatnonzero(in_group):
        groups.setdefault(group_of[i], []).append(i)
    summary = {"duplicate_groups": len(groups), "images_in_groups": int(in_group.sum()),
               "groups_within_train": 0, "groups_within_test": 0, "groups_across_train_test": 0,
               "groups_with_conflicting_labels": 0, "blank_images": int((data.images.std(axis=(1, 2)) == 0).sum())}
    for members in groups.values():
        members = np.array(members)
        n_train = is_train[members].sum()
        if n_train == len(members):
            summary["groups_within_train"] += 1
        elif n_train == 0:
            summary["groups_within_test"] += 1
        else:
            summary["groups_across_train_test"] += 1
        if len(set(data.labels[members])) > 1:
            summary["groups_with_conflicting_labels"] += 1
    summary["example_groups"] = [[str(data.names[i]) for i in members] for members in list(groups.values())[:5]]
    return summary


def pixel_statistics(data: FERData) -> dict:
    """Mean and std of pixel values (0..255) per split and per class."""
    per_split = {s: (float(data.split(s)[0].mean()), float(data.split(s)[0].std())) for s in data.available_splits()}
    per_class = {c: (float(data.images[data.labels == i].mean()), float(data.images[data.labels == i].std()))
                 for i, c in enumerate(data.class_names)}
    return {"per_split": per_split, "per_class": per_class}
