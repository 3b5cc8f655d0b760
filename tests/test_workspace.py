"""Issue 37: reports/ is a published record that only a publish writes; every other run is an experiment of its
own (experiments/<dataset>/<model>/<key>/); a trial switch; one training chapter (reports/chapter.py) whose config
the zoo builds the same way; the robust recipes (issue 38)."""
import json

import numpy as np
import pytest

from emo_utils import paths
from emo_utils.core import trial as trial_mod
from emo_utils.core.config import TrainConfig
from emo_utils.core.readers import TRAIN
from emo_utils.recipes import NotebookError, chapter_config, notebook_parameters, parse_sets
from emo_utils.reports import chapter as chapter_mod
from emo_utils.reports.chapter import ChapterError, check_publishable, open_chapter, placement
from emo_utils.reports.notebooks import extra_budget_runs, is_experiment, run_notebooks
from synthetic import make_learnable_data

NOTEBOOK = {nb.name[:2]: nb for nb in paths.NOTEBOOKS.glob("0[2-9]_train_*.ipynb")}
CPU = dict(optimizer="sgd", lr=0.1, epochs=40, batch_size=64, cpu_bf16=True, time_budget_min=30)


def params(**extra) -> dict:
    return {"model_name": "mini_xception", "budget": "cpu", "seed": 0, "label_mode": "majority", "dataset": "fer2013",
            "cpu_recipe": CPU, "full_recipe": {**CPU, "epochs": 100}, **extra}


def test_the_config_is_built_in_one_documented_order():
    # recipe < label_mode < trial < the notebook's overrides < the caller's (zoo --set); then model, seed, dataset
    p = params(label_mode="probability", overrides={"lr": 0.2, "epochs": 3})
    config = chapter_config(p, trial=True, overrides={"lr": 0.3})
    assert (config.label_mode, config.lr, config.epochs, config.time_budget_min) == ("probability", 0.3, 3, 0)
    assert config.model == "mini_xception" and config.dataset == "fer2013"
    assert chapter_config(p, budget="full", seed=4, dataset="rafdb").epochs == 3  # overrides win over the recipe
    assert chapter_config(params(), budget="full").epochs == 100
    assert chapter_config(params(), seed=4, dataset="rafdb").seed == 4
    with pytest.raises(NotebookError, match="no robust_recipe; choose one of"):
        chapter_config(params(), budget="robust")


def test_a_trial_is_short_and_fp32_on_a_cpu_without_fast_bf16(monkeypatch):
    from emo_utils.core import distributed  # cpu_has_bf16 reads the CPU's name there
    monkeypatch.setattr(distributed, "cpu_name", lambda: "AMD EPYC, AVX-512, no AMX")
    slow = chapter_config(params(), trial=True)
    assert (slow.epochs, slow.time_budget_min, slow.early_stop_patience, slow.cpu_bf16) == (2, 0, 0, False)
    monkeypatch.setattr(distributed, "cpu_name", lambda: "Intel Xeon, AVX512-BF16, AMX")
    assert chapter_config(params(), trial=True).cpu_bf16 is True  # the recipe's own where bf16 is fast
    assert chapter_config(params(overrides={"cpu_bf16": False}), trial=True).cpu_bf16 is False


def test_a_trial_subset_keeps_every_class_in_proportion_and_names_itself():
    data = make_learnable_data(num_classes=4, train_per_class=100, test_per_class=40)
    subset = trial_mod.trial_subset(data, {"train": 80, "test": 20}, seed=0)
    train_counts = np.bincount(subset.labels[subset.source_split == TRAIN])
    assert train_counts.tolist() == [20, 20, 20, 20]
    assert len(subset.split("test_private")[1]) == len(subset.split("test_public")[1]) == 20
    assert subset.sha256 != data.sha256 and len(subset.split("val")[1]) == 8  # 10% of the kept training faces
    again = trial_mod.trial_subset(data, {"train": 80, "test": 20}, seed=0)
    assert (again.names == subset.names).all()  # seeded


