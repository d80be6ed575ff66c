"""Train a registered model on a :class:`~specclass.spectra.dataset.SpectralDataset`, resumably.

:func:`train` is what ``specclass train`` runs. In one call it

* takes training and validation rows from the dataset's own grouped split
  (``meta['split']`` 0 = train, 1 = val; never Keras' ``validation_split``, which
  takes the unshuffled tail of the arrays and would put repeat observations of one
  object on both sides);
* weights classes for imbalance (``sklearn.utils.class_weight.compute_class_weight``
  ``"balanced"``: ``n_samples / (n_classes * count)``), passed as per-sample weights;
* seeds Python, NumPy and the backend (``keras.utils.set_random_seed``) and records
  the seed;
* builds the model from :mod:`specclass.models` (or restores it from the backup),
  fits it with ``model.fit`` on NumPy arrays or, with augmentation, a
  ``keras.utils.PyDataset`` -- no backend-specific code, so it runs under
  ``KERAS_BACKEND=tensorflow``, ``jax`` or ``torch``;
* uses the callbacks TerminateOnNaN, a best checkpoint (``val_loss`` or
  ``val_balanced_accuracy``), optional EarlyStopping, CSVLogger (``history.csv``),
  a per-epoch ``history.json``, Keras' progress bar, and a **backup each epoch**;
* writes the run folder (:mod:`specclass.persistence`) from the best epoch;
* fits a temperature on the best model's validation predictions (Guo et al. 2017,
  :mod:`specclass.calibration`) and writes it as ``calibration.json``.

Resume: every finished epoch leaves ``checkpoints/last-EEEE.keras`` (model with
optimizer state) and ``checkpoints/state.json`` (finished epochs, history, the
best score so far and its epoch, early-stopping counters). Calling :func:`train`
again with the same dataset, model and ``out_dir`` (for example re-submitting a
SLURM job stopped by :class:`specclass.cluster.signals.GracefulStop`) continues
from the last finished epoch. Plain ``keras.callbacks.ModelCheckpoint`` would
start again with ``best = inf`` and overwrite a better earlier checkpoint; here
the saved best is put back as the checkpoint's ``best`` (and EarlyStopping's
``best``/``wait``), so the best-so-far score survives the restart.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from specclass import persistence
from specclass.preprocessing import Preprocessor

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from specclass.spectra.dataset import SpectralDataset

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
BEST_FILE = "best.keras"
STATE_FORMAT = "specclass-train-state"
MONITORS = {"val_loss": "min", "val_balanced_accuracy": "max", "val_accuracy": "max"}


class ResumeMismatchError(ValueError):
    """``out_dir`` holds a backup of a different run (dataset, model, batch size or seed differ)."""


# --------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        model: the model of the best epoch (the one saved as ``model.keras``).
        preprocessor: the preprocessing saved with it.
        config: the run configuration written to ``config.json``.
        history: ``{metric: [one value per finished epoch]}`` over all (resumed) sessions.
        monitor: the metric the best checkpoint followed.
        best_score: its best value; ``best_epoch``: 0-based epoch of that value.
        initial_epoch: epochs already finished when this call started (0 = fresh run).
        epochs_done: epochs finished in total.
        files: ``{role: path}`` of the run-folder files written.
        calibration: the :class:`~specclass.calibration.TemperatureCalibration`
            fitted on the validation split (``calibration.json``); ``temperature``
            is its ``T`` (1.0 when it could not be fitted; ``calibration.reason``
            says why).
    """

    run_dir: Path
    model: Any
    preprocessor: Preprocessor
    config: dict[str, Any]
    history: dict[str, list[float]]
    monitor: str
    best_score: float | None
    best_epoch: int | None
    initial_epoch: int
    epochs_done: int
    files: dict[str, Path] = field(default_factory=dict)
    calibration: Any = None

    @property
    def temperature(self) -> float:
        """The fitted temperature ``T`` (1.0 without a calibration)."""
        return 1.0 if self.calibration is None else float(self.calibration.temperature)


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Augmentation:
    """Random, physically motivated perturbations of gridded spectra (training only).

    Each spectrum of a batch is perturbed independently (before normalisation):

    * ``flux_scale``: flux times ``exp(u)``, ``u ~ U(-flux_scale, flux_scale)``,
      ivar divided by the square of that factor (distance/aperture changes; with
      the scale-free default normalisation this only matters for ``"none"``);
    * ``noise``: extra Gaussian noise of ``a / sqrt(ivar)`` per good pixel, ``a ~
      U(0, noise)``, ivar reduced to ``ivar / (1 + a**2)`` (a fainter twin of the
      same object);
    * ``mask_prob``/``mask_max_frac``: with probability ``mask_prob``, one random
      contiguous chunk of up to ``mask_max_frac`` of the grid gets ivar 0 (bad
      columns, dropped CCD regions, sky residual masking);
    * ``shift_pixels``: shift by ``k ~ U{-s..s}`` pixels; on a log-lambda grid
      with step ``d`` dex this is a redshift change ``(1+z) -> (1+z) * 10**(k d)``
      (1e-4 dex: ``dz/(1+z) = 2.3e-4`` per pixel); pixels shifted in from the edge
      get ivar 0.

    ``Augmentation.off()`` disables everything; :func:`train` uses no
    augmentation unless asked.
    """

    flux_scale: float = 0.5
    noise: float = 1.0
    mask_prob: float = 0.3
    mask_max_frac: float = 0.05
    shift_pixels: int = 3

    @classmethod
    def off(cls) -> "Augmentation":
        """No perturbation at all."""
        return cls(0.0, 0.0, 0.0, 0.0, 0)

    @property
    def enabled(self) -> bool:
        """True if any perturbation is on."""
        return bool(self.flux_scale or self.noise or (self.mask_prob and self.mask_max_frac) or self.shift_pixels)

    def apply(self, flux: np.ndarray, ivar: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Perturb a batch.

        Args:
            flux, ivar: ``(B, L)`` arrays (not modified).
            rng: NumPy random generator.

        Returns:
            ``(flux, ivar)``: new ``(B, L)`` float32 arrays.
        """
        flux = np.array(flux, dtype=np.float32, copy=True)
        ivar = np.array(ivar, dtype=np.float32, copy=True)
        b, n = flux.shape
        if self.flux_scale:
            s = np.exp(rng.uniform(-self.flux_scale, self.flux_scale, size=(b, 1))).astype(np.float32)
            flux *= s
            ivar /= s * s
        if self.noise:
            a = rng.uniform(0.0, self.noise, size=(b, 1)).astype(np.float32)
            good = ivar > 0
            sigma = np.zeros_like(ivar)
            np.divide(1.0, np.sqrt(ivar, where=good, out=np.zeros_like(ivar)), where=good, out=sigma)
            flux += np.where(good, a * sigma * rng.standard_normal((b, n)).astype(np.float32), 0.0)
            ivar /= 1.0 + a * a
        if self.mask_prob and self.mask_max_frac:
            hit = rng.random(b) < self.mask_prob
            for i in np.flatnonzero(hit):
                width = int(rng.integers(1, max(2, int(self.mask_max_frac * n) + 1)))
                start = int(rng.integers(0, max(1, n - width + 1)))
                ivar[i, start : start + width] = 0.0
        if self.shift_pixels:
            shifts = rng.integers(-self.shift_pixels, self.shift_pixels + 1, size=b)
            for i in np.flatnonzero(shifts):
                k = int(shifts[i])
                flux[i] = np.roll(flux[i], k)
                ivar[i] = np.roll(ivar[i], k)
                if k > 0:
                    ivar[i, :k] = 0.0
                else:
                    ivar[i, k:] = 0.0
        return flux, ivar

    def to_dict(self) -> dict[str, Any]:
        """JSON dict of the settings."""
        return {
            "flux_scale": self.flux_scale,
            "noise": self.noise,
            "mask_prob": self.mask_prob,
            "mask_max_frac": self.mask_max_frac,
            "shift_pixels": self.shift_pixels,
        }


def _spectra_sequence_class() -> type:
    import keras

    class SpectraSequence(keras.utils.PyDataset):
        """Batches ``(x, y, sample_weight)`` preprocessed on the fly, optionally augmented.

        Shuffling and augmentation draw from ``numpy.random.default_rng([seed, epoch, batch])``,
        so a resumed run sees the same batches as an uninterrupted one.
        """

        def __init__(self, flux, ivar, y, w, preprocessor, batch_size, augmentation, seed, initial_epoch=0):
            super().__init__(workers=1, use_multiprocessing=False)
            self.flux, self.ivar, self.y, self.w = flux, ivar, y, w
            self.preprocessor, self.batch_size = preprocessor, int(batch_size)
            self.augmentation, self.seed = augmentation, int(seed)
            self.epoch = int(initial_epoch)
            self._order = self._shuffle()

        def _shuffle(self) -> np.ndarray:
            return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))

        def __len__(self) -> int:
            return math.ceil(len(self.y) / self.batch_size)

        def __getitem__(self, index: int):
            rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
            flux, ivar = self.flux[rows], self.ivar[rows]
            if self.augmentation is not None and self.augmentation.enabled:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                flux, ivar = self.augmentation.apply(flux, ivar, rng)
            return self.preprocessor.transform(flux, ivar), self.y[rows], self.w[rows]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order = self._shuffle()

    return SpectraSequence


# --------------------------------------------------------------------------- callbacks
def _callback_classes() -> dict[str, type]:
    """Callback classes (defined lazily: importing this module must not import Keras)."""
    import keras

    class ValidationBalancedAccuracy(keras.callbacks.Callback):
        """Adds ``val_balanced_accuracy`` (mean per-class recall, scikit-learn) to the epoch logs.

        Must come before the callbacks that read it (checkpoint, early stopping, CSV).
        """

        def __init__(self, x_val: np.ndarray, y_val: np.ndarray, batch_size: int, num_processes: int = 1) -> None:
            super().__init__()
            self.x_val, self.y_val, self.batch_size = x_val, y_val, batch_size
            self.num_processes = int(num_processes)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            from sklearn.metrics import balanced_accuracy_score

            # Under several processes (JAX multi-node) ``model.predict`` returns arrays spanning
            # devices of other processes, which cannot be fetched: skip (``train`` refuses
            # monitor="val_balanced_accuracy" there).
            if logs is None or not len(self.y_val) or self.num_processes > 1:
                return
            proba = self.model.predict(self.x_val, batch_size=self.batch_size, verbose=0)
            with _quiet_sklearn():
                logs["val_balanced_accuracy"] = float(
                    balanced_accuracy_score(self.y_val, np.argmax(proba, axis=1))
                )

    class EpochGuard(keras.callbacks.Callback):
        """Knows whether the epoch that just ended ran all its steps and has finite loss."""

        def __init__(self) -> None:
            super().__init__()
            self.batches = 0
            self.complete = True

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.batches = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.batches += 1

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            steps = (self.params or {}).get("steps")
            loss = (logs or {}).get("loss")
            self.complete = (not steps or self.batches >= steps) and (loss is None or math.isfinite(float(loss)))
            if not self.complete:
                log.warning("epoch %d did not finish cleanly (%d/%s batches, loss %s): not backed up",
                            epoch + 1, self.batches, steps, loss)

    class BestCheckpoint(keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint(save_best_only) that writes atomically, skips unfinished
        epochs, and starts from a restored ``best`` (``initial_value_threshold``)."""

        def __init__(self, filepath: str, monitor: str, mode: str, guard: Any, best: float | None,
                     best_epoch: int | None) -> None:
            super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=True,
                             initial_value_threshold=best)
            self.guard = guard
            self.best_epoch = best_epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if not self.guard.complete:
                return
            if self.monitor_op is None:
                self._set_monitor_op()
            current = (logs or {}).get(self.monitor)
            if current is None:
                log.warning("best checkpoint: %s not in the epoch logs (%s)", self.monitor, sorted(logs or {}))
                return
            if self._is_improvement(current, self.best):
                self.best, self.best_epoch = float(current), int(epoch)
                persistence.save_model_atomic(self.model, self.filepath)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose ``best``/``wait`` survive a restart (set after on_train_begin)."""

        def __init__(self, restored: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.restored = dict(restored or {})

        def on_train_begin(self, logs: dict | None = None) -> None:
            super().on_train_begin(logs)
            if self.restored:
                self.best = self.restored.get("best")
                self.wait = int(self.restored.get("wait", 0))
                self.best_epoch = int(self.restored.get("best_epoch", 0))

    class Backup(keras.callbacks.Callback):
        """Each finished epoch: model (with optimizer) to ``last-EEEE.keras``, then ``state.json``.

        The state is written after the model file it names, so it never points at a
        file that is not complete; older backups are removed afterwards.
        """

        def __init__(self, ckpt_dir: Path, run_dir: Path, state: dict[str, Any], guard: Any, checkpoint: Any,
                     early: Any, write_files: bool = True) -> None:
            super().__init__()
            self.ckpt_dir, self.run_dir, self.state = ckpt_dir, run_dir, state
            self.guard, self.checkpoint, self.early = guard, checkpoint, early
            self.write_files = write_files

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if not self.guard.complete:
                return
            history = self.state.setdefault("history", {})
            n_before = int(self.state.get("epoch", 0))
            for key, value in (logs or {}).items():
                col = history.setdefault(key, [None] * n_before)
                col.append(_to_float(value))
            for col in history.values():  # metrics missing this epoch
                if len(col) < n_before + 1:
                    col.append(None)
            self.state["epoch"] = epoch + 1
            self.state["best"] = self.checkpoint.best if self.checkpoint.best is None else float(self.checkpoint.best)
            self.state["best_epoch"] = self.checkpoint.best_epoch
            if self.early is not None:
                self.state["early_stopping"] = {
                    "best": None if self.early.best is None else float(self.early.best),
                    "wait": int(self.early.wait),
                    "best_epoch": int(getattr(self.early, "best_epoch", 0)),
                }
            self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if not self.write_files:
                return
            name = f"last-{epoch + 1:04d}.keras"
            persistence.save_model_atomic(self.model, self.ckpt_dir / name)
            self.state["backup"] = name
            persistence.write_json_atomic(self.ckpt_dir / STATE_FILE, self.state)
            persistence.write_json_atomic(self.run_dir / persistence.HISTORY_JSON, history)
            for old in self.ckpt_dir.glob("last-*.keras"):
                if old.name != name:
                    old.unlink(missing_ok=True)

    return {
        "ValidationBalancedAccuracy": ValidationBalancedAccuracy,
        "EpochGuard": EpochGuard,
        "BestCheckpoint": BestCheckpoint,
        "ResumableEarlyStopping": ResumableEarlyStopping,
        "Backup": Backup,
    }


@contextlib.contextmanager
def _quiet_sklearn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        yield


def _to_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- helpers
def device_info(strategy: Any = None) -> dict[str, Any]:
    """Where training runs: Keras backend, visible devices, host, CPU count, strategy.

    Returns:
        ``{"backend", "devices": [...], "host", "cpu_count", "strategy"}`` (JSON-ready).
    """
    import keras

    backend = keras.backend.backend()
    devices: list[str] = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_logical_devices()]
        elif backend == "jax":
            import jax

            devices = [str(d) for d in jax.devices()]
        elif backend == "torch":
            import torch

            devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    except Exception as exc:  # never fail a run over a device listing
        devices = [f"unknown ({exc})"]
    info = {
        "backend": backend,
        "devices": devices,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if strategy is not None:
        info["strategy"] = strategy.describe() if hasattr(strategy, "describe") else repr(strategy)
    return info


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``"balanced"`` class weights ``n / (k * count_c)`` for the classes present in ``labels``.

    Uses :func:`sklearn.utils.class_weight.compute_class_weight`; classes absent
    from ``labels`` get weight 1.0 (they cannot contribute to the loss anyway).

    Args:
        labels: ``(N,)`` int class indices in ``[0, n_classes)``.
        n_classes: total number of classes.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def _fingerprint(dataset: "SpectralDataset", train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    """Identity of the training data, to refuse resuming on a different dataset."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(dataset.labels[train_idx]).tobytes())
    h.update(np.ascontiguousarray(dataset.labels[val_idx]).tobytes())
    h.update(np.ascontiguousarray(dataset.flux[train_idx[:64]]).tobytes())
    return {
        "n_rows": len(dataset),
        "n_train": int(train_idx.size),
        "n_val": int(val_idx.size),
        "npix": int(dataset.flux.shape[1]),
        "class_names": list(dataset.class_names),
        "sha256": h.hexdigest()[:16],
    }


