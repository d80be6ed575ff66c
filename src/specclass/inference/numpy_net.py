"""Run an exported specclass network with numpy alone (no TensorFlow, no Keras).

Like QuasarNP (Farr et al., the numpy re-implementation of QuasarNET that runs in
DESI's pipeline), the network is a short list of layers applied in order; the
exported file (:mod:`specclass.inference.export`) holds each layer's operation,
its inputs, its parameters and its weights. The operations are the inference
forms of the Keras 3 layers the shipped networks use
(:mod:`specclass.models.spectral`), all ``channels_last`` (``x`` is ``(N, L, C)``):

``input``
    the spectrum batch ``(N, L, C)``.
``conv1d`` (``Conv1D``, dilation 1, groups 1)
    ``y[n, i, o] = b[o] + sum_{k, c} x_pad[n, i * s + k, c] * W[k, c, o]`` with
    ``W (kernel, C_in, C_out)``. ``padding='valid'``: no padding, ``L_out =
    (L - kernel) // s + 1``; ``'same'``: ``L_out = ceil(L / s)`` and
    ``pad = max((L_out - 1) * s + kernel - L, 0)`` zeros split ``pad // 2`` left,
    the rest right (TensorFlow's convention, which Keras 3 follows on every backend).
``batchnorm`` (``BatchNormalization``, inference)
    ``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``
    over the last axis (Ioffe & Szegedy 2015, arXiv:1502.03167).
``maxpool1d`` / ``avgpool1d``
    windows of ``pool`` pixels every ``s``; ``'same'`` pads like ``conv1d``
    (max ignores the padding; average divides by the pixels inside).
``global_avgpool1d`` / ``global_maxpool1d``
    mean / max over the ``L`` axis.
``dense`` (``Dense``): ``y = x @ W + b``.
``flatten``: ``(N, L, C) -> (N, L * C)`` in row-major order (Keras' order).
``add``, ``concat`` (last axis), ``identity`` (``Dropout`` and other
training-only layers), ``activation``.

Activations: ``linear``, ``relu``, ``sigmoid``, ``tanh``, ``softmax`` (last
axis, max subtracted first). Arithmetic is float32 like Keras on CPU; the
result equals Keras's ``model.predict`` to about 1e-6 (tests/test_numpy_predictor.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: ``format`` attribute of an exported numpy network file.
FORMAT_NAME = "specclass-numpy-network"
FORMAT_VERSION = 1

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0, out=x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max subtracted for stability), same dtype as ``x``."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activate(x: np.ndarray, name: str) -> np.ndarray:
    """Apply the Keras activation ``name``.

    Raises:
        ValueError: an activation this module does not implement.
    """
    if name == "softmax":
        return softmax(x)
    try:
        return ACTIVATIONS[name](x)
    except KeyError:
        raise ValueError(f"activation {name!r} is not supported by the numpy predictor "
                         f"(supported: {', '.join([*ACTIVATIONS, 'softmax'])})") from None


def _same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-length // stride)
    pad = max((out - 1) * stride + kernel - length, 0)
    return pad // 2, pad - pad // 2


def _windows(x: np.ndarray, kernel: int, stride: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """``(N, L_out, C, kernel)`` strided view of the (padded) input windows."""
    if padding == "same":
        left, right = _same_padding(x.shape[1], kernel, stride)
        if left or right:
            x = np.pad(x, ((0, 0), (left, right), (0, 0)), constant_values=fill)
    elif padding != "valid":
        raise ValueError(f"padding {padding!r} is not supported (valid, same)")
    if x.shape[1] < kernel:
        raise ValueError(f"input of {x.shape[1]} pixels is shorter than the kernel/pool of {kernel}")
    return np.lib.stride_tricks.sliding_window_view(x, kernel, axis=1)[:, ::stride]


def conv1d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int, padding: str) -> np.ndarray:
    """1-D convolution (Keras ``Conv1D``, see the module docstring); ``kernel`` is ``(k, C_in, C_out)``."""
    k, c_in, c_out = kernel.shape
    win = _windows(x, k, stride, padding).transpose(0, 1, 3, 2)  # (N, L_out, k, C_in): C_in contiguous
    n, l_out = win.shape[:2]
    y = win.reshape(n * l_out, k * c_in) @ kernel.reshape(k * c_in, c_out)  # one copy, one matmul
    if bias is not None:
        y += bias
    return y.reshape(n, l_out, c_out)


def pool1d(x: np.ndarray, pool: int, stride: int, padding: str, kind: str) -> np.ndarray:
    """Max or average pooling over windows of ``pool`` pixels every ``stride`` (Keras semantics)."""
    if kind == "max" and stride == pool:  # non-overlapping windows: a reshape, no strided window copy
        n, length, c = x.shape
        if padding == "same":
            left, right = _same_padding(length, pool, stride)
            if left or right:
                x = np.pad(x, ((0, 0), (left, right), (0, 0)), constant_values=-np.inf)
        elif padding != "valid":
            raise ValueError(f"padding {padding!r} is not supported (valid, same)")
        out = x.shape[1] // pool
        if out < 1:
            raise ValueError(f"input of {x.shape[1]} pixels is shorter than the pool of {pool}")
        return x[:, : out * pool].reshape(n, out, pool, c).max(axis=2)
    if kind == "max":
        return _windows(x, pool, stride, padding, fill=-np.inf).max(axis=-1)
    total = _windows(x, pool, stride, padding).sum(axis=-1)
    count = _windows(np.ones((1, x.shape[1], 1), x.dtype), pool, stride, padding).sum(axis=-1)
    return total / count


@dataclass
class Layer:
    """One node of the exported graph.

    Attributes:
        name: the Keras layer name.
        op: the operation (module docstring).
        inputs: names of the nodes feeding it (``[]`` for ``input``).
        params: operation parameters (``strides``, ``padding``, ``activation``, ``epsilon`` ...).
        weights: ``{'kernel', 'bias', 'gamma', 'beta', 'moving_mean', 'moving_variance'}`` arrays.
    """

    name: str
    op: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def prepare(self) -> None:
        """Fold batch-norm statistics into one scale and shift (done once, at load)."""
        if self.op == "batchnorm":
            w, eps = self.weights, float(self.params.get("epsilon", 1e-3))
            n = w["moving_mean"].shape[0]
            gamma = w.get("gamma", np.ones(n, np.float32))
            beta = w.get("beta", np.zeros(n, np.float32))
            scale = gamma / np.sqrt(w["moving_variance"].astype(np.float32) + np.float32(eps))
            self.params["_scale"] = scale.astype(np.float32)
            self.params["_shift"] = (beta - w["moving_mean"] * scale).astype(np.float32)

    def __call__(self, args: list[np.ndarray], inplace: bool = False) -> np.ndarray:
        """Apply the layer; ``inplace``: ``args[0]`` is read by nobody else and may be overwritten."""
        p, w, op = self.params, self.weights, self.op
        x = args[0]
        if op == "conv1d":
            y = conv1d(x, w["kernel"], w.get("bias"), int(p["strides"]), p["padding"])
            return activate(y, p.get("activation", "linear"))
        if op == "dense":
            y = x @ w["kernel"]
            if "bias" in w:
                y += w["bias"]
            return activate(y, p.get("activation", "linear"))
        if op == "batchnorm":
            return x * p["_scale"] + p["_shift"]
        if op == "activation":
            return activate(x if inplace else x.copy(), p["activation"])
        if op in ("maxpool1d", "avgpool1d"):
            return pool1d(x, int(p["pool_size"]), int(p["strides"]), p["padding"], op[:3])
        if op == "global_avgpool1d":
            return x.mean(axis=1)
        if op == "global_maxpool1d":
            return x.max(axis=1)
        if op == "flatten":
            return x.reshape(x.shape[0], -1)
        if op == "add":
            out = args[0] if inplace else args[0].copy()
            for a in args[1:]:
                out += a
            return out
        if op == "concat":
            return np.concatenate(args, axis=-1)
        if op in ("identity", "input"):
            return x
        raise ValueError(f"layer {self.name!r}: operation {op!r} is not supported by the numpy predictor")


def _fold_batchnorm(layers: list[Layer]) -> None:
    """Fold a batch-norm into the linear conv1d/dense before it (its only reader): ``W' = W * scale``,
    ``b' = b * scale + shift``; the batch-norm becomes an identity. Same function, one pass less."""
    by_name = {la.name: la for la in layers}
    readers: dict[str, int] = {}
    for la in layers:
        for n in la.inputs:
            readers[n] = readers.get(n, 0) + 1
    for la in layers:
        if la.op != "batchnorm" or len(la.inputs) != 1:
            continue
        src = by_name[la.inputs[0]]
        if src.op not in ("conv1d", "dense") or readers[src.name] != 1 or src.params.get("activation", "linear") != "linear":
            continue
        scale, shift = la.params["_scale"], la.params["_shift"]
        src.weights = dict(src.weights)
        src.weights["kernel"] = (src.weights["kernel"] * scale).astype(np.float32)
        src.weights["bias"] = (src.weights.get("bias", np.zeros_like(shift)) * scale + shift).astype(np.float32)
        la.op = "identity"


