"""The run folder: everything a user keeps from one training run.

Layout (written by :func:`specclass.training.train`, extended by
:func:`specclass.evaluation.evaluate_run`)::

    RUN/
      model.keras           the trained model (Keras 3 native zip: config + weights
                            + optimizer state); the best epoch's weights
      preprocessing.json    grid, normalisation, channels, class names
                            (:class:`specclass.preprocessing.Preprocessor`)
      config.json           how it was trained: model name and options, dataset,
                            epochs, batch size, seed, class weights, device, versions
      history.json          per-epoch metrics {"loss": [...], "val_loss": [...], ...}
      history.csv           the same, written by keras.callbacks.CSVLogger
      calibration.json      temperature T fitted on the validation split, NLL and
                            ECE before/after (:mod:`specclass.calibration`); a run
                            folder without it predicts with T = 1
      metrics.json, *.png, report.html   from ``specclass evaluate`` (test split;
                            other splits: metrics-SPLIT.json, report-SPLIT.html, ...)
      model.h5              on request: legacy single-file HDF5 (Keras 2 style)
      model.json +          on request: architecture as JSON (``model.to_json()``)
      model.weights.h5        plus weights only (``model.save_weights``)
      checkpoints/          training backup and best checkpoint (resume state)

An ensemble folder instead holds ``ensemble.json``, a copy of the members'
shared ``preprocessing.json`` and one run folder per member in
``members/<name>/`` (:mod:`specclass.ensemble`); :func:`load_run` loads either.

The three model formats are the tutorial's three ways of saving a Keras model.
Keras 3 changed two things a Keras 2 user will trip over: ``model.save`` decides
the format by the file suffix (``.keras`` native, ``.h5`` legacy HDF5; any other
suffix is an error), and ``model.save_weights`` only accepts names ending in
``.weights.h5`` (so the tutorial's ``model.h5``-for-weights must now be
``model.weights.h5``). All three load back to the same predictions
(tests/test_persistence.py). Loading always uses ``safe_mode=True``: no
``Lambda`` byte code is ever deserialised from a run folder.

Every file is written atomically: to a temporary name in the same folder, then
renamed over the target, so a crash never leaves a half-written file under a
final name.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping


from specclass.atomic import write_atomic, write_json_atomic, write_text_atomic  # noqa: F401 (re-exported)
from specclass.calibration import CALIBRATION_FILE  # noqa: F401 (re-exported)
from specclass.preprocessing import Preprocessor

if TYPE_CHECKING:  # pragma: no cover
    import keras

MODEL_FILES = {"keras": "model.keras", "h5": "model.h5", "json": ("model.json", "model.weights.h5")}
SAVE_FORMATS = tuple(MODEL_FILES)
PREPROCESSING_FILE = "preprocessing.json"
CONFIG_FILE = "config.json"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
METRICS_FILE = "metrics.json"


class RunFolderError(FileNotFoundError):
    """A run folder, or a file it must hold, is missing or unreadable (names the path)."""


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Raises:
        RunFolderError: if it is missing or not valid JSON (names the file).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = ""
        if path.parent.is_dir():  # pointed at the folder above the run folders (e.g. demo-run/)?
            runs = sorted(d.name for d in path.parent.iterdir() if (d / path.name).is_file())
            if runs:
                hint = f" ({path.parent} is not a run folder; run folders in it: {', '.join(runs)})"
        raise RunFolderError(f"{path}: missing{hint}") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not readable JSON ({exc})") from exc


def save_model_atomic(model: "keras.Model", path: str | os.PathLike) -> Path:
    """``model.save(path)`` via a temporary file; ``path`` ends in ``.keras`` or ``.h5``.

    Raises:
        ValueError: for any other suffix.
    """
    path = Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise ValueError(f"{path}: a model file must end in .keras (native) or .h5 (legacy HDF5)")
    return write_atomic(path, lambda tmp: model.save(tmp), suffix=path.suffix)


def save_model(model: "keras.Model", run_dir: str | os.PathLike, formats: Iterable[str] = ("keras",)) -> dict[str, Path]:
    """Save ``model`` into ``run_dir`` in each of ``formats``.

    Args:
        model: a built Keras model.
        run_dir: the run folder (created if needed).
        formats: any of ``"keras"`` (``model.keras``), ``"h5"`` (``model.h5``,
            legacy HDF5 including the optimizer), ``"json"`` (``model.json``
            architecture + ``model.weights.h5`` weights).

    Returns:
        ``{format: path}`` (for ``json``, the ``model.json`` path).

    Raises:
        ValueError: an unknown format (lists the allowed ones).
    """
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in SAVE_FORMATS]
    if bad:
        raise ValueError(f"unknown save format(s) {bad}; allowed: {', '.join(SAVE_FORMATS)}")
    run_dir = Path(run_dir)
    out: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "keras":
            out[fmt] = save_model_atomic(model, run_dir / MODEL_FILES["keras"])
        elif fmt == "h5":
            out[fmt] = _save_h5(model, run_dir / MODEL_FILES["h5"])
        else:
            arch, weights = MODEL_FILES["json"]
            # weights first: a model.json never points at missing or stale weights
            write_atomic(run_dir / weights, lambda tmp: model.save_weights(tmp), suffix=".weights.h5")
            out[fmt] = write_text_atomic(run_dir / arch, model.to_json())
    return out


def _save_h5(model: "keras.Model", path: Path) -> Path:
    """Legacy HDF5 save that leaves ``model`` as it was.

    Keras 3's HDF5 writer (``legacy_h5_format`` -> ``model_metadata``) pops
    ``"optimizer"`` out of the model's own compile config, so any later
    ``model.save("x.keras")`` would record no optimizer and reload with a default
    RMSprop. The compile config dict is copied before and put back after.
    """
    import logging
    import warnings

    compile_config = getattr(model, "_compile_config", None)
    config = getattr(compile_config, "config", None)
    saved = dict(config) if isinstance(config, dict) else None  # shallow: only keys are popped
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "HDF5 is legacy": the user asked for it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return save_model_atomic(model, path)
    finally:
        absl.setLevel(level)
        if saved is not None:
            compile_config.config = saved


def save_run(
    run_dir: str | os.PathLike,
    model: "keras.Model",
    preprocessor: Preprocessor,
    config: Mapping[str, Any],
    *,
    history: Mapping[str, list[float]] | None = None,
    formats: Iterable[str] = ("keras",),
) -> dict[str, Path]:
    """Write a complete run folder (model files, preprocessing, config, history JSON).

    ``history.csv`` is written during training by ``keras.callbacks.CSVLogger``
    and is not touched here.

    Returns:
        ``{role: path}`` for every file written.
    """
    run_dir = Path(run_dir)
    files = {f"model_{k}": v for k, v in save_model(model, run_dir, formats).items()}
    files["preprocessing"] = write_json_atomic(run_dir / PREPROCESSING_FILE, preprocessor.to_dict())
    cfg = dict(config)
    cfg["save_formats"] = list(dict.fromkeys(formats))
    files["config"] = write_json_atomic(run_dir / CONFIG_FILE, cfg)
    if history is not None:
        files["history"] = write_json_atomic(run_dir / HISTORY_JSON, dict(history))
    return files


class LoadedRun(tuple):
    """What :func:`load_run` returns: unpacks as ``(model, preprocessor, config)``.

    Also has the attributes ``model``, ``preprocessor``, ``config``,
    ``class_names``, ``history`` (dict of per-epoch lists, or ``None``),
    ``run_dir``, ``calibration`` (:class:`specclass.calibration.TemperatureCalibration`
    from ``calibration.json``, or ``None`` for a run folder without one) and
    ``temperature`` (its ``T``, 1.0 without one).
    """

    model: "keras.Model"
    preprocessor: Preprocessor
    config: dict[str, Any]

    def __new__(cls, model: Any, preprocessor: Preprocessor, config: dict[str, Any], run_dir: Path,
                history: dict[str, list[float]] | None, calibration: Any = None) -> "LoadedRun":
        obj = super().__new__(cls, (model, preprocessor, config))
        obj.model, obj.preprocessor, obj.config = model, preprocessor, config
        obj.run_dir, obj.history, obj.calibration = run_dir, history, calibration
        return obj

    @property
    def temperature(self) -> float:
        """Temperature ``T`` of the run's calibration (1.0 without ``calibration.json``)."""
        return 1.0 if self.calibration is None else float(self.calibration.temperature)

    @property
    def class_names(self) -> list[str]:
        """Output classes in model order."""
        return list(self.preprocessor.class_names)


