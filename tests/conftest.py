"""Shared helpers for the tests: tiny synthetic datasets in every layout emo_utils.core.data reads.

Every helper is a plain function named make_*; import them with `from conftest import make_fer_zip`.
Nothing here touches the real FER2013 data. One autouse fixture checks that no test leaves torch's thread
count changed.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path, PurePosixPath

# make test runs two pytest-xdist workers on two cores: each worker, and every process it starts (notebook kernels,
# training runs), gets one thread. Two workers at two threads each plus their kernels oversubscribe the cores, and
# OpenMP's spinning threads then made a 2-second test take 50.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

import numpy as np  # noqa: E402 (after the thread count above: torch reads it when it loads)
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

START_THREADS = torch.get_num_threads()


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the real FER2013 data; skipped, with the reason, without it")


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """torch.set_num_threads is process-wide: a test or fixture that sets it and does not set it back slows
    (or changes the float summation order of) every test after it."""
    yield
    assert torch.get_num_threads() == START_THREADS, (
        f"torch's thread count is {torch.get_num_threads()}, not the {START_THREADS} the session started with: "
        "a test or one of its fixtures called torch.set_num_threads and did not restore it")

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# Order of the original challenge CSV's emotion codes 0..6.
CSV_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def make_image(seed: int = 0, mode: str = "L", size: int | tuple[int, int] = 48, color=None) -> Image.Image:
    """A random (or, with `color`, uniform) PIL image of the given mode and size."""
    w, h = (size, size) if isinstance(size, int) else size
    if color is not None:
        return Image.new(mode, (w, h), color)
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def make_image_bytes(seed: int = 0, fmt: str = "JPEG", mode: str = "L", size: int | tuple[int, int] = 48,
                     color=None) -> bytes:
    """make_image() encoded as JPEG or PNG bytes."""
    buf = io.BytesIO()
    make_image(seed, mode, size, color).save(buf, fmt)
    return buf.getvalue()


def _per_class(n, classes) -> list[int]:
    return [n] * len(classes) if isinstance(n, int) else list(n)


def make_fer_files(classes=FER_CLASSES, n_train=10, n_public=2, n_private=2, n_plain=0, fmt="JPEG",
                   seed=0) -> dict[str, bytes]:
    """{relative path: image bytes} in the Kaggle layout.

    train/<class>/Training_<id>, test/<class>/PublicTest_<id> and PrivateTest_<id>, plus n_plain test images
    per class with no prefix (a generic image-folder dataset when n_public = n_private = 0).
    Each n_* is an int or one count per class.
    """
    ext = ".jpg" if fmt == "JPEG" else ".png"
    files: dict[str, bytes] = {}
    next_id = 1000
    counts = [_per_class(n, classes) for n in (n_train, n_public, n_private, n_plain)]
    for ci, cls in enumerate(classes):
        for kind, n in zip(("Training_", "PublicTest_", "PrivateTest_", "img_"), (c[ci] for c in counts)):
            top = "train" if kind == "Training_" else "test"
            for _ in range(n):
                next_id += 1
                files[f"{top}/{cls}/{kind}{next_id}{ext}"] = make_image_bytes(seed * 100003 + next_id, fmt)
    return files


def _dirs_of(paths) -> list[str]:
    dirs = set()
    for p in paths:
        parents = PurePosixPath(p.rstrip("/")).parents
        dirs.update(str(q) + "/" for q in parents if str(q) != ".")
    return sorted(dirs)


def make_fer_zip(tmp_path: Path, files: dict[str, bytes] | None = None, name: str = "archive.zip",
                 prefix: str = "", dir_entries: bool = True, compression: int = zipfile.ZIP_STORED,
                 **kwargs) -> Path:
    """A zip of `files` (default make_fer_files(**kwargs)) under an optional top-level `prefix` folder.

    A key ending in '/' is written as a directory entry (an empty folder). With dir_entries, every parent
    folder gets its own entry first, as in Kaggle's archive.zip.
    """
    files = make_fer_files(**kwargs) if files is None else files
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    path = Path(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as z:
        if dir_entries:
            for d in _dirs_of(prefix + p for p in files):
                z.writestr(d, b"")
        for p, data in files.items():
            z.writestr(prefix + p, b"" if p.endswith("/") else data)
    return path


def make_fer_folder(tmp_path: Path, files: dict[str, bytes] | None = None, name: str = "fer", **kwargs) -> Path:
    """`files` (default make_fer_files(**kwargs)) written under tmp_path/name; keys ending in '/' are empty dirs."""
    root = Path(tmp_path) / name
    files = make_fer_files(**kwargs) if files is None else files
    for p, data in files.items():
        target = root / p
        if p.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return root


def make_csv_rows(n_train=4, n_public=1, n_private=1, seed=0) -> list[tuple[int, np.ndarray, str]]:
    """(emotion code 0..6, 48x48 uint8 pixels, Usage) rows, n_* per emotion code and Usage."""
    rng = np.random.default_rng(seed)
    rows = []
    for emotion in range(len(CSV_EMOTIONS)):
        for usage, n in (("Training", n_train), ("PublicTest", n_public), ("PrivateTest", n_private)):
            rows += [(emotion, rng.integers(0, 256, (48, 48), dtype=np.uint8), usage) for _ in range(n)]
    return rows


def make_fer_csv(tmp_path: Path, rows=None, name: str = "fer2013.csv", header=("emotion", "pixels", "Usage"),
                 **kwargs) -> Path:
    """The challenge CSV. `rows` (default make_csv_rows(**kwargs)) hold (emotion, pixels, usage); pixels is
    an array or an already formatted string, so a test can write a broken row."""
    rows = make_csv_rows(**kwargs) if rows is None else rows
    lines = [",".join(header)]
    for emotion, pixels, usage in rows:
        text = pixels if isinstance(pixels, str) else " ".join(str(int(v)) for v in np.ravel(pixels))
        lines.append(f"{emotion},{text},{usage}")
    path = Path(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """emo-predict with these arguments, in this process: (exit code, stdout, stderr)."""
    from emo_utils.predict import cli as predict
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path) -> tuple[list[str], list[dict]]:
    """A CSV's header and rows."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def make_decoded(data: bytes) -> np.ndarray:
    """What PIL decodes from image bytes, for comparing with the loader's arrays."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)