#: Operations :class:`Layer` runs.
OPS = ("input", "conv1d", "dense", "batchnorm", "activation", "maxpool1d", "avgpool1d", "global_avgpool1d",
       "global_maxpool1d", "flatten", "add", "concat", "identity")


class NumpyNetwork:
    """A feed-forward graph of :class:`Layer` s, evaluated with numpy.

    Has ``predict(x, batch_size=256, verbose=0)`` and ``output_shape`` like a Keras
    model, so :func:`specclass.predict.predict_arrays` runs it unchanged.

    Args:
        layers: nodes in an order where every input comes before its user.
        outputs: name of the output node (the softmax probabilities).
        input_shape: ``(L, C)`` expected per spectrum.

    Raises:
        ValueError: an unknown operation, or an input name that is not an earlier node.
    """

    def __init__(self, layers: list[Layer], output: str, input_shape: tuple[int, int], n_outputs: int) -> None:
        seen: set[str] = set()
        for layer in layers:
            if layer.op not in OPS:
                raise ValueError(f"layer {layer.name!r}: operation {layer.op!r} is not supported "
                                 f"by the numpy predictor (supported: {', '.join(OPS)})")
            missing = [i for i in layer.inputs if i not in seen]
            if missing:
                raise ValueError(f"layer {layer.name!r} reads {missing}, which come later or do not exist")
            if layer.op in ("conv1d", "dense", "activation"):
                activate(np.zeros((1, 1), np.float32), layer.params.get("activation", "linear"))
            layer.prepare()
            seen.add(layer.name)
        if output not in seen:
            raise ValueError(f"output node {output!r} is not in the graph")
        _fold_batchnorm(layers)
        self.layers, self.output = layers, output
        self.input_shape = tuple(int(v) for v in input_shape)
        self.output_shape = (None, int(n_outputs))
        # how many later layers read each node: free a node's array after its last reader
        self._last_use: dict[str, int] = {}
        readers: dict[str, int] = {}
        for i, layer in enumerate(layers):
            for name in layer.inputs:
                self._last_use[name] = i
                readers[name] = readers.get(name, 0) + 1
        # a node's array may be overwritten by its reader when nobody else sees that array: one reader,
        # not the network input, and (identities pass their input array on) the same up the chain
        by_name = {la.name: la for la in layers}

        def owned(name: str) -> bool:
            node = by_name[name]
            if readers.get(name, 0) != 1 or node.op == "input" or name == output:
                return False
            return owned(node.inputs[0]) if node.op == "identity" else True

        self._inplace = {la.name: bool(la.inputs) and owned(la.inputs[0]) for la in layers}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Forward pass of one batch ``(N, L, C)`` float32 -> ``(N, n_outputs)`` float32."""
        values: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            args = [values[n] for n in layer.inputs] or [x]
            values[layer.name] = layer(args, self._inplace[layer.name])
            for n in layer.inputs:
                if self._last_use.get(n) == i and n != self.output:
                    del values[n]
        return values[self.output]

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """Class probabilities for ``x`` ``(N, L, C)``, in batches of ``batch_size`` (``verbose`` is ignored).

        Raises:
            ValueError: ``x`` is not ``(N, L, C)`` with this network's ``(L, C)``.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != self.input_shape:
            raise ValueError(f"input has shape {x.shape}; the network takes (N, {', '.join(map(str, self.input_shape))})")
        out = np.zeros((x.shape[0], self.output_shape[1]), dtype=np.float32)
        for start in range(0, x.shape[0], max(1, int(batch_size))):
            out[start : start + batch_size] = self(x[start : start + batch_size])
        return out


