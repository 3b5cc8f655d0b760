"""How long a trial run of each training notebook takes (`make reports NB=NN TRIAL=1`): the whole notebook through
papermill on the project's kernel, from the kernel's start to its report, retrained each time (retrain=True), with
the machine's load beside it, since a shared machine stretches every figure. A trial (core/trial.py) trains a seeded
stratified subset of FER2013 for two epochs and scores the cheap views; the target is two minutes on 2 cores.

    python benchmarks/trial_runs.py [--only 02 09] [--write [--merge]]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from emo_utils.core.distributed import cpu_name
from emo_utils.paths import EXPERIMENTS_DIR, NOTEBOOKS
from emo_utils.provenance import git_commit
from emo_utils.recipes import TRAINING_NOTEBOOKS, notebook_parameters
from emo_utils.reports.notebooks import run_notebooks
from emo_utils.reports.pages import replace_section

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks.md"
TARGET_MIN = 2.0


def newest_trial(model_name: str, since: float) -> dict | None:
    """The metrics.json of the trial this run wrote (experiments/fer2013/<model>/trial_*/), if any."""
    found = [p for p in (EXPERIMENTS_DIR / "fer2013" / model_name).glob("trial_*/metrics.json")
             if p.stat().st_mtime >= since]
    return json.loads(max(found, key=lambda p: p.stat().st_mtime).read_text()) if found else None


def kernel_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (papermill's kernels) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_trial(notebook: Path, kernel: str) -> dict:
    load_before, started, cpu_before = os.getloadavg()[0], time.time(), kernel_cpu_seconds()
    run_notebooks(only=[notebook.name[:2]], parameters={"trial": True}, retrain=True, kernel=kernel, progress=False)
    seconds, record = time.time() - started, newest_trial(notebook_parameters(notebook)["model_name"], started)
    cpu = kernel_cpu_seconds() - cpu_before
    prov = record["provenance"] if record else {}
    row = {"notebook": notebook.stem, "total s": round(seconds), "kernel CPU s": round(cpu),
           "train s": prov.get("wall_seconds"),
           "epochs": prov.get("epochs_run"), "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
           "trial PrivateTest": (record or {}).get("splits", {}).get("test_private", {}).get("accuracy")}
    print(row, flush=True)
    return row


def earlier_rows(now: set[str]) -> tuple[list[str], str]:
    """The table rows already written for notebooks not in `now`, and the command line that measured them."""
    text = REPORT.read_text() if REPORT.exists() else ""
    section = text.split("## Trial runs of the training notebooks", 1)[-1].split("\n## ", 1)[0] if text else ""
    rows = [line for line in section.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] not in now
            and line[2:4].isdigit()]
    measured = next((line.split(" on ", 1)[0] for line in section.splitlines() if line.startswith("`python")), "")
    return rows, f"measured earlier by {measured}" if measured else "measured earlier"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="notebook prefixes (default: every training notebook)")
    parser.add_argument("--kernel", default="emo-fer")
    parser.add_argument("--write", action="store_true", help="put the table into reports/benchmarks.md")
    parser.add_argument("--merge", action="store_true", help="keep the written table's rows of the notebooks not run "
                        "now (each row says its own load), with their command line")
    args = parser.parse_args(argv)
    notebooks = [nb for nb in sorted(NOTEBOOKS.glob(TRAINING_NOTEBOOKS))
                 if not args.only or any(nb.name.startswith(o) for o in args.only)]
    commit, started = git_commit(), time.time()
    rows = [one_trial(nb, args.kernel) for nb in notebooks]
    kept, earlier = earlier_rows({r["notebook"] for r in rows}) if args.merge else ([], "")
    if args.write:
        body = "\n".join([
            f"`python benchmarks/trial_runs.py{' --only ' + ' '.join(args.only) if args.only else ''} --write` on "
            f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}; "
            f"commit `{commit}`; wall time {(time.time() - started) / 60:.1f} min.", "",
            "A trial run of each training notebook (`make reports NB=NN TRIAL=1`: 2,500 training faces and 500 per "
            "test half, two epochs, centre and mirror views, no ablations), the whole notebook through papermill, "
            f"retrained each time. Target: {TARGET_MIN:.0f} minutes on 2 cores. `load` is the 1-minute load "
            "average before / after the run: on a machine shared with other work every time stretches with it, so "
            "`kernel CPU s` (the kernel's user + system CPU seconds) says what the notebook itself cost: on 2 idle "
            "cores it takes about half that in wall time, or more where it runs on one thread. The accuracy is a "
            "trial's, not a result.", "",
            "| notebook | total s | kernel CPU s | train s | epochs | load | trial PrivateTest |",
            "|---|---:|---:|---:|---:|---|---:|",
            *[f"| {r['notebook']} | {r['total s']} | {r['kernel CPU s']} | {r['train s']} | {r['epochs']} | {r['load']} | "
              + (f"{r['trial PrivateTest']:.1%}" if r["trial PrivateTest"] is not None else "-") + " |" for r in rows],
            *kept, *([f"\nRows of {', '.join(l.split(' | ')[0].strip('| ') for l in kept)}: {earlier}"] if kept else [])])
        replace_section(REPORT, "Trial runs of the training notebooks", body)
        print(f"written to {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
