"""Classify spectra with a saved run folder: raw files (any format the readers know) or a dataset.

The run's own preprocessing (``preprocessing.json``: grid, masked SPPIXMASK bits,
normalisation, class names) is re-applied, so a FITS file and the same spectrum's
row in a dataset built on that grid get the same probabilities.

Output rows (dicts; :func:`write_predictions_csv` writes them in this column order)::

    file, row, plate, mjd, fiberid, targetid, file_class, file_subclass, z, zwarning,
    predicted_class, probability, uncertain, p_<CLASS> (one per class), reason

``file_class``/``file_subclass`` are the labels the file itself carries (or the
dataset row's class); ``targetid`` is the survey's own id where plate/mjd/fiberid do
not apply (DESI ``TARGETID``), with ``row`` the spectrum's index in a multi-spectrum
file; ``probability`` is that of ``predicted_class``; ``reason`` is empty
for a classified spectrum and says why for one that could not be (unreadable
file, no good pixel on the model's grid).

Probabilities are **calibrated** by default: when the run folder has
``calibration.json`` (written by ``specclass train``), its temperature ``T`` is
applied (:func:`specclass.calibration.apply_temperature`); ``calibrate=False``
(``--no-calibration``) gives the network's raw softmax. A run folder without
``calibration.json`` (trained before it existed) predicts with ``T = 1`` and says so
once in the log. ``uncertain`` is 1 when ``probability`` is below ``uncertain_below``
(default :data:`specclass.calibration.DEFAULT_UNCERTAIN_BELOW` = 0.5: a calibrated
top probability under 0.5 means the predicted class is more likely wrong than
right), else 0. ``predicted_class`` stays the arg-max either way, so nothing is
lost: filter on ``uncertain`` to abstain.

**Runs with GALAXY and QSO or AGN (class3, seed4) on SDSS's 1e-4 dex pixels**: by default
the SDSS pipeline's own decisions are applied on top of the network
(:mod:`specclass.pipeline_rule`): for every spectrum the network puts in the galaxy or QSO
family, it becomes a STAR when the star templates fit better than the GALAXY and QSO
eigenspectra by the pipeline's SMALL_DELTA_CHI2 margin, else GALAXY vs QSO is decided by the
GALAXY/QSO fits when their chi2/dof differ by that margin, and (seed4) AGN vs GALAXY by the
SDSS BPT rule on the lines measured at the GALAXY redshift. An SDSS file is fitted on its own
pixels with the pipeline's masks (the grid row otherwise); those fits are the pipeline's own,
so the lower chi2/dof decides without the margin (:data:`specclass.pipeline_rule.EXACT_MARGIN`).
Three columns are added before
``reason`` (:data:`RULE_COLUMNS`): ``network_class`` (the network's own arg-max),
``template_class`` (STAR, GALAXY or QSO where the fits decided, else empty) and ``line_subclass``
(the measured SDSS SUBCLASS, empty where the lines were not measured).
``pipeline_rule=False`` (``--no-pipeline-rule``) keeps the network's probabilities.

Unknown values: in the row dicts they follow :class:`specclass.spectrum.SpectrumMeta`
(``z`` NaN, ``zwarning``/``plate``/``mjd``/``fiberid`` -1, strings empty); in the CSV
every unknown value is an **empty cell**, which ``astropy.table.Table.read(...,
format="ascii.csv")`` reads as a masked value and pandas as NaN (never a -1 that
looks like a real bit mask, nor a ``nan`` string in an integer column).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from specclass import persistence
from specclass.calibration import DEFAULT_UNCERTAIN_BELOW, check_threshold, apply_temperature
from specclass.preprocessing import Preprocessor

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from specclass.spectra.dataset import SpectralDataset

log = logging.getLogger(__name__)

#: Columns added when the pipeline rule applies (:func:`add_pipeline_rule`).
RULE_COLUMNS = ("network_class", "template_class", "line_subclass")
#: Columns added by ``predict --spectro1d`` (:func:`add_spectro1d`).
SPECTRO1D_COLUMNS = ("spectro1d_class", "spectro1d_subclass", "spectro1d_z", "spectro1d_rchi2diff", "spectro1d_label")

BASE_COLUMNS = ("file", "row", "plate", "mjd", "fiberid", "targetid", "file_class", "file_subclass", "z", "zwarning",
                "predicted_class", "probability", "uncertain")

#: Integer columns whose negative value means "unknown" (written as an empty CSV cell).
_UNKNOWN_IF_NEGATIVE = ("plate", "mjd", "fiberid", "targetid", "zwarning")

_said_uncalibrated: set[str] = set()


def _as_run(run: Any, fmt: str = "keras") -> persistence.LoadedRun:
    if isinstance(run, persistence.LoadedRun):
        return run
    return persistence.load_run(run, fmt=fmt, compile=False)


def predict_arrays(
    model: "keras.Model",
    preprocessor: Preprocessor,
    flux: np.ndarray,
    ivar: np.ndarray,
    *,
    batch_size: int = 256,
    chunk: int = 4096,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities for gridded spectra.

    Args:
        model: a model from :func:`specclass.persistence.load_run`.
        preprocessor: the run's :class:`~specclass.preprocessing.Preprocessor`.
        flux, ivar: ``(N, L)`` on the run's grid (arrays, or the
            :class:`~specclass.spectra.ondisk.LazyRows` of a dataset file).
        batch_size: ``model.predict`` batch size.
        chunk: spectra preprocessed at a time (bounds memory).
        temperature: ``T`` of :func:`specclass.calibration.apply_temperature`
            (default 1: the network's raw softmax; a run's own is ``run.temperature``).

    Returns:
        ``(N, n_classes)`` float32 probabilities, columns in ``preprocessor.class_names`` order.
    """
    from specclass.spectra.ondisk import LazyRows

    if not isinstance(flux, LazyRows):  # rows of a file stay there until their chunk is classified
        flux, ivar = np.asarray(flux), np.asarray(ivar)
    n_classes = len(preprocessor.class_names)
    out = np.zeros((flux.shape[0], n_classes), dtype=np.float32)
    for start in range(0, flux.shape[0], chunk):
        x = preprocessor.transform(flux[start : start + chunk], ivar[start : start + chunk])
        out[start : start + chunk] = _predict_full_batches(model, x, batch_size)
    return apply_temperature(out, temperature) if temperature != 1.0 else out


