"""A trial run: the recipe on a seeded stratified subset of the data with a short schedule, to see in a couple of
minutes on 2 CPU cores that a change trains and evaluates end to end. Its numbers say nothing about the recipe: a
trial is labelled as one everywhere, never ranked and never published (reports/chapter.py, zoo/plan.py).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .data import FERData, stratified_val_mask
from .distributed import cpu_has_bf16
from .readers import TRAIN

# Faces kept of each source split (the Training folder, each test half), drawn per class: 2,500 training faces (of
# which 10% become val) and 500 per test half make a flagship epoch about 20 s on 2 fp32 cores, and scoring every
# view set (ten crops included) a few seconds. benchmarks/trial_runs.py times it per notebook.
TRIAL_FACES = {"train": 2500, "test": 500}
TRIAL_SEED = 0
# Two epochs, nothing that stops or plans by time: a trial runs the recipe's code paths, not its length.
TRIAL_SCHEDULE = {"epochs": 2, "time_budget_min": 0, "early_stop_patience": 0}


def trial_changes() -> dict:
    """The recipe fields a trial sets: the short schedule, and fp32 on a CPU without fast bf16."""
    return {**TRIAL_SCHEDULE, **({} if cpu_has_bf16() else {"cpu_bf16": False})}


def trial_subset(data: FERData, faces: dict[str, int] | None = None, seed: int = TRIAL_SEED) -> FERData:
    """A seeded stratified subset of `data`: at most faces['train'] of its Training folder and faces['test'] of
    each test split, the same share of every class. Its val split is carved from the kept training faces as
    usual; its sha256 names the subset, so a model trained on it is never reused for the whole data."""
    faces = faces or TRIAL_FACES
    keep = np.zeros(len(data.labels), dtype=bool)
    for split in np.unique(data.source_split):
        pool = data.source_split == split
        wanted = faces["train" if split == TRAIN else "test"]
        keep |= pool if pool.sum() <= wanted else stratified_val_mask(data.labels, pool, wanted / pool.sum(), seed)
    soft = getattr(data, "soft_labels", None)  # a NamedData's vote distributions (label_mode "probability")
    return replace(data, images=data.images[keep], labels=data.labels[keep], source_split=data.source_split[keep],
                   names=data.names[keep], sha256=f"{data.sha256}+trial{faces['train']}-{faces['test']}-{seed}",
                   duplicates_path=None, _val_mask=None, _duplicates=None,
                   **({"soft_labels": soft[keep]} if soft is not None else {}))
