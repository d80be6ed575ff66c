"""Calibration: temperature scaling recovers a known T, ECE by hand, degenerate inputs, the run folder's
calibration.json, predict's calibrated probabilities and uncertain flag, evaluate's per-split outputs."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from specclass.calibration import (
    CALIBRATION_FILE,
    MIN_ROWS,
    TemperatureCalibration,
    apply_temperature,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    load_calibration,
    negative_log_likelihood,
    selective_metrics,
    uncertain_mask,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _tempered_sample(true_t: float, n: int = 4000, c: int = 4, seed: int = 0):
    """Labels drawn from softmax(z / true_t); the 'network' reports softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, c))
    p_true = _softmax(z / true_t)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(p_true, axis=1)).sum(axis=1)
    return _softmax(z).astype(np.float32), y


# --------------------------------------------------------------------------- the maths
@pytest.mark.parametrize("true_t", [2.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    proba, y = _tempered_sample(true_t)
    t = fit_temperature(proba, y)
    assert t == pytest.approx(true_t, rel=0.08)
    cal = fit_calibration(proba, y)
    assert cal.fitted and cal.reason is None and cal.temperature == pytest.approx(t)
    assert cal.n_val == len(y)
    assert cal.nll_after <= cal.nll_before
    assert cal.nll_after == pytest.approx(negative_log_likelihood(apply_temperature(proba, t), y))
    # the mis-calibrated softmax is visibly off; the fitted one is close to calibrated
    assert cal.ece_before > 0.05 and cal.ece_after < 0.03 and cal.ece_after < cal.ece_before


def test_expected_calibration_error_matches_a_hand_computed_example():
    proba = np.array([
        [0.95, 0.05],  # conf 0.95 bin (2/3, 1], correct
        [0.90, 0.10],  # conf 0.90 same bin, wrong
        [0.40, 0.60],  # conf 0.60 bin (1/3, 2/3], correct
        [0.55, 0.45],  # conf 0.55 same bin, correct
        [0.50, 0.50],  # conf 0.50 same bin, argmax = class 0 (first), label 1: wrong
    ])
    y = np.array([0, 1, 1, 0, 1])
    # bin 3: acc 1/2, conf (0.95+0.90)/2 = 0.925 -> |0.5-0.925| * 2/5 = 0.17
    # bin 2: acc 2/3, conf (0.60+0.55+0.50)/3 = 0.55 -> |2/3-0.55| * 3/5 = 0.07
    assert expected_calibration_error(proba, y, n_bins=3) == pytest.approx(0.17 + 0.07)
    # one bin: |accuracy - mean confidence| = |3/5 - 0.7|
    assert expected_calibration_error(proba, y, n_bins=1) == pytest.approx(0.1)
    # a confidence on a bin edge goes to the lower bin, (m-1)/M < conf <= m/M
    assert expected_calibration_error([[0.5, 0.5], [1.0, 0.0]], [0, 0], n_bins=2) == pytest.approx(0.25)
    assert np.isnan(expected_calibration_error(np.zeros((0, 3)), np.zeros(0, int)))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(proba, y, n_bins=0)


def test_apply_temperature_identity_normalised_safe_and_order_keeping():
    proba, _ = _tempered_sample(2.0, n=200)
    out = apply_temperature(proba, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, proba)
    hard = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    for t in (0.05, 0.3, 2.0, 20.0):
        q = apply_temperature(hard, t)
        assert q.dtype == np.float32 and np.all(np.isfinite(q))
        np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(q.argmax(axis=1), hard.argmax(axis=1))
        qp = apply_temperature(proba, t)
        np.testing.assert_array_equal(qp.argmax(axis=1), proba.argmax(axis=1))
    # T > 1 softens, T < 1 sharpens
    assert apply_temperature(hard, 3.0)[2].max() < 0.5 < apply_temperature(hard, 0.3)[2].max()
    # exactly softmax(z / T) for softmax outputs
    z = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_allclose(apply_temperature(_softmax(z), 2.5), _softmax(z / 2.5), rtol=1e-5)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(hard, bad)
    with pytest.raises(ValueError, match="finite, non-negative"):
        apply_temperature(np.array([[np.nan, 1.0]]), 2.0)
    with pytest.raises(ValueError, match="2-D"):
        apply_temperature(np.ones(3), 2.0)


def test_degenerate_inputs_keep_t_1_with_a_reason():
    proba, y = _tempered_sample(2.0, n=200)
    cases = {
        "no labelled validation rows": (proba[:0], y[:0]),
        f"< {MIN_ROWS}": (proba[:MIN_ROWS - 1], y[:MIN_ROWS - 1]),
        "one class only": (proba[y == 0], y[y == 0]),
        "classified correctly": (np.eye(4, dtype=np.float32)[y] * 0.9 + 0.025, y),
        "not all finite": (np.where(np.arange(4) == 0, np.nan, proba), y),
    }
    for words, (p, labels) in cases.items():
        assert fit_temperature(p, labels) == 1.0, words
        cal = fit_calibration(p, labels)
        assert cal.temperature == 1.0 and not cal.fitted and words in cal.reason, (words, cal.reason)
        json.dumps(cal.to_dict(), allow_nan=False)  # strict JSON even then
    with pytest.raises(ValueError, match=r"labels has shape .* expected"):
        fit_temperature(proba, y[:-1])
    with pytest.raises(ValueError, match="outside"):
        fit_temperature(proba, np.full(len(y), 4))


def test_uncertain_flag_and_selective_figures_by_hand():
    proba = np.array([[0.9, 0.1], [0.45, 0.55], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(uncertain_mask(proba, 0.6), [False, True, False, False])
    assert not uncertain_mask(proba, 0.0).any() and uncertain_mask(proba, 1.0).all()
    s = selective_metrics(proba, y, 0.6)
    # covered rows 0, 2, 3: predictions 0, 1, 0 against 0, 1, 1
    assert (s["n"], s["n_covered"], s["n_uncertain"]) == (4, 3, 1)
    assert s["coverage"] == pytest.approx(0.75) and s["accuracy"] == pytest.approx(2 / 3)
    assert s["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["accuracy_uncertain"] == 0.0
    none = selective_metrics(proba, y, 1.0)
    assert none["coverage"] == 0.0 and none["accuracy"] is None and none["balanced_accuracy"] is None
    with pytest.raises(ValueError, match="uncertain_below"):
        uncertain_mask(proba, 1.5)


def test_calibration_file_round_trip_and_bad_file(tmp_path):
    from specclass.persistence import RunFolderError

    assert load_calibration(tmp_path) is None
    cal = fit_calibration(*_tempered_sample(2.0, n=500))
    path = cal.save(tmp_path)
    assert path == tmp_path / CALIBRATION_FILE
    data = json.loads(path.read_text())
    assert {"temperature", "n_val", "nll_before", "nll_after", "ece_before", "ece_after", "method",
            "reference"} <= set(data)
    assert "1706.04599" in data["reference"] and data["method"] == "temperature scaling"
    assert load_calibration(tmp_path) == cal
    assert [p.name for p in tmp_path.iterdir()] == [CALIBRATION_FILE]  # no temp file left
    path.write_text('{"temperature": -2}')
    with pytest.raises(RunFolderError, match="calibration.json.*temperature"):
        load_calibration(tmp_path)
    assert TemperatureCalibration.from_dict({"temperature": 1.5, "future_key": 1}).temperature == 1.5


# --------------------------------------------------------------------------- a real run folder
keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A small simulated seed4 dataset (grouped train/val/test splits), saved."""
    from specclass.simulate import simulate

    ds = simulate(40, labels="seed4", seed=3, label_source="construction")
    return ds, ds.save(tmp_path_factory.mktemp("data") / "sim.h5")


@pytest.fixture(scope="module")
def run(sim, tmp_path_factory):
    from specclass.training import train

    ds, _ = sim
    run_dir = tmp_path_factory.mktemp("cal") / "run"
    result = train(ds, "spectral_tutorial", run_dir, epochs=2, batch_size=32, seed=4, verbose=0)
    return run_dir, result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_writes_calibration_json_fitted_on_validation(run, sim):
    from specclass import persistence

    run_dir, result = run
    ds, _ = sim
    data = json.loads((run_dir / CALIBRATION_FILE).read_text())
    assert result.files["calibration"] == run_dir / CALIBRATION_FILE
    assert data["temperature"] == pytest.approx(result.temperature) and result.temperature > 0
    val = ds.split("val")
    assert data["n_val"] == len(val) >= MIN_ROWS and data["fitted_on"] == "validation split"
    # refit by hand on the saved model's validation probabilities: the same T
    loaded = persistence.load_run(run_dir)
    assert loaded.temperature == pytest.approx(result.temperature)
    raw = loaded.model.predict(loaded.preprocessor.transform(val.flux, val.ivar), verbose=0)
    assert fit_temperature(raw, val.labels) == pytest.approx(data["temperature"], rel=1e-3)
    assert data["nll_after"] <= data["nll_before"] + 1e-9


def test_predict_applies_the_runs_temperature_and_no_calibration_gives_raw(run, sim):
    from specclass import persistence
    from specclass.predict import predict_dataset

    run_dir, result = run
    ds, _ = sim
    test = ds.split("test")
    names = ds.class_names
    loaded = persistence.load_run(run_dir)
    raw = loaded.model.predict(loaded.preprocessor.transform(test.flux, test.ivar), verbose=0)
    # the network's own probabilities (the pipeline rule, which moves family probabilities,
    # is tested in test_pipeline_rule.py)
    cal_rows = predict_dataset(loaded, test, pipeline_rule=False)
    raw_rows = predict_dataset(loaded, test, calibrate=False, pipeline_rule=False)
    p_cal = np.array([[r[f"p_{c}"] for c in names] for r in cal_rows])
    p_raw = np.array([[r[f"p_{c}"] for c in names] for r in raw_rows])
    np.testing.assert_allclose(p_raw, raw, atol=1e-6)
    np.testing.assert_allclose(p_cal, apply_temperature(raw, result.temperature), atol=1e-6)
    assert [r["predicted_class"] for r in cal_rows] == [r["predicted_class"] for r in raw_rows]
    assert [r["uncertain"] for r in cal_rows] == [int(p.max() < 0.5) for p in p_cal]
    assert all(r["uncertain"] == 1 for r in predict_dataset(loaded, test, uncertain_below=1.0, pipeline_rule=False))
    # the pipeline rule can give a class the whole probability (the star step): 1.0 is not below 1.0
    ruled = predict_dataset(loaded, test, uncertain_below=1.0)
    assert [r["uncertain"] for r in ruled] == [int(r["probability"] < 1.0) for r in ruled]
    with pytest.raises(ValueError, match="uncertain_below"):
        predict_dataset(loaded, test, uncertain_below=-0.1)


def test_cli_predict_uncertain_column_threshold_and_unknown_cells(run, sdss_dir, tmp_path, capsys):
    from astropy.table import Table

    from specclass.cli import main

    run_dir, result = run
    files = [*sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[:4],
             *sorted((sdss_dir / "text_stars").glob("*.txt"))[:2]]  # text stars: no z, no ZWARNING
    out = tmp_path / "p.csv"
    # --no-pipeline-rule: the network's calibrated probabilities (the pipeline rule is tested in
    # test_pipeline_rule.py)

    def read(path):
        with path.open() as fh:
            return list(csv.DictReader(fh))

    assert main(["predict", "--no-pipeline-rule", str(run_dir), *map(str, files), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = read(out)
    assert len(rows) == 6 and "uncertain" in rows[0]
    assert list(rows[0]).index("uncertain") == list(rows[0]).index("probability") + 1
    n_unsure = sum(r["uncertain"] == "1" for r in rows)
    assert all(r["uncertain"] == str(int(float(r["probability"]) < 0.5)) for r in rows)
    assert f"uncertain (top probability < 0.5): {n_unsure} of 6" in text
    assert f"T = {result.temperature:.4g}" in text

    # --uncertain-below is honoured: 1 flags every row (none is at probability exactly 1 here), 0 none
    assert main(["predict", "--no-pipeline-rule", str(run_dir), *map(str, files), "--out", str(out), "--uncertain-below", "0"]) == 0
    assert {r["uncertain"] for r in read(out)} == {"0"}
    assert "uncertain (top probability < 0): 0 of 6" in capsys.readouterr().out
    top = sorted(float(r["probability"]) for r in rows)
    assert top[3] - top[2] > 1e-4
    cut = (top[2] + top[3]) / 2  # between the 3rd and 4th lowest: exactly 3 flagged
    assert main(["predict", "--no-pipeline-rule", str(run_dir), *map(str, files), "--out", str(out), "--uncertain-below", str(cut)]) == 0
    assert sum(r["uncertain"] == "1" for r in read(out)) == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # an argparse usage error
        main(["predict", "--no-pipeline-rule", str(run_dir), str(files[0]), "--out", str(out), "--uncertain-below", "1.5"])
    assert exc.value.code == 2
    assert "--uncertain-below" in capsys.readouterr().err

    # --no-calibration: raw softmax
    assert main(["predict", "--no-pipeline-rule", str(run_dir), *map(str, files), "--out", str(out), "--no-calibration"]) == 0
    assert "raw softmax (calibration off)" in capsys.readouterr().out
    raw_rows = read(out)
    p_raw = np.array([[float(r[f"p_{c}"]) for c in result.preprocessor.class_names] for r in raw_rows])
    p_cal = np.array([[float(r[f"p_{c}"]) for c in result.preprocessor.class_names] for r in rows])
    np.testing.assert_allclose(apply_temperature(p_raw, result.temperature), p_cal, atol=2e-5)
    if abs(result.temperature - 1) > 1e-3:
        assert np.abs(p_raw - p_cal).max() > 1e-4

    # unknown z / zwarning / plate are empty cells, never 'nan' or -1; astropy reads them as masked
    table = Table.read(out, format="ascii.csv")
    stars = np.array([Path(f).suffix == ".txt" for f in table["file"]])
    assert stars.sum() == 2
    for col in ("z", "zwarning"):
        assert np.ma.is_masked(table[col][stars][0]) and all(np.ma.getmaskarray(table[col])[stars])
        assert not np.ma.getmaskarray(table[col])[~stars].any()
    assert table["zwarning"].dtype.kind == "i" and table["z"].dtype.kind == "f"
    assert "nan" not in out.read_text().lower() and ",-1," not in out.read_text()


def test_old_run_folder_without_calibration_predicts_with_t_1(run, sim, sdss_dir, tmp_path, caplog, capsys):
    from specclass import persistence
    from specclass.cli import main
    from specclass.predict import predict_dataset

    run_dir, _ = run
    ds, _ = sim
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("checkpoints", CALIBRATION_FILE))
    loaded = persistence.load_run(old)
    assert loaded.calibration is None and loaded.temperature == 1.0
    test = ds.split("test")
    with caplog.at_level(logging.WARNING, logger="specclass.predict"):
        a = predict_dataset(loaded, test)
        b = predict_dataset(loaded, test, calibrate=False)
    said = [r for r in caplog.records if "no calibration.json" in r.getMessage()]
    assert len(said) == 1  # once, not per call or per row
    assert [r["probability"] for r in a] == [r["probability"] for r in b]
    out = tmp_path / "p.csv"
    fits = sorted((sdss_dir / "spectra3").glob("spec-*.fits"))[0]
    assert main(["predict", str(old), str(fits), "--out", str(out)]) == 0
    assert "has no calibration.json (T = 1)" in capsys.readouterr().out


def test_evaluate_val_split_leaves_the_test_outputs_alone(run, sim, capsys):
    from specclass.cli import main
    from specclass.evaluation import OUTPUT_FILES, evaluate_run, output_names

    run_dir, result = run
    ds, ds_path = sim
    test = evaluate_run(run_dir, ds, "test", pipeline_rule=False)  # the network's own calls (rule: test_evaluation.py)
    cal = test["calibration"]
    assert cal["temperature"] == pytest.approx(result.temperature)
    t = ds.split("test")
    loaded_raw = result.model.predict(result.preprocessor.transform(t.flux, t.ivar), verbose=0)
    assert cal["ece_raw"] == pytest.approx(expected_calibration_error(loaded_raw, t.labels), abs=1e-5)
    q = apply_temperature(loaded_raw, result.temperature)
    assert cal["ece_calibrated"] == pytest.approx(expected_calibration_error(q, t.labels), abs=1e-5)
    sel = cal["selective"]
    assert sel["n"] == len(t) and sel["coverage"] == pytest.approx(float(np.mean(q.max(axis=1) >= 0.5)))
    assert test["accuracy"] == pytest.approx(float(np.mean(q.argmax(axis=1) == t.labels)))
    html = (run_dir / "report.html").read_text()
    assert "Calibration and uncertain spectra" in html and "coverage" in html

    written = {role: run_dir / name for role, name in OUTPUT_FILES.items() if (run_dir / name).is_file()}
    assert {"metrics", "report", "confusion_matrix", "misclassified_csv"} <= set(written)
    before = {role: (_sha(p), p.stat().st_mtime_ns) for role, p in written.items()}

    assert main(["evaluate", str(run_dir), str(ds_path), "--split", "val", "--uncertain-below", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "calibration" in out and "uncertain below 0.7" in out
    assert {role: (_sha(p), p.stat().st_mtime_ns) for role, p in written.items()} == before
    val_names = output_names("val")
    assert val_names["metrics"] == "metrics-val.json" and val_names["report"] == "report-val.html"
    m = json.loads((run_dir / "metrics-val.json").read_text())
    assert m["split"] == "val" and m["n"] == len(ds.split("val"))
    assert m["calibration"]["uncertain_below"] == 0.7
    assert m["files"]["report"].endswith("report-val.html")
    for role in ("misclassified_csv", "confusion_matrix", "report"):
        assert (run_dir / val_names[role]).is_file(), role
    assert "val split" in (run_dir / "report-val.html").read_text()
    # metrics.json still describes the test split
    assert json.loads((run_dir / "metrics.json").read_text())["split"] == "test"


def test_predict_says_when_the_temperature_was_not_fitted():
    # the fresh-clone trial: the packaged class3 classifier printed "temperature scaling, T = 1" although
    # its validation split was classified entirely right and no temperature could be fitted
    from types import SimpleNamespace

    from specclass.predict import run_temperature

    y = np.arange(30) % 3
    p = np.eye(3)[y] * 0.97 + 0.01
    cal = fit_calibration(p, y)
    assert not cal.fitted and cal.temperature == 1.0 and "classified correctly" in cal.reason
    run = SimpleNamespace(calibration=cal, temperature=cal.temperature, run_dir=Path("run"))
    t, text = run_temperature(run)
    assert t == 1.0 and text.startswith("raw softmax: temperature not fitted (every validation row")
    fitted = fit_calibration(*_tempered_sample(2.0, n=500))
    t, text = run_temperature(SimpleNamespace(calibration=fitted, temperature=fitted.temperature, run_dir=Path("r")))
    assert t == fitted.temperature and text.startswith("temperature scaling, T = ")
