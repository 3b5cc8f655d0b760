"""The zoo on a SLURM cluster: every planned run a SLURM job, submitted with submitit (`--executor slurm`).

    python -m emo_utils.zoo 02 09 --budget full --seeds 09=0,1,2 --executor slurm --partition gpu --gpus-per-run 1
    python -m emo_utils.zoo --executor slurm --slurm-config slurm.toml

Each job runs the run's training command (runner.command, the one the local zoo runs) in a process of its own,
logging to the run's zoo.log as locally; the seeds of one recipe go as one job array. A job SLURM stops early
(a time limit: SLURM sends PREEMPT_SIGNAL SIGNAL_DELAY_S before it; `scancel --signal=USR1 JOB`; a preemption)
stops its run, whose last.pt holds the last finished epoch, and submitit requeues the job: the same command
resumes from last.pt (core/train.py), so a requeued run ends with the weights an uninterrupted one gets. The zoo
follows the jobs (squeue) and the runs' last.pt files, draws the local zoo's table and writes what the local zoo
writes (the models where the notebooks look, zoo.json), so `make reports` evaluates them without retraining.

Resources per job come from SlurmOptions: its defaults, then a TOML file (--slurm-config), then the flags:

    partition = "gpu"          # sbatch --partition (default: the cluster's default partition)
    time_min = 240             # the time limit of one attempt; a run that needs longer is requeued and resumes
    cpus = 8                   # CPUs per run (its threads on a CPU, its data workers' share on a GPU)
    mem_gb = 32
    gpus = 1                   # GPUs per run; 0 trains on the CPUs
    setup = ["module load cuda"]       # shell lines the job runs first
    [sbatch]                   # any other sbatch option, as --key=value
    account = "mylab"
    qos = "normal"

Everything is checked against the cluster (scontrol ping, sinfo) before anything is submitted: a bad option is one
line (exit 2). The core knows nothing of SLURM; this module is the zoo's only one that does.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

from .progress import Display, duration
from .run_state import LOG_HEADER, child_environment, finish, update_progress

if TYPE_CHECKING:  # the job's process imports this module: nothing here may import torch
    from .plan import Run

PREEMPT_SIGNAL = "USR1"  # what SLURM sends before a time limit and what `scancel --signal` sends to checkpoint
SIGNAL_DELAY_S = 120  # before the time limit: time to stop the run (its last.pt is already on disk) and requeue
RUN_FAILED = re.compile(r"training exited with (-?\d+)")  # the job's error names its run's exit status
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


class SlurmSetupError(Exception):
    """An option the cluster cannot run: the zoo prints it as one line and exits 2 before submitting."""


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 240
    cpus: int = 8
    mem_gb: float = 32.0
    gpus: int = 1
    ranks: int | None = None  # processes per run under torchrun (DDP; gloo on CPUs): default one per GPU
    setup: list = field(default_factory=list)
    sbatch: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    @property
    def processes(self) -> int:
        return self.ranks if self.ranks is not None else max(self.gpus, 1)


def options_from(config_file: Path | None, flags: dict) -> SlurmOptions:
    """SlurmOptions' defaults, then the TOML file's, then the flags that were given (not None)."""
    values = {}
    if config_file is not None:
        try:
            values = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SlurmSetupError(f"--slurm-config {config_file}: {e}; see emo_utils/zoo/slurm.py for its keys")
        known = {f.name for f in dataclasses.fields(SlurmOptions)}
        if set(values) - known:
            raise SlurmSetupError(f"--slurm-config {config_file}: unknown key(s) {sorted(set(values) - known)}; "
                                  f"the keys are {sorted(known)} (other sbatch options go under [sbatch])")
    values.update({k: v for k, v in flags.items() if v is not None})
    return SlurmOptions(**values)


# ---------------------------------------------------------------- checks before anything is submitted

def slurm_command(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def check(options: SlurmOptions) -> None:
    """The options against the cluster: a SlurmSetupError naming the problem and the fix, else nothing."""
    for name, least in (("cpus", 1), ("gpus", 0), ("time_min", 1), ("processes", 1)):
        if not isinstance(getattr(options, name), int) or getattr(options, name) < least:
            flag = {"cpus": "--cpus-per-run", "gpus": "--gpus-per-run", "processes": "--ranks-per-run"}
            raise SlurmSetupError(f"{'ranks' if name == 'processes' else name}={getattr(options, name)!r}: give a "
                                  f"whole number >= {least} ({flag.get(name, '--time-min')})")
    if options.time_min * 60 < 2 * SIGNAL_DELAY_S + 60:
        raise SlurmSetupError(f"--time-min {options.time_min}: a job gets {PREEMPT_SIGNAL} {SIGNAL_DELAY_S} s before "
                              f"its limit to stop and requeue; give it at least {(2 * SIGNAL_DELAY_S + 60) // 60} minutes")
    if options.cpus < options.processes:
        raise SlurmSetupError(f"--cpus-per-run {options.cpus} for {options.processes} ranks: give each rank a CPU")
    if not options.mem_gb > 0:
        raise SlurmSetupError(f"mem_gb={options.mem_gb!r}: give the memory per run in GB, > 0 (--mem-gb)")
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise SlurmSetupError("no SLURM commands here (sbatch, squeue): run the zoo on the cluster's login node, "
                              "or without --executor slurm")
    try:
        ping = slurm_command(["scontrol", "ping"])
    except subprocess.TimeoutExpired:
        ping = subprocess.CompletedProcess([], 1, "", "no answer in 30 s")
    if ping.returncode != 0 or not re.search(r"\bis UP\b", ping.stdout):
        said = next((line.strip() for line in (ping.stdout + ping.stderr).splitlines() if line.strip()), "nothing")
        raise SlurmSetupError(f"the SLURM controller does not answer (scontrol ping: {said}): is slurmctld up, and "
                              "does SLURM_CONF (or /etc/slurm/slurm.conf) name it?")
    listed = slurm_command(["sinfo", "-h", "-o", "%P|%c|%m|%G"]).stdout.split()
    partitions = {line.split("|")[0].rstrip("*"): line.split("|") for line in listed}
    default = next((line.split("|")[0].rstrip("*") for line in listed if line.split("|")[0].endswith("*")), None)
    partition = options.partition or default
    if partition not in partitions:
        raise SlurmSetupError(f"unknown partition {options.partition!r}: this cluster has "
                              f"{', '.join(sorted(partitions)) or 'none'} (sinfo); pass one with --partition")
    _, node_cpus, node_mem_mb, gres = partitions[partition]
    if options.cpus > int(node_cpus.rstrip("+")):
        raise SlurmSetupError(f"--cpus-per-run {options.cpus}: partition {partition}'s nodes have {node_cpus} CPUs")
    if options.mem_gb * 1024 > int(node_mem_mb.rstrip("+")):
        raise SlurmSetupError(f"--mem-gb {options.mem_gb:g}: partition {partition}'s nodes have "
                              f"{int(node_mem_mb.rstrip('+')) / 1024:.1f} GB")
    if options.gpus and "gpu" not in gres:
        raise SlurmSetupError(f"--gpus-per-run {options.gpus}: partition {partition} has no GPUs (gres {gres}); "
                              "name a GPU partition, or --gpus-per-run 0 to train on CPUs")


def check_not_running(runs: list[Run]) -> None:
    """A run whose last job is still queued or running is not submitted again: two jobs would write one run's
    checkpoints. Its job id is in its run folder (paths.slurm_job_file)."""
    from ..paths import slurm_job_file
    recorded = {run: slurm_job_file(run.run_dir).read_text().strip() for run in runs
                if slurm_job_file(run.run_dir).exists()}
    states = job_states(list(recorded.values())) if recorded else {}
    busy = {job: run for run, job in recorded.items() if (states or {}).get(job) in ACTIVE_STATES}
    if busy:
        named = ", ".join(f"{run.name} seed {run.seed} (job {job}, {states[job]})" for job, run in busy.items())
        raise SlurmSetupError(f"still on the cluster: {named}; wait for it to end, or scancel {' '.join(busy)}, "
                              "then run the same command again")


# ---------------------------------------------------------------- the job

def ignore_preemption_signal() -> None:
    """preexec_fn of the run: SLURM signals every process of the job; the job's submitit process answers (it stops
    the run, then requeues), so the run itself must not die of the signal first."""
    signal.signal(getattr(signal, f"SIG{PREEMPT_SIGNAL}"), signal.SIG_IGN)


def stop_process(pid: int, grace_seconds: float = 60) -> None:
    """SIGTERM, then SIGKILL after `grace_seconds`. By pid and os.waitpid, not Popen: this runs in a signal handler
    that interrupted Popen.wait, which holds the Popen's lock."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + grace_seconds
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.1)
    except (ProcessLookupError, ChildProcessError):  # it had ended already
        pass


