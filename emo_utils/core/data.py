"""Find, read, validate and cache a facial-expression dataset.

Sources we read in place (nothing is ever extracted to disk, so a zip entry
with an absolute or `..` path cannot write anywhere):
  - the Kaggle FER2013 zip: train/<class>/Training_*.jpg, test/<class>/{Public,Private}Test_*.jpg
  - the same tree extracted to a folder
  - the original challenge CSV, fer2013.csv (emotion, pixels, Usage)
  - any image-folder dataset with train/ and test/ class folders, any set of classes

Every source is decoded once into uint8 arrays (N x 48 x 48) and cached under
.cache/ keyed by the source's sha256, so a later load is a single np.load.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .duplicates import (CACHE_VERSION as DUPLICATES_VERSION, Duplicates, cached_duplicates, conflicting_groups,
                         groups_touching)
from .files import write_atomically

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 48
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CACHE_VERSION = 1

# Source-split codes stored per image. Training images become train or val later.
TRAIN, TEST_PUBLIC, TEST_PRIVATE, TEST_UNLABELLED_SPLIT = 0, 1, 2, 3
SPLITS = ("train", "val", "test_public", "test_private", "test_all")
# Each test split without the faces that have an exact or near copy in the Training folder (train or val) and
# without blank frames (duplicates.py): what a model does on faces it cannot have seen.
CLEAN_SPLITS = {"test_private_clean": "test_private", "test_public_clean": "test_public", "test_all_clean": "test_all"}

# FER2013 as Kaggle ships it; a file with this name and another digest is refused.
KNOWN_SHA256 = {"fer2013.zip": "a74203b5def525775166f8d9c2f766764cb6d52fbbeacf03bd84db2eadc37ba8"}
FER2013_COUNTS = {"train": 28709, "test_public": 3589, "test_private": 3589}
# Label order of the original fer2013.csv (Goodfellow et al. 2013).
CSV_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_USAGE = {"Training": TRAIN, "PublicTest": TEST_PUBLIC, "PrivateTest": TEST_PRIVATE}

HOW_TO_GET = (
    "Get FER2013 from Kaggle (https://www.kaggle.com/datasets/msambare/fer2013, 'archive.zip', "
    "or the challenge's fer2013.csv), then put it at data/fer2013.zip, set EMO_DATA=/path/to/it, "
    "or pass the path explicitly. The project never redistributes the data."
)


class DataError(ValueError):
    """A dataset problem; the message names the file and the fix."""


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


# ---------------------------------------------------------------- reading

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(root: Path) -> str:
    """Digest of every folder's and image file's relative path and every image's bytes, in sorted order."""
    digest = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_dir() or q.suffix.lower() in IMAGE_SUFFIXES):
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def source_sha256(source: Path) -> str:
    return folder_sha256(source) if source.is_dir() else file_sha256(source)


def test_split_of(file_name: str) -> int:
    if file_name.startswith("PublicTest_"):
        return TEST_PUBLIC
    if file_name.startswith("PrivateTest_"):
        return TEST_PRIVATE
    return TEST_UNLABELLED_SPLIT


class _Decoder:
    """Decodes image bytes to 48x48 uint8 and counts the images it had to convert."""

    def __init__(self):
        self.converted = 0

    def __call__(self, data: bytes, where: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if img.mode != "L" or img.size != (IMAGE_SIZE, IMAGE_SIZE):
                    self.converted += 1
                    img = to_gray_48(img)
                return np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{where}: cannot decode image ({e}). The file is corrupt or truncated: "
                            "re-download the dataset or delete this file.") from e


def to_gray(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit grayscale at full resolution: 16/32-bit pixels scaled by their maximum,
    transparency composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("L")


def to_gray_48(img: Image.Image) -> Image.Image:
    """Any PIL image to 48x48 8-bit grayscale, the way the training data is stored."""
    return to_gray(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)


def _parse_member(path: str, where: str) -> tuple[str, str, str] | None:
    """(top, class, file) for a path like [prefix/]train/<class>/<file>; None for anything else."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or path.startswith(("/", "\\")) or ":" in p.parts[0]:
        raise DataError(f"{where}: unsafe entry {path!r} (absolute or '..' path). The archive is not a "
                        "dataset we trust: re-download it from its source.")
    parts = p.parts
    for i in range(len(parts) - 2):
        if parts[i] in ("train", "test") and i + 3 == len(parts):
            if Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and not parts[-1].startswith("."):
                return parts[i], parts[i + 1], parts[i + 2]
    return None


def _assemble(items: list[tuple[str, str, str, bytes | np.ndarray]], source: Path,
              class_dirs: dict[str, set[str]], decode: _Decoder) -> tuple:
    """Turn (top, class, file, bytes) items into arrays after checking the class folders."""
    train_classes, test_classes = class_dirs["train"], class_dirs["test"]
    if not train_classes or not test_classes:
        raise DataError(f"{source}: expected train/<class>/ and test/<class>/ folders with images "
                        f"(found train classes {sorted(train_classes)}, test classes {sorted(test_classes)}). "
                        f"{HOW_TO_GET}")
    if train_classes != test_classes:
        only_train, only_test = sorted(train_classes - test_classes), sorted(test_classes - train_classes)
        raise DataError(f"{source}: train and test have different classes (only in train: {only_train}, "
                        f"only in test: {only_test}). Add the missing class folder or remove the extra one.")
    class_names = sorted(train_classes)
    counts = {(top, c): 0 for top in ("train", "test") for c in class_names}
    for top, cls, _, _ in items:
        counts[top, cls] += 1
    empty = [f"{top}/{c}" for (top, c), n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{source}: class folder(s) {empty} hold no images. Add images or remove the "
                        "class from both train/ and test/.")
    index = {c: i for i, c in enumerate(class_names)}
    images = np.stack([decode(data, f"{source}: {top}/{cls}/{name}") for top, cls, name, data in items])
    labels = np.array([index[cls] for _, cls, _, _ in items], dtype=np.int64)
    splits = np.array([TRAIN if top == "train" else test_split_of(name) for top, _, name, _ in items],
                      dtype=np.int8)
    names = np.array([f"{top}/{cls}/{name}" for top, cls, name, _ in items])
    return images, labels, splits, names, class_names


def read_zip(source: Path, decode: _Decoder) -> tuple:
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as e:
        raise DataError(f"{source}: not a readable zip ({e}). It is corrupt or truncated: download it again.") from e
    items, class_dirs = [], {"train": set(), "test": set()}
    with archive:
        for info in archive.infolist():
            parsed = _parse_member(info.filename, str(source))
            if info.is_dir():
                dir_parts = PurePosixPath(info.filename).parts
                if len(dir_parts) >= 2 and dir_parts[-2] in ("train", "test"):
                    class_dirs[dir_parts[-2]].add(dir_parts[-1])
                continue
            if parsed is None:
                continue
            top, cls, name = parsed
            class_dirs[top].add(cls)
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError) as e:
                raise DataError(f"{source}: entry {info.filename} is corrupt ({e}). Download the zip again.") from e
            items.append((top, cls, name, data))
    return _assemble(items, source, class_dirs, decode)


def read_folder(source: Path, decode: _Decoder) -> tuple:
    items, class_dirs = [], {"train": set(), "test": set()}
    for top in ("train", "test"):
        for class_dir in sorted(p for p in (source / top).iterdir() if p.is_dir() and not p.name.startswith(".")):
            class_dirs[top].add(class_dir.name)
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    items.append((top, class_dir.name, f.name, f.read_bytes()))
    return _assemble(items, source, class_dirs, decode)


def read_csv(source: Path) -> tuple:
    """The challenge CSV. Labels are remapped so classes are in alphabetical order, as for folders."""
    class_names = sorted(CSV_EMOTIONS)
    remap = {i: class_names.index(name) for i, name in enumerate(CSV_EMOTIONS)}
    images, labels, splits, names = [], [], [], []
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{source}: missing column(s) {sorted(missing)}; a FER2013 CSV has the header "
                            "'emotion,pixels,Usage'.")
        for row_number, row in enumerate(reader, start=2):
            where = f"{source}, line {row_number}"
            if row["Usage"] not in CSV_USAGE:
                raise DataError(f"{where}: unknown Usage {row['Usage']!r}; expected one of {sorted(CSV_USAGE)}. "
                                "Fix or delete the row.")
            try:
                emotion = int(row["emotion"])
                pixels = np.array(row["pixels"].split(), dtype=np.int64)
            except (ValueError, AttributeError) as e:
                raise DataError(f"{where}: unreadable emotion or pixels ({e}). Fix or delete the row.") from e
            if emotion not in remap:
                raise DataError(f"{where}: emotion {emotion} is not in 0..6. Fix or delete the row.")
            if pixels.size != IMAGE_SIZE * IMAGE_SIZE or pixels.min() < 0 or pixels.max() > 255:
                raise DataError(f"{where}: expected {IMAGE_SIZE * IMAGE_SIZE} pixel values in 0..255, got "
                                f"{pixels.size}. The row is truncated or corrupt: fix or delete it.")
            images.append(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8))
            labels.append(remap[emotion])
            splits.append(CSV_USAGE[row["Usage"]])
            names.append(f"row{row_number}")
    if not images:
        raise DataError(f"{source}: the CSV holds no rows. {HOW_TO_GET}")
    return np.stack(images), np.array(labels, np.int64), np.array(splits, np.int8), np.array(names), class_names


def read_source(source: Path) -> tuple[tuple, int]:
    """Decode a source into (images, labels, splits, names, class_names) and the number converted."""
    decode = _Decoder()
    if source.is_dir():
        if not ((source / "train").is_dir() and (source / "test").is_dir()):
            raise DataError(f"{source}: a dataset folder needs train/ and test/ subfolders. {HOW_TO_GET}")
        arrays = read_folder(source, decode)
    elif source.suffix.lower() == ".csv":
        arrays = read_csv(source)
    elif zipfile.is_zipfile(source) or source.suffix.lower() == ".zip":
        arrays = read_zip(source, decode)
    else:
        raise DataError(f"{source}: not a zip, a CSV or a folder with train/ and test/. {HOW_TO_GET}")
    return arrays, decode.converted


# ---------------------------------------------------------------- cache

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
