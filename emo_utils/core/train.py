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

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import data as fer, datasets, distributed
from .readers import file_sha256
from .checkpoint import (CHECKPOINT_FORMAT, TrainResult, check_config, load_checkpoint, load_trained, load_weights,
                         publish_model, remove_stale_temporaries, save_atomically)
from .config import TrainConfig, config_differences
from .distill import read_teacher
from .inference import default_device
from .models import count_params
from .run import Run, RunState, check_recipe, estimate_epoch_seconds, prepare, train_step
from .step import epoch_generator, evaluate_loss_acc, recompute_bn_statistics, scheduled_lr, update_ema

# Speed settings, not recipe: they live outside TrainConfig, so a model trained with them is reused by a config
# without them (as one trained on a GPU is reused on a CPU). torch.compile per (model, device type), on by default
# only where benchmarks/zoo_gpu.py measured it faster; nothing has been measured yet. Modes: "default",
# "reduce-overhead" (CUDA graphs: one launch per step instead of hundreds), "max-autotune"; "off" is eager.
COMPILE_BY_DEFAULT: dict[tuple[str, str], str] = {}
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# Evaluation is a forward pass without gradients: on a GPU a few large batches beat many small launches (2,048
# faces of the widest zoo net, vgg_gap, hold about 0.6 GB per bf16 activation). The CPU keeps its old batch.
EVAL_BATCH_SIZE = {"cuda": 2048}


# ---------------------------------------------------------------- progress

def someone_watches() -> str | None:
    """Where a person watches this run: "notebook" (a kernel whose frontend can answer input(): JupyterLab, VS
    Code), "terminal" (stderr is a terminal), else None (papermill, nbclient, a nohup log, a test)."""
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        # A frontend a person types in sends its cells with allow_stdin; nbclient, and so papermill, never does
        # (a headless run cannot answer a prompt). ipykernel keeps the current cell's flag in _allow_stdin.
        return "notebook" if getattr(kernel, "_allow_stdin", False) else None
    return "terminal" if sys.stderr.isatty() else None


def step_bar(steps: int, desc: str, progress: bool):
    """The steps of an epoch, with a bar where someone watches: a widget in JupyterLab (tqdm.auto), a
    carriage-return bar on a terminal. Elsewhere no bar at all: a papermill page or a log file gets the one line
    per epoch that save_last prints, never a bar's redraws (on stderr, which a published page must not hold)."""
    watcher = someone_watches() if progress else None
    if watcher is None:
        return range(steps)
    if watcher == "notebook":
        from tqdm.auto import tqdm as widget_bar  # imported here: it picks the widget when a kernel imports it
        return widget_bar(range(steps), desc=desc, mininterval=1, leave=False)
    return tqdm(range(steps), desc=desc, mininterval=5, leave=False)


# ---------------------------------------------------------------- a run, step by step

def check_run_inputs(config: TrainConfig, data) -> None:
    """What a run needs that can be checked before anything is written or trained: the data the config names, the
    recipe's named parts (run.check_recipe), a refit that chooses nothing on val, and a teacher's file written for
    these training faces. A ValueError (or FileNotFoundError for a missing teacher) whose message names the fix; the
    command line prints it as one line."""
    datasets.check_data(data, config.dataset, config.label_mode, distilling=bool(config.distill_targets))
    check_recipe(config, data.num_classes)
    if config.refit and config.distill_targets:
        raise ValueError("refit=True trains on val too, and a teacher's probabilities cover the training faces only: "
                         "distill without refit, or write the teacher's outputs for train + val")
    if config.refit and (config.early_stop_patience or config.scheduler == "plateau"):
        raise ValueError("refit=True trains on val too, so nothing may be chosen on it: set early_stop_patience=0 "
                         "and a planned scheduler (onecycle, cosine or none) instead of plateau")
    if config.distill_targets:  # read again by run.prepare; a file of a few hundred kB
        read_teacher(fer.REPO_ROOT / config.distill_targets, data.sha256, int(data.split_mask("train").sum()))


