"""Evaluate a classifier's predictions: metrics, confusion matrices, breakdowns.

The one entry point shared by spectral and MNIST runs is
:func:`evaluate_predictions`; it turns true labels and predicted class
probabilities into a JSON-serialisable ``dict``. :func:`evaluate_run` does the
whole job for a spectral run folder: load the run, predict on a split of a
dataset, and write ``metrics.json``, ``misclassified.csv``, the plots and
``report.html`` into the run folder (for the test split; any other split gets
its own names, ``metrics-val.json``, ``report-val.html``, ... see
:func:`output_names`, so evaluating the validation split never overwrites the
test report). It also scores the run's calibration (:mod:`specclass.calibration`):
expected calibration error of the raw and temperature-scaled probabilities, and
coverage / accuracy of the spectra that are not flagged uncertain.

Metrics come from scikit-learn (``accuracy_score``,
``precision_recall_fscore_support``, ``confusion_matrix``); labels are always
passed as ``range(n_classes)`` so the confusion matrix keeps the saved class
order and a class absent from the test split keeps its (empty) row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from specclass.atomic import write_text_atomic  # noqa: F401 (re-exported for report/mnist)
from specclass.calibration import check_labels

log = logging.getLogger(__name__)

#: A class with fewer test examples than this is flagged in the metrics and report:
#: its recall moves by more than 5 percentage points with a single example.
SMALL_CLASS_THRESHOLD = 20

#: Columns of ``misclassified.csv`` and of each entry of ``metrics["misclassified"]``.
MISCLASSIFIED_COLUMNS = ("index", "file", "plate", "mjd", "fiberid", "true", "predicted", "probability", "probability_true")




def evaluate_predictions(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    meta: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score predicted class probabilities against true labels.

    Args:
        y_true: ``(N,)`` integer class indices into ``class_names``.
        proba: ``(N, C)`` float predicted probabilities (softmax output), ``C ==
            len(class_names)``; the prediction is ``argmax`` over axis 1 (ties go to
            the first class, as ``numpy.argmax``).
        class_names: the ``C`` class names in the model's fixed, saved order.
        meta: optional metadata table, a mapping of ``(N,)`` arrays as in
            :data:`specclass.spectra.dataset.META_COLUMNS`. Used columns: ``zwarning``
            (breakdown by ZWARNING), ``source`` (breakdown by data source), ``file``,
            ``plate``, ``mjd``, ``fiberid`` (identify misclassified rows).

    Returns:
        A JSON-serialisable dict with keys:

        - ``n``, ``class_names``, ``accuracy``, ``balanced_accuracy`` (mean per-class
          recall over the classes present in ``y_true``; scikit-learn's definition);
        - ``per_class``: list, in class order, of ``{"name", "precision", "recall",
          "f1", "support", "predicted", "small"}`` (scikit-learn
          ``precision_recall_fscore_support``, ``zero_division=0``);
        - ``confusion_matrix``: ``{"labels", "counts", "normalized"}``; rows are true
          classes, columns predicted, in ``class_names`` order; ``normalized`` divides
          each row by its support (a row with no examples is all ``None``);
        - ``small_classes``: names of classes with fewer than
          :data:`SMALL_CLASS_THRESHOLD` test examples, and ``warnings`` (text);
        - ``by_zwarning`` (when ``meta`` has ``zwarning``): groups ``"zwarning == 0"``,
          ``"zwarning != 0"``, ``"unknown"`` (value < 0), and ``per_bit`` by bit name
          (when :mod:`specclass.spectra.zwarning` exists) or ``"bit N"`` otherwise;
          each group ``{"n", "n_correct", "accuracy"}``;
        - ``by_source`` (when ``meta`` has ``source``): same per source value;
        - ``misclassified``: list of dicts with :data:`MISCLASSIFIED_COLUMNS`, sorted
          by decreasing predicted probability (the most confident mistakes first).

    Raises:
        ValueError: if shapes disagree, ``proba`` has a column count other than
            ``len(class_names)``, a label is outside ``[0, C)``, or a meta column has
            the wrong length (the message names the column).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    class_names = [str(c) for c in class_names]
    n_classes = len(class_names)
    if proba.ndim != 2 or proba.shape[1] != n_classes:
        raise ValueError(f"proba has shape {proba.shape}, expected (N, {n_classes}) for classes {class_names}")
    y_true = check_labels(y_true, proba.shape[0], n_classes, name="y_true")
    if meta is not None:
        for key, col in meta.items():
            if np.shape(col) != y_true.shape:
                raise ValueError(f"meta column {key!r} has shape {np.shape(col)}, expected {y_true.shape}")

    n = int(y_true.size)
    labels = list(range(n_classes))
    y_pred = proba.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    p_pred = proba[np.arange(n), y_pred] if n else np.zeros(0)
    p_true = proba[np.arange(n), y_true] if n else np.zeros(0)

    counts = confusion_matrix(y_true, y_pred, labels=labels) if n else np.zeros((n_classes, n_classes), dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    ) if n else (np.zeros(n_classes),) * 3 + (np.zeros(n_classes, dtype=np.int64),)
    support = np.asarray(support, dtype=np.int64)
    normalized: list[list[float | None]] = []
    for i in range(n_classes):
        row_sum = counts[i].sum()
        normalized.append([float(c / row_sum) for c in counts[i]] if row_sum else [None] * n_classes)

    present = support > 0
    balanced = float(np.mean(recall[present])) if present.any() else float("nan")
    small = [class_names[i] for i in range(n_classes) if support[i] < SMALL_CLASS_THRESHOLD]
    warnings = [
        (f"class {class_names[i]!r} has no examples in this split; its recall is undefined"
         if support[i] == 0 else
         f"class {class_names[i]!r} has only {int(support[i])} example(s) in this split (< {SMALL_CLASS_THRESHOLD}); "
         "its recall and precision are not reliable")
        for i in range(n_classes)
        if support[i] < SMALL_CLASS_THRESHOLD
    ]
    per_class = [
        {
            "name": class_names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(counts[:, i].sum()),
            "small": bool(support[i] < SMALL_CLASS_THRESHOLD),
        }
        for i in range(n_classes)
    ]
    correct = y_pred == y_true
    result: dict[str, Any] = {
        "n": n,
        "class_names": class_names,
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else float("nan"),
        "balanced_accuracy": balanced,
        "per_class": per_class,
        "confusion_matrix": {"labels": class_names, "counts": counts.astype(int).tolist(), "normalized": normalized},
        "small_class_threshold": SMALL_CLASS_THRESHOLD,
        "small_classes": small,
        "warnings": warnings,
    }
    if meta is not None and "zwarning" in meta:
        result["by_zwarning"] = _zwarning_breakdown(np.asarray(meta["zwarning"]).astype(np.int64), correct)
    if meta is not None and "source" in meta:
        source = np.asarray(meta["source"]).astype(str)
        result["by_source"] = {
            (s or "unknown"): _group(correct, source == s) for s in sorted(set(source.tolist()))
        }
    result["misclassified"] = _misclassified(y_true, y_pred, p_pred, p_true, class_names, meta)
    return _nan_to_none(result)


def _group(correct: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    k = int(mask.sum())
    good = int(correct[mask].sum())
    return {"n": k, "n_correct": good, "accuracy": (good / k) if k else None}


def _zwarning_bit_name(bit: int) -> str:
    """Name of ZWARNING bit ``bit`` (:data:`specclass.spectra.zwarning.ZWARNING_BITS`), else 'bit N'."""
    from specclass.spectra.zwarning import ZWARNING_BITS

    return ZWARNING_BITS.get(bit, f"bit {bit}")


def _zwarning_breakdown(zwarning: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    known = zwarning >= 0
    out: dict[str, Any] = {
        "zwarning == 0": _group(correct, zwarning == 0),
        "zwarning != 0": _group(correct, known & (zwarning != 0)),
        "unknown": _group(correct, ~known),
    }
    per_bit: dict[str, Any] = {}
    if known.any():
        top = int(zwarning[known].max()).bit_length()
        for bit in range(top):
            mask = known & ((zwarning & (1 << bit)) != 0)
            if mask.any():
                per_bit[_zwarning_bit_name(bit)] = {"bit": bit, **_group(correct, mask)}
    out["per_bit"] = per_bit
    return out


def _misclassified(y_true, y_pred, p_pred, p_true, class_names, meta) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-p_pred[wrong], kind="stable")]
    rows = []
    for i in wrong:
        row: dict[str, Any] = {"index": int(i)}
        for key, default in (("file", ""), ("plate", -1), ("mjd", -1), ("fiberid", -1)):
            if meta is not None and key in meta:
                value = np.asarray(meta[key])[i]
                row[key] = str(value) if key == "file" else int(value)
            else:
                row[key] = default
        row.update(
            true=class_names[int(y_true[i])],
            predicted=class_names[int(y_pred[i])],
            probability=float(p_pred[i]),
            probability_true=float(p_true[i]),
        )
        rows.append(row)
    return rows


def _nan_to_none(obj: Any) -> Any:
    """Replace NaN floats with ``None`` so ``json.dumps(allow_nan=False)`` works."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- files
