"""Datasets as a dimension: every loader of datasets.py on a small synthetic dataset written in the exact layout its
authors publish; FER+'s two label modes reaching the training step; each dataset's reports in its own folder and
its own leaderboard section. No real face and no real dataset is needed."""
from __future__ import annotations

import dataclasses
import io
import json

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_fer_folder
from synthetic import FAST, class_images
from emo_utils.core import data as fer, datasets, train as train_module
from emo_utils.zoo import train as train_cli
from emo_utils import paths
from emo_utils.core.config import TrainConfig, config_differences
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.readers import DataError
from emo_utils.reports.leaderboard import write_index


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMO_DATA", raising=False)


# ---------------------------------------------------------------- FER+ in its published format

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
USAGES = ("Training", "PublicTest", "PrivateTest")


def ferplus_votes(c: int, kind: str) -> list[int]:
    """10 annotators' counts for a face of FER+ class c: a clear majority, a split vote (two emotions), or a face the
    published processing drops (unknown wins, not a face)."""
    votes = [0] * 10
    if kind == "clear":
        votes[c], votes[(c + 1) % 8], votes[8] = 8, 1, 1  # the single votes are outliers and removed
    elif kind == "split":
        votes[c], votes[(c + 3) % 8] = 6, 4  # majority: c; probability: 0.6 / 0.4
    elif kind == "unknown":
        votes[8], votes[c] = 7, 3
    else:  # "nf"
        votes[9] = 10
    return votes


