"""``build-dataset --workers N``: read and grid contiguous blocks of the file list in parallel.

Each process runs :func:`specclass.spectra.build.build_rows` on one block of the
sorted file list; the blocks are joined in order with the cross-block duplicate
check of :func:`~specclass.spectra.build.merge_datasets` (a PLATE-MJD-FIBERID kept in
an earlier block wins, as in one pass over the sorted list). The dataset is the
one :func:`~specclass.spectra.build.build_rows` makes in one process; the skipped
list is ordered by file as a single pass lists it (for a file holding several
spectra, that file's cross-block duplicates come after its other skips).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from specclass.spectra import zwarning as zw
from specclass.spectra.build import BuildError, BuildReport, Skipped, build_rows, cross_part_duplicates
from specclass.spectra.dataset import SpectralDataset
from specclass.spectra.labels import get_scheme

#: Blocks per worker: smaller blocks balance uneven files and tick the progress bar more often.
BLOCKS_PER_WORKER = 4
#: Fewer files than this per process run in fewer processes (starting one costs about a second).
MIN_FILES_PER_WORKER = 32


def _build_block(files: list[str], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """One block in a worker: ``(dataset, report)``, or ``(None, (path, reason))`` for a strict stop
    (a :class:`BuildError` is rebuilt in the parent: its constructor takes two arguments)."""
    try:
        return build_rows(files, **kwargs)
    except BuildError as exc:
        return None, (exc.path, exc.reason)


def build_rows_parallel(files: Sequence[str], workers: int, *,
                        progress: bool | Callable[[int], None] = False, **kwargs: Any
                        ) -> tuple[SpectralDataset, BuildReport]:
    """:func:`~specclass.spectra.build.build_rows` over ``files`` in ``workers`` processes.

    Args:
        files: the sorted file list (as :func:`~specclass.spectra.build.list_files`).
        workers: processes (>= 1).
        progress: a tqdm bar (True) or ``progress(n_files_done)``, ticked per finished block.
        kwargs: the other :func:`~specclass.spectra.build.build_rows` arguments.

    Returns:
        ``(dataset, report)`` equal to ``build_rows(files, **kwargs)``.

    Raises:
        BuildError: with ``strict=True``, the first bad file in file order.
    """
    from specclass.parallel import blocks, map_in_order

    workers = max(1, min(workers, -(-len(files) // MIN_FILES_PER_WORKER)))
    parts = blocks(list(files), workers * BLOCKS_PER_WORKER) if files else [[]]
    bar, tick = None, progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc="build-dataset")
        tick = bar.update
    try:
        results = map_in_order(_build_block, [(p, dict(kwargs, progress=False)) for p in parts], workers,
                               on_done=None if tick is None else (lambda i: tick(len(parts[i]))))
    finally:
        if bar is not None:
            bar.close()
    for ds, rep in results:
        if ds is None:
            raise BuildError(*rep)
    return _join(results, {f: i for i, f in enumerate(files)})


def _join(results: list[tuple[SpectralDataset, BuildReport]], file_index: dict[str, int]
          ) -> tuple[SpectralDataset, BuildReport]:
    """Blocks in order -> one dataset and report, as one pass over all files makes them."""
    first_report = results[0][1]
    scheme = get_scheme(first_report.settings["label_scheme"])
    dedupe = bool(first_report.settings.get("dedupe", False))
    kept_keys: dict[str, str] = {}
    duplicates: list[Skipped] = []
    keeps = []
    for ds, _ in results:
        # each block is free of duplicates; look across blocks
        keep = cross_part_duplicates(ds, kept_keys, duplicates) if dedupe else np.ones(len(ds), dtype=bool)
        keeps.append(keep)
    names = [ds.class_names[i] for (ds, _), keep in zip(results, keeps) for i in ds.labels[keep].tolist()]
    class_names = scheme.class_names_for(names)
    index = {c: i for i, c in enumerate(class_names)}
    meta_keys = list(results[0][0].meta)
    merged = SpectralDataset(
        flux=np.concatenate([ds.flux[keep] for (ds, _), keep in zip(results, keeps)]),
        ivar=np.concatenate([ds.ivar[keep] for (ds, _), keep in zip(results, keeps)]),
        labels=np.array([index[x] for x in names], dtype=np.int32),
        class_names=class_names,
        loglam=results[0][0].loglam,
        meta={k: np.concatenate([ds.meta[k][keep] for (ds, _), keep in zip(results, keeps)]) for k in meta_keys},
        attrs=dict(results[0][0].attrs),
    )
    report = BuildReport(settings=dict(first_report.settings))
    removals: Counter[str] = Counter()
    skipped: list[Skipped] = []
    for _, rep in results:
        report.n_files += rep.n_files
        report.n_spectra += rep.n_spectra
        removals.update(rep.zwarning_removals)
        skipped.extend(rep.skipped)
    skipped.extend(duplicates)
    report.skipped = sorted(skipped, key=lambda s: file_index.get(s.file, len(file_index)))  # stable
    order = {n: i for i, n in enumerate(zw.ZWARNING_BITS.values())}
    report.zwarning_removals = dict(sorted(removals.items(), key=lambda kv: (order.get(kv[0], 100), kv[0])))
    report.n_kept = len(merged)
    return merged, report
