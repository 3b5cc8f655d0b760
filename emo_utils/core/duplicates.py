"""Exact and near-duplicate faces, and blank frames: found once per dataset and cached beside its images.

FER2013 holds the same face more than once: byte-identical copies, and copies re-saved, shifted by a pixel,
brightened or re-compressed. A copy across train and test leaks a test answer into training; a copy across train
and val inflates the accuracy every choice is made on; a group with two labels is label noise.

Exact copies are found by their decoded bytes. Near copies in two steps, because no one measure is both cheap over
all 644 million pairs and robust to a one-pixel shift:
  1. candidates: imagehash's pHash (the signs of the 8x8 lowest frequencies of the 32x32 DCT against their median),
     compared for every pair; brightness, contrast and JPEG move few of its 64 bits, but a one-pixel shift of a
     48-px face moves up to a dozen (on 1,000 FER2013 faces shifted, brightened and re-saved: median 8, 96% within
     CANDIDATE_BITS), while unrelated faces differ in about 32;
  2. the measure: the best Pearson correlation of the two faces over shifts of up to one pixel (shift_correlation),
     invariant to brightness and contrast by construction; those 1,000 copies scored 0.92 or more, 99% over 0.98.
Two faces are near copies when they are candidates and correlate at NEAR_CORRELATION or more (notebook 01 shows pairs
at each threshold in CORRELATIONS and why this one); near copies are joined into groups through any chain of pairs.

A flat frame has no face and no correlation (every flat frame hashes alike), so blank and near-blank frames (pixel
std under NEAR_BLANK_STD) are counted on their own and never joined into a near group.

The cache (find_duplicates' record) names faces by their file names, never by pixels, and is keyed by the source's
sha256 like the image cache in data.py. It depends on nothing else in the package, so data.py can build split
masks from it.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .files import write_atomically

CACHE_VERSION = 2
HASH = "imagehash.phash, 8x8 (64 bits)"
CANDIDATE_BITS = 12  # pHash bits two faces may differ in and still be compared (pHash distances are even)
CORRELATIONS = (0.8, 0.85, 0.9, 0.95, 0.98)  # thresholds notebook 01 counts and shows; pairs under the lowest are dropped
# Chosen by looking at the pairs notebook 01 shows: from 0.9 up nearly every pair looked at was one photograph
# (re-saved, shifted, brightened, watermarked); between 0.85 and 0.9 many are two people in the same pose, and the
# chains of such pairs join hundreds of faces into one group (FER2013: the largest group is 26 faces at 0.9, 385 at
# 0.85), so a lower threshold would take faces no model has seen out of the clean test.
NEAR_CORRELATION = 0.9
NEAR_BLANK_STD = 3.0  # pixel std (0..255) under which a frame holds no face: a flat or almost flat grey
_BLOCK = 2048  # hashes compared at a time: 2048 x 35887 distances is about 70 MB of uint64
_PAIR_BLOCK = 4096  # pairs correlated at a time


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """imagehash.phash of each 48x48 uint8 face as one uint64."""
    return np.array([int(str(imagehash.phash(Image.fromarray(image))), 16) for image in images], dtype=np.uint64)


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every pair i < j whose hashes differ in at most max_distance bits (each pair once)."""
    firsts, seconds, distances = [], [], []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start:start + _BLOCK]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, start:])  # only j >= start: each pair once
        i, j = np.nonzero(distance <= max_distance)
        keep = i < j  # j counts from start, like i: drop the diagonal and the lower triangle
        firsts.append(i[keep] + start)
        seconds.append(j[keep] + start)
        distances.append(distance[i[keep], j[keep]])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(distances).astype(np.int64)


def shift_correlation(images: np.ndarray, first: np.ndarray, second: np.ndarray, max_shift: int = 1) -> np.ndarray:
    """Per pair (first[k], second[k]): the best Pearson correlation of the two faces' overlapping parts over every
    shift of up to max_shift pixels in each direction. A copy shifted, brightened or re-compressed scores near 1."""
    best = np.full(len(first), -1.0, np.float32)
    size = images.shape[1]
    for start in range(0, len(first), _PAIR_BLOCK):
        a = images[first[start:start + _PAIR_BLOCK]].astype(np.float32)
        b = images[second[start:start + _PAIR_BLOCK]].astype(np.float32)
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                x = a[:, max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)].reshape(len(a), -1)
                y = b[:, max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)].reshape(len(b), -1)
                x = x - x.mean(axis=1, keepdims=True)
                y = y - y.mean(axis=1, keepdims=True)
                norms = np.sqrt(np.einsum("ij,ij->i", x, x) * np.einsum("ij,ij->i", y, y))
                correlation = np.einsum("ij,ij->i", x, y) / np.maximum(norms, 1e-6)
                np.maximum(best[start:start + _PAIR_BLOCK], correlation, out=best[start:start + _PAIR_BLOCK])
    return best


