"""A training run: what it holds while it trains (Run, RunState), how it is built from a config and the data
(prepare), and one update of it (train_step). train.py loops over epochs of these steps.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from . import data as fer, datasets, distributed
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, load_weights
from .augment import (AugmentPolicy, alternate_flip_bits, augment_batch, augment_pair, crop_for_epoch, make_policy,
                      mixup)
from .config import TrainConfig
from .distill import read_teacher
from .losses import balanced_class_weights, jensen_shannon, make_loss
from .models import build_model
from .step import epoch_generator, make_optimizer, uses_bf16
from .whitening import whiten_first_conv


@dataclass
class RunState:
    """What last.pt keeps of a run besides its weights, and a resumed run starts from (saved as a plain dict)."""
    planned_epochs: int
    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done
    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, accuracies, lr, seconds
    wall_seconds: float = 0.0
    best_metric: float = -1.0  # best val accuracy so far, at best_epoch
    best_epoch: int = 0
    stop_reason: str = ""  # why the run stopped early: a time budget or early stopping ("" while it goes on)
    dedup_removed: dict = field(default_factory=dict)  # faces config.dedup left out, by reason


@dataclass(kw_only=True)
class Run:
    """What one run holds while it trains."""
    config: TrainConfig
    device: torch.device
    shard: slice  # this rank's part of each global batch (all of it without torchrun)
    compile_mode: str
    num_classes: int
    images: torch.Tensor  # training faces, uint8 on the device for the whole run
    labels: torch.Tensor
    val_images: np.ndarray
    val_labels: np.ndarray
    policy: AugmentPolicy
    flip_bits: torch.Tensor | None  # each face's start for derandomized flips (policy.alternate_flips), else None
    teacher: torch.Tensor | None  # per training face: a teacher's softened probabilities, or FER+'s votes, else None
    teacher_weight: float | None  # how much of the target `teacher` is (None: config.distill_weight)
    model: torch.nn.Module
    net: torch.nn.Module  # what the training step calls: the model, wrapped for DDP and compiled as asked
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    ema_model: torch.nn.Module | None
    state: RunState
    rng: torch.Generator | None = None  # the current epoch's: its order, augmentations and mixup

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights the run is judged, kept and published by: the EMA's when there is one."""
        return self.ema_model if self.ema_model is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return max(len(self.images) // self.config.batch_size, 1)  # drop the last partial batch: BN needs company


# ---------------------------------------------------------------- building a run

def per_face_extras(config: TrainConfig, policy: AugmentPolicy, data, num_faces: int, device
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, float | None]:
    """What a run holds for each training face besides its label: the start of its derandomized flips
    (policy.alternate_flips), and a distribution the step mixes into its target with its weight: a teacher's
    softened probabilities (config.distill_targets, weight config.distill_weight) or the annotators' vote
    distribution (label_mode "probability", weight 1). Each None if unused."""
    flip_bits = alternate_flip_bits(num_faces, config.seed, device) if policy.alternate_flips else None
    teacher, weight = None, None
    if config.distill_targets:  # a path relative to the repository, so a config reads the same on every machine
        teacher = torch.from_numpy(read_teacher(fer.REPO_ROOT / config.distill_targets, data.sha256, num_faces,
                                                config.distill_temperature)).to(device)
    if config.label_mode == "probability":
        teacher, weight = torch.from_numpy(datasets.training_soft_labels(data, config.refit)).to(device), 1.0
    return flip_bits, teacher, weight


def dedup_keep(config: TrainConfig, data) -> tuple[np.ndarray, dict[str, int]]:
    """Which training faces (train, then val under refit, in that order) a run keeps, and how many `dedup` left
    out for each reason (data.dedup_removals; a face with both reasons counts under each): all kept without it."""
    parts = ["train", "val"] if config.refit else ["train"]
    training = np.logical_or.reduce([data.split_mask(s) for s in parts])
    if not config.dedup:
        return np.ones(int(training.sum()), bool), {}
    removals = data.dedup_removals(training)
    left_out = np.logical_or.reduce(list(removals.values()))
    keep = np.concatenate([~left_out[data.split_mask(s)] for s in parts])
    return keep, {"faces before": int(training.sum()), **{why: int(m.sum()) for why, m in removals.items()},
                  "faces left out": int(left_out.sum())}


def start_from(model, path: Path, config: TrainConfig) -> None:
    """A fine-tune's starting point: the finished model's weights (its raw weights, as the loop saves them)."""
    if not path.is_file():
        raise CheckpointError(f"init_weights {config.init_weights}: no such file under the repository; name a "
                              "finished model.pt (e.g. reports/vgg_gap/model.pt), relative to the repository")
    load_weights(model, load_checkpoint(path)["model"], path, config)


SCHEDULERS = ("plateau", "cosine", "onecycle", "none")


def check_recipe(config: TrainConfig, num_classes: int) -> None:
    """The config's named parts (augmentation, model and its kwargs, optimizer, loss, schedule) built once, small and
    on the CPU, so a misspelt name or field is a ValueError naming it before any data moves or a file is written."""
    try:
        make_policy(config.augment)
    except (KeyError, TypeError) as e:  # an unknown policy, corruption or AugmentPolicy field
        raise ValueError(f"augment: {e.args[0]}") from None
    try:
        with torch.random.fork_rng(devices=[]):  # leaves the global RNG as it was: the run seeds itself later
            model = build_model(config.model, num_classes, **config.model_kwargs)
    except TypeError as e:  # a model_kwargs field the model does not take
        raise ValueError(f"model_kwargs {config.model_kwargs}: {e.args[0]}") from None
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    try:
        make_optimizer(config, model)
        make_loss(config.loss, config.label_smoothing, config.focal_gamma)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if config.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {config.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


def prepare(config: TrainConfig, data, device: torch.device, shard: slice, compile_mode: str) -> Run:
    """The data on the device; the model (seeded from config.seed), its optimizer, loss, schedule and EMA, and
    what the run holds per face besides its label."""
    train_images, train_labels = data.split("train")
    val_images, val_labels = data.split("val")
    if config.refit:  # val joins training; it is still scored each epoch, as a training split
        train_images = np.concatenate([train_images, val_images])
        train_labels = np.concatenate([train_labels, val_labels])
    keep, removed = dedup_keep(config, data)
    train_images, train_labels = train_images[keep], train_labels[keep]
    images = torch.from_numpy(train_images).to(device)
    policy = make_policy(config.augment)
    if config.consistency and (not policy.corrupt or policy.mixup):
        raise ValueError(f"consistency={config.consistency} compares each face with its corrupted copy: give the "
                         "augment policy corrupt > 0 and no mixup, or set consistency=0")

    torch.manual_seed(config.seed)
    model = build_model(config.model, data.num_classes, **config.model_kwargs).to(device)
    if config.init_weights:
        start_from(model, fer.REPO_ROOT / config.init_weights, config)
    if config.whiten_init:
        whiten_first_conv(model, images, config.seed)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    weights = balanced_class_weights(train_labels, data.num_classes).to(device) if config.class_weights else None
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
               if config.scheduler == "plateau" else None)
    net = distributed.wrap(model, device, config.sync_batchnorm)
    if compile_mode != "off":  # only the step's module: model, ema_model and their state_dict keys stay as they are
        net = torch.compile(net, mode=None if compile_mode == "default" else compile_mode)
    flip_bits, teacher, teacher_weight = per_face_extras(config, policy, data, len(keep), device)
    kept = torch.from_numpy(keep).to(device)
    return Run(config=config, device=device, shard=shard, compile_mode=compile_mode, num_classes=data.num_classes,
               images=images, labels=torch.from_numpy(train_labels).to(device), val_images=val_images,
               val_labels=val_labels, policy=policy, flip_bits=flip_bits[kept] if flip_bits is not None else None,
               teacher=teacher[kept] if teacher is not None else None, teacher_weight=teacher_weight, model=model,
               net=net, optimizer=optimizer,
               loss_fn=make_loss(config.loss, config.label_smoothing, config.focal_gamma, weights).to(device),
               plateau=plateau, ema_model=copy.deepcopy(model) if config.ema_decay else None,
               state=RunState(planned_epochs=config.epochs, dedup_removed=removed))


# ---------------------------------------------------------------- one step

def epoch_policy(run: Run, epoch: int) -> AugmentPolicy:
    """The augmentation of an epoch: the run's, with its crop grown by progressive resizing."""
    return replace(run.policy, crop=crop_for_epoch(run.policy, epoch, run.state.planned_epochs))


def train_step(run: Run, batch: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One update on the training faces at positions `batch` (the global batch), drawing from run.rng. The
    augmentation (and mixup) runs on the global batch, then this rank keeps its shard, so ranks draw the same
    random numbers as one process would and together see exactly its batch. A face's target is its label, mixed
    with run.teacher's distribution where there is one (a teacher's probabilities, or FER+'s votes)."""
    config, labels = run.config, run.labels[batch]
    flip_mask = run.flip_bits[batch] ^ bool(epoch % 2) if run.flip_bits is not None else None
    if config.consistency:
        return consistency_step(run, batch, epoch, flip_mask)
    x = augment_batch(run.images[batch], epoch_policy(run, epoch), run.rng, flip_mask)
    soft = teacher_target(run, batch)
    if run.policy.mixup:
        x, soft = mixup(x, soft if soft is not None else F.one_hot(labels, run.num_classes).float(),
                        run.policy.mixup, run.rng)
    x, labels, soft = x[run.shard], labels[run.shard], soft[run.shard] if soft is not None else None
    logits = forward(run, x)
    loss = run.loss_fn(logits, soft if soft is not None else labels)
    update(run, loss)
    return loss.detach(), logits.detach()


def forward(run: Run, x: torch.Tensor) -> torch.Tensor:
    """The training net's float logits on a batch, in the run's memory format and under bf16 autocast where on."""
    if run.config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=uses_bf16(run.config, run.device)):
        return run.net(x).float()


def teacher_target(run: Run, batch: torch.Tensor) -> torch.Tensor | None:
    """The faces' labels mixed with run.teacher's distribution, or None where the run has no teacher."""
    if run.teacher is None:
        return None
    weight = run.config.distill_weight if run.teacher_weight is None else run.teacher_weight
    return torch.lerp(F.one_hot(run.labels[batch], run.num_classes).float(), run.teacher[batch].float(), weight)


def update(run: Run, loss: torch.Tensor) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()


def consistency_step(run: Run, batch: torch.Tensor, epoch: int, flip_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """train_step with config.consistency: each face clean and corrupted (augment_pair), both views in one forward
    pass, both views' loss against the face's target plus the weighted Jensen-Shannon divergence between their
    predictions. Returns the corrupted views' logits, the faces an ordinary robust step would have seen."""
    labels = run.labels[batch]
    clean, corrupted = augment_pair(run.images[batch], epoch_policy(run, epoch), run.rng, flip_mask)
    soft = teacher_target(run, batch)
    target = (soft if soft is not None else labels)[run.shard]
    logits = forward(run, torch.cat([clean[run.shard], corrupted[run.shard]]))
    clean_logits, corrupted_logits = logits.chunk(2)
    loss = (run.loss_fn(logits, torch.cat([target, target]))
            + run.config.consistency * jensen_shannon(clean_logits, corrupted_logits))
    update(run, loss)
    return loss.detach(), corrupted_logits.detach()


def estimate_epoch_seconds(run: Run) -> float:
    """Time a few steps on copies of the model and optimizer (nothing of the real run changes)."""
    rng_state = torch.get_rng_state()
    model, optimizer = copy.deepcopy((run.model, run.optimizer))  # one deepcopy: the optimizer follows the copies
    trial = replace(run, net=model, optimizer=optimizer, rng=epoch_generator(run.config, -1, run.device))
    times = []
    for _ in range(6):
        start = time.perf_counter()
        batch = torch.randint(0, len(run.images), (run.config.batch_size,), generator=trial.rng, device=run.device)
        train_step(trial, batch, run.state.planned_epochs)  # the last epoch's crop: the full one
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.set_rng_state(rng_state)
    step_seconds = float(np.median(times[2:]))
    # Evaluation is a forward pass only, about a third of a training step per image.
    return step_seconds * (run.steps_per_epoch + len(run.val_images) / run.config.batch_size / 3)
