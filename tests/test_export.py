"""ONNX export: dynamic batch, PyTorch's logits within 1e-4, self-contained metadata, and emo-predict on the .onnx
giving the classes of the .pt."""
import csv
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import FER_CLASSES
from emo_utils.predict import export, cli as predict
from emo_utils.core.checkpoint import load_trained
from emo_utils.core.inference import predict_logits
from synthetic import class_images
from tiny_model import tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model(tmp_path_factory)  # evaluated on a 44-pixel centre crop: the export must carry the crop


@pytest.fixture(scope="module")
def onnx_path(model_path):
    return export.export_checkpoint(model_path)


def test_export_has_a_dynamic_batch_and_self_contained_metadata(model_path, onnx_path):
    assert onnx_path == model_path.with_suffix(".onnx")
    graph = onnx.load(onnx_path).graph
    (dims,) = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims == ["batch", 1, 44, 44]
    meta = export.read_metadata(onnx_path)
    assert json.loads(meta["class_names"]) == list(FER_CLASSES) and meta["crop"] == "44"
    assert float(meta["pixel_mean"]) == pytest.approx(0.507) and meta["source"] == str(model_path)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch(model_path, onnx_path, batch):
    model = load_trained(model_path, torch.device("cpu")).model
    faces = np.random.default_rng(batch).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
    expected = predict_logits(model, faces, crop=44)
    session = export.make_session(onnx_path)
    got = session.run([export.OUTPUT], {export.INPUT: export.normalize_faces(faces, 44)})[0]
    assert got.shape == (batch, len(FER_CLASSES))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    onnx_tta = predict.load_classifier(onnx_path, tta=True).logits(faces)
    np.testing.assert_allclose(onnx_tta, predict_logits(model, faces, crop=44, tta=True), atol=1e-4, rtol=0)


def test_predict_on_the_onnx_file_gives_the_classes_of_the_pt(model_path, onnx_path, tmp_path, capsys):
    images, labels = class_images(len(FER_CLASSES), 2, seed=11)
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "faces" / FER_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "faces" / FER_CLASSES[label] / f"{i}.png")
    rows = {}
    for path in (model_path, onnx_path):
        out_csv = tmp_path / f"{path.suffix[1:]}.csv"
        assert predict.main([str(tmp_path / "faces"), "--model", str(path), "--csv", str(out_csv)]) == 0
        with open(out_csv, newline="") as f:
            rows[path.suffix] = list(csv.DictReader(f))
        out, err = capsys.readouterr()
        assert "accuracy" in out and ("onnxruntime" in err) == (path.suffix == ".onnx")
    assert [r["predicted"] for r in rows[".pt"]] == [r["predicted"] for r in rows[".onnx"]]
    for pt_row, onnx_row in zip(rows[".pt"], rows[".onnx"]):
        for c in FER_CLASSES:
            assert float(pt_row[f"p_{c}"]) == pytest.approx(float(onnx_row[f"p_{c}"]), abs=1e-5)


def test_export_command_line_and_a_refused_graph(model_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "deploy" / "fer.onnx"
    assert export.main(["--model", str(model_path), "--out", str(out)]) == 0
    assert "input (N, 1, 44, 44)" in capsys.readouterr().out and out.exists()
    monkeypatch.setattr(export, "EXPORT_ATOL", -1.0)  # any difference now counts as a broken graph
    refused = tmp_path / "refused.onnx"
    assert export.main(["--model", str(model_path), "--out", str(refused)]) == 1
    assert "differ from PyTorch's" in capsys.readouterr().err and not refused.exists()


def test_an_onnx_file_we_did_not_write_is_refused_with_the_fix(tmp_path, capsys):
    Image.new("L", (48, 48)).save(tmp_path / "face.png")
    foreign = tmp_path / "foreign.onnx"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7)).eval()
    export.export_onnx(model, foreign, FER_CLASSES)
    stripped = onnx.load(foreign)
    del stripped.metadata_props[:]
    onnx.save(stripped, foreign)
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all")
    for name, message in (("foreign.onnx", "not written by emo_utils.predict.export"),
                          ("garbage.onnx", "onnxruntime cannot load it")):
        assert predict.main([str(tmp_path / "face.png"), "--model", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err
