"""Model registry and the spectral networks (exact tutorial layers, resnet design, backends)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass.models import (  # noqa: E402
    DEFAULT_MODEL,
    UnknownModelError,
    get_model,
    list_models,
    model_spec,
    register_model,
)

L = 3801  # the default dataset grid (3.58-3.96, 1e-4 dex)


def test_registry_lists_spectral_and_mnist_models():
    names = list_models()
    assert {"spectral_tutorial", "spectral_resnet"} <= set(names)
    assert names == sorted(names)
    assert DEFAULT_MODEL == "spectral_tutorial"  # the cross-validated best (README "Benchmarks")
    if "specclass.models.mnist" in sys.modules:  # present in this tree: registered lazily
        assert {"mnist_dense", "mnist_cnn"} <= set(names)


def test_unknown_model_error_lists_known_names():
    with pytest.raises(UnknownModelError) as exc:
        get_model("spectral_transformer", L, 4)
    msg = str(exc.value)
    assert "spectral_transformer" in msg and "spectral_resnet" in msg and "spectral_tutorial" in msg


def test_unknown_option_names_allowed_ones():
    with pytest.raises(ValueError, match="no option.*dropot.*allowed: .*dropout"):
        get_model("spectral_resnet", L, 4, dropot=0.1)


def test_register_model_rejects_bad_and_conflicting_names():
    with pytest.raises(ValueError, match="identifier"):
        register_model("bad name")

    with pytest.raises(ValueError, match="already registered"):

        @register_model("spectral_tutorial")
        def other(input_length, n_classes):  # pragma: no cover - never built
            return None


def test_registry_import_does_not_import_keras():
    code = "import sys, specclass.models as m; assert 'keras' not in sys.modules, 'keras imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _layer_summary(model):
    rows = []
    for layer in model.layers:
        cfg = layer.get_config()
        name = type(layer).__name__
        if name == "Conv1D":
            rows.append((name, cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]), cfg["padding"],
                         cfg["activation"]))
        elif name == "MaxPooling1D":
            rows.append((name, tuple(cfg["pool_size"]), tuple(cfg["strides"])))
        elif name == "Dropout":
            rows.append((name, cfg["rate"]))
        elif name == "Dense":
            rows.append((name, cfg["units"], cfg["activation"]))
        else:
            rows.append((name,))
    return rows


def test_spectral_tutorial_is_exactly_the_tutorial_network():
    model = get_model("spectral_tutorial", L, 4)
    assert _layer_summary(model) == [
        ("Conv1D", 64, (80,), (10,), "valid", "relu"),
        ("MaxPooling1D", (3,), (3,)),
        ("Dropout", 0.35),
        ("Conv1D", 128, (40,), (10,), "valid", "relu"),
        ("MaxPooling1D", (3,), (3,)),
        ("Dropout", 0.35),
        ("Flatten",),
        ("Dense", 128, "relu"),
        ("Dropout", 0.35),
        ("Dense", 4, "softmax"),
    ]
    assert model.input_shape == (None, L, 1)
    assert model.output_shape == (None, 4)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "sparse_categorical_crossentropy"
    # L=3801: conv 373 -> pool 124 -> conv 9 -> pool 3 -> 3*128 flattened
    conv1, conv2 = (lay for lay in model.layers if type(lay).__name__ == "Conv1D")
    assert conv1.count_params() == 80 * 1 * 64 + 64
    assert conv2.count_params() == 40 * 64 * 128 + 128
    assert model.layers[6].output.shape[-1] == 3 * 128


def test_spectral_tutorial_rejects_too_short_input():
    with pytest.raises(ValueError, match="too short"):
        get_model("spectral_tutorial", 1000, 3)
    with pytest.raises(ValueError, match="n_classes"):
        get_model("spectral_tutorial", L, 1)


def test_spectral_resnet_design():
    model = get_model("spectral_resnet", L, 4)
    kinds = [type(lay).__name__ for lay in model.layers]
    convs = [lay for lay in model.layers if type(lay).__name__ == "Conv1D"]
    stem = convs[0]
    # emission-line resolution: a small kernel and stride <= 2 on the full-resolution input
    assert stem.get_config()["kernel_size"][0] <= 9 and stem.get_config()["strides"][0] <= 2
    assert stem.input.shape[1] == L
    assert kinds.count("BatchNormalization") >= len(convs)
    assert "Add" in kinds  # residual connections
    assert "Flatten" in kinds  # default head keeps positions on the grid
    pooled = get_model("spectral_resnet", L, 4, head="global")
    pooled_kinds = [type(lay).__name__ for lay in pooled.layers]
    assert "GlobalAveragePooling1D" in pooled_kinds and "GlobalMaxPooling1D" in pooled_kinds
    with pytest.raises(ValueError, match="head"):
        get_model("spectral_resnet", L, 4, head="attention")
    assert "Dropout" in kinds
    assert max(c.get_config()["filters"] for c in convs) <= 64
    assert model.count_params() < 200_000
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    x = np.random.default_rng(0).normal(size=(5, L, 1)).astype("float32")
    p = model.predict(x, verbose=0)
    assert p.shape == (5, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_spectral_resnet_options_channels_schedule():
    model = get_model("spectral_resnet", 2000, 3, channels=2, filters=[8, 16], decay_steps=100, warmup_steps=10,
                      weight_decay=0.0)
    assert model.input_shape == (None, 2000, 2)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert not isinstance(model.optimizer, keras.optimizers.AdamW)
    assert isinstance(model.optimizer.learning_rate, keras.Variable) or hasattr(model.optimizer, "_learning_rate")
    assert isinstance(model.optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    with pytest.raises(ValueError, match="channels"):
        get_model("spectral_resnet", 2000, 3, channels=3)
    with pytest.raises(ValueError, match="filters"):
        get_model("spectral_resnet", 2000, 3, filters=[])
    assert model_spec("spectral_resnet").options["channels"] == 1


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode != 0,
    reason="jax not installed",
)
def test_models_build_and_fit_under_jax_backend():
    """Backend-neutral: both networks build and predict, the resnet fits a step, with KERAS_BACKEND=jax."""
    code = textwrap.dedent(
        """
        import numpy as np, keras
        assert keras.backend.backend() == "jax"
        from specclass.models import get_model
        x = np.random.default_rng(0).normal(size=(8, 1870, 1)).astype("float32")
        y = np.arange(8) % 3
        p = get_model("spectral_tutorial", 1870, 3).predict(x, verbose=0)
        assert p.shape == (8, 3) and np.allclose(p.sum(1), 1, atol=1e-4)
        m = get_model("spectral_resnet", 1870, 3, filters=[8, 16])
        m.fit(x, y, epochs=1, batch_size=8, verbose=0)
        p = m.predict(x, verbose=0)
        assert p.shape == (8, 3) and np.allclose(p.sum(1), 1, atol=1e-4)
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_models_listing_agrees_with_the_registry_without_importing_keras():
    # issue 12 item 12: `specclass models` took 10 s (a TensorFlow import) just to list names
    import subprocess
    import sys

    from specclass.models import describe_builtin_models, list_models, model_spec

    light = describe_builtin_models()
    assert sorted(light) == list_models()
    for name, (summary, options) in light.items():
        spec = model_spec(name)
        assert (summary, options) == (spec.summary, spec.options), name
    code = ("import sys; from specclass.cli import main; rc = main(['models']); "
            "print('heavy:', sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "spectral_tutorial (default): " in out.stdout and "heavy: []" in out.stdout


_RETRACE = r"""
import sys
import numpy as np
import keras
if sys.argv[1] == "quiet":
    from specclass.cli import quiet_tensorflow_retracing
    quiet_tensorflow_retracing()
import tensorflow as tf
x = np.random.default_rng(0).random((70, 50, 1)).astype("float32")
for k in range(4):  # a new model each time, as demo / train + evaluate do
    m = keras.Sequential([keras.Input((50, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    m.predict(x, batch_size=32, verbose=0)
    m.predict(x[:10], verbose=0)
tf.get_logger().warning("another TensorFlow warning")
"""


def test_tensorflow_retracing_warning_is_dropped_and_nothing_else():
    # issue 12 item 12: the demo printed TensorFlow's retracing warning
    outs = {}
    for mode in ("loud", "quiet"):
        res = subprocess.run([sys.executable, "-c", _RETRACE, mode], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert res.returncode == 0, res.stderr[-2000:]
        outs[mode] = res.stderr
    assert "triggered tf.function retracing" in outs["loud"]  # the input reproduces it
    assert "triggered tf.function retracing" not in outs["quiet"]
    assert "another TensorFlow warning" in outs["quiet"]
