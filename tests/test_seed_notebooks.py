"""Notebooks 03-06 (the seeds' single models) end to end through papermill, each with its own CPU recipe cut to
one epoch, on a generic 6-class image-folder dataset: no PublicTest/PrivateTest prefixes, so test_all only."""
import json

import pytest

from conftest import make_fer_files, make_fer_zip
from emo_utils.reports.leaderboard import PUBLISHED, published_text, write_index
from emo_utils.recipes import notebook_parameters
from emo_utils.paths import NOTEBOOKS
from emo_utils.reports.notebooks import run_reports

pytestmark = pytest.mark.slow  # runs notebooks or torchrun processes end to end

KERNEL = "python3"
CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness")
SEED_NOTEBOOKS = {"03": "residual_gap", "04": "the_model", "05": "cnn3", "06": "unet_classifier"}
# TheModel's 9.4M-weight dense layer makes its checkpoints (with Adam's state) ~190 MB a run: a narrower one here.
SMALLER = {"the_model": {"hidden": 32}}


@pytest.fixture(scope="module")
def generic_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMO_CACHE", str(root / "cache"))
    mp.delenv("EMO_DATA", raising=False)
    files = make_fer_files(CLASSES, n_train=12, n_public=0, n_private=0, n_plain=3)
    yield root, make_fer_zip(root / "data", files=files)
    mp.undo()


@pytest.mark.parametrize("prefix", sorted(SEED_NOTEBOOKS))
def test_seed_notebook_cpu_recipe_writes_a_full_report_on_a_generic_dataset(generic_dataset, prefix):
    root, zip_path = generic_dataset
    model_name = SEED_NOTEBOOKS[prefix]
    declared = notebook_parameters(next(NOTEBOOKS.glob(f"{prefix}_*.ipynb")))
    assert declared["model_name"] == model_name and declared["full_recipe"]["epochs"] >= 20
    # Every seed trains to its end (early stop or planned epochs) on the CPU, never to a time cap that cuts it short.
    # On a GPU the full recipe's only cap is one device call's (7 minutes), on top of the published recipe.
    assert not declared["cpu_recipe"].get("time_budget_min")
    assert declared["full_recipe"].get("time_budget_min", 0) in (0, 7)
    if "published_recipe" in declared:
        uncapped = {k: v for k, v in declared["full_recipe"].items() if k != "time_budget_min"}
        assert uncapped == declared["published_recipe"]
    reports = root / "reports"
    report_dir = reports / model_name
    params = {"data_path": str(zip_path), "report_dir": str(report_dir), "run_dir": str(root / "runs" / model_name),
              "cpu_recipe": {**declared["cpu_recipe"], "epochs": 1, "batch_size": 16}, "device": "cpu", "budget": "cpu"}
    if model_name in SMALLER:
        params["cpu_recipe"]["model_kwargs"] = SMALLER[model_name]
    if declared.get("cpu_ablations"):  # each ablation a one-epoch run too, whatever schedule it changes
        params["cpu_ablations"] = {name: {**change, "epochs": 1} for name, change in declared["cpu_ablations"].items()}
    run_reports(only=[prefix], parameters=params, kernel=KERNEL, reports_dir=reports, progress=False)

    record = json.loads((report_dir / "metrics.json").read_text())
    assert record["model"] == model_name and record["params"] > 0 and record["flops"] > 0
    assert set(record["splits"]) == {"test_all", "val", "test_all_clean"}  # no PublicTest_/PrivateTest_ prefixes
    assert record["splits"]["test_all"]["n"] == 3 * len(CLASSES)
    prov = record["provenance"]
    assert prov["epochs_run"] == 1 and prov["epochs_asked"] == 1 and prov["budget"] == "cpu"
    for name in ("README.md", "model.pt", "learning_curves.png", "confusion.png", "roc.png", "reliability.png"):
        assert (report_dir / name).stat().st_size > 0, name
    readme = (report_dir / "README.md").read_text()
    assert "Whole test folder" in readme and CLASSES[1] in readme and "budget: 1 of 1 epochs" in readme
    if model_name in PUBLISHED:
        assert "not a like-for-like comparison" in readme
    assert f"(`{prov['tta']}`, chosen on val)" in readme.split("\n\n")[1] and prov["tta"] in ("center", "flip")
    assert (report_dir / "model_views.npz").exists()  # scored once, beside the weights
    if model_name == "the_model":  # compared with notebook 03's model when its weights exist
        has_other = (reports / "residual_gap" / "model.pt").exists()
        assert ("**TheModel against the residual GAP CNN** on Whole test folder: accuracy" in readme) == has_other
    if model_name == "unet_classifier":  # the second learning rate is a row of the ablation table
        (name, _), = declared["cpu_ablations"].items()
        assert f"| {name} |" in readme

    board = write_index(reports, NOTEBOOKS).read_text()
    row = next(line for line in board.splitlines() if line.startswith(f"| [{model_name}]"))
    assert f"{100 * record['splits']['test_all']['accuracy']:.2f} (" in row and f"| {prov['tta']} |" in row
    if model_name in PUBLISHED:
        assert published_text(PUBLISHED[model_name]) in board
    assert "0.00 F1" not in board