def setup(config: TrainConfig, device, compile_mode: str | None) -> tuple[torch.device, slice, str]:
    """This process's device (its rank's under torchrun), its share of each global batch, and the compile mode."""
    device = distributed.setup(torch.device(device) if device is not None else None) or default_device()
    world = distributed.world_size()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} ranks: the global batch "
                         "must be a multiple of the number of processes")
    shard = slice(distributed.rank() * config.batch_size // world, (distributed.rank() + 1) * config.batch_size // world)
    if device.type == "cuda":
        distributed.use_fast_cuda_kernels()
    compile_mode = compile_mode or COMPILE_BY_DEFAULT.get((config.model, device.type), "off")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}; choose one of {COMPILE_MODES}")
    return device, shard, compile_mode


def start_clean(run_dir: Path, retrain: bool) -> None:
    """Rank 0 deletes the temporary files killed writers left and, to retrain, the run's own checkpoints."""
    if distributed.is_main():
        remove_stale_temporaries(run_dir)
        if retrain:
            for name in ("last.pt", "best.pt", "final.pt"):
                (run_dir / name).unlink(missing_ok=True)
    distributed.barrier()


def reuse_finished(config: TrainConfig, data, run_dir: Path, model_path, device) -> TrainResult | None:
    """The finished model of this config and data (model_path, else the run's final.pt, then published to
    model_path), or None when there is none."""
    for candidate in ([Path(model_path)] if model_path else []) + [run_dir / "final.pt"]:
        if candidate.exists():
            saved = load_checkpoint(candidate)
            if not config_differences(saved["config"], config) and saved.get("data_sha256") == data.sha256:
                if distributed.is_main() and model_path and candidate != Path(model_path):
                    publish_model(candidate, Path(model_path))
                distributed.barrier()
                return load_trained(Path(model_path) if model_path else candidate, device)
    return None


def resume_or_plan(run: Run, last_path: Path) -> None:
    """Go on from last.pt where a killed run left one; else, under a time budget, plan the epochs that fit."""
    config, state = run.config, run.state
    if last_path.exists():
        checkpoint = load_checkpoint(last_path)
        check_config(last_path, checkpoint, config)
        load_weights(run.model, checkpoint["model"], last_path, config)
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        if run.plateau is not None:
            run.plateau.load_state_dict(checkpoint["plateau"])
        if run.ema_model is not None:
            run.ema_model.load_state_dict(checkpoint["ema"])
        torch.set_rng_state(checkpoint["rng_cpu"])
        run.state = RunState(**{**asdict(state), **checkpoint["state"]})
    elif config.time_budget_min:
        epoch_seconds = estimate_epoch_seconds(run)
        planned = max(1, min(config.epochs, int(config.time_budget_min * 60 / epoch_seconds)))
        state.planned_epochs = distributed.from_main(planned)  # ranks time differently; rank 0 decides


