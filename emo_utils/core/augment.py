"""Batch augmentation on tensors, on the training device (airbench-style: no PIL, no per-image loop).

Every function takes a float batch (B, 1, H, W) and a torch.Generator, so an epoch's augmentation
is fixed by its seed and a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .corrupt import CORRUPT, STRENGTH_LIMITS, TRAINED_CORRUPTIONS, random_corruptions
from .tta import center_crop  # noqa: F401 (augment.center_crop: the crop a model is evaluated at)

# FER2013 train-set pixel statistics (mean 129.4, std 65.0 on the 0..255 scale), rounded.
PIXEL_MEAN, PIXEL_STD = 0.507, 0.255


@dataclass
class AugmentPolicy:
    flip: bool = True  # horizontal flip with p=0.5 (faces are roughly left-right symmetric)
    # Derandomized flips (airbench, Jordan 2024): each face draws one bit for the whole run and is flipped on
    # even epochs when it is set, on odd epochs when it is not, so every two epochs show it both ways.
    alternate_flips: bool = False
    vflip: float = 0.0  # vertical flip probability (Model X/Y's published recipe uses it)
    translate: int = 0  # random shift of up to this many pixels, reflect padding
    crop: int = 0  # random crop of this size (0: no crop); evaluation takes the centre crop
    # Progressive resizing (small crops first): random crops grow from this size to `crop` over the first
    # GROW_FRACTION of the run, in steps of 4 px; the early, smaller steps are faster, so more epochs fit a budget.
    crop_start: int = 0
    rotate: float = 0.0  # max rotation in degrees
    scale: float = 0.0  # max zoom in or out, as a fraction
    brightness: float = 0.0  # max additive brightness change, in units of the [0, 1] pixel scale
    contrast: float = 0.0  # max multiplicative contrast change, as a fraction
    erase: float = 0.0  # random-erasing probability (Zhong et al. 2020), one box of 2-20% of the image
    mixup: float = 0.0  # mixup alpha (Zhang et al. 2018); 0 turns it off
    # Camera corruptions (corrupt.py): the share of faces given one of `corruptions` at a random strength, before
    # the geometric changes, as a photo is noisy or compressed before a detector crops and turns the face.
    corrupt: float = 0.0
    corruptions: tuple = TRAINED_CORRUPTIONS
    # {corruption: [low, high]} replacing corrupt.py's default strength ranges (RANGES, which stop at the suite's
    # severity 3), e.g. {"gaussian_noise": [0.01, 0.24]} to train on noisier faces than the suite shows.
    corrupt_ranges: dict | None = None
    # Detector-style framing: each face turned, zoomed and shifted as a detector and aligner frame it, drawn from
    # their measured percentiles (FRAMING_PERCENTILES) of "scale" (over 1: tighter), "dx", "dy" (px of the 48 px
    # crop) and "angle" (degrees, counter-clockwise), as benchmarks/pipeline_frames.py reports them. Replaces
    # rotate and scale when given.
    framing: dict | None = None


POLICIES = {
    "none": AugmentPolicy(flip=False),
    "flip": AugmentPolicy(),
    # Arriaga et al.'s Keras ImageDataGenerator: rotation 10, shifts 0.1, zoom 0.1, horizontal flip.
    "keras_light": AugmentPolicy(translate=5, rotate=10, scale=0.1),
    "crop_flip": AugmentPolicy(translate=4),
    "heavy": AugmentPolicy(vflip=0.5, rotate=15, scale=0.15, translate=4, brightness=0.2, contrast=0.2),
}
# The robust recipes' additions to a policy (issue 38): half the faces under a camera corruption, and the framing a
# detector and aligner give a face (a few degrees of tilt, a few percent of zoom) on top of the policy's crops.
ROBUST = dict(corrupt=0.5, rotate=15, scale=0.1)


def make_policy(policy: str | dict | AugmentPolicy) -> AugmentPolicy:
    if isinstance(policy, AugmentPolicy):
        return policy
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise KeyError(f"unknown augmentation policy {policy!r}; choose one of {sorted(POLICIES)} or pass a dict")
        return POLICIES[policy]
    known = [f.name for f in fields(AugmentPolicy)]
    unknown = sorted(set(policy) - set(known))
    if unknown:
        raise KeyError(f"unknown augmentation field(s) {unknown}; AugmentPolicy has {known}")
    made = AugmentPolicy(**policy)
    unknown = sorted(set(made.corrupt_ranges or {}) - set(CORRUPT))
    if unknown:
        raise KeyError(f"corrupt_ranges names unknown corruption(s) {unknown}; choose from {sorted(CORRUPT)}")
    for name, strengths in (made.corrupt_ranges or {}).items():
        lowest, highest = STRENGTH_LIMITS[name]
        if not (isinstance(strengths, (list, tuple)) and len(strengths) == 2
                and lowest <= strengths[0] <= strengths[1] <= highest):
            raise ValueError(f"corrupt_ranges[{name!r}] is {strengths!r}: give [low, high] with "
                             f"{lowest} <= low <= high <= {highest}")
    return made


GROW_FRACTION = 0.75  # progressive resizing reaches the full crop here and trains its last quarter at it


def crop_for_epoch(policy: AugmentPolicy, epoch: int, planned_epochs: int) -> int:
    """The random-crop size of an epoch (1-based) under progressive resizing, else the policy's crop."""
    if not (policy.crop and policy.crop_start):
        return policy.crop
    progress = min((epoch - 1) / max(planned_epochs, 1) / GROW_FRACTION, 1.0)
    return min(policy.crop, policy.crop_start + 4 * int((policy.crop - policy.crop_start) * progress / 4))


