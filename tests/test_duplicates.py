"""Exact and near duplicates (emo_utils.core.duplicates), the clean test splits built from them, and the `dedup`
training option, on synthetic faces: smooth random fields, each seed its own "face", copied in the ways FER2013's
copies differ (shifted a pixel, brightened, re-saved as JPEG)."""
import io

import numpy as np
import pytest
from PIL import Image

from emo_utils.core import duplicates as dups
from emo_utils.core.config import TrainConfig
from emo_utils.core.readers import TEST_PRIVATE, TEST_PUBLIC, TRAIN
from emo_utils.core.data import FERData
from emo_utils.reports.explore import duplicate_report
from emo_utils.core.run import dedup_keep


def face(seed: int) -> np.ndarray:
    """A 48x48 face stand-in: a random 8x8 field of light and shade, smoothly enlarged, with fine grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(30, 226, (8, 8)).astype(np.uint8)).resize((48, 48), Image.BICUBIC)
    return np.clip(np.asarray(coarse, float) + rng.normal(0, 4, (48, 48)), 0, 255).astype(np.uint8)


def resaved_copy(image: np.ndarray) -> np.ndarray:
    """The same face shifted one pixel right and down, 20 grey levels brighter, and re-saved as a JPEG."""
    shifted = np.pad(image, ((1, 0), (1, 0)), mode="edge")[:48, :48]
    brighter = np.clip(shifted.astype(int) + 20, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(brighter).save(buffer, "JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def dataset(images, labels, splits) -> FERData:
    return FERData(images=np.stack(images), labels=np.array(labels, dtype=np.int64),
                   source_split=np.array(splits, dtype=np.int8), names=np.array([f"f{i}" for i in range(len(images))]),
                   class_names=["a", "b"], sha256="synthetic-duplicates", source="synthetic", val_fraction=0.0)


def test_a_shifted_brightened_resaved_copy_is_a_near_duplicate_and_an_unrelated_face_is_not():
    originals = np.stack([face(seed) for seed in range(20)])
    copies = np.stack([resaved_copy(original) for original in originals])
    names = np.array([f"f{i}" for i in range(40)])
    found = dups.Duplicates(dups.find_duplicates(np.concatenate([originals, copies]), names), names)
    near = found.group("near")
    assert (near[:20] == near[20:]).all() and (near >= 0).all()  # every copy joins its original ...
    assert len(np.unique(near)) == 20  # ... and no two different faces share a group
    assert (found.group("exact") == -1).all()  # none of them is byte-identical
    # The measure itself: copies correlate over 1-px shifts at NEAR_CORRELATION or more, 190 unrelated pairs do not.
    assert dups.shift_correlation(np.concatenate([originals, copies]), np.arange(20), np.arange(20, 40)).min() \
        >= dups.NEAR_CORRELATION
    i, j = np.triu_indices(20, 1)
    assert dups.shift_correlation(originals, i, j).max() < dups.NEAR_CORRELATION

    images = np.stack([originals[0], originals[1], originals[2], copies[0], originals[1]])
    found = dups.Duplicates(dups.find_duplicates(images, names[:5]), names[:5])
    exact, near = found.group("exact"), found.group("near")
    assert exact[1] == exact[4] >= 0 and (exact[[0, 2, 3]] == -1).all()  # only the byte-identical pair is exact
    assert near[0] == near[3] >= 0 and near[1] == near[4] >= 0 and near[0] != near[1] and near[2] == -1


def test_blank_frames_are_counted_and_never_joined_into_a_near_group():
    images = [np.full((48, 48), 128, np.uint8), np.full((48, 48), 90, np.uint8), face(1),
              np.clip(np.full((48, 48), 100.0) + np.random.default_rng(0).normal(0, 1, (48, 48)), 0, 255).astype(np.uint8)]
    found = dups.Duplicates(dups.find_duplicates(np.stack(images), np.array(["a", "b", "c", "d"])),
                            np.array(["a", "b", "c", "d"]))
    assert found.blank.tolist() == [True, True, False, False] and found.near_blank.tolist() == [True, True, False, True]
    assert (found.group("near") == -1).all()  # two flat frames hash alike, but are no copies of anything


def example_data() -> FERData:
    """Train faces 0-7 (class a for even, b for odd), val 8-9, PublicTest 10-12, PrivateTest 13-16, with copies:
    train 0 ~ val 8 (near), train 1 = PrivateTest 13 (exact), train 2 ~ train 3 under two labels (near),
    train 4 = train 5 (exact, one label), PublicTest 10 ~ PrivateTest 14 (near, test only), PrivateTest 15 blank."""
    images = [face(seed) for seed in range(100, 117)]
    images[8] = resaved_copy(images[0])
    images[13] = images[1].copy()
    images[3] = resaved_copy(images[2])
    images[5] = images[4].copy()
    images[14] = resaved_copy(images[10])
    images[15] = np.full((48, 48), 77, np.uint8)
    labels = [0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1]  # copies share a label but for train 2 and 3
    splits = [TRAIN] * 10 + [TEST_PUBLIC] * 3 + [TEST_PRIVATE] * 4
    data = dataset(images, labels, splits)
    data._val_mask = np.isin(np.arange(17), [8, 9])  # val chosen by hand, so the copies fall where described
    return data


def test_the_report_counts_groups_by_where_they_fall_and_their_conflicting_labels():
    report = duplicate_report(example_data())
    exact, near = report.iloc[:, 0], report.iloc[:, 1]
    assert exact["groups"] == 2 and exact["groups across train/val and test"] == 1
    assert exact["groups within train/val"] == 1 and exact["groups with conflicting labels"] == 0
    assert exact["PrivateTest faces with a copy in train"] == 1
    assert near["groups"] == 5 and near["groups within train/val"] == 3 and near["groups within test"] == 1
    assert near["groups across train/val and test"] == 1
    assert near["groups with conflicting labels"] == 1  # train 2 (a) ~ train 3 (b)
    assert near["train/val groups (val inflated)"] == 1 and near["val faces with a copy in train"] == 1


def test_the_clean_splits_hold_no_copy_of_a_training_face_and_no_blank_frame():
    data = example_data()
    assert np.flatnonzero(data.split_mask("test_private_clean")).tolist() == [14, 16]  # 13 is a copy, 15 blank
    assert np.flatnonzero(data.split_mask("test_public_clean")).tolist() == [10, 11, 12]  # 10 ~ 14: test only
    assert np.flatnonzero(data.split_mask("test_all_clean")).tolist() == [10, 11, 12, 14, 16]
    training = np.flatnonzero(data.source_split == TRAIN)
    for i in np.flatnonzero(data.split_mask("test_all_clean")):
        assert not (data.images[training] == data.images[i]).all(axis=(1, 2)).any()
        correlation = dups.shift_correlation(data.images, training, np.full(len(training), i))
        assert correlation.max() < dups.NEAR_CORRELATION


def test_dedup_leaves_out_exactly_the_copies_of_held_out_faces_and_the_conflicting_groups():
    data = example_data()
    train = np.flatnonzero(data.split_mask("train"))  # faces 0-7
    keep, removed = dedup_keep(TrainConfig(dedup=True), data)
    assert train[~keep].tolist() == [0, 1, 2, 3]  # 0 ~ val, 1 = PrivateTest, 2 ~ 3 under two labels; 4 = 5 stay
    assert removed == {"faces before": 8, "copies of held-out faces": 2, "in groups with conflicting labels": 2,
                       "faces left out": 4}
    keep, removed = dedup_keep(TrainConfig(), data)
    assert keep.all() and removed == {}  # off by default: every committed model's training set is unchanged
    # Under refit val is trained on, so 0 ~ 8 is no longer a leak; 8 itself stays, and val's faces follow train's.
    keep, _ = dedup_keep(TrainConfig(dedup=True, refit=True, scheduler="onecycle"), data)
    assert np.concatenate([train, [8, 9]])[~keep].tolist() == [1, 2, 3]


def test_the_duplicate_record_is_cached_by_file_name_and_read_back(tmp_path, monkeypatch):
    data = example_data()
    path = tmp_path / "cache.duplicates.json"
    record = dups.cached_duplicates(data.images, data.names, path)
    assert path.exists() and "f13" in path.read_text() and record["count"] == 17
    monkeypatch.setattr(dups, "find_duplicates", lambda *a: pytest.fail("found again although cached"))
    assert dups.cached_duplicates(data.images, data.names, path) == record


def test_a_dedup_run_trains_without_the_copy_of_a_test_face_and_says_so(tmp_path):
    from synthetic import FAST, make_learnable_data
    from emo_utils.core.train import train
    data = make_learnable_data(train_per_class=10, test_per_class=4)
    train_faces = np.flatnonzero(data.split_mask("train"))
    test_face = np.flatnonzero(data.split_mask("test_private"))[0]
    data.images[train_faces[3]] = resaved_copy(data.images[test_face])  # a training face that copies a test face
    data.labels[train_faces[3]] = data.labels[test_face]
    expected_left_out = int(np.logical_or.reduce(list(data.dedup_removals(data.split_mask("train")).values())).sum())
    assert expected_left_out >= 1
    result = train(TrainConfig(**FAST, epochs=1, dedup=True), data, tmp_path / "run", device="cpu", progress=False)
    assert result.meta["num_train"] == len(train_faces) - expected_left_out
    assert result.meta["dedup_removed"]["faces left out"] == expected_left_out
    assert result.meta["dedup_removed"]["copies of held-out faces"] >= 1
    plain = train(TrainConfig(**FAST, epochs=1), data, tmp_path / "plain", device="cpu", progress=False)
    assert plain.meta["num_train"] == len(train_faces) and "dedup_removed" not in plain.meta
    from emo_utils.reports.pages import dedup_lines
    from emo_utils.provenance import provenance
    line, = dedup_lines(provenance(0, data.sha256, result.meta, "cpu"))  # the run's README says what it left out
    assert f"{expected_left_out:,} of {len(train_faces):,} training faces left out" in line
    assert dedup_lines(provenance(0, data.sha256, plain.meta, "cpu")) == []
