"""Callbacks, per-epoch backup and resume state of :func:`specclass.training.train`.

See :mod:`specclass.training` for how a run resumes from ``checkpoints/state.json``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from specclass import persistence

if TYPE_CHECKING:  # pragma: no cover
    from specclass.spectra.dataset import SpectralDataset

log = logging.getLogger("specclass.training")

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
BEST_FILE = "best.keras"
STATE_FORMAT = "specclass-train-state"
MONITORS = {"val_loss": "min", "val_balanced_accuracy": "max", "val_accuracy": "max"}


class ResumeMismatchError(ValueError):
    """``out_dir`` holds a backup of a different run (dataset, model, batch size or seed differ)."""


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
