"""Whitening initialisation of a net's first convolution (airbench, Jordan 2024; after Coates & Ng 2011).

The first layer's filters start as the principal directions of the training faces' k x k patches, each scaled
by one over the square root of its variance: on the data, their outputs are uncorrelated with unit variance,
a whitened image. Each direction comes twice, with both signs, so the ReLU after the layer keeps both halves.
A k x k filter on one channel has k*k directions, so a first layer of 32 3x3 filters gets 18 whitening filters
and keeps 14 of its random ones. The filters go on training like every other weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import to_float

WHITENING_FACES = 5000  # training faces whose patches give the covariance
WHITENING_EPS = 5e-4  # added to each variance, so the faint high-frequency directions are not blown up


def patch_covariance(images_u8: torch.Tensor, size: int, chunk: int = 500) -> torch.Tensor:
    """Covariance (size*size, size*size) of every size x size patch of the normalized faces, summed a chunk of
    faces at a time (all patches of 5,000 faces at once would take 0.8 GB)."""
    total, outer, count = torch.zeros(size * size, dtype=torch.float64), 0.0, 0
    for start in range(0, len(images_u8), chunk):
        patches = F.unfold(to_float(images_u8[start:start + chunk]), size)  # (B, size*size, patches per face)
        patches = patches.transpose(1, 2).reshape(-1, size * size).double()
        total, outer, count = total + patches.sum(0), outer + patches.T @ patches, count + len(patches)
    mean = total / count
    return outer / count - torch.outer(mean, mean)


def whitening_filters(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    """(2 * size*size, 1, size, size): each principal direction over sqrt(its variance), then the same negated."""
    variances, directions = torch.linalg.eigh(patch_covariance(images_u8, size))
    filters = (directions / (variances + WHITENING_EPS).sqrt()).T.reshape(-1, 1, size, size)
    return torch.cat([filters, -filters]).float()


@torch.no_grad()
def whiten_first_conv(model: torch.nn.Module, images_u8: torch.Tensor, seed: int) -> int:
    """Overwrite the leading filters of the model's first convolution (one input channel, a square kernel) with
    whitening filters of WHITENING_FACES training faces chosen by `seed`; returns how many it set."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None or conv.in_channels != 1 or conv.kernel_size[0] != conv.kernel_size[1] or conv.groups != 1:
        raise ValueError("whiten_init needs a model whose first layer is a square convolution of the one grey "
                         f"channel; {type(model).__name__}'s first convolution is {conv}")
    chosen = torch.randperm(len(images_u8), generator=torch.Generator().manual_seed(seed))[:WHITENING_FACES]
    filters = whitening_filters(images_u8[chosen.to(images_u8.device)].cpu(), conv.kernel_size[0])
    count = min(len(filters), conv.out_channels)
    conv.weight[:count] = filters[:count].to(conv.weight)
    return count
