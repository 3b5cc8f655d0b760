"""FER2013-C: a fixed, seeded suite of corruptions and occlusions of 48x48 faces (issue 29, part 3).

In the spirit of ImageNet-C (Hendrycks & Dietterich, ICLR 2019): each corruption at a few severities, applied to
a fixed test split, so a model's accuracy under each says how much of its clean number survives a worse camera,
a smaller face, a tilted head or a covered eye or mouth. Every operation is torchvision's (transforms.v2.functional),
on uint8 tensors (JPEG is PIL's encoder), and the result is quantised back to uint8 like any image a user
would feed the model.

A corruption at a severity is a pure function of (images, seed): the random parts (noise, rotation direction,
the square's place) come from a generator seeded by the suite's seed, the corruption and the severity, never from
the global RNG, so the suite is the same on every run and in any order. Changing anything here changes what a
cached score means: bump SUITE_VERSION, and every model is scored again (robustness.py keys its cache on it).
"""
from __future__ import annotations

import io
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from ..core.augment import ROBUST
from ..core.corrupt import TRAINED_CORRUPTIONS

# 2: robustness.py scores a stratified sample of SUITE_FACES faces of the split, not the whole split.
SUITE_VERSION = 2
SUITE_SEED = 0

# Rows of the eyes and the mouth in FER2013's roughly aligned 48x48 crops: the darkest row of the mean training
# face in its upper half (row 17, the eyes and brows) and in its lower half (row 38, the mouth).
EYES_ROW, MOUTH_ROW = 17, 38

# Severity 1..3 of each corruption, mildest first. Units: noise sigma and nothing else on the [0, 1] intensity
# scale; blur sigma in pixels; JPEG quality (lower is worse); brightness and contrast factors (1 is unchanged);
# the side in pixels a face is shrunk to before being scaled back to 48; rotation in degrees (the direction drawn
# per face); an occluding band's height, or a square's side, in pixels.
SEVERITIES = {
    "gaussian_noise": (0.04, 0.08, 0.16),
    "gaussian_blur": (0.75, 1.25, 2.0),
    "jpeg": (30, 15, 5),
    "brightness": (1.3, 1.6, 2.0),
    "contrast": (0.6, 0.4, 0.2),
    "low_resolution": (32, 24, 16),
    "rotation": (10, 20, 30),
    "eyes_occluded": (6, 10, 14),
    "mouth_occluded": (6, 10, 14),
    "random_square": (12, 18, 24),
}
CORRUPTIONS = tuple(SEVERITIES)

# Seen and held-out types (issue 38), as ImageNet-C keeps corruptions no training policy may see: the robust
# recipes draw the core's trained corruptions (core/corrupt.py) and turn faces as the detector's framing does
# (core/augment.py ROBUST's rotate), which is the suite's rotation; they never simulate the other types. A recipe's
# own augmentation may still resemble a held-out type: random erasing's boxes are akin to the occlusions.
SEEN = tuple(TRAINED_CORRUPTIONS) + (("rotation",) if ROBUST.get("rotate") else ())
HELD_OUT = tuple(c for c in CORRUPTIONS if c not in SEEN)


def conditions() -> list[tuple[str, int]]:
    """Every (corruption, severity) of the suite, severities counted from 1."""
    return [(name, level) for name, values in SEVERITIES.items() for level in range(1, len(values) + 1)]


def condition_name(corruption: str, severity: int) -> str:
    return f"{corruption}/{severity}"


def _generator(corruption: str, severity: int, seed: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, and the suite must be the same in every process.
    return np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity])


def _occlude_rows(x: torch.Tensor, centre_row: int, height: int) -> torch.Tensor:
    top = max(centre_row - height // 2, 0)
    return F.erase(x, top, 0, height, x.shape[-1], torch.tensor(0, dtype=x.dtype))


def _random_square(x: torch.Tensor, side: int, rng: np.random.Generator) -> torch.Tensor:
    size = x.shape[-1]
    tops, lefts = rng.integers(0, size - side + 1, size=(2, len(x)))
    black = torch.tensor(0, dtype=x.dtype)
    return torch.stack([F.erase(face, int(t), int(l), side, side, black) for face, t, l in zip(x, tops, lefts)])


def _rotate(x: torch.Tensor, degrees: float, rng: np.random.Generator) -> torch.Tensor:
    # A head tilts either way: the direction is drawn per face; corners the rotation uncovers are black.
    clockwise = torch.as_tensor(rng.random(len(x)) < 0.5)
    out = x.clone()
    for sign, chosen in ((-1, clockwise), (1, ~clockwise)):
        if chosen.any():
            out[chosen] = F.rotate(x[chosen], sign * degrees, interpolation=F.InterpolationMode.BILINEAR, fill=[0])
    return out


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    # PIL's encoder, not F.jpeg: torchvision 0.29 deprecates its own image codecs (torchvision.io) and warns.
    def round_trip(face: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(face).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("L"))
    return torch.as_tensor(np.stack([round_trip(face) for face in x[:, 0].numpy()]))[:, None]


def _gaussian_noise(x: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    # F.gaussian_noise draws from torch's global generator: seed a forked copy of it, so the noise is fixed for
    # the suite's seed and the caller's RNG is left where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**62)))
        noisy = F.gaussian_noise(F.to_dtype(x, torch.float32, scale=True), sigma=sigma, clip=True)
    return F.to_dtype(noisy, torch.uint8, scale=True)


def corrupt(images_u8: np.ndarray, corruption: str, severity: int, seed: int = SUITE_SEED) -> np.ndarray:
    """The faces (N, 48, 48) uint8 under one corruption at one severity (1 = mildest), as uint8."""
    if corruption not in SEVERITIES:
        raise KeyError(f"unknown corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}")
    values = SEVERITIES[corruption]
    if not 1 <= severity <= len(values):
        raise ValueError(f"{corruption} has severities 1 to {len(values)}, not {severity}")
    value, rng = values[severity - 1], _generator(corruption, severity, seed)
    x = torch.as_tensor(np.ascontiguousarray(images_u8))[:, None]  # (N, 1, H, W), as torchvision expects
    size = list(x.shape[-2:])
    if corruption == "gaussian_noise":
        out = _gaussian_noise(x, value, rng)
    elif corruption == "gaussian_blur":
        kernel = 2 * int(np.ceil(3 * value)) + 1  # +-3 sigma
        out = F.gaussian_blur(x, [kernel, kernel], [value, value])
    elif corruption == "jpeg":
        out = _jpeg(x, value)
    elif corruption == "brightness":
        out = F.adjust_brightness(x, value)
    elif corruption == "contrast":
        out = F.adjust_contrast(x, value)
    elif corruption == "low_resolution":
        small = F.resize(x, [value, value], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        out = F.resize(small, size, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    elif corruption == "rotation":
        out = _rotate(x, value, rng)
    elif corruption == "eyes_occluded":
        out = _occlude_rows(x, EYES_ROW, value)
    elif corruption == "mouth_occluded":
        out = _occlude_rows(x, MOUTH_ROW, value)
    else:  # random_square
        out = _random_square(x, value, rng)
    return out[:, 0].numpy()