def run_epoch(run: Run, epoch: int, progress: bool) -> dict:
    """One pass over the training faces in an order, with augmentations and dropout drawn from (seed, epoch),
    then the loss and accuracy on val: the epoch's row of the history."""
    config, state, device = run.config, run.state, run.device
    epoch_start = time.time()
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout of this epoch
    run.rng = epoch_generator(config, epoch, device)
    order = torch.randperm(len(run.images), generator=run.rng, device=device)
    run.model.train()
    total_loss = torch.zeros((), device=device)
    total_correct = torch.zeros((), device=device)
    total_faces = torch.zeros((), device=device)  # real batch sizes: a set under one batch is one short batch
    total_steps = state.planned_epochs * run.steps_per_epoch
    bar = step_bar(run.steps_per_epoch, f"epoch {epoch}/{state.planned_epochs}", progress and distributed.is_main())
    for i in bar:
        if run.plateau is None and config.scheduler != "none":
            for group in run.optimizer.param_groups:
                group["lr"] = scheduled_lr(config, state.step, total_steps)
        batch = order[i * config.batch_size:(i + 1) * config.batch_size]
        if run.compile_mode != "off":
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may reuse the last step's output buffers
        loss, logits = train_step(run, batch, epoch)
        if run.ema_model is not None:
            update_ema(run.ema_model, run.model, config.ema_decay)
        total_loss += loss
        total_correct += (logits.argmax(1) == run.labels[batch][run.shard]).sum()
        total_faces += len(logits)
        state.step += 1
    if hasattr(bar, "close"):
        bar.close()
    if run.ema_model is not None and config.ema_recompute_bn:
        recompute_bn_statistics(run.ema_model, run.images, run.policy.crop, config.seed)
    val_loss, val_acc = evaluate_loss_acc(run.eval_model, run.val_images, run.val_labels, run.policy.crop,
                                          EVAL_BATCH_SIZE.get(device.type, 512))
    if run.plateau is not None:
        run.plateau.step(val_loss)
    train_sums = distributed.sum_across_ranks(torch.stack([total_loss, total_correct.float(), total_faces])
                                              .to(distributed.default_collective_device())).tolist()
    return dict(epoch=epoch, train_loss=train_sums[0] / (run.steps_per_epoch * distributed.world_size()),
                train_acc=train_sums[1] / train_sums[2],
                val_loss=val_loss, val_acc=val_acc, lr=run.optimizer.param_groups[0]["lr"],
                seconds=time.time() - epoch_start)


