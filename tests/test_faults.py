"""Faults the training loop promises to survive, made to happen: a run SIGKILLed at random moments (one of
them in the middle of writing a checkpoint) and resumed each time ends with the weights of a run never
interrupted; no checkpoint under its final name is ever half-written. And the same seed gives the same
numbers twice."""
from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from emo_utils.core.metrics import compute_metrics
from emo_utils.core.inference import predict_splits
from emo_utils.core.config import TrainConfig
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.train import train
from synthetic import FAST, make_learnable_data

TESTS_DIR = Path(__file__).resolve().parent
KILL_SEED = 20240607  # the kill moments are random, but the same on every run of the test

# The child trains; the test kills it. With STALL_IN_SAVE set (by this test, never read by the library),
# torch.save writes half of last.pt's temporary file and then sleeps, so a kill lands mid-write for sure.
CHILD = '''
import io, os, sys, time
sys.path.insert(0, {tests_dir!r})
import torch
torch.set_num_threads({threads})
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from synthetic import make_learnable_data

if os.environ.get("STALL_IN_SAVE"):
    real_save = torch.save

    def stalling_save(obj, f):
        if ".last.pt.tmp" not in str(getattr(f, "name", "")):
            return real_save(obj, f)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        print("stalling", flush=True)
        time.sleep(600)

    torch.save = stalling_save

config = TrainConfig.from_dict({config!r})
data = make_learnable_data(train_per_class=20)
print("ready", flush=True)
train(config, data, sys.argv[1], device="cpu", progress=False,
      on_epoch_end=lambda epoch, row: print("epoch", epoch, flush=True))
print("finished", flush=True)
'''


class Child:
    """One training process; its stdout lines arrive on a queue so the test can wait for them with a timeout."""

    def __init__(self, script: Path, run_dir: Path, log: Path, stall: bool = False):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("STALL_IN_SAVE", None)
        if stall:
            env["STALL_IN_SAVE"] = "1"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("<eof>")

    def wait_for(self, wanted: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.time(), 0.01))
            except queue.Empty:
                raise AssertionError(f"child never printed {wanted!r} within {timeout}s") from None
            if line == wanted:
                return
            assert line != "<eof>", f"child exited (rc {self.proc.wait()}) before printing {wanted!r}: " \
                                    f"{Path(self.log.name).read_text()[-2000:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()