def test_a_run_is_published_only_when_asked_and_an_experiment_folder_is_keyed_by_its_config(tmp_path):
    config = chapter_config(params())
    report_dir, run_dir = placement(params(), config, "cpu", published=True, trial=False)
    assert report_dir == paths.REPORTS_DIR / "mini_xception"
    assert run_dir == paths.RUNS_DIR / "mini_xception" / paths.config_key(config)
    report_dir, run_dir = placement(params(), config, "cpu", published=False, trial=False)
    assert report_dir == paths.EXPERIMENTS_DIR / "fer2013" / "mini_xception" / paths.config_key(config)
    assert run_dir == report_dir / "run"
    changed = chapter_config(params(overrides={"epochs": 1}))
    assert placement(params(), changed, "cpu", False, False)[0] != report_dir  # no shared last.pt between configs
    named = placement(params(run_name="my try"), config, "cpu", False, False)[0]
    assert named == paths.EXPERIMENTS_DIR / "fer2013" / "mini_xception" / "my_try"
    trial = placement(params(), config, "cpu", False, True)[0]
    assert trial.name.startswith("trial_") and trial.parent == report_dir.parent


def test_a_publish_never_writes_over_another_datasets_or_budgets_results(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"dataset": "fer2013", "provenance": {"budget": "full"}}))
    check_publishable(tmp_path, "fer2013", "full")
    check_publishable(tmp_path / "empty", "rafdb", "cpu")  # nothing there yet
    for dataset, budget in (("my_faces", "full"), ("fer2013", "cpu")):
        with pytest.raises(ChapterError, match="holds fer2013 results of the full budget") as e:
            check_publishable(tmp_path, dataset, budget)
        assert e.value._render_traceback_() == [f"ChapterError: {e.value}"]  # one line in a notebook, no traceback


def test_publish_and_trial_together_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ChapterError, match="a trial is never published"):
        open_chapter(params(publish=True, trial=True, data_path=str(tmp_path / "nothing.zip")))
    with pytest.raises(NotebookError, match="a trial is never published"):
        run_notebooks(only=["02"], parameters={"trial": True, "publish": True}, output_dir=tmp_path)
    with pytest.raises(ChapterError, match="unknown TrainConfig field"):
        open_chapter(params(overrides={"epoch": 3}))


def test_make_reports_publishes_unless_it_is_a_trial_or_a_changed_recipe():
    assert not is_experiment({}) and not is_experiment({"dataset": "rafdb", "data_path": "x"})
    assert is_experiment({"trial": True}) and is_experiment({"overrides": {"epochs": 5}})
    assert not is_experiment({"overrides": {"epochs": 5}, "publish": True})


def test_set_values_name_a_recipe_field():
    assert parse_sets(["epochs=5", "lr=0.1", "augment={'crop': 40}"]) == {"epochs": 5, "lr": 0.1,
                                                                         "augment": {"crop": 40}}
    for bad in ("epochs", "epoch=5"):
        with pytest.raises(NotebookError, match="expected FIELD=VALUE with FIELD a recipe field"):
            parse_sets([bad])


