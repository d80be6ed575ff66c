"""Export a run folder for inference without TensorFlow: numpy network file, ONNX, TF SavedModel.

Every export carries the run's preprocessing (``preprocessing.json``) and
calibration (``calibration.json``), so the exported file alone turns gridded or
raw spectra into calibrated probabilities:

``numpy`` -> ``RUN/model.numpy.h5``
    the layer graph and float32 weights for :mod:`specclass.inference.numpy_net`
    (numpy + h5py only); preprocessing, calibration and the run's config as JSON
    attributes. Only the layers of the shipped networks are supported
    (:data:`KERAS_OPS`); anything else is a :class:`ValueError` naming the layer.
``onnx`` -> ``RUN/model.onnx``
    Keras 3 ``model.export(format="onnx")`` (needs ``tf2onnx`` and ``onnx``; run
    it with ``onnxruntime``). Input ``spectrum`` ``(N, L, C)`` float32, output the
    softmax probabilities; preprocessing and calibration JSON in the model's
    ``metadata_props`` (keys ``specclass_preprocessing``, ``specclass_calibration``).
``savedmodel`` -> ``RUN/saved_model/``
    ``model.export(format="tf_saved_model")`` for TF Serving / TF pipelines, with
    ``preprocessing.json`` and ``calibration.json`` copied beside ``saved_model.pb``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from specclass.atomic import write_atomic
from specclass.inference.numpy_net import Layer, write_network

if TYPE_CHECKING:  # pragma: no cover
    import keras

#: ``specclass export --format`` values and the file (or folder) each writes in the run folder.
EXPORT_FORMATS: dict[str, str] = {"numpy": "model.numpy.h5", "onnx": "model.onnx", "savedmodel": "saved_model"}
#: ONNX ``metadata_props`` keys holding the JSON of preprocessing.json and calibration.json.
ONNX_PREPROCESSING_KEY = "specclass_preprocessing"
ONNX_CALIBRATION_KEY = "specclass_calibration"

#: Keras layer class -> numpy operation (:mod:`specclass.inference.numpy_net`).
KERAS_OPS = {
    "InputLayer": "input", "Conv1D": "conv1d", "Dense": "dense", "BatchNormalization": "batchnorm",
    "Activation": "activation", "MaxPooling1D": "maxpool1d", "AveragePooling1D": "avgpool1d",
    "GlobalAveragePooling1D": "global_avgpool1d", "GlobalMaxPooling1D": "global_maxpool1d",
    "Flatten": "flatten", "Add": "add", "Concatenate": "concat",
    "Dropout": "identity", "SpatialDropout1D": "identity", "GaussianNoise": "identity",
    "GaussianDropout": "identity", "ActivityRegularization": "identity",
}


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (list, tuple)) else v


def _activation(cfg: dict[str, Any]) -> str:
    act = cfg.get("activation", "linear")
    if isinstance(act, dict):  # a serialised activation object
        act = act.get("config", {}).get("name") or act.get("class_name", "")
    return str(act)


def _params(layer: "keras.layers.Layer", op: str) -> dict[str, Any]:
    cfg = layer.get_config()
    where = f"layer {layer.name!r} ({type(layer).__name__})"
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"{where}: data_format {cfg['data_format']!r}; the numpy predictor needs channels_last")
    if op == "conv1d":
        if tuple(cfg.get("dilation_rate", (1,))) != (1,) or int(cfg.get("groups", 1)) != 1:
            raise ValueError(f"{where}: dilated or grouped convolutions are not supported")
        if cfg["padding"] not in ("valid", "same"):
            raise ValueError(f"{where}: padding {cfg['padding']!r} is not supported (valid, same)")
        return {"strides": int(_first(cfg["strides"])), "padding": cfg["padding"], "activation": _activation(cfg)}
    if op == "dense":
        return {"activation": _activation(cfg)}
    if op == "activation":
        return {"activation": _activation(cfg)}
    if op == "batchnorm":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) else axis
        if axis not in (-1, 2):
            raise ValueError(f"{where}: axis {axis}; only the channel axis (-1) is supported")
        return {"epsilon": float(cfg["epsilon"])}
    if op in ("maxpool1d", "avgpool1d"):
        pool = int(_first(cfg["pool_size"]))
        strides = cfg.get("strides") or pool
        return {"pool_size": pool, "strides": int(_first(strides)), "padding": cfg["padding"]}
    if op in ("global_avgpool1d", "global_maxpool1d") and cfg.get("keepdims"):
        raise ValueError(f"{where}: keepdims=True is not supported")
    if op == "concat" and cfg.get("axis", -1) not in (-1, 2):
        raise ValueError(f"{where}: concatenation along axis {cfg['axis']} is not supported (only -1)")
    return {}


def _history_names(obj: Any) -> list[str]:
    """Layer names in the ``keras_history`` entries of a functional config's ``inbound_nodes`` args."""
    if isinstance(obj, dict):
        hist = obj.get("config", {}).get("keras_history") if obj.get("class_name") == "__keras_tensor__" else None
        if hist:
            return [str(hist[0])]
        return [n for v in obj.values() for n in _history_names(v)]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _history_names(v)]
    return []


