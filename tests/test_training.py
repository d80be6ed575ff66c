"""Training on real spectra: run folder, grouped validation, class weights, resume keeping the best score."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass import persistence  # noqa: E402
from specclass.training import (  # noqa: E402
    Augmentation,
    ResumeMismatchError,
    balanced_class_weights,
    train,
)


@pytest.fixture(scope="module")
def real_ds(sdss_dir: Path):
    """Real SDSS spec files (spectra/ + spectra2/) gridded, labelled class3, split by object."""
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset([sdss_dir / "spectra", sdss_dir / "spectra2"], labels="class3")
    split = ds.meta["split"]
    assert (split == 0).sum() > 50 and (split == 1).sum() > 5
    return ds


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_training_run_writes_a_complete_run_folder(tmp_path, real_ds):
    run = tmp_path / "run"
    res = train(real_ds, "spectral_tutorial", run, epochs=2, batch_size=32, seed=7, verbose=0,
                save_formats=["keras", "json"])
    for name in ("model.keras", "model.json", "model.weights.h5", "preprocessing.json", "config.json",
                 "history.json", "history.csv", "calibration.json", "checkpoints/state.json",
                 "checkpoints/best.keras"):
        assert (run / name).is_file(), name
    assert res.epochs_done == 2 and res.initial_epoch == 0
    hist = json.loads((run / "history.json").read_text())
    assert set(hist) >= {"loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy"}
    assert all(len(v) == 2 for v in hist.values())
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_balanced_accuracy" in rows[0]
    # best checkpoint follows val_loss
    assert res.best_score == pytest.approx(min(hist["val_loss"]))
    assert res.best_epoch == int(np.argmin(hist["val_loss"]))

    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 7 and cfg["model"] == "spectral_tutorial" and cfg["epochs"] == 2
    assert cfg["device"]["backend"] == keras.backend.backend() and cfg["device"]["devices"]
    # validation = the dataset's own grouped split, never keras' validation_split
    n_val = int(((real_ds.meta["split"] == 1) & (real_ds.labels >= 0)).sum())
    assert cfg["dataset"]["n_val"] == n_val and sum(cfg["val_class_counts"].values()) == n_val
    # balanced class weights: n / (k * count) over the training rows
    y = real_ds.labels[(real_ds.meta["split"] == 0) & (real_ds.labels >= 0)]
    counts = np.bincount(y, minlength=3)
    for c, name in enumerate(real_ds.class_names):
        assert cfg["class_weight"][name] == pytest.approx(len(y) / (3 * counts[c]))
        assert cfg["train_class_counts"][name] == counts[c]

    loaded = persistence.load_run(run)
    assert loaded.preprocessor.class_names == real_ds.class_names
    # the saved model is the best checkpoint
    best = keras.saving.load_model(run / "checkpoints" / "best.keras")
    x = loaded.preprocessor.transform(real_ds.flux[:16], real_ds.ivar[:16])
    np.testing.assert_allclose(loaded.model.predict(x, verbose=0), best.predict(x, verbose=0), atol=1e-6)


def test_same_seed_gives_the_same_run(tmp_path, real_ds):
    a = train(real_ds, "spectral_tutorial", tmp_path / "a", epochs=1, batch_size=32, seed=3, verbose=0)
    b = train(real_ds, "spectral_tutorial", tmp_path / "b", epochs=1, batch_size=32, seed=3, verbose=0)
    assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-5)


class _SignalAfterEpoch(keras.callbacks.Callback):
    """Sends this process SIGUSR1 at the end of one epoch (as SLURM's --signal would)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_resume_after_interruption_continues_and_keeps_the_best_score(tmp_path, real_ds):
    from specclass.cluster.signals import GracefulStop, TrainingInterrupted

    run = tmp_path / "run"
    kw = dict(epochs=3, batch_size=32, seed=11, verbose=0)
    with pytest.raises(TrainingInterrupted) as exc:
        train(real_ds, "spectral_tutorial", run, extra_callbacks=[GracefulStop(), _SignalAfterEpoch(0)], **kw)
    assert exc.value.code == 75 and exc.value.epoch == 1
    state_path = run / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1 and state["best_epoch"] == 0
    assert len(state["history"]["loss"]) == 1
    assert [p.name for p in (run / "checkpoints").glob("last-*.keras")] == ["last-0001.keras"]
    assert not (run / "model.keras").exists()  # an interrupted run is not a finished one

    # Pretend epoch 0 scored a val_loss no later epoch can beat: a checkpoint that forgot
    # its best (plain ModelCheckpoint starts again from +inf) would overwrite best.keras.
    state["best"] = 1e-9
    persistence.write_json_atomic(state_path, state)
    best_before = _sha(run / "checkpoints" / "best.keras")

    res = train(real_ds, "spectral_tutorial", run, **kw)
    assert res.initial_epoch == 1 and res.epochs_done == 3
    assert all(len(v) == 3 for v in res.history.values())
    assert res.best_score == pytest.approx(1e-9) and res.best_epoch == 0
    assert _sha(run / "checkpoints" / "best.keras") == best_before
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]  # no lost or repeated epoch
    assert float(rows[0]["loss"]) == pytest.approx(res.history["loss"][0])
    assert json.loads((run / "config.json").read_text())["resumed_from_epoch"] == 1

    # the same command once more: nothing left to train, same result (and the same calibration)
    trained_record = json.loads((run / "config.json").read_text())
    again = train(real_ds, "spectral_tutorial", run, **kw)
    assert again.initial_epoch == 3 and again.epochs_done == 3 and again.history == res.history
    # ... and the record of the session that trained it is kept (new-user trial: a reused demo run
    # showed resumed_from_epoch 21 and 0 training seconds)
    kept = json.loads((run / "config.json").read_text())
    for key in ("resumed_from_epoch", "train_seconds_this_session", "train_spectra_per_second"):
        assert kept[key] == trained_record[key]
    assert again.temperature == pytest.approx(res.temperature, rel=1e-6)
    assert json.loads((run / "calibration.json").read_text())["temperature"] == pytest.approx(res.temperature)

    # a different run in the same folder is refused, naming what differs
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        train(real_ds, "spectral_tutorial", run, epochs=3, batch_size=16, seed=11, verbose=0)
    with pytest.raises(FileExistsError):
        train(real_ds, "spectral_tutorial", run, resume=False, **kw)


