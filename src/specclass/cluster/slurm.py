"""SLURM batch jobs: render sbatch scripts, submit them, follow and cancel them.

A job is described by a :class:`JobSpec` (the ``#SBATCH`` options a user would
write by hand, plus the shell lines that set up the environment) and a command.
:func:`render_script` turns both into the text of a batch script;
:func:`submit` hands a script to ``sbatch --parsable`` and returns the job id;
:func:`status` asks ``squeue`` and then ``sacct`` (or ``scontrol show job`` when the
cluster keeps no accounting) about jobs; :func:`cancel` runs ``scancel``.

The command in a rendered script runs in the background of the batch shell, and
the shell forwards ``SIGUSR1`` and ``SIGTERM`` to it. This is what makes
``--signal=B:USR1@SECONDS`` useful: SLURM signals only the batch shell (``B:``),
and a shell waiting for a foreground child would run its trap only after the
child has ended. The forwarding pattern is the one in the sbatch manual's
description of ``--signal`` (https://slurm.schedmd.com/sbatch.html#OPT_signal).

Every SLURM command that fails raises :class:`SlurmError`, whose message holds the
command line, its exit status and its stderr.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

#: Exit status of a training run that stopped on a SLURM warning signal or SIGTERM
#: after saving its backup (``EX_TEMPFAIL`` from BSD ``sysexits.h``: "temporary
#: failure, the user is invited to retry"). Re-running the same command resumes.
EXIT_INTERRUPTED = 75

#: ``--mail-type`` values accepted by sbatch (sbatch(1), SLURM 22.05+).
MAIL_TYPES = frozenset(
    {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
     "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}
)

_TIME_RE = re.compile(
    r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"  # D-H, D-H:M, D-H:M:S
    r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"  # M, M:S, H:M:S
)
_MEM_RE = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_SIGNAL_RE = re.compile(r"^(?:[BR]{1,2}:)?(?:SIG)?[A-Z0-9]+(?:@\d+)?$")


class SlurmError(RuntimeError):
    """A SLURM command failed; the message names the command, exit status and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`{shlex.join(self.argv)}` failed (exit {returncode}): {self.stderr or 'no message'}")


def parse_time(value: str) -> int:
    """Return a SLURM time limit (``--time``) in seconds.

    Accepts the forms of sbatch(1): ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``.

    Raises:
        ValueError: ``value`` is none of these forms (the message shows them).
    """
    m = _TIME_RE.match(str(value).strip())
    if not m:
        raise ValueError(
            f"time {value!r} is not a SLURM time: use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
        )
    g = m.groupdict()
    if g["days"] is not None:
        return int(g["days"]) * 86400 + int(g["dh"]) * 3600 + int(g["dm"] or 0) * 60 + int(g["ds"] or 0)
    a, b, c = g["a"], g["b"], g["c"]
    if c is not None:
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:
        return int(a) * 60 + int(b)
    return int(a) * 60


