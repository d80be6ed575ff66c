"""Calibrated class probabilities: temperature scaling, expected calibration error, "uncertain" rows.

A network trained with cross-entropy is usually over-confident: among the
spectra it calls QSO with probability 0.99, fewer than 99 % are QSOs. Temperature
scaling (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural
Networks", ICML, arXiv:1706.04599, section 4.2) fixes this with one number
fitted on the validation split: the logits ``z`` are divided by ``T > 0`` before
the softmax, ``q = softmax(z / T)``. ``T > 1`` softens over-confident outputs,
``T < 1`` sharpens under-confident ones. Since ``T`` divides every logit of a row
by the same number, the arg-max -- the predicted class, hence accuracy and the
confusion matrix -- never changes.

Our models end in a softmax layer and return probabilities ``p``. Their logits
are ``log p`` up to a per-row constant, and ``softmax((log p + c) / T) =
softmax(log p / T)``, so scaling ``log p`` is exactly temperature scaling of the
network's logits (:func:`apply_temperature`). ``T`` minimises the negative
log-likelihood of the validation labels (:func:`fit_temperature`); the search is
a bounded 1-D minimisation over ``log T`` (:func:`scipy.optimize.minimize_scalar`,
``method="bounded"``); the NLL is convex in ``1/T`` (a log-sum-exp of linear
functions of ``1/T`` minus a linear term), so the minimum is unique.

Calibration is measured with the expected calibration error
(:func:`expected_calibration_error`; Naeini, Cooper & Hauskrecht 2015, AAAI,
"Obtaining Well Calibrated Probabilities Using Bayesian Binning"; Guo et al.
2017, eq. 3).

A run folder keeps the fit as ``calibration.json`` (:class:`TemperatureCalibration`),
written by :func:`specclass.training.train` and read by ``predict`` and
``evaluate``. A spectrum whose top calibrated probability is below a threshold
(:data:`DEFAULT_UNCERTAIN_BELOW`) is flagged *uncertain* (:func:`uncertain_mask`,
:func:`selective_metrics`); its predicted class is still the arg-max.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: File name of the calibration record inside a run folder.
CALIBRATION_FILE = "calibration.json"

#: What ``calibration.json`` says it is (``method``, ``reference``).
METHOD = "temperature scaling"
REFERENCE = ("Guo, Pleiss, Sun & Weinberger 2017, On Calibration of Modern Neural Networks, ICML, "
             "arXiv:1706.04599 (temperature scaling, section 4.2); ECE: Naeini, Cooper & Hauskrecht 2015, "
             "AAAI (Guo et al. eq. 3)")

#: Fewer labelled validation rows than this: no fit, ``T = 1`` (one number from a
#: handful of spectra would be noise).
MIN_ROWS = 10

#: Search interval of ``T`` (the bounded search runs over ``log T``).
T_BOUNDS = (0.05, 20.0)

#: Equal-width confidence bins of the ECE (Guo et al. 2017 use 15).
DEFAULT_N_BINS = 15

#: Default threshold of the "uncertain" flag: a spectrum whose top calibrated
#: probability is below 0.5 is, for a calibrated model, more likely wrongly than
#: rightly classified (its predicted class has less than even odds against all the
#: others together), whatever the number of classes.
DEFAULT_UNCERTAIN_BELOW = 0.5

#: Smallest probability used when taking logs: float32's smallest normal number
#: (``p = 0`` from a saturated float32 softmax becomes ``log p = -87.3``).
_P_FLOOR = float(np.finfo(np.float32).tiny)


# --------------------------------------------------------------------------- validation
def _check_proba(proba: Any, name: str = "proba") -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D (N, n_classes) array of class probabilities, got shape {p.shape}")
    return p


def check_labels(labels: Any, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """``labels`` as ``(n,)`` int64 class indices in ``[0, n_classes)``.

    Raises:
        ValueError: wrong shape, non-integer dtype or an index out of range (the message
            starts with ``name``).
    """
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} has shape {y.shape}, expected ({n},) to match proba")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} has labels outside [0, {n_classes}): min {y.min()}, max {y.max()}")
    return y


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def check_threshold(threshold: float, name: str = "uncertain_below") -> float:
    """``float(threshold)`` if it is a probability in ``[0, 1]``.

    Raises:
        ValueError: otherwise (names ``name`` and the value).
    """
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {threshold!r}")
    return t


# --------------------------------------------------------------------------- core
def _scaled_log_softmax(logp: np.ndarray, temperature: float) -> np.ndarray:
    """``log softmax(logp / T)`` row-wise, float64, stable (max subtracted)."""
    z = logp / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _log_proba(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, _P_FLOOR, None))


def apply_temperature(proba: Any, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities ``softmax(log(p) / T)``.

    Args:
        proba: ``(N, C)`` class probabilities (softmax outputs; any float dtype).
            Zeros are allowed: they are floored at float32's smallest normal
            number before the log, so they stay (near) zero and never give NaN.
        temperature: ``T > 0``; ``T = 1`` returns ``proba`` unchanged (as float32).

    Returns:
        ``(N, C)`` float32, rows summing to 1 (to float32 rounding), arg-max of
        every row unchanged.

    Raises:
        ValueError: ``proba`` not 2-D, holding negative or non-finite values, or
            ``temperature`` not a positive finite number.
    """
    t = _check_temperature(temperature)
    p = _check_proba(proba)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0):
        raise ValueError("proba must hold finite, non-negative probabilities")
    if t == 1.0:
        return np.array(proba, dtype=np.float32, copy=True)
    if p.shape[0] == 0:
        return np.zeros(p.shape, dtype=np.float32)
    return np.exp(_scaled_log_softmax(_log_proba(p), t)).astype(np.float32)


