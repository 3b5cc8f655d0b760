"""Data parallel training under torchrun: 2 gloo processes on CPU train the model one process trains."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddp_worker
from emo_utils.core.models import build_model
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.train import train

pytestmark = pytest.mark.slow  # runs notebooks or torchrun processes end to end

WORKER = Path(ddp_worker.__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, run_dir: Path, report: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(WORKER), str(run_dir), str(report)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    done = torchrun(2, base / "two_ranks", base)
    assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (OMP_NUM_THREADS=1), for the same float summation order
    try:
        train(ddp_worker.CONFIG, ddp_worker.data(), base / "one_process", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)  # later tests get the threads they started with
    return base


def test_two_gloo_ranks_train_the_same_model_as_one_process_with_the_combined_batch(runs):
    one = load_checkpoint(runs / "one_process" / "final.pt")
    two = load_checkpoint(runs / "two_ranks" / "final.pt")
    assert one["model"].keys() == two["model"].keys()
    for name, weight in one["model"].items():
        # Equal up to float summation order (the all-reduce adds two half-batch gradients).
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-4, atol=1e-5, msg=name)
    for name, weight in one["raw_model"].items():
        torch.testing.assert_close(two["raw_model"][name], weight, rtol=1e-4, atol=1e-5, msg=name)
    # And training moved the weights: the comparison is not between two untouched initialisations.
    torch.manual_seed(ddp_worker.CONFIG.seed)
    initial = build_model("ddp_test_net", 7).state_dict()
    assert all(not torch.allclose(initial[k], one["raw_model"][k], atol=1e-3) for k in initial)


def test_each_rank_trains_on_its_half_of_the_global_batch(runs):
    # Two ranks each running the whole batch would also average to the same gradient: the shards must be halves.
    for rank in (0, 1):
        assert json.loads((runs / f"batches_rank{rank}.json").read_text()) == [ddp_worker.CONFIG.batch_size // 2]


def test_metrics_are_reduced_across_ranks(runs):
    one = load_checkpoint(runs / "one_process" / "final.pt")["history"]
    two = load_checkpoint(runs / "two_ranks" / "final.pt")["history"]
    assert len(one) == len(two) == ddp_worker.CONFIG.epochs
    for a, b in zip(one, two):
        # val is split over the ranks and summed back; train loss/accuracy are summed over ranks and steps.
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1e-9)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_rank_zero_alone_writes_and_the_run_records_its_ranks(runs):
    files = sorted(p.name for p in (runs / "two_ranks").iterdir())
    assert files == ["best.pt", "final.pt", "last.pt"]  # no second writer's temporaries or copies
    meta = load_checkpoint(runs / "two_ranks" / "final.pt")["meta"]
    assert meta["device"].startswith("2 x cpu") and "DDP" in meta["device"]


def test_each_rank_ends_without_interpreter_teardown(runs):
    # A finished two-rank job aborted at exit on a loaded machine (rank 0 SIGABRT, "terminate called without an
    # active exception"): DDP keeps gloo's group and its threads alive past destroy_process_group, and the
    # interpreter's teardown ran with them. distributed.end_rank, the training command line's exit under torchrun,
    # leaves without that teardown; the worker's atexit hook would leave a marker if it ran.
    assert not list(runs.glob("teardown_rank*"))


def test_the_training_command_line_ends_a_torchrun_rank_through_end_rank(tmp_path, monkeypatch, capsys):
    """The command line's distributed path, without the processes: once training returns under torchrun, main
    hands the rank to distributed.end_rank instead of returning into interpreter teardown."""
    import nbformat
    from conftest import make_fer_folder
    from emo_utils.core import distributed
    from emo_utils.zoo import train as train_cli
    from emo_utils.core.checkpoint import TrainResult
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))
    source = "model_name = 'mini_xception'\nbudget = 'cpu'\nseed = 0\nfull_recipe = {}\ncpu_recipe = {}\n"
    notebook = tmp_path / "02_train_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})]),
                   notebook)
    # Six faces a class: the command line checks the data before training (one held out for val per class).
    faces = make_fer_folder(tmp_path, n_train=6, n_public=1, n_private=1)
    ended = []
    monkeypatch.setattr(train_cli, "train", lambda config, *a, **k: TrainResult(None, config, [], {"epochs_run": 1}))
    monkeypatch.setattr(distributed, "active", lambda: True)  # as under torchrun, rank 0
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "end_rank", lambda code=0: ended.append(code) or (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        train_cli.main([str(notebook), "--data", str(faces), "--report-dir", str(tmp_path / "report"),
                         "--run-dir", str(tmp_path / "run")])
    assert ended == [0]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from Linux's /proc")
def test_gloo_threads_outlive_destroy_process_group_once_ddp_wrapped_a_model(tmp_path):
    """Why end_rank exists: if this starts failing, torch frees the group on destroy and the hard exit can go."""
    script = tmp_path / "threads_after_destroy.py"
    script.write_text(
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))\n"
        "del net\n"
        "dist.destroy_process_group()\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "open(os.path.join(os.path.dirname(__file__), 'gloo_rank' + os.environ['RANK']), 'w')"
        ".write(str(int(any('gloo' in n for n in names))))\n"  # a file per rank: their stdout lines interleave
        "os._exit(0)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"gloo_rank{rank}").read_text() for rank in (0, 1)] == ["1", "1"], done.stdout


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = ("import sys; sys.path.insert(0, %r); import ddp_worker, dataclasses; from emo_utils.core.train import train; "
            "train(dataclasses.replace(ddp_worker.CONFIG, batch_size=33), ddp_worker.data(), %r, device='cpu')"
            % (str(WORKER.parent), str(tmp_path / "odd")))
    script = tmp_path / "odd_batch.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "batch_size 33 does not split over 2 ranks" in done.stderr
