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

The package reads as the recipe, one module per step:

* :mod:`~specclass.training.feeding`: which rows train and validate, class weights,
  and the batches fed to ``model.fit`` (in memory, or a ``keras.utils.PyDataset``);
* :mod:`~specclass.training.augment`: :class:`Augmentation` of training batches;
* :mod:`~specclass.training.callbacks`: the callbacks, the per-epoch backup and the
  resume state (``checkpoints/state.json``);
* :mod:`~specclass.training.calibrate`: the temperature fitted after training;
* :mod:`~specclass.training.device`: where the run ran (:func:`device_info`);
* :mod:`~specclass.training.loop`: :func:`train` itself, tying the steps together,
  and its :class:`RunResult`.
"""

from specclass.training.augment import Augmentation
from specclass.training.calibrate import _calibrate
from specclass.training.callbacks import (
    BEST_FILE,
    CHECKPOINT_DIR,
    MONITORS,
    STATE_FILE,
    STATE_FORMAT,
    ResumeMismatchError,
    _callback_classes,
    _fingerprint,
    _quiet_sklearn,
    _to_float,
    _write_history_csv,
)
from specclass.training.device import device_info
from specclass.training.feeding import _spectra_sequence_class, _split_rows, balanced_class_weights
from specclass.training.loop import RunResult, _accepts, _version, train

__all__ = [
    "Augmentation",
    "BEST_FILE",
    "CHECKPOINT_DIR",
    "MONITORS",
    "ResumeMismatchError",
    "RunResult",
    "STATE_FILE",
    "STATE_FORMAT",
    "balanced_class_weights",
    "device_info",
    "train",
]
