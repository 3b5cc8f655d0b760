"""One training loop for every model. A model differs by its TrainConfig, never by a copy of this loop.

What the loop promises:
  - the data stays a uint8 tensor on the training device; augmentation runs per batch (augment.py);
  - every epoch ends with an atomic checkpoint (temporary file, fsync, rename) holding model,
    optimizer, scheduler, EMA, RNG states, history and config; a killed run resumes from it, and on
    CPU ends with the same weights as an uninterrupted run (each epoch's shuffling, augmentation and
    dropout are seeded from (seed, epoch));
  - the best-on-validation weights are kept apart (best.pt), and final.pt holds them with the
    config and history once the run is done; a final.pt whose config matches is reused instead of
    retraining unless retrain=True;
  - a time budget stops the run cleanly, and a schedule that needs the run's length is planned
    for the number of epochs the budget allows.
"""
from __future__ import annotations

import ast
import copy
import json
import math
import os
import pickle
import platform
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .augment import augment_batch, make_policy, mixup
from .losses import balanced_class_weights, make_loss
from .models import build_model, count_params
from .recipes import notebook_parameters
from .inference import default_device, predict_logits

CHECKPOINT_FORMAT = 1

# Speed settings, not recipe: they live outside TrainConfig, so a model trained with them is reused by a config
# without them (as one trained on a GPU is reused on a CPU). torch.compile per (model, device type), on by default
# only where benchmarks/zoo_gpu.py measured it faster; nothing has been measured yet. Modes: "default",
# "reduce-overhead" (CUDA graphs: one launch per step instead of hundreds), "max-autotune"; "off" is eager.
COMPILE_BY_DEFAULT: dict[tuple[str, str], str] = {}
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# Evaluation is a forward pass without gradients: on a GPU a few large batches beat many small launches (2,048
# faces of the widest zoo net, vgg_gap, hold about 0.6 GB per bf16 activation). The CPU keeps its old batch.
EVAL_BATCH_SIZE = {"cuda": 2048}


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
    seed: int = 0
    time_budget_min: float = 0.0  # 0: no limit
    channels_last: bool = True
    # bf16 autocast on CPU as well (it is always on for CUDA). oneDNN runs bf16 convolutions on AVX512-BF16 or
    # AMX about twice as fast as fp32 (benchmarks/train_throughput.py measures it on the flagship).
    # Off by default, so every model trained before it existed keeps its exact fp32 recipe.
    cpu_bf16: bool = False
    sync_batchnorm: bool = False  # under torchrun on GPUs: batch norm over the global batch, not each rank's share

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def config_from_recipe(model: str, recipe: dict, seed: int = 0, overrides: dict | None = None) -> TrainConfig:
    """A notebook's recipe (its full_recipe or cpu_recipe parameter) with `overrides` on top, as a TrainConfig."""
    return TrainConfig.from_dict({**recipe, **(overrides or {}), "model": model, "seed": seed})


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


@dataclass
class TrainResult:
    model: torch.nn.Module  # best-on-val weights, eval mode
    config: TrainConfig
    history: list[dict]
    meta: dict  # device, wall_seconds, epochs_run, planned_epochs, stop_reason, best_epoch, reused, ...


# ---------------------------------------------------------------- checkpoints

