"""Datasets other than FER2013, each read from the layout its authors publish, and each with its own validation
protocol. data.py reads FER2013 (and any train/ + test/ folder of class folders; readers.py reads the files); this module names a dataset
and dispatches: `load_named(name, path, label_mode)` returns a FERData whose splits follow that dataset's
protocol, so the loop, the views and the reports need nothing new.

| name      | what the user puts at `path`                                        | val (selection only) | reported test      |
|-----------|---------------------------------------------------------------------|----------------------|--------------------|
| fer2013   | the Kaggle zip, folder or fer2013.csv (data.py)                      | 10% of train         | PrivateTest, all   |
| ferplus   | a folder with fer2013.csv and microsoft/FERPlus's fer2013new.csv    | PublicTest (FER+ valid) | PrivateTest (FER+ test) |
| rafdb     | RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/     | 10% of train         | test               |
| affectnet | train/<class>/ and val/<class>/ (AffectNet's val is its test set)   | 10% of train         | val/               |
| ckplus    | <class>/S<subject>_<sequence>_<frame>.png, no split of its own      | one subject fold     | another subject fold |
| any other | train/<class>/ and test/<class>/ (readers.py's folder reader)           | 10% of train         | test/              |

Nothing is downloaded and nothing is redistributed: the user brings the files (README, "Datasets").
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as fer, readers
from .readers import TEST_PRIVATE, TEST_PUBLIC, TEST_UNLABELLED_SPLIT, TRAIN, DataError
from .data import FERData
from .files import write_atomically

DEFAULT_DATASET = "fer2013"
LABEL_MODES = ("majority", "probability")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")  # a dataset's name is a folder under reports/


@dataclass
class NamedData(FERData):
    """A FERData that knows which dataset it is and, for FER+, each face's annotator vote distribution."""
    dataset: str = DEFAULT_DATASET
    label_mode: str = "majority"
    soft_labels: np.ndarray | None = None  # (N, C) float32 vote distributions (label_mode "probability"), else None

    def soft_split(self, name: str) -> np.ndarray:
        if self.soft_labels is None:
            raise DataError(f"{self.dataset} has no vote distributions: train it with label_mode='majority'.")
        return self.soft_labels[self.split_mask(name)]


def dataset_of(data: FERData) -> str:
    """The dataset a FERData holds: its name where datasets.py loaded it, FER2013 where data.py did."""
    return getattr(data, "dataset", DEFAULT_DATASET)


def training_soft_labels(data: FERData, refit: bool) -> np.ndarray:
    """The vote distributions of the faces the loop trains on, in the loop's order (train, then val for a refit)."""
    soft = data.soft_split("train")
    return np.concatenate([soft, data.soft_split("val")]) if refit else soft


def check_data(data: FERData, dataset: str, label_mode: str, distilling: bool = False) -> None:
    """The data is the dataset a config names, loaded with the labels it asks for (train.train, before anything
    is written): a mismatch is a ValueError naming the fix."""
    if dataset_of(data) != dataset:
        raise ValueError(f"the config trains on dataset {dataset!r} but the data is {dataset_of(data)!r} "
                         f"({data.source}): load it with datasets.load_named({dataset!r}, path), or set "
                         f"dataset={dataset_of(data)!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode {label_mode!r}: choose one of {LABEL_MODES}")
    if getattr(data, "label_mode", "majority") != label_mode:
        raise ValueError(f"the config asks for label_mode={label_mode!r} but the data was loaded with "
                         f"{getattr(data, 'label_mode', 'majority')!r}: load it with "
                         f"datasets.load_named({dataset!r}, path, label_mode={label_mode!r})")
    if label_mode == "probability" and distilling:
        raise ValueError("label_mode='probability' and distillation both replace the targets: choose one")
    check_val_faces(data)