def test_other_budgets_are_rerun_on_their_committed_weights_for_fer2013_only(tmp_path):
    for folder in ("vgg_gap_full", "vgg_gap_robust"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.pt").write_bytes(b"weights")
    runs = dict(extra_budget_runs(NOTEBOOK["09"], tmp_path))
    assert set(runs) == {"_full", "_robust"}
    assert runs["_robust"] == {"budget": "robust", "report_dir": str(tmp_path / "vgg_gap_robust"),
                               "run_dir": "../runs/vgg_gap_robust"}  # as papermill sees it from notebooks/
    assert extra_budget_runs(NOTEBOOK["09"], tmp_path, dataset="my_faces") == []  # never over FER2013's folders
    assert extra_budget_runs(NOTEBOOK["04"], tmp_path) == []  # no weights of its other budget


ROBUST = {  # issue 38's robust recipes, exactly (the lead trains them)
    "09": lambda cpu: {**cpu, "augment": dict(crop=40, erase=0.5, corrupt=0.5, rotate=15, scale=0.1),
                       "init_weights": "reports/vgg_gap/model.pt", "epochs": 8, "lr": 0.01, "warmup_fraction": 0.1,
                       "time_budget_min": 0, "cpu_bf16": False},
    "02": lambda cpu: {**cpu, "augment": dict(translate=5, rotate=15, scale=0.1, corrupt=0.5),
                       "init_weights": "reports/mini_xception/model.pt", "epochs": 8, "lr": 0.005, "cpu_bf16": False},
}


@pytest.mark.parametrize("number", sorted(ROBUST))
def test_the_robust_recipe_builds_exactly_issue_38s_config(number):
    p = notebook_parameters(NOTEBOOK[number])
    wanted = TrainConfig.from_dict({**ROBUST[number](p["cpu_recipe"]), "model": p["model_name"], "seed": 0,
                                    "label_mode": "majority", "dataset": "fer2013"})
    assert chapter_config(p, "robust") == wanted
    assert paths.model_folder(p["model_name"], "robust") == f"{p['model_name']}_robust"


def test_every_training_notebook_takes_the_same_switches():
    for number, notebook in NOTEBOOK.items():
        p = notebook_parameters(notebook)
        assert {"overrides", "publish", "trial", "run_name"} <= set(p), number
        assert p["publish"] is False and p["trial"] is False and p["overrides"] == {}, number
        source = notebook.read_text()
        assert "train_chapter(globals())" in source and "config_from_recipe" not in source, number
        assert "home_budget=" not in source, number  # a parameter (04, 05), told to paths.model_folder one way


def test_the_zoo_trains_the_notebooks_config_and_a_trial_where_the_notebook_writes_one(tmp_path):
    from emo_utils.zoo.plan import plan_runs
    notebooks = [NOTEBOOK["09"]]
    p = notebook_parameters(NOTEBOOK["09"])
    (run,) = plan_runs(notebooks, None, {}, ["epochs=5"], tmp_path / "reports", tmp_path / "runs", ablations=False)
    assert run.config == chapter_config(p, overrides={"epochs": 5})
    runs = plan_runs(notebooks, None, {NOTEBOOK["09"]: [0, 1]}, [], tmp_path / "reports", tmp_path / "runs",
                     trial=True)
    assert len(runs) == 1 and runs[0].trial  # the notebook's seed alone, no ablations
    config = chapter_config(p, trial=True)
    assert runs[0].config == config
    experiment, _ = placement(p, config, "cpu", published=False, trial=True)
    assert runs[0].model_path == tmp_path / experiment.relative_to(paths.REPO_ROOT) / "model.pt"


def test_a_zoo_trial_run_trains_on_the_trials_subset(tmp_path):
    from emo_utils.zoo.plan import plan_runs
    from emo_utils.zoo.runner import command
    (run,) = plan_runs([NOTEBOOK["05"]], None, {}, [], tmp_path / "reports", tmp_path / "runs", trial=True)
    assert command(run, tmp_path / "data.zip", None)[-1] == "--trial"  # zoo.train subsets the data
    (published,) = plan_runs([NOTEBOOK["05"]], None, {}, [], tmp_path / "reports", tmp_path / "runs")
    assert "--trial" not in command(published, tmp_path / "data.zip", None)


def test_an_experiment_compares_against_a_copy_of_a_published_model_never_the_file_itself(tmp_path, monkeypatch):
    published = tmp_path / "reports" / "the_model"
    published.mkdir(parents=True)
    (published / "model.pt").write_bytes(b"weights")
    (published / "model_views.npz").write_bytes(b"views")
    monkeypatch.setattr(chapter_mod, "model_dirs", lambda folder: (tmp_path / "reports" / folder, tmp_path / "runs"))
    config = chapter_config(params())
    experiment = chapter_mod.Chapter(params(), "cpu", config, None, tmp_path / "experiment", tmp_path / "run",
                                     published=False, trial=True)
    compared = experiment.published_model("the_model", "full")
    assert compared == tmp_path / "experiment" / "compared" / "the_model" / "model.pt"
    assert compared.read_bytes() == b"weights" and (compared.parent / "model_views.npz").read_bytes() == b"views"
    published_run = chapter_mod.Chapter(params(), "cpu", config, None, tmp_path / "reports" / "residual_gap",
                                        tmp_path / "run", published=True, trial=False)
    assert published_run.published_model("the_model") == published / "model.pt"  # beside it, as before

