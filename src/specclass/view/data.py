"""What the viewer page shows: gridded spectra, class probabilities and identity, in one table.

:class:`ViewerData` is the one input of :func:`specclass.view.page.render_viewer`;
the loaders fill it from the three places predictions come from:

* :func:`from_dataset` - a run folder and a dataset file (the rows of one split),
  classified with :func:`specclass.predict.predict_dataset`;
* :func:`from_files` - a run folder and spectrum files or folders, classified with
  :func:`specclass.predict.predict_files`; each spectrum is shown on the run's grid,
  as the model saw it (:meth:`specclass.preprocessing.Preprocessor.grid_spectrum`);
* :func:`from_predictions_csv` - a ``predictions.csv`` from ``specclass predict``
  and the spectra it names (its own ``file`` column, given files, or a dataset).

:func:`encode_spectra` packs the spectra compactly for the page: ``bin`` pixels
merged into one (inverse-variance-weighted mean, ivar summed: the rule of
:mod:`specclass.spectra.grid` for aligned pixels), flux stored as int16 on an
``asinh`` scale and sigma as uint8 on a log scale, so flux precision is relative
(~3e-4 of the value) whatever the spectrum's brightness or spikes.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Metadata columns of :class:`ViewerData` (all ``(N,)``), with their fill value.
META_FIELDS: dict[str, Any] = {
    "name": "",  # PLATE-MJD-FIBERID, or the file name
    "file": "",
    "pipeline": "",  # pipeline class in the model's class names ('' = unknown)
    "subclass": "",  # pipeline SUBCLASS
    "z": np.nan,  # pipeline redshift
    "zwarning": -1,
    "source": "",  # dataset 'source' column, or the file format / folder
}

#: Agreement values of the ``agreement`` column.
AGREE, DISAGREE, NO_LABEL = "agree", "disagree", "no pipeline class"

_INT16_MAX = 32767
_UINT8_MAX = 255


@dataclass
class ViewerData:
    """Spectra on one log-lambda grid with their class probabilities and identity.

    Attributes:
        loglam: ``(L,)`` float64, log10 vacuum Å, uniform and increasing.
        flux: ``(N, L)`` float32, 1e-17 erg/s/cm²/Å.
        ivar: ``(N, L)`` float32, inverse variance of ``flux``; 0 = masked / no data.
        proba: ``(N, C)`` float32 class probabilities (rows sum to 1).
        class_names: the ``C`` class names in the model's order.
        meta: ``(N,)`` arrays, keys :data:`META_FIELDS` (missing keys are filled).
        uncertain_below: a spectrum is *uncertain* when its top probability is below this.
        title: page title.

    Derived (set by the constructor): ``predicted`` ``(N,)`` str, ``probability``
    ``(N,)`` float, ``uncertain`` ``(N,)`` bool, ``agreement`` ``(N,)`` str
    (:data:`AGREE`, :data:`DISAGREE` or :data:`NO_LABEL`).

    Raises:
        ValueError: shapes that disagree (names the array), a non-uniform grid,
            or ``proba`` with other than ``len(class_names)`` columns.
    """

    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    proba: np.ndarray
    class_names: list[str]
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    uncertain_below: float = 0.5
    title: str = "specclass viewer"

    def __post_init__(self) -> None:
        self.loglam = np.asarray(self.loglam, dtype=np.float64)
        self.flux = np.asarray(self.flux, dtype=np.float32)
        self.ivar = np.asarray(self.ivar, dtype=np.float32)
        self.proba = np.asarray(self.proba, dtype=np.float32)
        self.class_names = [str(c) for c in self.class_names]
        n, length = self.flux.shape if self.flux.ndim == 2 else (-1, -1)
        if self.flux.ndim != 2 or self.ivar.shape != self.flux.shape:
            raise ValueError(f"flux {self.flux.shape} and ivar {self.ivar.shape} must both be (N, L)")
        if self.loglam.shape != (length,) or length < 2 or not np.allclose(
                np.diff(self.loglam), self.loglam[1] - self.loglam[0], rtol=1e-3, atol=1e-9) \
                or self.loglam[1] <= self.loglam[0]:
            raise ValueError(f"loglam {self.loglam.shape} must be a uniform increasing grid of {length} pixels")
        if self.proba.shape != (n, len(self.class_names)):
            raise ValueError(f"proba has shape {self.proba.shape}, expected ({n}, {len(self.class_names)}) "
                             f"for classes {self.class_names}")
        meta = {}
        for key, fill in META_FIELDS.items():
            col = self.meta.get(key)
            col = np.full(n, fill, dtype=object) if col is None else np.asarray(col)
            if col.shape != (n,):
                raise ValueError(f"meta column {key!r} has shape {col.shape}, expected ({n},)")
            if isinstance(fill, str):
                meta[key] = col.astype(str)
            else:
                meta[key] = col.astype(np.int64 if isinstance(fill, int) else np.float64)
        self.meta = meta
        k = self.proba.argmax(axis=1) if n else np.zeros(0, dtype=int)
        names = np.array(self.class_names, dtype=object)
        self.predicted = names[k].astype(str) if n else np.zeros(0, dtype=str)
        self.probability = self.proba[np.arange(n), k].astype(np.float64)
        self.uncertain = self.probability < float(self.uncertain_below)
        pipe = meta["pipeline"]
        self.agreement = np.where(pipe == "", NO_LABEL, np.where(pipe == self.predicted, AGREE, DISAGREE))

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    def subset(self, index: Sequence[int] | np.ndarray) -> "ViewerData":
        """The rows ``index`` (int positions, in that order) as a new :class:`ViewerData`."""
        idx = np.asarray(index, dtype=np.int64)
        return ViewerData(self.loglam, self.flux[idx], self.ivar[idx], self.proba[idx], self.class_names,
                          {k: v[idx] for k, v in self.meta.items()}, self.uncertain_below, self.title)

    def by_confidence(self) -> "ViewerData":
        """Rows sorted by decreasing top probability (ties keep their order)."""
        return self.subset(np.argsort(-self.probability, kind="stable"))


# --------------------------------------------------------------------------- encoding
def bin_pixels(loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, factor: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge ``factor`` neighbouring pixels into one.

    Flux is the inverse-variance-weighted mean, ivar the sum (the rule of
    :func:`specclass.spectra.grid.rebin` for pixels merged on an aligned grid);
    a merged pixel with no good input has flux 0 and ivar 0 (masked). Trailing
    pixels that do not fill a whole bin are dropped.

    Args:
        loglam: ``(L,)`` float64 log10 Å.
        flux, ivar: ``(N, L)`` float32.
        factor: pixels per bin (>= 1).

    Returns:
        ``(loglam, flux, ivar)``: ``(L // factor,)`` float64 bin centres and
        ``(N, L // factor)`` float32 arrays.

    Raises:
        ValueError: ``factor < 1`` or more than ``L``.
    """
    if factor < 1 or factor > loglam.size:
        raise ValueError(f"bin factor {factor}: must be 1 .. {loglam.size} (pixels in the grid)")
    if factor == 1:
        return loglam, flux.astype(np.float32), ivar.astype(np.float32)
    m = loglam.size // factor * factor
    w = np.where(ivar[:, :m] > 0, ivar[:, :m], 0).astype(np.float64).reshape(len(flux), -1, factor)
    f = np.nan_to_num(flux[:, :m].astype(np.float64)).reshape(w.shape)
    wsum = w.sum(axis=2)
    out = np.divide((w * f).sum(axis=2), wsum, out=np.zeros_like(wsum), where=wsum > 0)
    return loglam[:m].reshape(-1, factor).mean(axis=1), out.astype(np.float32), wsum.astype(np.float32)