@dataclass
class JobSpec:
    """What a batch job asks of SLURM, and how its shell sets up the environment.

    Every field left at ``None`` is not written, so the cluster's default applies.
    Field names follow sbatch's long options (``ntasks_per_node`` is
    ``--ntasks-per-node``); a site profile (:mod:`specclass.cluster.profiles`)
    uses the same names.

    Attributes:
        job_name, partition, account, qos, constraint: ``--job-name`` … ``--constraint``.
        nodes, ntasks, ntasks_per_node, cpus_per_task: task geometry.
        gpus_per_node: ``--gpus-per-node`` (an integer or ``type:n``); ``gres`` for
            sites that use ``--gres=gpu:2`` instead.
        mem: memory per node, e.g. ``"16G"``; ``mem_per_cpu`` likewise.
        time: time limit, one of the forms of :func:`parse_time`.
        mail_user, mail_type: ``--mail-user``, ``--mail-type`` (e.g. ``"END,FAIL"``).
        output, error: ``--output``/``--error`` paths (``%j`` = job id, ``%x`` = job
            name, ``%A``/``%a`` = array job id / task id).
        chdir: working directory of the job.
        requeue: ``True`` writes ``--requeue`` (and ``--open-mode=append`` unless
            ``extra`` sets an open mode, so a requeued run appends to its log),
            ``False`` ``--no-requeue``.
        signal: ``--signal``, e.g. ``"B:USR1@300"`` (USR1 to the batch shell 300 s
            before the time limit), see :mod:`specclass.cluster.signals`.
        array: ``--array`` (``"0-7"``, ``"3"``, ``"0-99%10"``).
        dependency: ``--dependency`` (``"afterok:123"``).
        export: ``--export`` (``"ALL"`` by default in SLURM).
        extra: more ``#SBATCH`` lines, given as options (``"--exclusive"``).
        setup: shell lines run before the command (``module load …``,
            ``source activate …``).
        env: environment variables exported before the command.
        python: interpreter that runs ``specclass`` commands in the job; defaults
            to the one running now (right on a shared file system). A profile that
            activates a conda environment sets ``"python"``.
        srun: run the command through ``srun`` (one copy per task; needed for
            multi-process training).
    """

    job_name: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int | str | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    gpus_per_node: int | str | None = None
    gres: str | None = None
    mem: str | None = None
    mem_per_cpu: str | None = None
    time: str | None = None
    mail_user: str | None = None
    mail_type: str | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    requeue: bool | None = None
    signal: str | None = None
    array: str | None = None
    dependency: str | None = None
    export: str | None = None
    extra: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    srun: bool = False

    #: Fields written as ``#SBATCH --name=value`` lines, in this order.
    SBATCH_FIELDS = (
        "job_name", "partition", "account", "qos", "constraint", "nodes", "ntasks", "ntasks_per_node",
        "cpus_per_task", "gpus_per_node", "gres", "mem", "mem_per_cpu", "time", "mail_user", "mail_type",
        "output", "error", "chdir", "signal", "array", "dependency", "export",
    )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names a profile or :meth:`merged` may set."""
        return tuple(f.name for f in fields(cls))

    def merged(self, values: Mapping[str, object]) -> "JobSpec":
        """Return a copy with ``values`` (non-``None`` entries) applied; lists are replaced.

        Raises:
            ValueError: a key is not a field of :class:`JobSpec`.
        """
        names = set(self.field_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown job option(s) {unknown}; allowed: {sorted(names)}")
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in values.items():
            if value is not None:
                data[key] = value
        spec = JobSpec(**data)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check every set field; raise ``ValueError`` naming the option, value and what is allowed."""
        for name in ("nodes", "ntasks", "ntasks_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is None:
                continue
            if name == "nodes" and isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?", value):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')}={value!r}: must be a positive integer")
        if self.time is not None:
            parse_time(self.time)
        for name in ("mem", "mem_per_cpu"):
            value = getattr(self, name)
            if value is not None and not _MEM_RE.match(str(value)):
                raise ValueError(f"{name.replace('_', '-')}={value!r}: use a number with an optional K/M/G/T suffix")
        if self.mail_type is not None:
            bad = [t for t in str(self.mail_type).upper().split(",") if t not in MAIL_TYPES]
            if bad:
                raise ValueError(f"mail-type={self.mail_type!r}: {bad} not in {sorted(MAIL_TYPES)}")
        if self.signal is not None and not _SIGNAL_RE.match(str(self.signal).upper()):
            raise ValueError(f"signal={self.signal!r}: use [B:]SIGNAL[@SECONDS], e.g. B:USR1@300")
        for name in ("extra", "setup"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name}={value!r}: must be a list of strings")
        if not isinstance(self.env, dict) or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in self.env):
            raise ValueError(f"env={self.env!r}: must map shell variable names to values")
        for line in self.extra:
            if not line.startswith("-"):
                raise ValueError(f"extra line {line!r}: give an sbatch option such as '--exclusive'")

    def sbatch_options(self) -> list[str]:
        """The ``--option=value`` strings for the ``#SBATCH`` lines, in a fixed order."""
        opts = []
        for name in self.SBATCH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                opts.append(f"--{name.replace('_', '-')}={value}")
        if self.requeue is True:
            opts.append("--requeue")
            if not any(e.startswith("--open-mode") for e in self.extra):
                opts.append("--open-mode=append")  # a requeued run adds to the log, not replaces it
        elif self.requeue is False:
            opts.append("--no-requeue")
        opts.extend(self.extra)
        return opts


