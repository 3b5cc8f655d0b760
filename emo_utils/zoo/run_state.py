"""What a run's files say, read the same way by the local zoo (runner.py) and the SLURM one (slurm.py): the
header that starts each attempt in its log, its progress from last.pt, its result from model.pt; and the
environment a run's process gets.
"""
from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Run

LOG_HEADER = "=== zoo "  # starts each attempt's part of a run's log


def child_environment(device: str, threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU zoo on a GPU machine stays on the CPU
    return env


def last_attempt(run: Run) -> str:
    """The part of the run's log its latest start wrote."""
    if not run.log.exists():
        return ""
    return run.log.read_text(errors="replace").rpartition(LOG_HEADER)[2]


def read_checkpoint(path: Path) -> dict | None:
    """A checkpoint's plain data; mmap leaves the tensors on disk. None while it does not exist."""
    import torch  # here, not above: a SLURM job's process imports this module and must start without torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None  # not written yet; a broken one is the run's to report


def update_progress(run: Run) -> bool:
    """Read the run's last.pt when a new epoch has replaced it; True when the progress changed."""
    last = run.run_dir / "last.pt"
    mtime = last.stat().st_mtime if last.exists() else 0.0
    if mtime == run.checkpoint_mtime:
        return False
    run.checkpoint_mtime = mtime
    checkpoint = read_checkpoint(last)
    if checkpoint is None:
        return False
    state = checkpoint["state"]
    run.epoch, run.planned = state["epoch"], state["planned_epochs"]
    history = state["history"]
    if history:
        run.best_val_acc = max(row["val_acc"] for row in history)
        run.seconds_per_epoch = sum(row["seconds"] for row in history) / len(history)
    return True


def finish(run: Run, returncode: int) -> None:
    """A run's process ended: its status, and its numbers from the model it wrote."""
    run.returncode, run.ended = returncode, time.time()
    finished = read_checkpoint(run.model_path) if returncode == 0 else None
    if finished is None:
        run.status = "failed"
        return
    run.status = "reused" if '"reused": true' in last_attempt(run) else "done"
    meta, history = finished["meta"], finished["history"]
    run.epoch, run.planned = meta["epochs_run"], meta["planned_epochs"]
    run.best_val_acc, run.wall_seconds = meta["best_val_acc"], meta["wall_seconds"]
    run.seconds_per_epoch = sum(row["seconds"] for row in history) / max(len(history), 1)