def alternate_flip_bits(n: int, seed: int, device) -> torch.Tensor:
    """One random bit per training face for the whole run, the start of its derandomized flips."""
    return torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)).bool().to(device)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 to normalized (B, 1, H, W) float32."""
    return (images_u8.unsqueeze(1).float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


# Test-time views (centre crop, mirror, whole face, ten crops) are tta.py's table; its centre crop is evaluation's.


def _uniform(n, low, high, gen, device):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_translate(x, pixels, gen):
    """Shift each image by up to `pixels` in x and y (reflect padding, then a per-image crop)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pixels + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pixels + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None].expand(b, c, h, w + 2 * pixels)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def random_crop(x, size, gen):
    b, c, h, w = x.shape
    top = torch.randint(0, h - size + 1, (b,), generator=gen, device=x.device)
    left = torch.randint(0, w - size + 1, (b,), generator=gen, device=x.device)
    rows = (top[:, None] + torch.arange(size, device=x.device)[None])[:, None, :, None].expand(b, c, size, w)
    out = x.gather(2, rows)
    cols = (left[:, None] + torch.arange(size, device=x.device)[None])[:, None, None, :].expand(b, c, size, size)
    return out.gather(3, cols)


def random_affine(x, degrees, scale, gen):
    """Rotation by up to `degrees` and zoom by up to `scale`, one affine_grid for the batch."""
    b = x.shape[0]
    angle = _uniform(b, -degrees, degrees, gen, x.device) * math.pi / 180
    zoom = 1 + _uniform(b, -scale, scale, gen, x.device)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


FRAMING_PERCENTILES = (5, 25, 50, 75, 95)  # the percentiles a framing gives per quantity (predict/framing.py's)


def sample_percentiles(values, n, gen, device) -> torch.Tensor:
    """n draws from a distribution known by its FRAMING_PERCENTILES: a uniform draw mapped through the piecewise-
    linear quantile function between them, the tails held at the outer percentiles."""
    u = torch.rand(n, generator=gen, device=device) * 100
    known = torch.tensor(FRAMING_PERCENTILES, dtype=torch.float32, device=device)
    values = torch.as_tensor(values, dtype=torch.float32, device=device)
    u = u.clamp(known[0], known[-1])
    k = torch.searchsorted(known, u, right=True).clamp(1, len(known) - 1)
    share = (u - known[k - 1]) / (known[k] - known[k - 1])
    return values[k - 1] + share * (values[k] - values[k - 1])


def framing_affine(x, framing: dict, gen):
    """Each face framed as a detector and aligner frame it: the original face zoomed by `scale`, turned by `angle`
    and its centre moved by (dx, dy) crop px, each drawn from its measured percentiles (sample_percentiles)."""
    b, _, h, w = x.shape
    scale, dx, dy, angle = (sample_percentiles(framing[q], b, gen, x.device) for q in ("scale", "dx", "dy", "angle"))
    angle = angle * math.pi / 180
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps each output (crop) point to its input (face) point: the inverse of "zoom, turn
    # counter-clockwise on screen (y points down), then shift", in coordinates where the image spans -1..1.
    tx, ty = 2 * dx / w, 2 * dy / h
    theta = torch.stack([torch.stack([cos, -sin, -(cos * tx - sin * ty)], 1),
                         torch.stack([sin, cos, -(sin * tx + cos * ty)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erase(x, p, gen):
    b, _, h, w = x.shape
    area = _uniform(b, 0.02, 0.2, gen, x.device) * h * w
    aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), gen, x.device))
    eh = (area * aspect).sqrt().clamp(1, h).long()
    ew = (area / aspect).sqrt().clamp(1, w).long()
    top = (torch.rand(b, generator=gen, device=x.device) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=gen, device=x.device) * (w - ew + 1)).long()
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    box = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
           & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
    apply = torch.rand(b, generator=gen, device=x.device) < p
    return x.masked_fill((box & apply[:, None, None])[:, None], 0.0)