def check_val_faces(data: FERData) -> None:
    """Every class with training faces has a validation face, which selects epochs and views: a stratified share
    of a class rounds to none below `need` faces (5 at 10%). A DataError names the classes and the fix, before
    anything trains (else the first epoch's validation fails on an empty split)."""
    counts = data.counts()
    need = math.ceil(0.5 / data.val_fraction)  # stratified_val_mask rounds half up
    short = [(name, int(n)) for name, n, v in zip(data.class_names, counts["train"] + counts["val"], counts["val"])
             if v == 0 and 0 < n < need]
    if short:
        named = ", ".join(f"{name!r} ({n} face{'s' if n != 1 else ''})" for name, n in short)
        raise DataError(f"{data.source}: too few training faces to hold one out for validation in {named}: "
                        f"validation takes {data.val_fraction:.0%} of each class, none under {need} faces. Add "
                        f"faces (at least {need} a class) or leave the class out of the data.")


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise DataError(f"dataset name {name!r}: use lower-case letters, digits, '-' and '_' (it names the folder "
                        "reports/<dataset>/), e.g. dataset='my_faces'.")
    return name


# ---------------------------------------------------------------- a small cache, as data.py keeps FER2013's

def cached_arrays(digest: str, build) -> tuple:
    """(images, labels, splits, names, class_names) decoded once per source digest, then one np.load."""
    path = fer.cache_dir() / f"{digest}.v{fer.CACHE_VERSION}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["images"], z["labels"], z["splits"], z["names"], [str(c) for c in z["class_names"]]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            pass  # damaged: decode again and overwrite it
    images, labels, splits, names, class_names = build()
    write_atomically(path, lambda f: np.savez(f, images=images, labels=labels, splits=splits, names=names,
                                              class_names=np.array(class_names)))
    return images, labels, splits, names, class_names


def files_digest(root: Path, relative_paths: list[str]) -> str:
    """sha256 of each named file's path and bytes, in order: what a dataset's results record as its data checksum."""
    digest = hashlib.sha256()
    for rel in relative_paths:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return digest.hexdigest()


def decode_files(root: Path, relative_paths: list[str]) -> np.ndarray:
    decode = readers._Decoder()  # readers.py's decoder: any image to 48x48 grayscale, a corrupt one named
    return np.stack([decode((root / rel).read_bytes(), f"{root}: {rel}") for rel in relative_paths])


def require(path: Path, what: str, how: str) -> Path:
    if not path.exists():
        raise DataError(f"{path} does not exist: {what}. {how}")
    return path


# ---------------------------------------------------------------- FER+ (Barsoum et al. 2016, microsoft/FERPlus)

# fer2013new.csv's columns after Usage and Image name: 10 annotators' votes per face, in this order.
FERPLUS_EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_COLUMNS = ("Usage", "Image name") + FERPLUS_EMOTIONS + ("unknown", "NF")
FERPLUS_HOW = ("FER+ needs the challenge's fer2013.csv (Kaggle) and fer2013new.csv (github.com/microsoft/FERPlus) "
               "side by side in one folder: pass that folder as data_path.")


def ferplus_targets(votes: np.ndarray, mode: str) -> np.ndarray | None:
    """One face's 8-emotion target from its 10 vote counts (8 emotions, unknown, NF), or None to drop the face:
    FERPlus's src/ferplus.py, _process_data. A single vote is an outlier and removed. Majority: the emotion with
    more than half the remaining votes. Probability: the top emotions (at most 3, ties together) until they hold
    75% of the votes, kept when they hold more than half of them. A face whose winner is unknown or not-a-face
    is dropped, as is one without a majority."""
    votes = np.where(votes <= 1, 0, votes).astype(np.float64)
    total = votes.sum()
    if total == 0:
        return None
    kept = np.zeros_like(votes)
    if mode == "majority":
        if votes.max() <= 0.5 * total:
            return None
        kept[np.argmax(votes)] = votes.max()
    else:
        remaining, count, held, valid = votes.copy(), 0, 0.0, True
        while held < 0.75 * total and count < 3 and valid:
            top = remaining.max()
            for i in np.flatnonzero(remaining == top):  # ties are taken together
                kept[i], remaining[i] = top, 0
                held += top
                count += 1
                if i >= len(FERPLUS_EMOTIONS):  # unknown or NF shares the top count: stop, without it if it is not alone
                    valid = False
                    if kept.sum() > top:
                        kept[i] = 0
                        count -= 1
                    break
        if kept.sum() <= 0.5 * total or count > 3:  # too few votes held, or too many emotions: discarded
            return None
    if np.argmax(kept) >= len(FERPLUS_EMOTIONS):
        return None
    emotions = kept[:len(FERPLUS_EMOTIONS)]
    return (emotions / emotions.sum()).astype(np.float32)


