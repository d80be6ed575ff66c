"""Stop training cleanly on SLURM's warning signal or SIGTERM, so that the job resumes.

SLURM can warn a job before its time limit (``sbatch --signal=B:USR1@300``: SIGUSR1
to the batch shell 300 s before the end; the scripts of
:func:`specclass.cluster.slurm.render_script` forward it to the command), and it
sends SIGTERM at the time limit, on ``scancel`` and on pre-emption, then SIGKILL
``KillWait`` seconds later (30 s by default).

:class:`GracefulStop` is a Keras callback. While ``fit`` runs it catches these
signals (the handlers are installed in ``on_train_begin`` and removed in
``on_train_end``) and then:

* on the *warning* signal (SIGUSR1 by default) it lets the running epoch finish,
  so the training's own end-of-epoch backup is written, and stops before the next
  epoch begins;
* on SIGTERM (little time left) it stops after the current batch; the partial
  epoch is dropped, the backup of the last finished epoch is what resumes.

A stop signal that comes again within :data:`REPEAT_WINDOW_S` of the first
(SLURM signals the command itself *and* the batch shell, whose trap forwards the
same SIGTERM, so the command often gets it twice within milliseconds) is the same
stop, not a new request: it is logged and ignored, also while the process is
already exiting with 75 (a handler that ignores repeats stays installed after the
stop for that window). Before, the second SIGTERM killed the process (status 143:
no clean stop, no requeue) in 1 of 4 real SLURM runs and 2 of 11 local ones. A
later one acts as it would have without this callback (the default: terminate).

It stops by raising :class:`TrainingInterrupted` — a ``SystemExit`` with status
:data:`~specclass.cluster.slurm.EXIT_INTERRUPTED` (75) — from ``on_epoch_begin`` or
``on_train_batch_end``. Raising (rather than setting ``model.stop_training``) keeps
Keras from calling ``on_epoch_end`` for a partial epoch, which would make a backup
callback record an epoch that was never finished, and keeps the caller from
treating an interrupted run as a finished one (final model, metrics). Uncaught, it
ends the process with status 75 and no traceback. Re-running the same command
then continues from the last finished epoch (the training's backup/resume).

With ``requeue=True`` the callback runs ``scontrol requeue $SLURM_JOB_ID`` just
before raising, so SLURM puts the job back in the queue and the same batch script
runs again and resumes (the job must be requeueable: ``--requeue``). SLURM holds a
requeued job back for a while (``Reason=BeginTime``, about two minutes) before it
starts again; ``scontrol update jobid=JOBID StartTime=now`` releases it at once.

Example::

    from specclass.cluster.signals import GracefulStop
    train(dataset, "spectral_tutorial", out_dir, epochs=50, extra_callbacks=[GracefulStop()])
"""

from __future__ import annotations

import logging
import os
import signal as _signal
import subprocess
import time
from typing import Iterable

import keras

from specclass.cluster.slurm import EXIT_INTERRUPTED

log = logging.getLogger(__name__)

#: Seconds after the first stop signal during which the same signal again is a duplicate
#: (ignored). SLURM's default ``KillWait`` (30 s, slurm.conf): it sends SIGKILL that long after
#: SIGTERM anyway, so a repeat inside it cannot ask for anything the first did not.
REPEAT_WINDOW_S = 30.0


