"""Write a simulation straight to a dataset file, without holding the spectra in memory.

:meth:`Simulator.run <specclass.simulate.simulator.Simulator.run>` draws every
spectrum from one sequential random stream and then shuffles the rows. To write a
file chunk by chunk with **the same bytes** as the in-memory path, the spectra go,
in generation order, to a :class:`RowStore`: an unnamed scratch file beside the
output (deleted when closed, never mapped into memory). The shuffled rows are then
gathered from it one HDF5 chunk at a time
(:func:`specclass.spectra.ondisk.write_rows_in_order`). Memory: one chunk of rows
plus the metadata columns (a few hundred bytes per spectrum); disk: the scratch
file (8 bytes per pixel per spectrum) until the output is complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class RowStore:
    """A write-once ``(n, L)`` float32 array kept in a scratch file instead of memory.

    ``store[i] = row`` writes row ``i`` (``(L,)``, cast to float32);
    ``store[rows]`` reads rows (int array, any order) back as ``(k, L)`` float32.

    Args:
        n, npix: shape.
        folder: where the scratch file lives (the output's folder: same disk).
    """

    def __init__(self, n: int, npix: int, folder: str | os.PathLike) -> None:
        self.shape = (int(n), int(npix))
        self._row_bytes = 4 * int(npix)
        self._fh = tempfile.TemporaryFile(dir=folder, prefix=".specclass-simulate-")
        self._fh.truncate(self._row_bytes * int(n))

    def __setitem__(self, i: int, row: np.ndarray) -> None:
        data = np.ascontiguousarray(row, dtype=np.float32)
        if data.shape != (self.shape[1],):
            raise ValueError(f"row has shape {data.shape}, expected ({self.shape[1]},)")
        os.pwrite(self._fh.fileno(), data.tobytes(), int(i) * self._row_bytes)

    def __getitem__(self, rows: Any) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        out = np.empty((rows.size, self.shape[1]), dtype=np.float32)
        fd = self._fh.fileno()
        for k, r in enumerate(rows):
            out[k] = np.frombuffer(os.pread(fd, self._row_bytes, int(r) * self._row_bytes), dtype=np.float32)
        return out

    def close(self) -> None:
        """Delete the scratch file."""
        self._fh.close()


def row_stores(n: int, npix: int, out: str | os.PathLike | None) -> tuple[Any, Any]:
    """``(flux, ivar)`` stores for ``n`` spectra: NumPy arrays in memory when ``out``
    is None, else two :class:`RowStore` scratch files in ``out``'s folder."""
    if out is None:
        return np.zeros((n, npix), np.float32), np.zeros((n, npix), np.float32)
    folder = Path(out).parent
    folder.mkdir(parents=True, exist_ok=True)
    return RowStore(n, npix, folder), RowStore(n, npix, folder)


def write_simulation(out: str | os.PathLike, flux: Any, ivar: Any, order: np.ndarray, labels: np.ndarray,
                     class_names: list[str], loglam: np.ndarray, meta: dict[str, np.ndarray],
                     attrs: dict[str, Any], storage_dtype: str = "float32", compression: str = "gzip") -> Path:
    """Write the shuffled simulation (``flux[order]``, ...) to ``out`` chunk by chunk and
    delete the scratch stores. Returns the path written."""
    from specclass.spectra.ondisk import write_rows_in_order

    try:
        return write_rows_in_order(out, flux, ivar, order, labels, class_names, loglam, meta, attrs,
                                   storage_dtype=storage_dtype, compression=compression)
    finally:
        for store in (flux, ivar):
            if isinstance(store, RowStore):
                store.close()
