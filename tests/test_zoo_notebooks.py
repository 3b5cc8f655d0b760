"""Model X / Model Y training notebooks (Model Y with its ablation without vertical flips), then evaluation and
ensembling over what they trained, end to end on a synthetic dataset through papermill."""
import json
from dataclasses import replace

import nbformat
import pytest

from conftest import make_fer_zip
from emo_utils.core.augment import make_policy
from emo_utils.core.config import TrainConfig, config_differences
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.reports.notebooks import run_reports
from emo_utils.reports.tables import COLUMN_LABELS

pytestmark = pytest.mark.slow  # runs notebooks or torchrun processes end to end

KERNEL = "python3"
TINY = {"epochs": 1, "batch_size": 16, "augment": "heavy", "optimizer": "sgd", "lr": 0.01}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Train Model X and Model Y through their notebooks, each with its own ablations (Model Y's one run without
    vertical flips, on the same one-epoch recipe), into a temporary reports folder."""
    root = tmp_path_factory.mktemp("zoo")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMO_CACHE", str(root / "cache"))
    mp.delenv("EMO_DATA", raising=False)
    zip_path = make_fer_zip(root / "data", n_train=12, n_public=3, n_private=3)
    reports = root / "reports"
    for number, name in (("07", "model_x"), ("08", "model_y")):
        run_reports(only=[number], kernel=KERNEL, reports_dir=reports, progress=False, parameters={
            "data_path": str(zip_path), "report_dir": str(reports / name), "run_dir": str(root / "runs" / name),
            "cpu_recipe": {**TINY, "model_kwargs": {"widths": [8, 16]}}, "device": "cpu"})
    yield root, zip_path, reports
    mp.undo()


def test_model_x_and_y_reports_and_the_vflip_ablation(zoo):
    _, _, reports = zoo
    for name in ("model_x", "model_y"):
        record = json.loads((reports / name / "metrics.json").read_text())
        assert record["model"] == name and record["provenance"]["epochs_run"] == 1
    # Model Y's ablation: its recipe with the heavy augmentation's vertical flips off, and nothing else changed,
    # where ablation.train_ablations keeps it, and a row of its report's table.
    trained = load_checkpoint(reports / "model_y" / "model.pt")["config"]
    no_vflip = load_checkpoint(reports / "model_y" / "ablations" / "no_vertical_flips" / "model.pt")["config"]
    assert make_policy(no_vflip["augment"]) == replace(make_policy("heavy"), vflip=0.0)
    assert [d.split(":")[0] for d in config_differences(no_vflip, TrainConfig.from_dict(trained))] == ["augment"]
    readme = (reports / "model_y" / "README.md").read_text()
    assert "## What vertical flips cost" in readme and "| no vertical flips |" in readme
    assert not (reports / "model_x" / "ablations").exists()  # Model X has none, and no section for them
    assert "| run | change |" not in (reports / "model_x" / "README.md").read_text()


def test_evaluation_notebook_compares_every_trained_model(zoo):
    _, zip_path, reports = zoo
    run_reports(only=["20"], kernel=KERNEL, reports_dir=reports, progress=False,
                parameters={"data_path": str(zip_path), "reports_dir": str(reports), "device": "cpu"})
    executed = nbformat.read(reports / "20_evaluation.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    output = lambda starts: "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")  # noqa: E731
                                    for c in code if c.source.startswith(starts) for o in c.outputs)
    assert "2 trained models: model_x, model_y" in output("from emo_utils.all")
    # Its board shows each model under the views of its own report, with the numbers of its own report.
    table = next(o["data"]["text/markdown"] for c in code if c.source.startswith("from emo_utils.reports.tables import board")
                 for o in c.outputs if "text/markdown" in o.get("data", {}))
    header, _, *lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
                         if line.startswith("|")]
    board = {cells[0]: dict(zip(header, cells)) for cells in lines}
    assert set(board) == {"model_x", "model_y"}
    for name, shown in board.items():
        record = json.loads((reports / name / "metrics.json").read_text())
        assert shown["views"] == record["provenance"]["tta"], name
        for split, summary in record["splits"].items():
            if split.endswith("_clean") and split != "test_private_clean":  # only the headline's is shown
                assert COLUMN_LABELS.get(split, split) not in shown, (name, split)
                continue
            assert float(shown[COLUMN_LABELS.get(split, split)]) == round(summary["accuracy"], 4), (name, split)


def test_ensembling_notebook_writes_the_ensemble_report(zoo):
    _, zip_path, reports = zoo
    run_reports(only=["30"], kernel=KERNEL, reports_dir=reports, progress=False,  # the seed pair: no ablation runs
                parameters={"data_path": str(zip_path), "reports_dir": str(reports), "device": "cpu",
                            "include_ablations": False})
    record = json.loads((reports / "ensemble" / "metrics.json").read_text())
    assert record["model"] == "ensemble" and set(record["provenance"]["members"]) <= {"model_x", "model_y"}
    assert set(record["splits"]) == {"test_private", "test_public", "test_all", "val", "test_private_clean",
                                     "test_public_clean", "test_all_clean"}
    # Parameters are those of the members that run: a member weighted 0 is left out of the count.
    used = [m for m, w in record["provenance"]["members"].items() if w > 1e-6]
    member_params = {m: json.loads((reports / m / "metrics.json").read_text())["params"] for m in used}
    assert used and record["params"] == sum(member_params.values())
    readme = (reports / "ensemble" / "README.md").read_text()
    assert "seed pair, fitted weights" in readme and "| best member (its own) | gain (points) |" in readme
    assert f"of {len(record['provenance']['members'])} members" in readme  # members counted, weights collapsed
