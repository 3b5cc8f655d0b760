"""The zoo on a real one-node SLURM cluster (tests/slurm_cluster.py; CI installs slurm-wlm and munge): a trial zoo
publishes what the local zoo publishes, a job stopped with a signal is requeued and ends with the uninterrupted
weights, a failing job is named with its log while the other finishes, and bad options stop the zoo before it
submits anything. Without SLURM (or root, which the test cluster runs as) these skip, saying why."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from test_zoo import TINY, Zoo, faces, tensors_equal, write_training_notebook  # noqa: F401 (faces: a fixture)
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.zoo import runner as zoo, slurm

EPOCHS = 16  # long enough (about 0.5 s an epoch on an idle core) for a signal to land in mid-run
TRIAL = [*TINY, f"epochs={EPOCHS}"]  # the later epochs= wins
ON_SLURM = ["--executor", "slurm", "--gpus-per-run", "0", "--cpus-per-run", "1", "--mem-gb", "1"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A one-node cluster for the session; SLURM_CONF points the zoo and the client commands at it. Stops only
    the daemons it started."""
    if slurm_cluster.missing():
        pytest.skip(f"SLURM is not installed ({', '.join(slurm_cluster.missing())} missing): "
                    "python tests/slurm_cluster.py --install (as root), as .ci/run does")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root (SlurmUser=root): run the SLURM tests as root")
    running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    patch = pytest.MonkeyPatch()
    for name in ("SLURM_CONF", "PATH"):
        patch.setenv(name, running.env[name])
    yield running
    patch.undo()
    slurm_cluster.stop(running)


def zoo_args(faces, out: Path, *notebooks: str, sets=TRIAL, seeds="0,1") -> list[str]:
    return [*notebooks, "--seeds", seeds, "--data", str(faces), "--out", str(out), "--no-ablations",
            *[f"--set={item}" for item in sets]]