def read_ferplus_votes(path: Path, usages: list[str]) -> tuple[list[str], np.ndarray]:
    """(image names, (N, 10) vote counts) of fer2013new.csv, checked row by row against fer2013.csv's Usage."""
    names, votes = [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        if tuple(header) != FERPLUS_COLUMNS:
            raise DataError(f"{path}: header {header} is not FERPlus's {list(FERPLUS_COLUMNS)}. "
                            "Download fer2013new.csv again from github.com/microsoft/FERPlus.")
        for i, row in enumerate(reader):
            where = f"{path}, line {i + 2}"
            if i >= len(usages):
                raise DataError(f"{where}: more rows than fer2013.csv's {len(usages)}; the two files must be the "
                                "challenge's fer2013.csv and FERPlus's fer2013new.csv, row for row.")
            if len(row) != len(FERPLUS_COLUMNS) or row[0] != usages[i]:
                raise DataError(f"{where}: expected {len(FERPLUS_COLUMNS)} columns with Usage {usages[i]!r} "
                                f"(fer2013.csv's row), got {row[:2]}. The files do not belong together.")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError as e:
                raise DataError(f"{where}: vote counts must be integers ({e}). Fix or delete the row.") from e
            names.append(row[1].strip())
            votes.append(counts)
    if len(names) != len(usages):
        raise DataError(f"{path}: {len(names)} rows but fer2013.csv has {len(usages)}; both files must be complete.")
    return names, np.array(votes, dtype=np.int64)


def load_ferplus(path: Path, label_mode: str = "majority") -> NamedData:
    """FER+ (Barsoum et al. 2016): FER2013's faces with 8 classes from 10 annotators each. Splits as FERPlus's
    train.py: Training trains, PublicTest (FER2013Valid) is val, PrivateTest (FER2013Test) is the test. Val and
    test keep their majority labels in either mode; the training faces and their targets follow `label_mode`.
    A row without an image name (FERPlus leaves it empty for a face it dropped) is dropped."""
    folder = require(Path(path), "the folder holding fer2013.csv and fer2013new.csv", FERPLUS_HOW)
    source = require(folder / "fer2013.csv", "FER2013's challenge CSV", FERPLUS_HOW)
    new = require(folder / "fer2013new.csv", "FERPlus's vote file", FERPLUS_HOW)
    faces = fer.load_dataset(source)  # decoded once and cached by data.py
    usage_of = {code: usage for usage, code in readers.CSV_USAGE.items()}
    names, votes = read_ferplus_votes(new, [usage_of[int(s)] for s in faces.source_split])
    keep, soft = [], []
    for i, (name, row) in enumerate(zip(names, votes)):
        mode = label_mode if faces.source_split[i] == TRAIN else "majority"
        target = ferplus_targets(row, mode) if name else None
        if target is not None:
            keep.append(i)
            soft.append(target)
    keep, soft = np.array(keep), np.stack(soft)
    usage = faces.source_split[keep]
    # FER+'s own validation split: PublicTest selects, and is never reported as a test.
    val_mask = usage == TEST_PUBLIC
    splits = np.where(usage == TEST_PRIVATE, TEST_PRIVATE, TRAIN).astype(np.int8)
    digest = hashlib.sha256((faces.sha256 + readers.file_sha256(new)).encode()).hexdigest()
    return NamedData(images=faces.images[keep], labels=soft.argmax(1).astype(np.int64), source_split=splits,
                     names=np.array([f"{n} ({faces.names[i]})" for n, i in zip(np.array(names)[keep], keep)]),
                     class_names=list(FERPLUS_EMOTIONS), sha256=digest, source=str(folder), _val_mask=val_mask,
                     dataset="ferplus", label_mode=label_mode, soft_labels=soft if label_mode == "probability" else None)


# ---------------------------------------------------------------- RAF-DB basic (Li, Deng & Du 2017)

RAFDB_EMOTIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # labels 1..7
RAFDB_LABELS = "EmoLabel/list_patition_label.txt"  # sic: the file's name as RAF-DB ships it
RAFDB_HOW = ("RAF-DB basic needs its folder with EmoLabel/list_patition_label.txt and Image/aligned/ "
             "(request it from the authors at whdeng.cn/RAF): pass that folder as data_path.")


def load_rafdb(path: Path) -> NamedData:
    """RAF-DB's basic emotions: `train_00001.jpg 5` per line, the face in Image/aligned/train_00001_aligned.jpg
    (100x100 RGB, read as 48x48 grayscale). Its test split is reported; val is a stratified 10% of train."""
    root = Path(path)
    label_file = require(root / RAFDB_LABELS, "RAF-DB's label list", RAFDB_HOW)
    entries = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7 \
                or not parts[0].startswith(("train_", "test_")):
            raise DataError(f"{label_file}, line {number}: expected '<train_|test_>NNNNN.jpg <1-7>', got {line!r}.")
        stem = Path(parts[0]).stem
        entries.append((parts[0], f"Image/aligned/{stem}_aligned.jpg", int(parts[1]) - 1))
    missing = [rel for _, rel, _ in entries if not (root / rel).is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} aligned image(s) missing, e.g. {missing[0]}. {RAFDB_HOW}")
    rels = [rel for _, rel, _ in entries]

    def build():
        return (decode_files(root, rels), np.array([c for _, _, c in entries], np.int64),
                np.array([TRAIN if n.startswith("train_") else TEST_UNLABELLED_SPLIT for n, _, _ in entries], np.int8),
                np.array([n for n, _, _ in entries]), list(RAFDB_EMOTIONS))
    digest = files_digest(root, [RAFDB_LABELS] + rels)
    return named_data("rafdb", str(root), digest, *cached_arrays(digest, build))


# ---------------------------------------------------------------- class folders: AffectNet-style, CK+-style

# AffectNet's expression codes, for folders named by code rather than by emotion (Mollahosseini et al. 2017).
AFFECTNET_CODES = {"0": "neutral", "1": "happy", "2": "sad", "3": "surprise", "4": "fear", "5": "disgust",
                   "6": "anger", "7": "contempt"}


def class_folder_files(top: Path) -> dict[str, list[str]]:
    """{class folder: its image files, relative to top's parent}, sorted; hidden files and others skipped."""
    found = {}
    for class_dir in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found[class_dir.name] = [f"{top.name}/{class_dir.name}/{f.name}" for f in sorted(class_dir.iterdir())
                                 if f.is_file() and f.suffix.lower() in readers.IMAGE_SUFFIXES and not f.name.startswith(".")]
    empty = [name for name, files in found.items() if not files]
    if not found or empty:
        raise DataError(f"{top}: expected class folders with images (empty: {empty or 'no class folder'}). "
                        "Add images or remove the empty folder.")
    return found


def load_affectnet(path: Path) -> NamedData:
    """AffectNet as class folders, train/<class>/ and val/<class>/. AffectNet's test set is not released, so papers
    report on its validation set: here val/ is the reported test, and model selection uses 10% of train."""
    root = Path(path)
    how = "AffectNet-style data needs train/<class>/ and val/<class>/ folders of images: pass their parent folder."
    train = class_folder_files(require(root / "train", "the training class folders", how))
    test = class_folder_files(require(root / "val", "the validation class folders (reported as test)", how))
    if set(train) != set(test):
        raise DataError(f"{root}: train/ and val/ have different classes ({sorted(train)} vs {sorted(test)}). "
                        "Add the missing class folder or remove the extra one.")
    folders = sorted(train)
    items = [(rel, c, TRAIN) for c, cls in enumerate(folders) for rel in train[cls]]
    items += [(rel, c, TEST_UNLABELLED_SPLIT) for c, cls in enumerate(folders) for rel in test[cls]]
    class_names = [AFFECTNET_CODES.get(f, f) if all(f in AFFECTNET_CODES for f in folders) else f for f in folders]
    return folder_items("affectnet", root, items, class_names)


def subject_of(file_name: str) -> str:
    """CK+'s subject from a frame's name, S005_001_00000011.png -> S005."""
    return file_name.split("_")[0]


def load_ckplus(path: Path, folds: int = 10, fold: int = 0) -> NamedData:
    """CK+ as class folders (<class>/S<subject>_<sequence>_<frame>.png), with no split of its own: the field's
    protocol is subject-independent folds. Subjects are dealt into `folds` folds (seeded, fixed); `fold` is the
    reported test and the next fold is val, so no subject is in two splits."""
    root = Path(path)
    files = class_folder_files(require(root, "the CK+ class folders", "Pass the folder holding <class>/ folders."))
    class_names = sorted(files)
    subjects = sorted({subject_of(Path(rel).name) for rels in files.values() for rel in rels})
    if len(subjects) < 3:
        raise DataError(f"{root}: {len(subjects)} subject(s) found (file names S<subject>_...): subject folds need at "
                        "least 3 subjects.")
    folds = min(folds, len(subjects))
    order = np.random.default_rng(0).permutation(len(subjects))
    fold_of = {subjects[j]: rank % folds for rank, j in enumerate(order)}
    items = []
    for c, cls in enumerate(class_names):
        for rel in files[cls]:
            k = fold_of[subject_of(Path(rel).name)]
            items.append((rel, c, TEST_UNLABELLED_SPLIT if k == fold else "val" if k == (fold + 1) % folds else TRAIN))
    return folder_items("ckplus", root.parent, items, class_names)


def folder_items(dataset: str, root: Path, items: list[tuple[str, int, int | str]], class_names: list[str]) -> NamedData:
    """NamedData from (path relative to root, class, split) items; a split "val" marks a fixed val face."""
    rels = [rel for rel, _, _ in items]

    def build():
        return (decode_files(root, rels), np.array([c for _, c, _ in items], np.int64),
                np.array([TRAIN if s == "val" else s for _, _, s in items], np.int8), np.array(rels), class_names)
    digest = files_digest(root, rels)
    data = named_data(dataset, str(root), digest, *cached_arrays(digest, build))
    if any(s == "val" for _, _, s in items):
        data._val_mask = np.array([s == "val" for _, _, s in items])
    return data


def named_data(dataset, source, digest, images, labels, splits, names, class_names) -> NamedData:
    return NamedData(images=images, labels=labels, source_split=splits, names=names, class_names=list(class_names),
                     sha256=digest, source=source, dataset=dataset)


# ---------------------------------------------------------------- by name

LOADERS = {"ferplus": load_ferplus, "rafdb": load_rafdb, "affectnet": load_affectnet, "ckplus": load_ckplus}


def load_named(dataset: str = DEFAULT_DATASET, path: str | os.PathLike | None = None,
               label_mode: str = "majority") -> FERData:
    """The dataset called `dataset` from `path`: FER2013 (data.py's finder when path is None), one of LOADERS,
    or any other name for a train/ + test/ folder of class folders at `path`. Everything is checked before
    anything is decoded; a problem is a DataError that names the file and the fix."""
    check_name(dataset)
    if label_mode not in LABEL_MODES:
        raise DataError(f"label_mode {label_mode!r}: choose one of {LABEL_MODES}.")
    if label_mode == "probability" and dataset != "ferplus":
        raise DataError(f"label_mode='probability' needs annotators' votes, which only FER+ has; {dataset} trains "
                        "with label_mode='majority'.")
    if dataset == DEFAULT_DATASET:
        return fer.load_dataset(path)
    if path is None:
        raise DataError(f"dataset {dataset!r} has no default location: pass its folder as data_path "
                        f"(see README, 'Datasets'). Known layouts: fer2013, {', '.join(LOADERS)}, or any "
                        "train/<class>/ + test/<class>/ folder under a name of your own.")
    if dataset == "ferplus":
        return load_ferplus(Path(path), label_mode)
    if dataset in LOADERS:
        return LOADERS[dataset](Path(path))
    data = fer.load_dataset(path)
    return NamedData(**{f: getattr(data, f) for f in ("images", "labels", "source_split", "names", "class_names",
                                                       "sha256", "source", "val_fraction", "val_seed")},
                     dataset=dataset)
