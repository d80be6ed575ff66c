"""Tests for the Keras MNIST track: loader (file, offline cache, real local HTTP download),
normalisation semantics, the two networks, a short training run, every save/load path,
and the ``specclass mnist`` commands in a real subprocess."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from specclass.datasets.mnist import (
    KERAS_MNIST_SHA256,
    MnistFormatError,
    load_mnist,
    normalise,
    read_mnist_npz,
)


@pytest.fixture(scope="module")
def mnist_npz(shared_data) -> Path:
    path = shared_data / "mnist" / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def mnist_small(mnist_npz):
    """3,000 training and 1,000 test images of the real set."""
    (x, y), (xt, yt) = read_mnist_npz(mnist_npz)
    return (x[:3000], y[:3000]), (xt[:1000], yt[:1000])


# --------------------------------------------------------------------------- data
def test_read_full_file_keras_layout(mnist_npz):
    (x, y), (xt, yt) = read_mnist_npz(mnist_npz)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == y.dtype == xt.dtype == yt.dtype == np.uint8
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # PROVENANCE.md
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.zeros(2, np.uint8),
          "x_test": np.zeros((1, 28, 28), np.uint8)}, r"missing array\(s\) \['y_test'\]"),
        ({"x_train": np.zeros((2, 28, 28), np.float32), "y_train": np.zeros(2, np.uint8),
          "x_test": np.zeros((1, 28, 28), np.uint8), "y_test": np.zeros(1, np.uint8)}, "x_train has dtype float32"),
        ({"x_train": np.zeros((2, 32, 32), np.uint8), "y_train": np.zeros(2, np.uint8),
          "x_test": np.zeros((1, 28, 28), np.uint8), "y_test": np.zeros(1, np.uint8)}, r"x_train has shape \(2, 32, 32\)"),
        ({"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.zeros(3, np.uint8),
          "x_test": np.zeros((1, 28, 28), np.uint8), "y_test": np.zeros(1, np.uint8)}, "2 images but y_train 3 labels"),
        ({"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.array([0, 10], np.uint8),
          "x_test": np.zeros((1, 28, 28), np.uint8), "y_test": np.zeros(1, np.uint8)}, "label 10 outside 0..9"),
    ],
)
def test_bad_file_named_with_reason(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(MnistFormatError, match=match) as err:
        read_mnist_npz(path)
    assert str(path) in str(err.value)


def test_not_an_npz_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(MnistFormatError, match="not a readable .npz"):
        load_mnist(path=junk)
    with pytest.raises(FileNotFoundError):
        load_mnist(path=tmp_path / "nope.npz")


def test_cached_file_is_read_offline(mnist_npz, tmp_path):
    # The shared file's sha256 is not Keras's: Keras's own loader would download again.
    (tmp_path / "datasets").mkdir()
    os.symlink(mnist_npz, tmp_path / "datasets" / "mnist.npz")
    (x, y), (xt, yt) = load_mnist(cache_dir=tmp_path, origin="http://127.0.0.1:9/unreachable/mnist.npz")
    assert x.shape == (60000, 28, 28) and yt.shape == (10000,)


@pytest.fixture()
def http_server(mnist_npz):
    """A real HTTP server on 127.0.0.1 serving the shared mnist folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_npz.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_through_keras_get_file(mnist_npz, tmp_path, http_server):
    sha = hashlib.sha256(mnist_npz.read_bytes()).hexdigest()
    # Keras's hash does not match the shared file: Keras refuses it, nothing stays in the cache.
    with pytest.raises(ValueError, match="hash does not match"):
        load_mnist(cache_dir=tmp_path, origin=f"{http_server}/mnist.npz", file_hash=KERAS_MNIST_SHA256)
    assert not (tmp_path / "datasets" / "mnist.npz").exists()
    (x, y), _ = load_mnist(cache_dir=tmp_path, origin=f"{http_server}/mnist.npz", file_hash=sha)
    cached = tmp_path / "datasets" / "mnist.npz"
    assert cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == sha
    assert y[:5].tolist() == [5, 0, 4, 1, 9]