def load_model(run_dir: str | os.PathLike, fmt: str = "keras", *, compile: bool = True) -> "keras.Model":
    """Load the model of a run folder in one of :data:`SAVE_FORMATS`, with ``safe_mode=True``.

    ``json`` rebuilds the architecture from ``model.json`` with
    ``keras.saving.deserialize_keras_object(..., safe_mode=True)`` (uncompiled)
    and loads ``model.weights.h5`` into it.

    Raises:
        ValueError: unknown ``fmt``.
        RunFolderError: the file(s) for ``fmt`` are missing (says which formats exist), truncated or
            damaged, hold a Lambda layer (refused in safe mode), or Keras cannot load them; one line
            naming the file and the reason.
    """
    import keras

    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(SAVE_FORMATS)}, got {fmt!r}")
    run_dir = Path(run_dir)
    names = MODEL_FILES[fmt]
    needed = [run_dir / n for n in ((names,) if isinstance(names, str) else names)]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        have = [f for f in SAVE_FORMATS if all((run_dir / n).is_file() for n in _as_tuple(MODEL_FILES[f]))]
        raise RunFolderError(
            f"{missing[0]}: missing, so the run cannot be loaded as {fmt!r}; formats present: {have or 'none'}"
        )
    if fmt == "keras" and not zipfile.is_zipfile(needed[0]):
        raise RunFolderError(_damaged(run_dir, needed[0], fmt, "a .keras file is a zip archive, this one is not whole"))
    try:
        if fmt == "json":
            config = json.loads(needed[0].read_text(encoding="utf-8"))
            # Architecture only: without this, Keras compiles the rebuilt model with a
            # default RMSprop and then fails to match the saved (e.g. AdamW) optimizer
            # variables inside model.weights.h5.
            config.pop("compile_config", None)
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
            model.load_weights(needed[1])
            return model
        return keras.saving.load_model(needed[0], compile=compile, safe_mode=True)
    except Exception as exc:  # Keras/h5py/zipfile raise ValueError, OSError, KeyError, BadZipFile ...
        text = str(exc).strip()
        if "Lambda" in text and "safe_mode" in text:
            raise RunFolderError(
                f"{needed[0]}: the model holds a Lambda layer (arbitrary Python code), which Keras refuses to "
                "load in safe mode, and specclass loads run folders only in safe mode; retrain with a registered "
                "model ('specclass models') or one without Lambda layers"
            ) from None
        if "truncated" in text or isinstance(exc, (zipfile.BadZipFile, EOFError, json.JSONDecodeError)):
            raise RunFolderError(_damaged(run_dir, needed[0], fmt, _first_line(text))) from None
        raise RunFolderError(
            f"{needed[0]}: Keras cannot load this model ({type(exc).__name__}: {_first_line(text)})"
        ) from None


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:200]


