"""A facial-expression dataset found, loaded, split and cached: FERData, the whole dataset in memory with its
splits (train, a stratified seeded val carved from it, the test splits and their deduplicated versions).

Where the loader looks: the path given, $EMO_DATA, data/, ../shared/data/. What it reads (readers.py): the Kaggle
FER2013 zip or folder, fer2013.csv, or any train/ + test/ class-folder tree. Every source is decoded once into
uint8 arrays (N x 48 x 48) and cached under .cache/ keyed by the source's sha256, so a later load is one np.load.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .duplicates import (CACHE_VERSION as DUPLICATES_VERSION, Duplicates, cached_duplicates, conflicting_groups,
                         groups_touching)
from .files import write_atomically
from .readers import HOW_TO_GET, TEST_PRIVATE, TEST_PUBLIC, TRAIN, DataError, read_source, source_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_VERSION = 1

SPLITS = ("train", "val", "test_public", "test_private", "test_all")
# Each test split without the faces that have an exact or near copy in the Training folder (train or val) and
# without blank frames (duplicates.py): what a model does on faces it cannot have seen.
CLEAN_SPLITS = {"test_private_clean": "test_private", "test_public_clean": "test_public", "test_all_clean": "test_all"}
# Each split as every page, table and figure names it (code keeps the keys above): one name per split.
SPLIT_TITLES = {"train": "Train", "val": "Validation", "test_private": "PrivateTest", "test_public": "PublicTest",
                "test_all": "Whole test folder", "test_private_clean": "PrivateTest, deduplicated",
                "test_public_clean": "PublicTest, deduplicated", "test_all_clean": "Whole test folder, deduplicated"}

# FER2013 as Kaggle ships it; a file with this name and another digest is refused.
KNOWN_SHA256 = {"fer2013.zip": "a74203b5def525775166f8d9c2f766764cb6d52fbbeacf03bd84db2eadc37ba8"}
FER2013_COUNTS = {"train": 28709, "test_public": 3589, "test_private": 3589}

@dataclass
class FERData:
    """A whole dataset in memory: images, labels, and where each image came from."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, index into class_names
    source_split: np.ndarray  # (N,) int8: TRAIN, TEST_PUBLIC, TEST_PRIVATE or TEST_UNLABELLED_SPLIT
    names: np.ndarray  # (N,) str, file name or CSV row inside the source
    class_names: list[str]
    sha256: str
    source: str
    val_fraction: float = 0.1
    val_seed: int = 0
    duplicates_path: Path | None = None  # where the duplicate record is cached; None: found in memory, not kept
    _val_mask: np.ndarray | None = field(default=None, repr=False)
    _duplicates: Duplicates | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def val_mask(self) -> np.ndarray:
        if self._val_mask is None:
            self._val_mask = stratified_val_mask(self.labels, self.source_split == TRAIN,
                                                 self.val_fraction, self.val_seed)
        return self._val_mask

    def available_splits(self) -> list[str]:
        present = set(np.unique(self.source_split).tolist())
        return (["train", "val"] + (["test_public"] if TEST_PUBLIC in present else [])
                + (["test_private"] if TEST_PRIVATE in present else []) + ["test_all"])

    @property
    def duplicates(self) -> Duplicates:
        """Exact and near copies and blank frames (duplicates.py), found on first use and cached with the data."""
        if self._duplicates is None:
            self._duplicates = Duplicates(cached_duplicates(self.images, self.names, self.duplicates_path), self.names)
        return self._duplicates

    def clean_splits(self) -> list[str]:
        """The deduplicated test splits this dataset has (CLEAN_SPLITS)."""
        return [clean for clean, raw in CLEAN_SPLITS.items() if raw in self.available_splits()]

    def seen_in_training(self) -> np.ndarray:
        """Per face: an exact or near copy of it is in the Training folder (train or val), or it is a blank frame."""
        dup, is_train = self.duplicates, self.source_split == TRAIN
        return (dup.near_blank | groups_touching(dup.group("exact"), is_train)
                | groups_touching(dup.group("near"), is_train))

    def dedup_removals(self, training: np.ndarray) -> dict[str, np.ndarray]:
        """The faces of `training` (a mask) that a `dedup` run leaves out, by reason: an exact or near copy of a
        held-out face (val or test: every face outside `training`), or a member of a group with two labels."""
        copies, conflicts = np.zeros(len(self.labels), bool), np.zeros(len(self.labels), bool)
        for kind in ("exact", "near"):
            group = self.duplicates.group(kind)
            copies |= groups_touching(group, ~training)
            conflicts |= conflicting_groups(group, self.labels)
        return {"copies of held-out faces": training & copies, "in groups with conflicting labels": training & conflicts}

    def split_mask(self, name: str) -> np.ndarray:
        if name in CLEAN_SPLITS:
            return self.split_mask(CLEAN_SPLITS[name]) & ~self.seen_in_training()
        is_train = self.source_split == TRAIN
        masks = {
            "train": is_train & ~self.val_mask,
            "val": self.val_mask,
            "test_public": self.source_split == TEST_PUBLIC,
            "test_private": self.source_split == TEST_PRIVATE,
            "test_all": ~is_train,
        }
        if name not in masks:
            raise KeyError(f"unknown split {name!r}; choose one of {SPLITS + tuple(CLEAN_SPLITS)}")
        if name in ("test_public", "test_private") and name not in self.available_splits():
            raise DataError(f"{self.source} has no PublicTest_/PrivateTest_ file-name prefixes, so it has "
                            f"no {name} split; use 'test_all'.")
        return masks[name]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one split: train, val, test_public, test_private or test_all."""
        mask = self.split_mask(name)
        return self.images[mask], self.labels[mask]

    def counts(self) -> dict[str, np.ndarray]:
        """Images per class for every available split."""
        return {s: np.bincount(self.split(s)[1], minlength=self.num_classes) for s in self.available_splits()}


def stratified_val_mask(labels: np.ndarray, pool: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Pick round(fraction * n_c) images of every class c from `pool`, reproducibly for a seed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[pool]):
        members = np.flatnonzero(pool & (labels == c))
        n_val = int(fraction * len(members) + 0.5)  # round half up: a class of 5 still gets a val image
        mask[rng.permutation(members)[:n_val]] = True
    return mask


# ---------------------------------------------------------------- finding

def candidate_paths(path: str | os.PathLike | None = None) -> list[Path]:
    """Where we look, in order: explicit path, $EMO_DATA, data/, ../shared/data/."""
    places = []
    if path is not None:
        places.append(Path(path))
    if os.environ.get("EMO_DATA"):
        places.append(Path(os.environ["EMO_DATA"]))
    places += [REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "data"]
    return places


def resolve_source(place: Path) -> Path | None:
    """The dataset inside `place` (a zip, a csv, or a folder with train/ and test/), if any."""
    if place.is_file():
        return place
    if not place.is_dir():
        return None
    if (place / "train").is_dir() and (place / "test").is_dir():
        return place
    for pattern in ("fer2013.zip", "fer2013.csv", "*.zip", "*.csv"):
        found = sorted(place.glob(pattern))
        if found:
            return found[0]
    for child in sorted(place.iterdir()):  # an extracted archive one folder down
        if (child / "train").is_dir() and (child / "test").is_dir():
            return child
    return None


def find_dataset(path: str | os.PathLike | None = None) -> Path:
    """The first dataset found among candidate_paths(); a DataError says where we looked otherwise."""
    places = candidate_paths(path)
    # A place the user named (argument or $EMO_DATA) must hold the data: never fall through to another dataset.
    for named, how in ((path, "the path given"), (os.environ.get("EMO_DATA") or None, "$EMO_DATA")):
        if named is not None:
            if resolve_source(Path(named)) is None:
                problem = ("does not exist" if not Path(named).exists() else
                           "is a folder without a zip, a CSV or train/ and test/ folders")
                raise DataError(f"{named} ({how}) holds no dataset: it {problem}. {HOW_TO_GET}")
            return resolve_source(Path(named))
    for place in places:
        source = resolve_source(place)
        if source is not None:
            return source
    looked = "\n  ".join(str(p) for p in places)
    raise DataError(f"No dataset found. Looked in:\n  {looked}\n{HOW_TO_GET}")


def cache_dir() -> Path:
    return Path(os.environ.get("EMO_CACHE", REPO_ROOT / ".cache" / "datasets"))


def load_dataset(path: str | os.PathLike | None = None, val_fraction: float = 0.1, val_seed: int = 0,
                 verify: bool = True, use_cache: bool = True) -> FERData:
    """Find, checksum, decode (or load from cache) and split a dataset."""
    source = find_dataset(path)
    sha = source_sha256(source)
    expected = KNOWN_SHA256.get(source.name)
    if verify and expected and sha != expected:
        raise DataError(f"{source}: sha256 {sha} does not match the known FER2013 digest {expected}. The file is "
                        "damaged or is another dataset: download it again, or rename it if it is a different "
                        "dataset.")
    cached = cache_dir() / f"{sha}.v{CACHE_VERSION}.npz"
    arrays = None
    if use_cache and cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                arrays = (z["images"], z["labels"], z["splits"], z["names"], [str(c) for c in z["class_names"]])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            warnings.warn(f"{cached}: damaged cache ({e}); decoding {source} again.", stacklevel=2)
    if arrays is None:
        arrays, converted = read_source(source)
        if converted:
            warnings.warn(f"{source}: {converted} image(s) were not 48x48 grayscale and were converted.",
                          stacklevel=2)
        if use_cache:
            images, labels, splits, names, class_names = arrays
            write_atomically(cached, lambda f: np.savez(f, images=images, labels=labels, splits=splits, names=names,
                                                        class_names=np.array(class_names)))
    images, labels, splits, names, class_names = arrays
    return FERData(images=images, labels=labels, source_split=splits, names=names, class_names=class_names,
                   sha256=sha, source=str(source), val_fraction=val_fraction, val_seed=val_seed,
                   duplicates_path=cache_dir() / f"{sha}.duplicates.v{DUPLICATES_VERSION}.json" if use_cache else None)