def local_args(faces, out: Path, *notebooks: str, **kwargs) -> list[str]:
    return [*zoo_args(faces, out, *notebooks, **kwargs), "--device", "cpu", "--jobs", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def local_zoo(faces, tmp_path_factory):
    """The local zoo's output for notebook 02's two seeds (the same one thread per run as the SLURM jobs)."""
    out = tmp_path_factory.mktemp("local") / "out"
    assert zoo.main(local_args(faces, out, "02")) == 0
    return out


def published(out: Path) -> dict[str, dict]:
    """{path under reports/: (weights, the numbers the reports read)} of every model a zoo wrote."""
    models = {}
    for path in sorted((out / "reports").rglob("model.pt")):
        checkpoint = load_checkpoint(path)
        numbers = {k: checkpoint["meta"][k] for k in ("best_val_acc", "epochs_run", "planned_epochs")}
        numbers["val_acc"] = [row["val_acc"] for row in checkpoint["history"]]
        models[str(path.relative_to(out))] = {"weights": checkpoint["model"], "numbers": numbers}
    return models


@pytest.mark.slow
def test_a_trial_zoo_on_slurm_publishes_what_the_local_zoo_does_and_a_failing_job_stops_no_other(
        cluster, faces, local_zoo, tmp_path, capsys):
    """Notebook 02's two seeds beside a notebook whose run is refused (exit 2; one zoo for both checks: each SLURM
    zoo costs its jobs' start-up)."""
    broken = write_training_notebook(tmp_path / "99_train_broken.ipynb", "no_such_net", {"epochs": 2})
    out = tmp_path / "out"
    assert zoo.main(zoo_args(faces, out, str(broken), "02") + ["--seeds", "99=0"] + ON_SLURM) == 1  # 99: one seed
    printed = capsys.readouterr().out
    on_slurm, locally = published(out), published(local_zoo)
    assert list(on_slurm) == list(locally) == ["reports/mini_xception/model.pt",
                                               "reports/mini_xception/seeds/1/model.pt"]
    for path in on_slurm:
        assert on_slurm[path]["numbers"] == locally[path]["numbers"], path
        assert tensors_equal(on_slurm[path]["weights"], locally[path]["weights"]), f"{path} differs from the local run"

    (log,) = (out / "runs" / "no_such_net").glob("*/zoo.log")  # under the config's key
    assert f"FAILED no_such_net seed 0 (exit 2); log {log}" in printed  # refused before training
    assert "unknown model" in printed.split("FAILED no_such_net")[1]  # the end of its log: the error itself
    ran = json.loads((out / "zoo.json").read_text())
    statuses = {(run["name"], run["seed"]): run["status"] for run in ran["runs"]}
    assert ran["executor"] == "slurm"
    assert statuses == {("no_such_net", 0): "failed", ("mini_xception", 0): "done", ("mini_xception", 1): "done"}
    jobs = [run["slurm_job"] for run in ran["runs"] if run["name"] == "mini_xception"]
    assert re.fullmatch(r"(\d+)_0 \1_1", " ".join(jobs)), f"the two seeds should be one job array: {jobs}"
    assert "run            seed  epoch" in printed  # the local zoo's table
    assert f"mini_xception     1  {EPOCHS}/{EPOCHS}" in printed


@pytest.mark.slow
def test_a_job_stopped_with_a_signal_is_requeued_and_ends_with_the_uninterrupted_weights(cluster, faces, local_zoo,
                                                                                          tmp_path, capsys):
    out = tmp_path / "out"
    running = Zoo(zoo_args(faces, out, "02", seeds="0") + ON_SLURM)
    running.wait_until(lambda seen: any(re.search(r"seed 0: running, epoch [1-9]", line) for line in seen), 300)
    job = re.search(r"is SLURM job (\S+);", "".join(running.seen)).group(1)
    # Started again meanwhile, the zoo submits nothing: two jobs would write one run's checkpoints.
    assert zoo.main(zoo_args(faces, out, "02", seeds="0") + ON_SLURM) == 2
    assert f"still on the cluster: mini_xception seed 0 (job {job}, RUNNING)" in capsys.readouterr().err
    subprocess.run(["scancel", f"--signal={slurm.PREEMPT_SIGNAL}", job], check=True)  # as before a time limit
    running.wait_until(lambda seen: any("what ran:" in line for line in seen), 300)
    assert running.proc.wait(timeout=60) == 0, "".join(running.seen)[-3000:]
    assert any("seed 0: requeued" in line for line in running.seen), "the zoo never showed the run requeued"

    (log,) = (out / "runs" / "mini_xception").glob("*/zoo.log")  # under the config's key
    attempts = log.read_text().split(zoo.LOG_HEADER)[1:]
    assert len(attempts) == 2 and all(f"SLURM job {job} " in a for a in attempts), "one job, started twice"
    before, after = ([int(e) for e in re.findall(r"epoch +(\d+)  train loss", a)] for a in attempts)
    # The requeued job goes on from the last epoch whose last.pt was written: the one it last printed, or the one
    # before when the signal came between an epoch's line and its checkpoint (then that epoch runs again).
    assert 1 <= len(before) < EPOCHS and after[0] in (before[-1], before[-1] + 1), (before, after)
    assert after == list(range(after[0], EPOCHS + 1)), (before, after)
    model = out / "reports" / "mini_xception" / "model.pt"
    uninterrupted = local_zoo / "reports" / "mini_xception" / "model.pt"
    assert tensors_equal(load_checkpoint(model)["model"], load_checkpoint(uninterrupted)["model"])


@pytest.mark.slow
def test_one_run_over_two_gloo_ranks_in_one_job(cluster, faces, tmp_path):
    """--ranks-per-run 2: the job runs torchrun and the run trains as two DDP ranks (gloo on CPU) sharing the
    global batch (core/distributed.py). Its weights are not the one process's here: on CPU each rank's BatchNorm
    normalises its own half (no SyncBatchNorm kernel); test_distributed.py checks the DDP arithmetic itself."""
    out = tmp_path / "out"
    two_ranks = [*ON_SLURM, "--cpus-per-run", "2", "--ranks-per-run", "2"]  # the later flag wins
    assert zoo.main(zoo_args(faces, out, "02", seeds="0", sets=[*TINY, "epochs=3"]) + two_ranks) == 0
    model = load_checkpoint(out / "reports" / "mini_xception" / "model.pt")
    assert model["meta"]["device"].startswith("2 x cpu") and "DDP" in model["meta"]["device"], model["meta"]["device"]
    assert model["meta"]["epochs_run"] == 3
    (log,) = (out / "runs" / "mini_xception").glob("*/zoo.log")
    log = log.read_text()
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log


def squeue_count() -> int:
    return len(subprocess.run(["squeue", "-h", "-t", "all"], capture_output=True, text=True, check=True).stdout
               .splitlines())


@pytest.mark.slow
def test_bad_slurm_options_are_one_line_errors_before_anything_is_submitted(cluster, faces, tmp_path, capsys,
                                                                             monkeypatch):
    unreachable = tmp_path / "unreachable.conf"  # the cluster's config with a port nothing listens on
    unreachable.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={slurm_cluster.free_port()}",
                                  cluster.conf.read_text()))
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "debug"\ncpus = 1\ngpus = 0\ncolour = "blue"\n')
    cases = {"unknown partition": (["--partition", "nosuch"], "unknown partition 'nosuch': this cluster has debug"),
             "a time limit shorter than the signal's notice": (["--time-min", "2"], "--time-min 2: a job gets USR1"),
             "zero CPUs": (["--cpus-per-run", "0"], "cpus=0: give a whole number >= 1 (--cpus-per-run)"),
             "more ranks than CPUs": (["--ranks-per-run", "2"], "--cpus-per-run 1 for 2 ranks: give each rank a CPU"),
             "too many CPUs": (["--cpus-per-run", "512"], "--cpus-per-run 512: partition debug's nodes have"),
             "GPUs on a CPU cluster": (["--gpus-per-run", "1"], "--gpus-per-run 1: partition debug has no GPUs"),
             "unknown config key": (["--slurm-config", str(config)], "unknown key(s) ['colour']"),
             "unreachable controller": (["--slurm-conf-for-test"], "the SLURM controller does not answer")}
    submitted = squeue_count()
    for case, (extra, named) in cases.items():
        if extra == ["--slurm-conf-for-test"]:
            monkeypatch.setenv("SLURM_CONF", str(unreachable))
            extra = []
        out = tmp_path / case.replace(" ", "_")
        args = zoo_args(faces, out, "02") + ON_SLURM + extra
        assert zoo.main(args) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("zoo: error: ") and named in err[0], (case, err)
        assert not out.exists(), f"{case}: the zoo wrote {out} before refusing"
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    assert squeue_count() == submitted, "a refused zoo submitted a job"