def test_augmented_two_channel_resnet_trains(tmp_path, real_ds):
    run = tmp_path / "run"
    res = train(real_ds, "spectral_resnet", run, epochs=1, batch_size=32, seed=1, verbose=0, augment=True,
                channels=2, monitor="val_balanced_accuracy", early_stopping=3,
                model_options={"filters": [16, 32]})
    assert res.model.input_shape[-1] == 2
    pre = persistence.load_preprocessor(run)
    assert pre.channels == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["augmentation"] == Augmentation().to_dict()
    assert cfg["model_options"]["decay_steps"] == int(np.ceil(cfg["dataset"]["n_train"] / 32))
    assert res.monitor == "val_balanced_accuracy" and 0.0 <= res.best_score <= 1.0


def test_augmentation_is_physical_and_reproducible(real_ds):
    flux, ivar = real_ds.flux[:32], real_ds.ivar[:32]
    aug = Augmentation(flux_scale=0.0, noise=1.0, mask_prob=1.0, mask_max_frac=0.05, shift_pixels=3)
    f1, i1 = aug.apply(flux, ivar, np.random.default_rng(5))
    f2, i2 = aug.apply(flux, ivar, np.random.default_rng(5))
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(i1, i2)
    assert f1.dtype == np.float32 and f1.shape == flux.shape
    assert not np.array_equal(f1, flux)
    np.testing.assert_array_equal(real_ds.flux[:32], flux)  # inputs untouched
    # noise only lowers ivar; masking adds masked pixels
    assert np.all(i1.sum(axis=1) <= ivar.sum(axis=1) + 1e-3)
    assert (i1 == 0).sum() > (ivar == 0).sum()
    assert not Augmentation.off().enabled