def specclass_command(argv: Sequence[str], python: str | None = None) -> list[str]:
    """Turn the words after ``--`` into the command line a job runs.

    ``specclass train …`` and ``train …`` (any word that is a ``specclass``
    sub-command) become ``PYTHON -m specclass train …``; anything else
    (``srun hostname``, ``python my.py``) is kept as given.

    Raises:
        ValueError: ``argv`` is empty.
    """
    words = list(argv)
    if not words:
        raise ValueError("no command given: put the command after '--'")
    python = python or sys.executable
    if words[0] == "specclass":
        return [python, "-m", "specclass", *words[1:]]
    if words[0] in specclass_subcommands():
        return [python, "-m", "specclass", *words]
    return words


@functools.lru_cache(maxsize=1)
def specclass_subcommands() -> frozenset[str]:
    """Names of the top-level ``specclass`` sub-commands (``train``, ``build-dataset`` …)."""
    import argparse

    from specclass.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    return frozenset()


_FORWARD_BLOCK = """\
# Run the command in the background so that this shell can forward SIGUSR1 (from
# --signal=B:USR1@SECONDS) and SIGTERM to it; the command saves its state and exits.
_specclass_forward() {{ [ -n "${{child:-}}" ] && kill -s "$1" "$child" 2>/dev/null; }}
trap '_specclass_forward USR1' USR1
trap '_specclass_forward TERM' TERM
{command} &
child=$!
status=0
wait "$child" || status=$?
while [ "$status" -gt 128 ]; do  # wait was interrupted by a trapped signal (or the child died of one)
    previous=$status
    status=0
    wait "$child" || status=$?      # bash keeps a finished child's status for a second wait
    [ "$status" -eq 127 ] && status=$previous
    [ "$status" -eq "$previous" ] && break
done
echo "specclass job ${{SLURM_JOB_ID:-?}}: command exited with status $status"
exit "$status"
"""


def batch_signal(signal: str | None, srun: bool = False) -> tuple[str | None, str | None]:
    """The ``--signal`` value that reaches the command of a rendered script, and a note if it was changed.

    sbatch(1), ``--signal``: "By default all job steps will be signaled, but not the
    batch shell itself"; ``B:`` signals only the batch shell. A rendered script runs
    its command in the batch shell (no job step) unless ``srun`` is set, so
    ``USR1@60`` would reach nothing: it is changed to ``B:USR1@60`` (the shell's trap
    forwards it). With ``srun`` the command is a job step and gets it as given.

    Returns:
        ``(value, note)``: ``note`` is ``None`` when ``signal`` is kept as given.
    """
    if signal is None or srun:
        return signal, None
    text = str(signal).strip()
    flags, sep, rest = text.partition(":")
    if not sep:
        flags, rest = "", text
    if "B" in flags.upper():
        return signal, None
    fixed = f"B{flags}:{rest}"
    return fixed, (
        f"--signal={text} signals only job steps (srun), and this script runs the command in the batch "
        f"shell, so the signal would never reach it: using --signal={fixed} (the batch shell forwards it to "
        "the command); add --srun to run the command as a job step instead"
    )