def _endpoints(spec: Any) -> list[str]:
    """Layer names of a functional config's ``input_layers``/``output_layers``
    (``['name', 0, 0]`` for one, ``[['a', 0, 0], ['b', 0, 0]]`` for several)."""
    if spec and isinstance(spec[0], str):
        return [spec[0]]
    return [str(s[0]) for s in spec]


def keras_to_layers(model: "keras.Model") -> tuple[list[Layer], str, tuple[int, int], int]:
    """The model as numpy :class:`~specclass.inference.numpy_net.Layer` s.

    Args:
        model: a Keras 3 ``Sequential`` or functional model with one ``(L, C)`` input
            and one output, built from the layers in :data:`KERAS_OPS`.

    Returns:
        ``(layers, output_name, (L, C), n_outputs)``.

    Raises:
        ValueError: a layer type or option the numpy predictor does not implement (names the layer),
            several inputs or outputs, or a layer used more than once.
    """
    import keras

    shape = tuple(model.input_shape)
    if len(shape) != 3:
        raise ValueError(f"model input shape {shape}: expected one (N, L, C) input")
    config = model.get_config()
    sequential = isinstance(model, keras.Sequential)
    inputs: dict[str, list[str]] = {}
    if not sequential:
        for entry in config["layers"]:
            nodes = entry.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ValueError(f"layer {entry['name']!r} is called {len(nodes)} times; shared layers are not supported")
            inputs[entry["name"]] = _history_names(nodes[0]["args"]) if nodes else []
        if len(_endpoints(config["input_layers"])) != 1 or len(_endpoints(config["output_layers"])) != 1:
            raise ValueError("only models with one input and one output can be exported")
    layers: list[Layer] = [Layer("input", "input", [])] if sequential else []
    previous = "input"
    for layer in model.layers if sequential else [model.get_layer(e["name"]) for e in config["layers"]]:
        kind = type(layer).__name__
        op = KERAS_OPS.get(kind)
        if op is None:
            raise ValueError(f"layer {layer.name!r} ({kind}) is not supported by the numpy predictor "
                             f"(supported: {', '.join(KERAS_OPS)})")
        weights = {w.name: np.asarray(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float32)
                   for w in layer.weights}
        ins = [previous] if sequential else inputs[layer.name]
        layers.append(Layer(layer.name, op, ins, _params(layer, op), weights))
        previous = layer.name
    output = previous if sequential else _endpoints(config["output_layers"])[0]
    return layers, output, (int(shape[1]), int(shape[2])), int(model.output_shape[-1])


def _run_json(run_dir: Path) -> dict[str, str]:
    from specclass.calibration import CALIBRATION_FILE
    from specclass.persistence import CONFIG_FILE, PREPROCESSING_FILE, read_json

    out = {"preprocessing": json.dumps(read_json(run_dir / PREPROCESSING_FILE))}
    cal = run_dir / CALIBRATION_FILE
    out["calibration"] = json.dumps(read_json(cal)) if cal.is_file() else ""
    cfg = run_dir / CONFIG_FILE
    out["config"] = json.dumps(read_json(cfg)) if cfg.is_file() else "{}"
    return out


