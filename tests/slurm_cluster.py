"""A real, single-node SLURM on localhost for the tests (munged + slurmctld + slurmd).

Uses Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install slurm-wlm munge``).
Everything the daemons write (munge key and socket, slurm.conf, state, spool, logs,
pid files) lives in one temporary folder; the daemons run with free TCP ports, so
the cluster does not touch ``/etc/slurm`` or ``/etc/munge`` and several test runs
can share a machine. Client commands (``sbatch``, ``squeue`` …) find the cluster
through ``SLURM_CONF``, which :meth:`LocalSlurm.env` sets.

The node is described by ``slurmd -C`` (so ``CPUs`` matches the machine); there are
two partitions, ``std`` (default) and ``gpu`` (the same node, no GPUs: it exists so
that scripts rendered for the tutorial's partitions are accepted). Process tracking
is ``proctrack/linuxproc``, tasks ``task/none``, selection ``select/cons_tres``; no
cgroups and no accounting database (``sacct`` is therefore unavailable).

Also usable by hand, e.g. to try the README's commands::

    python tests/slurm_cluster.py start /tmp/myslurm   # prints: export SLURM_CONF=...
    python tests/slurm_cluster.py stop /tmp/myslurm
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: Programs the cluster needs; when one is missing the SLURM tests skip.
REQUIRED_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")


def missing_programs() -> list[str]:
    """Return the names from :data:`REQUIRED_PROGRAMS` not found on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [p for p in REQUIRED_PROGRAMS if shutil.which(p, path=path) is None]


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} not found (install slurm-wlm and munge)")
    return found


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


def node_config() -> dict[str, str]:
    """Parse the first line of ``slurmd -C`` (``NodeName=vm CPUs=2 … RealMemory=…``)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0]
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


class LocalSlurm:
    """A single-node SLURM cluster under ``root`` (a folder that is created).

    Args:
        root: folder for configuration, state, logs and the munge socket.
        partitions: partition names; the first is the default.
    """

    def __init__(self, root: str | os.PathLike, partitions: tuple[str, ...] = ("std", "gpu")) -> None:
        self.root = Path(root).resolve()
        self.partitions = partitions
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.node: dict[str, str] = {}
        self.node_name = ""
        self._procs: list[subprocess.Popen] = []

    # -- configuration -------------------------------------------------------------------
    def write_config(self) -> None:
        """Create the folders, the munge key and ``slurm.conf``."""
        for sub in ("munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(1024))
        self.node = node_config()
        self.node_name = self.node["NodeName"]
        ctld_port, slurmd_port = _free_ports(2)
        user = getpass.getuser()
        hw = " ".join(
            f"{k}={self.node[k]}"
            for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
            if k in self.node
        )
        parts = "\n".join(
            f"PartitionName={p} Nodes={self.node_name} Default={'YES' if i == 0 else 'NO'} "
            "MaxTime=INFINITE State=UP OverSubscribe=NO"
            for i, p in enumerate(self.partitions)
        )
        r = self.root
        self.conf.write_text(
            f"""# written by tests/slurm_cluster.py: single-node test cluster on localhost
ClusterName=specclasstest
SlurmctldHost={self.node_name}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
NodeName={self.node_name} NodeAddr=127.0.0.1 {hw} State=UNKNOWN
{parts}
"""
        )

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``SLURM_CONF`` pointing at this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        for var in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del env[var]  # a test run inside a SLURM job must not leak its job's settings
        return env

    # -- daemons ---------------------------------------------------------------------------
    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.root / "log" / log_name, "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, wait for an idle node.

        Raises:
            RuntimeError: a daemon exited, or the node did not become idle within
                ``timeout`` seconds; the message holds the tail of the daemons' logs.
        """
        self.write_config()
        atexit.register(self.stop)  # no daemons left behind if the test run ends abruptly
        r = self.root
        self._spawn(
            [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
             f"--key-file={r}/munge/munge.key", f"--pid-file={r}/run/munged.pid",
             f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed", "--num-threads=2"],
            "munged.out",
        )
        self._wait(lambda: self.munge_socket.exists(), 20, "munged socket")
        self._spawn([_which("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: self._run_ok(["scontrol", "ping"], "UP"), timeout, "slurmctld answering")
        self._spawn([_which("slurmd"), "-D", "-f", str(self.conf)], "slurmd.out")
        self._wait(self.node_idle, timeout, f"node {self.node_name} idle in sinfo")

    def _run_ok(self, argv: list[str], needle: str) -> bool:
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env())
        return res.returncode == 0 and needle in res.stdout

    def node_idle(self) -> bool:
        """True when ``sinfo`` reports this cluster's node as idle."""
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, env=self.env())
        return res.returncode == 0 and any(
            line.split()[1].startswith("idle") for line in res.stdout.splitlines() if len(line.split()) == 2
        )

    def _wait(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"local SLURM: timed out waiting for {what}\n{self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        """The last ``n`` lines of each daemon log (for error messages)."""
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel all jobs, stop slurmd, slurmctld and munged (SIGTERM, then SIGKILL)."""
        if self._procs and self.conf.exists():
            subprocess.run(["scancel", "--full", "--user", getpass.getuser()], capture_output=True, env=self.env())
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._procs.clear()

    def __enter__(self) -> "LocalSlurm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _main(argv: list[str]) -> int:  # pragma: no cover - manual use
    if len(argv) != 2 or argv[0] not in {"start", "stop"}:
        print("usage: python tests/slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "start":
        cluster = LocalSlurm(root)
        cluster.start()
        for p in cluster._procs:
            (root / "run" / "pids").open("a").write(f"{p.pid}\n")
        cluster._procs.clear()  # keep the daemons running after this script exits (atexit: nothing to stop)
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    pids = root / "run" / "pids"
    conf = root / "slurm.conf"
    if conf.exists():
        subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env={**os.environ, "SLURM_CONF": str(conf)})
    for pid in reversed([int(x) for x in pids.read_text().split()] if pids.exists() else []):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pids.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main(sys.argv[1:]))


__all__ = ["LocalSlurm", "missing_programs", "node_config", "REQUIRED_PROGRAMS"]
