"""The zoo runner: every training notebook's recipe (or those named), several runs at a time on one device.

    python -m emo_utils.zoo                                    # notebooks/NN_train_*.ipynb, each its own budget
    python -m emo_utils.zoo 02 09 --budget full --seeds 09=0,1,2 --jobs 3
    python -m emo_utils.zoo --budget full --seeds 09=0,1,2 --data fer2013.zip --out zoo_out --time-cap 15
    python -m emo_utils.zoo 02 --dataset rafdb --data /data/RAF-DB        # another dataset: reports/rafdb/...
    python -m emo_utils.zoo 02 09 --executor slurm --partition gpu         # each run a SLURM job (slurm.py)

Each run is `python -m emo_utils.zoo.train NOTEBOOK --budget B --seed S ...` in a process of its own, its output in
zoo.log beside its checkpoints. So a run resumes after a kill like any run of the loop (start the same command
again), one that fails leaves the others going, and each writes its model where the notebook would: `make
reports` then evaluates it instead of retraining. Where things go (plan.py plans them, paths.py names them), <folder> being
<model> for the cpu budget and <model>_full for the full one (make reports runs the notebook on both):

  the notebook's seed        reports/<folder>/model.pt                     runs/<folder>/
  another seed S             reports/<folder>/seeds/S/model.pt             runs/<folder>/seedS/
  the notebook's ablations   reports/<folder>/ablations/<slug>/model.pt    runs/<folder>/ablations/<slug>/
                             (its cpu_ablations or full_ablations, as ablation.train_ablations trains them)

with --out DIR, DIR/reports and DIR/runs instead, and DIR/zoo.json (else runs/zoo.json) says what ran.

Why several processes: one small net leaves most of a GPU idle while Python launches its kernels. Measured on
one H100, before the zoo existed: 16-37% of the SMs busy with one run, 97-100% with three flagship runs at once, each of
them as fast as one alone. On a CPU the cores are divided instead: jobs x threads per run = cores.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..core import data as fer, datasets
from ..core.files import write_atomically
from ..core.train import COMPILE_MODES
from ..paths import roots, run_config_file, slurm_logs
from ..provenance import git_commit
from .plan import Run, find_notebooks, plan_runs, seeds_by_notebook
from .progress import Display, duration, table
from .run_state import LOG_HEADER, child_environment, finish, last_attempt, read_checkpoint, update_progress

GPU_JOBS = 3  # measured on an H100: three runs kept an H100 97-100% busy, each as fast as alone
PR_SET_PDEATHSIG = 1  # from linux/prctl.h


# ---------------------------------------------------------------- running

def command(run: Run, data_path: Path, compile_mode: str | None) -> list[str]:
    """The run's training command line, handed its config as JSON in its run folder (written here)."""
    config_path = run_config_file(run.run_dir)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(config_path, lambda f: f.write(json.dumps(asdict(run.config), indent=1).encode()))
    return ([sys.executable, "-m", "emo_utils.zoo.train", "--config", str(config_path), "--data", str(data_path),
             "--model-path", str(run.model_path), "--run-dir", str(run.run_dir)]
            + (["--compile", compile_mode] if compile_mode else []) + (["--trial"] if run.trial else []))


def die_with(zoo_pid: int):
    """preexec_fn: the kernel SIGKILLs the run when the zoo dies, however it dies, so a restarted zoo never
    finds a run of the killed one still writing to the same folder. Linux only."""
    def set_parent_death_signal():
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zoo_pid:  # the zoo died before prctl: nothing would stop this run
            os._exit(1)
    return set_parent_death_signal if sys.platform.startswith("linux") else None


def start(run: Run, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with open(run.log, "a") as log:
        log.write(f"\n{LOG_HEADER}{dt.datetime.now().isoformat(timespec='seconds')}: {shlex.join(cmd)}\n")
        log.flush()
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=fer.REPO_ROOT,
                                   preexec_fn=die_with(os.getpid()))
    run.status, run.started = "running", time.time()
    return process


