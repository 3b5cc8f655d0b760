"""The config of a training run: every choice a recipe makes, as plain data, and the one way to build it.

A notebook's parameters cell holds a recipe (a dict of these fields); config_from_recipe turns it, with a
seed, overrides and the dataset, into a TrainConfig. The config is saved in every checkpoint and beside every
result (metrics.json), and a saved model is reused only by a config without differences (config_differences).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

@dataclass
class TrainConfig:
    model: str = "mini_xception"
    model_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"  # sgd | adam | adamw | adamax
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    scheduler: str = "plateau"  # plateau | cosine | onecycle | none
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    warmup_fraction: float = 0.0  # cosine/onecycle: share of the run spent warming up linearly
    loss: str = "ce"  # ce | focal
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weights: bool = False  # weight the loss by n / (C * n_c)
    batch_size: int = 32
    epochs: int = 100
    early_stop_patience: int = 0  # epochs without a better val accuracy before stopping; 0 turns it off
    augment: str | dict = "flip"  # a name in augment.POLICIES or AugmentPolicy fields
    ema_decay: float = 0.0  # exponential moving average of weights, evaluated instead of the raw weights
    # With an EMA: batch-norm statistics measured for the averaged weights (recompute_bn_statistics, before each
    # evaluation) instead of the raw model's, copied by update_ema, which belong to other weights.
    ema_recompute_bn: bool = False
    # The first convolution's filters start as whitening filters of the training faces' patches (whitening.py).
    whiten_init: bool = False
    # Distillation (distill.py; zoo/teacher.py writes the file): a file of a teacher's probabilities on the training faces ("" for none; relative
    # to the repository), mixed into the targets with this weight, softened by this temperature.
    distill_targets: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    # Consistency (AugMix's Jensen-Shannon term, Hendrycks et al. 2020): each face goes through the net twice, clean
    # and under the policy's corruption with the same framing, crop and flip (augment_pair); the loss is both views'
    # cross-entropy plus this weight times the divergence between their predictions. 0 turns it off; it needs
    # augment corrupt > 0 and no mixup, and costs two forward and backward passes a face.
    consistency: float = 0.0
    # Refit: train on train + val (the whole Training folder) for the planned epochs and keep the last epoch,
    # once the recipe and its length were chosen on val by a train-only run. Nothing is chosen on the refit
    # itself: its val numbers are training numbers, so no early stop and no plateau schedule.
    refit: bool = False
    # Deduplicated training (issue 29): leave out every training face with an exact or near copy among the held-out
    # faces (val and test; test alone under refit) and every group with conflicting labels (data.dedup_removals).
    dedup: bool = False
    # Fine-tuning (issue 38's robust recipes): start from a finished model's weights (a model.pt, relative to the
    # repository) instead of the seed's initialisation; "" trains from scratch. The file's sha256 goes in the meta.
    init_weights: str = ""
    seed: int = 0
    time_budget_min: float = 0.0  # 0: no limit
    channels_last: bool = True
    # bf16 autocast on CPU as well (it is always on for CUDA). oneDNN runs bf16 convolutions on AVX512-BF16 or
    # AMX about twice as fast as fp32 (benchmarks/train_throughput.py measures it on the flagship).
    # Off by default, so every model trained before it existed keeps its exact fp32 recipe.
    cpu_bf16: bool = False
    sync_batchnorm: bool = False  # under torchrun on GPUs: batch norm over the global batch, not each rank's share
    # The dataset trained on (datasets.py): it names the report folder (reports/<dataset>/<model> for all but
    # FER2013) and the leaderboard section. Every model trained before the field existed trained on FER2013.
    dataset: str = "fer2013"
    # "majority": one label per face; "probability": FER+'s vote distributions as soft targets, cross-entropy
    # against them (Barsoum et al. 2016), through the step's soft-target path that distillation uses.
    label_mode: str = "majority"

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def config_from_recipe(model: str, recipe: dict, seed: int = 0, overrides: dict | None = None,
                       dataset: str | None = None) -> TrainConfig:
    """A notebook's recipe (its full_recipe or cpu_recipe parameter) with `overrides` on top, as a TrainConfig;
    `dataset` (a notebook's parameter) when given, else the recipe's or FER2013."""
    return TrainConfig.from_dict({**recipe, **(overrides or {}), "model": model, "seed": seed,
                                  **({"dataset": dataset} if dataset is not None else {})})


def config_differences(saved: dict, config: TrainConfig) -> list[str]:
    # Compared as JSON: a tuple from a notebook and a list from papermill (which has no tuples) are the same.
    # A field the checkpoint predates counts as its default, so adding a field keeps old models valid.
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    saved = {**defaults, **json.loads(json.dumps(saved))}
    current = json.loads(json.dumps(asdict(config)))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
