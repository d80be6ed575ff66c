"""Device strategy: CPU threads, one replica per GPU in a node, data parallel across nodes.

Which path needs which Keras backend (``KERAS_BACKEND``), and how to get it:

===================  =====================================  =========================================
situation            what specclass does                    backend / install
===================  =====================================  =========================================
CPU only             intra-op threads = SLURM_CPUS_PER_TASK  any; ``pip install specclass``
                     (:func:`configure_cpu_threads`)          (tensorflow-cpu is the default)
several GPUs, one    one replica per GPU:                    ``tensorflow``:
node                 ``tf.distribute.MirroredStrategy``      ``pip install "tensorflow[and-cuda]"``;
                     (TensorFlow) or                         ``jax``:
                     ``keras.distribution.DataParallel``    ``pip install "specclass[jax]"
                     (JAX)                                   "jax[cuda12]"``
several nodes        ``keras.distribution.initialize()``     ``jax`` only (TensorFlow's
(``srun``, one       (reads the SLURM environment through    MultiWorkerMirroredStrategy is broken
task per node or     ``jax.distributed.initialize``) +       under Keras 3, keras#20585; Horovod
per GPU)             ``keras.distribution.DataParallel``    breaks on TF >= 2.16)
===================  =====================================  =========================================

Multi-process data parallel training needs every process to feed *its part of each
global batch*: Keras builds the global batch with
``jax.make_array_from_process_local_data`` from the per-process batches. Use
:func:`process_batch_rows` to pick the rows of a process so that the global batch
``k`` is exactly rows ``[k*B, (k+1)*B)`` — the same batches a single process sees
with ``shuffle=False`` (or after a shuffle with a seed shared by all processes).
On CPU, JAX runs the cross-process collectives with gloo (``jax_cpu_collectives_implementation``),
which this module turns on before initialising.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "data-parallel", "multi-node")


def slurm_cpus(environ: Mapping[str, str] | None = None) -> int | None:
    """CPUs this task may use: ``SLURM_CPUS_PER_TASK``, else ``None`` (not set or not a number)."""
    env = os.environ if environ is None else environ
    value = env.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_cpu_threads(n_threads: int | None = None, environ: Mapping[str, str] | None = None) -> int | None:
    """Make the backend use as many CPU threads as SLURM gave this task.

    Sets ``OMP_NUM_THREADS`` (if unset), and for TensorFlow
    ``tf.config.threading.set_intra_op_parallelism_threads(n)`` and
    ``set_inter_op_parallelism_threads(min(n, 2))`` — which only work before
    TensorFlow runs its first operation; afterwards a warning is logged. For JAX
    ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=n``
    is set (read when JAX starts).

    Args:
        n_threads: thread count; default :func:`slurm_cpus`.

    Returns:
        The thread count applied, or ``None`` when there was none to apply.
    """
    n = n_threads or slurm_cpus(environ)
    if not n:
        return None
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
        except RuntimeError as exc:  # TensorFlow already initialised
            log.warning("could not set TensorFlow threads to %d: %s", n, exc)
    elif backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen=true "
                                       f"intra_op_parallelism_threads={n}").strip()
    return n


def process_batch_rows(n_rows: int, global_batch_size: int, process_index: int, num_processes: int) -> np.ndarray:
    """Row indices a process feeds so that the processes together form the global batches.

    Global batch ``k`` is rows ``[k*B, (k+1)*B)``; process ``p`` of ``P`` feeds its
    ``p``-th slice of ``B/P`` rows from each. Rows of a last, incomplete global
    batch are dropped (every process must feed batches of the same size).

    Args:
        n_rows: rows in the (already ordered) training set.
        global_batch_size: ``B``, divisible by ``num_processes``.

    Returns:
        ``(n_batches * B/P,)`` int64 indices, in the order this process feeds them
        (use ``fit(..., batch_size=B // P, shuffle=False)``).

    Raises:
        ValueError: ``B`` not divisible by ``P``, or a bad process index.
    """
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} not in [0, {num_processes})")
    if global_batch_size % num_processes:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by {num_processes} processes")
    local = global_batch_size // num_processes
    n_batches = n_rows // global_batch_size
    starts = np.arange(n_batches, dtype=np.int64) * global_batch_size + process_index * local
    return (starts[:, None] + np.arange(local, dtype=np.int64)[None, :]).ravel()


@dataclass
class DeviceStrategy:
    """How a training run uses its devices (returned by :func:`get_strategy`).

    Attributes:
        kind: ``"none"``, ``"mirrored"``, ``"data-parallel"`` or ``"multi-node"``.
        backend: Keras backend name.
        num_replicas: model replicas in the whole job.
        num_processes: processes in the job (``> 1`` only for ``multi-node``).
        process_index: this process's index (0 is the chief that writes files).
        cpu_threads: threads set by :func:`configure_cpu_threads`, or ``None``.
        tf_strategy: the ``tf.distribute`` strategy for ``mirrored``, else ``None``.
        distribution: the ``keras.distribution`` object for the JAX paths, else ``None``.
    """

    kind: str
    backend: str
    num_replicas: int = 1
    num_processes: int = 1
    process_index: int = 0
    cpu_threads: int | None = None
    tf_strategy: Any = None
    distribution: Any = None
    devices: list[str] = field(default_factory=list)

    @property
    def is_chief(self) -> bool:
        """True for the process that writes the run folder."""
        return self.process_index == 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build and compile the model inside this context.

        TensorFlow mirrored: ``strategy.scope()``. JAX: ``keras.distribution``
        is set globally by :func:`get_strategy`; nothing more to do here.
        """
        if self.tf_strategy is not None:
            with self.tf_strategy.scope():
                yield
        else:
            yield

    def local_batch_size(self, global_batch_size: int) -> int:
        """Batch size each process feeds (``global // num_processes``)."""
        if global_batch_size % self.num_processes:
            raise ValueError(f"batch size {global_batch_size} not divisible by {self.num_processes} processes")
        return global_batch_size // self.num_processes

    def describe(self) -> str:
        """One line for logs: kind, backend, replicas, processes, threads."""
        return (f"strategy={self.kind} backend={self.backend} replicas={self.num_replicas} "
                f"processes={self.num_processes} process_index={self.process_index} "
                f"cpu_threads={self.cpu_threads}")


def _enable_jax_cpu_collectives() -> None:
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError) as exc:  # option renamed/removed in a future JAX
        log.debug("jax_cpu_collectives_implementation not set: %s", exc)


def get_strategy(kind: str = "auto", environ: Mapping[str, str] | None = None) -> DeviceStrategy:
    """Choose and set up the device strategy for this process.

    ``auto`` picks ``multi-node`` when SLURM started several tasks
    (``SLURM_NTASKS > 1``) and the backend is JAX; ``mirrored``/``data-parallel``
    when one process sees several GPUs; else ``none``. Always applies
    :func:`configure_cpu_threads` first.

    Args:
        kind: one of :data:`STRATEGIES`.

    Returns:
        A :class:`DeviceStrategy`; for the JAX paths
        ``keras.distribution.set_distribution`` has been called.

    Raises:
        ValueError: unknown ``kind``, or a kind the active backend cannot do
            (e.g. ``multi-node`` without JAX) — the message says what to install.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy {kind!r} not in {STRATEGIES}")
    env = os.environ if environ is None else environ
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    ntasks = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)  # set by srun only
    if kind == "auto" and ntasks > 1:
        kind = "multi-node"
    if kind == "multi-node" and backend != "jax":
        raise ValueError(
            "multi-node training needs the JAX backend: pip install 'specclass[jax]' and set KERAS_BACKEND=jax "
            "(TensorFlow's MultiWorkerMirroredStrategy is broken under Keras 3, keras#20585)"
        )
    if kind == "multi-node":
        _enable_jax_cpu_collectives()
    threads = configure_cpu_threads(environ=env)
    import keras

    if kind == "multi-node":
        keras.distribution.initialize()  # jax.distributed.initialize reads SLURM_* (coordinator, ranks)
        import jax

        devices = keras.distribution.list_devices()
        dist = keras.distribution.DataParallel(devices=devices)
        # Each process feeds its own rows (process_batch_rows), already sharded; numpy
        # input would otherwise be refused ("auto-sharding needs a tf.data.Dataset").
        dist.auto_shard_dataset = False
        keras.distribution.set_distribution(dist)
        return DeviceStrategy("multi-node", backend, len(devices), jax.process_count(), jax.process_index(),
                              threads, None, dist, [str(d) for d in devices])
    gpus = _local_gpus(backend)
    if kind == "auto":
        kind = ("mirrored" if backend == "tensorflow" else "data-parallel") if len(gpus) > 1 else "none"
    if kind == "mirrored":
        if backend != "tensorflow":
            raise ValueError("strategy 'mirrored' is TensorFlow's; with KERAS_BACKEND=jax use 'data-parallel'")
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return DeviceStrategy("mirrored", backend, strategy.num_replicas_in_sync, 1, 0, threads, strategy,
                              None, gpus)
    if kind == "data-parallel":
        if backend != "jax":
            raise ValueError("strategy 'data-parallel' needs KERAS_BACKEND=jax (pip install 'specclass[jax]'); "
                             "with TensorFlow use 'mirrored'")
        devices = keras.distribution.list_devices()
        dist = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(dist)
        return DeviceStrategy("data-parallel", backend, len(devices), 1, 0, threads, None, dist,
                              [str(d) for d in devices])
    return DeviceStrategy("none", backend, 1, 1, 0, threads, None, None, gpus)


def _local_gpus(backend: str) -> list[str]:
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.local_devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []
