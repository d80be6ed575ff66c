"""DESI coadd files: arms combined like astropy says, redrock labels on TARGETID, dataset and predict paths."""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.io import SpectrumReadError, iter_spectra, read_spectra, read_spectrum
from specclass.io.desi import redrock_path_for


@pytest.fixture(scope="module")
def desi_dir(shared_data: Path) -> Path:
    d = shared_data / "other_surveys" / "desi"
    if not d.is_dir():
        pytest.skip(f"no DESI files at {d}")
    return d


def _coadds(desi_dir: Path) -> list[Path]:
    files = sorted(p for p in desi_dir.glob("*.fits") if not p.name.startswith(("redrock-", "zbest-")))
    assert files, f"no DESI coadd file in {desi_dir}"
    return files


def _astropy_combined(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reference: every arm pixel keyed by its wavelength (0.01 Å), ivar-weighted sums."""
    with fits.open(path) as h:
        names = {x.name for x in h}
        arms = [a for a in "BRZ" if f"{a}_FLUX" in names]
        nspec = h[f"{arms[0]}_FLUX"].data.shape[0]
        num = [defaultdict(float) for _ in range(nspec)]
        den = [defaultdict(float) for _ in range(nspec)]
        for a in arms:
            wave = h[f"{a}_WAVELENGTH"].data.astype(np.float64)
            flux = h[f"{a}_FLUX"].data.astype(np.float64)
            ivar = h[f"{a}_IVAR"].data.astype(np.float64)
            if f"{a}_MASK" in names:
                ivar = ivar * (h[f"{a}_MASK"].data == 0)
            for i in range(nspec):
                for w, f, iv in zip(wave, flux[i], ivar[i]):
                    key = round(w * 100)
                    num[i][key] += iv * f
                    den[i][key] += iv
    keys = sorted(den[0])
    wave = np.array(keys) / 100.0
    d = np.array([[den[i][k] for k in keys] for i in range(nspec)])
    n = np.array([[num[i][k] for k in keys] for i in range(nspec)])
    flux = np.where(d > 0, n / np.where(d > 0, d, 1), 0.0)
    return wave, flux, d


def test_every_desi_coadd_matches_astropy(desi_dir: Path) -> None:
    for path in _coadds(desi_dir):
        spectra = read_spectra(path)
        wave, flux, ivar = _astropy_combined(path)
        assert len(spectra) == flux.shape[0], path.name
        for i, s in enumerate(spectra):
            assert s.meta.format == "desi-coadd" and s.meta.survey == "desi"
            assert s.meta.extra["row"] == i
            for arr in (s.loglam, s.flux, s.ivar):
                assert arr.dtype == np.dtype("=f4") and arr.flags.c_contiguous
            np.testing.assert_allclose(10.0 ** s.loglam.astype(np.float64), wave, rtol=1e-6)
            np.testing.assert_allclose(s.flux, flux[i], rtol=2e-6, atol=1e-6 * np.abs(flux[i]).max())
            np.testing.assert_allclose(s.ivar, ivar[i], rtol=2e-6, atol=0)
            assert not s.and_mask.any()
        # the standard B/R/Z arms on the 0.8 Å lattice: 3600..9824 Å, 7,781 pixels, overlaps merged
        assert spectra[0].npix == 7781 == wave.size


def test_desi_labels_are_redrock_joined_on_targetid(desi_dir: Path) -> None:
    path = desi_dir / "coadd-4-80613-thru20210324.fits"
    if not path.is_file():
        pytest.skip("no labelled DESI pair")
    rr = redrock_path_for(str(path))
    assert rr is not None and rr.name == "redrock-4-80613-thru20210324.fits"
    with fits.open(rr) as h:
        z = h["REDSHIFTS"].data
        table = {int(t): (c.strip(), s.strip(), float(zz), int(w))
                 for t, c, s, zz, w in zip(z["TARGETID"], z["SPECTYPE"], z["SUBTYPE"], z["Z"], z["ZWARN"])}
    with fits.open(path) as h:
        tids = [int(t) for t in h["FIBERMAP"].data["TARGETID"]]
    spectra = read_spectra(path)
    assert [s.meta.extra["targetid"] for s in spectra] == tids
    for s in spectra:
        cls, sub, zz, zw = table[s.meta.extra["targetid"]]
        assert (s.meta.class_, s.meta.subclass, s.meta.zwarning) == (cls, sub, zw)
        assert s.meta.z == pytest.approx(zz)
    assert spectra[0].meta.class_ == "GALAXY" and spectra[0].meta.extra["targetid"] == 39633345008634465
    assert (spectra[0].meta.plate, spectra[0].meta.mjd, spectra[0].meta.fiberid) == (-1, -1, -1)


def test_desi_rows_of_the_catalog(shared_data: Path, desi_dir: Path) -> None:
    """catalog.csv's DESI coadd rows: class, z, TARGETID as read."""
    with (shared_data / "other_surveys" / "catalog.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["survey"].upper() == "DESI" and "/coadd-" in f"/{r['filename']}"]
    if not rows:
        pytest.skip("catalog.csv lists no DESI coadd")
    for r in rows:
        s = read_spectra(shared_data / "other_surveys" / r["filename"])[0]
        assert s.meta.class_ == r["class"] and str(s.meta.extra["targetid"]) == r["object_id"]
        assert s.meta.z == pytest.approx(float(r["z"]), abs=1e-5) and s.meta.zwarning == int(r["zwarning"])


def test_unlabelled_multi_spectrum_coadd(desi_dir: Path) -> None:
    path = desi_dir / "quasarnp_test_coadd.fits"
    if not path.is_file():
        pytest.skip("no QuasarNP coadd")
    with pytest.raises(SpectrumReadError, match=r"holds 25 spectra .*row=0\.\.24"):
        read_spectrum(path)
    # spectrum 11 has ivar = 0 in every arm (PROVENANCE.md says the B arm; R and Z are too):
    # it reads (an all-masked spectrum is the dataset builder's / predict's call), with ivar 0
    one = read_spectrum(path, row=11)
    assert one.meta.extra["row"] == 11 and one.meta.class_ == "" and one.meta.extra["targetid"] == -1
    assert not one.ivar.any() and read_spectrum(path, row=10).ivar.all()
    with pytest.raises(SpectrumReadError, match="row=25 is out of range"):
        read_spectrum(path, row=25)


def test_redrock_file_read_as_spectra_names_the_coadd(desi_dir: Path) -> None:
    rr = desi_dir / "redrock-4-80613-thru20210324.fits"
    if not rr.is_file():
        pytest.skip("no redrock file")
    with pytest.raises(SpectrumReadError, match="redrock redshift catalogue .* coadd-"):
        read_spectra(rr)
    bad = [why for _, s, why in iter_spectra(desi_dir) if s is None]
    assert len(bad) == 1 and "redrock" in bad[0]


def test_coadd_without_its_redrock_file_reads_unlabelled(desi_dir: Path, tmp_path: Path) -> None:
    src = desi_dir / "coadd-4-80613-thru20210324.fits"
    if not src.is_file():
        pytest.skip("no labelled DESI pair")
    shutil.copyfile(src, tmp_path / src.name)
    s = read_spectrum(tmp_path / src.name)
    assert s.meta.class_ == "" and s.meta.zwarning == -1 and s.meta.extra["targetid"] == 39633345008634465


def test_build_dataset_keeps_targetid_and_skips_unlabelled(desi_dir: Path, tmp_path: Path) -> None:
    from specclass.spectra.build import build_dataset
    from specclass.spectra.dataset import SpectralDataset

    ds, report = build_dataset(desi_dir, labels="class3")
    ds = SpectralDataset.load(ds.save(tmp_path / "desi.h5"))  # targetid (int64) survives the file
    labelled = [p for p in _coadds(desi_dir) if redrock_path_for(str(p))]
    assert len(ds) == len(labelled) >= 1
    assert ds.meta["targetid"][0] == 39633345008634465 and ds.meta["source"][0] == "other-survey"
    assert ds.meta["class"][0] == "GALAXY" and ds.meta["survey"][0] == "desi"


def test_predict_csv_carries_targetid(desi_dir: Path, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from specclass import persistence
    from specclass.models import get_model
    from specclass.predict import predict_files
    from specclass.preprocessing import Preprocessor
    from specclass.spectra.grid import LogLamGrid

    grid = LogLamGrid()  # the default 3.58-3.96 dex grid
    pre = Preprocessor(grid=grid.to_dict(), class_names=["GALAXY", "QSO", "STAR"])
    keras.utils.set_random_seed(0)
    model = get_model("spectral_resnet", pre.input_length, 3, filters=[16, 16])
    run = tmp_path / "run"
    persistence.save_run(run, model, pre, {"model": "spectral_resnet"})
    out = tmp_path / "p.csv"
    rows, failures = predict_files(run, [desi_dir], out=out)
    n_spectra = sum(len(read_spectra(p)) for p in _coadds(desi_dir))
    # not classified: the redrock file (not spectra) and QuasarNP spectrum 11 (ivar 0 everywhere)
    assert len(rows) == n_spectra - 1 and len(failures) == 2
    reasons = sorted(f["reason"] for f in failures)
    assert "redrock" in reasons[0] and reasons[1].startswith("spectrum 11: 0 good pixels")
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    galaxy = [t for t in table if t["targetid"] == "39633345008634465"]
    assert len(galaxy) == 1 and galaxy[0]["file_class"] == "GALAXY" and galaxy[0]["plate"] == ""
    qnp = [t for t in table if t["file"].endswith("quasarnp_test_coadd.fits")]
    assert [int(t["row"]) for t in qnp if t["row"]] == [i for i in range(25) if i != 11]
    assert all(t["targetid"] == "" for t in qnp)