def _predict_full_batches(model: "keras.Model", x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict(x)`` with every batch exactly ``batch_size`` rows (the last one zero-padded).

    CPU kernels (oneDNN) choose their blocking by batch shape, so a spectrum's
    probabilities could change in the last digits with the size of the batch it
    landed in. With one batch shape, a spectrum gets the same numbers however the
    inputs are cut into chunks, worker blocks or SLURM shards.
    """
    n = x.shape[0]
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))[:n]


def run_temperature(run: persistence.LoadedRun, calibrate: bool = True) -> tuple[float, str]:
    """The temperature to apply for ``run`` and a few words on where it comes from.

    Args:
        run: a loaded run folder.
        calibrate: False: always ``T = 1`` (raw softmax).

    Returns:
        ``(T, description)``; a run folder without ``calibration.json`` gives
        ``T = 1`` (logged once per run folder). An ensemble
        (:class:`specclass.ensemble.EnsembleRun`) gives ``T = 1``: its model then
        combines the members' calibrated (or, ``calibrate=False``, raw) probabilities.
    """
    use_calibration = getattr(run, "use_calibration", None)
    if use_calibration is not None:  # an ensemble: each member applies its own T before the combination
        return use_calibration(calibrate)
    if not calibrate:
        return 1.0, "raw softmax (calibration off)"
    if run.calibration is None:
        key = str(run.run_dir)
        if key not in _said_uncalibrated:
            _said_uncalibrated.add(key)
            log.warning("%s has no calibration.json (trained before calibration existed): raw softmax "
                        "probabilities (T = 1)", run.run_dir)
        return 1.0, f"raw softmax: {run.run_dir} has no calibration.json (T = 1)"
    if not run.calibration.fitted and run.temperature == 1.0:  # e.g. a validation split it got entirely right
        why = run.calibration.reason or "no reason recorded"
        return 1.0, f"raw softmax: temperature not fitted ({why}; calibration.json, T = 1)"
    return run.temperature, f"temperature scaling, T = {run.temperature:.4g} (calibration.json)"


def _row(meta: dict[str, Any], proba: np.ndarray, class_names: Sequence[str],
         uncertain_below: float = DEFAULT_UNCERTAIN_BELOW) -> dict[str, Any]:
    k = int(np.argmax(proba))
    row = dict(meta)
    row["predicted_class"] = class_names[k]
    row["probability"] = float(proba[k])
    row["uncertain"] = int(float(proba[k]) < uncertain_below)
    for name, p in zip(class_names, proba):
        row[f"p_{name}"] = float(p)
    row["reason"] = ""
    return row


def predict_files(
    run_dir: str | os.PathLike | persistence.LoadedRun,
    paths_or_dirs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    batch_size: int = 256,
    fmt: str = "keras",
    min_good_pixels: int = 1,
    progress: bool = False,
    chunk: int = 2048,
    calibrate: bool = True,
    uncertain_below: float = DEFAULT_UNCERTAIN_BELOW,
    skipped: list[tuple[Path, str]] | None = None,
    spectro1d: bool = False,
    pipeline_rule: bool | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Classify spectrum files with a run folder.

    Args:
        run_dir: run folder (or an already loaded :class:`~specclass.persistence.LoadedRun`).
        paths_or_dirs: files and/or folders (searched recursively for spectrum
            files, see :func:`specclass.io.find_spectrum_files`).
        out: if given, the CSV written atomically (:func:`write_predictions_csv`),
            classified rows first, then one row per failure.
        batch_size: ``model.predict`` batch size.
        fmt: which model file of the run to load (``keras``, ``h5``, ``json``).
        min_good_pixels: spectra with fewer good pixels on the run's grid are
            reported as failures instead of being classified.
        progress: show a tqdm progress bar over files.
        chunk: spectra gridded and held in memory before they are classified.
        calibrate: apply the run's temperature (``calibration.json``; ``T = 1``
            without one); False: the network's raw softmax.
        uncertain_below: rows whose top probability is below this get
            ``uncertain = 1`` (in ``[0, 1]``; 0 flags nothing).
        skipped: if a list, receives ``(path, why)`` for each file in the folders
            that is obviously not a spectrum (``README.txt``, notes; see
            :func:`specclass.io.read.not_a_spectrum`); such files are never read.
        spectro1d: also run the emulated SDSS pipeline (:mod:`specclass.spectro1d`) on each
            gridded spectrum and add :data:`SPECTRO1D_COLUMNS` (its CLASS, SUBCLASS, Z,
            RCHI2DIFF and the label it implies in the run's classes); 0.03-0.3 s per spectrum.
        pipeline_rule: decide STAR and GALAXY vs QSO by template fits and AGN vs GALAXY by the
            measured lines (module docstring); None (default) = when the run's classes and grid
            allow it; 0.02-0.05 s per galaxy- or QSO-family spectrum.

    Returns:
        ``(rows, failures)``: one dict per spectrum classified (see module
        docstring), and ``{"file", "reason"}`` per spectrum that was not.

    Raises:
        specclass.persistence.RunFolderError: the run folder is incomplete.
        ValueError: ``uncertain_below`` outside ``[0, 1]``.
    """
    from specclass.io import find_spectrum_files, iter_spectra
    from specclass.spectro1d.templates import generation_of

    uncertain_below = check_threshold(uncertain_below)
    run = _as_run(run_dir, fmt)
    pre = run.preprocessor
    temperature, _ = run_temperature(run, calibrate)
    # a file named and also inside a given folder is classified once
    unique: dict[Path, Path] = {}
    for f in find_spectrum_files(paths_or_dirs, skipped=skipped):
        unique.setdefault(f.resolve(), f)
    files = list(unique.values())
    metas: list[dict[str, Any]] = []
    fluxes: list[np.ndarray] = []
    ivars: list[np.ndarray] = []
    gens: list[str] = []  # template generation of each buffered spectrum (for spectro1d)
    natives: list[Any] = []  # each buffered spectrum on its own pixels (the rule fits them where they are SDSS's)
    failures: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []

    def flush() -> None:  # classify what is buffered (bounded memory for many files)
        if metas:
            flux, ivar = np.stack(fluxes), np.stack(ivars)
            proba = predict_arrays(run.model, pre, flux, ivar, batch_size=batch_size, temperature=temperature)
            new = add_pipeline_rule(metas, proba, pre, flux, ivar, gens, pipeline_rule, uncertain_below, natives)
            if spectro1d:
                add_spectro1d(new, pre.loglam, flux, ivar, pre.class_names, gens, natives)
            rows.extend(new)
            gens.clear()
            natives.clear()
            metas.clear()
            fluxes.clear()
            ivars.clear()

    it: Iterable = iter_spectra(files)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(files), unit="spectrum", desc="predict")
    for path, spectrum, reason in it:
        if spectrum is None:
            failures.append({"file": path, "reason": reason or "unreadable"})
            continue
        row_no = spectrum.meta.extra.get("row")
        which = f"spectrum {row_no}: " if row_no is not None else ""  # one of several in the file
        try:
            flux, ivar = pre.grid_spectrum(spectrum)
        except ValueError as exc:
            failures.append({"file": path, "reason": f"{which}cannot be put on the model's grid: {exc}"})
            continue
        n_good = int(np.count_nonzero(ivar > 0))
        if n_good < min_good_pixels:
            lo, hi = 10 ** pre.loglam[0], 10 ** pre.loglam[-1]
            failures.append({"file": path, "reason": f"{which}{n_good} good pixels on the model's grid "
                             f"({lo:.0f}-{hi:.0f} Å); needs {min_good_pixels}"})
            continue
        m = spectrum.meta
        metas.append({
            "file": path,
            "row": m.extra.get("row", ""),
            "plate": m.plate,
            "mjd": m.mjd,
            "fiberid": m.fiberid,
            "targetid": m.extra.get("targetid", -1),
            "file_class": m.class_,
            "file_subclass": m.subclass,
            "z": m.z,
            "zwarning": m.zwarning,
        })
        fluxes.append(flux)
        ivars.append(ivar)
        gens.append(generation_of(m.run2d, m.survey))
        natives.append(spectrum)
        if len(metas) >= chunk:
            flush()
    flush()
    if out is not None:
        write_predictions_csv(out, rows, failures, pre.class_names)
    return rows, failures