def test_normalise_scale_and_keras_l2(mnist_small):
    (x, _), _ = mnist_small
    x = x[:50]
    s = normalise(x)
    assert s.dtype == np.float32 and s.shape == x.shape
    assert s.min() == 0.0 and s.max() == 1.0
    np.testing.assert_allclose(s, x / 255.0, rtol=1e-6)
    l2 = normalise(x, "keras_l2")
    # keras.utils.normalize(x, axis=1): each vector along the rows' axis (an image
    # column) gets unit L2 norm; blank columns stay 0. Not a 0-1 scaling.
    norms = np.linalg.norm(l2.astype(np.float64), axis=1)
    blank = x.astype(np.int64).sum(axis=1) == 0
    np.testing.assert_allclose(norms[~blank], 1.0, rtol=1e-5)
    assert np.all(norms[blank] == 0)
    assert l2.min() >= 0 and l2.max() <= 1.0 and not np.allclose(l2, s)
    # A uniformly white image: scale gives 1 everywhere, keras_l2 gives 1/sqrt(28).
    white = np.full((1, 28, 28), 255, dtype=np.uint8)
    assert np.all(normalise(white) == 1.0)
    np.testing.assert_allclose(normalise(white, "keras_l2"), 1 / np.sqrt(28), rtol=1e-6)
    with pytest.raises(ValueError, match=r"pixels must be in \[0, 255\]"):
        normalise(np.full((1, 28, 28), 300.0))
    with pytest.raises(ValueError, match="method must be 'scale' or 'keras_l2'"):
        normalise(x, "minmax")