def final_checkpoints_all_load(run_dir: Path) -> dict[str, dict]:
    """Every checkpoint under a final name reads as a whole one; temporaries (.name.tmpPID) are never read."""
    return {p.name: load_checkpoint(p) for p in sorted(run_dir.glob("*.pt"))}


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.slow
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(**FAST, epochs=8, optimizer="sgd", nesterov=True, lr=0.05, scheduler="onecycle",
                         label_smoothing=0.1, ema_decay=0.9, augment=dict(translate=3, rotate=10, erase=0.5))
    whole = train(config, make_learnable_data(train_per_class=20), tmp_path / "whole", device="cpu", progress=False)
    epoch_seconds = float(np.median([row["seconds"] for row in whole.history]))

    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD).format(tests_dir=str(TESTS_DIR), threads=torch.get_num_threads(),
                                                    config=asdict(config)))
    run_dir, log = tmp_path / "killed", tmp_path / "child.log"
    rng = random.Random(KILL_SEED)
    stall_kill = 2  # the third kill lands in the middle of writing last.pt
    done_epochs, moments = 0, []
    for kill in range(5):
        child = Child(script, run_dir, log, stall=kill == stall_kill)
        child.wait_for("ready")
        if kill == stall_kill:
            child.wait_for("stalling")
            temporaries = list(run_dir.glob(f".last.pt.tmp{child.proc.pid}"))
            assert temporaries and temporaries[0].stat().st_size > 0, "no half-written temporary to kill over"
            moments.append("mid-write of last.pt")
        else:
            # Let 0 or 1 epochs finish, then kill somewhere in the next one (or in start-up, resuming, the
            # evaluation or a checkpoint write): the moment is random, the run never gets near its end.
            wait_epochs = rng.choice([0, 1]) if done_epochs + 3 < config.epochs else 0
            for epoch in range(done_epochs + 1, done_epochs + 1 + wait_epochs):
                child.wait_for(f"epoch {epoch}")
            delay = rng.uniform(0.0, 1.0) * epoch_seconds
            time.sleep(delay)
            moments.append(f"{delay:.2f}s after {wait_epochs} epoch(s) from epoch {done_epochs}")
        assert child.proc.poll() is None, f"the run ended before kill {kill} ({moments})"
        child.kill()

        checkpoints = final_checkpoints_all_load(run_dir)
        if kill == stall_kill:
            half = run_dir / f".last.pt.tmp{child.proc.pid}"
            assert half.exists(), "the half-written temporary should be left for the next run to clean"
        epochs_now = checkpoints["last.pt"]["state"]["epoch"] if "last.pt" in checkpoints else 0
        assert epochs_now >= done_epochs, f"a kill lost finished epochs ({moments})"
        assert "final.pt" not in checkpoints, f"final.pt exists before the run ended ({moments})"
        moments[-1] += f" -> last.pt at epoch {epochs_now}"
        done_epochs = epochs_now
    print("kills:", moments)  # shown on failure, or with pytest -s

    child = Child(script, run_dir, log)
    assert child.finish() == 0, log.read_text()[-2000:]
    assert done_epochs < config.epochs, "the kills should leave work for the last resume"
    assert not list(run_dir.glob(".*.tmp*")), "temporaries of killed runs are cleaned by the next run"

    # The best-on-val weights (final.pt) and the last epoch's whole state (last.pt: weights, EMA, optimizer)
    # must both equal the uninterrupted run's: best.pt alone could come from an epoch before any kill.
    killed, uninterrupted = final_checkpoints_all_load(run_dir), final_checkpoints_all_load(tmp_path / "whole")
    for name, key in (("final.pt", "model"), ("last.pt", "model"), ("last.pt", "ema"), ("last.pt", "optimizer")):
        differing = tensors_that_differ(killed[name][key], uninterrupted[name][key])
        assert not differing, f"{name} {key} differs after kills at {moments}: {differing[:5]}"
    assert without_time(killed["final.pt"]["history"]) == without_time(whole.history)
    assert killed["final.pt"]["meta"]["best_epoch"] == whole.meta["best_epoch"]


def tensors_that_differ(a, b, where="") -> list[str]:
    """Paths inside two nested dicts/lists where a tensor or value differs (bit for bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in tensors_that_differ(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_that_differ(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and torch.equal(a, b) else [where]
    return [] if a == b else [where]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    data = make_learnable_data(train_per_class=20)

    def run(seed, name):
        config = TrainConfig(**FAST, epochs=3, seed=seed, augment="heavy", ema_decay=0.9)
        result = train(config, data, tmp_path / name, device="cpu", progress=False)
        probs = predict_splits(result.model, data)
        metrics = {split: compute_metrics(p, data.split(split)[1], data.class_names) for split, p in probs.items()}
        return without_time(result.history), metrics, probs

    history, metrics, probs = run(0, "first")
    history_again, metrics_again, probs_again = run(0, "second")
    assert history == history_again
    assert metrics == metrics_again
    assert all(np.array_equal(probs[s], probs_again[s]) for s in probs)

    other_history, _, other_probs = run(1, "other_seed")
    assert other_history != history
    assert not np.array_equal(other_probs["val"], probs["val"])


def test_stale_temporaries_of_dead_writers_are_removed_and_a_live_writers_kept(tmp_path):
    from emo_utils.core.checkpoint import remove_stale_temporaries

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid is now free: a writer that died
    dead = tmp_path / f".last.pt.tmp{finished.pid}"
    live = tmp_path / f".best.pt.tmp{os.getppid()}"  # the process that started pytest is alive
    own = tmp_path / f".final.pt.tmp{os.getpid()}"
    not_ours = tmp_path / ".notes.tmpfile"
    for path in (dead, live, own, not_ours):
        path.write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and own.exists() and not_ours.exists()