class TrainingJob(submitit.helpers.Checkpointable):
    """One run's training command in a SLURM job; checkpoint() is what submitit calls when SLURM stops the job.
    Plain data only: the job's process unpickles it without importing torch (the run imports it once)."""

    def __init__(self, cmd: list[str], log: str, cwd: str, env: dict[str, str], header: str):
        self.cmd, self.log, self.cwd, self.env, self.header = cmd, log, cwd, env, header
        self.process: subprocess.Popen | None = None

    def __call__(self) -> int:
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        with open(self.log, "a") as log:
            log.write(f"\n{self.header}{dt.datetime.now().isoformat(timespec='seconds')} (SLURM job {job}"
                      f"{'_' + task if task else ''} on {os.uname().nodename}): {shlex.join(self.cmd)}\n")
            log.flush()
            self.process = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                            env={**os.environ, **self.env}, preexec_fn=ignore_preemption_signal)
        returncode = self.process.wait()
        if returncode != 0:  # a failed SLURM job (sacct says FAILED); the zoo reads the status from this message
            raise RuntimeError(f"training exited with {returncode}; its log: {self.log}")
        return returncode

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Stop the run (last.pt holds its last finished epoch) and requeue the same command, which resumes there."""
        if self.process is not None:
            stop_process(self.process.pid)
        return submitit.helpers.DelayedSubmission(TrainingJob(self.cmd, self.log, self.cwd, self.env, self.header))


# ---------------------------------------------------------------- submitting and following

def make_executor(options: SlurmOptions, folder: Path) -> submitit.SlurmExecutor:
    """submitit's SLURM executor with the options; its own logs (one pair per job) under `folder`."""
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=100)
    sbatch = {"signal": f"{PREEMPT_SIGNAL}@{SIGNAL_DELAY_S}", "requeue": True, **options.sbatch}
    executor.update_parameters(
        partition=options.partition, time=options.time_min, cpus_per_task=options.cpus, mem=f"{options.mem_gb:g}G",
        gpus_per_node=options.gpus or None, nodes=1, ntasks_per_node=1, signal_delay_s=SIGNAL_DELAY_S,
        setup=[f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}", *options.setup], additional_parameters=sbatch)
    return executor


def submit(executor, runs: list[Run], commands: dict[Run, list[str]], options: SlurmOptions) -> dict[Run, object]:
    """One job array per recipe (its seeds), one job per ablation: {run: submitit job}. Each run gets the local
    zoo's environment for its device, its CPUs its threads."""
    from ..core.data import REPO_ROOT
    env = child_environment(options.device, options.cpus // options.processes)
    env = {k: v for k, v in env.items() if os.environ.get(k) != v}  # what the zoo adds; the job has the rest
    if options.processes > 1:  # one run over several GPUs of the node: torchrun, through core/distributed.py
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={options.processes}"]
        commands = {run: [cmd[0], *launch, *cmd[1:]] for run, cmd in commands.items()}
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.notebook, run.budget, run.name), []).append(run)
    jobs = {}
    for (_, _, name), members in groups.items():
        executor.update_parameters(job_name=f"zoo-{name.replace(' ', '-')}")
        with executor.batch():
            for run in members:
                jobs[run] = executor.submit(TrainingJob(commands[run], str(run.log), str(REPO_ROOT), env, LOG_HEADER))
    return jobs