def save_atomically(obj: dict, path: Path) -> None:
    """Write to a temporary file, fsync, then rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


def load_trained(path: Path, device: torch.device | None = None) -> TrainResult:
    """A final.pt (or a report's model.pt) as a ready model."""
    checkpoint = load_checkpoint(Path(path))
    config = TrainConfig.from_dict(checkpoint["config"])
    model = build_model(config.model, checkpoint["num_classes"], **config.model_kwargs)
    load_weights(model, checkpoint["model"], path, config)
    model = model.to(device or default_device()).eval()
    return TrainResult(model, config, checkpoint["history"], {**checkpoint["meta"], "reused": True})


# ---------------------------------------------------------------- pieces of the loop

def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # No weight decay on biases and norm scales: it only shrinks them (standard since Goyal et al. 2017).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = config.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}
    if name not in optimizers:
        raise KeyError(f"unknown optimizer {config.optimizer!r}; choose sgd, adam, adamw or adamax")
    return optimizers[name](groups, lr=config.lr)


def scheduled_lr(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate at a step for the schedules that follow the run's length."""
    progress = min(step / max(total_steps, 1), 1.0)
    warmup = config.warmup_fraction
    if config.scheduler == "onecycle":
        # Smith & Topin 2019, linear form: lr/25 up to lr over the warm-up, then down to ~0.
        warmup = warmup or 0.25
        if progress < warmup:
            return config.lr * (0.04 + 0.96 * progress / warmup)
        return config.lr * max(1 - (progress - warmup) / (1 - warmup), 0.0) + 1e-6
    if config.scheduler == "cosine":
        if progress < warmup:
            return config.lr * progress / warmup
        return config.lr * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
    raise ValueError(config.scheduler)


def epoch_generator(config: TrainConfig, epoch: int, device: torch.device) -> torch.Generator:
    """Shuffling and augmentation of an epoch depend on (seed, epoch) alone, so a resumed run repeats them."""
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed * 1_000_003 + epoch)
    return gen


def estimate_epoch_seconds(model, optimizer, loss_fn, config, policy, images, labels, steps_per_epoch,
                           n_val, device, num_classes, shard=slice(None)) -> float:
    """Time a few steps on copies of the model and optimizer (nothing of the real run changes)."""
    rng_state = torch.get_rng_state()
    model_copy, opt_copy = copy.deepcopy((model, optimizer))  # one deepcopy: the optimizer follows the copies
    gen = epoch_generator(config, -1, device)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        idx = torch.randint(0, len(images), (config.batch_size,), generator=gen, device=device)
        _train_step(model_copy, opt_copy, loss_fn, config, policy, images[idx], labels[idx], gen, device,
                    num_classes, shard)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.set_rng_state(rng_state)
    step_seconds = float(np.median(times[2:]))
    # Evaluation is a forward pass only, about a third of a training step per image.
    return step_seconds * (steps_per_epoch + n_val / config.batch_size / 3)


def _train_step(model, optimizer, loss_fn, config, policy, batch_u8, targets, gen, device, num_classes,
                shard=slice(None)):
    """One update. Augmentation (and mixup) runs on the global batch, then this rank keeps `shard` of it, so
    ranks draw the same random numbers as one process would and together see exactly its batch."""
    x = augment_batch(batch_u8, policy, gen)
    soft = None
    if policy.mixup:
        x, soft = mixup(x, F.one_hot(targets, num_classes).float(), policy.mixup, gen)
        soft = soft[shard]
    x, targets = x[shard], targets[shard]
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config, device)):
        logits = model(x)
    loss = loss_fn(logits.float(), soft if soft is not None else targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and config.cpu_bf16)


@torch.no_grad()
def update_ema(ema_model, model, decay):
    """ema = decay * ema + (1 - decay) * weights; buffers (batch-norm statistics) are copied. Foreach ops launch one
    kernel per group of tensors instead of one per tensor: on a GPU the launches cost more than the arithmetic."""
    torch._foreach_lerp_(list(ema_model.parameters()), list(model.parameters()), 1 - decay)
    ema_buffers = list(ema_model.buffers())
    if ema_buffers:  # foreach ops refuse empty lists
        torch._foreach_copy_(ema_buffers, list(model.buffers()))


def use_fast_cuda_kernels() -> None:
    """cuDNN autotuning (a run's input shapes never change, so the search pays once) and TF32 for the float32
    matmuls autocast leaves in float32. cuDNN convolutions already use TF32 by default."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")


def evaluate_loss_acc(model, images_u8, labels, crop, batch_size=512) -> tuple[float, float]:
    """Mean loss and accuracy; under torchrun each rank scores every world_size-th image and the sums are reduced."""
    shard = slice(distributed.rank(), None, distributed.world_size())
    logits = torch.from_numpy(predict_logits(model, images_u8[shard], batch_size=batch_size, crop=crop))
    targets = torch.as_tensor(labels[shard]).cpu()
    sums = torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                         (logits.argmax(1) == targets).sum().item()], dtype=torch.float64)
    sums = distributed.sum_across_ranks(sums.to(default_collective_device())).cpu()
    return (sums / len(labels)).tolist()


def default_collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU ones."""
    if distributed.active() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model and the flags that set its bf16 speed (AMX, AVX512-BF16): a time-capped recipe trains a
    different model on a different CPU, so a report names the CPU beside the minutes."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = "AVX512-BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "no AVX-512"
    return f"{fields.get('model name', platform.machine())}, {vector}, {'AMX' if 'amx_bf16' in flags else 'no AMX'}"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    return name if distributed.world_size() == 1 else f"{distributed.world_size()} x {name} (torchrun, DDP)"


# ---------------------------------------------------------------- the loop

