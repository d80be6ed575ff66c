"""Predict with a run folder: FITS file == its dataset row, preprocessing re-applied, failures, CSV, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass import persistence, pipeline_rule  # noqa: E402
from specclass.models import get_model  # noqa: E402
from specclass.predict import RULE_COLUMNS, predict_dataset, predict_files  # noqa: E402
from specclass.preprocessing import Preprocessor  # noqa: E402


@pytest.fixture(scope="module")
def inputs(sdss_dir: Path) -> list[Path]:
    """Real spectra in several layouts: spec-lite, EXTNAME-less lite, DR7 spSpec (.fit and .fit.gz)."""
    return [sdss_dir / "spectra3", sdss_dir / "dr7", *sorted((sdss_dir / "spectra2").glob("spec-*.fits"))[:12]]


@pytest.fixture(scope="module")
def real_ds(inputs):
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset(inputs, labels="class3")
    assert len(ds) >= 20
    return ds


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, real_ds) -> Path:
    """A run folder with a briefly trained two-channel resnet (flux + good-pixel weight)."""
    pre = Preprocessor.from_dataset(real_ds, channels=2)
    x = pre.transform(real_ds.flux, real_ds.ivar)
    keras.utils.set_random_seed(0)
    model = get_model("spectral_resnet", pre.input_length, len(pre.class_names), channels=2, filters=[16, 32])
    model.fit(x, np.clip(real_ds.labels, 0, None), epochs=2, batch_size=8, verbose=0)
    run = tmp_path_factory.mktemp("run")
    persistence.save_run(run, model, pre, {"model": "spectral_resnet"}, formats=["keras", "h5"])
    return run


def _probs(row, class_names):
    return np.array([row[f"p_{c}"] for c in class_names])


def _logp(p):
    """Log-probabilities (compared instead of probabilities, which saturate near 0 and 1)."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-30, 1.0))


def test_predict_on_fits_equals_predict_on_dataset_row(run_dir, real_ds, inputs):
    rows, failures = predict_files(run_dir, inputs)
    ds_rows = predict_dataset(run_dir, real_ds)
    assert len(ds_rows) == len(real_ds)
    by_file = {Path(r["file"]).resolve(): r for r in rows}
    names = real_ds.class_names
    matched = 0
    for r in ds_rows:
        f = by_file[Path(r["file"]).resolve()]
        np.testing.assert_allclose(_probs(f, names), _probs(r, names), rtol=0, atol=2e-6, err_msg=r["file"])
        assert f["predicted_class"] == r["predicted_class"]
        assert (f["plate"], f["mjd"], f["fiberid"]) == (r["plate"], r["mjd"], r["fiberid"])
        matched += 1
    assert matched == len(real_ds) >= 20
    # the model does discriminate: not one constant answer
    p = np.array([_probs(r, names) for r in ds_rows])
    assert p.std(axis=0).max() > 1e-3
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # the h5 copy of the model gives the same answers, also when classified in small chunks
    rows_h5, _ = predict_files(run_dir, inputs, fmt="h5", chunk=7)
    assert [r["file"] for r in rows_h5] == [r["file"] for r in rows]
    np.testing.assert_allclose([_probs(r, names) for r in rows_h5], [_probs(r, names) for r in rows], atol=1e-6)