def add_pipeline_rule(metas: list[dict[str, Any]], proba: np.ndarray, pre: Preprocessor, flux: Any, ivar: Any,
                      generation: Sequence[str] | str, pipeline_rule: bool | None,
                      uncertain_below: float = DEFAULT_UNCERTAIN_BELOW,
                      native: Sequence[Any | None] | None = None) -> list[dict[str, Any]]:
    """Output rows for ``metas`` from ``(N, C)`` probabilities, after the pipeline rule when it applies.

    With ``pipeline_rule`` True, or None and a run whose classes and grid allow it
    (:func:`specclass.pipeline_rule.applies`), :func:`specclass.pipeline_rule.apply_pipeline_rule`
    runs on the gridded ``(N, L)`` ``flux``/``ivar`` -- or, per row, on ``native`` (the spectrum on
    its own SDSS pixels, None where not) -- and the rows get :data:`RULE_COLUMNS`.

    Raises:
        ValueError: ``pipeline_rule`` is True and the run lacks GALAXY, or both QSO and AGN.
    """
    from specclass import pipeline_rule as rule

    names = pre.class_names
    if not rule.enabled(pipeline_rule, names, pre.loglam):
        return [_row(meta, p, names, uncertain_below) for meta, p in zip(metas, proba)]
    res = rule.apply_pipeline_rule(proba, names, pre.loglam, flux, ivar, generation, native=native)
    rows = []
    for i, meta in enumerate(metas):
        row = _row(meta, res.proba[i], names, uncertain_below)
        row["network_class"] = names[int(np.argmax(proba[i]))]
        row["template_class"] = str(res.template_class[i])
        row["line_subclass"] = str(res.subclass[i]) if res.measured[i] else ""
        rows.append(row)
    return rows


