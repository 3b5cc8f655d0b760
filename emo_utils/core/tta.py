"""Test-time views: the one table of every set of views a model can be scored under, its name, its title in words
and the function that makes it. The core predicts with it (inference.predict_logits), the reports score and name
every model under it (reports/views.py, the pages, the leaderboard) and emo-predict offers it (--views): a view set
added here is scored for every model, titled on every page and offered by the command line. It imports no torch
(the views are tensor slices and flips), so emo-predict lists the table in its --help at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre size x size of a batch (B, 1, H, W); the whole of it for size 0 or the image's own size."""
    if not size or size >= x.shape[-1]:
        return x
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def _ten_crop(x: torch.Tensor, crop: int) -> list[torch.Tensor]:
    if not crop or crop >= x.shape[-1]:
        raise ValueError("ten_crop needs a model trained on random crops (its policy's crop is smaller than the image)")
    h, w = x.shape[-2:]
    corners = [x[..., top:top + crop, left:left + crop] for top in (0, h - crop) for left in (0, w - crop)]
    crops = corners + [center_crop(x, crop)]
    return crops + [c.flip(3) for c in crops]


@dataclass(frozen=True)
class ViewSet:
    name: str  # as configs, caches, metrics.json and --views spell it
    title: str  # in words, for tables and figure titles
    make: Callable[[torch.Tensor, int], list[torch.Tensor]]  # (normalized batch, model's crop) -> views to average
    needs_crop: bool  # differs from the centre-crop sets only for a model trained on random crops


# In order of cost (the fewest views first, which best_views prefers on a tie).
VIEW_SETS = {v.name: v for v in (
    ViewSet("center", "centre crop", lambda x, crop: [center_crop(x, crop)], False),
    ViewSet("flip", "centre + mirror", lambda x, crop: [center_crop(x, crop), center_crop(x, crop).flip(3)], False),
    # A net with global pooling takes any size, and the whole face shows more of it than the training crop.
    ViewSet("full_flip", "whole face + mirror", lambda x, crop: [x, x.flip(3)], True),
    # The four corner crops and the centre crop, each with its mirror (Krizhevsky et al. 2012).
    ViewSet("ten_crop", "ten crops", _ten_crop, True),
)}
TTA_VIEWS = tuple(VIEW_SETS)


def view_name(tta: bool | str) -> str:
    """A views argument as its name: True is 'flip' (what every notebook's `tta=True` has always meant), False
    'center'; an unknown name is a ValueError listing the table."""
    name = {False: "center", True: "flip"}[tta] if isinstance(tta, bool) else tta
    if name not in VIEW_SETS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_VIEWS)} "
                         "(or True/False)")
    return name


def view_title(name: str) -> str:
    """A view set in words ('ten crops'); a name the table lacks (an ensemble's 'each member's best') as given."""
    return VIEW_SETS[name].title if name in VIEW_SETS else name


def tta_views(x: torch.Tensor, crop: int, tta: bool | str) -> list[torch.Tensor]:
    """The views of a normalized batch (B, 1, H, W) whose logits are averaged at test time."""
    return VIEW_SETS[view_name(tta)].make(x, crop)


def views_for(crop: int) -> list[str]:
    """The view sets that differ for a model: without a training crop, full_flip is flip and ten crops have no
    corners to take."""
    return [name for name, view in VIEW_SETS.items() if crop or not view.needs_crop]
