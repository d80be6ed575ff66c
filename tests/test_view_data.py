"""specclass view without a browser: compact encoding, pixel binning, the table, loaders, the page, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bokeh")

from specclass.cli import main  # noqa: E402
from specclass.predict import write_predictions_csv  # noqa: E402
from specclass.view import ViewerData, from_predictions_csv, render_viewer  # noqa: E402
from specclass.view.data import (AGREE, DISAGREE, NO_LABEL, bin_pixels, decode_spectra,  # noqa: E402
                                 encode_spectra, pipeline_labels, read_predictions_csv)
from specclass.view.lines import default_lines  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "specclass" / "sample" / "spectra"
CLASSES = ["GALAXY", "QSO", "STAR"]

#: (file, made-up probabilities GALAXY/QSO/STAR) of the shipped sample spectra.
SAMPLE_PROBA = {
    "spec-0266-51602-0013.fits": (0.97, 0.02, 0.01),   # GALAXY, agrees
    "spec-0285-51930-0309.fits": (0.45, 0.35, 0.20),   # GALAXY, uncertain
    "spec-0390-51900-0282.fits": (0.10, 0.85, 0.05),   # GALAXY called QSO: disagrees
    "spec-0907-52373-0419.fits": (0.20, 0.70, 0.10),   # QSO, agrees
    "spec-4455-55539-0692.fits": (0.05, 0.05, 0.90),   # STAR, agrees
    "spec-7102-56666-0914.fits": (0.02, 0.96, 0.02),   # QSO, agrees
    "spSpec-52017-0516-139.fit.gz": (0.30, 0.60, 0.10),  # DR7 QSO at z = 3.2 with masked pixels
    "spec-0266-51602-0084.txt": (0.60, 0.30, 0.10),    # text file: no pipeline class
}


def sample_predictions(path: Path) -> Path:
    """A predictions.csv (as ``specclass predict`` writes it) for the shipped sample spectra."""
    from specclass.io import read_spectrum

    rows = []
    for name, p in SAMPLE_PROBA.items():
        m = read_spectrum(SAMPLE / name).meta
        k = int(np.argmax(p))
        rows.append({"file": str(SAMPLE / name), "row": "", "plate": m.plate, "mjd": m.mjd, "fiberid": m.fiberid,
                     "file_class": m.class_, "file_subclass": m.subclass, "z": m.z, "zwarning": m.zwarning,
                     "predicted_class": CLASSES[k], "probability": p[k], "uncertain": int(p[k] < 0.5),
                     **{f"p_{c}": v for c, v in zip(CLASSES, p)}, "reason": ""})
    return write_predictions_csv(path, rows, [{"file": "broken.fits", "reason": "unreadable"}], CLASSES)


def _toy(n: int = 5, length: int = 40) -> ViewerData:
    rng = np.random.default_rng(1)
    loglam = 3.6 + 1e-4 * np.arange(length)
    proba = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return ViewerData(loglam, rng.normal(5, 1, (n, length)), np.full((n, length), 4.0), proba, CLASSES,
                      {"name": [f"s{i}" for i in range(n)], "pipeline": ["GALAXY", "QSO", "", "STAR", "GALAXY"][:n]})


def test_encoding_keeps_flux_to_relative_precision_and_masked_pixels():
    rng = np.random.default_rng(0)
    flux = rng.normal(2.0, 1.0, (3, 500)).astype(np.float32)
    flux[0, 100] = 5e4  # a cosmic-ray spike must not wreck the precision of the rest
    flux[1] *= 1e-3  # a faint spectrum
    ivar = rng.uniform(0.5, 4.0, (3, 500)).astype(np.float32)
    ivar[:, 200:220] = 0
    ivar[2] = 0  # nothing good at all
    packed = encode_spectra(flux, ivar)
    assert packed["flux"][0].dtype == np.int16 and packed["sigma"][0].dtype == np.uint8
    for i in range(2):
        f, s = decode_spectra(packed, i)
        np.testing.assert_allclose(f, flux[i], rtol=2e-3, atol=2e-3 * np.median(1 / np.sqrt(ivar[i][ivar[i] > 0])))
        good = ivar[i] > 0
        np.testing.assert_allclose(s[good], 1 / np.sqrt(ivar[i][good]), rtol=0.02)
        assert np.isnan(s[200:220]).all() and np.isfinite(s[good]).all()
    assert np.isnan(decode_spectra(packed, 2)[1]).all()


def test_bin_pixels_is_the_ivar_weighted_mean_and_keeps_the_mask():
    loglam = 3.6 + 1e-4 * np.arange(7)
    flux = np.array([[1.0, 3.0, 5.0, 7.0, 2.0, 2.0, 9.0]], dtype=np.float32)
    ivar = np.array([[1.0, 3.0, 0.0, 0.0, 2.0, 2.0, 1.0]], dtype=np.float32)
    ll, f, iv = bin_pixels(loglam, flux, ivar, 2)
    np.testing.assert_allclose(ll, [3.60005, 3.60025, 3.60045])  # trailing odd pixel dropped
    np.testing.assert_allclose(f[0], [2.5, 0.0, 2.0])
    np.testing.assert_allclose(iv[0], [4.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="bin factor 0"):
        bin_pixels(loglam, flux, ivar, 0)


def test_viewer_data_derives_agreement_uncertainty_and_sorts_by_confidence():
    d = _toy()
    assert list(d.predicted) == [CLASSES[k] for k in d.proba.argmax(axis=1)]
    assert d.agreement[2] == NO_LABEL
    assert set(d.agreement) <= {AGREE, DISAGREE, NO_LABEL}
    assert list(d.uncertain) == list(d.probability < 0.5)
    s = d.by_confidence()
    assert np.all(np.diff(s.probability) <= 0) and sorted(s.meta["name"]) == sorted(d.meta["name"])
    with pytest.raises(ValueError, match="meta column 'z'"):
        ViewerData(d.loglam, d.flux, d.ivar, d.proba, CLASSES, {"z": [1.0]})
    with pytest.raises(ValueError, match="proba has shape"):
        ViewerData(d.loglam, d.flux, d.ivar, d.proba[:, :2], CLASSES)


def test_pipeline_labels_follow_the_models_label_scheme():
    four = ["AGN", "GALAXY", "QSO", "STAR"]
    assert pipeline_labels(["galaxy", "QSO", "STAR", ""], ["AGN", "BROADLINE", "K7", ""], four) == \
        ["AGN", "QSO", "STAR", ""]
    assert pipeline_labels(["GALAXY"], ["AGN"], CLASSES) == ["GALAXY"]


def test_lines_are_vacuum_wavelengths():
    lines = {(ln.name, round(ln.rest, 1)) for ln in default_lines()}
    assert ("Hα", 6564.6) in lines and ("Ca II K", 3934.8) in lines and ("Mg II", 2798.8) in lines


def test_predictions_csv_and_its_files_give_a_self_contained_page(tmp_path):
    csv_path = sample_predictions(tmp_path / "predictions.csv")
    rows, classes = read_predictions_csv(csv_path)
    assert classes == CLASSES and len(rows) == len(SAMPLE_PROBA)  # the failure row is dropped
    data = from_predictions_csv(csv_path)
    assert len(data) == len(SAMPLE_PROBA)
    by_name = dict(zip(data.meta["name"], data.agreement))
    assert by_name["0390-51900-0282"] == DISAGREE and by_name["0266-51602-0013"] == AGREE
    assert by_name["0516-52017-0139"] == AGREE  # the DR7 file read through its own grid
    dr7 = list(data.meta["name"]).index("0516-52017-0139")
    assert (data.ivar[dr7] == 0).sum() > 97  # its masked pixels and the grid beyond its coverage
    page = render_viewer(data)
    assert "0390-51900-0282" in page and "visual-marks.csv" in page
    # offline: no script or style is fetched from anywhere
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=[\"']https?:", page)
    assert "cdn.bokeh.org" not in page


def test_predictions_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other.csv: not a specclass predictions file"):
        from_predictions_csv(bad)
    moved = tmp_path / "moved.csv"
    moved.write_text(sample_predictions(tmp_path / "p.csv").read_text().replace(str(SAMPLE), "/nowhere"))
    with pytest.raises(ValueError, match="none of the 8 spectrum files"):
        from_predictions_csv(moved)


def test_cli_writes_the_page_and_refuses_a_run_without_spectra(tmp_path, capsys):
    csv_path = sample_predictions(tmp_path / "predictions.csv")
    out = tmp_path / "page" / "viewer.html"
    out.parent.mkdir()
    assert main(["view", str(csv_path), str(SAMPLE), "--out", str(out), "--bin", "1"]) == 0
    said = capsys.readouterr().out
    assert out.is_file() and "8 spectra (1 uncertain, 1 disagree with the pipeline)" in said
    run = tmp_path / "run"
    run.mkdir()
    assert main(["view", str(run), "--out", str(tmp_path / "x.html")]) == 2
    assert "is a run folder: give the spectra to classify" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing.csv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _desi_predictions(desi_dir: Path, out: Path) -> tuple[Path, list]:
    """A predictions.csv (as ``specclass predict`` writes it) for every spectrum of the DESI coadds."""
    from specclass.io import read_spectra

    rows, spectra = [], []
    for path in sorted(desi_dir.glob("*coadd*.fits")):
        for s in read_spectra(path):
            m, p = s.meta, (0.6, 0.3, 0.1)
            rows.append({"file": str(path), "row": m.extra["row"], "plate": m.plate, "mjd": m.mjd,
                         "fiberid": m.fiberid, "targetid": m.extra.get("targetid", -1), "file_class": m.class_,
                         "file_subclass": m.subclass, "z": m.z, "zwarning": m.zwarning, "predicted_class": "GALAXY",
                         "probability": p[0], "uncertain": 0, **{f"p_{c}": v for c, v in zip(CLASSES, p)},
                         "reason": ""})
            spectra.append(s)
    return write_predictions_csv(out, rows, [], CLASSES), spectra


def test_desi_spectra_of_one_coadd_stay_apart_in_the_viewer(shared_data, tmp_path):
    """Merge of issues 13 (DESI coadds: many spectra per file, TARGETID, no plate) and 15 (viewer):
    every spectrum of the 25-spectrum QuasarNP coadd was named after the file alone, and a dataset
    lookup by file name gave each row the same spectrum."""
    from specclass.spectra.grid import DEFAULT_GRID, rebin

    desi_dir = shared_data / "other_surveys" / "desi"
    csv_path, spectra = _desi_predictions(desi_dir, tmp_path / "desi.csv")
    data = from_predictions_csv(csv_path, [desi_dir])
    names = list(data.meta["name"])
    assert len(names) == len(spectra) == 26 and len(set(names)) == 26
    assert "TARGETID 39633345008634465" in names and "quasarnp_test_coadd.fits [5]" in names
    i = names.index("quasarnp_test_coadd.fits [5]")
    fifth = next(s for s in spectra if s.meta.file.endswith("quasarnp_test_coadd.fits") and s.meta.extra["row"] == 5)
    flux, _ = rebin(fifth, DEFAULT_GRID)
    np.testing.assert_allclose(data.flux[i], flux, rtol=1e-6)


def test_desi_rows_are_matched_in_a_dataset_by_targetid(shared_data, tmp_path):
    from specclass.spectra.build import build_dataset

    desi_dir = shared_data / "other_surveys" / "desi"
    ds, _ = build_dataset(desi_dir, labels="class3")  # the labelled coadd only (one spectrum)
    h5 = ds.save(tmp_path / "desi.h5")
    csv_path, _ = _desi_predictions(desi_dir, tmp_path / "desi.csv")
    data = from_predictions_csv(csv_path, [h5])
    assert list(data.meta["name"]) == ["TARGETID 39633345008634465"]  # the unlabelled QuasarNP rows are not in it
    np.testing.assert_allclose(data.flux[0], ds.flux[0])