def add_spectro1d(rows: list[dict[str, Any]], loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                  class_names: list[str], generation: list[str] | str = "sdss",
                  native: Sequence[Any | None] | None = None) -> None:
    """Add the emulated SDSS pipeline's decision to prediction rows, in place.

    Args:
        rows: one row per spectrum (``_row`` output).
        loglam: ``(L,)`` the run's grid (uniform 1e-4 dex pixels).
        flux, ivar: ``(N, L)`` the gridded spectra of ``rows``.
        class_names: the run's classes; ``spectro1d_label`` maps the emulated CLASS/SUBCLASS
            into them with 'seed4' (4 classes with AGN) or 'class3' rules.
        generation: template generation per row ('sdss'/'boss', from each file's RUN2D and
            survey: :func:`specclass.spectro1d.templates.generation_of`) or one for all.
        native: optional, per row, the spectrum on its own SDSS pixels (or None): the emulator
            then runs on it with the pipeline's masks, as :func:`specclass.pipeline_rule.apply_pipeline_rule`.

    Raises:
        specclass.spectro1d.ScanError: the grid is not in uniform 1e-4 dex steps.
    """
    from specclass.pipeline_rule import fit_input
    from specclass.simulate.pipeline_labels import label_indices, label_prepared

    scheme_name = "seed4" if "AGN" in class_names else "class3"
    n = len(rows)
    gens = [generation] * n if isinstance(generation, str) else list(generation)
    natives = list(native) if native is not None else [None] * n
    lab = label_prepared((fit_input(loglam, flux[i], ivar[i], natives[i], gens[i]) for i in range(n)), gens,
                         lines=scheme_name == "seed4")
    idx = label_indices(lab, scheme_name, list(class_names))
    for i, row in enumerate(rows):
        row["spectro1d_class"], row["spectro1d_subclass"] = str(lab["class"][i]), str(lab["subclass"][i])
        row["spectro1d_z"] = float(lab["z"][i])
        row["spectro1d_rchi2diff"] = float(lab["rchi2diff"][i])
        row["spectro1d_label"] = class_names[idx[i]] if idx[i] >= 0 else ""


