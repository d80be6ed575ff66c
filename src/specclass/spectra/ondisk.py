"""Dataset files larger than memory: read rows on demand, write rows in chunks.

The file layout is that of :mod:`specclass.spectra.dataset` (``/flux``, ``/ivar``
chunked ``(rows, L)`` and gzip-compressed, ``/labels``, ``/loglam``, ``/meta/<col>``,
JSON attributes). Two additions, both readable by older code paths through
:meth:`SpectralDataset.load <specclass.spectra.dataset.SpectralDataset.load>`:

* ``/flux`` and ``/ivar`` may be stored as float16 (``attrs['storage_dtype'] =
  'float16'``): half the disk and half the bytes to read, with 11 significant bits
  (relative error <= 2**-11 = 4.9e-4, far below the noise of any spectrum; values up
  to 65504, checked on writing). Readers always hand out native float32.
* :class:`DatasetWriter` fills a file chunk by chunk, so a writer never holds more
  than one chunk of spectra.

:class:`OnDiskDataset` holds the small columns (labels, metadata: a few bytes per
row) in memory and reads ``flux``/``ivar`` rows only when indexed, one HDF5 chunk
at a time through a chunk cache of :data:`CHUNK_CACHE_BYTES`; its ``flux`` and
``ivar`` behave like ``(N, L)`` float32 arrays for indexing (int, slice, integer
array, boolean mask), so code written for :class:`SpectralDataset` (``flux[rows]``,
``flux.shape``) runs on it unchanged, with memory bounded by what it indexes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from specclass.atomic import atomic_path, json_default
from specclass.spectra.dataset import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_COLUMNS,
    SPLIT_CODES,
    DatasetFormatError,
    SpectralDataset,
    _meta_for_disk,
    empty_column,
    empty_meta,
)

#: Rows per HDF5 chunk of ``/flux`` and ``/ivar`` (as :meth:`SpectralDataset.save`).
CHUNK_ROWS = 256
#: HDF5 chunk cache per open dataset: 16 chunks of 256 rows x 3,800 float32 pixels.
CHUNK_CACHE_BYTES = 64 * 1024**2
#: Largest finite float16 (IEEE 754 binary16).
FLOAT16_MAX = float(np.finfo(np.float16).max)
STORAGE_DTYPES = ("float32", "float16")
#: ``/flux`` and ``/ivar`` storage: 'gzip' (level 4 + byte shuffle; about 20 % smaller for float32
#: spectra) or 'none' (read back at memory-copy speed: streamed training on few cores is not held
#: up by decompression; README "Survey scale").
COMPRESSIONS = ("gzip", "none")


# --------------------------------------------------------------------------- reading
def read_rows(h5ds: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a 2-D HDF5 dataset as a native float32 ``(len(rows), L)`` array.

    Rows may come in any order and repeat; the file is read one HDF5 chunk at a
    time (one slab per chunk touched), never row by row.

    Args:
        h5ds: an open ``h5py.Dataset`` of shape ``(N, L)``.
        rows: ``(k,)`` int row numbers in ``[0, N)``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.size, h5ds.shape[1]), dtype=np.float32)
    if rows.size == 0:
        return out
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    chunk = (h5ds.chunks or (max(1, h5ds.shape[0]),))[0]
    groups = np.flatnonzero(np.diff(srt // chunk)) + 1
    for part, pos in zip(np.split(srt, groups), np.split(order, groups)):
        lo = int(part[0])
        slab = h5ds[lo : int(part[-1]) + 1]
        out[pos] = slab[part - lo]
    return out


class LazyMeta(MutableMapping):
    """The ``/meta`` columns of a dataset file, each read when first used.

    A mapping of column name -> ``(N,)`` array like ``SpectralDataset.meta``, but a column
    is read from the file (and kept) only when asked for, so a training run that uses
    ``split`` and the labels does not hold every string column of a million-row file
    (measured: 637 MB of metadata for 1,000,000 simulated spectra, README "Survey scale").
    Views (:meth:`view`) index the columns they read with their rows. Columns the file
    lacks get :func:`~specclass.spectra.dataset.empty_meta`'s fill values; assigned
    columns replace the file's.
    """

    def __init__(self, group: Any, n: int, rows: np.ndarray | None = None) -> None:
        self._group, self._n, self._rows = group, int(n), rows
        self._cache: dict[str, np.ndarray] = {}
        self._keys = list(dict.fromkeys([*META_COLUMNS, *group.keys()]))

    def _read(self, key: str) -> np.ndarray:
        if key in self._group:
            d = self._group[key]
            v = d.asstr()[...].astype(str) if d.dtype.kind in "OS" else d[...]
        else:
            v = empty_column(key, self._n)
        return v if self._rows is None else v[self._rows]

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            if key not in self._keys:
                raise KeyError(key)
            self._cache[key] = self._read(key)
        return self._cache[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key not in self._keys:
            self._keys.append(key)
        self._cache[key] = value

    def __delitem__(self, key: str) -> None:
        self._keys.remove(key)
        self._cache.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def view(self, index: np.ndarray | slice) -> "LazyMeta":
        """The rows ``index`` of this table, still lazy (columns already read are indexed now)."""
        n_here = self._n if self._rows is None else self._rows.size
        local = np.atleast_1d(np.arange(n_here, dtype=np.int64)[index])
        out = LazyMeta(self._group, self._n, local if self._rows is None else self._rows[local])
        out._keys = list(self._keys)
        out._cache = {k: v[index] for k, v in self._cache.items()}
        return out


class LazyRows:
    """An ``(N, L)`` float32 array-like over rows of an HDF5 dataset, read when indexed.

    ``rows`` maps this view's row ``i`` to the file's row ``rows[i]`` (``None``: all
    rows in file order). Indexing with an int, slice, integer array or boolean mask
    (first axis only, or ``[rows, cols]``) returns a NumPy float32 array;
    ``np.asarray(lazy)`` reads every row (only for small views).
    """

    def __init__(self, h5ds: Any, rows: np.ndarray | None = None) -> None:
        self._ds = h5ds
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        n = self._ds.shape[0] if self._rows is None else self._rows.size
        return int(n), int(self._ds.shape[1])

    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def file_rows(self, key: Any = slice(None)) -> np.ndarray:
        """The file's row numbers behind ``self[key]`` (``(k,)`` int64)."""
        base = np.arange(self._ds.shape[0]) if self._rows is None else self._rows
        picked = base[key]
        return np.atleast_1d(np.asarray(picked, dtype=np.int64))

    def __getitem__(self, key: Any) -> np.ndarray:
        cols = None
        if isinstance(key, tuple):
            key, cols = key[0], key[1:]
        scalar = isinstance(key, (int, np.integer))
        out = read_rows(self._ds, self.file_rows(key))
        if scalar:
            out = out[0]
            return out[cols] if cols else out
        return out[(slice(None), *cols)] if cols else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class OnDiskDataset:
    """A dataset file opened for row-wise reading (the spectra stay on disk).

    Has the attributes of :class:`~specclass.spectra.dataset.SpectralDataset`:
    ``flux``/``ivar`` (:class:`LazyRows`, ``(N, L)`` float32 on indexing),
    ``labels`` ``(N,)`` int32, ``class_names``, ``loglam`` ``(L,)`` float64,
    ``meta`` (dict of ``(N,)`` arrays), ``attrs``; and ``split``/``subset``, which
    return views without reading spectra. ``rows`` are the file rows of this view.
    Use as a context manager, or :meth:`close` it.

    Raises:
        FileNotFoundError, DatasetFormatError: as :meth:`SpectralDataset.load`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such dataset file")
        try:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
        except OSError as exc:
            raise DatasetFormatError(f"{self.path}: not a readable specclass dataset ({exc})") from exc
        try:
            h5 = self._h5
            attrs = {k: json.loads(v) for k, v in h5.attrs.items()}
            if attrs.get("format") != FORMAT_NAME:
                raise DatasetFormatError(
                    f"{self.path}: attribute 'format' is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
            if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
                raise DatasetFormatError(f"{self.path}: format_version {attrs['format_version']} is newer than "
                                         f"this specclass reads ({FORMAT_VERSION})")
            self.class_names = [str(c) for c in attrs.pop("class_names")]
            self.attrs = attrs
            self.labels = np.ascontiguousarray(h5["labels"][...], dtype=np.int32)
            self.loglam = np.ascontiguousarray(h5["loglam"][...], dtype=np.float64)
            n = self.labels.size
            self.meta = LazyMeta(h5["meta"], n)
            fl, iv = h5["flux"], h5["ivar"]
            if fl.ndim != 2 or iv.shape != fl.shape or fl.shape[0] != n or fl.shape[1] != self.loglam.size:
                raise DatasetFormatError(f"{self.path}: flux {fl.shape}, ivar {iv.shape}, labels ({n},) and "
                                         f"loglam {self.loglam.shape} do not agree")
            self._flux_ds, self._ivar_ds = fl, iv
        except (KeyError, ValueError) as exc:
            self._h5.close()
            if isinstance(exc, DatasetFormatError):
                raise
            raise DatasetFormatError(f"{self.path}: not a readable specclass dataset ({exc})") from exc
        self.rows = np.arange(n, dtype=np.int64)
        self.flux = LazyRows(fl)
        self.ivar = LazyRows(iv)

    # ------------------------------------------------------------ views
    def subset(self, index: np.ndarray | slice) -> "OnDiskDataset":
        """Rows ``index`` (boolean mask, integer array or slice) as a view sharing the open file."""
        view = object.__new__(OnDiskDataset)
        view.path, view._h5 = self.path, self._h5
        view._flux_ds, view._ivar_ds = self._flux_ds, self._ivar_ds
        view.class_names, view.attrs, view.loglam = list(self.class_names), dict(self.attrs), self.loglam
        view.rows = np.atleast_1d(self.rows[index])
        view.labels = self.labels[index]
        view.meta = self.meta.view(index)
        view.flux, view.ivar = LazyRows(self._flux_ds, view.rows), LazyRows(self._ivar_ds, view.rows)
        return view

    def split(self, name: str) -> "OnDiskDataset":
        """The rows of split ``name`` ('train', 'val' or 'test').

        Raises:
            ValueError: if ``name`` is not a split name.
        """
        if name not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {name!r}")
        return self.subset(np.asarray(self.meta["split"]) == SPLIT_CODES[name])

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def wavelength(self) -> np.ndarray:
        """``(L,)`` float64 vacuum wavelength in Å."""
        return np.power(10.0, self.loglam)

    @property
    def chunk_rows(self) -> int:
        """Rows per HDF5 chunk of ``/flux`` (the unit of reading)."""
        return int((self._flux_ds.chunks or (max(1, self._flux_ds.shape[0]),))[0])

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(flux, ivar)`` float32 ``(k, L)`` of this view's rows ``rows``."""
        file_rows = self.rows[np.asarray(rows, dtype=np.int64)]
        return read_rows(self._flux_ds, file_rows), read_rows(self._ivar_ds, file_rows)

    def to_memory(self) -> SpectralDataset:
        """This view as an in-memory :class:`SpectralDataset` (reads every row)."""
        flux, ivar = self.read(np.arange(len(self)))
        return SpectralDataset(flux=flux, ivar=ivar, labels=self.labels, class_names=self.class_names,
                               loglam=self.loglam, meta=dict(self.meta), attrs=dict(self.attrs))

    def close(self) -> None:
        """Close the file (views of it become unusable)."""
        self._h5.close()

    def __enter__(self) -> "OnDiskDataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_dataset(path: str | os.PathLike, lazy: bool = True) -> "SpectralDataset | OnDiskDataset":
    """Open a dataset file: ``.h5`` lazily (:class:`OnDiskDataset`), ``.npz`` (one
    compressed archive, not row-addressable) or ``lazy=False`` fully in memory."""
    path = Path(path)
    if lazy and path.suffix != ".npz":
        return OnDiskDataset(path)
    return SpectralDataset.load(path)


