"""Trained models on disk: the TrainConfig a checkpoint records, writing and reading checkpoints (checked against
the config and the model's code), a finished one as a ready model (load_trained), publishing a run's weights
to its report, and finding a trained model by name or path.

Everything above the models reads and writes weights through this module: the training loop, the views, the
reports, the ONNX export and emo-predict. The format and the state-dict keys never change: every committed
model.pt loads.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from . import paths
from .augment import make_policy
from .files import write_atomically
from .inference import default_device
from .models import build_model

MODEL_SUFFIXES = (".pt", ".onnx")  # a report's model.pt, or the model.onnx exported from it


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


# ---------------------------------------------------------------- the config

CHECKPOINT_FORMAT = 1


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
    # Distillation (distill.py): a file of a teacher's probabilities on the training faces ("" for none; relative
    # to the repository), mixed into the targets with this weight, softened by this temperature.
    distill_targets: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    # Refit: train on train + val (the whole Training folder) for the planned epochs and keep the last epoch,
    # once the recipe and its length were chosen on val by a train-only run. Nothing is chosen on the refit
    # itself: its val numbers are training numbers, so no early stop and no plateau schedule.
    refit: bool = False
    # Deduplicated training (issue 29): leave out every training face with an exact or near copy among the held-out
    # faces (val and test; test alone under refit) and every group with conflicting labels (data.dedup_removals).
    dedup: bool = False
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


@dataclass
class TrainResult:
    """A trained model: train.train's result, or checkpoint.load_trained's from a finished file."""
    model: torch.nn.Module  # best-on-val weights, eval mode
    config: TrainConfig
    history: list[dict]
    meta: dict  # device, wall_seconds, epochs_run, planned_epochs, stop_reason, best_epoch, reused, ...
    class_names: list[str] = field(default_factory=list)

    @property
    def crop(self) -> int:
        """The centre crop the model sees at evaluation: the size of its training crops (0: the whole face)."""
        return make_policy(self.config.augment).crop


# ---------------------------------------------------------------- checkpoints

def save_atomically(obj: dict, path: Path) -> None:
    """torch.save through files.write_atomically: a reader sees the old file or the new one, never half."""
    write_atomically(path, lambda f: torch.save(obj, f))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (.<name>.tmp<pid>) that killed writers left in folder; a live writer's stays.

    save_atomically never reads them, so they are only lost disk space: a full checkpoint per kill.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0 delivers nothing: it only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, owned by someone else
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def load_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True): tensors and plain data only, never code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        first_line = (str(e).splitlines() or ["empty file"])[0][:200]
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first_line}). "
                              "It is truncated, corrupt or not ours: delete it to start again, or retrain "
                              "(retrain=True, `make reports RETRAIN=1`).") from e
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an emo_utils checkpoint (format {CHECKPOINT_FORMAT} expected). "
                              "Delete it or retrain.")
    return checkpoint


def config_differences(saved: dict, config: TrainConfig) -> list[str]:
    # Compared as JSON: a tuple from a notebook and a list from papermill (which has no tuples) are the same.
    # A field the checkpoint predates counts as its default, so adding a field keeps old models valid.
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    saved = {**defaults, **json.loads(json.dumps(saved))}
    current = json.loads(json.dumps(asdict(config)))
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def check_config(path: Path, checkpoint: dict, config: TrainConfig) -> None:
    diffs = config_differences(checkpoint["config"], config)
    if diffs:
        raise CheckpointError(f"{path} was made with another config ({'; '.join(diffs)}). Retrain "
                              "(retrain=True, `make reports RETRAIN=1`) or use another run folder.")


def load_weights(model: torch.nn.Module, state_dict: dict, path: Path, config: TrainConfig) -> None:
    """load_state_dict, with a CheckpointError naming the file when the architecture differs."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors: the architecture differs
        named = config.model + (f" {config.model_kwargs}" if config.model_kwargs else "")
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()] or [str(e)]
        problem = problems[0].rstrip(".")[:200] + (f"; {len(problems) - 1} more like it" if len(problems) > 1 else "")
        raise CheckpointError(f"{path}: its weights do not fit the model it names, {named} ({problem}). The "
                              "model's code changed since the file was written, or the file was made for another "
                              "model: retrain (retrain=True, `make reports RETRAIN=1`).") from e