def predict_dataset(
    run_dir: str | os.PathLike | persistence.LoadedRun,
    dataset: "SpectralDataset | str | os.PathLike",
    *,
    split: str | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 256,
    fmt: str = "keras",
    calibrate: bool = True,
    uncertain_below: float = DEFAULT_UNCERTAIN_BELOW,
    pipeline_rule: bool | None = None,
) -> list[dict[str, Any]]:
    """Classify the rows of a dataset (already on a grid) with a run folder.

    Args:
        run_dir: run folder or :class:`~specclass.persistence.LoadedRun`.
        dataset: a :class:`~specclass.spectra.dataset.SpectralDataset` or its file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (every row).
        out: optional CSV path (written atomically).
        calibrate, uncertain_below, pipeline_rule: as :func:`predict_files`.

    Returns:
        One row dict per dataset row; ``file_class`` is the row's label name.

    Raises:
        ValueError: if the dataset's grid differs from the run's (pixel count or
            start/step), since the model would see shifted wavelengths.
    """
    from specclass.spectra.dataset import SpectralDataset

    uncertain_below = check_threshold(uncertain_below)
    run = _as_run(run_dir, fmt)
    pre = run.preprocessor
    temperature, _ = run_temperature(run, calibrate)
    if not isinstance(dataset, SpectralDataset):
        from specclass.spectra.ondisk import open_dataset

        dataset = open_dataset(dataset)  # .h5: read chunk by chunk, memory independent of N
    if split is not None:
        dataset = dataset.split(split)
    if dataset.flux.shape[1] != pre.input_length or not np.allclose(dataset.loglam, pre.loglam, atol=1e-7, rtol=0):
        raise ValueError(
            f"dataset grid ({dataset.flux.shape[1]} pixels from loglam {dataset.loglam[0]:.5f}) differs from the "
            f"run's ({pre.input_length} pixels from {pre.loglam[0]:.5f}); rebuild the dataset on the run's grid"
        )
    proba = predict_arrays(run.model, pre, dataset.flux, dataset.ivar, batch_size=batch_size,
                           temperature=temperature)
    meta = dataset.meta
    metas = []
    for i in range(len(dataset)):
        label = int(dataset.labels[i])
        metas.append({
            "file": str(meta["file"][i]),
            "row": i,
            "plate": int(meta["plate"][i]),
            "mjd": int(meta["mjd"][i]),
            "fiberid": int(meta["fiberid"][i]),
            "targetid": int(meta["targetid"][i]) if "targetid" in meta else -1,
            "file_class": dataset.class_names[label] if label >= 0 else "",
            "file_subclass": str(meta["subclass"][i]),
            "z": float(meta["z"][i]),
            "zwarning": int(meta["zwarning"][i]),
        })
    from specclass.simulate.pipeline_labels import generations

    from specclass.pipeline_rule import enabled, native_spectra

    native = native_spectra(meta, len(dataset)) if enabled(pipeline_rule, pre.class_names, pre.loglam) else None
    rows = add_pipeline_rule(metas, proba, pre, dataset.flux, dataset.ivar, generations(meta, len(dataset)),
                             pipeline_rule, uncertain_below, native)
    if out is not None:
        write_predictions_csv(out, rows, [], pre.class_names)
    return rows