def test_bad_arguments_are_named(tmp_path, real_ds):
    from specclass.models import UnknownModelError

    with pytest.raises(ValueError, match="epochs"):
        train(real_ds, "spectral_tutorial", tmp_path, epochs=0)
    with pytest.raises(ValueError, match="monitor"):
        train(real_ds, "spectral_tutorial", tmp_path, monitor="loss")
    with pytest.raises(UnknownModelError, match="spectral_resnet"):
        train(real_ds, "resnet50", tmp_path)
    with pytest.raises(ValueError, match="save_formats"):
        train(real_ds, "spectral_tutorial", tmp_path, save_formats=["onnx"])
    no_val = real_ds.subset(real_ds.meta["split"] != 1)
    with pytest.raises(ValueError, match="no labelled validation rows.*validation_split"):
        train(no_val, "spectral_tutorial", tmp_path)
    assert balanced_class_weights(np.array([0, 0, 0, 2]), 3) == {0: pytest.approx(4 / 6), 1: 1.0, 2: 2.0}


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode != 0,
    reason="jax not installed",
)
def test_training_loop_runs_under_jax(tmp_path, real_ds):
    """No TensorFlow inside training: the same train() runs with KERAS_BACKEND=jax."""
    ds_path = real_ds.save(tmp_path / "ds.h5")
    code = textwrap.dedent(
        f"""
        import json, keras
        from specclass.training import train
        res = train({str(ds_path)!r}, "spectral_tutorial", {str(tmp_path / 'run')!r}, epochs=1, batch_size=64,
                    verbose=0)
        print(json.dumps({{"backend": res.config["device"]["backend"], "epochs": res.epochs_done}}))
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"backend": "jax", "epochs": 1}


class _ProcessShare:
    """This process as process ``index`` of ``n`` (what a multi-node strategy reports).

    Only the data-feeding logic of :func:`train` reads these attributes; the single real
    process trains on the rows a process of an ``n``-process run would feed.
    """

    def __init__(self, index: int, n: int) -> None:
        self.process_index, self.num_processes = index, n

    def scope(self):
        import contextlib

        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {"process_index": self.process_index, "num_processes": self.num_processes}


def test_validation_smaller_than_a_global_batch_under_several_processes(tmp_path, real_ds):
    """Regression (2-task SLURM run, JAX): a validation split smaller than one global batch left
    each process no validation rows ("not enough values to unpack" in normalise), and the
    val_balanced_accuracy callback's model.predict failed on arrays spanning other processes."""
    split = real_ds.meta["split"]
    keep = np.flatnonzero(split == 0)[:96].tolist() + np.flatnonzero(split == 1)[:5].tolist()
    small = real_ds.subset(np.array(sorted(keep)))
    assert ((small.meta["split"] == 1) & (small.labels >= 0)).sum() == 5
    for index in (0, 1):
        res = train(small, "spectral_tutorial", tmp_path / f"p{index}", epochs=1, batch_size=32, seed=3,
                    verbose=0, strategy=_ProcessShare(index, 2))
        # every process validates on the full validation set, so val_loss is defined
        assert sum(res.config["val_class_counts"].values()) == 5
        assert res.epochs_done == 1 and np.isfinite(res.history["val_loss"][0])
        # the predict-based metric is skipped, not crashed on; so is the calibration (T = 1, reason)
        assert "val_balanced_accuracy" not in res.history
        assert res.temperature == 1.0 and "2 processes" in res.calibration.reason
    with pytest.raises(ValueError, match="val_balanced_accuracy.*2 processes"):
        train(small, "spectral_tutorial", tmp_path / "bad", epochs=1, batch_size=32,
              strategy=_ProcessShare(0, 2), monitor="val_balanced_accuracy", verbose=0)


def test_normalise_accepts_no_spectra(real_ds):
    from specclass.preprocessing import Preprocessor

    pre = Preprocessor.from_dataset(real_ds, channels=2)
    x = pre.transform(real_ds.flux[:0], real_ds.ivar[:0])
    assert x.shape == (0, real_ds.flux.shape[1], 2) and x.dtype == np.float32
