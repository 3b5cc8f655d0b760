"""emo-predict gives a user the leaderboard's number: by default a report's model classifies under the test-time
views its report chose on val, so on a class-folder copy of PrivateTest faces its accuracy is the report's.

Needs the real FER2013 and the committed flagship (reports/vgg_gap: model.pt, metrics.json, model_views.npz) and is
skipped, with the reason, without them. The report's side is read from the probabilities kept beside the weights
(model_views.npz, checked to be keyed by these weights and this data), on a seeded sample of SAMPLE faces, so the
test costs one classification of the sample (ten crops of a few hundred faces). Without the data, a tiny model in a
report folder of its own checks the same default, and the flags over it, for model.pt and model.onnx."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import read_rows, run_cli
from emo_utils.paths import views_cache
from emo_utils.reports.views import cache_key

REPORTS = Path(__file__).resolve().parents[1] / "reports"
MODEL = "vgg_gap"
SAMPLE = 300


@pytest.fixture(scope="module")
def fer2013():
    from emo_utils.core.data import load_dataset
    from emo_utils.core.readers import DataError
    try:
        return load_dataset()
    except DataError as e:
        pytest.skip(f"needs the real FER2013 (../shared/data/fer2013.zip or $EMO_DATA): {str(e).splitlines()[0]}")


@pytest.mark.real_data
@pytest.mark.slow
def test_emo_predict_by_default_gets_the_reports_accuracy_on_privatetest_faces(fer2013, tmp_path, capsys):
    model_path = REPORTS / MODEL / "model.pt"
    if not model_path.exists() or not views_cache(model_path).exists():
        pytest.skip(f"needs the committed {MODEL} model and its model_views.npz in {REPORTS / MODEL}")
    chosen = json.loads((REPORTS / MODEL / "metrics.json").read_text())["provenance"]["tta"]
    assert chosen == "ten_crop"  # the flagship's report chose ten crops: not what a plain centre crop gives
    with np.load(views_cache(model_path)) as saved:
        if str(saved["key"]) != cache_key(model_path, fer2013, "model"):
            pytest.skip(f"{views_cache(model_path)} was scored on other weights or data: `make reports NB=09`")
        test_all = saved[f"{chosen}/test_all"]
    private = fer2013.split_mask("test_private")
    stored = test_all[private[fer2013.split_mask("test_all")]]  # the report's PrivateTest probabilities
    images, labels = fer2013.split("test_private")
    sample = np.sort(np.random.default_rng(0).choice(len(labels), SAMPLE, replace=False))
    for i in sample:  # a class-folder copy, lossless: the faces the report scored, pixel for pixel
        folder = tmp_path / "faces" / fer2013.class_names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")

    code, out, err = run_cli(capsys, tmp_path / "faces", "--model", MODEL, "--csv", tmp_path / "p.csv",
                             "--device", "cpu")
    assert code == 0, err
    assert f"views {chosen}" in err  # the run says which views it used
    _, rows = read_rows(tmp_path / "p.csv")
    predicted = {int(Path(row["file"]).stem): row["predicted"] for row in rows}
    ours = np.mean([predicted[i] == fer2013.class_names[labels[i]] for i in sample])
    report = np.mean(stored[sample].argmax(1) == labels[sample])
    assert ours == report, (ours, report)

    # The centre crop alone, asked for, is another number: the default is the report's views, not a coincidence.
    code, out, err = run_cli(capsys, tmp_path / "faces", "--model", MODEL, "--csv", tmp_path / "c.csv",
                             "--device", "cpu", "--views", "center")
    assert code == 0 and "views center" in err
    _, rows = read_rows(tmp_path / "c.csv")
    centre = [row["predicted"] for row in sorted(rows, key=lambda r: int(Path(r["file"]).stem))]
    assert centre != [predicted[i] for i in sample]


def test_a_reports_model_classifies_under_its_reports_views_by_default_and_a_flag_overrides(tmp_path_factory,
                                                                                            tmp_path):
    import shutil

    import torch

    from emo_utils.core.checkpoint import load_trained
    from emo_utils.core.inference import predict_logits
    from emo_utils.predict import export
    from emo_utils.predict.classifier import load_classifier
    from emo_utils.predict.faces import PredictError
    from tiny_model import tiny_model
    report = tmp_path / "reports" / "tiny"  # a report folder: weights, their export and the report's record
    report.mkdir(parents=True)
    shutil.copy(tiny_model(tmp_path_factory), report / "model.pt")
    export.export_checkpoint(report / "model.pt")
    (report / "metrics.json").write_text(json.dumps({"provenance": {"tta": "ten_crop"}}))
    model = load_trained(report / "model.pt", torch.device("cpu")).model
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    ten_crops = predict_logits(model, faces, crop=44, tta="ten_crop")
    for name in ("model.pt", "model.onnx"):
        classifier = load_classifier(report / name, tta=None)
        assert classifier.views == "ten_crop"
        np.testing.assert_allclose(classifier.logits(faces), ten_crops, atol=1e-4, rtol=0)
    assert load_classifier("tiny", tta=None, reports_dir=tmp_path / "reports").views == "ten_crop"  # by name
    assert load_classifier(report / "model.pt", tta=True).views == "flip"  # --tta
    assert load_classifier(report / "model.pt", tta="center").views == "center"  # --views center
    assert load_classifier(report / "model.pt").views == "center"  # the library's default is unchanged
    (report / "metrics.json").unlink()
    assert load_classifier(report / "model.pt", tta=None).views == "center"  # no report: the centre crop
    with pytest.raises(PredictError, match="ONNX graph takes .*44 px"):
        load_classifier(report / "model.onnx", tta="full_flip")  # the whole face: not the graph's size


def test_tta_and_another_views_flag_together_are_a_one_line_error(tmp_path, capsys):
    code, out, err = run_cli(capsys, tmp_path, "--tta", "--views", "ten_crop")
    assert code == 2 and err.strip() == "emo-predict: --tta is --views flip, and --views asks for ten_crop: give one of them"
