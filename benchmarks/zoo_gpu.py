"""GPU zoo benchmark: seconds per epoch of every training notebook's full recipe, one run at a time and N at once
on one GPU, and what running N at once buys. Needs CUDA and the FER2013 data.

    python benchmarks/zoo_gpu.py --data fer2013.zip [--jobs 3] [--epochs 3] [--compile reduce-overhead] [--write]
    python benchmarks/zoo_gpu.py --data fer2013.zip --check-syncs     # also: host waits per training step

Both phases run the zoo (emo_utils/zoo/runner.py) on the same runs, with `--set epochs=E`, into a temporary folder, so
reports/ and runs/ are left alone: first `--jobs 1`, then `--jobs N`. s/epoch is the mean over the epochs after
the first (the first pays for cuDNN autotuning and compiling); the speed-up is the whole list's wall time one at a
time over N at a time, process start-up included. --compile passes a torch.compile mode to every run, so the same
command with and without it decides train.COMPILE_BY_DEFAULT.

--check-syncs first trains each recipe for one epoch in this process under torch.cuda.set_sync_debug_mode("warn")
and counts the operations that made the host wait for the GPU, per training step, by the line that called them.
A loop that never waits has well under one per step (the few per epoch are evaluation and the checkpoint).

--write appends the result, with this command line, to reports/benchmarks.md.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from emo_utils.core.data import REPO_ROOT, load_dataset
from emo_utils.recipes import notebook_parameters
from emo_utils.core.config import config_from_recipe
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.train import COMPILE_MODES, train
from emo_utils.zoo.plan import find_notebooks


def run_zoo(notebooks: list[str], data: str, out: Path, jobs: int, epochs: int, compile_mode: str | None) -> dict:
    """One zoo over `notebooks` (full recipes, no ablations, E epochs); its zoo.json."""
    cmd = [sys.executable, "-m", "emo_utils.zoo", *notebooks, "--budget", "full", "--no-ablations", "--device", "cuda",
           "--set", f"epochs={epochs}", "--data", data, "--out", str(out), "--jobs", str(jobs)]
    cmd += ["--compile", compile_mode] if compile_mode else []
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=False)
    return json.loads((out / "zoo.json").read_text())


def seconds_per_epoch(out: Path, run: dict) -> float | None:
    """Mean epoch time after the first epoch, from the model the run wrote."""
    if run["status"] != "done":
        return None
    history = load_checkpoint(out / run["model_path"])["history"]
    later = [row["seconds"] for row in history[1:]] or [history[0]["seconds"]]
    return sum(later) / len(later)


def host_syncs(notebook: Path, data, run_dir: Path) -> tuple[float, list[tuple[str, int]]]:
    """Host waits per training step of one epoch of the notebook's full recipe, and where they come from."""
    params = notebook_parameters(notebook)
    config = config_from_recipe(params["model_name"], params["full_recipe"], 0, {"epochs": 1})
    steps = len(data.split("train")[1]) // config.batch_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train(config, data, run_dir, device="cuda", progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    places = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs) / steps, places.most_common(5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="training notebooks by prefix (default: all)")
    parser.add_argument("--data", required=True, help="the FER2013 zip (or folder, or csv)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at a time in the second phase")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", choices=COMPILE_MODES)
    parser.add_argument("--check-syncs", action="store_true")
    parser.add_argument("--write", action="store_true", help="append the result to reports/benchmarks.md")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("zoo_gpu.py measures a GPU and this machine has none")
    notebooks = [str(nb) for nb in find_notebooks(args.notebooks)]

    sync_lines = []
    with tempfile.TemporaryDirectory() as tmp:
        alone = run_zoo(notebooks, args.data, Path(tmp) / "alone", 1, args.epochs, args.compile)
        together = run_zoo(notebooks, args.data, Path(tmp) / "together", args.jobs, args.epochs, args.compile)
        rows = []
        for one, many in zip(alone["runs"], together["runs"]):
            t1, tn = seconds_per_epoch(Path(tmp) / "alone", one), seconds_per_epoch(Path(tmp) / "together", many)
            rows.append((one["name"], t1, tn))
        if args.check_syncs:  # after the timings: this process then holds a CUDA context and cached memory
            data = load_dataset(args.data)
            for notebook in notebooks:
                per_step, places = host_syncs(Path(notebook), data, Path(tmp) / "syncs" / Path(notebook).stem)
                sync_lines.append(f"{Path(notebook).stem}: {per_step:.2f} host waits per training step; "
                                  + ", ".join(f"{place} x{n}" for place, n in places))
                print(sync_lines[-1], flush=True)
    speedup = alone["wall_seconds"] / together["wall_seconds"]

    def fmt(x):
        return "failed" if x is None else f"{x:.2f}"

    table = [f"| model | s/epoch alone | s/epoch, {args.jobs} at once |", "|---|---:|---:|"]
    table += [f"| {name} | {fmt(t1)} | {fmt(tn)} |" for name, t1, tn in rows]
    verdict = (f"The whole list, {args.epochs} epochs each: {alone['wall_seconds']:.0f} s one at a time, "
               f"{together['wall_seconds']:.0f} s {args.jobs} at a time: **{speedup:.2f}x** (process start-up included).")
    print("\n".join(table + [verdict] + sync_lines))

    if args.write:
        out = REPO_ROOT / "reports" / "benchmarks.md"
        if not out.exists():
            out.write_text("# Benchmarks\n\n_Appended by the scripts in benchmarks/; each line states its command._\n")
        with open(out, "a") as f:
            f.write(f"\n## Zoo on one GPU, {dt.date.today()}\n\n`python benchmarks/{Path(__file__).name} "
                    f"{' '.join(argv or sys.argv[1:])}` on {torch.cuda.get_device_name()}, torch {torch.__version__}, full recipes, compile "
                    f"{args.compile or 'off'}; s/epoch is the mean after the first epoch.\n\n" + "\n".join(table)
                    + f"\n\n{verdict}\n" + "".join(f"\n- {line}" for line in sync_lines) + ("\n" if sync_lines else ""))
        print(f"appended to {out}")


if __name__ == "__main__":
    main()