def record_epoch(run: Run, row: dict, best_path: Path, run_start: float) -> None:
    """The epoch joins the history; its weights go to best.pt if val accuracy rose; the run stops early or when
    another epoch would pass the time budget, whose epochs are planned again from the measured epoch time."""
    config, state, epoch, val_acc = run.config, run.state, row["epoch"], row["val_acc"]
    state.history.append(row)
    state.epoch = epoch
    if val_acc > state.best_metric or config.refit:  # a refit keeps its last epoch: val is not held out
        state.best_metric, state.best_epoch = val_acc, epoch
        if distributed.is_main():
            save_atomically({"format": CHECKPOINT_FORMAT, "model": run.eval_model.state_dict(), "epoch": epoch,
                             "val_acc": val_acc}, best_path)
    if config.early_stop_patience and epoch - state.best_epoch >= config.early_stop_patience:
        state.stop_reason = f"early stopping: no better val accuracy for {config.early_stop_patience} epochs"
    state.wall_seconds = time.time() - run_start
    if config.time_budget_min:
        # Re-plan from the measured epoch time, so the schedule still ends when the budget does
        # even if the machine got slower or faster than the first estimate.
        remaining = config.time_budget_min * 60 - state.wall_seconds
        mean_epoch = float(np.mean([r["seconds"] for r in state.history]))
        state.planned_epochs = max(epoch, min(config.epochs, epoch + int(remaining // mean_epoch)))
        if state.planned_epochs == epoch and epoch < config.epochs:
            state.stop_reason = f"time budget of {config.time_budget_min:g} min: another epoch would not fit"
        state.planned_epochs, state.stop_reason = distributed.from_main(
            (state.planned_epochs, state.stop_reason))


def save_last(run: Run, row: dict, last_path: Path, progress: bool) -> None:
    """Rank 0: the epoch's line, and last.pt, all a killed run needs to go on as if it had never stopped."""
    if progress:
        print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.0f}s",
              flush=True)
    save_atomically({"format": CHECKPOINT_FORMAT, "config": asdict(run.config), "model": run.model.state_dict(),
                     "optimizer": run.optimizer.state_dict(),
                     "plateau": run.plateau.state_dict() if run.plateau is not None else {},
                     "ema": run.ema_model.state_dict() if run.ema_model is not None else {},
                     "rng_cpu": torch.get_rng_state(), "state": asdict(run.state)}, last_path)


def finish(run: Run, data, run_dir: Path, model_path) -> TrainResult:
    """The best epoch's weights, with config, history and what the run spent, in final.pt and published to
    model_path; every rank returns the weights that were published."""
    config, state, eval_model = run.config, run.state, run.eval_model
    if not state.stop_reason:
        state.stop_reason = f"all {state.planned_epochs} planned epochs run"
    distributed.barrier()  # rank 0 has written best.pt
    best = load_checkpoint(run_dir / "best.pt")
    eval_model.load_state_dict(best["model"])
    meta = dict(device=distributed.describe_device(run.device), torch=str(torch.__version__),
                wall_seconds=state.wall_seconds, epochs_run=state.epoch, epochs_asked=config.epochs,
                planned_epochs=state.planned_epochs, stop_reason=state.stop_reason,
                best_epoch=state.best_epoch, best_val_acc=state.best_metric, params=count_params(eval_model),
                num_train=len(run.images), num_val=len(run.val_images),
                **({"dedup_removed": state.dedup_removed} if state.dedup_removed else {}),
                **({"init_weights_sha256": file_sha256(fer.REPO_ROOT / config.init_weights)} if config.init_weights else {}),
                **({"compile": run.compile_mode} if run.compile_mode != "off" else {}))
    # With an EMA, the raw weights of the last epoch travel along, so a report can measure what the EMA adds.
    raw = {"raw_model": run.model.state_dict()} if run.ema_model is not None else {}
    halved = False
    if distributed.is_main():
        save_atomically({"format": CHECKPOINT_FORMAT, "config": asdict(config), "model": eval_model.state_dict(), **raw,
                         "num_classes": data.num_classes, "class_names": list(data.class_names),
                         "data_sha256": data.sha256, "history": state.history, "meta": meta}, run_dir / "final.pt")
        halved = bool(model_path) and publish_model(run_dir / "final.pt", Path(model_path))
    if distributed.from_main(halved):
        # Evaluate exactly the weights that are committed, so a fresh clone reproduces every number.
        eval_model.load_state_dict(load_checkpoint(Path(model_path))["model"])
    return TrainResult(eval_model.eval(), config, state.history, {**meta, "reused": False}, list(data.class_names))


def note_emulated_bf16(config: TrainConfig, device: torch.device) -> None:
    """A recipe asking for bf16 on a CPU that only emulates it trains many times slower than in fp32: say so, once,
    before the first epoch (a time-capped recipe then fits fewer epochs, and an uncapped one takes hours)."""
    if device.type == "cpu" and config.cpu_bf16 and not distributed.cpu_has_bf16() and distributed.is_main():
        print(f"note: cpu_bf16 on {distributed.cpu_name()}: bf16 is emulated without AVX512-BF16 or AMX, about 13x "
              "slower than fp32 on the flagship; cpu_bf16=False trains in fp32 (another model than the recipe's)")


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
    check_run_inputs(config, data)
    device, shard, compile_mode = setup(config, device, compile_mode)
    run_dir = Path(run_dir)
    start_clean(run_dir, retrain)
    finished = None if retrain else reuse_finished(config, data, run_dir, model_path, device)
    if finished is not None:
        return finished
    run = prepare(config, data, device, shard, compile_mode)
    note_emulated_bf16(config, device)
    resume_or_plan(run, run_dir / "last.pt")
    run_start = time.time() - run.state.wall_seconds
    while run.state.epoch < run.state.planned_epochs and not run.state.stop_reason:
        row = run_epoch(run, run.state.epoch + 1, progress)
        record_epoch(run, row, run_dir / "best.pt", run_start)
        if distributed.is_main():
            save_last(run, row, run_dir / "last.pt", progress)
            if on_epoch_end is not None:
                on_epoch_end(row["epoch"], row)
    return finish(run, data, run_dir, model_path)
