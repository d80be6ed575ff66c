"""Load an exported model (numpy network file or ONNX) as a run: same predict path, no TensorFlow.

:func:`load_exported` returns a :class:`specclass.persistence.LoadedRun` whose
``model`` has ``predict(x, batch_size, verbose)`` and ``output_shape`` like a
Keras model, with the preprocessing and calibration stored in the file; so
:func:`specclass.predict.predict_files` / ``specclass predict EXPORTED FILES``
classify with it exactly as with the run folder. Imports numpy and h5py
(``onnxruntime`` for ``.onnx``), never TensorFlow or Keras.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from specclass.calibration import TemperatureCalibration
from specclass.persistence import LoadedRun, RunFolderError
from specclass.preprocessing import Preprocessor

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def exported_kind(path: str | os.PathLike) -> str | None:
    """``'numpy'`` (an HDF5 file), ``'onnx'`` (suffix ``.onnx``) or ``None`` (not an exported model file)."""
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix.lower() == ".onnx":
        return "onnx"
    with p.open("rb") as fh:
        return "numpy" if fh.read(8) == HDF5_SIGNATURE else None


class OnnxNetwork:
    """An ONNX Runtime session with ``predict``/``output_shape`` like a Keras model.

    Args:
        path: a ``.onnx`` file from ``specclass export RUN --format onnx``.
        threads: intra-op threads (``None``: ONNX Runtime's default).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_shape = (None, int(self.session.get_outputs()[0].shape[-1]))
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """Probabilities ``(N, n_classes)`` float32 for ``x`` ``(N, L, C)``."""
        x = np.asarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], self.output_shape[1]), dtype=np.float32)
        for start in range(0, x.shape[0], max(1, int(batch_size))):
            out[start : start + batch_size] = self.session.run(None, {self.input_name: x[start : start + batch_size]})[0]
        return out


def load_exported(path: str | os.PathLike, *, threads: int | None = None) -> LoadedRun:
    """Load ``model.numpy.h5`` or ``model.onnx`` (``specclass export``) as a :class:`LoadedRun`.

    Args:
        path: the exported file.
        threads: ONNX Runtime intra-op threads (ignored for numpy files).

    Returns:
        ``LoadedRun`` with ``model`` a :class:`~specclass.inference.numpy_net.NumpyNetwork`
        or :class:`OnnxNetwork`, ``preprocessor``, ``calibration`` (``None`` if the run had
        none), ``config``, ``run_dir`` = the file.

    Raises:
        RunFolderError: the file is missing, not an exported specclass model, or lacks the
            preprocessing (the message names the file and the reason).
    """
    from specclass.inference.numpy_net import read_network

    p = Path(path)
    kind = exported_kind(p)
    if kind is None:
        raise RunFolderError(f"{p}: not an exported model file (model.numpy.h5 or model.onnx from 'specclass export')")
    try:
        if kind == "numpy":
            model: Any
            model, attrs = read_network(p)
            pre_json, cal_json, cfg_json = attrs.get("preprocessing", ""), attrs.get("calibration", ""), attrs.get("config", "{}")
        else:
            from specclass.inference.export import ONNX_CALIBRATION_KEY, ONNX_PREPROCESSING_KEY

            model = OnnxNetwork(p, threads=threads)
            pre_json = model.metadata.get(ONNX_PREPROCESSING_KEY, "")
            cal_json, cfg_json = model.metadata.get(ONNX_CALIBRATION_KEY, ""), "{}"
    except ImportError as exc:
        raise RunFolderError(f"{p}: an ONNX model needs onnxruntime ({exc}); pip install onnxruntime") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{p}: cannot load the exported model ({exc})") from None
    if not pre_json:
        raise RunFolderError(f"{p}: holds no preprocessing (export it with 'specclass export RUN --format {kind}')")
    try:
        pre = Preprocessor.from_dict(json.loads(pre_json))
        cal = TemperatureCalibration.from_dict(json.loads(cal_json)) if cal_json else None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{p}: its preprocessing/calibration is not valid ({exc})") from None
    if model.output_shape[-1] != len(pre.class_names):
        raise RunFolderError(f"{p}: the network has {model.output_shape[-1]} outputs but the preprocessing names "
                             f"{len(pre.class_names)} classes {pre.class_names}")
    return LoadedRun(model, pre, json.loads(cfg_json), p, None, cal)


def _member_numpy_loader(member: Path) -> LoadedRun:
    path = member / "model.numpy.h5"
    if not path.is_file():
        raise RunFolderError(f"Keras is not installed and {path} is missing (make the members' numpy files where "
                             "Keras is: 'specclass export ENSEMBLE_RUN')")
    return load_exported(path)


def load_any_run(run: str | os.PathLike, fmt: str = "keras") -> LoadedRun:
    """A run folder (Keras; or its ``model.numpy.h5`` when Keras cannot be imported or the folder
    has no ``model.keras``, as the packaged pretrained classifiers) or an exported file.

    Args:
        run: run folder (or ensemble folder: without Keras, its members' ``model.numpy.h5``),
            ``model.numpy.h5`` or ``model.onnx``.
        fmt: model file of a run folder (``keras``, ``h5``, ``json``).

    Raises:
        RunFolderError: as :func:`specclass.persistence.load_run` / :func:`load_exported`.
    """
    from specclass.ensemble import is_ensemble, load_ensemble
    from specclass.persistence import load_run

    p = Path(run)
    if p.is_file():
        return load_exported(p)
    try:
        import keras  # noqa: F401
    except ImportError:
        if is_ensemble(p):  # every member's model.numpy.h5 ('specclass export RUN')
            return load_ensemble(p, loader=_member_numpy_loader)
        if (p / "model.numpy.h5").is_file():
            return load_exported(p / "model.numpy.h5")
        raise RunFolderError(f"{p}: Keras is not installed and the run folder has no model.numpy.h5 "
                             "(make it where Keras is: 'specclass export RUN')") from None
    if fmt == "keras" and not (p / "model.keras").is_file() and (p / "model.numpy.h5").is_file():
        return load_exported(p / "model.numpy.h5")  # e.g. the packaged pretrained classifiers (numpy only)
    return load_run(p, fmt=fmt, compile=False)
