"""A real Slurm cluster of two nodes on this machine, for tests: munge, slurmctld and two slurmd.

Debian's `munge slurm-client slurmctld slurmd` (installed by scripts/setup.sh where it runs as root)
give everything; `SlurmCluster(folder).start()` writes its own `slurm.conf` and munge key into
`folder`, starts its own munged (own socket), slurmctld and one `slurmd -N n1|n2` per node (Debian's
build allows several per host), all on free loopback ports, and waits until both nodes are idle.
Clients reach it through `cluster.env` (`SLURM_CONF`). `stop()` ends exactly the processes it started
(by the pid files they wrote). Nothing outside `folder` is touched: no /etc/hosts entry (the nodes'
`NodeAddr` is 127.0.0.1, and the launcher resolves the head node through `scontrol`), no systemd.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


def missing_reason() -> str | None:
    """Why this machine cannot run the cluster (None when it can)."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (slurmd runs jobs as their user and must be able to)"
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if absent:
        return (f"{', '.join(absent)} not installed: apt-get install --no-install-recommends munge slurm-client "
                "slurmctld slurmd (scripts/setup.sh does it as root)")
    return None


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """Two nodes `n1`, `n2` of this machine's CPUs in partition `debug`, controller on loopback."""

    NODES = ("n1", "n2")

    def __init__(self, folder: Path, slurmd_timeout: int = 5):
        self.folder = Path(folder)
        self.slurmd_timeout = slurmd_timeout
        self.conf = self.folder / "slurm.conf"
        self.munge_socket = self.folder / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # --- configuration ---------------------------------------------------------------------------

    def _cpus(self) -> str:
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        return " ".join(f"{k}={fields[k]}" for k in keep if k in fields)

    def write_config(self) -> None:
        f = self.folder
        for sub in ("munge", "state", "spool", "log", "run"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o400)
        ctld_port, *node_ports = _free_ports(1 + len(self.NODES))
        self.node_ports = node_ports
        lines = [
            "ClusterName=ultest", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={ctld_port}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}/%n",
            f"SlurmctldPidFile={f / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={f / 'run'}/slurmd-%n.pid",
            f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={f / 'log'}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none", "SchedulerType=sched/backfill",
            "ReturnToService=2", f"SlurmdTimeout={self.slurmd_timeout}", "SlurmctldTimeout=10",
            "InactiveLimit=0", "KillWait=5", "MinJobAge=300", "JobRequeue=1", "MessageTimeout=10",
            f"NodeName=n[1-{len(self.NODES)}] NodeHostname=localhost NodeAddr=127.0.0.1 "
            f"Port=[{node_ports[0]}-{node_ports[-1]}] {self._cpus()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
        ]
        if node_ports != list(range(node_ports[0], node_ports[0] + len(node_ports))):
            # Port=[a-b] needs consecutive ports: one NodeName line per node instead
            lines = lines[:-2] + [
                f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={p} {self._cpus()} State=UNKNOWN"
                for n, p in zip(self.NODES, node_ports)] + lines[-1:]
        self.conf.write_text("\n".join(lines) + "\n")

    # --- processes -------------------------------------------------------------------------------

    def _pid_files(self) -> list[Path]:
        run = self.folder / "run"
        return [run / f"slurmd-{n}.pid" for n in self.NODES] + [run / "slurmctld.pid", run / "munged.pid"]

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        self.write_config()
        f, env = self.folder, self.env
        subprocess.run([_which("munged"), f"--socket={self.munge_socket}", f"--key-file={f / 'munge' / 'munge.key'}",
                        f"--pid-file={f / 'run' / 'munged.pid'}", f"--log-file={f / 'log' / 'munged.log'}",
                        f"--seed-file={f / 'munge' / 'munged.seed'}", "--force"], check=True, env=env)
        subprocess.run([_which("slurmctld"), "-c", "-f", str(self.conf)], check=True, env=env)
        for node in self.NODES:
            self.start_node(node)
        self.wait_idle(timeout)
        return self

    def start_node(self, node: str) -> None:
        """(Re)start one node's slurmd (after `kill_node`, the node returns to service by itself)."""
        subprocess.run([_which("slurmd"), "-N", node, "-f", str(self.conf)], check=True, env=self.env)

    def node_pid(self, node: str) -> int:
        return int((self.folder / "run" / f"slurmd-{node}.pid").read_text())

    def kill_node(self, node: str) -> None:
        """SIGKILL one node's slurmd: the controller marks the node DOWN after SlurmdTimeout."""
        os.kill(self.node_pid(node), signal.SIGKILL)

    def scontrol(self, *args: str) -> str:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, env=self.env).stdout

    def node_states(self) -> dict[str, str]:
        out = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %T"], capture_output=True, text=True, env=self.env)
        return dict(line.split() for line in out.stdout.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline, states = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if all(states.get(n, "").rstrip("*") == "idle" for n in self.NODES):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Slurm nodes not idle within {timeout:.0f} s: {states}; logs in {self.folder / 'log'}")

    def stop(self) -> None:
        """End every daemon this cluster started (and the jobs its slurmd still run), by their pid files."""
        pids = []
        for pid_file in self._pid_files():
            try:
                pids.append(int(pid_file.read_text()))
            except (OSError, ValueError):
                continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