def test_preprocessing_is_reapplied_from_the_run_folder(tmp_path, run_dir, sdss_dir):
    from specclass.io import read_spectrum

    path = sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[0]
    run = persistence.load_run(run_dir)
    spectrum = read_spectrum(path)
    expected = run.model.predict(run.preprocessor.transform_spectrum(spectrum), verbose=0)[0]
    rows, failures = predict_files(run_dir, [path], pipeline_rule=False)  # the network's own probabilities
    assert not failures
    np.testing.assert_allclose(_probs(rows[0], run.class_names), expected, atol=1e-6)
    # raw (un-normalised) flux would give another answer, so the normalisation matters here
    flux, ivar = run.preprocessor.grid_spectrum(spectrum)
    raw = np.stack([flux, (ivar > 0).astype(np.float32)], axis=-1)[None]
    assert np.abs(_logp(run.model.predict(raw, verbose=0)[0]) - _logp(expected)).max() > 1e-2
    # predict reads preprocessing.json: change it and the predictions follow
    other = tmp_path / "run"
    other.mkdir()
    for name in ("model.keras", "config.json"):
        (other / name).write_bytes((run_dir / name).read_bytes())
    d = json.loads((run_dir / "preprocessing.json").read_text())
    d["normalisation"] = "none"
    (other / "preprocessing.json").write_text(json.dumps(d))
    rows2, _ = predict_files(other, [path], pipeline_rule=False)
    assert np.abs(_logp(_probs(rows2[0], run.class_names)) - _logp(expected)).max() > 1e-2


def test_unreadable_and_empty_spectra_get_a_reason_and_csv_is_written(tmp_path, run_dir, sdss_dir):
    html = tmp_path / "spec-0000-00000-0000.fits"
    html.write_text("<html><body>502 Bad Gateway</body></html>")
    masked = sdss_dir / "spectra" / "spec-0269-51581-0003.fits"  # ivar = 0 everywhere (PROVENANCE.md)
    good = sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[:3]
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    rows, failures = predict_files(run_dir, [*good, html, masked], out=out)
    assert len(rows) == 3
    reasons = {Path(f["file"]).name: f["reason"] for f in failures}
    assert set(reasons) == {html.name, masked.name}
    assert reasons[html.name] and "good pixels" in reasons[masked.name]
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    pre = persistence.load_preprocessor(run_dir)
    class_names = pre.class_names
    # the SDSS pipeline rule's columns, for a run whose classes and grid it applies to (the default)
    ruled = list(RULE_COLUMNS) if pipeline_rule.applies(class_names, pre.loglam) else []
    assert list(table[0]) == ["file", "row", "plate", "mjd", "fiberid", "targetid", "file_class", "file_subclass", "z",
                              "zwarning", "predicted_class", "probability", "uncertain",
                              *[f"p_{c}" for c in class_names], *ruled, "reason"]
    assert len(table) == 5
    assert [t["reason"] == "" for t in table] == [True, True, True, False, False]
    assert all(t["predicted_class"] in class_names for t in table[:3])
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv"]  # no temp file left


def test_predict_dataset_refuses_another_grid(run_dir, real_ds):
    from specclass.spectra.dataset import SpectralDataset

    shifted = SpectralDataset(real_ds.flux, real_ds.ivar, real_ds.labels, real_ds.class_names,
                              real_ds.loglam + 1e-4, meta=real_ds.meta, attrs=real_ds.attrs)
    with pytest.raises(ValueError, match="grid"):
        predict_dataset(run_dir, shifted)