def encode_spectra(flux: np.ndarray, ivar: np.ndarray) -> dict[str, Any]:
    """Pack spectra as int16 codes plus four numbers per spectrum.

    Flux: ``q = round(asinh(flux / a) / k)`` with ``a`` the spectrum's median
    sigma (linear within the noise, logarithmic beyond) and ``k`` chosen so the
    largest ``|flux|`` maps to 32767; decoded as ``a * sinh(q * k)``.
    Sigma (``1 / sqrt(ivar)``) as uint8: ``q = 1 + round(ln(sigma / smin) / sk)``
    (1 .. 255), decoded as ``smin * exp((q - 1) * sk)``; ``q = 0`` marks a pixel
    with ``ivar <= 0`` (masked). Its relative step is ``(smax / smin) ** (1 / 254)``
    (2.8 % for a 1000-fold range), plenty for drawing a 1σ band.

    Args:
        flux, ivar: ``(N, L)`` float32.

    Returns:
        ``{"flux": [(L,) int16, ...], "sigma": [(L,) uint8, ...], "fa", "fk",
        "smin", "sk": (N,) float64}``.
    """
    n = flux.shape[0]
    out: dict[str, Any] = {"flux": [], "sigma": [], "fa": np.ones(n), "fk": np.ones(n),
                           "smin": np.ones(n), "sk": np.zeros(n)}
    for i in range(n):
        good = (ivar[i] > 0) & np.isfinite(ivar[i]) & np.isfinite(flux[i])
        f = np.where(np.isfinite(flux[i]), flux[i], 0.0).astype(np.float64)
        sigma = np.zeros(f.shape)
        sigma[good] = 1.0 / np.sqrt(ivar[i][good].astype(np.float64))
        a = float(np.median(sigma[good])) if good.any() else float(np.std(f) or 1.0)
        a = a if a > 0 else 1.0
        top = float(np.arcsinh(np.abs(f).max() / a)) if f.size else 0.0
        k = top / _INT16_MAX if top > 0 else 1.0
        out["flux"].append(np.round(np.arcsinh(f / a) / k).astype(np.int16))
        out["fa"][i], out["fk"][i] = a, k
        q = np.zeros(f.shape, dtype=np.uint8)
        if good.any():
            smin, smax = float(sigma[good].min()), float(sigma[good].max())
            sk = np.log(smax / smin) / (_UINT8_MAX - 1) if smax > smin else 0.0
            q[good] = 1 + (np.round(np.log(sigma[good] / smin) / sk) if sk else 0)
            out["smin"][i], out["sk"][i] = smin, sk
        out["sigma"].append(q)
    return out


