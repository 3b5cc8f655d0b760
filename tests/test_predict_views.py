"""emo-predict gives a user the leaderboard's number: by default a report's model classifies under the test-time
views its report chose on val, so on a class-folder copy of PrivateTest faces its accuracy is the report's.

Needs the real FER2013 and the committed flagship (reports/vgg_gap: model.pt, metrics.json, model_views.npz) and is
skipped, with the reason, without them. The report's side is read from the probabilities kept beside the weights
(model_views.npz, checked to be keyed by these weights and this data), on a seeded sample of SAMPLE faces, so the
test costs one classification of the sample (ten crops of a few hundred faces)."""
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

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def fer2013():
    from emo_utils.core.data import load_dataset
    from emo_utils.core.readers import DataError
    try:
        return load_dataset()
    except DataError as e:
        pytest.skip(f"needs the real FER2013 (../shared/data/fer2013.zip or $EMO_DATA): {str(e).splitlines()[0]}")


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