def stop(run: Run, process: subprocess.Popen, why: str) -> None:
    """SIGTERM, then SIGKILL: either way last.pt holds the last finished epoch and the run resumes from it."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    run.status, run.returncode, run.ended = why, process.returncode, time.time()


# ---------------------------------------------------------------- the zoo

def run_zoo(runs: list[Run], data_path: Path, jobs: int, device: str, threads: int, time_cap_min: float = 0.0,
            compile_mode: str | None = None, display: Display | None = None, poll_seconds: float = 0.5) -> None:
    """Run `runs` `jobs` at a time, in order, until all have ended or the time cap passes."""
    display = display or Display()
    env = child_environment(device, threads)
    started, processes = time.time(), {}
    queued = list(runs)

    def footer() -> str:
        counts = {s: sum(r.status == s for r in runs) for s in ("running", "queued", "done", "reused", "failed")}
        cap = f" of a {time_cap_min:g} min cap" if time_cap_min else ""
        return (f"{duration(time.time() - started)}{cap}; " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                + f"; {jobs} at a time on {device}" + (f", {threads} thread(s) each" if device == "cpu" else ""))

    try:
        while queued or processes:
            if time_cap_min and time.time() - started > time_cap_min * 60:
                for run, process in processes.items():
                    stop(run, process, "stopped")
                    display.event(run, started)
                processes.clear()
                for run in queued:
                    run.status = "not started"
                break
            while queued and len(processes) < jobs:
                run = queued.pop(0)
                processes[run] = start(run, command(run, data_path, compile_mode), env)
                update_progress(run)  # a resumed run shows where it stands before its next epoch ends
                display.event(run, started)
            for run, process in list(processes.items()):
                if update_progress(run):
                    display.event(run, started)
                if process.poll() is not None:
                    finish(run, process.returncode)
                    del processes[run]
                    display.event(run, started)
            display.refresh(runs, footer())
            time.sleep(poll_seconds)
    finally:  # Ctrl-C or SIGTERM: stop the runs cleanly; the same command resumes them
        for run, process in processes.items():
            stop(run, process, "stopped")
        for run in queued:
            run.status = "not started" if run.status == "queued" else run.status
        display.clear()


def record(run: Run, root: Path) -> dict:
    """What the JSON says of one run: paths relative to the output folder, times in seconds since the epoch."""
    def rel(path: Path) -> str:
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    finished = read_checkpoint(run.model_path) if run.status in ("done", "reused") else None
    weights = finished["model"] if finished else {}
    return {"name": run.name, "notebook": run.notebook.name, "model": run.model, "seed": run.seed,
            "budget": run.budget, "changes": run.changes, "status": run.status, "returncode": run.returncode,
            "epochs_run": run.epoch, "planned_epochs": run.planned, "best_val_acc": run.best_val_acc,
            "seconds_per_epoch": run.seconds_per_epoch, "wall_seconds": run.wall_seconds,
            "started_unix": run.started, "ended_unix": run.ended,
            "device": finished["meta"].get("device") if finished else None,
            "model_path": rel(run.model_path) if finished else None,
            "model_bytes": run.model_path.stat().st_size if finished else None,
            "weights_dtype": sorted({str(t.dtype).removeprefix("torch.") for t in weights.values()
                                     if t.is_floating_point()}),
            "log": rel(run.log), **({"slurm_job": run.job_id} if run.job_id else {})}


def summary(runs: list[Run]) -> list[str]:
    """The final table, then each failed run by name with its log and the end of it."""
    lines = table(runs)
    for run in runs:
        if run.status == "failed":
            tail = [line for line in last_attempt(run).splitlines() if line.strip()][-8:]
            lines += [f"FAILED {run.name} seed {run.seed} (exit {run.returncode}); log {run.log}:"]
            lines += [f"    {line}" for line in tail]
    unfinished = [f"{r.name} seed {r.seed}" for r in runs if r.status in ("stopped", "not started")]
    if unfinished:
        lines.append(f"not finished: {', '.join(unfinished)}. Run the same command again to resume them.")
    return lines


def default_jobs_and_threads(device: str, jobs: int | None, threads: int | None, cores: int) -> tuple[int, int]:
    """CPU: the cores divided, jobs x threads = cores (one thread a run unless told). GPU: GPU_JOBS runs, the
    cores shared among their processes."""
    if device == "cpu":
        if jobs is None:
            threads = threads or 1
            return max(1, cores // threads), threads
        return jobs, threads or max(1, cores // jobs)
    jobs = jobs or GPU_JOBS
    return jobs, threads or max(1, cores // jobs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emo_utils.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="training notebooks by prefix (02, 09) or path; default: all")
    parser.add_argument("--budget", choices=["cpu", "full", "robust"], help="which recipe (default: each notebook's budget)")
    parser.add_argument("--seeds", action="append", default=[], metavar="[PREFIX=]SEEDS",
                        help="seeds to train, e.g. 0,1,2 for every notebook or 09=0,1,2 (default: the notebook's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field in every run (as python -m emo_utils.zoo.train --set)")
    parser.add_argument("--trial", action="store_true", help="a trial of each notebook (core/trial.py: a subset, two "
                        "epochs, no ablations or further seeds), written under experiments/, never published")
    parser.add_argument("--no-ablations", action="store_true",
                        help="skip the runs a notebook trains beside its recipe (its cpu_ablations or full_ablations)")
    parser.add_argument("--data", help="the dataset's file or folder (FER2013: zip, folder or csv; default: the "
                        "finder, see README)")
    parser.add_argument("--dataset", help="train every run on this dataset (datasets.py: fer2013, ferplus, rafdb, "
                        "affectnet, ckplus, or a name of your own for a train/ + test/ folder given with --data); "
                        "its models go to reports/<dataset>/. Default: each notebook's, else fer2013")
    parser.add_argument("--out", type=Path,
                        help="write OUT/reports, OUT/runs and OUT/zoo.json instead of reports/ and runs/")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when there is one")
    parser.add_argument("--jobs", type=int,
                        help=f"runs at a time (default: {GPU_JOBS} on a GPU, cores/threads on a CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: 1 on CPU, cores/jobs on a GPU)")
    parser.add_argument("--time-cap", type=float, default=0.0, metavar="MIN",
                        help="stop every run after MIN minutes (they resume when started again); 0: no cap")
    parser.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile mode for every run (see train.py)")
    cluster = parser.add_argument_group("on a SLURM cluster (slurm.py; docs/design.md, 'On a SLURM cluster')")
    cluster.add_argument("--executor", choices=["local", "slurm"], default="local",
                         help="local: processes on this machine (default); slurm: one SLURM job per run (submitit)")
    cluster.add_argument("--slurm-config", type=Path, metavar="TOML", help="partition, time_min, cpus, mem_gb, gpus, "
                         "setup and [sbatch] options from a file; the flags below win over it")
    cluster.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    cluster.add_argument("--time-min", type=int, help="time limit of a job in minutes (default 240); a run that "
                         "needs longer is requeued and resumes from its last epoch")
    cluster.add_argument("--cpus-per-run", type=int, dest="cpus", help="CPUs per job (default 8)")
    cluster.add_argument("--mem-gb", type=float, help="memory per job in GB (default 32)")
    cluster.add_argument("--gpus-per-run", type=int, dest="gpus", help="GPUs per job (default 1; 0: train on CPUs)")
    cluster.add_argument("--ranks-per-run", type=int, dest="ranks", help="processes per run under torchrun "
                         "(DDP, core/distributed.py; default: one per GPU; on CPUs gloo)")
    args = parser.parse_args(argv)
    if args.executor == "slurm":
        from . import slurm  # submitit and the cluster's commands only where they are used
        try:
            options = slurm.options_from(args.slurm_config, {k: getattr(args, k) for k in (
                "partition", "time_min", "cpus", "mem_gb", "gpus", "ranks")})
            slurm.check(options)  # before anything is planned, loaded or submitted
        except slurm.SlurmSetupError as e:
            print(f"zoo: error: {e}", file=sys.stderr)
            return 2

    notebooks = find_notebooks(args.notebooks)
    seeds = seeds_by_notebook(args.seeds, notebooks)
    out = args.out.resolve() if args.out else None
    root = out or fer.REPO_ROOT
    report_root, run_root = roots(root)
    try:
        runs = plan_runs(notebooks, args.budget, seeds, args.set, report_root, run_root,
                         ablations=not args.no_ablations, trial=args.trial, dataset=args.dataset)
    except ValueError as e:  # a recipe the notebooks cannot train (recipes.chapter_config)
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    if args.executor == "slurm":
        device, jobs, threads = options.device, len(runs), options.cpus
    else:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        jobs, threads = default_jobs_and_threads(device, args.jobs, args.threads, cores)
    if args.dataset in (None, datasets.DEFAULT_DATASET):
        data_path = fer.find_dataset(args.data).resolve()  # the runs start in the repository, not here
    elif args.data:  # another dataset has no finder: --data names it
        data_path = Path(args.data).resolve()
    else:
        print(f"zoo: error: --dataset {args.dataset} needs --data PATH, its folder (README, 'Datasets')",
              file=sys.stderr)
        return 2
    # Decoded and cached once here, not by every run at once (nor by every job of a cluster).
    data_sha256 = datasets.load_named(args.dataset or datasets.DEFAULT_DATASET, data_path).sha256
    where = f"as SLURM jobs ({device})" if args.executor == "slurm" else f"{jobs} at a time on {device}"
    if args.executor == "slurm":
        try:
            slurm.check_not_running(runs)
        except slurm.SlurmSetupError as e:
            print(f"zoo: error: {e}", file=sys.stderr)
            return 2
    print(f"zoo: {len(runs)} runs, {where}; data {data_path}", flush=True)

    started = time.time()
    on_sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # unwinds through the finally
    try:
        if args.executor == "slurm":
            commands = {run: command(run, data_path, args.compile) for run in runs}
            slurm.run_on_slurm(runs, commands, options, slurm_logs(run_root))
        else:
            run_zoo(runs, data_path, jobs, device, threads, args.time_cap, args.compile)
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
        json_path = (out or run_root) / "zoo.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({
            "command": shlex.join(["python", "-m", "emo_utils.zoo", *(sys.argv[1:] if argv is None else argv)]),
            "commit": git_commit(), "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "wall_seconds": round(time.time() - started, 1), "device": device, "jobs": jobs, "threads": threads,
            "executor": args.executor, "time_cap_min": args.time_cap, "compile": args.compile,
            "torch": str(torch.__version__),
            "data": str(data_path), "data_sha256": data_sha256,
            "runs": [record(run, root) for run in runs]}, indent=1) + "\n")
        print("\n".join(summary(runs) + [f"what ran: {json_path}"]), flush=True)
    return 0 if all(run.status in ("done", "reused") for run in runs) else 1
