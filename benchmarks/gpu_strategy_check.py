"""Check the one-node GPU paths of :mod:`specclass.cluster.distribute` on a GPU machine.

Run from the repository root: ``python benchmarks/gpu_strategy_check.py``.

* TensorFlow: the first GPU is split into two logical GPUs, so
  ``get_strategy("mirrored")`` builds a two-replica ``MirroredStrategy`` even on a
  one-GPU machine; a small model is trained with it and, for comparison, on one
  device with the same global batches. The losses must agree to float32 precision
  (mirrored sums the replicas' gradients of equal halves of each batch).
* JAX: ``get_strategy("data-parallel")`` over the visible GPUs, same model.

Prints one JSON line per check; a backend or GPU that is missing is reported, not
an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")
    return x, y


def _fit(strategy=None):
    import keras

    x, y = _data()
    keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy is not None else __import__("contextlib").nullcontext()
    with scope:
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    hist = model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
    return [float(v) for v in hist.history["loss"]]


def check_tensorflow() -> dict:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        import tensorflow as tf
    except ImportError as exc:
        return {"check": "tensorflow-mirrored", "skipped": f"tensorflow not importable: {exc}"}
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"check": "tensorflow-mirrored", "skipped": f"no GPU visible to TensorFlow {tf.__version__}"}
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=4096)] * 2)
    from specclass.cluster.distribute import get_strategy

    strategy = get_strategy("mirrored")
    with tf.device("/GPU:0"):
        single = _fit()
    mirrored = _fit(strategy.tf_strategy)
    diff = max(abs(a - b) for a, b in zip(single, mirrored))
    return {"check": "tensorflow-mirrored", "tf": tf.__version__, "strategy": strategy.describe(),
            "logical_gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
            "loss_single": single, "loss_mirrored": mirrored, "max_abs_diff": diff, "ok": diff < 1e-4}


def check_jax() -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    try:
        import jax
    except ImportError as exc:
        return {"check": "jax-data-parallel", "skipped": f"jax not importable: {exc}"}
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        return {"check": "jax-data-parallel", "skipped": f"no GPU visible to jax {jax.__version__}"}
    from specclass.cluster.distribute import get_strategy

    strategy = get_strategy("data-parallel")
    loss = _fit(strategy)
    return {"check": "jax-data-parallel", "jax": jax.__version__, "strategy": strategy.describe(),
            "loss": loss, "ok": loss[-1] < loss[0]}


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    which = sys.argv[1] if len(sys.argv) > 1 else None
    if which == "tensorflow":
        print(json.dumps(check_tensorflow()), flush=True)
        return 0
    if which == "jax":
        print(json.dumps(check_jax()), flush=True)
        return 0
    # each backend in its own process (the Keras backend is fixed at import)
    for name in ("tensorflow", "jax"):
        res = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, timeout=600)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        print(lines[-1] if lines else json.dumps({"check": name, "error": res.stderr[-1500:]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