def test_cli_train_predict_evaluate_models(tmp_path, real_ds, inputs, capsys):
    from specclass.cli import main

    ds_path = real_ds.save(tmp_path / "ds.h5")
    run = tmp_path / "run"
    assert main(["train", str(ds_path), "--model", "spectral_tutorial", "--epochs", "1", "--batch-size", "16",
                 "--out", str(run), "--quiet", "--save-formats", "keras,json", "--seed", "5",
                 "--n-sim-per-class", "3", "--sim-labels", "construction"]) == 0
    out = capsys.readouterr().out
    assert "done: 1 epochs" in out and "model_keras" in out
    assert "adding 3 simulated spectra per class" in out and "simulated in train:" in out
    assert (run / "calibration.json").is_file() and "calibration (temperature scaling on the val split): T = " in out
    assert (run / "model.json").is_file() and json.loads((run / "config.json").read_text())["seed"] == 5

    csv_path = tmp_path / "p.csv"
    assert main(["predict", str(run), *map(str, inputs), "--out", str(csv_path), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert f"-> {csv_path}" in out and "classified" in out
    with csv_path.open() as fh:
        assert sum(1 for r in csv.DictReader(fh) if not r["reason"]) >= len(real_ds)

    assert main(["evaluate", str(run), str(ds_path), "--split", "val"]) == 0
    out = capsys.readouterr().out
    # another split than test gets its own file names (the test report is never overwritten)
    assert "balanced_accuracy=" in out and (run / "metrics-val.json").is_file() and (run / "report-val.html").is_file()
    assert not (run / "metrics.json").exists()

    # user errors: exit 2 with a message that names the problem
    assert main(["train", str(ds_path), "--model", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "known models" in capsys.readouterr().err
    assert main(["train", str(ds_path), "--model", "spectral_tutorial", "--model-option", "dropout=0.1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "dropout" in capsys.readouterr().err
    assert main(["train", str(ds_path), "--model", "spectral_tutorial", "--epochs", "2", "--batch-size", "8",
                 "--out", str(run), "--n-sim-per-class", "3", "--sim-labels", "construction", "--seed", "5"]) == 2
    assert "different run" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "norun"), str(inputs[0]), "--out", str(tmp_path / "q.csv")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_python_m_specclass_models_lists_the_registry():
    out = subprocess.run([sys.executable, "-m", "specclass", "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "spectral_tutorial (default)" in out.stdout and "spectral_resnet" in out.stdout
    assert "options:" in out.stdout


def test_a_file_named_and_inside_a_given_folder_is_classified_once(tmp_path, run_dir, sdss_dir):
    # Regression: `specclass predict RUN dir/ dir/a.fits` wrote two rows for a.fits.
    folder = tmp_path / "in"
    folder.mkdir()
    for src in sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[:2]:
        (folder / src.name).write_bytes(src.read_bytes())
    first = sorted(folder.iterdir())[0]
    rows, failures = predict_files(run_dir, [first, folder])
    assert not failures
    assert [Path(r["file"]).name for r in rows] == [first.name, sorted(folder.iterdir())[1].name]


def test_an_absurd_flux_does_not_change_the_prediction(tmp_path, run_dir, sdss_dir):
    # issue 12 item 1: flux 1e30 with a finite, positive ivar flipped the class (GALAXY 0.75 -> 1.00)
    from astropy.io import fits

    src = sdss_dir / "spectra" / "spec-0266-51602-0013.fits"
    bad = tmp_path / src.name
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    hdul[1].data["flux"][1500] = 1e30
    assert hdul[1].data["ivar"][1500] > 0
    hdul.writeto(bad)
    class_names = persistence.load_preprocessor(run_dir).class_names
    (clean,), _ = predict_files(run_dir, [src])
    (spiked,), _ = predict_files(run_dir, [bad])
    assert spiked["predicted_class"] == clean["predicted_class"]
    np.testing.assert_allclose(_probs(spiked, class_names), _probs(clean, class_names), atol=0.01)
    # the same run without outlier masking is what users got before
    other = tmp_path / "no-mask"
    other.mkdir()
    for name in ("model.keras", "config.json"):
        (other / name).write_bytes((run_dir / name).read_bytes())
    d = json.loads((run_dir / "preprocessing.json").read_text())
    d["mask_outliers"] = False
    (other / "preprocessing.json").write_text(json.dumps(d))
    # (the network's own probabilities: the pipeline rule may move both to the same family)
    (before,), _ = predict_files(other, [bad], pipeline_rule=False)
    (network,), _ = predict_files(run_dir, [src], pipeline_rule=False)
    assert np.abs(_probs(before, class_names) - _probs(network, class_names)).max() > 0.05


def test_cli_predict_exits_non_zero_when_nothing_is_classified(tmp_path, run_dir, sdss_dir, capsys):
    # issue 12 item 6: a folder without spectra, or where every file fails, exited 0 ("classified 0 spectra")
    from specclass.cli import main

    src = sdss_dir / "spectra" / "spec-0266-51602-0013.fits"
    good = tmp_path / "good"
    good.mkdir()
    (good / src.name).write_bytes(src.read_bytes())
    (good / "README.txt").write_bytes((sdss_dir / "PROVENANCE.md").read_bytes())
    assert main(["predict", str(run_dir), str(good), "--out", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "classified 1 spectrum (" in out and "left out 1 file(s) in the folders that are not spectra (README.txt)" in out
    assert "README" not in (tmp_path / "a.csv").read_text()  # not a failure row either

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.txt").write_bytes((sdss_dir / "PROVENANCE.md").read_bytes())
    assert main(["predict", str(run_dir), str(docs), "--out", str(tmp_path / "b.csv")]) == 2
    captured = capsys.readouterr()
    assert "uncertain" not in captured.out
    assert (f"specclass predict: error: nothing classified: no spectrum file found in {docs}; "
            "1 non-spectrum file(s) left out") in captured.err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / src.name).write_bytes(src.read_bytes()[:50000])  # cut in the COADD data
    assert main(["predict", str(run_dir), str(broken), "--out", str(tmp_path / "c.csv")]) == 2
    captured = capsys.readouterr()
    assert "truncated" in captured.out and "uncertain" not in captured.out
    assert "specclass predict: error: nothing classified: all 1 spectrum file(s) failed (reasons above)" in captured.err


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_truncated_model_file_is_one_clear_message(tmp_path, run_dir, real_ds, inputs, capsys):
    # issue 12 item 8: predict ended in a traceback ("File not found" for a file that exists)
    from specclass.cli import main

    run = _copy_run(run_dir, tmp_path / "run")
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    ds = real_ds.save(tmp_path / "ds.h5")
    spectrum = str(inputs[0])
    for argv in (["predict", str(run), spectrum, "--out", str(tmp_path / "p.csv")],
                 ["evaluate", str(run), str(ds)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err  # one line, no traceback
        assert f"{run / 'model.keras'}: the model file is truncated or damaged ({len(data) // 2} bytes" in err
        assert "--format h5" in err  # the run folder also holds model.h5
    assert main(["predict", str(run), spectrum, "--out", str(tmp_path / "p.csv"), "--format", "h5"]) == 0


def test_a_model_with_a_lambda_layer_is_one_clear_message(tmp_path, real_ds, inputs, capsys):
    from specclass.cli import main

    pre = Preprocessor.from_dataset(real_ds)
    inp = keras.Input((pre.input_length, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)  # Python code inside the model file
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(len(pre.class_names), activation="softmax")(x))
    run = tmp_path / "run"
    persistence.save_run(run, model, pre, {"model": "custom"}, formats=["keras"])
    assert main(["predict", str(run), str(inputs[0]), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{run / 'model.keras'}: the model holds a Lambda layer (arbitrary Python code)" in err


def test_cli_predict_spectro1d_adds_the_emulated_pipeline_decision(tmp_path, run_dir, inputs, capsys):
    from specclass.cli import main
    from specclass.io import read_spectrum

    out = tmp_path / "p.csv"
    files = inputs[2:5]  # three spec-lite files of sdss/spectra2
    assert main(["predict", str(run_dir), *map(str, files), "--out", str(out), "--spectro1d"]) == 0
    assert "emulated SDSS pipeline (spectro1d): agrees with the network on" in capsys.readouterr().out
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    for r in rows:
        spec = read_spectrum(r["file"])
        assert r["spectro1d_class"] == spec.meta.class_  # these files' pipeline CLASS
        assert r["spectro1d_label"] == spec.meta.class_  # class3 run: the label is the CLASS
        assert abs(float(r["spectro1d_z"]) - spec.meta.z) < 0.01
    # without the flag the CSV has no emulator columns
    assert main(["predict", str(run_dir), str(files[0]), "--out", str(tmp_path / "q.csv")]) == 0
    assert "spectro1d_class" not in (tmp_path / "q.csv").read_text().splitlines()[0]
