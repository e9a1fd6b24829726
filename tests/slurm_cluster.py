"""A real one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd (Debian's `munge` and
`slurm-wlm`) with a generated slurm.conf, 2 CPUs, no GPUs, everything (key, sockets, state, logs) in a fresh
temporary folder, so nothing system-wide is touched and another cluster on the same machine does not collide.

Steps (`start_cluster`): a random munge key (mode 0400) in a private folder; `munged --foreground` on a socket in a
folder every user can traverse (munged insists on that); two free TCP ports; a slurm.conf that points every daemon
and command at that socket (`AuthInfo=socket=`) and folder; `slurmctld -D` and `slurmd -D` as child processes; wait
until the node is idle. SLURM_CONF is exported for the commands submitit calls. Stopping cancels every job, waits
for the queue to empty and ends the three daemons by their process ids.

Without the programs or root, a test that needs the cluster skips with the reason, except when CI=1 or
FACETURN_REQUIRE_SLURM=1 (`.ci/run` sets it): then it fails, so CI cannot pass by skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "srun", "scontrol")
NODE = "faceturn-node"
PARTITION = "debug"
CPUS = 2
MEMORY_MB = 2000


def slurm_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("FACETURN_REQUIRE_SLURM") == "1"


def unavailable(reason: str) -> None:
    if slurm_required():
        pytest.fail(f"{reason} (a SLURM cluster is required here: CI or FACETURN_REQUIRE_SLURM is set)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Cluster:
    root: Path  # the temporary folder with everything
    conf: Path  # slurm.conf (also $SLURM_CONF while the cluster runs)
    partition: str
    cpus: int
    memory_mb: int

    def squeue(self) -> list[tuple[str, str, str, str]]:
        """(job id, name, state, reason) of every job slurmctld knows, array tasks one per line."""
        out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%j|%T|%r"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return [tuple(line.split("|")) for line in out.splitlines() if line.count("|") == 3]

    def log_tail(self, lines: int = 20) -> str:
        text = []
        for name in ("log/slurmctld.log", "log/slurmd.log", "log/daemons.out", "private/munged.log"):
            path = self.root / name
            if path.is_file():
                text.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(text)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _conf(root: Path, ports: list[int], munge_socket: Path) -> str:
    return f"""# generated for a test: one node on localhost, everything under {root}
ClusterName=faceturn-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=3
JobRequeue=1
NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def _wait_for(check, timeout_s: float, what: str, cluster: Cluster | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return
        time.sleep(0.2)
    unavailable(f"SLURM test cluster: {what} within {timeout_s:.0f} s" + (f"\n{cluster.log_tail()}" if cluster else ""))


def _idle() -> bool:
    out = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "idle"


@contextmanager
def start_cluster() -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd in a fresh temporary folder; stop them and remove it on exit."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        unavailable(f"SLURM is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        unavailable("a SLURM test cluster needs root (slurmd runs jobs as their user)")
    root = Path(tempfile.mkdtemp(prefix="faceturn-slurm-"))
    root.chmod(0o755)  # munged requires every folder above its socket to be traversable by all
    for name, mode in (("private", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755)):
        (root / name).mkdir(mode=mode)
        (root / name).chmod(mode)
    key = root / "private" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "run" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, _free_ports(2), munge_socket))
    cluster = Cluster(root, conf, PARTITION, CPUS, MEMORY_MB)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(_restore_env, saved)
        daemons: list[subprocess.Popen] = []
        stack.callback(_stop, daemons)
        log = open(root / "log" / "daemons.out", "ab")  # closed by the stack
        stack.callback(log.close)
        munged = [
            "munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
            f"--log-file={root / 'private' / 'munged.log'}", f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--seed-file={root / 'private' / 'munged.seed'}",
        ]  # fmt: skip
        daemons.append(subprocess.Popen(munged, stdout=log, stderr=log))
        _wait_for(munge_socket.exists, 10, "munged did not create its socket", cluster)
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-c", "-f", str(conf)], stdout=log, stderr=log))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(conf)], stdout=log, stderr=log))
        _wait_for(_idle, 30, "the node did not become idle", cluster)
        yield cluster
        _cancel_all(cluster)


def _restore_env(saved: str | None) -> None:
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved


def _cancel_all(cluster: Cluster) -> None:
    """Cancel every job and wait until none runs, so no job step outlives slurmd."""
    subprocess.run(["scancel", f"--partition={cluster.partition}"], capture_output=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        if not any(state in ("RUNNING", "COMPLETING", "PENDING") for _, _, state, _ in cluster.squeue()):
            return
        time.sleep(0.2)


def _stop(daemons: list[subprocess.Popen]) -> None:
    for p in reversed(daemons):  # slurmd, slurmctld, then munged
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