def array_bytes(path: str | os.PathLike) -> int:
    """Bytes that ``flux`` + ``ivar`` of a dataset file take in memory as float32.

    Raises:
        FileNotFoundError, DatasetFormatError: as :meth:`SpectralDataset.peek`.
    """
    n, attrs = SpectralDataset.peek(path)
    grid = attrs.get("grid") or {}
    npix = int(grid.get("npix", 0)) if isinstance(grid, dict) else 0
    if not npix:
        import h5py

        with h5py.File(path, "r") as h5:
            npix = int(h5["flux"].shape[1])
    return 2 * 4 * n * npix


# --------------------------------------------------------------------------- writing
class DatasetWriter:
    """Write a dataset file of ``n`` rows chunk by chunk (atomically: a temporary file
    renamed on :meth:`close` after :meth:`finish`; removed if anything fails).

    Usage::

        with DatasetWriter(path, n, loglam, storage_dtype="float16") as w:
            for start, flux, ivar in chunks:
                w.write(start, flux, ivar)
            w.finish(labels, class_names, meta, attrs)

    Args:
        path: the ``.h5`` file to write.
        n: rows. loglam: ``(L,)`` float64 grid.
        storage_dtype: ``"float32"`` (default) or ``"float16"`` for ``/flux`` and ``/ivar``.
        chunk_rows: rows per HDF5 chunk.
        compression: :data:`COMPRESSIONS`, for ``/flux`` and ``/ivar``.

    Raises:
        ValueError: bad ``storage_dtype`` or ``compression``, a ``.npz`` path, rows out of range, values
            too large for float16 (names the array and the largest value).
    """

    def __init__(self, path: str | os.PathLike, n: int, loglam: np.ndarray, *,
                 storage_dtype: str = "float32", chunk_rows: int = CHUNK_ROWS, compression: str = "gzip") -> None:
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.compression = compression
        self.path = Path(path)
        if self.path.suffix == ".npz":
            raise ValueError(f"{self.path}: chunked writing needs an HDF5 file (.h5), not .npz")
        self.n, self.loglam = int(n), np.asarray(loglam, dtype=np.float64)
        self.storage_dtype, self.chunk_rows = storage_dtype, int(chunk_rows)
        self._stack = contextlib.ExitStack()
        self._h5: Any = None
        self._finished = False

    def __enter__(self) -> "DatasetWriter":
        import h5py

        tmp = self._stack.enter_context(atomic_path(self.path))
        self._h5 = self._stack.enter_context(h5py.File(tmp, "w"))
        npix = self.loglam.size
        kw: dict[str, Any] = dict(compression="gzip", compression_opts=4, shuffle=True) if self.compression == "gzip" else {}
        chunks = (min(self.n, self.chunk_rows), npix) if self.n else None
        for name in ("flux", "ivar"):
            self._h5.create_dataset(name, shape=(self.n, npix), dtype=self.storage_dtype, chunks=chunks, **kw)
        return self

    def write(self, start: int, flux: np.ndarray, ivar: np.ndarray) -> None:
        """Rows ``start .. start + len(flux)`` (``(k, L)`` each; float32 or anything castable)."""
        flux, ivar = np.asarray(flux), np.asarray(ivar)
        if flux.shape != ivar.shape or flux.ndim != 2 or flux.shape[1] != self.loglam.size:
            raise ValueError(f"{self.path}: flux {flux.shape} and ivar {ivar.shape} must be (k, {self.loglam.size})")
        if start < 0 or start + flux.shape[0] > self.n:
            raise ValueError(f"{self.path}: rows {start}..{start + flux.shape[0]} outside 0..{self.n}")
        for name, arr in (("flux", flux), ("ivar", ivar)):
            if self.storage_dtype == "float16":
                big = float(np.nanmax(np.abs(arr), initial=0.0, where=np.isfinite(arr)))
                if big > FLOAT16_MAX:
                    raise ValueError(f"{self.path}: {name} reaches {big:.4g}, more than float16 holds "
                                     f"({FLOAT16_MAX:.0f}); store as float32")
            self._h5[name][start : start + arr.shape[0]] = arr.astype(self.storage_dtype, copy=False)

    def finish(self, labels: np.ndarray, class_names: list[str], meta: dict[str, np.ndarray],
               attrs: dict[str, Any]) -> None:
        """Write labels, grid, metadata and attributes (as :meth:`SpectralDataset.save`)."""
        import h5py

        labels = np.ascontiguousarray(labels, dtype=np.int32)
        if labels.shape != (self.n,):
            raise ValueError(f"{self.path}: labels has shape {labels.shape}, expected ({self.n},)")
        h5 = self._h5
        h5.create_dataset("labels", data=labels)
        h5.create_dataset("loglam", data=self.loglam)
        g = h5.create_group("meta")
        full = empty_meta(self.n)
        full.update(meta)
        for k, v in full.items():
            v = _meta_for_disk(v)
            if v.shape != (self.n,):
                raise ValueError(f"{self.path}: meta column {k!r} has shape {v.shape}, expected ({self.n},)")
            if v.dtype.kind == "U":
                g.create_dataset(k, data=np.char.encode(v, "utf-8"), dtype=h5py.string_dtype("utf-8"))
            else:
                g.create_dataset(k, data=v)
        attrs = dict(attrs)
        attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, class_names=[str(c) for c in class_names])
        if self.storage_dtype != "float32":
            attrs["storage_dtype"] = self.storage_dtype
        for k, v in attrs.items():
            h5.attrs[k] = json.dumps(v, default=json_default)
        self._finished = True

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and not self._finished:
            exc = RuntimeError(f"{self.path}: DatasetWriter closed before finish(); file not written")
            exc_type, tb = RuntimeError, None
        if exc_type is None:
            self._stack.close()  # closes the HDF5 file, then renames it into place
            return
        try:
            self._stack.__exit__(exc_type, exc, tb)  # closes and removes the temporary file
        finally:
            if exc_type is RuntimeError and not self._finished:
                raise exc