def train(config: TrainConfig, data, run_dir: str | os.PathLike, device: str | torch.device | None = None,
          retrain: bool = False, model_path: str | os.PathLike | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None, progress: bool = True,
          compile_mode: str | None = None) -> TrainResult:
    """Train `config.model` on data.split('train'), select on data.split('val').

    `model_path` is where the finished model lives (a report's model.pt): reused when its config and data
    match, written when training ends. run_dir holds last.pt, best.pt and final.pt of the run itself.
    `on_epoch_end(epoch, row)` runs after each epoch's checkpoint is written. `compile_mode` (COMPILE_MODES; None:
    COMPILE_BY_DEFAULT) compiles the training step's model with torch.compile; checkpoints hold the same keys.

    Under torchrun (see distributed.py) every rank calls this; config.batch_size is the global batch, rank 0
    alone writes files, and every rank returns the same model.
    """
    device = distributed.setup(torch.device(device) if device is not None else None) or default_device()
    world, main = distributed.world_size(), distributed.is_main()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} ranks: the global batch "
                         "must be a multiple of the number of processes")
    shard = slice(distributed.rank() * config.batch_size // world, (distributed.rank() + 1) * config.batch_size // world)
    if device.type == "cuda":
        use_fast_cuda_kernels()
    compile_mode = compile_mode or COMPILE_BY_DEFAULT.get((config.model, device.type), "off")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}; choose one of {COMPILE_MODES}")
    run_dir = Path(run_dir)
    last_path, best_path, final_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "final.pt"
    if main:
        remove_stale_temporaries(run_dir)
        if retrain:
            for p in (last_path, best_path, final_path):
                p.unlink(missing_ok=True)
    distributed.barrier()
    if not retrain:
        for candidate in ([Path(model_path)] if model_path else []) + [final_path]:
            if candidate.exists():
                saved = load_checkpoint(candidate)
                if not config_differences(saved["config"], config) and saved.get("data_sha256") == data.sha256:
                    if main and model_path and candidate != Path(model_path):
                        publish_model(candidate, Path(model_path))
                    distributed.barrier()
                    return load_trained(Path(model_path) if model_path else candidate, device)

    train_images, train_labels = data.split("train")
    val_images, val_labels = data.split("val")
    images = torch.from_numpy(train_images).to(device)  # uint8 on the device for the whole run
    labels = torch.from_numpy(train_labels).to(device)
    policy = make_policy(config.augment)

    torch.manual_seed(config.seed)
    model = build_model(config.model, data.num_classes, **config.model_kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    weights = balanced_class_weights(train_labels, data.num_classes).to(device) if config.class_weights else None
    loss_fn = make_loss(config.loss, config.label_smoothing, config.focal_gamma, weights).to(device)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
               if config.scheduler == "plateau" else None)
    if config.scheduler not in ("plateau", "cosine", "onecycle", "none"):
        raise KeyError(f"unknown scheduler {config.scheduler!r}; choose plateau, cosine, onecycle or none")
    ema_model = copy.deepcopy(model) if config.ema_decay else None
    net = distributed.wrap(model, device, config.sync_batchnorm)  # what the training step calls
    if compile_mode != "off":  # only the step's module: model, ema_model and their state_dict keys stay as they are
        net = torch.compile(net, mode=None if compile_mode == "default" else compile_mode)
    steps_per_epoch = max(len(images) // config.batch_size, 1)  # drop the last partial batch: BN needs company

    state = dict(epoch=0, step=0, history=[], wall_seconds=0.0, planned_epochs=config.epochs,
                 best_metric=-1.0, best_epoch=0, stop_reason="")
    if last_path.exists():
        checkpoint = load_checkpoint(last_path)
        check_config(last_path, checkpoint, config)
        load_weights(model, checkpoint["model"], last_path, config)
        optimizer.load_state_dict(checkpoint["optimizer"])
        if plateau is not None:
            plateau.load_state_dict(checkpoint["plateau"])
        if ema_model is not None:
            ema_model.load_state_dict(checkpoint["ema"])
        torch.set_rng_state(checkpoint["rng_cpu"])
        state.update(checkpoint["state"])
    elif config.time_budget_min:
        epoch_seconds = estimate_epoch_seconds(model, optimizer, loss_fn, config, policy, images, labels,
                                               steps_per_epoch, len(val_images), device, data.num_classes, shard)
        planned = max(1, min(config.epochs, int(config.time_budget_min * 60 / epoch_seconds)))
        state["planned_epochs"] = distributed.from_main(planned)  # ranks time differently; rank 0 decides
    eval_model = ema_model if ema_model is not None else model
    crop = policy.crop

    run_start = time.time() - state["wall_seconds"]
    while state["epoch"] < state["planned_epochs"] and not state["stop_reason"]:
        epoch = state["epoch"] + 1
        epoch_start = time.time()
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout of this epoch
        gen = epoch_generator(config, epoch, device)
        order = torch.randperm(len(images), generator=gen, device=device)
        model.train()
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device)
        total_steps = state["planned_epochs"] * steps_per_epoch
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{state['planned_epochs']}", disable=not (progress and main),
                   mininterval=5, leave=False)
        for i in bar:
            if plateau is None and config.scheduler != "none":
                for group in optimizer.param_groups:
                    group["lr"] = scheduled_lr(config, state["step"], total_steps)
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            if compile_mode != "off":
                torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may reuse the last step's output buffers
            loss, logits = _train_step(net, optimizer, loss_fn, config, policy, images[idx], labels[idx], gen, device,
                                       data.num_classes, shard)
            if ema_model is not None:
                update_ema(ema_model, model, config.ema_decay)
            total_loss += loss
            total_correct += (logits.argmax(1) == labels[idx][shard]).sum()
            state["step"] += 1
        bar.close()
        val_loss, val_acc = evaluate_loss_acc(eval_model, val_images, val_labels, crop,
                                              EVAL_BATCH_SIZE.get(device.type, 512))
        if plateau is not None:
            plateau.step(val_loss)
        train_sums = distributed.sum_across_ranks(torch.stack([total_loss, total_correct.float()])
                                                  .to(default_collective_device())).tolist()
        row = dict(epoch=epoch, train_loss=train_sums[0] / (steps_per_epoch * world),
                   train_acc=train_sums[1] / (steps_per_epoch * config.batch_size),
                   val_loss=val_loss, val_acc=val_acc, lr=optimizer.param_groups[0]["lr"],
                   seconds=time.time() - epoch_start)
        state["history"].append(row)
        state["epoch"] = epoch
        if val_acc > state["best_metric"]:
            state["best_metric"], state["best_epoch"] = val_acc, epoch
            if main:
                save_atomically({"format": CHECKPOINT_FORMAT, "model": eval_model.state_dict(), "epoch": epoch,
                                 "val_acc": val_acc}, best_path)
        if config.early_stop_patience and epoch - state["best_epoch"] >= config.early_stop_patience:
            state["stop_reason"] = f"early stopping: no better val accuracy for {config.early_stop_patience} epochs"
        state["wall_seconds"] = time.time() - run_start
        if config.time_budget_min:
            # Re-plan from the measured epoch time, so the schedule still ends when the budget does
            # even if the machine got slower or faster than the first estimate.
            remaining = config.time_budget_min * 60 - state["wall_seconds"]
            mean_epoch = float(np.mean([r["seconds"] for r in state["history"]]))
            state["planned_epochs"] = max(epoch, min(config.epochs, epoch + int(remaining // mean_epoch)))
            if state["planned_epochs"] == epoch and epoch < config.epochs:
                state["stop_reason"] = f"time budget of {config.time_budget_min:g} min: another epoch would not fit"
            state["planned_epochs"], state["stop_reason"] = distributed.from_main(
                (state["planned_epochs"], state["stop_reason"]))
        if not main:
            continue
        if progress:
            print(f"epoch {epoch:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {row['lr']:.2e}  {row['seconds']:.0f}s", flush=True)
        save_atomically({"format": CHECKPOINT_FORMAT, "config": asdict(config), "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(),
                         "plateau": plateau.state_dict() if plateau is not None else {},
                         "ema": ema_model.state_dict() if ema_model is not None else {},
                         "rng_cpu": torch.get_rng_state(), "state": state}, last_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    if not state["stop_reason"]:
        state["stop_reason"] = f"all {state['planned_epochs']} planned epochs run"
    distributed.barrier()  # rank 0 has written best.pt
    best = load_checkpoint(best_path)
    eval_model.load_state_dict(best["model"])
    meta = dict(device=describe_device(device), torch=str(torch.__version__), wall_seconds=state["wall_seconds"],
                epochs_run=state["epoch"], epochs_asked=config.epochs, planned_epochs=state["planned_epochs"],
                stop_reason=state["stop_reason"], best_epoch=state["best_epoch"], best_val_acc=state["best_metric"],
                params=count_params(eval_model), num_train=len(images), num_val=len(val_images),
                **({"compile": compile_mode} if compile_mode != "off" else {}))
    # With an EMA, the raw weights of the last epoch travel along, so a report can measure what the EMA adds.
    raw = {"raw_model": model.state_dict()} if ema_model is not None else {}
    halved = False
    if main:
        save_atomically({"format": CHECKPOINT_FORMAT, "config": asdict(config), "model": eval_model.state_dict(), **raw,
                         "num_classes": data.num_classes, "class_names": list(data.class_names),
                         "data_sha256": data.sha256, "history": state["history"], "meta": meta}, final_path)
        halved = bool(model_path) and publish_model(final_path, Path(model_path))
    if distributed.from_main(halved):
        # Evaluate exactly the weights that are committed, so a fresh clone reproduces every number.
        eval_model.load_state_dict(load_checkpoint(Path(model_path))["model"])
    return TrainResult(eval_model.eval(), config, state["history"], {**meta, "reused": False})


MAX_PUBLISHED_BYTES = 20 * 2**20  # committed weights stay small enough for git


def publish_model(final_path: Path, model_path: Path) -> bool:
    """Copy a run's final.pt to a report's model.pt; weights over 20 MB are stored as float16 there.

    Returns True when the weights were halved (so the caller evaluates the rounded weights)."""
    checkpoint = load_checkpoint(final_path)
    weights = checkpoint["model"]
    halve = sum(t.numel() * t.element_size() for t in weights.values()) > MAX_PUBLISHED_BYTES
    if halve:
        checkpoint["model"] = {k: t.half() if t.is_floating_point() else t for k, t in weights.items()}
        checkpoint["meta"] = {**checkpoint["meta"], "weights_dtype": "float16 (over 20 MB in float32)"}
    save_atomically(checkpoint, model_path)
    return halve


# ---------------------------------------------------------------- command line (and torchrun)

def parse_sets(items: list[str]) -> dict:
    """`--set FIELD=VALUE` items as {field: value}: VALUE read as a Python literal, else kept as a string."""
    overrides = {}
    for item in items:
        field_name, _, value = item.partition("=")
        try:
            overrides[field_name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[field_name] = value
    return overrides


def main(argv=None) -> int:
    """Train with the recipe in a notebook's parameters cell, e.g. on 8 GPUs:
    torchrun --nproc_per_node=8 -m emo_utils.train notebooks/09_train_vgg_gap.ipynb --budget full
    then `make reports NB=09 PARAMS="-p budget full"` evaluates the model it wrote instead of retraining."""
    import argparse

    from . import data as fer

    parser = argparse.ArgumentParser(prog="python -m emo_utils.train", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path, help="a training notebook; its parameters cell gives the recipe")
    parser.add_argument("--budget", choices=["cpu", "full"], help="which recipe (default: the notebook's budget)")
    parser.add_argument("--seed", type=int, help="default: the notebook's seed")
    parser.add_argument("--data", help="FER2013 zip, folder or csv (default: the notebook's data_path, then the finder)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, VALUE a Python literal (e.g. --set epochs=5); repeatable")
    parser.add_argument("--report-dir", type=Path, help="where model.pt goes (default: reports/<model>)")
    parser.add_argument("--model-path", type=Path, help="the finished model's file (default: REPORT_DIR/model.pt)")
    parser.add_argument("--run-dir", type=Path, help="checkpoints (default: runs/<model>)")
    parser.add_argument("--retrain", action="store_true", help="train even if a matching model.pt exists")
    parser.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile the training step (default: "
                        "COMPILE_BY_DEFAULT, else off); reduce-overhead adds CUDA graphs")
    args = parser.parse_args(argv)

    params = notebook_parameters(args.notebook)
    budget = args.budget or params.get("budget", "cpu")
    seed = params.get("seed", 0) if args.seed is None else args.seed
    overrides = {**(params.get("overrides") or {}), **parse_sets(args.set)}
    model_name = params["model_name"]
    config = config_from_recipe(model_name, params["full_recipe" if budget == "full" else "cpu_recipe"], seed, overrides)
    data = fer.load_dataset(args.data or params.get("data_path"))
    report_dir = args.report_dir or fer.REPO_ROOT / "reports" / model_name
    run_dir = args.run_dir or fer.REPO_ROOT / "runs" / model_name
    model_path = args.model_path or report_dir / "model.pt"
    if distributed.is_main():
        model_path.parent.mkdir(parents=True, exist_ok=True)
    result = train(config, data, run_dir, retrain=args.retrain, model_path=model_path, compile_mode=args.compile)
    if distributed.is_main():
        print(json.dumps({k: v for k, v in result.meta.items()}, indent=1, default=str))
        print(f"model: {model_path}")
    if distributed.active():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
