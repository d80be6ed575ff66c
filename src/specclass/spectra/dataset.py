"""The dataset file: gridded spectra, labels and a metadata table, in one HDF5 file.

Layout of a ``.h5`` dataset file (format version 1; no pickled objects anywhere)::

    /flux         (N, L) float32   flux on the common grid, 1e-17 erg/s/cm²/Å
    /ivar         (N, L) float32   inverse variance on the grid; 0 = no data (masked)
    /labels       (N,)   int32     index into class_names; -1 = no label
    /loglam       (L,)   float64   grid, log10 vacuum Å
    /meta/<col>   (N,)             one dataset per metadata column (see META_COLUMNS)
    attrs: format="specclass-dataset", format_version=1, class_names (JSON list),
           label_scheme, grid (JSON: loglam_min, loglam_step, npix), created_by,
           build_report (JSON), and any user attrs.

The ``.npz`` variant (``save(..., path.npz)``) holds the same arrays under the same
names (``meta/<col>`` keys) plus ``attrs`` as a JSON string, and is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specclass.atomic import atomic_path, json_default

FORMAT_NAME = "specclass-dataset"
FORMAT_VERSION = 1

#: Metadata columns every dataset carries, with their dtype and fill value.
#: ``source`` is one of 'fits', 'text', 'simulated', 'other-survey'.
#: ``object_id`` groups repeat observations of one object (splits never cut a group).
#: ``split`` is 0 = train, 1 = validation, 2 = test, -1 = unassigned.
META_COLUMNS: dict[str, tuple[str, Any]] = {
    "file": ("U", ""),
    "plate": ("int32", -1),
    "mjd": ("int32", -1),
    "fiberid": ("int32", -1),
    "class": ("U", ""),
    "subclass": ("U", ""),
    "z": ("float32", np.nan),
    "zwarning": ("int32", -1),
    "run2d": ("U", ""),
    "ra": ("float64", np.nan),
    "dec": ("float64", np.nan),
    "survey": ("U", ""),
    "format": ("U", ""),
    "source": ("U", ""),
    "object_id": ("U", ""),
    "split": ("int8", -1),
}

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class DatasetFormatError(ValueError):
    """A dataset file is not a specclass dataset, or is damaged (message names the file)."""


class DatasetLockedError(DatasetFormatError):
    """The HDF5 file is locked by another process (a subclass of :class:`DatasetFormatError`,
    so existing handlers keep working)."""


def _unreadable(path: Path, exc: Exception) -> DatasetFormatError:
    """The error for a dataset file h5py/numpy could not open.

    HDF5 (1.10+) locks a file it opens (``flock``); opening a file another process
    holds for writing fails with ``errno 11`` "unable to lock file". That is not a
    damaged dataset: say so, and how to proceed (HDF5 docs, "File locking":
    ``HDF5_USE_FILE_LOCKING=FALSE`` turns the lock off).
    """
    text = str(exc)
    if isinstance(exc, BlockingIOError) or "unable to lock file" in text:
        return DatasetLockedError(
            f"{path}: the HDF5 file is locked by another process (one that has it open for writing: a "
            "running 'specclass build-dataset' or 'train', a notebook, HDFView). Wait for it to finish or close "
            "it; if nothing holds it (a writer that crashed, or a file system without locks such as some NFS "
            f"or Lustre mounts), run again with HDF5_USE_FILE_LOCKING=FALSE in the environment [{text}]"
        )
    return DatasetFormatError(f"{path}: not a readable specclass dataset ({exc})")


def empty_column(name: str, n: int) -> np.ndarray:
    """Column ``name`` of :data:`META_COLUMNS` as ``n`` rows of its fill value."""
    dtype, fill = META_COLUMNS[name]
    if dtype == "U":
        return np.full(n, fill, dtype=object).astype(str)
    return np.full(n, fill, dtype=dtype)


def empty_meta(n: int) -> dict[str, np.ndarray]:
    """Return a metadata table of ``n`` rows filled with each column's fill value."""
    return {name: empty_column(name, n) for name in META_COLUMNS}