def load_trained(path: str | os.PathLike, device: torch.device | None = None) -> TrainResult:
    """A final.pt (or a report's model.pt) as a ready model."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if "class_names" not in checkpoint or "num_classes" not in checkpoint:
        raise CheckpointError(f"{path} is a checkpoint of a run, not a finished model (it has no class names): pass "
                              "the run's final.pt or a report's model.pt.")
    config = TrainConfig.from_dict(checkpoint["config"])
    model = build_model(config.model, checkpoint["num_classes"], **config.model_kwargs)
    load_weights(model, checkpoint["model"], path, config)
    model = model.to(device or default_device()).eval()
    return TrainResult(model, config, checkpoint["history"], {**checkpoint["meta"], "reused": True},
                       list(checkpoint["class_names"]))


# ---------------------------------------------------------------- a run's weights to its report

MAX_PUBLISHED_BYTES = 16 * 2**20  # committed weights stay small enough for git (the repo's limit is 20 MB a file)


WEIGHT_KEYS = ("model", "raw_model")  # the evaluated weights and, after an EMA run, the last epoch's raw ones


def weight_bytes(checkpoint: dict) -> int:
    return sum(t.numel() * t.element_size() for key in WEIGHT_KEYS for t in checkpoint.get(key, {}).values())


def publish_model(final_path: Path, model_path: Path) -> bool:
    """Copy a run's final.pt to a report's model.pt; when its weights (the raw ones of an EMA run included)
    would pass 16 MiB, every set of them is stored as float16 there.

    Returns True when the weights were halved (so the caller evaluates the rounded weights)."""
    checkpoint = load_checkpoint(final_path)
    halve = weight_bytes(checkpoint) > MAX_PUBLISHED_BYTES
    if halve:
        for key in WEIGHT_KEYS:
            if key in checkpoint:
                checkpoint[key] = {k: t.half() if t.is_floating_point() else t for k, t in checkpoint[key].items()}
        checkpoint["meta"] = {**checkpoint["meta"], "weights_dtype": "float16 (over 16 MiB in float32)"}
    save_atomically(checkpoint, model_path)
    return halve


# ---------------------------------------------------------------- finding trained models

def trained_on_val(model_path: Path) -> bool:
    """A refit (TrainConfig.refit) learnt the validation split: nothing may be chosen or weighted on it."""
    return bool(load_checkpoint(Path(model_path))["config"].get("refit"))


def resolve_model_path(spec: str | os.PathLike, reports_dir: str | os.PathLike | None = None) -> Path:
    """A model by report name (reports/<name>/model.pt, else model.onnx) or by path to a .pt or .onnx file."""
    reports_dir = Path(reports_dir or paths.REPORTS_DIR)
    path = Path(spec)
    choices = list(paths.trained_models(reports_dir, suffixes=MODEL_SUFFIXES))
    listing = (f"models in {reports_dir}: {', '.join(choices)}" if choices
               else f"{reports_dir} holds no trained model yet (`make reports` trains them)")
    if path.is_dir() and paths.model_file(path).is_file():  # a report folder given as a path
        return paths.model_file(path)
    if path.suffix in MODEL_SUFFIXES or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise CheckpointError(f"model file {path} does not exist; {listing}, or pass a path to a .pt or .onnx "
                                  "file.")
        return path
    for suffix in MODEL_SUFFIXES:
        candidate = reports_dir / str(spec) / f"model{suffix}"
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"no model named {str(spec)!r} ({paths.model_file(reports_dir / str(spec))} does not "
                          f"exist); {listing}, or pass a path to a .pt or .onnx file.")
