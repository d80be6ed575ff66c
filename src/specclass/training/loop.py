"""The training loop: :func:`train` ties data feeding, callbacks/resume and calibration
together (see :mod:`specclass.training` for the whole recipe)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from specclass import persistence
from specclass.preprocessing import Preprocessor
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
    _write_history_csv,
)
from specclass.training.device import device_info
from specclass.training.feeding import (
    DEFAULT_SHUFFLE_BUFFER,
    _spectra_sequence_class,
    _split_rows,
    _streaming_sequence_class,
    _validation_sequence_class,
    balanced_class_weights,
    use_streaming,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from specclass.spectra.dataset import SpectralDataset

log = logging.getLogger("specclass.training")


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


def _accepts(model_name: str) -> set[str]:
    from specclass.models import model_spec

    return set(model_spec(model_name).options)


# --------------------------------------------------------------------------- train
def train(
    dataset: "SpectralDataset | str | os.PathLike",
    model_name: str = "spectral_tutorial",
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
    stream: bool | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
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
        stream: read batches from the dataset file instead of loading it
            (:mod:`specclass.spectra.ondisk`; memory bounded by ``shuffle_buffer``
            and the batch size): ``True``, ``False``, or ``None`` = when the file's
            flux + ivar exceed :data:`~specclass.training.feeding.STREAM_AUTO_BYTES`.
            Single process only. Batches follow
            :func:`~specclass.training.feeding.stream_order`; a file whose training
            rows fit in one buffer streams exactly the batches of the in-memory
            ``PyDataset`` path (used with augmentation).
        shuffle_buffer: training rows shuffled together when streaming.

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
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be a positive int, got {shuffle_buffer!r}")
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
    streaming = use_streaming(dataset, stream, int(getattr(strategy, "num_processes", 1) or 1))
    if not isinstance(dataset, SpectralDataset):
        from specclass.spectra.ondisk import OnDiskDataset

        dataset_path = Path(dataset)
        dataset = OnDiskDataset(dataset_path) if streaming else SpectralDataset.load(dataset_path)
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
    if streaming:  # validation batches read from the file, in row order
        x_val = _validation_sequence_class()(dataset.subset(val_idx), y_val, preprocessor, local_batch)
    else:
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
    if streaming:
        config["feeding"] = {"mode": "stream", "shuffle_buffer": int(shuffle_buffer)}

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
                      validation_data=x_val if streaming else (x_val, y_val))
        if streaming:
            seq = _streaming_sequence_class()(dataset.subset(train_idx), y_train, w_train, preprocessor, local_batch,
                                              augmentation, seed, initial_epoch, shuffle_buffer)
            model.fit(seq, shuffle=not seq.sequential, **common)
        elif augmentation is None and n_proc == 1:
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
    if streaming:
        dataset.close()
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



def _version() -> str:
    from specclass import __version__

    return __version__
