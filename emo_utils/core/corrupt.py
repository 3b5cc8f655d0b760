"""Training-time corruptions: what a worse camera, a smaller face or a compressed upload does to a face (issue 38).

A robust recipe draws, for a share of each batch, one of these corruptions per face at a random strength, so the
net learns faces as users' photos and webcam frames deliver them, not only FER2013's clean crops. Each strength
range reaches the harshest severity of the evaluation suite (reports/corruptions.py, FER2013-C), so training
covers what the suite asks. The suite's other types (brightness, contrast, occlusions) are never simulated here:
they are the held-out group a robust recipe is also read on, as ImageNet-C practice keeps unseen corruptions.

Every function takes a float batch (B, 1, H, W) on the [0, 1] scale and a torch.Generator, so a resumed run
draws the same corruptions as an uninterrupted one. The names are the suite's.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Default strength ranges (low, high); the harsher end is the suite's severity 3 (reports/corruptions.py
# SEVERITIES). A policy may replace any of them (AugmentPolicy.corrupt_ranges), to train past the suite's harshest.
NOISE_SIGMA = (0.01, 0.16)  # on the [0, 1] scale
BLUR_SIGMA = (0.5, 2.0)  # pixels
JPEG_QUALITY = (5, 50)  # PIL quality; lower is worse
LOW_RES_SIDE = (16, 40)  # pixels a 48 px face is shrunk to before being scaled back
TRAINED_CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "low_resolution")
RANGES = {"gaussian_noise": NOISE_SIGMA, "gaussian_blur": BLUR_SIGMA, "jpeg": JPEG_QUALITY,
          "low_resolution": LOW_RES_SIDE}
# The strengths each corruption can draw at all: a range a policy sets must lie inside (blur needs sigma > 0, JPEG a
# PIL quality, low resolution an even side of 2 px up to the face's own 48).
STRENGTH_LIMITS = {"gaussian_noise": (0.0, 1.0), "gaussian_blur": (0.1, 16.0), "jpeg": (1, 100),
                   "low_resolution": (2, 48)}


def _uniform(n, low, high, gen, device):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def gaussian_noise(x, gen, sigmas=NOISE_SIGMA):
    sigma = _uniform(len(x), *sigmas, gen, x.device).view(-1, 1, 1, 1)
    return (x + sigma * torch.randn(x.shape, generator=gen, device=x.device)).clamp(0, 1)


def gaussian_blur(x, gen, sigmas=BLUR_SIGMA):
    """Each face blurred with its own sigma: one separable kernel per face, applied as a grouped convolution."""
    b, _, h, w = x.shape
    sigma = _uniform(b, *sigmas, gen, x.device)
    radius = min(int(np.ceil(3 * sigmas[1])), min(h, w) - 1)  # reflect padding needs less than the side
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K)
    faces = F.pad(x.view(1, b, h, w), (radius,) * 4, mode="reflect")
    faces = F.conv2d(faces, kernel.view(b, 1, -1, 1), groups=b)
    faces = F.conv2d(faces, kernel.view(b, 1, 1, -1), groups=b)
    return faces.view(b, 1, h, w)


def jpeg(x, gen, qualities=JPEG_QUALITY):
    """PIL's encoder at a quality drawn per face (the suite's codec), on the CPU: 48 px faces take microseconds."""
    low, high = int(qualities[0]), int(qualities[1])
    quality = torch.randint(low, high + 1, (len(x),), generator=gen, device=x.device).tolist()
    faces = (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    def round_trip(face, q):
        buffer = io.BytesIO()
        Image.fromarray(face).save(buffer, "JPEG", quality=q)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("L"))
    out = np.stack([round_trip(face, q) for face, q in zip(faces, quality)])
    return torch.as_tensor(out, device=x.device)[:, None].to(x.dtype) / 255


def low_resolution(x, gen, sides=LOW_RES_SIDE):
    """Shrunk to a side drawn per face (even sizes, so faces of one size go through one resize) and scaled back."""
    b, _, h, w = x.shape
    side = torch.randint(int(sides[0]) // 2, int(sides[1]) // 2 + 1, (b,), generator=gen, device=x.device) * 2
    out = x.clone()
    for s in side.unique().tolist():
        chosen = side == s
        small = F.interpolate(x[chosen], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        out[chosen] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


CORRUPT = {"gaussian_noise": gaussian_noise, "gaussian_blur": gaussian_blur, "jpeg": jpeg,
           "low_resolution": low_resolution}


def random_corruptions(x: torch.Tensor, p: float, kinds: tuple, gen: torch.Generator,
                       ranges: dict | None = None) -> torch.Tensor:
    """Each face, with probability p, under one of `kinds` drawn uniformly (a random choice per image, AugMix's
    simpler cousin), at a strength drawn from its range (`ranges`, {kind: (low, high)}, else RANGES); the others
    unchanged."""
    ranges = {**RANGES, **(ranges or {})}
    b = x.shape[0]
    apply = torch.rand(b, generator=gen, device=x.device) < p
    kind = torch.randint(0, len(kinds), (b,), generator=gen, device=x.device)
    out = x.clone()
    for k, name in enumerate(kinds):
        chosen = apply & (kind == k)
        if chosen.any():
            out[chosen] = CORRUPT[name](x[chosen], gen, tuple(ranges[name]))
    return out