def job_states(job_ids: list[str]) -> dict[str, str] | None:
    """{job id: SLURM state} of those squeue still lists (array tasks one by one); None when squeue fails."""
    try:
        listed = slurm_command(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"])
    except subprocess.TimeoutExpired:
        return None
    if listed.returncode != 0:
        return None
    states = dict(line.split("|", 1) for line in listed.stdout.split() if "|" in line)
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def job_status(state: str, previous: str) -> str:
    """The table's status of a run whose job squeue lists in `state`; `previous` what the table said before."""
    if state in ("RUNNING", "COMPLETING"):
        return "running"
    if state.startswith("REQUEUE") or (state == "PENDING" and previous in ("running", "requeued")):
        return "requeued"  # it ran, SLURM stopped it, and it waits to go on from last.pt
    return "queued"


def outcome(job) -> int | None:
    """The run's exit status once its job has written its result (0, or the status its error names), else None."""
    if not job.paths.result_pickle.exists():
        return None
    error = job.exception()
    if error is None:
        return 0
    found = RUN_FAILED.search(str(error))
    return int(found.group(1)) if found else 1


def run_on_slurm(runs: list[Run], commands: dict[Run, list[str]], options: SlurmOptions, folder: Path,
                 display: Display | None = None, poll_seconds: float = 2.0) -> None:
    """Submit every run, then follow the jobs until each has ended; the table as the local zoo draws it."""
    display = display or Display()
    started = time.time()
    jobs = submit(make_executor(options, folder), runs, commands, options)
    from ..paths import slurm_job_file
    for run, job in jobs.items():
        run.job_id = job.job_id
        slurm_job_file(run.run_dir).write_text(job.job_id + "\n")
        print(f"zoo: {run.name} seed {run.seed} is SLURM job {job.job_id}; log {run.log}", flush=True)
    gone_since: dict[Run, float] = {}

    def footer() -> str:
        counts = {s: sum(r.status == s for r in runs) for s in ("running", "queued", "requeued", "done", "reused",
                                                                 "failed")}
        return (f"{duration(time.time() - started)}; " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                + f"; SLURM jobs of {options.cpus} CPU(s), {options.gpus} GPU(s)")

    following = dict(jobs)
    try:
        while following:
            states = job_states([job.job_id for job in following.values()])
            for run, job in list(following.items()):
                state = "" if states is None else states.get(job.job_id, "")
                # A result counts once SLURM is done with the job: an attempt that SLURM requeued (scontrol
                # requeue, a preemption) may have left an error result before its next attempt overwrites it.
                settled = states is None or state not in ACTIVE_STATES - {"COMPLETING"}
                if not settled:
                    gone_since.pop(run, None)
                returncode = outcome(job) if settled else None
                if returncode is None and settled and states is not None:  # gone without a result: cancelled,
                    if time.time() - gone_since.setdefault(run, time.time()) > 30:  # killed, or its result is late
                        returncode = -1
                if returncode is not None:
                    finish(run, returncode)
                    del following[run]
                    display.event(run, started)
                    continue
                if states is None or not state:
                    continue
                status = job_status(state, run.status)
                changed, run.status = status != run.status, status
                if status == "running" and run.started is None:
                    run.started = time.time()
                if update_progress(run) or changed:
                    display.event(run, started)
            display.refresh(runs, footer())
            time.sleep(poll_seconds)
    finally:
        display.clear()
        if following:  # Ctrl-C: the cluster goes on training; say how to stop it
            ids = " ".join(job.job_id for job in following.values())
            print(f"zoo: stopped following; the jobs go on. To stop them: scancel {ids}", file=sys.stderr)
            for run in following:
                run.status = "stopped"
