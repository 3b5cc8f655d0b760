"""The zoo runner: runs side by side end with the weights each gets alone, a killed zoo resumes every run, a run
that fails is named and the others finish, and each run trains the config its notebook would."""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import nbformat
import pytest
import torch

from conftest import make_fer_folder
from emo_utils.zoo import runner as zoo, plan as zoo_plan
from emo_utils.paths import ablation_model_path, keyed_run_dir, slug, NOTEBOOKS
from emo_utils.core.augment import make_policy
from emo_utils.core.data import load_dataset
from emo_utils.recipes import notebook_parameters, parse_sets
from emo_utils.core.config import config_differences, config_from_recipe
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.train import train

MINI_XCEPTION = NOTEBOOKS / "02_train_mini_xception.ipynb"
# Notebook 02's CPU recipe (SGD, one-cycle, label smoothing, keras_light), made tiny; fp32 so any CPU runs it alike.
EPOCHS = 14
TINY = ["model_kwargs={'widths': (8, 16)}", "batch_size=16", f"epochs={EPOCHS}", "cpu_bf16=False"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A small image-folder dataset, its cache kept in the test's folder (the runs inherit EMO_CACHE)."""
    root = tmp_path_factory.mktemp("zoo_data")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMO_CACHE", str(root / "cache"))
    mp.delenv("EMO_DATA", raising=False)
    yield make_fer_folder(root, n_train=30, n_public=2, n_private=2)
    mp.undo()


@pytest.fixture(scope="module")
def alone(faces, tmp_path_factory):
    """{seed: final weights} of notebook 02's tiny recipe trained by itself, in this process, on one thread as
    the zoo's runs are."""
    params = notebook_parameters(MINI_XCEPTION)
    data, weights, threads = load_dataset(faces), {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in (0, 1):
            config = config_from_recipe(params["model_name"], params["cpu_recipe"], seed, parse_sets(TINY))
            run_dir = tmp_path_factory.mktemp(f"alone_seed{seed}")
            weights[seed] = train(config, data, run_dir, device="cpu", progress=False).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    return weights


def zoo_args(faces, out: Path, *notebooks: str, sets=TINY, seeds="0,1") -> list[str]:
    """The zoo on the named notebooks' seeds only: their ablation runs are planned and checked on their own below."""
    return [*notebooks, "--seeds", seeds, "--data", str(faces), "--out", str(out), "--device", "cpu",
            "--jobs", "2", "--threads", "1", "--no-ablations", *[f"--set={item}" for item in sets]]


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


@pytest.mark.slow
def test_two_runs_at_once_end_with_the_weights_each_gets_alone(faces, alone, tmp_path):
    out = tmp_path / "out"
    assert zoo.main(zoo_args(faces, out, "02")) == 0
    # The notebook's own seed goes where the notebook writes; another seed beside it, under seeds/.
    reports = out / "reports" / "mini_xception"
    paths = {0: reports / "model.pt", 1: reports / "seeds" / "1" / "model.pt"}
    for seed, path in paths.items():
        assert tensors_equal(load_checkpoint(path)["model"], alone[seed]), f"seed {seed} differs from its run alone"
    assert list((out / "runs" / "mini_xception").glob("*/seed1/final.pt"))  # under the config's key

    ran = json.loads((out / "zoo.json").read_text())
    runs = {run["seed"]: run for run in ran["runs"]}
    assert {run["status"] for run in runs.values()} == {"done"} and ran["jobs"] == 2
    assert runs[1]["model_path"] == "reports/mini_xception/seeds/1/model.pt" and runs[1]["epochs_run"] == EPOCHS
    assert runs[0]["weights_dtype"] == ["float32"] and runs[0]["model_bytes"] == paths[0].stat().st_size
    first, second = runs[0], runs[1]
    assert first["started_unix"] < second["ended_unix"] and second["started_unix"] < first["ended_unix"], "one by one"

    # Started again, the zoo reuses both models instead of training them again.
    assert zoo.main(zoo_args(faces, out, "02")) == 0
    assert {run["status"] for run in json.loads((out / "zoo.json").read_text())["runs"]} == {"reused"}


class Zoo:
    """The zoo as a process; its event lines (it is not on a terminal) arrive on a queue."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "emo_utils.zoo", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def wait_until(self, done, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while not done(self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(deadline - time.time(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"the zoo never got there; it printed: {''.join(self.seen)[-3000:]}") from None


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (the zoo's runs name their folders in theirs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # ended while we looked
            pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs die with the zoo through Linux's prctl")
def test_a_killed_zoo_started_again_resumes_every_run(faces, alone, tmp_path):
    out = tmp_path / "out"
    first = Zoo(zoo_args(faces, out, "02"))
    try:  # kill the zoo once both runs have finished an epoch (its event lines say "seed S: running, epoch E/14")
        first.wait_until(lambda seen: all(any(re.search(rf"seed {s}: running, epoch [1-9][0-9]*/", line)
                                              for line in seen) for s in (0, 1)))
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)

    deadline = time.time() + 30
    while processes_mentioning(str(out)) and time.time() < deadline:
        time.sleep(0.2)
    assert not processes_mentioning(str(out)), "the runs outlived the killed zoo"
    (keyed,) = (out / "runs" / "mini_xception").iterdir()  # the recipe's config key (paths.keyed_run_dir)
    run_dirs = {0: keyed, 1: keyed / "seed1"}
    epochs_at_kill = {seed: load_checkpoint(d / "last.pt")["state"]["epoch"] for seed, d in run_dirs.items()}
    assert all(1 <= e < EPOCHS for e in epochs_at_kill.values()), f"both runs should be part-way: {epochs_at_kill}"

    assert zoo.main(zoo_args(faces, out, "02")) == 0
    for seed, run_dir in run_dirs.items():
        second_start = (run_dir / "zoo.log").read_text().rpartition(zoo.LOG_HEADER)[2]
        epochs_trained = [int(e) for e in re.findall(r"epoch +(\d+)  train loss", second_start)]
        assert epochs_trained == list(range(epochs_at_kill[seed] + 1, EPOCHS + 1)), f"seed {seed} did not resume"
        model = out / "reports" / "mini_xception" / ("model.pt" if seed == 0 else "seeds/1/model.pt")
        assert tensors_equal(load_checkpoint(model)["model"], alone[seed]), f"seed {seed} differs from its run alone"


def write_training_notebook(path: Path, model_name: str, recipe: dict) -> Path:
    """A notebook with only the parameters cell a training notebook has."""
    source = (f"model_name = {model_name!r}\nbudget = 'cpu'\nseed = 0\n"
              f"full_recipe = {recipe!r}\ncpu_recipe = {recipe!r}\n")
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    return path


@pytest.mark.slow
def test_a_run_that_fails_is_named_with_its_log_and_the_others_finish(faces, tmp_path, capsys):
    broken = write_training_notebook(tmp_path / "99_train_broken.ipynb", "no_such_net", {"epochs": 2})
    out = tmp_path / "out"
    args = zoo_args(faces, out, str(broken), "02", sets=[*TINY, "epochs=2"], seeds="0")  # the later epochs wins
    assert zoo.main(args) == 1
    printed = capsys.readouterr().out
    (log,) = (out / "runs" / "no_such_net").glob("*/zoo.log")  # under the config's key
    assert f"FAILED no_such_net seed 0 (exit 2); log {log}" in printed  # refused before training
    assert "unknown model" in printed.split("FAILED no_such_net")[1]  # the end of its log: the error itself
    runs = {run["name"]: run for run in json.loads((out / "zoo.json").read_text())["runs"]}
    assert runs["no_such_net"]["status"] == "failed" and runs["no_such_net"]["log"] == str(log.relative_to(out))
    assert runs["mini_xception"]["status"] == "done" and runs["mini_xception"]["epochs_run"] == 2
    assert (out / "reports" / "mini_xception" / "model.pt").exists()


def test_each_run_trains_the_config_its_notebook_would(tmp_path):
    """Seeds and each notebook's ablations (09's, and 08's run without vertical flips): the config the zoo hands
    each run equals the one the notebook trains, and the run lands where the notebook looks."""
    notebooks = zoo_plan.find_notebooks(["08", "09"])
    runs = zoo_plan.plan_runs(notebooks, "full", zoo_plan.seeds_by_notebook(["09=0,2"], notebooks), [],
                              tmp_path / "reports", tmp_path / "runs")
    params = {run.notebook: notebook_parameters(run.notebook) for run in runs}

    by_name = {(run.name, run.seed): run for run in runs}
    assert list(by_name)[:3] == [("model_y", 0), ("vgg_gap", 0), ("vgg_gap", 2)]  # recipes first, extras after
    # A full-budget run's weights stand beside the CPU recipe's, in reports/<model>_full.
    assert by_name["vgg_gap", 0].model_path == tmp_path / "reports" / "vgg_gap_full" / "model.pt"
    assert by_name["vgg_gap", 2].model_path == tmp_path / "reports" / "vgg_gap_full" / "seeds" / "2" / "model.pt"
    # Checkpoints under a folder keyed by the recipe's config (paths.keyed_run_dir), as the notebook's chapter keys
    # them: a run of another config never finds this one's last.pt.
    vgg_runs = keyed_run_dir(tmp_path / "runs" / "vgg_gap_full", by_name["vgg_gap", 0].config)
    assert by_name["vgg_gap", 0].run_dir == vgg_runs
    assert by_name["vgg_gap", 2].run_dir == vgg_runs / "seed2"

    for seed in (0, 2):  # the recipe itself, as the notebook builds it at that seed
        p = params[by_name["vgg_gap", seed].notebook]
        wanted = config_from_recipe("vgg_gap", p["full_recipe"], seed, p.get("overrides") or {})
        assert not config_differences(asdict(by_name["vgg_gap", seed].config), wanted)

    ablation_runs = 0
    for model in ("model_y", "vgg_gap"):
        p = params[by_name[model, 0].notebook]
        for name, changes in p["full_ablations"].items():  # as ablation.train_ablations builds them
            wanted = config_from_recipe(model, p["full_recipe"], 0, {**(p.get("overrides") or {}), **changes})
            run = by_name[f"{model} {slug(name)}", 0]
            assert not config_differences(asdict(run.config), wanted)
            assert run.model_path == ablation_model_path(tmp_path / "reports" / f"{model}_full", name)
            assert run.run_dir == keyed_run_dir(tmp_path / "runs" / f"{model}_full", by_name[model, 0].config) / \
                "ablations" / slug(name)
            ablation_runs += 1
    assert len(runs) == 3 + ablation_runs == 6  # 08's one ablation, 09's two

    # 08's ablation is the published augmentation without its vertical flips, as its committed weights were trained.
    (changes,) = params[by_name["model_y", 0].notebook]["full_ablations"].values()
    assert list(changes) == ["augment"] and make_policy(changes["augment"]) == replace(make_policy("heavy"), vflip=0.0)


def test_jobs_divide_the_cores_on_a_cpu():
    assert zoo.default_jobs_and_threads("cpu", None, None, cores=8) == (8, 1)
    assert zoo.default_jobs_and_threads("cpu", None, 2, cores=8) == (4, 2)
    assert zoo.default_jobs_and_threads("cpu", 2, None, cores=8) == (2, 4)
    assert zoo.default_jobs_and_threads("cuda", None, None, cores=16) == (zoo.GPU_JOBS, 16 // zoo.GPU_JOBS)


@pytest.mark.slow
def test_the_time_cap_stops_the_runs_and_says_how_to_resume(faces, tmp_path, capsys):
    out = tmp_path / "out"
    args = zoo_args(faces, out, "02", sets=[*TINY, "epochs=1000"]) + ["--jobs", "1", "--time-cap", "0.02"]
    started = time.time()
    assert zoo.main(args) == 1
    assert time.time() - started < 60, "the cap of 1.2 s did not stop the run"
    runs = {run["seed"]: run for run in json.loads((out / "zoo.json").read_text())["runs"]}
    assert runs[0]["status"] == "stopped" and runs[1]["status"] == "not started"
    assert "not finished: mini_xception seed 0, mini_xception seed 1. Run the same command again" in capsys.readouterr().out


def test_a_budget_other_than_the_notebooks_own_goes_beside_its_report(tmp_path):
    """09 reports its CPU recipe, so its full recipe goes to reports/vgg_gap_full; 04's own report is its full
    (published) recipe, which fits on a CPU, so that stays in reports/the_model and a cpu run goes beside it."""
    notebooks = zoo.find_notebooks(["04", "09"])

    def folders(budget):
        runs = zoo.plan_runs(notebooks, budget, {}, [], tmp_path / "reports", tmp_path / "runs", ablations=False)
        return [run.model_path.parent.name for run in runs]

    assert folders(None) == ["the_model", "vgg_gap"]
    assert folders("full") == ["the_model", "vgg_gap_full"]
    assert folders("cpu") == ["the_model_cpu", "vgg_gap"]


def test_a_config_file_that_cannot_be_trained_is_named_before_anything_is_written(tmp_path, capsys):
    from emo_utils.zoo import train as train_cli
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"epochs": 1, "colour": 2}))
    to = ["--model-path", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run")]
    cases = {"missing": ([str(tmp_path / "missing.json"), *to], "No such file"),
             "not json": ([str(MINI_XCEPTION), *to], f"--config {MINI_XCEPTION}"),  # a notebook is JSON, not a config
             "unknown field": ([str(unknown), *to], "unknown TrainConfig field(s) ['colour']"),
             "nowhere to write": ([str(unknown)], "--config needs --model-path and --run-dir")}
    for case, (args, named) in cases.items():
        with pytest.raises(SystemExit) as stop:
            train_cli.main(["--config", *args])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert stop.value.code == 2 and err.startswith("python -m emo_utils.zoo.train: error: "), (case, err)
        assert named in err, (case, err)
    assert list(tmp_path.iterdir()) == [unknown]  # no model, no run folder


def test_a_misspelt_recipe_part_is_one_line_before_anything_is_written(faces, tmp_path, capsys):
    """Each named part of a recipe is built before the run starts: a misspelt name, field or strength range is a
    one-line error naming it, not a traceback from inside the first step."""
    from emo_utils.zoo import train as train_cli
    cases = {'optimizer="sgdd"': "unknown optimizer 'sgdd'", 'scheduler="cos"': "unknown scheduler 'cos'",
             'loss="focall"': "unknown loss 'focall'", 'augment="hevy"': "unknown augmentation policy 'hevy'",
             'augment={"corupt": 0.5}': "unknown augmentation field(s) ['corupt']",
             'augment={"corrupt": 0.5, "corrupt_ranges": {"blurr": [1, 2]}}': "unknown corruption(s) ['blurr']",
             'augment={"corrupt": 0.5, "corrupt_ranges": {"jpeg": [50, 2]}}': "corrupt_ranges['jpeg'] is [50, 2]",
             'model_kwargs={"widht": 8}': "unexpected keyword argument 'widht'",
             'model="vgg"': "a notebook trains its own model"}
    for setting, named in cases.items():
        with pytest.raises(SystemExit) as stop:
            train_cli.main([str(MINI_XCEPTION), "--set", setting, "--data", str(faces),
                            "--model-path", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # argparse's usage, then the error
        assert stop.value.code == 2 and "Traceback" not in err and named in last, (setting, last)
        assert last.startswith("python -m emo_utils.zoo.train: error: "), (setting, last)
    assert list(tmp_path.iterdir()) == []  # no model, no run folder


def test_a_dataset_named_on_the_zoo_goes_to_every_run_and_under_its_own_folder(tmp_path):
    """`make zoo --dataset NAME --data PATH` (#37): every planned run trains on NAME and writes under
    reports/NAME/, as `python -m emo_utils.zoo.train --dataset NAME` does; FER2013's folders stay untouched."""
    notebooks = zoo.find_notebooks(["02", "09"])
    runs = zoo.plan_runs(notebooks, None, {}, [], tmp_path / "reports", tmp_path / "runs", dataset="my_faces")
    assert {run.config.dataset for run in runs} == {"my_faces"} and len(runs) > 2  # the ablations too
    for run in runs:
        assert run.model_path.is_relative_to(tmp_path / "reports" / "my_faces"), run.model_path
        assert run.run_dir.is_relative_to(tmp_path / "runs" / "my_faces"), run.run_dir
    fer_runs = zoo.plan_runs(notebooks, None, {}, [], tmp_path / "reports", tmp_path / "runs")
    assert {run.config.dataset for run in fer_runs} == {"fer2013"}
    assert fer_runs[0].model_path == tmp_path / "reports" / "mini_xception" / "model.pt"


def test_a_dataset_without_its_data_is_a_one_line_error(tmp_path, capsys):
    assert zoo.main(["02", "--dataset", "my_faces", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["zoo: error: --dataset my_faces needs --data PATH, its folder (README, 'Datasets')"]
    assert not (tmp_path / "out").exists()