def write_metrics_json(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``metrics`` as strict JSON (no NaN), atomically; return the path."""
    return write_text_atomic(path, json.dumps(_nan_to_none(dict(metrics)), indent=2, allow_nan=False) + "\n")


def write_misclassified_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write misclassified rows (columns :data:`MISCLASSIFIED_COLUMNS`) as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MISCLASSIFIED_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return write_text_atomic(path, buf.getvalue())


def dataset_summary(y: np.ndarray, class_names: Sequence[str], **extra: Any) -> dict[str, Any]:
    """Count examples per class: ``{"n", "per_class": {name: count}, **extra}`` (JSON-ready)."""
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y[y >= 0], minlength=len(class_names)) if y.size else np.zeros(len(class_names), int)
    return {"n": int(y.size), "per_class": {str(c): int(k) for c, k in zip(class_names, counts)}, **extra}


# --------------------------------------------------------------------------- run folders
#: Files :func:`evaluate_run` writes, by role; the test split uses these names.
OUTPUT_FILES = {
    "metrics": "metrics.json",
    "misclassified_csv": "misclassified.csv",
    "confusion_matrix": "confusion_matrix.png",
    "curves": "curves.png",
    "misclassified_spectra": "misclassified_spectra.png",
    "misclassified_viewer": "misclassified_viewer.html",
    "report": "report.html",
}


def output_names(split: str) -> dict[str, str]:
    """File names :func:`evaluate_run` writes for ``split``, by role.

    The test split keeps the plain names (``metrics.json``, ``report.html``, ...:
    the run's report, which README and the demo point to); any other split adds
    ``-SPLIT`` before the suffix (``metrics-val.json``, ``report-val.html``,
    ``confusion_matrix-val.png``, ...).
    """
    if split == "test":
        return dict(OUTPUT_FILES)
    return {role: f"{Path(name).stem}-{split}{Path(name).suffix}" for role, name in OUTPUT_FILES.items()}


def calibration_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba_raw: np.ndarray,
    temperature: float,
    uncertain_below: float,
    *,
    source: str = "",
    n_bins: int | None = None,
    proba_calibrated: np.ndarray | None = None,
) -> dict[str, Any]:
    """Calibration figures of one evaluated split (the ``calibration`` entry of ``metrics.json``).

    Args:
        y_true: ``(N,)`` int class indices.
        proba_raw: ``(N, C)`` the network's raw softmax probabilities.
        temperature: ``T`` applied to get the calibrated probabilities.
        uncertain_below: threshold of the uncertain flag (in ``[0, 1]``).
        source: where ``T`` comes from (text).
        n_bins: ECE bins (default :data:`specclass.calibration.DEFAULT_N_BINS`).
        proba_calibrated: ``(N, C)`` calibrated probabilities when they are not
            ``apply_temperature(proba_raw, temperature)`` (an ensemble, whose members
            each have their own ``T``; :mod:`specclass.ensemble`).

    Returns:
        ``{"temperature", "probabilities", "n_bins", "ece_raw", "ece_calibrated",
        "nll_raw", "nll_calibrated", "uncertain_below", "selective"}``; ``selective``
        is :func:`specclass.calibration.selective_metrics` of the calibrated
        probabilities (coverage = fraction not uncertain; accuracy and balanced
        accuracy on the covered rows). Figures over no rows are None.
    """
    from specclass import calibration as cal

    n_bins = cal.DEFAULT_N_BINS if n_bins is None else n_bins
    y = np.asarray(y_true).astype(np.int64)
    if proba_calibrated is None:
        proba_cal = cal.apply_temperature(proba_raw, temperature)
    else:
        proba_cal = np.asarray(proba_calibrated)
    return _nan_to_none({
        "temperature": float(temperature),
        "probabilities": source,
        "method": cal.METHOD,
        "n_bins": int(n_bins),
        "ece_raw": cal.expected_calibration_error(proba_raw, y, n_bins),
        "ece_calibrated": cal.expected_calibration_error(proba_cal, y, n_bins),
        "nll_raw": cal.negative_log_likelihood(proba_raw, y),
        "nll_calibrated": cal.negative_log_likelihood(proba_cal, y),
        "uncertain_below": float(uncertain_below),
        "selective": cal.selective_metrics(proba_cal, y, uncertain_below),
    })


def evaluate_run(
    run_dir: str | os.PathLike,
    dataset: Any,
    split: str = "test",
    *,
    max_gallery: int = 12,
    batch_size: int = 256,
    calibrate: bool = True,
    uncertain_below: float | None = None,
    pipeline_rule: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a spectral run folder on one split of a dataset and write the results.

    Loads the run with :func:`specclass.persistence.load_run` (model, preprocessing,
    class names, history), applies the run's saved preprocessing to the split's
    ``flux``/``ivar``, predicts, scores with :func:`evaluate_predictions` and writes
    into ``run_dir``: ``metrics.json``, ``misclassified.csv``,
    ``confusion_matrix.png``, ``curves.png`` (when the run has a history),
    ``misclassified_spectra.png`` and ``misclassified_viewer.html`` (the
    :mod:`specclass.view` page of every misclassified spectrum, linked from the
    report; both when anything is misclassified) and
    ``report.html`` -- these names for the test split; another split writes
    ``metrics-SPLIT.json``, ``report-SPLIT.html``, ... (:func:`output_names`) and
    leaves the test files alone.

    Probabilities are the run's calibrated ones (``calibration.json``; ``T = 1``
    without it, or with ``calibrate=False``). The arg-max, hence every
    accuracy figure, is the same either way; the probabilities of
    ``misclassified`` are the calibrated ones. ``metrics["calibration"]`` holds
    :func:`calibration_metrics` (ECE raw and calibrated, ``T``, coverage and
    accuracy / balanced accuracy of the rows not flagged uncertain) of the network's
    own probabilities, before the pipeline rule.

    Args:
        run_dir: the run folder written by ``specclass train``.
        dataset: a :class:`specclass.spectra.dataset.SpectralDataset` or a path to a
            dataset file.
        split: 'train', 'val', 'test', or 'all' (every row, ignoring the split column).
        calibrate: apply the run's temperature (False: raw softmax, ``T = 1``).
        uncertain_below: threshold of the uncertain flag (default
            :data:`specclass.calibration.DEFAULT_UNCERTAIN_BELOW`).
        pipeline_rule: apply the SDSS pipeline's decisions on top of the network
            (:mod:`specclass.pipeline_rule`: STAR and GALAXY vs QSO by template fits, AGN vs GALAXY
            by the measured lines); None (default) = when the run's classes and grid allow it.
            ``metrics["pipeline_rule"]`` then gives how many spectra the template fits decided,
            how many had their lines measured, how many labels changed, and the network's own
            accuracy and balanced accuracy.

    Returns:
        The metrics dict (as written to ``metrics.json``) with an added ``"files"``
        entry mapping each written file's role to its path (str).

    Raises:
        ValueError: if the split is empty, or the dataset's class names differ from
            the run's (names both lists).
        FileNotFoundError: if the run folder or dataset file does not exist.
    """
    from specclass import persistence, pipeline_rule as pipeline, plots, report
    from specclass.calibration import DEFAULT_UNCERTAIN_BELOW, apply_temperature, check_threshold
    from specclass.predict import predict_arrays, run_temperature
    from specclass.spectra.dataset import SpectralDataset

    uncertain_below = check_threshold(DEFAULT_UNCERTAIN_BELOW if uncertain_below is None else uncertain_below)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if not isinstance(dataset, SpectralDataset):
        from specclass.spectra.ondisk import open_dataset

        dataset_path = Path(dataset)
        dataset = open_dataset(dataset_path)  # .h5: rows read as needed, memory independent of N
    else:
        dataset_path = None
    data = dataset if split == "all" else dataset.split(split)
    if len(data) == 0:
        raise ValueError(f"dataset split {split!r} is empty (meta['split'] has no rows for it)")
    run = persistence.load_run(run_dir)
    class_names = run.class_names
    if list(data.class_names) != class_names:
        raise ValueError(
            f"dataset class names {list(data.class_names)} differ from the run's {class_names} "
            f"(run folder {run_dir}); labels would be misread"
        )
    temperature, how = run_temperature(run, calibrate)
    if hasattr(run.model, "raw_and_calibrated"):  # an ensemble: members' raw / calibrated probabilities combined
        x = run.preprocessor.transform(data.flux, data.ivar)
        proba_raw, proba = run.model.raw_and_calibrated(x, batch_size, calibrate=calibrate)
    else:
        proba_raw = predict_arrays(run.model, run.preprocessor, data.flux, data.ivar, batch_size=batch_size)
        proba = apply_temperature(proba_raw, temperature)
    rule = None
    if pipeline.enabled(pipeline_rule, class_names, data.loglam):
        from specclass.simulate.pipeline_labels import generations

        # the fits use each spectrum's own file (native pixels, pipeline masks) where it is still there
        rule = pipeline.apply_pipeline_rule(proba, class_names, data.loglam, data.flux, data.ivar,
                                            generations(data.meta, len(data)),
                                            native=pipeline.native_spectra(data.meta, len(data)))
        network_proba, proba = proba, rule.proba
    metrics = evaluate_predictions(data.labels, proba, class_names, meta=data.meta)
    metrics["split"] = split
    if rule is not None:
        net = evaluate_predictions(data.labels, network_proba, class_names)
        metrics["pipeline_rule"] = {
            "applied": True,
            "template_decided": int((rule.template_class != "").sum()),
            "measured": int(rule.measured.sum()),
            "changed": int((np.argmax(network_proba, 1) != np.argmax(proba, 1)).sum()),
            "network_accuracy": net["accuracy"],
            "network_balanced_accuracy": net["balanced_accuracy"],
        }
    # calibration describes the network's probabilities (raw vs temperature-scaled), before the pipeline rule
    metrics["calibration"] = calibration_metrics(data.labels, proba_raw, temperature, uncertain_below, source=how,
                                                 proba_calibrated=proba if rule is None else network_proba)
    metrics["dataset"] = dict(
        dataset_summary(data.labels, class_names),
        file=str(dataset_path) if dataset_path else None,
        label_scheme=dataset.attrs.get("label_scheme"),
        n_total=len(dataset),
        sources=sorted(set(np.asarray(data.meta["source"]).astype(str).tolist())),
    )

    names = output_names(split)
    files: dict[str, str] = {"metrics": str(run_dir / names["metrics"])}
    files["misclassified_csv"] = str(write_misclassified_csv(metrics["misclassified"],
                                                             run_dir / names["misclassified_csv"]))
    images: dict[str, Path] = {}
    roles: dict[str, str] = {}
    images["Confusion matrix"] = plots.plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]["counts"]), class_names, run_dir / names["confusion_matrix"]
    )
    roles["Confusion matrix"] = "confusion_matrix"
    history = run.history
    if history:
        # config.json's best_epoch is 0-based; the plot labels it 1-based as Keras' log does
        best = run.config.get("best_epoch")
        n_epochs = max((len(v) for v in history.values()), default=0)
        best = int(best) + 1 if best is not None and 0 <= int(best) < n_epochs else None
        images["Training curves"] = plots.plot_history(history, run_dir / names["curves"], best_epoch=best)
        roles["Training curves"] = "curves"
    wrong = [row["index"] for row in metrics["misclassified"][:max_gallery]]
    if wrong:
        images["Misclassified spectra"] = plots.plot_spectra_gallery(
            data.wavelength,
            data.flux[wrong],
            [metrics["misclassified"][k]["true"] for k in range(len(wrong))],
            [metrics["misclassified"][k]["predicted"] for k in range(len(wrong))],
            [metrics["misclassified"][k]["probability"] for k in range(len(wrong))],
            run_dir / names["misclassified_spectra"],
            titles=[_spectrum_title(metrics["misclassified"][k]) for k in range(len(wrong))],
            ivar=data.ivar[wrong],
            sources=np.asarray(data.meta["source"])[wrong] if "source" in data.meta else None,
            formats=np.asarray(data.meta["format"])[wrong] if "format" in data.meta else None,
            redshifts=np.asarray(data.meta["z"], dtype=float)[wrong] if "z" in data.meta else None,
        )
        roles["Misclassified spectra"] = "misclassified_spectra"
    for key, p in images.items():
        files[roles[key]] = str(p)  # confusion_matrix, curves, misclassified_spectra
    links = {}
    if metrics["misclassified"]:
        viewer = _write_misclassified_viewer(run_dir / names["misclassified_viewer"], data, proba, class_names,
                                             [row["index"] for row in metrics["misclassified"]], uncertain_below,
                                             f"misclassified spectra of run '{run_dir.name}' ({split} split)")
        if viewer is not None:
            files["misclassified_viewer"] = str(viewer)
            links[f"Interactive viewer of the {len(metrics['misclassified'])} misclassified spectra"] = viewer.name
    config = dict(run.config)
    if isinstance(config.get("best_epoch"), int):  # config.json counts from 0; Keras' log and the curves from 1
        config["best_epoch"] = f"{config['best_epoch'] + 1} (counted from 1 as in the training log)"
    files["report"] = str(
        report.write_report(
            run_dir / names["report"],
            title=f"specclass {run.config.get('model', 'model')} run '{run_dir.name}': {split} split",
            config=config,
            dataset=metrics["dataset"],
            metrics=metrics,
            images=images,
            links=links,
        )
    )
    metrics["files"] = files
    write_metrics_json(metrics, run_dir / names["metrics"])
    return metrics


def _write_misclassified_viewer(path: Path, data: Any, proba: np.ndarray, class_names: Sequence[str],
                                index: Sequence[int], uncertain_below: float, title: str) -> Path | None:
    """Write the :mod:`specclass.view` page of the rows ``index``; None (logged) without bokeh."""
    try:
        from specclass.view import write_viewer
        from specclass.view.data import from_dataset_rows
    except ImportError as exc:  # bokeh missing: the report still works, without the link
        log.warning("no viewer page of the misclassified spectra: %s", exc)
        return None
    view = from_dataset_rows(data, proba, class_names, index, uncertain_below=uncertain_below, title=title)
    return write_viewer(path, view)


def _spectrum_title(row: Mapping[str, Any]) -> str:
    if row.get("plate", -1) >= 0:
        return f"{row['plate']:04d}-{row['mjd']:05d}-{row['fiberid']:04d}"
    return Path(str(row.get("file") or f"row {row['index']}")).name