@dataclass
class SpectralDataset:
    """Gridded spectra with labels and metadata.

    Attributes:
        flux: ``(N, L)`` float32, flux on the common grid (1e-17 erg/s/cm²/Å).
        ivar: ``(N, L)`` float32, inverse variance; 0 where a pixel is masked or
            outside the spectrum's coverage.
        labels: ``(N,)`` int32 index into ``class_names`` (-1 = unlabelled).
        class_names: the classes, in the fixed order used by models and reports.
        loglam: ``(L,)`` float64 grid, log10 vacuum Å.
        meta: dict of ``(N,)`` arrays, keys :data:`META_COLUMNS` (plus any extra).
        attrs: JSON-serialisable file attributes (label_scheme, grid, build_report, ...).

    Raises:
        ValueError: if shapes disagree.
    """

    flux: np.ndarray
    ivar: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    loglam: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.flux = np.ascontiguousarray(self.flux, dtype=np.float32)
        self.ivar = np.ascontiguousarray(self.ivar, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int32)
        self.loglam = np.ascontiguousarray(self.loglam, dtype=np.float64)
        self.class_names = [str(c) for c in self.class_names]
        n = self.flux.shape[0] if self.flux.ndim == 2 else -1
        if self.flux.ndim != 2 or self.ivar.shape != self.flux.shape:
            raise ValueError(f"flux {self.flux.shape} and ivar {self.ivar.shape} must both be (N, L)")
        if self.labels.shape != (n,):
            raise ValueError(f"labels has shape {self.labels.shape}, expected ({n},)")
        if self.loglam.shape != (self.flux.shape[1],):
            raise ValueError(f"loglam has shape {self.loglam.shape}, expected ({self.flux.shape[1]},)")
        full = empty_meta(n)
        for key, col in self.meta.items():
            col = np.asarray(col)
            if col.shape != (n,):
                raise ValueError(f"meta column {key!r} has shape {col.shape}, expected ({n},)")
            full[key] = col
        self.meta = full

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    @property
    def wavelength(self) -> np.ndarray:
        """``(L,)`` float64 vacuum wavelength in Å."""
        return np.power(10.0, self.loglam)

    def subset(self, index: np.ndarray | slice) -> "SpectralDataset":
        """Rows ``index`` (boolean mask, integer array or slice) as a new dataset."""
        return SpectralDataset(
            flux=self.flux[index],
            ivar=self.ivar[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            loglam=self.loglam,
            meta={k: v[index] for k, v in self.meta.items()},
            attrs=dict(self.attrs),
        )

    def split(self, name: str) -> "SpectralDataset":
        """The rows of split ``name`` ('train', 'val' or 'test').

        Raises:
            ValueError: if ``name`` is not a split name.
        """
        if name not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {name!r}")
        return self.subset(self.meta["split"] == SPLIT_CODES[name])

    @classmethod
    def concatenate(cls, datasets: "list[SpectralDataset]", class_names: list[str] | None = None) -> "SpectralDataset":
        """Stack datasets that share one grid into one (rows in the given order).

        Labels are re-indexed by class *name* into ``class_names`` (default: the
        union of the inputs' class names, sorted), so inputs may list their
        classes in different orders. Metadata columns are the union; a column
        missing from one input takes its fill value there. ``attrs`` come from
        the first input.

        Raises:
            ValueError: no input, grids that differ, or a class missing from
                ``class_names`` (names it).
        """
        if not datasets:
            raise ValueError("concatenate: no datasets given")
        loglam = datasets[0].loglam
        for d in datasets[1:]:
            if d.loglam.shape != loglam.shape or not np.allclose(d.loglam, loglam, rtol=0, atol=1e-9):
                raise ValueError("concatenate: datasets are on different grids")
        names = class_names or sorted({c for d in datasets for c in d.class_names})
        index = {c: i for i, c in enumerate(names)}
        labels = []
        for d in datasets:
            missing = [c for c in d.class_names if c not in index]
            if missing:
                raise ValueError(f"concatenate: classes {missing} not in class_names {names}")
            lut = np.array([index[c] for c in d.class_names] + [-1], dtype=np.int32)
            labels.append(lut[np.where(d.labels < 0, len(d.class_names), d.labels)])
        keys = list(dict.fromkeys(k for d in datasets for k in d.meta))
        n = [len(d) for d in datasets]
        meta = {}
        for k in keys:
            like = next(np.asarray(d.meta[k]) for d in datasets if k in d.meta)
            fill = {"U": "", "S": "", "O": "", "f": np.nan, "b": False}.get(like.dtype.kind, -1)
            parts = [np.asarray(d.meta[k]) if k in d.meta else np.full(m, fill, dtype=like.dtype)
                     for d, m in zip(datasets, n)]
            meta[k] = np.concatenate(parts)
        return cls(
            flux=np.concatenate([d.flux for d in datasets]),
            ivar=np.concatenate([d.ivar for d in datasets]),
            labels=np.concatenate(labels),
            class_names=names,
            loglam=loglam,
            meta=meta,
            attrs=dict(datasets[0].attrs),
        )

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset atomically (temp file then rename) as ``.h5`` or ``.npz``.

        Returns:
            The path written.
        """
        path = Path(path)
        attrs = dict(self.attrs)
        attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, class_names=self.class_names)
        with atomic_path(path) as tmp:
            if path.suffix == ".npz":
                arrays = {"flux": self.flux, "ivar": self.ivar, "labels": self.labels, "loglam": self.loglam}
                for k, v in self.meta.items():
                    arrays[f"meta/{k}"] = _meta_for_disk(v)
                arrays["attrs"] = np.array(json.dumps(attrs, default=json_default))
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **arrays)
            else:
                import h5py

                with h5py.File(tmp, "w") as h5:
                    kw = dict(compression="gzip", compression_opts=4, shuffle=True)
                    chunks = (min(len(self), 256), self.flux.shape[1]) if len(self) else None
                    h5.create_dataset("flux", data=self.flux, chunks=chunks, **kw)
                    h5.create_dataset("ivar", data=self.ivar, chunks=chunks, **kw)
                    h5.create_dataset("labels", data=self.labels)
                    h5.create_dataset("loglam", data=self.loglam)
                    g = h5.create_group("meta")
                    for k, v in self.meta.items():
                        v = _meta_for_disk(v)
                        if v.dtype.kind == "U":
                            g.create_dataset(k, data=np.char.encode(v, "utf-8"), dtype=h5py.string_dtype("utf-8"))
                        else:
                            g.create_dataset(k, data=v)
                    for k, v in attrs.items():
                        h5.attrs[k] = json.dumps(v, default=json_default)
        return path

    @staticmethod
    def peek(path: str | os.PathLike) -> tuple[int, dict[str, Any]]:
        """Number of rows and the attributes (incl. ``class_names``) of a dataset file,
        without reading flux/ivar (e.g. to size a merge before loading shards).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            DatasetFormatError: if it is not a specclass dataset.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such dataset file")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    attrs = json.loads(str(z["attrs"]))
                    n = int(z["labels"].shape[0])
            else:
                import h5py

                with h5py.File(path, "r") as h5:
                    attrs = {k: json.loads(v) for k, v in h5.attrs.items()}
                    n = int(h5["labels"].shape[0])
        except (OSError, KeyError, ValueError) as exc:
            raise _unreadable(path, exc) from exc
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{path}: attribute 'format' is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
        return n, attrs

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SpectralDataset":
        """Read a dataset written by :meth:`save` (``.h5`` or ``.npz``), without pickle.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            DatasetFormatError: if it is not a specclass dataset (names the file and why).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such dataset file")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    attrs = json.loads(str(z["attrs"]))
                    meta = {k[5:]: z[k] for k in z.files if k.startswith("meta/")}
                    flux, ivar, labels, loglam = z["flux"], z["ivar"], z["labels"], z["loglam"]
            else:
                import h5py

                with h5py.File(path, "r") as h5:
                    attrs = {k: json.loads(v) for k, v in h5.attrs.items()}
                    flux, ivar = h5["flux"][...], h5["ivar"][...]
                    labels, loglam = h5["labels"][...], h5["loglam"][...]
                    meta = {}
                    for k, d in h5["meta"].items():
                        v = d[...]
                        meta[k] = d.asstr()[...].astype(str) if v.dtype.kind in "OS" else v
        except (OSError, KeyError, ValueError) as exc:
            raise _unreadable(path, exc) from exc
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{path}: attribute 'format' is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise DatasetFormatError(
                f"{path}: format_version {attrs['format_version']} is newer than this specclass reads ({FORMAT_VERSION})"
            )
        class_names = attrs.pop("class_names")
        return cls(flux=flux, ivar=ivar, labels=labels, class_names=class_names, loglam=loglam, meta=meta, attrs=attrs)

    def export_npy(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write the seed tutorial's triple: ``data.npy`` (N, L) float32 flux,
        ``labels.npy`` (N,) int32, ``wavelengths.npy`` (L,) float64 Å.

        Returns:
            ``{"data": path, "labels": path, "wavelengths": path}``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, arr in (("data", self.flux), ("labels", self.labels), ("wavelengths", self.wavelength)):
            target = directory / f"{name}.npy"
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            out[name] = target
        return out


def _meta_for_disk(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind in "OSU":
        return v.astype(str)
    return v