def exact_group_ids(images: np.ndarray) -> np.ndarray:
    """A group number per face: faces with the same decoded bytes share one."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1)).view(np.dtype((np.void, images[0].size)))
    return np.unique(rows.ravel(), return_inverse=True)[1].ravel()


def find_duplicates(images: np.ndarray, names: np.ndarray) -> dict:
    """The JSON record of a dataset's duplicates, by file name: exact groups, the candidate pairs that correlate at
    min(CORRELATIONS) or more with their pHash bits apart and correlation, and blank and near-blank frames."""
    names = [str(n) for n in names]
    std = images.reshape(len(images), -1).std(axis=1)
    group_of = exact_group_ids(images)
    sizes = np.bincount(group_of)
    exact = {}
    for index in np.flatnonzero(sizes[group_of] > 1):
        exact.setdefault(int(group_of[index]), []).append(names[index])
    faces = np.flatnonzero(std >= NEAR_BLANK_STD)  # flat frames all hash alike: never near copies of anything
    i, j, bits = near_pairs(perceptual_hashes(images[faces]), CANDIDATE_BITS)
    i, j = faces[i], faces[j]
    correlation = shift_correlation(images, i, j)
    kept = correlation >= min(CORRELATIONS)
    return {"version": CACHE_VERSION, "hash": HASH, "candidate_bits": CANDIDATE_BITS, "near_blank_std": NEAR_BLANK_STD,
            "count": len(names), "exact_groups": list(exact.values()),
            "near_pairs": [[names[a], names[b], int(d), round(float(c), 4)]
                           for a, b, d, c in zip(i[kept], j[kept], bits[kept], correlation[kept])],
            "blank": [names[k] for k in np.flatnonzero(std == 0)],
            "near_blank": [names[k] for k in np.flatnonzero((std > 0) & (std < NEAR_BLANK_STD))]}


def cached_duplicates(images: np.ndarray, names: np.ndarray, path: Path | None) -> dict:
    """find_duplicates' record, read from `path` when it is there and whole, else found and written there."""
    if path is not None and path.exists():
        try:
            record = json.loads(path.read_text())
            if record.get("version") == CACHE_VERSION and record.get("count") == len(names):
                return record
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # damaged: found again below and overwritten
    record = find_duplicates(images, names)
    if path is not None:
        write_atomically(path, lambda f: f.write(json.dumps(record).encode()))
    return record


class Duplicates:
    """A dataset's duplicate record as arrays over its faces (in the loader's order)."""

    def __init__(self, record: dict, names: np.ndarray):
        self.record = record
        index = {str(n): k for k, n in enumerate(names)}
        self.count = len(names)
        self.exact_group = np.full(self.count, -1)
        for g, members in enumerate(record["exact_groups"]):
            self.exact_group[[index[m] for m in members]] = g
        pairs = record["near_pairs"]
        self.pair_i = np.array([index[p[0]] for p in pairs], dtype=np.int64)
        self.pair_j = np.array([index[p[1]] for p in pairs], dtype=np.int64)
        self.pair_bits = np.array([p[2] for p in pairs], dtype=np.int64)
        self.pair_correlation = np.array([p[3] for p in pairs], dtype=np.float64)
        self.blank = np.zeros(self.count, bool)
        self.blank[[index[n] for n in record["blank"]]] = True
        self.near_blank = self.blank.copy()
        self.near_blank[[index[n] for n in record["near_blank"]]] = True

    def near_group(self, threshold: float = NEAR_CORRELATION) -> np.ndarray:
        """A group number per face, -1 for a face with no near copy: connected components of the candidate pairs
        that correlate at `threshold` or more (exact copies among them; flat frames excepted)."""
        if threshold < min(CORRELATIONS):
            raise ValueError(f"pairs are kept down to a correlation of {min(CORRELATIONS)}; {threshold} is below it")
        keep = self.pair_correlation >= threshold
        graph = coo_matrix((np.ones(keep.sum()), (self.pair_i[keep], self.pair_j[keep])),
                           shape=(self.count, self.count))
        _, component = connected_components(graph, directed=False)
        sizes = np.bincount(component)
        return np.where(sizes[component] > 1, component, -1)

    def group(self, kind: str, threshold: float = NEAR_CORRELATION) -> np.ndarray:
        """'exact' or 'near' group numbers (near groups include the exact ones, flat frames aside)."""
        if kind == "exact":
            return self.exact_group
        if kind == "near":
            return self.near_group(threshold)
        raise ValueError(f"unknown duplicate kind {kind!r}; choose 'exact' or 'near'")


def groups_touching(group: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per face: whether its group (group >= 0) holds a face in `mask` other than itself."""
    in_mask = np.bincount(group[group >= 0], weights=mask[group >= 0], minlength=group.max() + 2)
    counts = np.zeros(len(group))
    counts[group >= 0] = in_mask[group[group >= 0]] - mask[group >= 0]
    return counts > 0


def conflicting_groups(group: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per face: whether its group holds more than one label."""
    member = group >= 0
    out = np.zeros(len(group), bool)
    if not member.any():
        return out
    low = np.full(group.max() + 1, labels.max() + 1)
    high = np.full(group.max() + 1, -1)
    np.minimum.at(low, group[member], labels[member])
    np.maximum.at(high, group[member], labels[member])
    out[member] = low[group[member]] != high[group[member]]
    return out
