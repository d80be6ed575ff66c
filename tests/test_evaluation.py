"""Tests for specclass.evaluation: metrics agree with scikit-learn, class order is kept,
small classes are flagged, ZWARNING / source breakdowns, misclassified rows, files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from specclass.evaluation import (
    MISCLASSIFIED_COLUMNS,
    SMALL_CLASS_THRESHOLD,
    dataset_summary,
    evaluate_predictions,
    write_metrics_json,
    write_misclassified_csv,
)

# Deliberately not alphabetical: the saved order must be kept, never re-sorted.
CLASSES = ["STAR", "QSO", "GALAXY", "AGN"]


def _predictions(n: int = 300, seed: int = 1, noise: float = 1.2):
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=n, p=[0.4, 0.3, 0.25, 0.05])
    logits = rng.normal(scale=noise, size=(n, 4))
    logits[np.arange(n), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_metrics_agree_with_sklearn():
    y, proba = _predictions()
    pred = proba.argmax(axis=1)
    m = evaluate_predictions(y, proba, CLASSES)
    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    for i, row in enumerate(m["per_class"]):
        assert row["name"] == CLASSES[i]
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]
        assert row["predicted"] == int((pred == i).sum())
    np.testing.assert_array_equal(m["confusion_matrix"]["counts"], confusion_matrix(y, pred, labels=range(4)))
    assert m["accuracy"] < 1.0  # the noise makes mistakes, so the rest of the dict is exercised
    assert len(m["misclassified"]) == int((pred != y).sum())


def test_confusion_matrix_keeps_saved_order_and_absent_class_row():
    # Class 2 ('GALAXY') never appears in y_true; class 3 never predicted.
    y = np.array([0, 0, 1, 1, 3, 3, 3])
    proba = np.zeros((7, 4))
    proba[np.arange(7), [0, 1, 1, 2, 0, 3, 3]] = 1.0
    m = evaluate_predictions(y, proba, CLASSES)
    cm = m["confusion_matrix"]
    assert cm["labels"] == CLASSES
    assert cm["counts"] == [
        [1, 1, 0, 0],  # STAR
        [0, 1, 1, 0],  # QSO
        [0, 0, 0, 0],  # GALAXY: absent, its row kept
        [1, 0, 0, 2],  # AGN
    ]
    assert cm["normalized"][0] == [0.5, 0.5, 0.0, 0.0]
    assert cm["normalized"][2] == [None] * 4
    assert cm["normalized"][3] == pytest.approx([1 / 3, 0, 0, 2 / 3])
    # balanced accuracy: mean recall over the classes present (STAR 0.5, QSO 0.5, AGN 2/3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert m["per_class"][2]["support"] == 0 and m["per_class"][2]["predicted"] == 1


def test_small_classes_flagged():
    y, proba = _predictions(n=200)
    m = evaluate_predictions(y, proba, CLASSES)
    support = {row["name"]: row["support"] for row in m["per_class"]}
    expected_small = [c for c in CLASSES if support[c] < SMALL_CLASS_THRESHOLD]
    assert expected_small == ["AGN"]  # 5 % of 200 = about 10 examples
    assert m["small_classes"] == expected_small
    assert [row["small"] for row in m["per_class"]] == [c in expected_small for c in CLASSES]
    assert len(m["warnings"]) == 1 and "'AGN'" in m["warnings"][0] and str(support["AGN"]) in m["warnings"][0]


def test_breakdowns_by_zwarning_bits_and_source():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    pred = np.array([0, 1, 2, 3, 1, 1, 0, 3])  # rows 4 and 6 wrong
    proba = np.eye(4)[pred] * 0.9 + 0.025
    meta = {
        "zwarning": np.array([0, 0, 0, 4, 4, 16 | 4, -1, 16]),
        "source": np.array(["fits", "fits", "simulated", "fits", "fits", "simulated", "other-survey", "fits"]),
    }
    m = evaluate_predictions(y, proba, CLASSES, meta=meta)
    z = m["by_zwarning"]
    assert z["zwarning == 0"] == {"n": 3, "n_correct": 3, "accuracy": 1.0}
    assert z["zwarning != 0"] == {"n": 4, "n_correct": 3, "accuracy": 0.75}
    assert z["unknown"] == {"n": 1, "n_correct": 0, "accuracy": 0.0}
    bits = {v["bit"]: v for v in z["per_bit"].values()}
    assert sorted(bits) == [2, 4]
    assert (bits[2]["n"], bits[2]["n_correct"]) == (3, 2)
    assert (bits[4]["n"], bits[4]["n_correct"]) == (2, 2)
    s = m["by_source"]
    assert s["fits"] == {"n": 5, "n_correct": 4, "accuracy": 0.8}
    assert s["simulated"]["n"] == 2 and s["other-survey"]["n_correct"] == 0


def test_misclassified_rows_identify_spectra_most_confident_first():
    y = np.array([0, 1, 2, 3])
    proba = np.array([
        [0.1, 0.6, 0.2, 0.1],   # wrong, p=0.6
        [0.0, 1.0, 0.0, 0.0],   # right
        [0.9, 0.05, 0.05, 0.0],  # wrong, p=0.9
        [0.0, 0.0, 0.0, 1.0],   # right
    ])
    meta = {
        "file": np.array(["a.fits", "b.fits", "c.fits", "d.fits"]),
        "plate": np.array([266, 266, 1000, 1000]),
        "mjd": np.array([51602, 51602, 52000, 52000]),
        "fiberid": np.array([1, 2, 3, 4]),
    }
    m = evaluate_predictions(y, proba, CLASSES, meta=meta)
    rows = m["misclassified"]
    assert [r["index"] for r in rows] == [2, 0]
    assert rows[0] == {
        "index": 2, "file": "c.fits", "plate": 1000, "mjd": 52000, "fiberid": 3,
        "true": "GALAXY", "predicted": "STAR", "probability": pytest.approx(0.9), "probability_true": pytest.approx(0.05),
    }
    assert set(rows[1]) == set(MISCLASSIFIED_COLUMNS)


def test_json_serialisable_and_files(tmp_path):
    y, proba = _predictions(n=50)
    meta = {"zwarning": np.zeros(50, dtype=np.int32), "source": np.array(["fits"] * 50),
            "plate": np.full(50, 266, dtype=np.int32), "mjd": np.full(50, 51602, dtype=np.int32),
            "fiberid": np.arange(50, dtype=np.int32), "file": np.array([f"f{i}.fits" for i in range(50)])}
    m = evaluate_predictions(y, proba, CLASSES, meta=meta)
    text = json.dumps(m, allow_nan=False)  # numpy scalars or NaN would raise here
    assert json.loads(text)["accuracy"] == m["accuracy"]
    path = write_metrics_json(m, tmp_path / "metrics.json")
    assert json.loads(path.read_text())["per_class"] == m["per_class"]
    csv_path = write_misclassified_csv(m["misclassified"], tmp_path / "misclassified.csv")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(m["misclassified"]) > 0
    assert list(rows[0]) == list(MISCLASSIFIED_COLUMNS)
    assert rows[0]["file"] == m["misclassified"][0]["file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "misclassified.csv"]  # no temp files left


def test_empty_split_gives_null_metrics():
    m = evaluate_predictions(np.zeros(0, dtype=int), np.zeros((0, 4)), CLASSES)
    assert m["n"] == 0 and m["accuracy"] is None and m["balanced_accuracy"] is None
    assert m["small_classes"] == CLASSES
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    "y, proba, match",
    [
        (np.array([0, 1]), np.ones((2, 3)) / 3, r"proba has shape \(2, 3\), expected \(N, 4\)"),
        (np.array([0, 1, 2]), np.ones((2, 4)) / 4, r"y_true has shape \(3,\)"),
        (np.array([0, 4]), np.ones((2, 4)) / 4, r"labels outside \[0, 4\)"),
        (np.array([0.0, 1.0]), np.ones((2, 4)) / 4, "integer class indices"),
    ],
)
def test_bad_input_raises_clear_error(y, proba, match):
    with pytest.raises(ValueError, match=match):
        evaluate_predictions(y, proba, CLASSES)


def test_bad_meta_column_named():
    with pytest.raises(ValueError, match="meta column 'zwarning'"):
        evaluate_predictions(np.array([0, 1]), np.ones((2, 4)) / 4, CLASSES, meta={"zwarning": np.zeros(3)})


def test_dataset_summary_counts_in_class_order():
    s = dataset_summary(np.array([3, 3, 0, 1]), CLASSES, split="test")
    assert s == {"n": 4, "per_class": {"STAR": 1, "QSO": 1, "GALAXY": 0, "AGN": 2}, "split": "test"}
    assert list(s["per_class"]) == CLASSES


# --------------------------------------------------------------------------- evaluate_run
@pytest.fixture(scope="module")
def spectral_run(sdss_dir, tmp_path_factory):
    """A real dataset of the shared SDSS spectra and a briefly trained spectral_tutorial run."""
    import keras

    from specclass.models import get_model
    from specclass.persistence import save_run
    from specclass.preprocessing import Preprocessor
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset(sdss_dir / "spectra", labels="seed4")
    pre = Preprocessor.from_dataset(ds)
    keras.utils.set_random_seed(0)
    model = get_model("spectral_tutorial", pre.input_length, len(ds.class_names))
    train = ds.split("train")
    hist = model.fit(pre.transform(train.flux, train.ivar), train.labels, epochs=2, batch_size=32, verbose=0)
    run_dir = tmp_path_factory.mktemp("spectral-run")
    save_run(run_dir, model, pre, {"model": "spectral_tutorial", "epochs": 2},
             history={k: [float(v) for v in vals] for k, vals in hist.history.items()})
    path = ds.save(tmp_path_factory.mktemp("data") / "sdss.h5")
    return run_dir, ds, path, model, pre


def test_evaluate_run_writes_everything(spectral_run):
    from specclass.evaluation import evaluate_run

    run_dir, ds, path, model, pre = spectral_run
    m = evaluate_run(run_dir, path, split="all")
    assert m["n"] == len(ds) and m["split"] == "all"
    assert m["confusion_matrix"]["labels"] == ds.class_names == ["AGN", "GALAXY", "QSO", "STAR"]
    network = model.predict(pre.transform(ds.flux, ds.ivar), verbose=0)
    # by default GALAXY vs QSO is decided by template fits and AGN vs GALAXY by the measured lines
    from specclass.pipeline_rule import apply_pipeline_rule
    from specclass.simulate.pipeline_labels import generations

    from specclass.pipeline_rule import native_spectra

    # evaluate fits each row's own file (native pixels, the pipeline's masks) where it is there
    native = native_spectra(ds.meta, len(ds))
    assert sum(n is not None for n in native) > 0
    res = apply_pipeline_rule(network, ds.class_names, ds.loglam, ds.flux, ds.ivar, generations(ds.meta, len(ds)),
                              native=native)
    expected = res.proba.argmax(axis=1)
    np.testing.assert_array_equal(
        m["confusion_matrix"]["counts"], confusion_matrix(ds.labels, expected, labels=range(4)))
    rule = m["pipeline_rule"]
    assert rule["applied"] and rule["changed"] == int((network.argmax(axis=1) != expected).sum())
    assert rule["template_decided"] == int((res.template_class != "").sum()) > 0
    assert rule["network_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(ds.labels, network.argmax(1)))
    assert 0 < rule["measured"] <= len(ds)
    assert m["dataset"]["per_class"] == {c: int((ds.labels == i).sum()) for i, c in enumerate(ds.class_names)}
    assert set(m["by_source"]) == {"fits"} and m["by_zwarning"]["zwarning == 0"]["n"] > 0
    assert set(m["small_classes"]) >= {"AGN", "STAR"}  # 2 examples each in the shared set
    if m["misclassified"]:
        row = m["misclassified"][0]
        assert row["file"].endswith(".fits") and row["plate"] > 0 and row["fiberid"] > 0
        assert (run_dir / "misclassified_spectra-all.png").stat().st_size > 0
    for name in ("metrics-all.json", "misclassified-all.csv", "confusion_matrix-all.png", "curves-all.png",
                 "report-all.html"):
        assert (run_dir / name).stat().st_size > 0, name
    assert not (run_dir / "metrics.json").exists()  # split 'all' leaves the test split's names alone
    on_disk = json.loads((run_dir / "metrics-all.json").read_text())
    assert on_disk["accuracy"] == m["accuracy"] and on_disk["files"] == m["files"]
    html = (run_dir / "report-all.html").read_text()
    assert "spectral_tutorial" in html and "By ZWARNING" in html and "https://" not in html
    if m["misclassified"]:  # the report links the viewer page of every misclassified spectrum
        assert f"{len(m['misclassified'])} misclassified spectra</a>" in html
        assert "href='misclassified_viewer-all.html'" in html
        page = (run_dir / "misclassified_viewer-all.html").read_text()
        assert all(Path(r["file"]).name in page for r in m["misclassified"])
    # a run folder without calibration.json: T = 1, the raw softmax, said so
    assert m["calibration"]["temperature"] == 1.0 and "no calibration.json" in m["calibration"]["probabilities"]
    assert "Calibration and uncertain spectra" in html
    # the test split alone (object-grouped split written by the dataset builder) keeps the plain names
    t = evaluate_run(run_dir, ds, split="test")
    assert t["n"] == int((ds.meta["split"] == 2).sum()) > 0
    assert json.loads((run_dir / "metrics.json").read_text())["split"] == "test"
    assert json.loads((run_dir / "metrics-all.json").read_text())["split"] == "all"


def test_evaluate_run_refuses_other_class_order(spectral_run):
    from specclass.evaluation import evaluate_run
    from specclass.spectra.dataset import SpectralDataset

    run_dir, ds, _, _, _ = spectral_run
    other = SpectralDataset(ds.flux, ds.ivar, ds.labels, list(reversed(ds.class_names)), ds.loglam, ds.meta)
    with pytest.raises(ValueError, match="differ from the run's"):
        evaluate_run(run_dir, other, split="all")
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        evaluate_run(run_dir / "nope", ds)
