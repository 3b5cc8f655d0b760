"""emo-predict: CSV for an image, a folder and a zip; accuracy and confusion for class-named folders; faces found
in a photo; annotated images; bad inputs reported and skipped while the run goes on; the demo notebook."""
import csv
import importlib
import io
import os
import re
import struct
import tomllib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FER_CLASSES, make_fer_zip
from emo_utils import predict
from emo_utils.data import REPO_ROOT, to_gray_48
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


def run_cli(capsys, *argv):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


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
        assert img.mode == "RGB" and min(img.size) >= predict.ANNOTATE_MIN_SIDE
        pixels = np.asarray(img)
    assert (np.ptp(pixels.astype(int), axis=2) > 30).any()  # coloured box and label on a gray face


# ---------------------------------------------------------------- faces in photos

@pytest.mark.skipif(not FER_ZIP.exists(), reason=f"needs real faces: {FER_ZIP} is absent (the Haar cascade finds "
                                                 "no face in synthetic blobs)")
def test_detect_faces_finds_and_classifies_real_faces_in_a_photo(model_path, tmp_path, capsys):
    with zipfile.ZipFile(FER_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.startswith("test/happy/PrivateTest_"))[:6]
        faces = np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("L")) for n in names])
    collage, pasted = predict.make_collage(faces, face_px=144, seed=0)
    collage.save(tmp_path / "group.jpg", quality=95)
    code, _, err = run_cli(capsys, tmp_path / "group.jpg", "--model", model_path, "--csv", tmp_path / "p.csv",
                           "--detect-faces", "--annotate", tmp_path / "annotated")
    assert code == 0, err
    _, rows = read_rows(tmp_path / "p.csv")
    boxes = [tuple(int(r[k]) for k in "xywh") for r in rows]
    matched = [b for b in boxes if max(predict.box_iou(b, p) for p in pasted) > 0.5]
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
    assert read_rows(tmp_path / "p.csv") == (COLUMNS, [])
    for name in ("noise.png", "blank.jpg"):
        assert re.search(rf"skipped \S*{name}: no face found", err)
    assert err.rstrip().splitlines()[-3].startswith("skipped 2:")


def test_face_crop_is_square_inside_the_image_and_framed_like_the_training_data():
    assert predict.face_box_with_margin((100, 100, 100, 100), (1000, 1000), 0.1) == (90, 90, 210, 210)
    assert predict.face_box_with_margin((0, 10, 100, 80), (1000, 1000), 0.1) == (0, 0, 120, 120)  # moved, not cut
    assert predict.face_box_with_margin((0, 0, 300, 300), (200, 150), 0.1) == (50, 0, 200, 150)  # shrunk to fit


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA"])
def test_face_conversion_matches_the_training_loader(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 60000, (90, 70), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8), "RGBA").convert(mode)
    assert img.mode == mode
    assert np.array_equal(np.asarray(to_gray_48(predict.to_gray(img))), np.asarray(to_gray_48(img)))


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
    monkeypatch.setattr(predict, "REPORTS_DIR", reports)
    Image.new("L", (48, 48)).save(tmp_path / "face.png")
    code, _, err = run_cli(capsys, tmp_path / "face.png", "--model", "resnet")
    assert code == 2
    assert "no model named 'resnet'" in err and f"models in {reports}: mini_xception, vgg_fer" in err
    code, _, err = run_cli(capsys, tmp_path / "face.png", "--model", tmp_path / "missing.pt")
    assert code == 2 and f"model file {tmp_path / 'missing.pt'} does not exist" in err
    assert predict.resolve_model_path("vgg_fer") == reports / "vgg_fer" / "model.onnx"


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


# ---------------------------------------------------------------- the demo notebook

@pytest.mark.slow
def test_demo_notebook_runs_on_synthetic_data(model_path, tmp_path, monkeypatch):
    from emo_utils.reports import run_reports

    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMO_DATA", raising=False)
    zip_path = make_fer_zip(tmp_path / "data", n_train=4, n_public=2, n_private=2)
    params = {"model": str(model_path), "data_path": str(zip_path), "n_faces": 5,
              "onnx_out": str(tmp_path / "demo.onnx")}
    run_reports(only=["12_predict_demo"], parameters=params, kernel="python3", reports_dir=tmp_path / "reports",
                progress=False)
    html = (tmp_path / "reports" / "12_predict_demo.html").read_text()
    assert "pasted faces" in html and "5 of 5 faces get the same class as PyTorch" in html
    assert (tmp_path / "demo.onnx").stat().st_size > 0