def render_script(spec: JobSpec, command: Sequence[str] | str, *, header_comment: str | None = None) -> str:
    """Return the text of an sbatch script that runs ``command`` under ``spec``.

    Args:
        spec: the job's options and environment set-up.
        command: words (quoted for the shell here, after :func:`specclass_command`)
            or one shell line used as given.
        header_comment: a comment line written after the ``#!`` line.

    Returns:
        The script (``#!/bin/bash``, ``#SBATCH`` lines, set-up, the command with
        signal forwarding), ending with a newline.

    Raises:
        ValueError: an option of ``spec`` is invalid, or the command is empty.
    """
    spec.validate()
    fixed, note = batch_signal(spec.signal, spec.srun)
    if note:
        spec = dataclasses.replace(spec, signal=fixed)
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("no command given: put the command after '--'")
        line = command.strip()
    else:
        words = specclass_command(command, spec.python)
        line = shlex.join(words)
    if spec.srun:
        line = f"srun {line}"
    out = ["#!/bin/bash"]
    out.append(f"# {header_comment or 'written by specclass slurm script'}")
    if note:
        out.append(f"# note: {note}")
    out += [f"#SBATCH {opt}" for opt in spec.sbatch_options()]
    out.append("")
    if spec.setup:
        out.append("# environment set-up")
        out += list(spec.setup)
        out.append("")
    for key, value in spec.env.items():
        out.append(f"export {key}={shlex.quote(str(value))}")
    if spec.cpus_per_task:
        out.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    if spec.env or spec.cpus_per_task:
        out.append("")
    out.append(_FORWARD_BLOCK.format(command=line).rstrip("\n"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# talking to SLURM
# ---------------------------------------------------------------------------------------
def _run(argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
         timeout: float = 60.0, stderr_too: bool = False) -> str:
    """Run a SLURM client command; return stdout (+ stderr) or raise :class:`SlurmError`."""
    if shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None:
        raise SlurmError(argv, 127, f"{argv[0]} not found on PATH (is this a SLURM login node?)")
    try:
        res = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                             env=dict(env) if env is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(argv, -1, f"no answer within {timeout:g} s") from exc
    if res.returncode != 0:
        raise SlurmError(argv, res.returncode, res.stderr or res.stdout)
    return res.stderr + res.stdout if stderr_too else res.stdout


def submit(script: str | os.PathLike, *, sbatch_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
           test_only: bool = False) -> str:
    """Submit a batch script with ``sbatch --parsable``; return the job id.

    Args:
        script: the script's text (passed on stdin) or a ``Path`` to a script file.
        sbatch_args: more sbatch options (``--dependency=afterok:12``, ``--array=3``);
            they override the script's ``#SBATCH`` lines.
        env: environment for sbatch (default: this process's).
        test_only: run ``sbatch --test-only`` (checks the script and returns the
            scheduler's message instead of a job id; nothing is submitted).

    Returns:
        The job id as a string (``"1234"``; an array job's id is its master id).
        With ``test_only``, sbatch's message (``"sbatch: Job 5 to start at …"``).

    Raises:
        SlurmError: sbatch is missing or refused the job.
    """
    argv = ["sbatch", "--test-only" if test_only else "--parsable", *sbatch_args]
    text = None
    if isinstance(script, Path):
        argv.append(str(script))
    else:
        text = str(script)
    if test_only:  # sbatch --test-only answers on stderr
        return _run(argv, input=text, env=env, stderr_too=True).strip()
    out = _run(argv, input=text, env=env).strip()
    job_id = out.split(";")[0].strip()
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmError(argv, 0, f"unexpected answer from sbatch --parsable: {out!r}")
    return job_id


@dataclass
class JobStatus:
    """One line of :func:`status`: a job (or array task) and where it stands.

    Attributes:
        job_id: ``"123"`` or ``"123_4"`` for array task 4.
        name: job name.
        state: SLURM state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``,
            ``CANCELLED``, ``TIMEOUT``, ``REQUEUED`` …).
        elapsed: run time so far (``"0:42"``), ``""`` when unknown.
        exit_code: ``"0:0"`` (status:signal) once finished, ``""`` before.
        reason: why a pending job waits, or the node list of a running one.
        source: which command answered (``squeue``, ``sacct`` or ``scontrol``).
    """

    job_id: str
    name: str
    state: str
    elapsed: str = ""
    exit_code: str = ""
    reason: str = ""
    source: str = ""

    @property
    def finished(self) -> bool:
        """True when the job will not run again by itself."""
        return self.state.split()[0].rstrip("+") in FINISHED_STATES


#: States in which a job has ended (squeue(1)/sacct(1) "JOB STATE CODES").
FINISHED_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
     "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
)


def _squeue(job_ids: Sequence[str], user: str | None, env) -> list[JobStatus]:
    argv = ["squeue", "--noheader", "--array", "--format=%i|%j|%T|%M|%R"]
    if job_ids:
        argv.append("--jobs=" + ",".join(job_ids))
    if user:
        argv.append(f"--user={user}")
    try:
        out = _run(argv, env=env)
    except SlurmError as exc:
        if "Invalid job id" in exc.stderr:  # all of them have left the queue
            return []
        raise
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            rows.append(JobStatus(parts[0], parts[1], parts[2], parts[3], "", parts[4], "squeue"))
    return rows


def _sacct(job_ids: Sequence[str], env) -> list[JobStatus] | None:
    argv = ["sacct", "--noheader", "--parsable2", "--allocations",
            "--format=JobID,JobName,State,Elapsed,ExitCode", "--jobs=" + ",".join(job_ids)]
    try:
        out = _run(argv, env=env)
    except SlurmError:
        return None  # no accounting on this cluster (or sacct missing)
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            rows.append(JobStatus(parts[0], parts[1], parts[2], parts[3], parts[4], "", "sacct"))
    return rows


def _scontrol(job_id: str, env) -> list[JobStatus]:
    try:
        out = _run(["scontrol", "--oneliner", "show", "job", job_id], env=env)
    except SlurmError:
        return []
    rows = []
    for line in out.splitlines():
        kv = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in kv:
            continue
        jid = kv["JobId"]
        if kv.get("ArrayJobId") and kv.get("ArrayTaskId"):
            jid = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
        rows.append(JobStatus(jid, kv.get("JobName", ""), kv.get("JobState", ""), kv.get("RunTime", ""),
                              kv.get("ExitCode", ""), kv.get("Reason", ""), "scontrol"))
    return rows


def status(job_ids: Iterable[str] = (), *, user: str | None = None,
           env: Mapping[str, str] | None = None) -> list[JobStatus]:
    """Where jobs stand: ``squeue`` for queued/running jobs, then the finished ones.

    Jobs no longer in the queue are looked up with ``sacct``; on a cluster without
    accounting (``sacct`` says "accounting storage is disabled"), with ``scontrol
    show job``, which knows a finished job for ``MinJobAge`` seconds (300 by default).

    Args:
        job_ids: job ids to ask about; empty = the user's jobs in the queue.
        user: restrict ``squeue`` to this user (ignored when ``job_ids`` are given).

    Returns:
        One :class:`JobStatus` per job or array task, in the order SLURM gave them.

    Raises:
        SlurmError: ``squeue`` is missing or fails for a reason other than unknown ids.
    """
    ids = [str(j) for j in job_ids]
    rows = _squeue(ids, None if ids else user, env)
    if not ids:
        return rows
    seen = {r.job_id.split("_")[0] for r in rows} | {r.job_id for r in rows}
    missing = [j for j in ids if j not in seen]
    if missing:
        acct = _sacct(missing, env)
        if acct:
            rows += acct
        else:
            for j in missing:
                rows += _scontrol(j, env)
    return rows


def cancel(job_id: str, *, signal: str | None = None, batch: bool = False,
           env: Mapping[str, str] | None = None) -> None:
    """Cancel a job with ``scancel``, or send it a signal.

    Args:
        job_id: job id (``"123"``, ``"123_4"``).
        signal: send this signal (``"USR1"``) instead of cancelling.
        batch: with ``signal``, signal only the batch shell (``scancel --batch``),
            as ``--signal=B:…`` does.

    Raises:
        SlurmError: scancel failed (unknown job id, not your job …).
    """
    argv = ["scancel", "--verbose"]  # without it, scancel hides "Invalid job id"
    if signal:
        argv.append(f"--signal={signal}")
        if batch:
            argv.append("--batch")
    argv.append(str(job_id))
    # scancel reports some failures (e.g. an unknown job id) on stderr with exit 0
    out = _run(argv, env=env, stderr_too=True)
    if "error" in out.lower():
        raise SlurmError(argv, 0, out)


def wait(job_ids: Iterable[str], *, timeout: float = 600.0, poll: float = 2.0,
         env: Mapping[str, str] | None = None) -> list[JobStatus]:
    """Poll :func:`status` until every job has finished; return their last status.

    Raises:
        TimeoutError: a job is still queued or running after ``timeout`` seconds.
    """
    ids = [str(j) for j in job_ids]
    end = time.monotonic() + timeout
    while True:
        rows = status(ids, env=env)
        queued = any(r.source == "squeue" for r in rows)  # squeue lists only jobs not yet ended
        if rows and not queued and all(r.finished for r in rows):
            return rows
        if time.monotonic() > end:
            raise TimeoutError(f"jobs {ids} not finished after {timeout:g} s: "
                               + ", ".join(f"{r.job_id}={r.state}" for r in rows))
        time.sleep(poll)
