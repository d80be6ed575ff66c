"""Inference without TensorFlow: numpy / ONNX exports equal Keras on every real SDSS spectrum.

The no-TensorFlow proof runs ``specclass predict EXPORT FILES`` in a subprocess whose
``sitecustomize`` blocks importing tensorflow, keras and jax (a meta-path finder
that raises ImportError and records every attempt).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass import persistence  # noqa: E402
from specclass.calibration import TemperatureCalibration  # noqa: E402
from specclass.inference.export import export_run, keras_to_layers  # noqa: E402
from specclass.inference.load import load_exported  # noqa: E402
from specclass.inference.numpy_net import NumpyNetwork  # noqa: E402
from specclass.io import find_spectrum_files, iter_spectra  # noqa: E402
from specclass.models import get_model  # noqa: E402
from specclass.persistence import RunFolderError  # noqa: E402
from specclass.predict import predict_arrays, predict_files  # noqa: E402
from specclass.preprocessing import Preprocessor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


def _fits_files(sdss_dir: Path) -> list[Path]:
    return [p for p in find_spectrum_files(sdss_dir) if ".fit" in p.name.lower()]


@pytest.fixture(scope="module")
def real(sdss_dir: Path):
    """(files, pre-gridded flux, ivar) of every readable FITS spectrum under ../shared/data/sdss."""
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset([sdss_dir / "spectra3", sdss_dir / "dr7"], labels="class3")
    pre = Preprocessor.from_dataset(ds)
    files = _fits_files(sdss_dir)
    flux, ivar = [], []
    for _, spec, _ in iter_spectra(files):
        if spec is not None:
            f, i = pre.grid_spectrum(spec)
            flux.append(f)
            ivar.append(i)
    assert len(files) >= 300 and len(flux) >= 300
    return ds, np.stack(flux), np.stack(ivar)


def _run(tmp: Path, ds, name: str, channels: int, temperature: float, **options) -> Path:
    pre = Preprocessor.from_dataset(ds, channels=channels)
    keras.utils.set_random_seed(0)
    model = get_model(name, pre.input_length, len(pre.class_names), channels=channels, **options)
    model.fit(pre.transform(ds.flux, ds.ivar), np.clip(ds.labels, 0, None), epochs=1, batch_size=8, verbose=0)
    persistence.save_run(tmp, model, pre, {"model": name})
    TemperatureCalibration(temperature=temperature, fitted=True).save(tmp)
    return tmp


@pytest.fixture(scope="module")
def runs(tmp_path_factory, real) -> dict[str, Path]:
    """Briefly trained runs of both shipped networks (default resnet with 2 channels, pooled head, tutorial)."""
    ds = real[0]
    return {
        "resnet": _run(tmp_path_factory.mktemp("resnet"), ds, "spectral_resnet", 2, 1.7, filters=[16, 32]),
        "resnet_global": _run(tmp_path_factory.mktemp("resnet_g"), ds, "spectral_resnet", 1, 0.8, head="global"),
        "tutorial": _run(tmp_path_factory.mktemp("tutorial"), ds, "spectral_tutorial", 1, 1.3),
    }


@pytest.mark.parametrize("which", ["resnet", "resnet_global", "tutorial"])
def test_numpy_export_equals_keras_on_every_real_fits_spectrum(runs, real, which) -> None:
    _, flux, ivar = real
    run = persistence.load_run(runs[which], compile=False)
    exported = load_exported(export_run(runs[which], "numpy"))
    assert isinstance(exported.model, NumpyNetwork)
    assert exported.preprocessor.to_dict() == run.preprocessor.to_dict()
    assert exported.temperature == run.temperature != 1.0
    want = predict_arrays(run.model, run.preprocessor, flux, ivar, temperature=run.temperature)
    got = predict_arrays(exported.model, exported.preprocessor, flux, ivar, temperature=exported.temperature)
    assert got.shape == want.shape == (len(flux), len(run.class_names))
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_onnx_export_equals_keras(runs, real) -> None:
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    _, flux, ivar = real
    run = persistence.load_run(runs["resnet"], compile=False)
    exported = load_exported(export_run(runs["resnet"], "onnx"))
    assert exported.preprocessor.to_dict() == run.preprocessor.to_dict() and exported.temperature == 1.7
    want = predict_arrays(run.model, run.preprocessor, flux, ivar, temperature=run.temperature)
    got = predict_arrays(exported.model, exported.preprocessor, flux, ivar, temperature=exported.temperature)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


BLOCKER = textwrap.dedent('''
    import atexit, os, sys

    class _NoTensorFlow:
        BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "tf2onnx")
        tried = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                self.tried.append(name)
                raise ImportError(f"{name} is blocked: this process must not need TensorFlow or Keras")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())

    @atexit.register
    def _report():
        with open(os.environ["BLOCKED_IMPORTS_LOG"], "w") as fh:
            fh.write("\\n".join(_NoTensorFlow.tried))
''')


def _no_tf_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO / "src")])
    env["BLOCKED_IMPORTS_LOG"] = str(tmp_path / "blocked.txt")
    return env


def test_blocker_really_blocks(tmp_path) -> None:
    env = _no_tf_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import keras"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "blocked" in proc.stderr
    assert (tmp_path / "blocked.txt").read_text() == "keras"


def test_predict_without_tensorflow_equals_keras_on_every_real_fits_spectrum(runs, sdss_dir, tmp_path) -> None:
    export = export_run(runs["resnet"], "numpy", tmp_path / "model.numpy.h5")
    files = _fits_files(sdss_dir)
    listing = tmp_path / "inputs"
    listing.mkdir()  # only the FITS files: link them into one folder (names made unique)
    for i, f in enumerate(files):
        os.symlink(f, listing / f"{i:04d}-{f.name}")
    env = _no_tf_env(tmp_path)
    out = tmp_path / "numpy.csv"
    # the network's probabilities are compared (the pipeline rule, numpy either way, is tested on its own)
    proc = subprocess.run([sys.executable, "-m", "specclass", "predict", str(export), str(listing), "--out", str(out),
                           "--no-pipeline-rule"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "blocked.txt").read_text() == ""  # nothing even tried to import TensorFlow/Keras
    assert "temperature scaling, T = 1.7" in proc.stdout
    rows, failures = predict_files(runs["resnet"], listing, pipeline_rule=False)
    with out.open() as fh:
        table = [r for r in csv.DictReader(fh) if not r["reason"]]
    assert len(table) == len(rows) >= 300
    names = persistence.load_preprocessor(runs["resnet"]).class_names
    for got, want in zip(table, rows):
        assert got["file"] == want["file"] and got["predicted_class"] == want["predicted_class"]
        # the CSV holds 6 significant digits: compare within that rounding plus TOL
        for c in names:
            assert abs(float(got[f"p_{c}"]) - want[f"p_{c}"]) <= TOL + 5e-7 * max(1.0, want[f"p_{c}"])


def test_readme_snippet_api_on_arrays(runs, real) -> None:
    """The Python API of the 5-line README snippet, on arrays."""
    _, flux, ivar = real
    run = load_exported(export_run(runs["tutorial"], "numpy"))
    proba = predict_arrays(run.model, run.preprocessor, flux[:5], ivar[:5], temperature=run.temperature)
    assert proba.shape == (5, len(run.class_names)) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_unsupported_layer_is_named() -> None:
    inputs = keras.Input((64, 1))
    x = keras.layers.Conv1D(4, 3, dilation_rate=2, name="dilated")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="'dilated'.*dilated"):
        keras_to_layers(model)
    seq = keras.Sequential([keras.Input((8, 1)), keras.layers.LSTM(2, name="rnn"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"'rnn' \(LSTM\) is not supported"):
        keras_to_layers(seq)


def test_load_exported_refuses_other_files(tmp_path, runs) -> None:
    with pytest.raises(RunFolderError, match="not an exported model"):
        load_exported(runs["resnet"] / "preprocessing.json")
    with pytest.raises(RunFolderError, match="not a specclass numpy network"):
        load_exported(_plain_h5(tmp_path))


def _plain_h5(tmp_path: Path) -> Path:
    import h5py

    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    return p


def test_pretrained_is_used_without_a_run_folder_and_missing_one_says_how(runs, sdss_dir, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    from specclass.cli import main

    spectra = sorted((sdss_dir / "spectra3").glob("*.fits"))[:2]
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("SPECCLASS_PRETRAINED", str(empty))
    assert main(["predict", *map(str, spectra), "--out", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "no pretrained seed4 classifier" in err and "tools/make_pretrained.py" in err and "specclass train" in err
    shutil.copytree(runs["resnet"], empty / "class3")
    assert main(["predict", "--pretrained", "class3", *map(str, spectra), "--out", str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    assert "using the pretrained class3 classifier packaged with specclass" in out and "classified 2 spectra" in out


def test_savedmodel_export_carries_preprocessing(runs, tmp_path) -> None:
    path = export_run(runs["tutorial"], "savedmodel", tmp_path / "sm")
    assert (path / "saved_model.pb").is_file()
    assert (path / "preprocessing.json").is_file() and (path / "calibration.json").is_file()