def _damaged(run_dir: Path, path: Path, fmt: str, detail: str) -> str:
    """Message for a model file that is cut short or damaged, naming the other formats present."""
    others = [f for f in SAVE_FORMATS
              if f != fmt and all((run_dir / n).is_file() for n in _as_tuple(MODEL_FILES[f]))]
    size = path.stat().st_size if path.is_file() else 0
    hint = f"load another format present in the run folder (--format {others[0]}), " if others else ""
    return (f"{path}: the model file is truncated or damaged ({size} bytes; {detail}); an interrupted copy or "
            f"save? Copy it again, {hint}or retrain")


def _as_tuple(x: str | tuple[str, ...]) -> tuple[str, ...]:
    return (x,) if isinstance(x, str) else x


def load_preprocessor(run_dir: str | os.PathLike) -> Preprocessor:
    """The run's :class:`Preprocessor` from ``preprocessing.json``.

    Raises:
        RunFolderError: missing or invalid file (names it).
    """
    path = Path(run_dir) / PREPROCESSING_FILE
    try:
        return Preprocessor.from_dict(read_json(path))
    except (KeyError, ValueError, TypeError) as exc:
        raise RunFolderError(f"{path}: not a specclass preprocessing file ({exc})") from exc


def load_history(run_dir: str | os.PathLike) -> dict[str, list[float]] | None:
    """``history.json`` as ``{metric: [per-epoch values]}``, or ``None`` if absent."""
    path = Path(run_dir) / HISTORY_JSON
    if not path.is_file():
        return None
    data = read_json(path)
    return dict(data) if isinstance(data, dict) else None


def load_run(run_dir: str | os.PathLike, fmt: str = "keras", *, compile: bool = True) -> LoadedRun:
    """Load a run folder for prediction or evaluation.

    An ensemble folder (``ensemble.json``, :mod:`specclass.ensemble`) gives an
    :class:`specclass.ensemble.EnsembleRun`, used exactly like a single run.

    Args:
        run_dir: folder written by :func:`save_run` (``specclass train``).
        fmt: model file to load: ``"keras"``, ``"h5"`` or ``"json"``.
        compile: compile the model (``keras``/``h5``; a ``json`` model is never
            compiled, it carries no optimizer).

    Returns:
        :class:`LoadedRun` -- unpack as ``model, preprocessor, config = load_run(run_dir)``.

    Raises:
        RunFolderError: the folder or a required file is missing or unreadable
            (also an unreadable ``calibration.json``; a missing one is allowed).
        ValueError: unknown ``fmt``.
    """
    from specclass.calibration import load_calibration

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    from specclass import ensemble

    if ensemble.is_ensemble(run_dir):  # RUN/ensemble.json + RUN/members/<name>/ (specclass.ensemble)
        return ensemble.load_ensemble(run_dir, fmt, compile=compile)
    unfinished = ensemble.unfinished_hint(run_dir)
    if unfinished and not (run_dir / MODEL_FILES["keras"]).is_file():
        raise RunFolderError(unfinished)
    preprocessor = load_preprocessor(run_dir)
    config_path = run_dir / CONFIG_FILE
    config = read_json(config_path) if config_path.is_file() else {}
    model = load_model(run_dir, fmt, compile=compile)
    n_out = model.output_shape[-1]
    if n_out != len(preprocessor.class_names):
        raise RunFolderError(
            f"{run_dir}: model has {n_out} outputs but {PREPROCESSING_FILE} names "
            f"{len(preprocessor.class_names)} classes {preprocessor.class_names}"
        )
    return LoadedRun(model, preprocessor, config, run_dir, load_history(run_dir), load_calibration(run_dir))