def write_network(path: str | os.PathLike, layers: list[Layer], output: str, input_shape: tuple[int, int],
                  n_outputs: int, attrs: dict[str, str]) -> None:
    """Write a network file (HDF5; use :func:`specclass.atomic.write_atomic` for an atomic write).

    Layout: root attributes ``format``, ``format_version``, ``graph`` (JSON list of
    ``{name, op, inputs, params}``), ``output``, ``input_shape``, ``n_outputs`` plus
    ``attrs`` (JSON strings: ``preprocessing``, ``calibration``, ``config``);
    group ``weights/<layer name>/<weight name>`` float32 datasets.
    """
    import h5py

    graph = [{"name": la.name, "op": la.op, "inputs": la.inputs,
              "params": {k: v for k, v in la.params.items() if not k.startswith("_")}} for la in layers]
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["graph"] = json.dumps(graph)
        f.attrs["output"] = output
        f.attrs["input_shape"] = list(input_shape)
        f.attrs["n_outputs"] = int(n_outputs)
        for k, v in attrs.items():
            f.attrs[k] = v
        g = f.create_group("weights")
        for la in layers:
            for wname, arr in la.weights.items():
                g.create_dataset(f"{la.name}/{wname}", data=np.asarray(arr, dtype=np.float32))


def read_network(path: str | os.PathLike) -> tuple[NumpyNetwork, dict[str, str]]:
    """Load a network file written by :func:`write_network`.

    Returns:
        ``(network, attrs)`` with ``attrs`` the JSON string attributes (``preprocessing``, ``calibration``, ``config``).

    Raises:
        ValueError: not a specclass numpy network file, a newer format version, or an unsupported layer
            (the message names the file).
        OSError: the file cannot be opened as HDF5.
    """
    import h5py

    name = os.fspath(path)
    with h5py.File(name, "r") as f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{name}: not a specclass numpy network file (format={f.attrs.get('format')!r})")
        if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{name}: format_version {f.attrs['format_version']} is newer than {FORMAT_VERSION}")
        graph = json.loads(f.attrs["graph"])
        weights = f["weights"]
        layers = []
        for node in graph:
            w = {k: np.asarray(v[()], dtype=np.float32) for k, v in weights[node["name"]].items()} \
                if node["name"] in weights else {}
            layers.append(Layer(node["name"], node["op"], list(node["inputs"]), dict(node["params"]), w))
        attrs = {k: str(v) for k, v in f.attrs.items() if k in ("preprocessing", "calibration", "config")}
        try:
            net = NumpyNetwork(layers, str(f.attrs["output"]), tuple(f.attrs["input_shape"]), int(f.attrs["n_outputs"]))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return net, attrs