def write_predictions_csv(
    path: str | os.PathLike,
    rows: Sequence[dict[str, Any]],
    failures: Sequence[dict[str, str]],
    class_names: Sequence[str],
) -> Path:
    """Write predictions (then failures, with only ``file`` and ``reason``) as CSV, atomically.

    Columns: :data:`BASE_COLUMNS`, ``p_<CLASS>`` per class, ``reason``. Floats
    with 6 significant digits; unknown values (NaN, None, a negative
    ``plate``/``mjd``/``fiberid``/``zwarning``) as empty cells.
    """
    columns = [*BASE_COLUMNS, *(f"p_{c}" for c in class_names), "reason"]
    if any("network_class" in r for r in rows):
        columns = [*columns[:-1], *RULE_COLUMNS, "reason"]
    if any("spectro1d_class" in r for r in rows):
        columns = [*columns[:-1], *SPECTRO1D_COLUMNS, "reason"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(k, v) for k, v in row.items()})
    for fail in failures:
        writer.writerow({"file": fail["file"], "reason": fail["reason"]})
    return persistence.write_text_atomic(path, buf.getvalue())


def _cell(key: str, value: Any) -> Any:
    """One CSV cell: unknown -> empty, float -> 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    if key in _UNKNOWN_IF_NEGATIVE and isinstance(value, (int, np.integer)) and value < 0:
        return ""
    return value
