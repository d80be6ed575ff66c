"""Run folders: save/load in every format gives identical predictions; safe_mode; atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass.atomic import write_atomic
from specclass import persistence  # noqa: E402
from specclass.models import get_model  # noqa: E402
from specclass.preprocessing import Preprocessor  # noqa: E402


@pytest.fixture(scope="module")
def real_ds(sdss_dir: Path):
    """A small dataset built from real spec-lite files (class3 labels)."""
    from specclass.spectra.build import build_dataset

    files = sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[:8] + sorted((sdss_dir / "spectra2").glob("*.fits"))[:8]
    ds, _ = build_dataset(files, labels="class3")
    assert len(ds) >= 12
    return ds


@pytest.fixture(scope="module")
def trained(real_ds):
    """A resnet with non-trivial weights and batch-norm statistics (a few real training steps)."""
    pre = Preprocessor.from_dataset(real_ds, channels=2)
    x = pre.transform(real_ds.flux, real_ds.ivar)
    model = get_model("spectral_resnet", pre.input_length, len(pre.class_names), channels=2, filters=[16, 32])
    keras.utils.set_random_seed(1)
    model.fit(x, np.clip(real_ds.labels, 0, None), epochs=2, batch_size=8, verbose=0)
    return model, pre, x


def test_every_format_loads_to_identical_predictions(tmp_path, trained):
    model, pre, x = trained
    run = tmp_path / "run"
    files = persistence.save_run(run, model, pre, {"model": "spectral_resnet", "seed": 1},
                                 history={"loss": [1.0, 0.5]}, formats=["keras", "h5", "json"])
    for name in ("model.keras", "model.h5", "model.json", "model.weights.h5", "preprocessing.json", "config.json",
                 "history.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert set(files) >= {"model_keras", "model_h5", "model_json", "preprocessing", "config", "history"}
    assert not list(run.glob(".*part*")), "temporary files left behind"
    expected = model.predict(x, verbose=0)
    for fmt in ("keras", "h5", "json"):
        loaded = persistence.load_run(run, fmt=fmt)
        got = loaded.model.predict(x, verbose=0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=fmt)
        assert loaded.preprocessor == pre
        assert loaded.config["seed"] == 1 and loaded.config["save_formats"] == ["keras", "h5", "json"]
        assert loaded.history == {"loss": [1.0, 0.5]}
    # keras and h5 restore the optimizer (training can continue); json is architecture + weights only
    assert persistence.load_run(run, "keras").model.optimizer is not None
    assert persistence.load_run(run, "keras").model.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()


def test_h5_save_does_not_strip_the_optimizer_from_later_saves(tmp_path, trained):
    """Keras' HDF5 writer pops 'optimizer' from the model's compile config; save_model undoes that."""
    model, pre, _ = trained
    persistence.save_model(model, tmp_path, ["h5", "keras"])
    reloaded = persistence.load_model(tmp_path, "keras")
    assert type(reloaded.optimizer) is type(model.optimizer)
    assert reloaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()


def test_loaded_run_unpacks_and_has_attributes(tmp_path, trained):
    model, pre, _ = trained
    persistence.save_run(tmp_path, model, pre, {"a": 1})
    loaded = persistence.load_run(tmp_path)
    m, p, cfg = loaded
    assert m is loaded.model and p is loaded.preprocessor and cfg is loaded.config
    assert loaded.class_names == pre.class_names
    assert loaded.run_dir == tmp_path
    assert loaded.history is None  # no history.json written


def test_load_run_errors_name_the_problem(tmp_path, trained):
    model, pre, _ = trained
    with pytest.raises(persistence.RunFolderError, match="no such run folder"):
        persistence.load_run(tmp_path / "missing")
    persistence.save_run(tmp_path, model, pre, {}, formats=["keras"])
    with pytest.raises(persistence.RunFolderError, match=r"model\.h5: missing.*formats present: \['keras'\]"):
        persistence.load_run(tmp_path, fmt="h5")
    with pytest.raises(ValueError, match="fmt must be one of"):
        persistence.load_run(tmp_path, fmt="pickle")
    # the folder above a run folder (e.g. demo-run/ instead of demo-run/run): the error lists the runs in it
    parent = tmp_path / "demo-run"
    persistence.save_run(parent / "run", model, pre, {}, formats=["keras"])
    with pytest.raises(persistence.RunFolderError, match=r"is not a run folder; run folders in it: run"):
        persistence.load_run(parent)
    with pytest.raises(ValueError, match="unknown save format"):
        persistence.save_model(model, tmp_path, ["keras", "savedmodel"])
    # preprocessing that does not match the model's output width
    bad = Preprocessor(grid=pre.grid, class_names=["A", "B"], channels=2)
    persistence.write_json_atomic(tmp_path / "preprocessing.json", bad.to_dict())
    with pytest.raises(persistence.RunFolderError, match="outputs but preprocessing.json names 2 classes"):
        persistence.load_run(tmp_path)
    (tmp_path / "preprocessing.json").write_text('{"format": "something-else"}')
    with pytest.raises(persistence.RunFolderError, match="not a specclass preprocessing file"):
        persistence.load_run(tmp_path)


def test_safe_mode_refuses_lambda_layers(tmp_path):
    """A run folder is data, not code: a Lambda layer's byte code is never deserialised."""
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, outputs)
    pre = Preprocessor(grid={"loglam_min": 3.6, "loglam_step": 1e-4, "npix": 4}, class_names=list("ABCD"))
    persistence.save_run(tmp_path, model, pre, {}, formats=["keras", "json"])
    for fmt in ("keras", "json"):
        with pytest.raises(persistence.RunFolderError, match="holds a Lambda layer"):
            persistence.load_run(tmp_path, fmt=fmt)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "config.json"
    persistence.write_json_atomic(target, {"version": 1})

    def half_write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write('{"version": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_write)
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(TypeError):
        persistence.write_json_atomic(target, {"x": object()})
    assert json.loads(target.read_text()) == {"version": 1}


def test_preprocessor_json_round_trip_and_validation(real_ds):
    pre = Preprocessor.from_dataset(real_ds, normalisation="standard", channels=2, clip=30.0)
    assert pre.grid == real_ds.attrs["grid"] and pre.input_length == real_ds.flux.shape[1]
    assert pre.bad_mask_bits == real_ds.attrs["bad_mask_bits"]
    np.testing.assert_allclose(pre.loglam, real_ds.loglam, atol=1e-9)
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre
    np.testing.assert_array_equal(back.transform(real_ds.flux, real_ds.ivar), pre.transform(real_ds.flux, real_ds.ivar))
    with pytest.raises(ValueError, match="normalisation must be one of"):
        Preprocessor(grid=pre.grid, class_names=["A"], normalisation="minmax")
    with pytest.raises(ValueError, match="format_version"):
        Preprocessor.from_dict(dict(pre.to_dict(), format_version=99))
