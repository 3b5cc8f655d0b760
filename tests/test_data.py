"""Tests for emo_utils.core.data on small synthetic datasets, plus checks of the real FER2013 zip when present."""
from __future__ import annotations

import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import (CSV_EMOTIONS, FER_CLASSES, make_csv_rows, make_decoded, make_fer_csv, make_fer_files,
                      make_fer_folder, make_fer_zip, make_image_bytes)
from emo_utils.core import data, readers
from emo_utils.core.readers import DataError
from emo_utils.core.data import load_dataset

REAL_REPO_ROOT = data.REPO_ROOT
REAL_FER_ZIP = REAL_REPO_ROOT.parent / "shared" / "data" / "fer2013.zip"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test sees the real data or writes the real cache: REPO_ROOT and EMO_CACHE point into tmp_path."""
    repo = tmp_path / "world" / "repo"
    monkeypatch.setattr(data, "REPO_ROOT", repo)
    monkeypatch.delenv("EMO_DATA", raising=False)
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    return repo


def by_name(fer: data.FERData) -> dict[str, tuple]:
    return {str(n): (img, int(lab), int(sp)) for n, img, lab, sp in
            zip(fer.names, fer.images, fer.labels, fer.source_split)}


def split_sizes(fer) -> dict[str, int]:
    return {s: int(fer.split_mask(s).sum()) for s in fer.available_splits()}


# ------------------------------------------------------------------ reading each kind of source

@pytest.mark.parametrize("prefix", ["", "archive", "FER2013/extracted"])
def test_kaggle_zip(tmp_path, prefix):
    files = make_fer_files(n_train=10, n_public=2, n_private=3, fmt="PNG")
    src = make_fer_zip(tmp_path, files, prefix=prefix)
    fer = load_dataset(src)

    assert fer.class_names == list(FER_CLASSES)
    assert fer.num_classes == 7
    assert fer.images.shape == (7 * 15, 48, 48) and fer.images.dtype == np.uint8
    assert fer.labels.dtype == np.int64 and fer.source == str(src)
    assert fer.sha256 == readers.file_sha256(src)
    assert fer.available_splits() == ["train", "val", "test_public", "test_private", "test_all"]
    assert np.bincount(fer.labels[fer.source_split == readers.TRAIN]).tolist() == [10] * 7
    assert np.bincount(fer.labels[fer.source_split == readers.TEST_PUBLIC]).tolist() == [2] * 7
    assert np.bincount(fer.labels[fer.source_split == readers.TEST_PRIVATE]).tolist() == [3] * 7
    # every image decodes to exactly its PNG's pixels, with the label of its class folder
    got = by_name(fer)
    assert set(got) == set(files)
    for path, raw in files.items():
        img, label, split = got[path]
        top, cls, name = path.split("/")
        assert np.array_equal(img, make_decoded(raw))
        assert label == FER_CLASSES.index(cls)
        assert split == {"Tr": readers.TRAIN, "Pu": readers.TEST_PUBLIC, "Pr": readers.TEST_PRIVATE}[name[:2]]


def test_kaggle_zip_without_dir_entries_and_deflated(tmp_path):
    src = make_fer_zip(tmp_path, dir_entries=False, compression=zipfile.ZIP_DEFLATED, n_train=3)
    fer = load_dataset(src)
    assert fer.class_names == list(FER_CLASSES) and len(fer.images) == 7 * 7


def test_extracted_folder_matches_zip(tmp_path):
    files = make_fer_files(n_train=6, fmt="PNG")
    from_zip = load_dataset(make_fer_zip(tmp_path, files))
    folder = make_fer_folder(tmp_path, files)
    from_folder = load_dataset(folder)

    assert from_folder.source == str(folder)
    assert from_folder.sha256 == readers.folder_sha256(folder) != from_zip.sha256
    assert from_folder.class_names == from_zip.class_names
    a, b = by_name(from_zip), by_name(from_folder)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]) and a[k][1:] == b[k][1:]


def test_challenge_csv_remaps_labels_alphabetically(tmp_path):
    rows = make_csv_rows(n_train=3, n_public=1, n_private=2)
    src = make_fer_csv(tmp_path, rows)
    fer = load_dataset(src)

    assert fer.class_names == sorted(CSV_EMOTIONS) == list(FER_CLASSES)
    assert len(fer.images) == len(rows) == 7 * 6
    for i, (emotion, pixels, usage) in enumerate(rows):
        assert np.array_equal(fer.images[i], pixels)
        assert fer.class_names[fer.labels[i]] == CSV_EMOTIONS[emotion]
        assert fer.source_split[i] == readers.CSV_USAGE[usage]
        assert fer.names[i] == f"row{i + 2}"
    label_of = {e: int(fer.labels[[r[0] for r in rows].index(e)]) for e in range(7)}
    assert label_of[4] == 5 and fer.class_names[5] == "sad"
    assert label_of[6] == 4 and fer.class_names[4] == "neutral"
    assert label_of == {0: 0, 1: 1, 2: 2, 3: 3, 4: 5, 5: 6, 6: 4}
    assert split_sizes(fer)["test_public"] == 7 and split_sizes(fer)["test_private"] == 14


@pytest.mark.parametrize("as_zip", [False, True])
def test_generic_image_folder_has_only_test_all(tmp_path, as_zip):
    files = make_fer_files(classes=("cat", "dog", "owl"), n_train=10, n_public=0, n_private=0, n_plain=4)
    src = make_fer_zip(tmp_path, files) if as_zip else make_fer_folder(tmp_path, files)
    fer = load_dataset(src)

    assert fer.class_names == ["cat", "dog", "owl"]
    assert set(fer.source_split.tolist()) == {readers.TRAIN, readers.TEST_UNLABELLED_SPLIT}
    assert fer.available_splits() == ["train", "val", "test_all"]
    assert split_sizes(fer) == {"train": 27, "val": 3, "test_all": 12}
    assert set(fer.counts()) == {"train", "val", "test_all"}
    for name in ("test_private", "test_public"):
        with pytest.raises(DataError, match=f"no {name} split.*test_all"):
            fer.split(name)


@pytest.mark.parametrize("classes", [
    ("angry", "disgust", "fear", "happy", "sad", "surprise"),  # 6 classes, no neutral
    ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"),  # 8 classes, FER+/AffectNet
])
def test_other_class_sets(tmp_path, classes):
    fer = load_dataset(make_fer_zip(tmp_path, classes=classes, n_train=[10 + i for i in range(len(classes))]))
    assert fer.class_names == sorted(classes) and fer.num_classes == len(classes)
    assert set(fer.labels.tolist()) == set(range(len(classes)))
    counts = fer.counts()
    assert (counts["train"] + counts["val"]).tolist() == [10 + i for i in range(len(classes))]
    assert counts["test_public"].tolist() == [2] * len(classes)
    assert all(len(c) == len(classes) for c in counts.values())


def test_unknown_split_name_is_a_key_error(tmp_path):
    fer = load_dataset(make_fer_zip(tmp_path, n_train=2))
    with pytest.raises(KeyError, match="unknown split"):
        fer.split("validation")


# ------------------------------------------------------------------ splits

def test_split_sizes_and_stratified_val(tmp_path):
    n_train = [10, 20, 30, 40, 50, 60, 70]
    fer = load_dataset(make_fer_zip(tmp_path, n_train=n_train, n_public=2, n_private=3))
    sizes = split_sizes(fer)
    assert sizes == {"train": 280 - 28, "val": 28, "test_public": 14, "test_private": 21, "test_all": 35}

    train, val = fer.split_mask("train"), fer.split_mask("val")
    training = fer.source_split == readers.TRAIN
    assert not (train & val).any()
    assert np.array_equal(train | val, training)
    assert np.array_equal(fer.split_mask("test_all"), fer.split_mask("test_public") | fer.split_mask("test_private"))
    assert not (fer.split_mask("test_all") & training).any()
    # ~10% of every class, not 10% overall
    assert np.bincount(fer.labels[val], minlength=7).tolist() == [1, 2, 3, 4, 5, 6, 7]
    counts = fer.counts()
    assert counts["train"].tolist() == [9, 18, 27, 36, 45, 54, 63]
    images, labels = fer.split("val")
    assert images.shape == (28, 48, 48) and np.array_equal(labels, fer.labels[val])


def test_val_mask_is_seeded(tmp_path):
    src = make_fer_zip(tmp_path, n_train=30, n_public=1, n_private=1)
    a, b = load_dataset(src, val_seed=3), load_dataset(src, val_seed=3)
    other = load_dataset(src, val_seed=4)
    assert np.array_equal(a.val_mask, b.val_mask)
    assert not np.array_equal(a.val_mask, other.val_mask)
    assert a.val_mask.sum() == other.val_mask.sum() == 21
    assert np.array_equal(a.split("val")[0], b.split("val")[0])
    bigger = load_dataset(src, val_fraction=0.2)
    assert np.bincount(bigger.labels[bigger.val_mask]).tolist() == [6] * 7


def test_stratified_val_mask_only_picks_from_pool():
    labels = np.repeat(np.arange(3), [100, 200, 1000])
    pool = np.ones(len(labels), bool)
    pool[::2] = False  # half of each class is not training data
    mask = data.stratified_val_mask(labels, pool, 0.1, seed=0)
    assert not (mask & ~pool).any()
    assert np.bincount(labels[mask]).tolist() == [5, 10, 50]
    assert np.array_equal(mask, data.stratified_val_mask(labels, pool, 0.1, seed=0))


# ------------------------------------------------------------------ finding

def _zip_at(folder: Path, tag: str) -> Path:
    return make_fer_zip(folder, name=f"{tag}.zip", n_train=1, n_public=1, n_private=0, classes=("a", "b"))


def test_find_precedence(tmp_path, monkeypatch, isolated):
    explicit = _zip_at(tmp_path / "explicit", "explicit")
    env = _zip_at(tmp_path / "env", "env")
    in_data = _zip_at(isolated / "data", "local")
    shared = _zip_at(isolated.parent / "shared" / "data", "shared")
    monkeypatch.setenv("EMO_DATA", str(env.parent))

    assert data.find_dataset(explicit) == explicit
    assert data.find_dataset() == env
    monkeypatch.delenv("EMO_DATA")
    assert data.find_dataset() == in_data
    in_data.unlink()
    assert data.find_dataset() == shared
    assert load_dataset().source == str(shared)
    assert data.candidate_paths(explicit) == [explicit, isolated / "data", isolated.parent / "shared" / "data"]


def test_find_inside_a_folder(tmp_path):
    folder = tmp_path / "place"
    _zip_at(folder, "aaa")
    fer = _zip_at(folder, "fer2013")
    assert data.find_dataset(folder) == fer  # fer2013.zip wins over other zips
    fer.unlink()
    assert data.find_dataset(folder) == folder / "aaa.zip"
    extracted = make_fer_folder(tmp_path / "other", name="archive", n_train=1)
    assert data.find_dataset(tmp_path / "other") == extracted  # an extracted archive one folder down
    assert data.find_dataset(extracted) == extracted


def test_nothing_found_lists_places_and_how_to_get_fer(tmp_path, monkeypatch, isolated):
    (isolated / "data").mkdir(parents=True)
    (isolated / "data" / "README.md").write_text("put data here")
    with pytest.raises(DataError) as err:
        load_dataset()
    msg = str(err.value)
    for place in (isolated / "data", isolated.parent / "shared" / "data"):
        assert str(place) in msg
    assert "Kaggle" in msg and "FER2013" in msg and "EMO_DATA" in msg


def test_a_named_place_without_data_never_falls_through(tmp_path, monkeypatch, isolated):
    make_fer_zip(isolated / "data")  # a dataset that must NOT be picked up instead
    monkeypatch.setenv("EMO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere \(\$EMO_DATA\) holds no dataset: it does not exist\..*Kaggle"):
        load_dataset()
    monkeypatch.delenv("EMO_DATA")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"empty_dir \(the path given\) holds no dataset: it is a folder without a "
                                        r"zip, a CSV or train/ and test/ folders\."):
        load_dataset(tmp_path / "empty_dir")


# ------------------------------------------------------------------ cache

def test_second_load_comes_from_cache(tmp_path, monkeypatch):
    src = make_fer_zip(tmp_path, n_train=10)
    first = load_dataset(src)
    cached = tmp_path / "cache" / f"{first.sha256}.v{data.CACHE_VERSION}.npz"
    assert cached.is_file() and not list((tmp_path / "cache").glob("*.tmp"))

    def no_decoding(source):
        raise AssertionError(f"read_source({source}) called despite the cache")
    monkeypatch.setattr(data, "read_source", no_decoding)
    start = time.perf_counter()
    second = load_dataset(src)
    assert time.perf_counter() - start < 5
    for attr in ("images", "labels", "source_split", "names"):
        assert np.array_equal(getattr(first, attr), getattr(second, attr))
    assert second.class_names == first.class_names and second.sha256 == first.sha256
    assert np.array_equal(first.val_mask, second.val_mask)
    with pytest.raises(AssertionError, match="despite the cache"):
        load_dataset(src, use_cache=False)


def test_cache_is_keyed_by_content(tmp_path):
    folder = make_fer_folder(tmp_path, n_train=3, fmt="PNG")
    first = load_dataset(folder)
    victim = sorted((folder / "train" / "happy").iterdir())[0]
    victim.write_bytes(make_image_bytes(seed=99, fmt="PNG", color=7))
    second = load_dataset(folder)
    assert second.sha256 != first.sha256
    assert (second.images[second.names == f"train/happy/{victim.name}"] == 7).all()


def test_no_cache_written_when_disabled(tmp_path):
    load_dataset(make_fer_zip(tmp_path, n_train=2), use_cache=False)
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------ conversion

def test_non_48x48_gray_images_are_converted_with_one_warning(tmp_path):
    files = make_fer_files(n_train=3, fmt="PNG")
    odd = {
        "train/angry/Training_rgb.png": make_image_bytes(fmt="PNG", mode="RGB", color=(255, 0, 0)),
        "train/fear/Training_big.png": make_image_bytes(fmt="PNG", size=64, color=100),
        "test/happy/PublicTest_rgb64.jpg": make_image_bytes(seed=1, fmt="JPEG", mode="RGB", size=(64, 64)),
    }
    src = make_fer_zip(tmp_path, {**files, **odd})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fer = load_dataset(src)
    ours = [w for w in caught if "were converted" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, UserWarning)
    assert "3 image(s)" in str(ours[0].message) and str(src) in str(ours[0].message)

    assert fer.images.shape == (len(files) + 3, 48, 48) and fer.images.dtype == np.uint8
    got = by_name(fer)
    assert (got["train/angry/Training_rgb.png"][0] == 76).all()  # ITU-R 601 luma of pure red
    assert (got["train/fear/Training_big.png"][0] == 100).all()
    assert got["test/happy/PublicTest_rgb64.jpg"][2] == readers.TEST_PUBLIC


def test_conversion_warning_uses_pytest_warns_and_not_raised_for_clean_data(tmp_path):
    files = make_fer_files(n_train=2)
    files["train/sad/Training_rgb.jpg"] = make_image_bytes(mode="RGB")
    with pytest.warns(UserWarning, match=r"1 image\(s\) were not 48x48 grayscale"):
        load_dataset(make_fer_zip(tmp_path / "a", files))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(make_fer_zip(tmp_path / "b", n_train=2))


# ------------------------------------------------------------------ bad input
# A truncated zip, a truncated JPEG, a class only in train, a CSV row short of pixels and a named path that is
# missing are rows of test_bad_inputs.py's table (which also checks nothing written before is lost).

def test_garbage_named_zip(tmp_path):
    src = tmp_path / "archive.zip"
    src.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(DataError) as err:
        load_dataset(src)
    assert str(src) in str(err.value)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_corrupt_zip_entry(tmp_path, compression):
    files = make_fer_files(n_train=2)
    victim = next(p for p in files if p.startswith("train/fear/"))
    src = make_fer_zip(tmp_path, files, compression=compression)
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(victim)
    raw = bytearray(src.read_bytes())
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    # 0xFF as a deflate block header is an invalid block type; stored data fails its CRC
    raw[data_start: data_start + 4] = b"\xff\xff\xff\xff"
    src.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt") as err:
        load_dataset(src)
    assert str(src) in str(err.value) and victim in str(err.value)


@pytest.mark.parametrize("extra_top", ["test"])  # only in train: a row of test_bad_inputs.py's table
def test_class_only_in_one_of_train_and_test(tmp_path, extra_top):
    files = make_fer_files(classes=("a", "b"), n_train=2)
    files[f"{extra_top}/contempt/Training_x.jpg"] = make_image_bytes()
    src = make_fer_zip(tmp_path, files)
    with pytest.raises(DataError, match=f"only in {extra_top}: \\['contempt'\\]") as err:
        load_dataset(src)
    assert str(src) in str(err.value)


@pytest.mark.parametrize("as_zip", [False, True])
def test_empty_class_folder(tmp_path, as_zip):
    files = make_fer_files(classes=("a", "b"), n_train=2)
    files["train/contempt/"] = b""
    files["test/contempt/PublicTest_9.jpg"] = make_image_bytes()
    src = make_fer_zip(tmp_path, files) if as_zip else make_fer_folder(tmp_path, files)
    with pytest.raises(DataError, match=r"\['train/contempt'\] hold no images") as err:
        load_dataset(src)
    assert str(src) in str(err.value)


def test_folder_without_class_folders(tmp_path):
    src = tmp_path / "ds"
    (src / "train").mkdir(parents=True)
    (src / "test").mkdir()
    with pytest.raises(DataError, match="expected train/<class>/ and test/<class>/") as err:
        load_dataset(src)
    assert str(src) in str(err.value)


@pytest.mark.parametrize("bad_pixels, match", [  # 2303 pixels: a row of test_bad_inputs.py's table
    (" ".join(["1"] * 2305), "expected 2304 pixel values.*got 2305"),
    (" ".join(["300"] * 2304), "in 0..255"),
    ("1 2 x", "unreadable"),
])
def test_csv_bad_pixels(tmp_path, bad_pixels, match):
    rows = make_csv_rows(n_train=1, n_public=0, n_private=0)
    rows[3] = (rows[3][0], bad_pixels, "Training")
    src = make_fer_csv(tmp_path, rows)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(src)
    assert f"{src}, line 5" in str(err.value)


def test_csv_unknown_usage_and_emotion(tmp_path):
    rows = make_csv_rows(n_train=1, n_public=0, n_private=0)
    src = make_fer_csv(tmp_path / "a", rows[:2] + [(rows[2][0], rows[2][1], "Validation")])
    with pytest.raises(DataError, match="unknown Usage 'Validation'") as err:
        load_dataset(src)
    assert f"{src}, line 4" in str(err.value)
    src = make_fer_csv(tmp_path / "b", [(7, rows[0][1], "Training")])
    with pytest.raises(DataError, match="emotion 7 is not in 0..6") as err:
        load_dataset(src)
    assert f"{src}, line 2" in str(err.value)


def test_csv_missing_column_and_empty(tmp_path):
    src = make_fer_csv(tmp_path / "a", [], header=("emotion", "pixels"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['Usage'\]") as err:
        load_dataset(src)
    assert str(src) in str(err.value)
    src = make_fer_csv(tmp_path / "b", [])
    with pytest.raises(DataError, match="holds no rows") as err:
        load_dataset(src)
    assert str(src) in str(err.value)


def test_checksum_mismatch_for_fer2013_zip(tmp_path):
    src = make_fer_zip(tmp_path, name="fer2013.zip", n_train=2)
    with pytest.raises(DataError, match="does not match the known FER2013 digest") as err:
        load_dataset(src)
    assert str(src) in str(err.value) and data.KNOWN_SHA256["fer2013.zip"] in str(err.value)
    assert not (tmp_path / "cache").exists()  # nothing decoded or cached
    fer = load_dataset(src, verify=False)
    assert fer.class_names == list(FER_CLASSES) and len(fer.images) == 7 * 6
    # the same bytes under another name are just another dataset
    assert load_dataset(src.rename(tmp_path / "mine.zip")).sha256 == fer.sha256


def _snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("evil", ["/tmp/emo_evil/train/angry/Training_1.jpg", "../evil/train/angry/Training_1.jpg",
                                  "train/../../escaped.jpg", "train/angry/../../../escaped.jpg",
                                  "C:/evil/train/angry/Training_1.jpg"])
def test_unsafe_zip_entry(tmp_path, evil):
    files = make_fer_files(classes=("angry", "happy"), n_train=2)
    files[evil] = make_image_bytes()
    src = make_fer_zip(tmp_path / "in", files, dir_entries=False)
    watched = tmp_path.parent
    before = _snapshot(watched)
    with pytest.raises(DataError, match="unsafe entry") as err:
        load_dataset(src)
    assert str(src) in str(err.value) and evil in str(err.value)
    assert _snapshot(watched) == before
    assert not Path("/tmp/emo_evil").exists()


def test_not_a_dataset_file(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    with pytest.raises(DataError, match="not a zip, a CSV or a folder") as err:
        load_dataset(src)
    assert str(src) in str(err.value)


# ------------------------------------------------------------------ the real FER2013 (skipped where absent)

FER_TRAIN_COUNTS = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830,
                    "surprise": 3171}
FER_TEST_COUNTS = {"angry": 958, "disgust": 111, "fear": 1024, "happy": 1774, "neutral": 1233, "sad": 1247,
                   "surprise": 831}
needs_real_fer = pytest.mark.skipif(not REAL_FER_ZIP.is_file(),
                                    reason=f"real FER2013 not found at {REAL_FER_ZIP} (it is never redistributed)")


@pytest.fixture(scope="module")
def real_fer():
    """The real zip, loaded once through the default cache (.cache/datasets under the repo, or $EMO_CACHE)."""
    if not REAL_FER_ZIP.is_file():
        pytest.skip(f"real FER2013 not found at {REAL_FER_ZIP}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "REPO_ROOT", REAL_REPO_ROOT)
        return load_dataset(REAL_FER_ZIP)


@needs_real_fer
def test_real_fer2013_checksum(real_fer):
    assert real_fer.sha256 == data.KNOWN_SHA256["fer2013.zip"]
    assert real_fer.source == str(REAL_FER_ZIP)


@needs_real_fer
def test_real_fer2013_counts(real_fer):
    fer = real_fer
    assert fer.class_names == list(FER_CLASSES)
    assert fer.images.shape == (35887, 48, 48) and fer.images.dtype == np.uint8
    sizes = split_sizes(fer)
    assert sizes["train"] + sizes["val"] == data.FER2013_COUNTS["train"] == 28709
    assert sizes["test_public"] == data.FER2013_COUNTS["test_public"] == 3589
    assert sizes["test_private"] == data.FER2013_COUNTS["test_private"] == 3589
    assert sizes["test_all"] == 7178
    counts = fer.counts()
    assert dict(zip(fer.class_names, (counts["train"] + counts["val"]).tolist())) == FER_TRAIN_COUNTS
    assert dict(zip(fer.class_names, counts["test_all"].tolist())) == FER_TEST_COUNTS
    for c, n in enumerate(counts["train"] + counts["val"]):
        assert abs(counts["val"][c] - 0.1 * n) <= 0.5
    assert set(fer.source_split.tolist()) == {readers.TRAIN, readers.TEST_PUBLIC, readers.TEST_PRIVATE}
