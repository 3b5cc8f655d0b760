"""The flagship's pieces: test-time views, scoring each image once, config compatibility, the training command
line (the same entry point torchrun starts) and notebook 09 with its ablations, end to end on synthetic data."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_fer_zip
from emo_utils.core.tta import TTA_VIEWS, tta_views
from emo_utils.core.models import build_model
from emo_utils.core.inference import predict_logits, predict_splits, softmax
from emo_utils.core.data import REPO_ROOT
from emo_utils.reports.notebooks import run_reports
from emo_utils.core.config import TrainConfig, config_differences
from emo_utils.core.checkpoint import load_checkpoint
from synthetic import make_learnable_data

NOTEBOOK = REPO_ROOT / "notebooks" / "09_train_vgg_gap.ipynb"


def test_tta_views_are_the_crops_they_name():
    x = torch.arange(2 * 48 * 48, dtype=torch.float32).reshape(2, 1, 48, 48)
    assert [v.shape[-1] for v in tta_views(x, 40, False)] == [40]
    centre, mirror = tta_views(x, 40, True)
    assert torch.equal(centre, x[..., 4:44, 4:44]) and torch.equal(mirror, centre.flip(3))
    whole, whole_mirror = tta_views(x, 40, "full_flip")
    assert torch.equal(whole, x) and torch.equal(whole_mirror, x.flip(3))
    ten = tta_views(x, 40, "ten_crop")
    assert len(ten) == 10 and all(v.shape == (2, 1, 40, 40) for v in ten)
    assert torch.equal(ten[0], x[..., :40, :40]) and torch.equal(ten[3], x[..., 8:, 8:])
    assert torch.equal(ten[4], centre) and all(torch.equal(ten[5 + i], ten[i].flip(3)) for i in range(5))
    with pytest.raises(ValueError, match="ten_crop needs a model trained on random crops"):
        tta_views(x, 0, "ten_crop")
    with pytest.raises(ValueError, match="unknown test-time augmentation 'five'"):
        tta_views(x, 40, "five")


def test_predict_splits_scores_each_image_once_and_matches_per_split_prediction():
    data = make_learnable_data(train_per_class=6, test_per_class=4)
    torch.manual_seed(0)
    model = build_model("vgg_gap", 7, widths=[8, 16]).eval()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    probs = predict_splits(model, data, crop=40, tta="ten_crop")
    n_eval = int((data.split_mask("val") | data.split_mask("test_all")).sum())
    assert sum(calls) == 10 * n_eval  # ten views of each evaluation image, test_all not scored twice
    for split, p in probs.items():
        expected = softmax(predict_logits(model, data.split(split)[0], crop=40, tta="ten_crop"))
        np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)



def test_a_config_saved_before_a_field_existed_still_matches_when_the_field_has_its_default():
    config = TrainConfig(model="vgg_gap", lr=0.1)
    saved = json.loads(json.dumps(TrainConfig(model="vgg_gap", lr=0.1).__dict__))
    del saved["sync_batchnorm"]  # a checkpoint written before the field was added
    assert config_differences(saved, config) == []
    assert config_differences(saved, TrainConfig(model="vgg_gap", lr=0.1, sync_batchnorm=True)) == [
        "sync_batchnorm: checkpoint False vs now True"]


TINY = {"epochs": 2, "time_budget_min": 0, "batch_size": 16, "ema_decay": 0.5,
        "model_kwargs": {"widths": [8, 16], "convs": 1}, "augment": {"crop": 44}}


@pytest.fixture(scope="module")
def flagship(tmp_path_factory):
    """The command line trains the notebook's recipe; the notebook then re-evaluates that model and trains one
    ablation."""
    root = tmp_path_factory.mktemp("flagship")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMO_CACHE", str(root / "cache"))
    mp.delenv("EMO_DATA", raising=False)
    zip_path = make_fer_zip(root / "data", n_train=12, n_public=3, n_private=3)
    report, runs = root / "reports" / "vgg_gap", root / "runs" / "vgg_gap"
    sets = [f"--set={key}={value!r}" for key, value in TINY.items()]
    cli = subprocess.run([sys.executable, "-m", "emo_utils.zoo.train", str(NOTEBOOK), "--data", str(zip_path),
                          "--report-dir", str(report), "--run-dir", str(runs), *sets],
                         capture_output=True, text=True, timeout=600)  # inherits EMO_CACHE set above
    assert cli.returncode == 0, cli.stderr[-3000:]
    seed1 = subprocess.run([sys.executable, "-m", "emo_utils.zoo.train", str(NOTEBOOK), "--data", str(zip_path), "--seed", "1",
                            "--model-path", str(report / "seeds" / "1" / "model.pt"), "--run-dir", str(runs / "seed1"),
                            *sets], capture_output=True, text=True, timeout=600)  # as the zoo trains a further seed
    assert seed1.returncode == 0, seed1.stderr[-3000:]
    run_reports(only=["09"], kernel="python3", reports_dir=root / "reports", progress=False, parameters={
        "data_path": str(zip_path), "report_dir": str(report), "run_dir": str(runs), "overrides": TINY, "publish": True,
        "cpu_ablations": {"no EMA": {"ema_decay": 0.0}, "refit": {"refit": True},
                          "screen: reference": {"label_smoothing": 0.2},
                          "capped": {"time_budget_min": 0.02, "epochs": 500}},  # stopped by its cap
        "cpu_run_seeds": {"this recipe": [2], "capped": [1]}, "seed_comparisons": {"this recipe": "capped"},
        "device": "cpu"})
    yield report, cli
    mp.undo()


@pytest.mark.slow
def test_the_command_line_trains_the_notebook_recipe_and_the_notebook_reuses_it(flagship):
    report, cli = flagship
    assert f"model: {report / 'model.pt'}" in cli.stdout
    record = json.loads((report / "metrics.json").read_text())
    assert record["model"] == "vgg_gap" and record["provenance"]["reused_weights"] is True
    assert record["provenance"]["epochs_run"] == 2


@pytest.mark.slow
def test_the_report_carries_the_ablations_and_the_choices_made_on_val(flagship):
    report, _ = flagship
    prov = json.loads((report / "metrics.json").read_text())["provenance"]
    assert prov["tta"] in TTA_VIEWS and prov["weights"] in ("EMA", "raw, last epoch")
    readme = (report / "README.md").read_text()
    assert "## Ablations" in readme and "| ten_crop |" in readme and "| raw, last epoch |" in readme
    assert "**no EMA**: ema_decay 0.0" in readme  # each run's change as short text under its table
    ablations, screen = readme.split("## The screen")[0], readme.split("## The screen")[1].split("\n## ")[0]
    assert "| screen: reference |" in screen and "screen: reference" not in ablations  # a screen has its own table
    assert "| +0.00 | +0.00 |" in screen  # the reference's gains over itself, in points
    assert (report / "ablations" / "no_ema" / "model.pt").exists()


@pytest.mark.slow
def test_the_report_shows_each_seed_and_their_mean_and_a_refit_without_a_val_score(flagship):
    report, _ = flagship
    readme = (report / "README.md").read_text()
    seeds = readme.split("## Seeds", 1)[1].split("**capped**", 1)[0]  # the recipe's own table, not its runs' seeds
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in seeds.splitlines() if line.startswith("| ")}
    assert {"seed 0", "seed 1", "seed 2", "mean of 3", "std", "95% interval of the mean"} <= set(rows)
    head = [cell.strip("| ") for cell in seeds.splitlines()[2].split(" | ")]
    private = head.index("PrivateTest")
    mean = float(rows["mean of 3"][private])
    each = [float(rows[f"seed {s}"][private]) for s in range(3)]
    assert mean == pytest.approx(sum(each) / 3, abs=1e-4)
    refit = next(line for line in readme.splitlines() if line.startswith("| refit |"))
    assert "**refit**: refit True" in readme and "| — |" in refit  # its val column is blank: it trained on val
    table = readme.split("Training runs (same seed", 1)[1]
    runs_head = [cell.strip("| ") for cell in table.splitlines()[2].split(" | ")]
    refit_private = float(refit.split(" | ")[runs_head.index("PrivateTest")])
    assert (f"- **refit** (2 epochs on train + val, its last epoch, under this recipe's views): PrivateTest "
            f"{100 * refit_private:.2f}% against {100 * mean:.2f}% +- ") in readme  # the recipe's mean of 3 seeds


@pytest.mark.slow
def test_the_seeds_section_compares_two_runs_by_their_seed_means(flagship):
    report, _ = flagship
    record = json.loads((report / "ablations.json").read_text())
    means = {name: np.mean([row["test_private"] for row in rows if row["run"].startswith("seed ")])
             for name, rows in record["seeds"].items()}
    line, deduplicated = record["seed_comparisons"]  # the synthetic test has no copies: every seed has a clean score
    assert line.startswith(f"- **this recipe** against **capped**: PrivateTest {100 * means['this recipe']:.2f}% against "
                           f"{100 * means['capped']:.2f}% (means of 3 and 2 seeds): ")
    assert deduplicated.startswith("- **this recipe** against **capped**: PrivateTest deduplicated ")
    for shown in (line, deduplicated):
        assert "95% interval of the difference" in shown and shown in (report / "README.md").read_text().split("## Seeds")[1]


@pytest.mark.slow
def test_a_capped_runs_further_seed_replays_the_epochs_its_cap_fitted_without_the_cap(flagship):
    report, _ = flagship
    capped = load_checkpoint(report / "ablations" / "capped" / "model.pt")
    replayed = load_checkpoint(report / "ablations" / "capped" / "seeds" / "1" / "model.pt")
    fitted = capped["meta"]["epochs_run"]
    assert capped["config"]["time_budget_min"] == 0.02 and fitted < 500  # the cap ended it
    assert replayed["config"]["seed"] == 1 and replayed["config"]["time_budget_min"] == 0
    assert replayed["config"]["epochs"] == replayed["meta"]["epochs_run"] == fitted
    seeds = (report / "README.md").read_text().split("## Seeds", 1)[1].split("**capped**, its seeds replaying", 1)[1]
    names = [line.split(" | ")[0].strip("| ") for line in seeds.splitlines() if line.startswith("| ")]
    assert names[:4] == ["run", "seed 0", "seed 1", "mean of 2"]
    recorded = json.loads((report / "ablations.json").read_text())["seeds"]
    assert [row["run"] for row in recorded["capped"][:2]] == ["seed 0", "seed 1"]
    assert recorded["capped"][1]["epochs"] == fitted


@pytest.mark.slow
def test_the_recipes_own_further_seed_is_trained_by_the_notebook_beside_the_zoos(flagship):
    report, _ = flagship
    main, seed2 = load_checkpoint(report / "model.pt"), load_checkpoint(report / "seeds" / "2" / "model.pt")
    assert seed2["config"]["seed"] == 2  # "this recipe" in run_seeds: the recipe unchanged but for its seed
    assert config_differences(seed2["config"], TrainConfig(**{**main["config"], "seed": 2})) == []
    # its checkpoints, under the recipe's config key (paths.keyed_run_dir)
    assert list((report.parents[1] / "runs" / "vgg_gap").glob("*/seed2/last.pt"))
    recorded = json.loads((report / "ablations.json").read_text())["seeds"]["this recipe"]
    assert [row["run"] for row in recorded[:4]] == ["seed 0", "seed 1", "seed 2", "mean of 3"]
