"""A private one-node SLURM cluster for tests: Debian's slurm-wlm 22.05 + munge, no systemd.

Everything lives in one temporary directory (munge key and socket, slurm.conf, gres.conf, state,
spool, logs) and listens on free TCP ports, so it never touches /etc/slurm, /etc/munge or a SLURM
the machine may already run. Clients find it through the SLURM_CONF environment variable
(`SlurmCluster.env()`).

The node is *declared* bigger than the machine (16 CPUs, 64 GB, 2 GPUs; `SlurmdParameters=
config_overrides`) so the real cluster profile, whose training rules ask for 4 threads, 16 GB and
a GPU, is schedulable unchanged on a 2-core CI machine; callers bound the real load with
Snakemake's `--jobs`. The 2 "GPUs" are gres entries backed by /dev/null and /dev/zero: SLURM
checks and allocates them (`--gpus=1` runs and sets CUDA_VISIBLE_DEVICES, `--gpus=3` is refused)
but no job can use them, and torch falls back to the CPU.

Starting munged/slurmctld/slurmd needs root (slurmd launches jobs as the submitting user).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun")
APT_PACKAGES = ("slurm-wlm", "munge")

NODE_CPUS = 16
NODE_MEMORY_MB = 64000
NODE_GPUS = 2
PARTITION = "debug"


def _which(name: str) -> str | None:
    """Daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if _which(name) is None]


def ensure_installed() -> str | None:
    """Install slurm-wlm and munge with apt when missing and possible; return why not, or None.

    The same step as .ci/run, so a developer's `pytest` works too; it only runs as root with
    apt-get present (otherwise the caller skips with the returned reason).
    """
    if not missing_binaries():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (f"SLURM binaries missing ({', '.join(missing_binaries())}) and not installable here "
                f"(needs root and apt-get): apt-get install {' '.join(APT_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"could not install {' '.join(APT_PACKAGES)} with apt-get: {proc.stderr.strip()[-500:]}"
    still = missing_binaries()
    return f"still missing after apt-get install: {', '.join(still)}" if still else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """Start with `start()`, stop with `stop()` (idempotent; kills what it started, by pid)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = socket.gethostname().split(".")[0]  # slurmd matches NodeName against this
        self.conf = root / "slurm.conf"
        self.logs = root / "log"
        self.munge_dir = root / "munge"
        self._pidfiles = {
            "munged": self.munge_dir / "munged.pid",
            "slurmctld": root / "slurmctld.pid",
            "slurmd": root / "slurmd.pid",
        }

    # ------------------------------------------------------------------ configuration

    def write_config(self) -> None:
        """slurm.conf + gres.conf: the minimal set that works on Debian 12 without systemd/cgroups."""
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.munge_dir.chmod(0o755)  # clients must reach the socket
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(128))
            key.chmod(0o400)
        ctld_port, d_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
ClusterName=mssynctest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={self.munge_dir / 'munge.sock'}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self._pidfiles['slurmctld']}
SlurmdPidFile={self._pidfiles['slurmd']}
SlurmctldLogFile={self.logs / 'slurmctld.log'}
SlurmdLogFile={self.logs / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
MinJobAge=300
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        self.write_srun_shim()
        devices = ["/dev/null", "/dev/zero"][:NODE_GPUS]
        (self.root / "gres.conf").write_text(
            "".join(f"NodeName={self.node} Name=gpu File={dev}\n" for dev in devices))

    def write_srun_shim(self) -> None:
        """bin/srun: the real srun with SLURM_CONF put back.

        Inside each job, snakemake-executor-plugin-slurm-jobstep (0.6.1) starts the rule through a
        nested `srun` after removing every SLURM_* variable but the job ids, SLURM_CONF included;
        this private cluster's config is only reachable through SLURM_CONF (a real cluster has
        /etc/slurm/slurm.conf or configless DNS records), so srun would fail with "Could not
        establish a configuration source". The shim is first on the jobs' PATH (sbatch --export=ALL).
        """
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        shim.chmod(0o755)

    def env(self) -> dict[str, str]:
        """Environment for SLURM clients (sbatch, squeue, ... and Snakemake's plugin) to use this cluster."""
        path = [str(self.root / "bin"), *os.environ.get("PATH", "").split(os.pathsep)]
        if "/usr/sbin" not in path:
            path.append("/usr/sbin")
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.pathsep.join(path)}

    # ------------------------------------------------------------------ life cycle

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}\n{self.log_tail()}")
        return proc

    def start(self, timeout_s: float = 60) -> None:
        """munged, then slurmctld, then slurmd; return once the node is idle."""
        self.write_config()
        m = self.munge_dir
        self._run(_which("munged"), "--force", f"--socket={m / 'munge.sock'}", f"--key-file={m / 'munge.key'}",
                  f"--pid-file={self._pidfiles['munged']}", f"--log-file={m / 'munged.log'}",
                  f"--seed-file={m / 'munged.seed'}")
        self._run(_which("slurmctld"), "-f", str(self.conf))
        self._run(_which("slurmd"), "-f", str(self.conf))
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self._run("sinfo", "--noheader", "-N", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM node not idle after {timeout_s} s (state {state!r})\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the daemons this object started (by their pid files), slurmd first."""
        for name in ("slurmd", "slurmctld", "munged"):
            pidfile = self._pidfiles[name]
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):  # up to 10 s, then SIGKILL
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        out = []
        for log in (self.logs / "slurmctld.log", self.logs / "slurmd.log", self.munge_dir / "munged.log"):
            if log.exists():
                out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def controller_log(self) -> str:
        log = self.logs / "slurmctld.log"
        return log.read_text(errors="replace") if log.exists() else ""
