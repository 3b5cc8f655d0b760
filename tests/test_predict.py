"""emo-predict: CSV for an image, a folder and a zip; accuracy and confusion for class-named folders; faces found
in a photo; annotated images; bad inputs reported and skipped while the run goes on; what held-out inputs showed
(unsafe zip entries, folders named unlike the classes, empty inputs, an existing CSV, a slow --help); the demo
notebook. Video and camera: test_video.py."""
import importlib
import io
import os
import re
import struct
import subprocess
import sys
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FER_CLASSES, make_fer_zip, read_rows, run_cli
from emo_utils.predict import inputs, cli as predict, faces as face_finder
from emo_utils import paths
from emo_utils.core.data import REPO_ROOT
from emo_utils.core.readers import to_gray_48
from emo_utils.core.metrics import compute_metrics
from synthetic import class_images
from tiny_model import tiny_model

FER_ZIP = REPO_ROOT.parent / "shared" / "data" / "fer2013.zip"
CLASS_COLUMNS = [f"p_{c}" for c in FER_CLASSES]
COLUMNS = ["file", "face", "x", "y", "w", "h", "label", "predicted", "confidence"] + CLASS_COLUMNS


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """test/<class>/face<i>.png: three synthetic faces of each class, in folders named after the classes."""
    root = tmp_path_factory.mktemp("faces") / "test"
    images, labels = class_images(len(FER_CLASSES), 3, seed=7)
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / FER_CLASSES[label] / f"face{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def bomb_png(width=20000, height=20000) -> bytes:
    """A valid PNG header claiming width x height 8-bit gray pixels, and a few rows of data: a few hundred bytes
    that would decode to 400 MB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def noise_photo(seed=0, size=(640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# ---------------------------------------------------------------- CSV for an image, a folder, a zip

def test_csv_for_an_image_a_folder_and_a_zip(model_path, class_folder, tmp_path, capsys):
    one = class_folder / "happy" / "face09.png"
    code, _, err = run_cli(capsys, one, "--model", model_path, "--csv", tmp_path / "one.csv")
    assert code == 0, err
    columns, rows = read_rows(tmp_path / "one.csv")
    assert columns == COLUMNS and len(rows) == 1
    assert rows[0]["file"] == str(one) and rows[0]["label"] == "happy" and rows[0]["face"] == "0"
    assert rows[0]["x"] == rows[0]["w"] == ""  # no detection: the whole image is the face

    code, _, _ = run_cli(capsys, class_folder, "--model", model_path, "--csv", tmp_path / "folder.csv")
    _, folder_rows = read_rows(tmp_path / "folder.csv")
    assert code == 0 and len(folder_rows) == 3 * len(FER_CLASSES)
    for row in folder_rows:
        probs = np.array([float(row[c]) for c in CLASS_COLUMNS])
        assert probs.sum() == pytest.approx(1, abs=1e-5)
        assert row["predicted"] == FER_CLASSES[probs.argmax()] and float(row["confidence"]) == probs.max()
        assert row["label"] == Path(row["file"]).parent.name
    by_file = {Path(r["file"]).relative_to(class_folder).as_posix(): r for r in folder_rows}
    assert by_file["happy/face09.png"]["predicted"] == rows[0]["predicted"]

    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(class_folder.rglob("*.png")):
            z.write(p, f"test/{p.relative_to(class_folder).as_posix()}")
    code, _, _ = run_cli(capsys, archive, "--model", model_path, "--csv", tmp_path / "zip.csv")
    _, zip_rows = read_rows(tmp_path / "zip.csv")
    assert code == 0 and len(zip_rows) == len(folder_rows)
    for row in zip_rows:
        member = row["file"].removeprefix(f"{archive}/test/")
        assert {k: row[k] for k in COLUMNS[1:]} == {k: by_file[member][k] for k in COLUMNS[1:]}


def test_class_folders_print_accuracy_and_a_confusion_matrix_that_agree_with_the_csv(model_path, class_folder,
                                                                                      tmp_path, capsys):
    code, out, _ = run_cli(capsys, class_folder, "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 0
    _, rows = read_rows(tmp_path / "p.csv")
    correct = sum(r["label"] == r["predicted"] for r in rows)
    accuracy = re.search(r"accuracy (\d\.\d+) \((\d+) of (\d+) faces", out)
    assert accuracy, out
    assert float(accuracy[1]) == pytest.approx(correct / len(rows), abs=1e-4)
    assert (int(accuracy[2]), int(accuracy[3])) == (correct, len(rows))
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("confusion matrix")))
    assert lines[header + 1].split() == list(FER_CLASSES)
    matrix = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[header + 2:header + 2 + 7]}
    for true in FER_CLASSES:
        for j, pred in enumerate(FER_CLASSES):
            assert matrix[true][j] == sum(r["label"] == true and r["predicted"] == pred for r in rows)


def test_unlabelled_inputs_print_no_accuracy(model_path, tmp_path, capsys):
    Image.fromarray(class_images(7, 1, seed=3)[0][0]).save(tmp_path / "face.png")
    code, out, _ = run_cli(capsys, tmp_path / "face.png", "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 0 and "accuracy" not in out
    assert read_rows(tmp_path / "p.csv")[1][0]["label"] == ""


def test_annotate_writes_each_image(model_path, class_folder, tmp_path, capsys):
    code, _, _ = run_cli(capsys, class_folder, "--model", model_path, "--csv", tmp_path / "p.csv",
                         "--annotate", tmp_path / "annotated")
    assert code == 0
    written = sorted((tmp_path / "annotated").rglob("*.png"))
    assert len(written) == 3 * len(FER_CLASSES)
    first = tmp_path / "annotated" / "test" / "angry" / "face00.png"
    with Image.open(first) as img:
        assert img.mode == "RGB" and min(img.size) >= face_finder.ANNOTATE_MIN_SIDE
        pixels = np.asarray(img)
    assert (np.ptp(pixels.astype(int), axis=2) > 30).any()  # coloured box and label on a gray face


# ---------------------------------------------------------------- faces in photos

@pytest.mark.skipif(not FER_ZIP.exists(), reason=f"needs real faces: {FER_ZIP} is absent (the Haar cascade finds "
                                                 "no face in synthetic blobs)")
def test_detect_faces_finds_and_classifies_real_faces_in_a_photo(model_path, tmp_path, capsys):
    with zipfile.ZipFile(FER_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.startswith("test/happy/PrivateTest_"))[:6]
        faces = np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("L")) for n in names])
    collage, pasted = face_finder.make_collage(faces, face_px=144, seed=0)
    collage.save(tmp_path / "group.jpg", quality=95)
    code, _, err = run_cli(capsys, tmp_path / "group.jpg", "--model", model_path, "--csv", tmp_path / "p.csv",
                           "--detect-faces", "--annotate", tmp_path / "annotated")
    assert code == 0, err
    _, rows = read_rows(tmp_path / "p.csv")
    boxes = [tuple(int(r[k]) for k in "xywh") for r in rows]
    matched = [b for b in boxes if max(face_finder.box_iou(b, p) for p in pasted) > 0.5]
    assert len(matched) >= 3, (boxes, pasted.tolist())
    assert [r["face"] for r in rows] == [str(i) for i in range(len(rows))]
    with Image.open(tmp_path / "annotated" / "group.jpg") as annotated:
        assert annotated.size == collage.size
        assert np.abs(np.asarray(annotated, dtype=int) - np.asarray(collage, dtype=int)).max() > 100


def test_detect_faces_reports_and_skips_a_photo_with_no_face(model_path, tmp_path, capsys):
    noise_photo().save(tmp_path / "noise.png")
    Image.new("RGB", (640, 480), (200, 180, 160)).save(tmp_path / "blank.jpg")
    code, _, err = run_cli(capsys, tmp_path / "noise.png", tmp_path / "blank.jpg", "--model", model_path,
                           "--csv", tmp_path / "p.csv", "--detect-faces")
    assert code == 1  # nothing classified
    assert not (tmp_path / "p.csv").exists() and "no face classified: nothing written" in err
    for name in ("noise.png", "blank.jpg"):
        assert re.search(rf"skipped \S*{name}: no face found", err)
    assert err.rstrip().splitlines()[-3].startswith("skipped 2:")


def test_face_crop_is_square_inside_the_image_and_framed_like_the_training_data():
    assert face_finder.face_box_with_margin((100, 100, 100, 100), (1000, 1000), 0.1) == (90, 90, 210, 210)
    assert face_finder.face_box_with_margin((0, 10, 100, 80), (1000, 1000), 0.1) == (0, 0, 120, 120)  # moved, not cut
    assert face_finder.face_box_with_margin((0, 0, 300, 300), (200, 150), 0.1) == (50, 0, 200, 150)  # shrunk to fit


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA"])
def test_face_conversion_matches_the_training_loader(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 60000, (90, 70), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8), "RGBA").convert(mode)
    assert img.mode == mode
    assert np.array_equal(np.asarray(to_gray_48(face_finder.to_gray(img))), np.asarray(to_gray_48(img)))


# ---------------------------------------------------------------- bad input

def test_bad_inputs_are_reported_one_by_one_and_the_run_goes_on(model_path, tmp_path, capsys):
    folder = tmp_path / "mixed" / "happy"
    folder.mkdir(parents=True)
    face = Image.fromarray(class_images(7, 1, seed=3)[0][3])
    face.save(folder / "good.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "bomb.png").write_bytes(bomb_png())  # over Pillow's own limit, refused when opened
    (folder / "large.png").write_bytes(bomb_png(8000, 8000))  # under Pillow's limit, over ours: refused unread
    rgba = face.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray(np.asarray(face).astype(np.uint16) * 257).save(folder / "deep.png")  # 16-bit PNG
    with Image.open(folder / "deep.png") as deep:
        assert deep.mode.startswith("I")
    jpeg = io.BytesIO()
    face.convert("RGB").resize((200, 200)).save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.zip").write_bytes(b"PK but not a zip")

    code, _, err = run_cli(capsys, tmp_path / "mixed", tmp_path / "empty", tmp_path / "broken.zip",
                           "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 0
    _, rows = read_rows(tmp_path / "p.csv")
    assert sorted(Path(r["file"]).name for r in rows) == ["deep.png", "good.png", "rgba.png"]
    expected = {"notes.txt": "not an image", "bomb.png": "too large, not decoded",
                "large.png": r"8000x8000 pixels \(64 MP\) is over the 50 MP limit", "truncated.jpg": "truncated",
                f"empty{os.sep}": "empty folder", "broken.zip": "not a readable zip"}
    for name, reason in expected.items():
        assert re.search(rf"skipped \S*{re.escape(name)}: [^\n]*{reason}", err), (name, err)
    assert re.search(r"note \S*rgba.png: RGBA image with transparency composited on white", err)
    assert re.search(r"note \S*deep.png: I;16\S* \(16/32-bit\) image scaled to 8 bits", err)
    summary = err[re.search(r"^\d+ file\(s\) seen", err, re.M).start():]  # the summary, at the end
    assert "skipped 6:" in summary and all(name in summary for name in expected)
    assert summary.startswith("7 file(s) seen, 3 image(s) read, 3 face(s) classified")


def test_unknown_model_lists_the_available_reports(tmp_path, capsys, monkeypatch):
    reports = tmp_path / "reports"
    for name, file in (("mini_xception", "model.pt"), ("vgg_fer", "model.onnx")):
        (reports / name).mkdir(parents=True)
        (reports / name / file).write_bytes(b"")
    (reports / "notes").mkdir()
    monkeypatch.setattr(paths, "REPORTS_DIR", reports)
    Image.new("L", (48, 48)).save(tmp_path / "face.png")
    code, _, err = run_cli(capsys, tmp_path / "face.png", "--model", "resnet")
    assert code == 2
    assert "no model named 'resnet'" in err and f"models in {reports}: mini_xception, vgg_fer" in err
    code, _, err = run_cli(capsys, tmp_path / "face.png", "--model", tmp_path / "missing.pt")
    assert code == 2 and f"model file {tmp_path / 'missing.pt'} does not exist" in err
    assert paths.resolve_model_path("vgg_fer") == reports / "vgg_fer" / "model.onnx"


def test_missing_input_and_run_checkpoint_are_named(model_path, tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nowhere.jpg", "--model", model_path)
    assert code == 2 and f"input not found: {tmp_path / 'nowhere.jpg'}" in err
    Image.new("L", (48, 48)).save(tmp_path / "face.png")
    code, _, err = run_cli(capsys, tmp_path / "face.png", "--model", model_path.parent / "last.pt")
    assert code == 2 and "last.pt is a checkpoint of a run, not a finished model" in err


def test_console_script_is_declared():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["emo-predict"].split(":")
    assert getattr(importlib.import_module(module), function) is predict.main


# ---------------------------------------------------------------- what held-out inputs showed

def face_png(seed=3, index=3) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(class_images(7, 1, seed=seed)[0][index]).save(buf, "PNG")
    return buf.getvalue()


def test_zip_entries_with_unsafe_paths_are_reported_and_counted(model_path, tmp_path, capsys):
    archive = tmp_path / "faces.zip"
    unsafe = ["../evil.png", "/abs/evil.png", "C:/evil.png", "happy\\..\\..\\evil.png"]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("faces/happy/good.png", face_png())
        z.writestr("faces/.DS_Store", b"finder junk")  # hidden: left out without a word, as before
        for name in unsafe:
            z.writestr(name, face_png())
    code, _, err = run_cli(capsys, archive, "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 0, err
    for name in unsafe:
        assert f"skipped {archive}/{name}: unsafe path" in err, (name, err)
    summary = err[err.index("file(s) seen"):]
    assert "skipped 4:" in summary and "1 face(s) classified" in summary and ".DS_Store" not in err
    assert [r["file"] for r in read_rows(tmp_path / "p.csv")[1]] == [f"{archive}/faces/happy/good.png"]


def class_named_folders(root, folders: dict[str, tuple[str, int]]):
    """root/<folder>/face<i>.png with `n` synthetic faces of class `cls` for each folder: (cls, n)."""
    images, labels = class_images(len(FER_CLASSES), 3, seed=7)
    for folder, (cls, n) in folders.items():
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(images[labels == FER_CLASSES.index(cls)][:n]):
            Image.fromarray(image).save(root / folder / f"face{i}.png")
    return root


def test_folders_named_unlike_the_classes_are_named_with_the_nearest_class_and_mapped(model_path, tmp_path, capsys):
    root = class_named_folders(tmp_path / "faces", {"happy": ("happy", 3), "sad": ("sad", 3), "fearful": ("fear", 2),
                                                    "surprised": ("surprise", 2), "calm": ("neutral", 1)})
    code, out, _ = run_cli(capsys, root, "--model", model_path, "--csv", tmp_path / "p.csv")
    assert code == 0
    assert ("5 face(s) in folders named after no class of the model, not counted: calm (1 face(s), no class close), "
            "fearful (2 face(s), nearest class fear), surprised (2 face(s), nearest class surprise)") in out
    assert "map the folders to classes: --class-map fearful=fear,surprised=surprise" in out
    _, rows = read_rows(tmp_path / "p.csv")
    labelled = [r for r in rows if r["label"]]
    assert sorted({r["label"] for r in labelled}) == ["happy", "sad"] and len(labelled) == 6
    # macro-F1 over the classes that have faces here, not over every class the model predicts
    probs = np.array([[float(r[c]) for c in CLASS_COLUMNS] for r in labelled])
    labels = np.array([FER_CLASSES.index(r["label"]) for r in labelled])
    per_class = compute_metrics(probs, labels, list(FER_CLASSES))["per_class"]
    expected = (per_class["happy"]["f1"] + per_class["sad"]["f1"]) / 2
    printed = re.search(r"\(\d of 6 faces in folders named after a class\), macro-F1 (\d\.\d{4}) over the 2 classes "
                        r"present", out)
    assert printed and float(printed[1]) == pytest.approx(expected, abs=1e-4), out

    code, out, _ = run_cli(capsys, root, "--model", model_path, "--csv", tmp_path / "mapped.csv",
                           "--class-map", "fearful=fear, surprised=surprise")
    assert code == 0
    _, rows = read_rows(tmp_path / "mapped.csv")
    assert {Path(r["file"]).parent.name: r["label"] for r in rows} == {
        "happy": "happy", "sad": "sad", "fearful": "fear", "surprised": "surprise", "calm": ""}
    assert re.search(r"\(\d+ of 10 faces in folders named after a class\), macro-F1 \d\.\d{4} over the 4 classes", out)
    assert ("1 face(s) in folders named after no class of the model, not counted: calm (1 face(s), no class "
            "close)") in out
    assert "--class-map" not in out  # nothing left that a class name resembles

    for mapping, message in [("fearful", "--class-map: 'fearful' is not FOLDER=CLASS"),
                             ("fearful=feer", "--class-map fearful=feer: 'feer' not among the model's classes "
                                              f"({', '.join(FER_CLASSES)})")]:
        code, _, err = run_cli(capsys, root, "--model", model_path, "--csv", tmp_path / "bad.csv",
                               "--class-map", mapping)
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad.csv").exists()


def test_nearest_class_of_a_folder_name():
    names = list(FER_CLASSES)
    assert {folder: inputs.nearest_class(folder, names) for folder in (
        "fearful", "surprised", "happiness", "Anger", "sadness", "disgusted", "Neutral", "calm", "contempt")} == {
        "fearful": "fear", "surprised": "surprise", "happiness": "happy", "Anger": "angry", "sadness": "sad",
        "disgusted": "disgust", "Neutral": "neutral", "calm": None, "contempt": None}


def test_empty_input_writes_nothing_and_says_so(model_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    code, _, err = run_cli(capsys, tmp_path / "empty", tmp_path / "empty.zip", "--model", model_path,
                           "--csv", tmp_path / "p.csv")
    assert code == 1
    assert not (tmp_path / "p.csv").exists()
    assert "0 face(s) classified; no face classified: nothing written" in err and "predictions in" not in err
    assert "empty folder: no files in it" in err and "empty zip: no files in it" in err


def test_an_existing_csv_is_refused_unless_force(model_path, class_folder, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    out.write_text("an earlier run's predictions\n")
    code, _, err = run_cli(capsys, class_folder / "happy", "--model", model_path, "--csv", out)
    assert code == 2
    assert f"emo-predict: {out} already exists: pass --force to overwrite, or --csv" in err
    assert out.read_text() == "an earlier run's predictions\n"
    code, _, err = run_cli(capsys, class_folder / "happy", "--model", model_path, "--csv", out, "--force")
    assert code == 0, err
    columns, rows = read_rows(out)
    assert columns == COLUMNS and len(rows) == 3


def test_help_and_argument_errors_answer_before_torch_is_imported():
    script = "\n".join([
        "import sys",
        "from emo_utils.predict import cli as predict",
        "try:",
        "    predict.main(['--help'])",
        "except SystemExit:",
        "    pass",
        "print('exit code for a missing input:', predict.main(['no/such/face.jpg']))",
        "print('torch imported:', 'torch' in sys.modules)"])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exit code for a missing input: 2" in result.stdout and "input not found: no/such/face.jpg" in result.stderr
    assert "torch imported: False" in result.stdout
    help_text = " ".join(result.stdout.split())
    assert "--batch-size BATCH_SIZE faces classified in one call" in help_text
    for option in ("--camera N", "--every K", "--smooth SECONDS", "--detect-size PX", "--force", "--class-map"):
        assert option in help_text


# ---------------------------------------------------------------- the demo notebook

@pytest.mark.slow
def test_demo_notebook_runs_on_synthetic_data(model_path, tmp_path, monkeypatch):
    from emo_utils.reports.notebooks import run_reports

    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMO_DATA", raising=False)
    zip_path = make_fer_zip(tmp_path / "data", n_train=4, n_public=2, n_private=2)
    params = {"model": str(model_path), "data_path": str(zip_path), "n_faces": 5,
              "onnx_out": str(tmp_path / "demo.onnx")}
    run_reports(only=["40_predict_demo"], parameters=params, kernel="python3", reports_dir=tmp_path / "reports",
                progress=False)
    html = (tmp_path / "reports" / "40_predict_demo.html").read_text()
    assert "pasted faces" in html and "5 of 5 faces get the same class as PyTorch" in html
    assert "two_faces.mp4: 30 frame(s) in" in html  # the video section ran its clip through emo-predict
    assert (tmp_path / "demo.onnx").stat().st_size > 0
