"""The pieces a training step and the loop around it are made of: the optimizer and the learning-rate schedule,
each epoch's random generator, when bf16 autocast is on, the EMA of the weights and its batch-norm statistics,
and the validation loss. run.py's train_step and train.py's loop string them together.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import distributed
from .augment import center_crop, to_float
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