def write_ferplus(folder, per_class=(12, 3, 3), seed=0):
    """fer2013.csv (emotion,pixels,Usage) and fer2013new.csv (FERPlus's header, the same rows in the same order).
    Each Usage gets per-class faces, every fourth Training face a split vote, plus one unknown and one not-a-face
    row (FERPlus leaves that one's image name empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    old, new, expected = ["emotion,pixels,Usage"], [FERPLUS_HEADER], []
    row = 0
    for usage, n in zip(USAGES, per_class):
        images, labels = class_images(8, n, seed + len(usage))
        kinds = [("split" if usage == "Training" and i % 4 == 3 else "clear") for i in range(len(labels))]
        kinds += ["unknown", "nf"]
        images = np.concatenate([images, images[:2]])
        labels = np.concatenate([labels, labels[:2]])
        for image, c, kind in zip(images, labels, kinds):
            old.append(f"{c % 7},{' '.join(map(str, image.ravel()))},{usage}")  # FER2013's own label is ignored
            name = "" if kind == "nf" else f"fer{row:07d}.png"
            new.append(",".join([usage, name] + [str(v) for v in ferplus_votes(int(c), kind)]))
            expected.append((usage, int(c), kind))
            row += 1
    (folder / "fer2013.csv").write_text("\n".join(old) + "\n")
    (folder / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return folder, expected


def test_ferplus_targets_follow_the_published_processing():
    # FERPlus's first row: neutral 4, sadness 1, anger 3, disgust 2. The single vote is an outlier; no emotion holds
    # more than half of the 9 left, so majority mode drops the face; probability keeps neutral and anger (7 of 9).
    row = np.array([4, 0, 0, 1, 3, 2, 0, 0, 0, 0])
    assert datasets.ferplus_targets(row, "majority") is None
    np.testing.assert_allclose(datasets.ferplus_targets(row, "probability"), [4 / 7, 0, 0, 0, 3 / 7, 0, 0, 0])
    np.testing.assert_array_equal(datasets.ferplus_targets(np.array([6, 0, 1, 0, 0, 0, 0, 0, 2, 1]), "majority"),
                                  np.eye(8)[0])
    for dropped in ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], [3, 0, 0, 0, 0, 0, 0, 0, 7, 0]):  # not a face; unknown wins
        for mode in datasets.LABEL_MODES:
            assert datasets.ferplus_targets(np.array(dropped), mode) is None


def test_ferplus_keeps_8_classes_drops_unknown_and_not_a_face_and_validates_on_publictest(tmp_path):
    folder, expected = write_ferplus(tmp_path / "ferplus")
    data = datasets.load_named("ferplus", folder)
    assert data.class_names == list(datasets.FERPLUS_EMOTIONS) and "contempt" in data.class_names
    kept = [(usage, c) for usage, c, kind in expected if kind in ("clear", "split")]
    for split, usage in (("train", "Training"), ("val", "PublicTest"), ("test_private", "PrivateTest")):
        labels = data.split(split)[1]
        assert sorted(labels.tolist()) == sorted(c for u, c in kept if u == usage), split
    assert data.available_splits() == ["train", "val", "test_private", "test_all"]  # PublicTest is val, not a test
    assert len(data.split("test_all")[1]) == len(data.split("test_private")[1])
    assert data.dataset == "ferplus" and data.soft_labels is None


def test_ferplus_probability_mode_has_the_vote_distributions_and_the_same_val_and_test(tmp_path):
    folder, _ = write_ferplus(tmp_path / "ferplus")
    majority = datasets.load_named("ferplus", folder, "majority")
    probability = datasets.load_named("ferplus", folder, "probability")
    soft = probability.soft_split("train")
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-6)
    assert {round(float(p), 3) for p in soft.max(1)} == {1.0, 0.6}  # clear faces one-hot, split votes 0.6 / 0.4
    assert (soft.argmax(1) == probability.split("train")[1]).all()
    for split in ("val", "test_private"):  # selection and the reported test keep their majority labels in both modes
        np.testing.assert_array_equal(majority.split(split)[1], probability.split(split)[1])
        np.testing.assert_array_equal(majority.split(split)[0], probability.split(split)[0])


@pytest.mark.parametrize("fault, message", [
    ("header", "is not FERPlus's"), ("usage", "Usage 'Training'"), ("short", "rows but fer2013.csv has")])
def test_ferplus_files_that_do_not_belong_together_are_named(tmp_path, fault, message):
    folder, _ = write_ferplus(tmp_path / "ferplus")
    lines = (folder / "fer2013new.csv").read_text().splitlines()
    if fault == "header":
        lines[0] = lines[0].replace("contempt,", "")
    elif fault == "usage":
        lines[1] = lines[1].replace("Training", "PublicTest", 1)
    else:
        lines = lines[:-1]
    (folder / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as error:
        datasets.load_named("ferplus", folder)
    assert "fer2013new.csv" in str(error.value)


def test_ferplus_without_its_vote_file_says_which_files_go_where(tmp_path):
    (tmp_path / "ferplus").mkdir()
    with pytest.raises(DataError, match="fer2013.csv.*fer2013new.csv"):
        datasets.load_named("ferplus", tmp_path / "ferplus")
    with pytest.raises(DataError, match="no default location"):
        datasets.load_named("ferplus")
    with pytest.raises(DataError, match="only FER\\+ has"):
        datasets.load_named("rafdb", tmp_path, "probability")


@pytest.mark.parametrize("label_mode", datasets.LABEL_MODES)
def test_ferplus_trains_a_few_steps_in_each_label_mode_and_the_votes_reach_the_step(tmp_path, monkeypatch, label_mode):
    folder, _ = write_ferplus(tmp_path / "ferplus")
    data = datasets.load_named("ferplus", folder, label_mode)
    seen = []
    real_step = train_module.train_step

    def spy(run, batch, epoch):
        seen.append((run.labels[batch].clone(), None if run.teacher is None else run.teacher[batch].clone(),
                     run.teacher_weight))
        return real_step(run, batch, epoch)

    monkeypatch.setattr(train_module, "train_step", spy)
    config = TrainConfig(**FAST, dataset="ferplus", label_mode=label_mode, epochs=2, augment="none")
    result = train_module.train(config, data, tmp_path / "run", device="cpu", progress=False)
    assert len(result.history) == 2 and result.model(torch.zeros(1, 1, 48, 48)).shape == (1, 8)
    assert seen
    if label_mode == "majority":
        assert all(teacher is None for _, teacher, _ in seen)
    else:
        train_soft = torch.from_numpy(data.soft_split("train"))
        train_labels = torch.from_numpy(data.split("train")[1])
        for labels, teacher, weight in seen:
            assert weight == 1.0  # the votes alone are the target
            np.testing.assert_allclose(teacher.sum(1), 1, rtol=1e-6)
            assert (teacher.argmax(1) == labels).all()
            # each row is the vote distribution of a training face with that label
            assert all(any(torch.equal(row, s) for s in train_soft[train_labels == y]) for row, y in zip(teacher, labels))
        assert any((t.max(1).values < 1).any() for _, t, _ in seen)  # split votes really were soft


def test_the_config_data_and_label_mode_must_agree_before_anything_is_written(tmp_path):
    folder, _ = write_ferplus(tmp_path / "ferplus")
    data = datasets.load_named("ferplus", folder)
    for config, message in ((TrainConfig(**FAST), "dataset 'fer2013' but the data is 'ferplus'"),
                            (TrainConfig(**FAST, dataset="ferplus", label_mode="probability"), "label_mode='probability'")):
        with pytest.raises(ValueError, match=message):
            train_module.train(config, data, tmp_path / "never", device="cpu", progress=False)
    assert not (tmp_path / "never").exists()


def test_a_checkpoint_from_before_the_dataset_field_still_matches_its_config():
    saved = dataclasses.asdict(TrainConfig())
    del saved["dataset"], saved["label_mode"]
    assert config_differences(saved, TrainConfig()) == []
    assert config_differences(saved, TrainConfig(dataset="ferplus")) == ["dataset: checkpoint 'fer2013' vs now 'ferplus'"]


# ---------------------------------------------------------------- RAF-DB, AffectNet, CK+, a folder of your own

def jpeg(image: np.ndarray, size: int, rgb: bool = True) -> bytes:
    img = Image.fromarray(image).resize((size, size))
    buffer = io.BytesIO()
    (img.convert("RGB") if rgb else img).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_rafdb_basic_reads_the_label_list_and_the_aligned_faces(tmp_path):
    root = tmp_path / "RAF-DB" / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for split, n in (("train", 6), ("test", 2)):
        images, labels = class_images(7, n, seed=len(split))
        for i, (image, c) in enumerate(zip(images, labels), start=1):
            stem = f"{split}_{i:05d}" if split == "train" else f"{split}_{i:04d}"
            lines.append(f"{stem}.jpg {c + 1}")
            (root / "Image" / "aligned" / f"{stem}_aligned.jpg").write_bytes(jpeg(image, 100))
    (root / datasets.RAFDB_LABELS).write_text("\n".join(lines) + "\n")
    data = datasets.load_named("rafdb", root)
    assert data.class_names[0] == "surprise" and data.class_names[6] == "neutral" and data.images.shape[1:] == (48, 48)
    assert len(data.split("test_all")[1]) == 14 and np.bincount(data.split("test_all")[1]).tolist() == [2] * 7
    assert len(data.split("train")[1]) + len(data.split("val")[1]) == 42 and data.available_splits()[-1] == "test_all"
    (root / "Image" / "aligned" / "test_0001_aligned.jpg").unlink()
    with pytest.raises(DataError, match="missing, e.g. Image/aligned/test_0001_aligned.jpg"):
        datasets.load_named("rafdb", root)


def write_class_folders(root, tops_counts, names, seed=0, prefix=lambda c, i: f"img{i}"):
    for top, n in tops_counts:
        images, labels = class_images(len(names), n, seed + len(top))
        for i, (image, c) in enumerate(zip(images, labels)):
            folder = root / top / names[c] if top else root / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{prefix(c, i)}.png")


def test_affectnet_class_folders_report_val_as_the_test_and_select_on_train(tmp_path):
    root = tmp_path / "affectnet"
    write_class_folders(root, [("train", 10), ("val", 3)], [str(code) for code in range(8)])
    data = datasets.load_named("affectnet", root)
    assert data.class_names == list(datasets.AFFECTNET_CODES.values())  # folders named by AffectNet's codes
    assert len(data.split("test_all")[1]) == 24 and len(data.split("val")[1]) == 8  # 10% of each class of train
    assert not set(data.names[data.split_mask("val")]) & set(data.names[data.split_mask("test_all")])


def test_ckplus_folds_are_subject_independent(tmp_path):
    root = tmp_path / "CK+48"
    names = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    write_class_folders(root, [("", 12)], names, prefix=lambda c, i: f"S{100 + i:03d}_{c + 1:03d}_{i:08d}")
    data = datasets.load_named("ckplus", root)
    subjects = {split: {datasets.subject_of(n.split("/")[-1]) for n in data.names[data.split_mask(split)]}
                for split in ("train", "val", "test_all")}
    assert all(subjects.values())
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test_all"]
                or subjects["val"] & subjects["test_all"])
    assert data.class_names == names


def test_any_folder_of_class_folders_under_a_name_of_its_own(tmp_path):
    root = make_fer_folder(tmp_path, name="faces", classes=("calm", "smile", "frown"), n_train=10, n_public=0,
                           n_private=0, n_plain=2)
    data = datasets.load_named("my_faces", root)
    assert data.dataset == "my_faces" and data.class_names == ["calm", "frown", "smile"]
    assert paths.model_folder("tiny", "cpu", dataset="my_faces") == "my_faces/tiny"
    assert paths.model_folder("tiny", "cpu", dataset="fer2013") == "tiny"
    with pytest.raises(DataError, match="lower-case letters"):
        datasets.load_named("../elsewhere", root)


# ---------------------------------------------------------------- where the results go

def write_notebook(path, model_name, recipe):
    source = f"model_name = {model_name!r}\nbudget = 'cpu'\nseed = 0\nfull_recipe = {recipe!r}\ncpu_recipe = {recipe!r}\n"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})]),
                   path)
    return path


def test_a_fer2013_run_and_a_ferplus_run_write_to_different_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fer, "REPO_ROOT", tmp_path)
    notebook = write_notebook(tmp_path / "02_train_tiny.ipynb", "mini_xception",
                              dict(model_kwargs={"widths": (8, 16)}, batch_size=32, epochs=1, augment="none"))
    fer2013 = make_fer_folder(tmp_path, name="fer2013", n_train=6, n_public=1, n_private=1)
    ferplus, _ = write_ferplus(tmp_path / "ferplus")
    threads = torch.get_num_threads()
    try:
        assert train_cli.main([str(notebook), "--data", str(fer2013)]) == 0
        assert train_cli.main([str(notebook), "--data", str(ferplus), "--dataset", "ferplus",
                                  "--set", "label_mode='probability'"]) == 0
    finally:
        torch.set_num_threads(threads)
    first, second = tmp_path / "reports/mini_xception/model.pt", tmp_path / "reports/ferplus/mini_xception/model.pt"
    assert load_checkpoint(first)["config"]["dataset"] == "fer2013" and load_checkpoint(first)["num_classes"] == 7
    saved = load_checkpoint(second)
    assert saved["config"]["dataset"] == "ferplus" and saved["config"]["label_mode"] == "probability"
    assert saved["num_classes"] == 8 and list((tmp_path / "runs/ferplus/mini_xception").glob("*/final.pt"))
    assert load_checkpoint(first)["config"]["dataset"] == "fer2013"  # the FER+ run left FER2013's report alone


def test_the_leaderboard_has_a_section_per_dataset(tmp_path):
    def record(model, dataset, accuracy, splits=("test_private", "test_all")):
        split = {"accuracy": accuracy, "macro_f1": 0.5, "auc_micro": 0.9, "auc_macro": 0.9, "ece": 0.03, "n": 300}
        prov = {"wall_seconds": 60.0, "device": "cpu (x86_64, 1 threads)", "budget": "cpu", "epochs_run": 3,
                "epochs_asked": 3, "tta": "flip", "converged": False, "convergence": "too few"}
        return {"model": model, "dataset": dataset, "params": 1000, "flops": 1,
                "splits": {s: split for s in splits}, "provenance": prov}

    reports = tmp_path / "reports"
    for folder, rec in (("tiny", record("tiny", "fer2013", 0.6)), ("ferplus/tiny", record("tiny", "ferplus", 0.8)),
                        ("my_faces/tiny", record("tiny", "my_faces", 0.7, ("test_all",)))):
        (reports / folder).mkdir(parents=True)
        (reports / folder / "metrics.json").write_text(json.dumps(rec))
    index = write_index(reports, tmp_path / "no_notebooks").read_text()
    fer2013_part, ferplus_part = index.split("## Leaderboard (FER+)")
    ferplus_part, own_part = ferplus_part.split("## Leaderboard (my_faces)")
    assert "[tiny](tiny/README.md), 60.00% PrivateTest" in fer2013_part and "80.00%" not in fer2013_part
    assert "[tiny](ferplus/tiny/README.md), 80.00% PrivateTest" in ferplus_part
    assert "[tiny](my_faces/tiny/README.md), 70.00% Whole test folder" in own_part


def test_the_readme_recipe_for_adding_a_dataset_ends_in_its_own_leaderboard_section(tmp_path, monkeypatch, capsys):
    """README, "Add a dataset": class folders, the training command line under a name of our own, then its report
    in reports/<dataset>/<model> and its section in reports/README.md, FER2013's table untouched."""
    from emo_utils.provenance import provenance
    from emo_utils.reports.pages import write_model_report
    from emo_utils.core.checkpoint import load_trained
    from emo_utils.reports.views import evaluate
    monkeypatch.setattr(fer, "REPO_ROOT", tmp_path)
    notebook = write_notebook(tmp_path / "02_train_tiny.ipynb", "mini_xception",
                              dict(model_kwargs={"widths": (8, 16)}, batch_size=16, epochs=1, augment="none"))
    faces = make_fer_folder(tmp_path, name="my_faces", classes=("calm", "frown", "smile"), n_train=12, n_public=0,
                            n_private=0, n_plain=3)
    threads = torch.get_num_threads()
    try:
        assert train_cli.main([str(notebook), "--dataset", "my_faces", "--data", str(faces)]) == 0
    finally:
        torch.set_num_threads(threads)
    report_dir = tmp_path / "reports" / "my_faces" / "mini_xception"
    data = datasets.load_named("my_faces", faces)
    result = load_trained(report_dir / "model.pt", "cpu")
    evaluation = evaluate(report_dir / "model.pt", data, "center", device="cpu")
    readme = write_model_report(report_dir, "Tiny", result, evaluation, provenance(0, data.sha256, result.meta, "cpu"), {})
    assert json.loads((report_dir / "metrics.json").read_text())["dataset"] == "my_faces"
    assert "Dataset: **my_faces**" in readme.read_text()
    assert "published figures" not in readme.read_text()  # the seeds published on FER2013, not on this dataset
    assert "load_named('my_faces'" in readme.read_text() and "reports/my_faces/mini_xception/model.pt" in readme.read_text()
    index = write_index(tmp_path / "reports", tmp_path / "no_notebooks").read_text()
    fer2013_part, own_part = index.split("## Leaderboard (my_faces)")
    assert "No trained model yet" in fer2013_part
    assert "[mini_xception](my_faces/mini_xception/README.md)" in own_part and "Whole test folder" in own_part
