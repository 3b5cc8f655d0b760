"""The pieces one training step is made of, and what the loop measures between steps: the optimizer and the
learning-rate schedule, each epoch's random generator, one update (augmentation, mixup, bf16 autocast), the EMA of
the weights and its batch-norm statistics, the validation loss, and a first estimate of an epoch's time.
train.py strings them into the loop; benchmarks/train_throughput.py times train_step alone.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .augment import augment_batch, center_crop, mixup, to_float
from .config import TrainConfig
from .inference import predict_logits


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


def train_step(model, optimizer, loss_fn, config, policy, batch_u8, targets, gen, device, num_classes,
               shard=slice(None), flip_mask=None, teacher=None, teacher_weight=None):
    """One update. Augmentation (and mixup) runs on the global batch, then this rank keeps `shard` of it, so
    ranks draw the same random numbers as one process would and together see exactly its batch. `flip_mask`:
    which faces of the batch to mirror, for derandomized flips (else a coin flip each). `teacher`: a distribution
    over the classes for each of the batch's faces, mixed into the targets with weight `teacher_weight`
    (default config.distill_weight): a teacher's probabilities (distillation), or the annotators' votes (FER+'s
    probability mode, weight 1: the votes alone are the target)."""
    x = augment_batch(batch_u8, policy, gen, flip_mask)
    soft = None
    if teacher is not None:
        weight = config.distill_weight if teacher_weight is None else teacher_weight
        soft = torch.lerp(F.one_hot(targets, num_classes).float(), teacher.float(), weight)
    if policy.mixup:
        x, soft = mixup(x, soft if soft is not None else F.one_hot(targets, num_classes).float(), policy.mixup, gen)
    if soft is not None:
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


BN_RECOMPUTE_IMAGES = 4096  # training faces whose statistics an EMA's batch norms take (about 1/6 of an epoch)


@torch.no_grad()
def recompute_bn_statistics(model, images_u8, crop, seed, batch_size=512, limit=BN_RECOMPUTE_IMAGES) -> None:
    """Set every batch norm's running statistics to the exact mean and variance of its inputs over a fixed random
    `limit` training faces, seen as evaluation sees them (centre crop, no augmentation), through `model`'s own
    weights: what SWA's update_bn does for averaged weights (Izmailov et al. 2018)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below, not an exponential one
    chosen = torch.randperm(len(images_u8), generator=torch.Generator().manual_seed(seed))[:limit]
    was_training = model.training
    model.train()
    for start in range(0, len(chosen), batch_size):
        x = center_crop(to_float(images_u8[chosen[start:start + batch_size].to(images_u8.device)]), crop)
        model(x.contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def evaluate_loss_acc(model, images_u8, labels, crop, batch_size=512) -> tuple[float, float]:
    """Mean loss and accuracy; under torchrun each rank scores every world_size-th image and the sums are reduced."""
    shard = slice(distributed.rank(), None, distributed.world_size())
    logits = torch.from_numpy(predict_logits(model, images_u8[shard], batch_size=batch_size, crop=crop))
    targets = torch.as_tensor(labels[shard]).cpu()
    sums = torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                         (logits.argmax(1) == targets).sum().item()], dtype=torch.float64)
    sums = distributed.sum_across_ranks(sums.to(distributed.default_collective_device())).cpu()
    return (sums / len(labels)).tolist()


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
        train_step(model_copy, opt_copy, loss_fn, config, policy, images[idx], labels[idx], gen, device,
                    num_classes, shard)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.set_rng_state(rng_state)
    step_seconds = float(np.median(times[2:]))
    # Evaluation is a forward pass only, about a third of a training step per image.
    return step_seconds * (steps_per_epoch + n_val / config.batch_size / 3)