def negative_log_likelihood(proba: Any, labels: Any) -> float:
    """Mean negative log-likelihood ``-mean(log p[i, y_i])`` (natural log; NaN for 0 rows).

    Args:
        proba: ``(N, C)`` class probabilities; ``labels``: ``(N,)`` int in ``[0, C)``.

    Raises:
        ValueError: shapes disagree or a label is out of range.
    """
    p = _check_proba(proba)
    y = check_labels(labels, p.shape[0], p.shape[1])
    if not y.size:
        return float("nan")
    return float(-np.mean(_log_proba(p[np.arange(y.size), y])))


def expected_calibration_error(proba: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Expected calibration error of the top-class probability (Naeini et al. 2015; Guo et al. 2017, eq. 3).

    ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width
    bins ``B_m = ((m-1)/M, m/M]`` of the confidence ``max_c p[i, c]`` (a confidence
    of exactly 0 goes into the first bin), with ``acc`` the fraction of rows of
    the bin whose arg-max equals the label and ``conf`` their mean confidence.

    Args:
        proba: ``(N, C)`` class probabilities.
        labels: ``(N,)`` int class indices in ``[0, C)``.
        n_bins: number of bins ``M`` (default 15, as Guo et al.).

    Returns:
        The ECE in ``[0, 1]`` (NaN for ``N = 0``).

    Raises:
        ValueError: shapes disagree, a label is out of range, ``n_bins < 1``.

    Example:
        >>> round(expected_calibration_error([[0.9, 0.1], [0.6, 0.4]], [0, 1], n_bins=10), 6)
        0.35
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    p = _check_proba(proba)
    y = check_labels(labels, p.shape[0], p.shape[1])
    n = y.size
    if not n:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bin m (0-based) holds edges[m] < conf <= edges[m + 1]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(bins, weights=correct, minlength=n_bins)
    # |B_m|/N * |acc - conf| = |sum_acc - sum_conf| / N
    return float(np.abs(sum_acc - sum_conf).sum() / n)


def _degenerate_reason(p: np.ndarray, y: np.ndarray) -> str | None:
    """Why no temperature can be fitted on these rows (None if one can)."""
    n = y.size
    if n == 0:
        return "no labelled validation rows"
    if n < MIN_ROWS:
        return f"only {n} labelled validation rows (< {MIN_ROWS})"
    if not np.all(np.isfinite(p)) or p.min() < 0:
        return "the predicted probabilities are not all finite and non-negative"
    if np.unique(y).size < 2:
        return "the validation rows hold one class only"
    if np.all(p.argmax(axis=1) == y):
        return ("every validation row is classified correctly: the likelihood keeps rising as T -> 0, "
                "so T is not identifiable")
    return None


def _nll_at(logp: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-np.mean(_scaled_log_softmax(logp, temperature)[np.arange(y.size), y]))


def _fit(p: np.ndarray, y: np.ndarray) -> tuple[float, str | None]:
    from scipy.optimize import minimize_scalar

    logp = _log_proba(p)
    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    res = minimize_scalar(lambda s: _nll_at(logp, y, math.exp(s)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    t = float(math.exp(res.x))
    # never worse than doing nothing (the bounded search stops at a tolerance)
    if not math.isfinite(t) or _nll_at(logp, y, t) > _nll_at(logp, y, 1.0):
        return 1.0, None
    note = None
    if min(abs(res.x - lo), abs(res.x - hi)) < 1e-3:
        note = f"T at the edge of the search interval {T_BOUNDS}"
    return t, note


def fit_temperature(proba: Any, labels: Any) -> float:
    """The temperature ``T`` that minimises the NLL of ``labels`` under ``softmax(log(proba) / T)``.

    Guo et al. 2017 (arXiv:1706.04599), section 4.2: fitted on held-out
    (validation) predictions, never on the training rows. Bounded search over
    ``log T`` in :data:`T_BOUNDS`; the result never has a higher NLL than ``T = 1``.

    Args:
        proba: ``(N, C)`` predicted class probabilities of the validation rows.
        labels: ``(N,)`` int true class indices in ``[0, C)``.

    Returns:
        ``T`` (float). ``1.0`` for inputs it cannot be fitted on (fewer than
        :data:`MIN_ROWS` rows, one class only, non-finite probabilities, every row
        already right); :func:`fit_calibration` records the reason.

    Raises:
        ValueError: ``proba`` not 2-D, or ``labels`` of the wrong shape or out of range.
    """
    p = _check_proba(proba)
    y = check_labels(labels, p.shape[0], p.shape[1])
    if _degenerate_reason(p, y) is not None:
        return 1.0
    return _fit(p, y)[0]


# --------------------------------------------------------------------------- the run folder record
@dataclass
class TemperatureCalibration:
    """The calibration of one run (``calibration.json``).

    Attributes:
        temperature: ``T`` to apply (:func:`apply_temperature`); 1.0 when not fitted.
        n_val: labelled validation rows it was fitted on.
        nll_before, nll_after: mean validation NLL at ``T = 1`` and at ``temperature``.
        ece_before, ece_after: validation ECE (:func:`expected_calibration_error`).
        n_bins: ECE bins.
        fitted: whether ``temperature`` was fitted (False: ``reason`` says why not).
        reason: why ``T = 1`` was kept (or a note on the fit), else None.
        method, reference: what was done and where it is described.
        fitted_on: which rows (``"validation split"``).
        bounds: the search interval of ``T``.
    """

    temperature: float = 1.0
    n_val: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    n_bins: int = DEFAULT_N_BINS
    fitted: bool = False
    reason: str | None = None
    method: str = METHOD
    reference: str = REFERENCE
    fitted_on: str = "validation split"
    bounds: list[float] = field(default_factory=lambda: list(T_BOUNDS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as null)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TemperatureCalibration":
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises:
            ValueError: ``temperature`` missing or not a positive finite number.
        """
        if "temperature" not in data:
            raise ValueError("no 'temperature' entry")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["temperature"] = _check_temperature(known["temperature"])
        return cls(**known)

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/calibration.json`` atomically; return its path."""
        from specclass.atomic import write_json_atomic

        return write_json_atomic(Path(run_dir) / CALIBRATION_FILE, self.to_dict())

    def summary(self) -> str:
        """One line for a terminal: ``T = 1.53 (val ECE 0.084 -> 0.021, NLL ..., 120 spectra)``."""
        def f(v: float | None) -> str:
            return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

        text = (f"T = {self.temperature:.3f} (val ECE {f(self.ece_before)} -> {f(self.ece_after)}, "
                f"NLL {f(self.nll_before)} -> {f(self.nll_after)}, {self.n_val} spectra)")
        if self.reason:
            text += f"; {'not fitted: ' if not self.fitted else ''}{self.reason}"
        return text


def fit_calibration(proba: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> TemperatureCalibration:
    """Fit ``T`` on validation predictions and record the NLL and ECE before and after.

    Args:
        proba: ``(N, C)`` predicted class probabilities of the validation rows
            (``N = 0`` allowed).
        labels: ``(N,)`` int true class indices in ``[0, C)``.
        n_bins: ECE bins.

    Returns:
        :class:`TemperatureCalibration`; degenerate inputs (see
        :func:`fit_temperature`) give ``temperature = 1.0``, ``fitted = False`` and
        the ``reason``, never an error.

    Raises:
        ValueError: ``proba`` not 2-D, ``labels`` of the wrong shape or out of range.
    """
    p = _check_proba(proba)
    y = check_labels(labels, p.shape[0], p.shape[1])
    reason = _degenerate_reason(p, y)
    finite = reason is None or bool(p.size and np.all(np.isfinite(p)) and p.min() >= 0)
    if reason is not None:
        t, fitted = 1.0, False
    else:
        t, reason = _fit(p, y)
        fitted = True
    cal = TemperatureCalibration(temperature=t, n_val=int(y.size), n_bins=int(n_bins), fitted=fitted, reason=reason)
    if y.size and finite:
        q = apply_temperature(p, t)
        cal.nll_before, cal.nll_after = negative_log_likelihood(p, y), negative_log_likelihood(q, y)
        cal.ece_before = expected_calibration_error(p, y, n_bins)
        cal.ece_after = expected_calibration_error(q, y, n_bins)
    return cal


def load_calibration(run_dir: str | os.PathLike) -> TemperatureCalibration | None:
    """The run folder's :class:`TemperatureCalibration`, or ``None`` if it has no ``calibration.json``.

    Raises:
        specclass.persistence.RunFolderError: the file exists but is unreadable or
            has no valid ``temperature`` (names the file).
    """
    from specclass.persistence import RunFolderError, read_json

    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    try:
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        return TemperatureCalibration.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise RunFolderError(f"{path}: not a specclass calibration file ({exc})") from exc


# --------------------------------------------------------------------------- uncertain rows
def uncertain_mask(proba: Any, threshold: float = DEFAULT_UNCERTAIN_BELOW) -> np.ndarray:
    """``(N,)`` bool: rows whose top probability is below ``threshold`` (strictly).

    Args:
        proba: ``(N, C)`` (calibrated) class probabilities.
        threshold: in ``[0, 1]``; 0 flags nothing, 1 flags every row not at
            probability exactly 1.

    Raises:
        ValueError: ``threshold`` outside ``[0, 1]``, ``proba`` not 2-D.
    """
    t = check_threshold(threshold)
    p = _check_proba(proba)
    if not p.shape[0]:
        return np.zeros(0, dtype=bool)
    return p.max(axis=1) < t


def selective_metrics(proba: Any, labels: Any, threshold: float = DEFAULT_UNCERTAIN_BELOW) -> dict[str, Any]:
    """Figures of a classifier that abstains on uncertain rows (:func:`uncertain_mask`).

    Args:
        proba: ``(N, C)`` (calibrated) class probabilities.
        labels: ``(N,)`` int true class indices.
        threshold: the ``uncertain_below`` threshold.

    Returns:
        ``{"uncertain_below", "n", "n_covered", "n_uncertain", "coverage"`` (fraction
        not uncertain), ``"accuracy"`` and ``"balanced_accuracy"`` (mean per-class
        recall over the classes present among the covered rows, scikit-learn) of
        the covered rows, ``"accuracy_uncertain"`` (of the flagged rows)``}``; a
        figure over no rows is None.

    Raises:
        ValueError: as :func:`uncertain_mask` / bad labels.
    """
    from sklearn.metrics import balanced_accuracy_score

    p = _check_proba(proba)
    y = check_labels(labels, p.shape[0], p.shape[1])
    unsure = uncertain_mask(p, threshold)
    covered = ~unsure
    pred = p.argmax(axis=1) if y.size else np.zeros(0, dtype=np.int64)
    n, k = int(y.size), int(covered.sum())
    bal = None
    if k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # y_pred holds classes absent from y_true
            bal = float(balanced_accuracy_score(y[covered], pred[covered]))
    return {
        "uncertain_below": float(threshold),
        "n": n,
        "n_covered": k,
        "n_uncertain": n - k,
        "coverage": (k / n) if n else None,
        "accuracy": float(np.mean(pred[covered] == y[covered])) if k else None,
        "balanced_accuracy": bal,
        "accuracy_uncertain": float(np.mean(pred[unsure] == y[unsure])) if n - k else None,
    }
