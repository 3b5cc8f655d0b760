"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's slurm-wlm and munge,
started in a folder of their own (key, slurm.conf, state, logs) and stopped by the pids this module started.

    python tests/slurm_cluster.py --install    # apt-get install slurm-wlm munge where they are missing (root)
    python tests/slurm_cluster.py DIR          # start one in DIR, print `export SLURM_CONF=...`, Ctrl-C stops it

The tests use start()/stop() from a session fixture (test_zoo_slurm.py). Nothing here touches /etc: the daemons and
the client commands find everything through SLURM_CONF (AuthInfo names the munge socket), so a machine's own SLURM,
if it has one, is left alone. A cluster of one node with this machine's CPUs; memory is not a consumable
(SelectTypeParameters=CR_CPU), so two small jobs share the node as two runs of the local zoo would. A requeued job
waits for its old credential to expire before it starts again: cred_expire=10 s here, SLURM's default 120 s.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
PACKAGES = ("slurm-wlm", "munge")
PARTITION = "debug"


def missing() -> list[str]:
    """The daemons and client commands not on this machine (sbin included: root's PATH is not everyone's)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in DAEMONS + CLIENTS if shutil.which(name, path=path) is None]


def install() -> None:
    """apt-get install slurm-wlm and munge, quietly, where they are missing (CI: a fresh Debian machine, root)."""
    if not missing():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return total_kb // 1024


@dataclass
class Cluster:
    folder: Path
    conf: Path
    env: dict  # os.environ plus SLURM_CONF: what the client commands and the zoo run under
    cpus: int
    memory_mb: int
    processes: list = field(default_factory=list)  # (name, Popen) of the daemons this cluster started

    @property
    def partition(self) -> str:
        return PARTITION


def slurm_conf(folder: Path, host: str, cpus: int, memory: int) -> str:
    return f"""\
ClusterName=emotest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start(folder: Path, timeout: float = 60) -> Cluster:
    """munged, slurmctld and slurmd in the foreground, children of this process; returns once the node is idle."""
    folder = Path(folder).resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # munged refuses a key or socket in a folder others can write
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    cpus = max(2, os.cpu_count() or 1)  # two one-CPU jobs at once even on one core (config_overrides allows it)
    memory = memory_mb()
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, cpus, memory))
    env = dict(os.environ, SLURM_CONF=str(conf))
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
    cluster = Cluster(folder, conf, env, cpus, memory)
    commands = {
        "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
                   f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                   f"--seed-file={folder}/munged.seed"],
        "slurmctld": ["slurmctld", "-D", "-c", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-f", str(conf), "-N", host],
    }
    try:
        for name, command in commands.items():
            log = open(folder / f"{name}.out", "wb")
            cluster.processes.append((name, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                             stdin=subprocess.DEVNULL)))
            if name == "munged":
                wait_for(lambda: (folder / "munge.socket").exists(), timeout, cluster, "munged's socket")
        wait_for(lambda: node_state(cluster) in ("idle", "mixed", "allocated"), timeout, cluster, "an idle node")
    except BaseException:
        stop(cluster)
        raise
    return cluster


def node_state(cluster: Cluster) -> str:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], env=cluster.env, capture_output=True, text=True)
    return result.stdout.strip().rstrip("*~#") if result.returncode == 0 else ""


def wait_for(ready, timeout: float, cluster: Cluster, what: str) -> None:
    deadline = time.time() + timeout
    while not ready():
        for name, process in cluster.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}; see {cluster.folder}/{name}.out and "
                                   f"{cluster.folder}/{name}.log")
        if time.time() > deadline:
            raise RuntimeError(f"no {what} after {timeout:g} s; logs in {cluster.folder}")
        time.sleep(0.2)


def stop(cluster: Cluster) -> None:
    """SIGTERM to the daemons this cluster started, by pid, last started first; SIGKILL after 20 s."""
    for _, process in reversed(cluster.processes):
        if process.poll() is None:
            process.terminate()
    for _, process in reversed(cluster.processes):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    cluster.processes.clear()


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        install()
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/slurm_cluster.py DIR | --install")
    running = start(Path(sys.argv[1]))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # `kill PID` stops the daemons too (finally)
    print(f"export SLURM_CONF={running.conf} PATH=$PATH:/usr/sbin  # Ctrl-C stops the cluster", flush=True)
    try:
        while all(p.poll() is None for _, p in running.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(running)