def write_rows_in_order(path: str | os.PathLike, flux: np.ndarray, ivar: np.ndarray, order: np.ndarray,
                        labels: np.ndarray, class_names: list[str], loglam: np.ndarray,
                        meta: dict[str, np.ndarray], attrs: dict[str, Any], *,
                        storage_dtype: str = "float32", chunk_rows: int = CHUNK_ROWS,
                        compression: str = "gzip") -> Path:
    """Write ``flux[order]``, ``ivar[order]`` chunk by chunk (``flux``/``ivar`` may be memory maps).

    Row ``j`` of the file is row ``order[j]`` of the inputs, exactly as
    ``SpectralDataset(flux=flux[order], ...).save(path)`` would write it, but only
    ``chunk_rows`` rows are gathered at a time. ``labels`` and ``meta`` are in file
    order already.

    Returns:
        The path written.
    """
    order = np.asarray(order, dtype=np.int64)
    with DatasetWriter(path, order.size, loglam, storage_dtype=storage_dtype, chunk_rows=chunk_rows,
                       compression=compression) as w:
        for start in range(0, order.size, chunk_rows):
            rows = order[start : start + chunk_rows]
            w.write(start, flux[rows], ivar[rows])
        w.finish(labels, class_names, meta, attrs)
    return Path(path)

