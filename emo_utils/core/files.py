"""Files the project writes: each atomically (a reader sees the old file or the new one, never half of one),
prediction tables as CSV with probabilities to six places, and caches of arrays read back only under their key."""
from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np


def temporary_path(path: Path) -> Path:
    """Where `write_atomically` writes before the rename: hidden, beside `path`, named after this process, so
    two processes writing the same file never share one (checkpoint.remove_stale_temporaries reads the pid)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """`write(file)` into a temporary file, fsync, rename over `path`, fsync the folder: a kill at any moment
    leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_csv(path: str | os.PathLike, columns: list[str], rows: Iterable[dict], exact: tuple[str, ...] = ()) -> Path:
    """Rows as CSV with floats to six places, except the columns named in `exact` (a video's time stamps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k not in exact else v) for k, v in row.items()})
    return path


def read_keyed_arrays(path: Path, key: str) -> dict[str, np.ndarray]:
    """{name: array} of an .npz cache whose "key" entry is `key` (the sha256 of what made it); {} when the file is
    missing, unreadable, from an older layout or made for another key: the caller computes it again and overwrites."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as saved:
            if str(saved["key"]) != key:
                return {}
            return {name: saved[name] for name in saved.files if name != "key"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}
