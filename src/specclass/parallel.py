"""All cores of one machine: contiguous shards of a file list, one process each, results in order.

``build-dataset --workers N`` and ``predict --workers N`` cut the sorted input list
into contiguous blocks (:func:`specclass.spectra.build.shard_slice`, the cut the
SLURM job arrays use), run each block in a separate process, and join the blocks'
results in block order, so the output is the one a single process writes (same
rows, same order). Processes are started with ``spawn`` (a fresh interpreter: no
state inherited from a parent that may hold threads of TensorFlow or HDF5).

The default number of workers is what the machine grants this process:
``SLURM_CPUS_PER_TASK`` inside a SLURM job, else ``len(os.sched_getaffinity(0))``
(the cores this process may run on; ``os.cpu_count()`` counts the whole node).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence


def default_workers() -> int:
    """Processes to use by default: ``SLURM_CPUS_PER_TASK``, else the cores this process may use (>= 1)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` as a positive int (``None``: :func:`default_workers`).

    Raises:
        ValueError: ``workers`` is not a positive int.
    """
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


def blocks(items: Sequence[Any], n_blocks: int) -> list[list[Any]]:
    """``items`` cut into ``min(n_blocks, len(items))`` contiguous, nearly equal blocks (in order)."""
    from specclass.spectra.build import shard_slice

    n = max(1, min(int(n_blocks), len(items)))
    return [list(items[shard_slice(len(items), i, n)]) for i in range(n)]


def map_in_order(fn: Callable[..., Any], args: Sequence[tuple], workers: int,
                 on_done: Callable[[int], None] | None = None) -> list[Any]:
    """``[fn(*a) for a in args]`` computed in ``workers`` spawned processes, in the order of ``args``.

    ``fn`` must be a module-level function; its arguments and result are pickled.
    ``on_done(i)`` is called as each call finishes (in any order). An exception in
    a call is raised here, for the first failing call in ``args`` order.
    """
    if workers <= 1 or len(args) <= 1:
        out = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if on_done is not None:
                on_done(i)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(args)), mp_context=ctx) as pool:
        futures = [pool.submit(fn, *a) for a in args]
        if on_done is not None:
            index = {f: i for i, f in enumerate(futures)}
            for f in as_completed(futures):
                on_done(index[f])
        return [f.result() for f in futures]
