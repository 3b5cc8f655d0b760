"""A dataset's files read into arrays, in place (nothing is ever extracted to disk, so a zip entry with an
absolute or `..` path cannot write anywhere): the Kaggle FER2013 zip or the same tree in a folder
(train/<class>/Training_*.jpg, test/<class>/{Public,Private}Test_*.jpg), the challenge's fer2013.csv, and any
train/ + test/ class-folder tree; every image decoded to 48x48 grayscale, every problem a DataError that names the
file and the fix; and the checksum that keys data.py's cache.
"""
from __future__ import annotations

import csv
import hashlib
import io
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

IMAGE_SIZE = 48
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Source-split codes stored per image. Training images become train or val later.

TRAIN, TEST_PUBLIC, TEST_PRIVATE, TEST_UNLABELLED_SPLIT = 0, 1, 2, 3
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


def unsafe_member(name: str) -> bool:
    """A zip entry whose path is absolute, names a drive or climbs out with '..': never read, by the dataset
    loader here or by emo-predict (predict/inputs.py)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (len(parts) > 0 and ":" in parts[0])


def _parse_member(path: str, where: str) -> tuple[str, str, str] | None:
    """(top, class, file) for a path like [prefix/]train/<class>/<file>; None for anything else."""
    p = PurePosixPath(path)
    if unsafe_member(path):
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