def decode_spectra(packed: dict[str, Any], i: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_spectra` for row ``i`` (what the page computes): ``(flux, sigma)``,
    ``(L,)`` float64 each, sigma NaN where masked."""
    q = np.asarray(packed["flux"][i], dtype=np.float64)
    flux = packed["fa"][i] * np.sinh(q * packed["fk"][i])
    s = np.asarray(packed["sigma"][i], dtype=np.float64)
    sigma = np.where(s > 0, packed["smin"][i] * np.exp((s - 1) * packed["sk"][i]), np.nan)
    return flux, sigma


# --------------------------------------------------------------------------- loaders
def pipeline_labels(classes: Iterable[Any], subclasses: Iterable[Any], class_names: Sequence[str]) -> list[str]:
    """Pipeline CLASS/SUBCLASS in the model's class names, '' where unknown.

    The label scheme is the one whose classes are ``class_names``
    (:mod:`specclass.spectra.labels`: ``seed4`` for AGN/GALAXY/QSO/STAR, ``class3``
    for GALAXY/QSO/STAR); any other model gets the upper-cased CLASS itself.
    """
    from specclass.spectra.labels import get_scheme, normalize

    scheme = {frozenset(("AGN", "GALAXY", "QSO", "STAR")): "seed4",
              frozenset(("GALAXY", "QSO", "STAR")): "class3"}.get(frozenset(class_names))
    sch = get_scheme(scheme) if scheme else None
    out = []
    for c, s in zip(classes, subclasses):
        c, s = normalize(c), normalize(s)
        if not c:
            out.append("")
        elif sch is None:
            out.append(c)
        else:
            label, _ = sch(c, s)
            out.append(label or "")
    return out


def _name(plate: int, mjd: int, fiberid: int, file: str, targetid: int = -1, row: int = -1) -> str:
    """A spectrum's name in the viewer: PLATE-MJD-FIBERID, else ``TARGETID n`` (DESI), else the
    file name, with ``[row]`` for one spectrum of a multi-spectrum file (a DESI coadd, a MaStar
    table), so the spectra of one file stay apart ("" when nothing is known)."""
    if plate >= 0 and mjd >= 0 and fiberid >= 0:
        return f"{plate:04d}-{mjd:05d}-{fiberid:04d}"
    if targetid >= 0:
        return f"TARGETID {targetid}"
    if not file:
        return ""
    return Path(file).name + (f" [{row}]" if row >= 0 else "")


def _meta_ints(meta: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    """Integer column ``key`` of dataset metadata, or ``n`` times -1 (datasets made before it existed)."""
    return np.asarray(meta[key], dtype=np.int64) if key in meta else np.full(n, -1, dtype=np.int64)


def from_dataset(run: Any, dataset: Any, split: str | None = "test", *, calibrate: bool = True,
                 uncertain_below: float = 0.5) -> ViewerData:
    """Classify one split of a dataset with a run folder and collect it for the viewer.

    Args:
        run: run folder or :class:`specclass.persistence.LoadedRun`.
        dataset: :class:`specclass.spectra.dataset.SpectralDataset` or its file.
        split: ``"train"``, ``"val"``, ``"test"``, or None / ``"all"`` (every row).
        calibrate, uncertain_below: as :func:`specclass.predict.predict_dataset`.

    Raises:
        ValueError: the split is empty or the dataset's grid differs from the run's.
    """
    from specclass.predict import predict_dataset
    from specclass.spectra.dataset import SpectralDataset

    name = str(dataset)
    if not isinstance(dataset, SpectralDataset):
        dataset = SpectralDataset.load(dataset)
    data = dataset if split in (None, "all") else dataset.split(split)
    if len(data) == 0:
        raise ValueError(f"dataset {name}: split {split!r} has no rows")
    rows = predict_dataset(run, data, calibrate=calibrate, uncertain_below=uncertain_below)
    class_names = [c[2:] for c in rows[0] if c.startswith("p_")]
    proba = np.array([[r[f"p_{c}"] for c in class_names] for r in rows], dtype=np.float32)
    return from_dataset_rows(data, proba, class_names, uncertain_below=uncertain_below)


def from_dataset_rows(dataset: Any, proba: np.ndarray, class_names: Sequence[str],
                      index: Sequence[int] | np.ndarray | None = None, *,
                      uncertain_below: float = 0.5, title: str = "specclass viewer") -> ViewerData:
    """Rows of a dataset with probabilities already computed (what ``evaluate`` has in hand).

    Args:
        dataset: :class:`specclass.spectra.dataset.SpectralDataset` (``N`` rows).
        proba: ``(N, C)`` class probabilities of its rows, columns in ``class_names`` order.
        class_names: the model's classes (the dataset's labels are taken as the pipeline class).
        index: the rows to keep (default all).
        uncertain_below, title: as :class:`ViewerData`.
    """
    idx = np.arange(len(dataset)) if index is None else np.asarray(index, dtype=np.int64)
    meta = {k: np.asarray(v)[idx] for k, v in dataset.meta.items()}
    labels = np.asarray(dataset.labels)[idx]
    names = list(dataset.class_names)
    return ViewerData(
        dataset.loglam, dataset.flux[idx], dataset.ivar[idx], np.asarray(proba)[idx], list(class_names),
        {
            "name": [_name(int(p), int(m), int(f), str(fl), int(t), int(r)) for p, m, f, fl, t, r in
                     zip(meta["plate"], meta["mjd"], meta["fiberid"], meta["file"],
                         _meta_ints(meta, "targetid", len(idx)), _meta_ints(meta, "row", len(idx)))],
            "file": meta["file"],
            "pipeline": [names[k] if k >= 0 else "" for k in labels],
            "subclass": meta["subclass"],
            "z": meta["z"],
            "zwarning": meta["zwarning"],
            "source": meta["source"],
        },
        uncertain_below, title,
    )


def _read_gridded(path: str, row: Any, preprocessor: Any) -> tuple[np.ndarray, np.ndarray]:
    from specclass.io import read_spectrum

    r = None if row in ("", None) else int(row)
    return preprocessor.grid_spectrum(read_spectrum(path, row=r))


def from_files(run: Any, paths: Iterable[str | os.PathLike], *, calibrate: bool = True,
               uncertain_below: float = 0.5) -> ViewerData:
    """Classify spectrum files with a run folder and collect them, on the run's grid, for the viewer.

    Unreadable files (the failures of :func:`specclass.predict.predict_files`) are
    logged and left out.

    Raises:
        ValueError: no file could be classified (names how many failed).
    """
    from specclass import persistence
    from specclass.predict import predict_files

    if not isinstance(run, persistence.LoadedRun):
        run = persistence.load_run(run, compile=False)
    rows, failures = predict_files(run, paths, calibrate=calibrate, uncertain_below=uncertain_below)
    for fail in failures:
        log.warning("not shown: %s: %s", fail["file"], fail["reason"])
    if not rows:
        raise ValueError(f"no spectrum could be classified ({len(failures)} failed; first: "
                         f"{failures[0]['file'] + ': ' + failures[0]['reason'] if failures else 'no files found'})")
    pre = run.preprocessor
    grids = [_read_gridded(r["file"], r["row"], pre) for r in rows]
    return _from_rows(rows, pre.class_names, pre.loglam, np.stack([g[0] for g in grids]),
                      np.stack([g[1] for g in grids]), uncertain_below, pipeline_from_file=True)


def _num(v: Any, fill: float) -> float:
    """``float(v)``, or ``fill`` for an empty / non-numeric / non-finite cell."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return fill
    return x if np.isfinite(x) else fill


def _int(v: Any, fill: int = -1) -> int:
    """``int(v)`` read exactly (a DESI TARGETID has 17 digits, beyond float64), or ``fill`` for an empty cell."""
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return int(_num(v, fill))


def _row_name(r: dict[str, Any]) -> str:
    return _name(int(_num(r.get("plate"), -1)), int(_num(r.get("mjd"), -1)), int(_num(r.get("fiberid"), -1)),
                 str(r["file"]), _int(r.get("targetid")), _int(r.get("row")))


def _from_rows(rows: Sequence[dict[str, Any]], class_names: Sequence[str], loglam: np.ndarray, flux: np.ndarray,
               ivar: np.ndarray, uncertain_below: float, *, pipeline_from_file: bool) -> ViewerData:
    pipeline = (pipeline_labels([r.get("file_class", "") for r in rows], [r.get("file_subclass", "") for r in rows],
                                class_names) if pipeline_from_file else [r.get("file_class", "") for r in rows])
    return ViewerData(
        loglam, flux, ivar, [[_num(r[f"p_{c}"], 0.0) for c in class_names] for r in rows], list(class_names),
        {
            "name": [_row_name(r) for r in rows],
            "file": [str(r["file"]) for r in rows],
            "pipeline": pipeline,
            "subclass": [str(r.get("file_subclass") or "") for r in rows],
            "z": [_num(r.get("z"), np.nan) for r in rows],
            "zwarning": [int(_num(r.get("zwarning"), -1)) for r in rows],
            "source": [Path(str(r["file"])).parent.name for r in rows],
        },
        uncertain_below,
    )


def read_predictions_csv(path: str | os.PathLike) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a ``predictions.csv`` (:func:`specclass.predict.write_predictions_csv`) and its class names.

    Failure rows (no ``predicted_class``) are dropped.

    Raises:
        ValueError: the file has no ``file``/``predicted_class`` column or no ``p_<CLASS>`` column
            (names the file).
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        class_names = [c[2:] for c in columns if c.startswith("p_")]
        if "file" not in columns or "predicted_class" not in columns or not class_names:
            raise ValueError(f"{path}: not a specclass predictions file (needs columns file, predicted_class and "
                             f"p_<CLASS>; has {', '.join(columns) or 'none'})")
        rows = [r for r in reader if r.get("predicted_class")]
    return rows, class_names


def from_predictions_csv(path: str | os.PathLike, spectra: Sequence[str | os.PathLike] = (), *,
                         uncertain_below: float = 0.5) -> ViewerData:
    """Collect a ``predictions.csv`` and its spectra for the viewer (no model is run).

    Args:
        path: CSV written by ``specclass predict``.
        spectra: where the spectra are: nothing (the CSV's ``file`` column, as
            written or relative to the CSV's folder), spectrum files / folders
            (matched by file name), or one dataset file (``.h5``/``.npz``, rows
            matched by PLATE-MJD-FIBERID or DESI TARGETID, else by file name
            and row). Files are put on the
            default grid (:data:`specclass.spectra.grid.DEFAULT_GRID`), a dataset's
            rows stay on the dataset's grid.
        uncertain_below: threshold of the uncertain flag.

    Raises:
        ValueError: not a predictions file, or no row's spectrum was found.
    """
    rows, class_names = read_predictions_csv(path)
    if not rows:
        raise ValueError(f"{path}: no classified row")
    spectra = [Path(s) for s in spectra]
    if len(spectra) == 1 and spectra[0].suffix.lower() in (".h5", ".hdf5", ".npz"):
        return _csv_with_dataset(rows, class_names, spectra[0], uncertain_below)
    from specclass.io import find_spectrum_files, read_spectrum
    from specclass.spectra.grid import DEFAULT_GRID, rebin

    by_name: dict[str, Path] = {p.name: p for p in find_spectrum_files(spectra)} if spectra else {}
    here = Path(path).parent
    kept, fluxes, ivars = [], [], []
    for r in rows:
        f = Path(r["file"])
        candidates = [by_name.get(f.name)] if spectra else [f, here / f, here / f.name]
        found = next((c for c in candidates if c is not None and c.is_file()), None)
        if found is None:
            log.warning("not shown: %s: spectrum file not found", r["file"])
            continue
        spec = read_spectrum(found, row=None if r.get("row") in ("", None) else int(r["row"]))
        flux, ivar = rebin(spec, DEFAULT_GRID)
        kept.append(r)
        fluxes.append(flux)
        ivars.append(ivar)
    if not kept:
        raise ValueError(f"{path}: none of the {len(rows)} spectrum files it names was found"
                         + ("" if spectra else " (give the files or folders after the CSV)"))
    return _from_rows(kept, class_names, DEFAULT_GRID.loglam, np.stack(fluxes), np.stack(ivars), uncertain_below,
                      pipeline_from_file=True)


def _csv_with_dataset(rows: list[dict[str, str]], class_names: list[str], path: Path,
                      uncertain_below: float) -> ViewerData:
    from specclass.spectra.dataset import SpectralDataset

    ds = SpectralDataset.load(path)
    meta = ds.meta
    index: dict[str, int] = {}
    targetid, table_row = _meta_ints(meta, "targetid", len(ds)), _meta_ints(meta, "row", len(ds))
    for i in range(len(ds)):
        file = str(meta["file"][i])
        index.setdefault(_name(int(meta["plate"][i]), int(meta["mjd"][i]), int(meta["fiberid"][i]), "",
                               int(targetid[i])), i)
        # the file name identifies a spectrum only in a one-spectrum file; else the name and its [row]
        index.setdefault(_name(-1, -1, -1, file, -1, int(table_row[i])), i)
    index.pop("", None)
    kept, rows_idx = [], []
    for r in rows:
        by_file = _name(-1, -1, -1, str(r["file"]), -1, _int(r.get("row")))
        i = index.get(_row_name(r), index.get(by_file))
        if i is None:
            log.warning("not shown: %s: not in %s", r["file"], path)
            continue
        kept.append(r)
        rows_idx.append(i)
    if not kept:
        raise ValueError(f"{path}: none of the {len(rows)} predicted spectra is in this dataset "
                         "(matched by PLATE-MJD-FIBERID, TARGETID, and file name with row)")
    return _from_rows(kept, class_names, ds.loglam, ds.flux[rows_idx], ds.ivar[rows_idx], uncertain_below,
                      pipeline_from_file=True)
