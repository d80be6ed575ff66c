"""``predict`` on many files: blocks of the input list in parallel processes or SLURM array tasks.

The inputs are expanded exactly as :func:`specclass.predict.predict_files` expands
them (:func:`predict_inputs`) and cut into contiguous blocks
(:func:`specclass.spectra.build.shard_slice`). Each block is classified by
:func:`~specclass.predict.predict_files`; the blocks' classified rows are joined in
block order, then their failures, which is the CSV one process writes
(:func:`specclass.predict.write_predictions_csv`: classified rows first, then one
row per failure). Spectra are classified independently, so the probabilities do
not depend on how the files are cut.

* ``predict --workers N``: :func:`predict_files_parallel` (processes on one machine);
* ``slurm predict-array``: :func:`predict_shard` per array task writes one CSV per
  shard, :func:`merge_prediction_csvs` (the ``afterok`` merge job) joins them.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from specclass import persistence


#: Fewer files than this per process are classified in fewer processes (each one
#: starts a Python with Keras and loads the model: seconds, worth it for many files).
MIN_FILES_PER_WORKER = 64


def predict_inputs(paths_or_dirs: str | os.PathLike | Iterable[str | os.PathLike],
                   skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The spectrum files ``predict_files`` classifies, in its order (a file named and
    also inside a given folder once); ``skipped`` receives the non-spectrum files left out."""
    from specclass.io import find_spectrum_files

    unique: dict[Path, Path] = {}
    for f in find_spectrum_files(paths_or_dirs, skipped=skipped):
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _predict_block(run_dir: str, files: list[Path], kwargs: dict[str, Any]) -> tuple[list, list]:
    from specclass.predict import predict_files

    if not files:
        return [], []
    return predict_files(run_dir, files, out=None, **kwargs)


def predict_files_parallel(
    run: str | os.PathLike | persistence.LoadedRun,
    paths_or_dirs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    workers: int,
    out: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """:func:`~specclass.predict.predict_files` with ``workers`` processes (same rows, same order).

    Each process loads the run folder once and classifies one contiguous block of
    the inputs; at most one process per :data:`MIN_FILES_PER_WORKER` files.
    ``workers=1`` is ``predict_files`` itself.

    Args:
        run: run folder or loaded run.
        paths_or_dirs: files and/or folders.
        workers: processes (>= 1).
        out: the CSV, written atomically once all blocks are done.
        kwargs: other ``predict_files`` arguments (``batch_size``, ``fmt``,
            ``calibrate``, ``uncertain_below``, ...).

    Returns:
        ``(rows, failures)`` as ``predict_files``.
    """
    from specclass.parallel import blocks, map_in_order
    from specclass.predict import predict_files, write_predictions_csv

    skipped = kwargs.pop("skipped", None)
    files = predict_inputs(paths_or_dirs, skipped=skipped)
    workers = min(workers, -(-len(files) // MIN_FILES_PER_WORKER))
    # exported models (numpy / ONNX, issue 13) are run in this process
    run_dir = Path(run) if isinstance(run, (str, os.PathLike)) else Path(str(getattr(run, "run_dir", "")))
    if workers <= 1 or not isinstance(run, (str, os.PathLike, persistence.LoadedRun)) or not run_dir.is_dir():
        return predict_files(run, paths_or_dirs, out=out, skipped=None if skipped is None else [], **kwargs)
    if not isinstance(run, persistence.LoadedRun):
        run = persistence.load_run(run, fmt=kwargs.get("fmt", "keras"), compile=False)
    kwargs = dict(kwargs, progress=False)
    results = map_in_order(_predict_block, [(str(run.run_dir), b, kwargs) for b in blocks(files, workers)],
                           workers)
    rows = [r for part, _ in results for r in part]
    failures = [f for _, part in results for f in part]
    if out is not None:
        write_predictions_csv(out, rows, failures, run.preprocessor.class_names)
    return rows, failures


def predict_shard(run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], index: int, n_shards: int,
                  out: str | os.PathLike, **kwargs: Any) -> tuple[list, list]:
    """Classify block ``index`` of ``n_shards`` of the inputs into the CSV ``out`` (one array task)."""
    from specclass.predict import predict_files, write_predictions_csv
    from specclass.spectra.build import shard_slice

    files = predict_inputs(inputs)
    block = files[shard_slice(len(files), index, n_shards)]
    if block:
        return predict_files(run_dir, block, out=out, **kwargs)
    run = persistence.load_run(run_dir, fmt=kwargs.get("fmt", "keras"), compile=False)
    write_predictions_csv(out, [], [], run.preprocessor.class_names)
    return [], []


def merge_prediction_csvs(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> tuple[int, int]:
    """Join shard CSVs (in the given order) into ``out``: every classified row, then every failure.

    Rows are copied as text, so the result is byte for byte the CSV one process writes.

    Returns:
        ``(classified rows, failures)`` written.

    Raises:
        FileNotFoundError: a part is missing (names it).
        ValueError: parts with different columns (names the file).
    """
    header = None
    rows: list[str] = []
    failures: list[str] = []
    for part in parts:
        part = Path(part)
        if not part.is_file():
            raise FileNotFoundError(f"{part}: prediction shard missing")
        text = part.read_text(encoding="utf-8")
        lines = re.findall(r"[^\n]*\n|[^\n]+$", text)  # split on \n only, as the CSV writer ends rows
        if not lines:
            raise ValueError(f"{part}: empty prediction shard (no header)")
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise ValueError(f"{part}: columns differ from the first shard's ({lines[0].strip()!r})")
        at = next(csv.reader([header])).index("predicted_class")
        reader = csv.reader(lines[1:])
        done = 0
        for record in reader:  # a quoted field may span lines: copy each record's own lines
            raw = "".join(lines[1 + done : 1 + reader.line_num])
            done = reader.line_num
            (rows if record[at] else failures).append(raw)  # a failure has no predicted class
    persistence.write_text_atomic(out, (header or "") + "".join(rows) + "".join(failures))
    return len(rows), len(failures)

