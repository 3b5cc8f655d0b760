"""Trained models on disk: writing and reading checkpoints (checked against the config they record, config.py,
and the model's code), a finished one as a ready model (load_trained), and publishing a run's weights to its
report.

Everything above the models reads and writes weights through this module: the training loop, the views, the
reports, the ONNX export and emo-predict. The format and the state-dict keys never change: every committed
model.pt loads.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .augment import make_policy
from .config import TrainConfig, config_differences
from .files import write_atomically
from .inference import default_device
from .models import build_model

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


CHECKPOINT_FORMAT = 1


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


def trained_on_val(model_path: Path) -> bool:
    """A refit (TrainConfig.refit) learnt the validation split: nothing may be chosen or weighted on it."""
    return bool(load_checkpoint(Path(model_path))["config"].get("refit"))