def test_options_come_from_the_defaults_then_the_file_then_the_flags(tmp_path):
    config = tmp_path / "slurm.toml"
    config.write_text('partition = "gpu"\ncpus = 16\nsetup = ["module load cuda"]\n[sbatch]\naccount = "lab"\n')
    options = slurm.options_from(config, {"cpus": 4, "partition": None, "gpus": 0})
    assert (options.partition, options.cpus, options.gpus, options.mem_gb) == ("gpu", 4, 0, 32.0)
    assert options.setup == ["module load cuda"] and options.sbatch == {"account": "lab"} and options.device == "cpu"
    with pytest.raises(slurm.SlurmSetupError, match="not_a_file.toml"):
        slurm.options_from(tmp_path / "not_a_file.toml", {})


def test_the_job_script_asks_for_the_options_and_checkpoints_on_the_signal(tmp_path):
    """What sbatch receives (submitit writes the script; nothing is submitted here)."""
    options = slurm.SlurmOptions(partition="gpu", time_min=90, cpus=6, mem_gb=12, gpus=2,
                                 sbatch={"account": "lab"}, setup=["module load cuda"])
    executor = slurm.make_executor(options, tmp_path)
    script = executor._make_submission_file_text("python -m submitit.core._submit FOLDER", "UID")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=12G",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --account=lab", "#SBATCH --requeue",
                 f"#SBATCH --signal={slurm.PREEMPT_SIGNAL}@{slurm.SIGNAL_DELAY_S}",
                 f"export SUBMITIT_PREEMPT_SIGNAL={slurm.PREEMPT_SIGNAL}", "module load cuda"):
        assert line in script.splitlines(), f"{line!r} not in the job script:\n{script}"


def test_a_stopped_run_is_terminated_without_the_popen_lock(tmp_path):
    """checkpoint() runs in a signal handler that interrupted Popen.wait: stop_process must not need the Popen."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.time()
    slurm.stop_process(child.pid, grace_seconds=10)
    assert time.time() - started < 10, "SIGTERM did not stop it"
    with pytest.raises(ProcessLookupError):  # ended and reaped: no zombie left behind
        os.kill(child.pid, 0)


def test_the_table_says_requeued_for_a_job_that_ran_and_waits_again():
    assert slurm.job_status("PENDING", "queued") == "queued"
    assert slurm.job_status("RUNNING", "queued") == "running"
    assert slurm.job_status("PENDING", "running") == "requeued"  # SLURM stopped it; it goes on from last.pt
    assert slurm.job_status("REQUEUED", "running") == "requeued"
    assert slurm.job_status("RUNNING", "requeued") == "running"