class _IgnoreRepeats:
    """Signal handler left in place once training has stopped: ignores repeats of a stop
    signal until ``REPEAT_WINDOW_S`` after ``since`` (``time.monotonic()``), then restores
    ``previous`` and lets it act."""

    def __init__(self, previous: object, since: float) -> None:
        self.previous = _signal.SIG_DFL if previous is None else previous  # None: set outside Python
        self.since = since

    def __call__(self, signum: int, frame) -> None:
        name = _signal.Signals(signum).name
        if time.monotonic() - self.since <= REPEAT_WINDOW_S:
            log.warning("received %s again while stopping: ignored (the run is already stopping cleanly)", name)
            return
        _signal.signal(signum, self.previous)
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous != _signal.SIG_IGN:
            os.kill(os.getpid(), signum)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after its state was saved; exit status 75.

    Attributes:
        signal_name: ``"SIGUSR1"``, ``"SIGTERM"`` …
        epoch: index of the first epoch *not* finished (where a re-run resumes).
    """

    def __init__(self, signal_name: str, epoch: int) -> None:
        super().__init__(EXIT_INTERRUPTED)
        self.signal_name = signal_name
        self.epoch = epoch

    def __str__(self) -> str:
        return (f"training stopped by {self.signal_name} after {self.epoch} finished epoch(s); "
                "re-run the same command to resume")


def _signum(sig: int | str) -> int:
    if isinstance(sig, int):
        return sig
    name = sig.upper()
    return int(getattr(_signal, name if name.startswith("SIG") else "SIG" + name))


class GracefulStop(keras.callbacks.Callback):
    """Keras callback: on a signal, stop at an epoch or batch boundary and exit with 75.

    Args:
        finish_epoch_on: signals after which the running epoch is finished (its
            backup is written) before stopping. Default SIGUSR1.
        stop_now_on: signals after which training stops after the current batch.
            Default SIGTERM.
        requeue: run ``scontrol requeue $SLURM_JOB_ID`` before exiting (only when
            ``SLURM_JOB_ID`` is set).
        status_file: if given, a JSON line ``{"signal", "epoch", "time"}`` is
            appended to this file when training stops (handy for job logs/tests).

    Raises (from the callback hooks):
        TrainingInterrupted: after a caught signal, at the next safe point.
    """

    def __init__(self, finish_epoch_on: Iterable[int | str] = ("USR1",),
                 stop_now_on: Iterable[int | str] = ("TERM",), requeue: bool = False,
                 status_file: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.finish_epoch_on = {_signum(s) for s in finish_epoch_on}
        self.stop_now_on = {_signum(s) for s in stop_now_on}
        self.requeue = requeue
        self.status_file = status_file
        self.received: int | None = None
        self._first_at = 0.0
        self._stop_now = False
        self._epoch = 0
        self._previous: dict[int, object] = {}

    # -- signal handling ---------------------------------------------------------------
    def _handler(self, signum: int, frame) -> None:  # noqa: ARG002 - signal API
        if self.received is not None and signum in self.stop_now_on and self._stop_now:
            if time.monotonic() - self._first_at <= REPEAT_WINDOW_S:
                # the same stop again (SLURM and the batch shell's forwarding): not a new request
                log.warning("received %s again: ignored, training is already stopping after this batch",
                            _signal.Signals(signum).name)
                return
            # asked again long after the first: fall back to the default action.
            self.restore_handlers()
            os.kill(os.getpid(), signum)
            return
        if self.received is None:
            self._first_at = time.monotonic()
        self.received = signum
        if signum in self.stop_now_on:
            self._stop_now = True
        log.warning("received %s: training will stop %s", _signal.Signals(signum).name,
                    "after this batch" if self._stop_now else "after this epoch")

    def install_handlers(self) -> None:
        """Catch the configured signals in this (main) thread."""
        for signum in self.finish_epoch_on | self.stop_now_on:
            if signum not in self._previous:
                previous = _signal.signal(signum, self._handler)
                # a finished stop's repeat-ignoring handler is not worth keeping: keep what it wraps
                self._previous[signum] = previous.previous if isinstance(previous, _IgnoreRepeats) else previous

    def restore_handlers(self) -> None:
        """Put back the handlers that were there before :meth:`install_handlers`."""
        for signum, previous in self._previous.items():
            _signal.signal(signum, previous)
        self._previous.clear()

    # -- Keras hooks -------------------------------------------------------------------
    def on_train_begin(self, logs=None) -> None:
        self.install_handlers()

    def on_train_end(self, logs=None) -> None:
        self.restore_handlers()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch
        if self.received is not None:
            self._stop(epoch)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self._stop_now:
            self._stop(self._epoch)

    def _stop(self, epoch: int) -> None:
        name = _signal.Signals(self.received).name
        previous = dict(self._previous)
        self.restore_handlers()
        for signum, handler in previous.items():  # repeats must not turn the clean exit (75) into 143
            _signal.signal(signum, _IgnoreRepeats(handler, self._first_at))
        if self.status_file:
            import json

            with open(self.status_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"signal": name, "epoch": epoch, "time": time.time()}) + "\n")
        if self.requeue:
            # SLURM answers a requeue by sending SIGTERM to the job; ignore it so that this
            # process still exits with 75 (the backup is already on disk).
            _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
            requeue_job()
        exc = TrainingInterrupted(name, epoch)
        log.warning("%s", exc)
        raise exc


def requeue_job(job_id: str | None = None) -> bool:
    """Ask SLURM to requeue this job (``scontrol requeue JOBID``).

    Args:
        job_id: default ``$SLURM_JOB_ID``.

    Returns:
        True if scontrol accepted; False when not in a SLURM job or it refused
        (the reason is logged; the backup is still on disk, so a manual
        re-submission resumes).
    """
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    if not job_id:
        log.warning("requeue asked for, but SLURM_JOB_ID is not set: not in a SLURM job")
        return False
    res = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if res.returncode != 0:
        log.warning("`scontrol requeue %s` failed: %s", job_id, res.stderr.strip())
        return False
    return True


def slurm_callbacks(environ: dict[str, str] | None = None) -> list[keras.callbacks.Callback]:
    """Callbacks a training run should add when it runs under SLURM.

    Returns ``[GracefulStop(requeue=...)]`` when ``SLURM_JOB_ID`` is set (or
    ``SPECCLASS_GRACEFUL_STOP=1``), else ``[]``. ``SPECCLASS_REQUEUE=1`` turns on
    requeueing; ``SPECCLASS_GRACEFUL_STOP=0`` turns the callback off.
    """
    env = os.environ if environ is None else environ
    flag = env.get("SPECCLASS_GRACEFUL_STOP")
    if flag == "0" or (flag != "1" and not env.get("SLURM_JOB_ID")):
        return []
    return [GracefulStop(requeue=env.get("SPECCLASS_REQUEUE") == "1")]
