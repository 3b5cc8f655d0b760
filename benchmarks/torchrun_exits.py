"""Does a two-rank torchrun training job exit 0 on a busy machine? The job is tests/ddp_worker.py (2 gloo ranks on
CPU, 3 epochs of a small net, ended by distributed.end_rank as the training command line ends a rank), run
--runs times with every core loaded by a busy-loop process, and --baseline times idle in the same run.

A rank that aborts at exit (SIGABRT, "terminate called without an active exception", from gloo's threads during
interpreter teardown) makes torchrun exit non-zero: every scheduler then calls a finished run failed.

    python benchmarks/torchrun_exits.py [--runs 20] [--baseline 3] [--write]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from emo_utils.core.data import REPO_ROOT
from emo_utils.core.distributed import cpu_name
from emo_utils.provenance import git_commit
from emo_utils.reports.pages import replace_section

WORKER = REPO_ROOT / "tests" / "ddp_worker.py"
REPORT = REPO_ROOT / "reports" / "benchmarks.md"


def busy_loop():
    while True:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_job(folder: Path) -> tuple[int, float]:
    """(torchrun's exit code, seconds) of one two-rank job in a folder of its own."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(WORKER),
                           str(folder / "run"), str(folder)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    if done.returncode:
        print(done.stderr[-1500:], file=sys.stderr)
    return done.returncode, time.perf_counter() - start


def jobs(n: int, base: Path, label: str) -> list[tuple[int, float]]:
    results = []
    for i in range(n):
        results.append(one_job(base / f"{label}{i}"))
        print(f"  {label} {i + 1}/{n}: exit {results[-1][0]}, {results[-1][1]:.1f} s", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="jobs with every core busy")
    parser.add_argument("--baseline", type=int, default=3, help="jobs on the idle machine, first")
    parser.add_argument("--write", action="store_true", help="put the result into reports/benchmarks.md")
    args = parser.parse_args(argv)
    commit, cores, started = git_commit(), os.cpu_count(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        idle = jobs(args.baseline, Path(tmp), "idle")
        loops = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(cores)]
        for p in loops:
            p.start()
        try:
            loaded = jobs(args.runs, Path(tmp), "loaded")
            load = os.getloadavg()[0]
        finally:
            for p in loops:
                p.terminate()
    ok = lambda rs: sum(code == 0 for code, _ in rs)  # noqa: E731
    mean = lambda rs: sum(s for _, s in rs) / max(len(rs), 1)  # noqa: E731
    print(f"exit 0: {ok(loaded)} of {len(loaded)} with {cores} busy loops (1-minute load {load:.1f}), "
          f"{ok(idle)} of {len(idle)} idle; {mean(loaded):.1f} s against {mean(idle):.1f} s a job "
          f"({mean(loaded) / max(mean(idle), 1e-9):.2f}x)")
    if args.write:
        cpu = cpu_name()
        body = "\n".join([
            f"`python benchmarks/torchrun_exits.py --runs {args.runs} --baseline {args.baseline} --write` on {cpu}, "
            f"{cores} cores, Python {platform.python_version()}, torch {torch.__version__}; commit `{commit}`; wall time "
            f"{(time.time() - started) / 60:.1f} min.", "",
            "A two-rank torchrun training job (tests/ddp_worker.py: gloo on CPU, 3 epochs of a small net), run with "
            f"a busy-loop process on each of the {cores} cores, and idle first in the same run:", "",
            "| machine | jobs | exit 0 | s a job |", "|---|---:|---:|---:|",
            f"| idle | {len(idle)} | {ok(idle)} | {mean(idle):.1f} |",
            f"| every core busy (load {load:.1f}) | {len(loaded)} | {ok(loaded)} | {mean(loaded):.1f} |"])
        replace_section(REPORT, "A torchrun job on a busy machine", body)
        print(f"written to {REPORT}")
    return 0 if ok(loaded) == len(loaded) and ok(idle) == len(idle) else 1


if __name__ == "__main__":
    raise SystemExit(main())
