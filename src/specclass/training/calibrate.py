"""The calibration step of :func:`specclass.training.train`: a temperature fitted on
the validation split with the best model (:mod:`specclass.calibration`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("specclass.training")


def _calibrate(model: Any, x_val: np.ndarray, y_val: np.ndarray, batch_size: int, n_proc: int) -> Any:
    """Temperature scaling on the validation split (see :mod:`specclass.calibration`).

    The model's validation probabilities are computed once more with the best
    weights (the checkpoint's own ``val_loss`` is that of the best epoch, but the
    probabilities themselves are needed). Under several processes ``model.predict``
    cannot fetch outputs spanning other processes' devices (as for
    ``val_balanced_accuracy``): ``T = 1`` with that reason.
    """
    from specclass.calibration import TemperatureCalibration, fit_calibration

    if n_proc > 1:
        return TemperatureCalibration(n_val=int(y_val.size), reason=(
            f"not fitted under {n_proc} processes (model.predict cannot fetch outputs spanning other "
            "processes' devices); refit with a single process"))
    proba = np.asarray(model.predict(x_val, batch_size=batch_size, verbose=0)) if y_val.size else \
        np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    cal = fit_calibration(proba, y_val)
    log.info("calibration: %s", cal.summary())
    return cal
