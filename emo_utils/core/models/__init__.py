"""Model registry: every family registers its builder functions, each under the function's own name (as timm's
register_model does, so a name is written once); configs refer to models by that name."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import torch
from torch import nn

REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: `@register def vgg_gap(num_classes=7, **kwargs)` makes build_model("vgg_gap", ...) call it."""
    name = builder.__name__
    if name in REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    REGISTRY[name] = builder
    return builder


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(REGISTRY)}")
    return REGISTRY[name](num_classes=num_classes, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 48) -> int:
    """Forward FLOPs (2 per multiply-add) of one 1-channel image, counted by torch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, image_size, image_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


# Importing a family registers it: every module in this folder is imported, so a new model is one file here.
for _family in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_family}")