def _write_history_csv(path: Path, history: Mapping[str, list[float | None]]) -> None:
    """Rewrite ``history.csv`` the way CSVLogger writes it (epoch, then sorted keys)."""
    keys = sorted(history)
    n = max((len(v) for v in history.values()), default=0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(n):
        row = [history[k][i] if i < len(history[k]) else None for k in keys]
        writer.writerow([i, *["" if v is None else v for v in row]])
    persistence.write_text_atomic(path, buf.getvalue())


def _split_rows(dataset: "SpectralDataset") -> tuple[np.ndarray, np.ndarray]:
    from specclass.spectra.dataset import SPLIT_CODES

    split = np.asarray(dataset.meta["split"])
    labelled = dataset.labels >= 0
    train_idx = np.flatnonzero(labelled & (split == SPLIT_CODES["train"]))
    val_idx = np.flatnonzero(labelled & (split == SPLIT_CODES["val"]))
    if train_idx.size == 0:
        raise ValueError(
            "dataset has no labelled training rows (meta['split'] == 0); build it with "
            "`specclass build-dataset`, which assigns grouped train/val/test splits"
        )
    if val_idx.size == 0:
        raise ValueError(
            "dataset has no labelled validation rows (meta['split'] == 1); specclass validates on the "
            "dataset's grouped split, never on Keras' validation_split (the unshuffled tail)"
        )
    return train_idx, val_idx


def _accepts(model_name: str) -> set[str]:
    from specclass.models import model_spec

    return set(model_spec(model_name).options)


# --------------------------------------------------------------------------- train
def train(
    dataset: "SpectralDataset | str | os.PathLike",
    model_name: str = "spectral_resnet",
    out_dir: str | os.PathLike = "run",
    epochs: int = 20,
    batch_size: int = 32,
    seed: int = 42,
    class_weight: str | Mapping[int, float] | None = "balanced",
    early_stopping: int | None = None,
    augment: bool | Augmentation | None = None,
    extra_callbacks: Sequence["keras.callbacks.Callback"] = (),
    strategy: Any = None,
    *,
    monitor: str = "val_loss",
    model_options: Mapping[str, Any] | None = None,
    normalisation: str = "robust",
    channels: int | None = None,
    save_formats: Iterable[str] = ("keras",),
    verbose: int | str = "auto",
    resume: bool = True,
) -> RunResult:
    """Train ``model_name`` on ``dataset`` into the run folder ``out_dir`` (resumable).

    Args:
        dataset: a :class:`~specclass.spectra.dataset.SpectralDataset` or the path
            of a dataset file; rows with ``meta['split']`` 0 train, 1 validate;
            rows with label -1 are ignored.
        model_name: a name from :func:`specclass.models.list_models`.
        out_dir: run folder (created); holding a backup, training resumes there.
        epochs: total epochs (a resumed run trains only the missing ones).
        batch_size: global batch size.
        seed: seed for weights, shuffling and augmentation (recorded).
        class_weight: ``"balanced"`` (default), ``None`` (all 1), or ``{class_index: weight}``.
        early_stopping: patience in epochs on ``monitor`` (``None`` = off).
        augment: ``True`` for the default :class:`Augmentation`, an
            :class:`Augmentation`, or ``None``/``False`` (off, the default).
        extra_callbacks: more Keras callbacks (e.g. ``GracefulStop`` under SLURM).
        strategy: a :class:`specclass.cluster.distribute.DeviceStrategy` (or any
            object with ``scope()``); the model is built inside its scope, each
            process feeds its share of the global batch and only the chief
            process writes files.
        monitor: ``"val_loss"`` (default), ``"val_balanced_accuracy"`` or
            ``"val_accuracy"``: the best checkpoint and early stopping follow it.
        model_options: builder options (see ``specclass.models.model_spec(name).options``).
        normalisation, channels: :class:`~specclass.preprocessing.Preprocessor`
            settings (``channels`` defaults to the model option, else 1).
        save_formats: model files of the run folder: any of ``keras``, ``h5``, ``json``.
        verbose: ``model.fit`` progress output (0 silent, 1 bar, 2 one line per epoch).
        resume: continue from a backup in ``out_dir`` (``False``: refuse to
            touch a folder that has one).

    Returns:
        :class:`RunResult` (best model, preprocessor, config, history, best score).

    Raises:
        ValueError: bad arguments (names the parameter and the allowed values),
            a dataset without training/validation rows.
        ResumeMismatchError: ``out_dir`` holds the backup of a different run.
        FileExistsError: ``resume=False`` and ``out_dir`` already holds a backup.
    """
    import keras

    from specclass.spectra.dataset import SpectralDataset

    # ---- validate at the edge
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {sorted(MONITORS)}, got {monitor!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 0):
        raise ValueError(f"early_stopping (patience) must be a non-negative int or None, got {early_stopping!r}")
    if isinstance(class_weight, str) and class_weight != "balanced":
        raise ValueError(f"class_weight must be 'balanced', None or a dict, got {class_weight!r}")
    save_formats = list(dict.fromkeys(save_formats))
    bad = [f for f in save_formats if f not in persistence.SAVE_FORMATS]
    if bad or not save_formats:
        raise ValueError(f"save_formats {save_formats} invalid; allowed: {', '.join(persistence.SAVE_FORMATS)}")
    accepted = _accepts(model_name)  # raises UnknownModelError listing the names
    model_options = dict(model_options or {})
    if augment is True:
        augmentation: Augmentation | None = Augmentation()
    elif isinstance(augment, Augmentation):
        augmentation = augment if augment.enabled else None
    elif augment in (None, False):
        augmentation = None
    else:
        raise ValueError(f"augment must be True/False/None or an Augmentation, got {augment!r}")

    dataset_path = None
    if not isinstance(dataset, SpectralDataset):
        dataset_path = Path(dataset)
        dataset = SpectralDataset.load(dataset_path)
    train_idx, val_idx = _split_rows(dataset)
    n_classes = len(dataset.class_names)

    if channels is None:
        channels = int(model_options.get("channels", 1))
    if "channels" in accepted:
        model_options["channels"] = channels
    elif channels != 1:
        raise ValueError(f"model {model_name!r} takes no 'channels' option; channels must be 1, got {channels}")
    preprocessor = Preprocessor.from_dataset(dataset, normalisation=normalisation, channels=channels)

    # ---- devices and processes
    n_proc = int(getattr(strategy, "num_processes", 1) or 1)
    proc = int(getattr(strategy, "process_index", 0) or 0)
    chief = proc == 0
    if n_proc > 1 and monitor == "val_balanced_accuracy":
        raise ValueError(
            f"monitor='val_balanced_accuracy' is not available with {n_proc} processes (model.predict cannot "
            "fetch outputs spanning other processes' devices); use monitor='val_loss' or 'val_accuracy'"
        )
    local_batch = batch_size // n_proc
    if n_proc > 1 and batch_size % n_proc:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {n_proc} processes")
    steps_per_epoch = math.ceil(train_idx.size / batch_size) if n_proc == 1 else train_idx.size // batch_size
    if "decay_steps" in accepted and "decay_steps" not in model_options:
        model_options["decay_steps"] = steps_per_epoch * epochs

    # ---- resume state
    run_dir = Path(out_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    state_path = ckpt_dir / STATE_FILE
    fingerprint = _fingerprint(dataset, train_idx, val_idx)
    identity = {
        "model": model_name,
        "batch_size": batch_size,
        "seed": seed,
        "monitor": monitor,
        "channels": channels,
        "normalisation": normalisation,
        "dataset": fingerprint,
    }
    state: dict[str, Any] = {"format": STATE_FORMAT, "format_version": 1, "identity": identity, "epoch": 0,
                             "history": {}, "best": None, "best_epoch": None}
    if state_path.is_file():
        if not resume:
            raise FileExistsError(f"{run_dir}: holds the backup of an earlier run ({state_path}); "
                                  "use another out_dir, or resume")
        old = persistence.read_json(state_path)
        if old.get("identity") != json.loads(json.dumps(identity)):
            diff = sorted(k for k in identity if json.loads(json.dumps(identity[k])) != old.get("identity", {}).get(k))
            raise ResumeMismatchError(
                f"{run_dir}: holds a backup of a different run (differs in: {', '.join(diff)}); "
                "use another out_dir to start a new run"
            )
        state = old
    initial_epoch = int(state.get("epoch", 0))
    resumed = initial_epoch > 0

    # ---- seeds, data
    keras.utils.set_random_seed(seed)
    y_train = dataset.labels[train_idx].astype(np.int32)
    y_val = dataset.labels[val_idx].astype(np.int32)
    if class_weight == "balanced":
        cw = balanced_class_weights(y_train, n_classes)
    elif class_weight is None:
        cw = {c: 1.0 for c in range(n_classes)}
    else:
        cw = {c: float(dict(class_weight).get(c, 1.0)) for c in range(n_classes)}
    w_train = np.array([cw[int(c)] for c in y_train], dtype=np.float32)
    if n_proc > 1:
        from specclass.cluster.distribute import process_batch_rows

        perm = np.random.default_rng(seed).permutation(train_idx.size)
        rows = perm[process_batch_rows(train_idx.size, batch_size, proc, n_proc)]
        train_idx, y_train, w_train = train_idx[rows], y_train[rows], w_train[rows]
        # Validation: every process feeds the FULL validation set (in the same order, with the
        # same local batch size, so all take the same number of steps). Sharding it like the
        # training rows left a process with no rows at all when the validation split is
        # smaller than one global batch, and dropped the rows of the last incomplete batch.
        # Each row then appears once per process in the global validation batches, which
        # leaves the averaged val_loss/val_accuracy unchanged.
    x_val = preprocessor.transform(dataset.flux[val_idx], dataset.ivar[val_idx])

    config: dict[str, Any] = {
        "specclass_version": _version(),
        "keras_version": keras.__version__,
        "model": model_name,
        "model_options": model_options,
        "dataset": {"file": None if dataset_path is None else str(dataset_path),
                    "label_scheme": dataset.attrs.get("label_scheme"), **fingerprint},
        "class_names": list(dataset.class_names),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "class_weight": {dataset.class_names[c]: w for c, w in cw.items()},
        "class_weight_mode": class_weight if isinstance(class_weight, str) or class_weight is None else "custom",
        "train_class_counts": {dataset.class_names[c]: int(np.sum(y_train == c)) for c in range(n_classes)},
        "val_class_counts": {dataset.class_names[c]: int(np.sum(y_val == c)) for c in range(n_classes)},
        "monitor": monitor,
        "early_stopping_patience": early_stopping,
        "augmentation": None if augmentation is None else augmentation.to_dict(),
        "preprocessing": {"normalisation": normalisation, "channels": channels},
        "validation": "dataset split (meta['split'] == 1), grouped by object",
        "device": device_info(strategy),
    }

    # ---- model (fresh or restored), inside the strategy scope
    scope = strategy.scope() if strategy is not None and hasattr(strategy, "scope") else contextlib.nullcontext()
    with scope:
        if resumed:
            backup = ckpt_dir / str(state.get("backup", ""))
            if not backup.is_file():
                raise persistence.RunFolderError(f"{backup}: backup named in {state_path} is missing")
            model = keras.saving.load_model(backup, safe_mode=True)
            log.info("resuming %s from epoch %d (best %s = %s at epoch %s)", run_dir, initial_epoch, monitor,
                     state.get("best"), state.get("best_epoch"))
        else:
            from specclass.models import get_model

            model = get_model(model_name, preprocessor.input_length, n_classes, **model_options)
    if model.input_shape[-1] != channels or model.input_shape[1] not in (None, preprocessor.input_length):
        raise ValueError(f"model input {model.input_shape} does not match the preprocessing "
                         f"(L={preprocessor.input_length}, channels={channels})")
    config["model_summary"] = {"params": int(model.count_params()), "input_shape": list(model.input_shape)}

    # ---- callbacks
    cb = _callback_classes()
    if chief:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resumed:  # leftovers of a run that never finished an epoch
            for stale in [ckpt_dir / BEST_FILE, *ckpt_dir.glob("last-*.keras")]:
                stale.unlink(missing_ok=True)
    guard = cb["EpochGuard"]()
    checkpoint = cb["BestCheckpoint"](str(ckpt_dir / BEST_FILE), monitor, MONITORS[monitor], guard,
                                      state.get("best"), state.get("best_epoch"))
    early = None
    if early_stopping is not None:
        early = cb["ResumableEarlyStopping"](restored=state.get("early_stopping"), monitor=monitor,
                                             mode=MONITORS[monitor], patience=early_stopping, verbose=1)
    callbacks: list[Any] = [cb["ValidationBalancedAccuracy"](x_val, y_val, local_batch, n_proc), guard,
                            keras.callbacks.TerminateOnNaN()]
    if chief:
        callbacks.append(checkpoint)
    if early is not None:
        callbacks.append(early)
    if chief:
        if resumed:  # make the CSV agree with the backup (drops a row of an epoch never backed up)
            _write_history_csv(run_dir / persistence.HISTORY_CSV, state.get("history", {}))
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / persistence.HISTORY_CSV), append=resumed))
    callbacks.append(cb["Backup"](ckpt_dir, run_dir, state, guard, checkpoint, early, write_files=chief))
    callbacks.extend(extra_callbacks)
    state["config"] = {k: v for k, v in config.items() if k != "device"}

    # ---- fit
    started = time.time()
    stopped_early = False
    nothing_to_train = not (initial_epoch < epochs and not state.get("stopped_early"))
    if not nothing_to_train:
        common = dict(epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                      validation_data=(x_val, y_val))
        if augmentation is None and n_proc == 1:
            x_train = preprocessor.transform(dataset.flux[train_idx], dataset.ivar[train_idx])
            model.fit(x_train, y_train, sample_weight=w_train, batch_size=batch_size, shuffle=True, **common)
        elif augmentation is None:
            x_train = preprocessor.transform(dataset.flux[train_idx], dataset.ivar[train_idx])
            model.fit(x_train, y_train, sample_weight=w_train, batch_size=local_batch, shuffle=False, **common)
        else:
            seq = _spectra_sequence_class()(dataset.flux[train_idx], dataset.ivar[train_idx], y_train, w_train,
                                            preprocessor, local_batch, augmentation, seed, initial_epoch)
            model.fit(seq, **common)
        stopped_early = bool(early is not None and early.stopped_epoch > 0)
        if stopped_early:
            state["stopped_early"] = True
            if chief:
                persistence.write_json_atomic(state_path, state)
    else:
        log.info("%s: %d of %d epochs already done; nothing to train", run_dir, initial_epoch, epochs)
    train_seconds = time.time() - started

    # ---- run folder from the best epoch
    best_path = ckpt_dir / BEST_FILE
    if best_path.is_file():
        best_model = keras.saving.load_model(best_path, safe_mode=True)
    else:  # e.g. every epoch ended in NaN
        best_model = model
    history = {k: list(v) for k, v in state.get("history", {}).items()}
    epochs_done = int(state.get("epoch", 0))
    config.update(
        epochs_done=epochs_done,
        resumed_from_epoch=initial_epoch if resumed else None,
        best_epoch=checkpoint.best_epoch,
        best_score=None if checkpoint.best is None else float(checkpoint.best),
        stopped_early=bool(state.get("stopped_early", False)),
        train_seconds_this_session=round(train_seconds, 2),
        train_spectra_per_second=(round(train_idx.size * (epochs_done - initial_epoch) / train_seconds, 1)
                                  if train_seconds > 0 and epochs_done > initial_epoch else None),
    )
    if nothing_to_train and (run_dir / persistence.CONFIG_FILE).is_file():
        # a finished run reused as it is: keep the record of the session that trained it
        try:
            previous = persistence.read_json(run_dir / persistence.CONFIG_FILE)
        except persistence.RunFolderError:
            previous = {}
        for key in ("resumed_from_epoch", "train_seconds_this_session", "train_spectra_per_second"):
            if key in previous:
                config[key] = previous[key]
    calibration = _calibrate(best_model, x_val, y_val, local_batch, n_proc)
    files: dict[str, Path] = {}
    if chief:
        files = persistence.save_run(run_dir, best_model, preprocessor, config, history=history,
                                     formats=save_formats)
        if (run_dir / persistence.HISTORY_CSV).is_file():
            files["history_csv"] = run_dir / persistence.HISTORY_CSV
        files["calibration"] = calibration.save(run_dir)
    return RunResult(
        run_dir=run_dir,
        model=best_model,
        preprocessor=preprocessor,
        config=config,
        history=history,
        monitor=monitor,
        best_score=config["best_score"],
        best_epoch=checkpoint.best_epoch,
        initial_epoch=initial_epoch,
        epochs_done=epochs_done,
        files=files,
        calibration=calibration,
    )


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


def _version() -> str:
    from specclass import __version__

    return __version__