def lighting(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator) -> torch.Tensor:
    """Random brightness and contrast of faces on the [0, 1] scale, when the policy asks for them."""
    if not (policy.brightness or policy.contrast):
        return x
    b = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + _uniform(b, -policy.contrast, policy.contrast, gen, x.device).view(b, 1, 1, 1)
    d = _uniform(b, -policy.brightness, policy.brightness, gen, x.device).view(b, 1, 1, 1)
    return ((x - mean) * c + mean + d).clamp(0, 1)


def augment_batch(images_u8: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator,
                  flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, H, W) to an augmented, normalized float batch (B, 1, H', W'). `flip_mask` (B,), when given,
    says which faces to mirror instead of a coin flip (derandomized flips)."""
    x = lighting(images_u8.unsqueeze(1).float() / 255.0, policy, gen)
    if policy.corrupt:
        x = random_corruptions(x, policy.corrupt, tuple(policy.corruptions), gen, policy.corrupt_ranges)
    return geometry((x - PIXEL_MEAN) / PIXEL_STD, policy, gen, flip_mask)


def augment_pair(images_u8: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator,
                 flip_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of each face under one draw of framing, crop, flip and erasing: as augment_batch gives it
    without its corruption, and the same with it (a consistency loss compares the net's answers on the two).
    The pair travels through the geometry as the two channels of one image, so both move alike."""
    x = lighting(images_u8.unsqueeze(1).float() / 255.0, policy, gen)
    corrupted = random_corruptions(x, policy.corrupt, tuple(policy.corruptions), gen, policy.corrupt_ranges)
    both = geometry((torch.cat([x, corrupted], 1) - PIXEL_MEAN) / PIXEL_STD, policy, gen, flip_mask)
    return both[:, :1], both[:, 1:]


def geometry(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator,
             flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Framing (or turns and zooms), shifts, crops, flips and erasing of a normalized batch (B, C, H, W), each
    face's draw shared by its C channels."""
    b = x.shape[0]
    if policy.framing:
        x = framing_affine(x, policy.framing, gen)
    elif policy.rotate or policy.scale:
        x = random_affine(x, policy.rotate, policy.scale, gen)
    if policy.translate:
        x = random_translate(x, policy.translate, gen)
    if policy.crop:
        x = random_crop(x, policy.crop, gen)
    if policy.flip:
        flip = flip_mask if flip_mask is not None else torch.rand(b, generator=gen, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if policy.vflip:
        flip = torch.rand(b, generator=gen, device=x.device) < policy.vflip
        x = torch.where(flip[:, None, None, None], x.flip(2), x)
    if policy.erase:
        x = random_erase(x, policy.erase, gen)
    return x


def sample_gamma(shape: float, n: int, gen: torch.Generator, device, candidates: int = 16) -> torch.Tensor:
    """n draws of Gamma(shape, 1) on `device` from `gen`, without a host synchronisation (torch's own sampler
    takes no generator). Marsaglia and Tsang's method, vectorised: each draw gets `candidates` proposals and
    keeps its first accepted one (each is accepted with probability over 0.95 for shape >= 1, so 16 never
    all fail in practice; if they did, the mode is kept). Shape below 1: Gamma(a) = Gamma(a + 1) * U^(1/a)."""
    a = shape + 1 if shape < 1 else shape
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn(n, candidates, generator=gen, device=device)
    u = torch.rand(n, candidates, generator=gen, device=device)
    v = (1 + c * z) ** 3
    accept = (v > 0) & (torch.log(u) < 0.5 * z ** 2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first accepted proposal (0 if none)
    draws = torch.where(accept.any(dim=1), (d * v).gather(1, first).squeeze(1), torch.full_like(v[:, 0], d))
    if shape < 1:
        draws = draws * torch.rand(n, generator=gen, device=device) ** (1 / shape)
    return draws


def sample_beta(alpha: float, gen: torch.Generator, device) -> torch.Tensor:
    """One draw of Beta(alpha, alpha) as a 0-d tensor on `device`: X / (X + Y) with X, Y ~ Gamma(alpha)."""
    x, y = sample_gamma(alpha, 2, gen, device)
    return x / (x + y)


def mixup(x, targets, alpha, gen):
    """Mix each image with a shuffled partner; targets become soft (B, C). The mixing weight stays on the
    device (no .item()), so a GPU step never waits for the host."""
    lam = sample_beta(alpha, gen, x.device).to(x.dtype)
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    return torch.lerp(x[perm], x, lam), torch.lerp(targets[perm], targets, lam.to(targets.dtype))