def export_run(run_dir: str | os.PathLike, fmt: str = "numpy", out: str | os.PathLike | None = None,
               model_format: str = "keras") -> Path:
    """Export the model of ``run_dir`` in ``fmt`` (module docstring), preprocessing and calibration included.

    Args:
        run_dir: a run folder written by ``specclass train``.
        fmt: one of :data:`EXPORT_FORMATS`.
        out: output path (default ``RUN/<EXPORT_FORMATS[fmt]>``); written atomically
            (``savedmodel``: built in a temporary folder, then renamed).
        model_format: which model file of the run to load (``keras``, ``h5``, ``json``).

    An ensemble folder (:mod:`specclass.ensemble`) goes to :func:`export_ensemble`.

    Returns:
        The path written.

    Raises:
        ValueError: unknown ``fmt``, or a model the numpy export does not support.
        specclass.persistence.RunFolderError: an incomplete run folder.
        ImportError: ``onnx`` without ``tf2onnx``/``onnx`` installed (the message says which).
    """
    from specclass.ensemble import is_ensemble
    from specclass.persistence import load_run

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    run_dir = Path(run_dir)
    if is_ensemble(run_dir):
        return export_ensemble(run_dir, fmt, out, model_format)
    run = load_run(run_dir, fmt=model_format, compile=False)
    meta = _run_json(run_dir)
    path = Path(out) if out is not None else run_dir / EXPORT_FORMATS[fmt]
    model = run.model
    if fmt == "numpy":
        layers, output, input_shape, n_out = keras_to_layers(model)
        return write_atomic(path, lambda tmp: write_network(tmp, layers, output, input_shape, n_out, meta),
                            suffix=".h5")
    # Keras 3 exports only models that have been called once
    model.predict(np.zeros((1, *model.input_shape[1:]), dtype=np.float32), verbose=0)
    if fmt == "onnx":
        return _export_onnx(model, path, meta)
    return _export_savedmodel(model, path, run_dir)


def export_ensemble(run_dir: str | os.PathLike, fmt: str = "numpy", out: str | os.PathLike | None = None,
                    model_format: str = "keras") -> Path:
    """Export every member of an ensemble folder as ``RUN/members/<name>/model.numpy.h5``.

    ``specclass predict RUN FILES`` then classifies with the members' numpy files
    where Keras is not installed (:func:`specclass.inference.load.load_any_run`).

    Returns:
        ``run_dir`` (the members' files are inside it).

    Raises:
        ValueError: ``fmt`` other than ``numpy`` or an ``out`` path (an ensemble is
            several networks: one file cannot hold it), or a member's model the numpy
            export does not support (names the member).
        specclass.ensemble.EnsembleError: the ensemble or a member is incomplete.
    """
    from specclass.ensemble import MEMBERS_DIR, read_ensemble_info

    run_dir = Path(run_dir)
    if fmt != "numpy":
        raise ValueError(f"{run_dir} is an ensemble: only --format numpy exports it (each member to "
                         f"{MEMBERS_DIR}/NAME/model.numpy.h5); export one member as {fmt} with "
                         f"'specclass export {run_dir / MEMBERS_DIR}/NAME --format {fmt}'")
    if out is not None:
        raise ValueError(f"{run_dir} is an ensemble: its members are exported inside it (--out is for a single run)")
    for name in read_ensemble_info(run_dir)["members"]:
        member = run_dir / MEMBERS_DIR / name
        try:
            export_run(member, "numpy", None, model_format)
        except ValueError as exc:
            raise ValueError(f"{run_dir}: member {name}: {exc}") from None
    return run_dir


def _export_onnx(model: "keras.Model", path: Path, meta: dict[str, str]) -> Path:
    try:
        import onnx
        import tf2onnx  # noqa: F401  (Keras' ONNX export needs it on the TensorFlow backend)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the packages tf2onnx and onnx ({exc}); "
                          "pip install tf2onnx onnx onnxruntime") from None

    def write(tmp: str) -> None:
        model.export(tmp, format="onnx", verbose=False)
        proto = onnx.load(tmp)
        for key, value in ((ONNX_PREPROCESSING_KEY, meta["preprocessing"]), (ONNX_CALIBRATION_KEY, meta["calibration"])):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, tmp)

    return write_atomic(path, write, suffix=".onnx")


def _export_savedmodel(model: "keras.Model", path: Path, run_dir: Path) -> Path:
    from specclass.calibration import CALIBRATION_FILE
    from specclass.persistence import PREPROCESSING_FILE

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        for name in (PREPROCESSING_FILE, CALIBRATION_FILE):
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