# --------------------------------------------------------------------------- models
def test_models_registered_with_tutorial_architecture():
    from specclass.models import get_model, list_models, model_spec

    assert {"mnist_dense", "mnist_cnn"} <= set(list_models())
    dense = get_model("mnist_dense", 784, 10)
    assert [layer.count_params() for layer in dense.layers[1:]] == [0, 100480, 1290]
    assert dense.input_shape == (None, 28, 28) and dense.output_shape == (None, 10)
    assert type(dense.optimizer).__name__ == "Adam"
    cnn = get_model("mnist_cnn", 784, 10)
    assert cnn.count_params() == 1_199_882
    assert [type(layer).__name__ for layer in cnn.layers[1:]] == [
        "Reshape", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    assert [layer.rate for layer in cnn.layers if type(layer).__name__ == "Dropout"] == [0.25, 0.5]
    tutorial = get_model("mnist_cnn", 784, 10, optimizer="tutorial")
    assert type(tutorial.optimizer).__name__ == "Adadelta"
    assert float(tutorial.optimizer.learning_rate) == pytest.approx(0.1)
    assert "optimizer" in model_spec("mnist_cnn").options
    with pytest.raises(ValueError, match="square image"):
        get_model("mnist_dense", 780, 10)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        get_model("mnist_cnn", 784, 10, optimizer="sgd")


@pytest.fixture(scope="module")
def trained_run(mnist_small, tmp_path_factory):
    from specclass.commands.mnist import train

    out = tmp_path_factory.mktemp("mnist-run")
    config = train("mnist_dense", out, data=mnist_small, data_path="test-subset", epochs=3, batch_size=32,
                   limit=3000, seed=1, verbose=0)
    return out, config


def test_short_training_beats_chance(trained_run, mnist_small):
    import keras

    out, config = trained_run
    _, (xt, yt) = mnist_small
    hist = config["history"]
    assert len(hist["loss"]) == 3 and hist["loss"][-1] < hist["loss"][0]
    assert config["n_train"] == 2700 and config["n_val"] == 300
    assert config["device"] in ("cpu", "gpu") and config["backend"] == keras.backend.backend()
    model = keras.saving.load_model(out / "model.keras")
    acc = float(np.mean(model.predict(normalise(xt), verbose=0).argmax(axis=1) == yt))
    assert acc > 0.8, f"test accuracy {acc} after 3 epochs on 2,700 images (chance is 0.1)"
    for name in ("config.json", "history.json", "history.csv", "model.keras", "model.h5", "model.json",
                 "model.weights.h5"):
        assert (out / name).stat().st_size > 0, name


def test_every_save_path_gives_identical_predictions(trained_run, mnist_small):
    from specclass.commands.mnist import load_model_format

    out, _ = trained_run
    x = normalise(mnist_small[1][0][:200])
    reference = load_model_format(out, "keras").predict(x, verbose=0)
    for fmt in ("h5", "json", "weights"):
        np.testing.assert_array_equal(load_model_format(out, fmt).predict(x, verbose=0), reference, err_msg=fmt)


def test_keras3_weights_suffix_rule(trained_run, tmp_path):
    import keras

    out, _ = trained_run
    model = keras.saving.load_model(out / "model.keras")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        model.save_weights(tmp_path / "weights.h5")  # the tutorial's name: refused by Keras 3


def test_evaluate_writes_metrics_plots_report(trained_run, mnist_small):
    from sklearn.metrics import accuracy_score

    from specclass.commands.mnist import evaluate

    out, _ = trained_run
    m = evaluate(out, data=mnist_small, fmt="keras", limit=500, n_digits=8)
    assert m["n"] == 500 and m["keras_accuracy"] == pytest.approx(m["sklearn_accuracy"], abs=1e-6)
    assert m["accuracy"] == pytest.approx(m["sklearn_accuracy"])
    assert m["confusion_matrix"]["labels"] == [str(d) for d in range(10)]
    counts = np.array(m["confusion_matrix"]["counts"])
    assert counts.shape == (10, 10) and counts.sum() == 500
    yt = mnist_small[1][1][:500]
    assert np.array_equal(counts.sum(axis=1), np.bincount(yt, minlength=10))
    pred = np.array([r["predicted"] for r in m["misclassified"]], dtype=int)
    assert accuracy_score(yt, yt) == 1.0 and len(pred) == int(round((1 - m["accuracy"]) * 500))
    for name in ("metrics.json", "misclassified.csv", "confusion_matrix.png", "curves.png", "digits.png",
                 "misclassified_digits.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "https://" not in html and "<script" not in html
    assert json.loads((out / "metrics.json").read_text())["keras_accuracy"] == m["keras_accuracy"]


# --------------------------------------------------------------------------- CLI
def _cli(*args, env_extra=None, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "specclass", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_train_evaluate_cpu_and_plain_keras_reload(mnist_npz, tmp_path, capsys):
    run = tmp_path / "run"
    r = _cli("mnist", "train", "--model", "mnist_cnn", "--epochs", "1", "--limit", "600", "--batch-size", "60",
             "--data", mnist_npz, "--device", "cpu", "--out", run)
    assert r.returncode == 0, r.stderr
    assert "training mnist_cnn on cpu" in r.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cpu" and config["gpus"] == [] and config["epochs"] == 1
    assert config["data"] == str(mnist_npz.resolve()) and config["optimizer"] == "Adam"
    assert config["recipe"] == "augmented" and config["restore_best"] and config["lr_schedule"] == "cosine"
    assert "kept epoch 1" in r.stdout
    from specclass.cli import main

    assert main(["mnist", "evaluate", str(run), "--format", "h5", "--limit", "300"]) == 0  # in-process: same code
    assert "keras.metrics.Accuracy" in capsys.readouterr().out and (run / "report.html").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 300 and metrics["format"] == "h5"
    # A model trained by specclass reloads in plain Keras, without specclass imported.
    code = (
        "import sys, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "x = np.load(sys.argv[2])['x_test'][:50] / 255.0\n"
        "print(','.join(map(str, m.predict(x.astype('float32'), verbose=0).argmax(1))))\n"
        "assert 'specclass' not in sys.modules\n"
    )
    plain = subprocess.run([sys.executable, "-c", code, str(run / "model.keras"), str(mnist_npz)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert plain.returncode == 0, plain.stderr
    import keras

    ours = keras.saving.load_model(run / "model.keras")
    (_, _), (xt, _) = read_mnist_npz(mnist_npz)
    expected = ours.predict(normalise(xt[:50]), verbose=0).argmax(1)
    assert plain.stdout.strip().splitlines()[-1] == ",".join(map(str, expected))


def test_cli_user_errors(tmp_path, mnist_npz, capsys):
    from specclass.cli import main

    assert main(["mnist", "evaluate", str(tmp_path / "no-run")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    # (--device auto: in a process that already imported the backend, --device cpu is refused
    # when a GPU is visible, since the GPU can no longer be hidden.)
    assert main(["mnist", "train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.npz: no such MNIST file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["mnist", "train", "--epochs", "0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
    from specclass.commands.mnist import detect_device

    if not detect_device()["gpus"]:
        assert main(["mnist", "train", "--device", "gpu", "--data", str(mnist_npz), "--out", str(tmp_path / "x")]) == 2
        assert "sees no GPU" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cosine_schedule_and_adamw_recorded(mnist_small, tmp_path):
    from specclass.commands.mnist import train

    config = train("mnist_dense", tmp_path, data=mnist_small, epochs=2, limit=600, optimizer="adamw",
                   weight_decay=0.01, lr_schedule="cosine", extra_formats=False, verbose=0)
    # lr_e = lr_0 * (1 + cos(pi * e / epochs)) / 2 for e = 0, 1
    assert config["history"]["learning_rate"] == pytest.approx([1e-3, 5e-4])
    assert config["optimizer"] == "AdamW" and config["lr_schedule"] == "cosine"
    assert config["model_options"] == {"optimizer": "adamw", "weight_decay": 0.01}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "history.csv", "history.json", "model.keras"]


# --------------------------------------------------------------------------- augmentation, best epoch, recipes
def test_augment_images_shift_rotation_semantics():
    from specclass.datasets.mnist import augment_images

    x = np.zeros((3, 28, 28), np.float32)
    x[:, 10:14, 12:16] = 1.0  # a 4x4 square
    same = augment_images(x, np.random.default_rng(0), max_shift=0, max_rotation=0)
    np.testing.assert_array_equal(same, x)
    assert same is not x

    class FixedShift:  # a generator whose uniform() returns the bound: shift (+2, +2), rotation +limit
        def uniform(self, low, high, size):
            return np.full(size, high, dtype=float)

    shifted = augment_images(x, FixedShift(), max_shift=2, max_rotation=0)
    np.testing.assert_allclose(shifted[0, 12:16, 14:18], 1.0, atol=1e-6)  # content moved by +2 rows, +2 columns
    assert shifted.sum() == pytest.approx(x.sum())
    rotated = augment_images(x, FixedShift(), max_shift=0, max_rotation=90)
    np.testing.assert_allclose(rotated[0], np.rot90(x[0], k=-1), atol=1e-5)  # 90 degrees about the centre

    a = augment_images(x, np.random.default_rng(5), max_shift=2, max_rotation=10)
    b = augment_images(x, np.random.default_rng(5), max_shift=2, max_rotation=10)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == x.shape and a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not np.array_equal(a[0], a[1])  # each image gets its own distortion
    with pytest.raises(ValueError, match="expected \\(N, H, W\\)"):
        augment_images(x[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        augment_images(x, np.random.default_rng(0), max_shift=-1)


def test_augmented_batches_cover_every_image_and_reshuffle():
    from specclass.datasets.mnist import augmented_batches

    x = np.zeros((250, 28, 28), np.float32)
    y = np.arange(250) % 10
    batches = augmented_batches(x, y, 100, max_shift=1, max_rotation=5, seed=0)
    assert len(batches) == 3
    first = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(first) == sorted(y) and batches[2][0].shape == (50, 28, 28)
    batches.on_epoch_end()
    second = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(second) == sorted(y) and not np.array_equal(first, second)


def test_augmented_training_keeps_best_epoch(mnist_small, tmp_path):
    import keras

    from specclass.commands.mnist import train

    config = train("mnist_dense", tmp_path, data=mnist_small, epochs=3, limit=1200, augment_shift=1.5,
                   augment_rotation=8, restore_best=True, lr_schedule="cosine", extra_formats=False, seed=3,
                   verbose=0, recipe="augmented")
    val = config["history"]["val_accuracy"]
    assert config["best_epoch"] == int(np.argmax(val)) + 1 and config["best_val_accuracy"] == max(val)
    assert config["augment_shift"] == 1.5 and config["augment_rotation"] == 8 and config["recipe"] == "augmented"
    # The saved model is the best epoch's: its accuracy on the same validation images is the best one.
    (x_train, y_train), _ = mnist_small
    order = np.random.default_rng(3).permutation(1200)
    val_idx = np.sort(order[:config["n_val"]])
    model = keras.saving.load_model(tmp_path / "model.keras")
    acc = float(np.mean(model.predict(normalise(x_train[val_idx]), verbose=0).argmax(1) == y_train[val_idx]))
    assert acc == pytest.approx(max(val), abs=1e-6)
    assert len(model.layers) == 4 and model.count_params() == 101_770  # the network is unchanged


def test_recipes_and_cli_overrides(tmp_path):
    from specclass.cli import CLIError
    from specclass.commands.mnist import RECIPES, recipe_settings

    assert recipe_settings("tutorial", "mnist_cnn") == dict(
        epochs=10, optimizer="tutorial", lr_schedule="constant", augment_shift=0.0, augment_rotation=0.0,
        restore_best=False)
    assert recipe_settings("tutorial", "mnist_dense")["epochs"] == 30
    aug = recipe_settings("augmented", "mnist_cnn", epochs=12, restore_best=None)
    assert aug["epochs"] == 12 and aug["restore_best"] is True and aug["augment_shift"] > 0
    assert set(RECIPES) == {"tutorial", "augmented"}
    with pytest.raises(CLIError, match="--recipe must be one of"):
        recipe_settings("fast", "mnist_cnn")


def test_cli_tutorial_recipe_with_override(mnist_npz, tmp_path, capsys):
    from specclass.cli import main

    run = tmp_path / "run"
    assert main(["mnist", "train", "--recipe", "tutorial", "--epochs", "1", "--limit", "300", "--augment-shift", "1",
                 "--data", str(mnist_npz), "--no-extra-formats", "--out", str(run)]) == 0
    assert "(tutorial recipe)" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "tutorial" and config["optimizer"] == "Adam" and config["lr_schedule"] == "constant"
    assert config["augment_shift"] == 1.0 and config["augment_rotation"] == 0.0 and not config["restore_best"]
    assert "best_epoch" not in config
