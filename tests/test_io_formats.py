"""specclass.io readers on the real files in ../shared/data: every format, against astropy and catalog.csv."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import SHARED_DATA

from specclass.io import (
    SpectrumReadError,
    iter_spectra,
    load_text_labels,
    read_spectra,
    read_spectrum,
)
from specclass.io.fits import SPEC_CLN_CLASS

SDSS = SHARED_DATA / "sdss"


def _spec_files() -> list[Path]:
    """Every spec-format (lite/full, named or not) FITS file in the shared SDSS folder."""
    if not SDSS.is_dir():
        return []
    files = [p for p in SDSS.rglob("*.fits") if p.name.startswith("spec-")]
    files += list((SDSS / "full").glob("*.fits"))
    return sorted(set(files))


SPEC_FILES = _spec_files()


def _catalog(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "catalog.csv", newline="") as fh:
        return {row["filename"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def sdss_catalog(sdss_dir: Path) -> dict[str, dict[str, str]]:
    return _catalog(sdss_dir)


def _native_endian(arr: np.ndarray) -> bool:
    return arr.dtype.byteorder in ("=", "|") or arr.dtype.isnative


def _assert_clean(spec, npix: int | None = None) -> None:
    assert spec.loglam.dtype == np.float32 and spec.flux.dtype == np.float32 and spec.ivar.dtype == np.float32
    assert spec.and_mask.dtype == np.int32
    for arr in (spec.loglam, spec.flux, spec.ivar, spec.and_mask):
        assert _native_endian(arr) and arr.flags.c_contiguous and arr.ndim == 1
    assert np.all(np.diff(spec.loglam) > 0)
    assert np.isfinite(spec.flux).all() and np.isfinite(spec.ivar).all()
    if npix is not None:
        assert spec.npix == npix


def _meta_dict(spec) -> dict:
    d = dataclasses.asdict(spec.meta)
    d["extra"] = {k: v for k, v in d["extra"].items() if k != "reader"}
    return d


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.skipif(not SPEC_FILES, reason=f"no spec files under {SDSS}")
@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_spec_file_matches_astropy_and_catalog(path: Path, sdss_catalog) -> None:
    """Native reader == astropy's own arrays and HDU 2 row == our astropy fallback == catalog.csv."""
    native = read_spectrum(path)
    assert native.meta.extra["reader"] == "native"
    _assert_clean(native)

    # 1. astropy, used directly: the arrays of HDU 1
    with fits.open(path) as hdul:
        coadd = hdul[1].data
        names = {n.upper(): n for n in coadd.columns.names}
        np.testing.assert_array_equal(native.flux, coadd[names["FLUX"]].astype(np.float32))
        np.testing.assert_array_equal(native.loglam, coadd[names["LOGLAM"]].astype(np.float32))
        np.testing.assert_array_equal(native.ivar, coadd[names["IVAR"]].astype(np.float32))
        np.testing.assert_array_equal(native.and_mask, coadd[names["AND_MASK"]].astype(np.int32))
        n_hdus = len(hdul)

    # 2. the astropy path (HDU 2 labels read by astropy's table code) gives the identical Spectrum
    slow = read_spectrum(path, engine="astropy")
    assert slow.meta.extra["reader"] == "astropy"
    for name in ("loglam", "flux", "ivar", "and_mask"):
        a, b = getattr(native, name), getattr(slow, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    ma, mb = _meta_dict(native), _meta_dict(slow)
    assert all(_same(ma[k], mb[k]) for k in ma), (ma, mb)
    assert native.meta.format.startswith("spec-full" if n_hdus > 4 else "spec-lite")

    # 3. catalog.csv (written with astropy by the data curator)
    rel = path.relative_to(SDSS).as_posix()
    cat = sdss_catalog.get(rel)
    if cat is not None:
        assert native.meta.format == cat["format"]
        assert native.npix == int(float(cat["npix"]))
        assert native.meta.class_ == cat["class"].upper()
        assert native.meta.subclass == cat["subclass"].upper()
        assert (native.meta.plate, native.meta.mjd, native.meta.fiberid) == tuple(
            int(float(cat[k])) for k in ("plate", "mjd", "fiberid")
        )
        assert native.meta.z == pytest.approx(float(cat["z"]), abs=6e-6)  # catalog rounds z
        assert native.meta.zwarning == int(float(cat["zwarning"]))
        assert native.meta.run2d == cat["run2d"]
        assert int((native.ivar <= 0).sum()) == int(float(cat["n_ivar_le0"]))


@pytest.mark.parametrize(
    "full, lite",
    [
        ("full/spec-0266-51602-0001.fits", "spectra/spec-0266-51602-0001.fits"),
        ("full/spec-7340-57576-0740.fits", "spectra/spec-7340-57576-0740.fits"),
        ("full/8222-57431-0561.fits", "spectra/spec-8222-57431-0561.fits"),
    ],
)
def test_lite_and_full_give_identical_arrays(sdss_dir: Path, full: str, lite: str) -> None:
    a, b = read_spectrum(sdss_dir / full), read_spectrum(sdss_dir / lite)
    assert a.meta.format == "spec-full" and b.meta.format == "spec-lite"
    for name in ("loglam", "flux", "ivar", "and_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.meta.object_key == b.meta.object_key
    assert (a.meta.class_, a.meta.subclass, a.meta.z, a.meta.zwarning) == (
        b.meta.class_, b.meta.subclass, b.meta.z, b.meta.zwarning,
    )


def test_non_standard_name_is_read_by_content(sdss_dir: Path) -> None:
    spec = read_spectrum(sdss_dir / "full" / "8222-57431-0561.fits")
    assert (spec.meta.plate, spec.meta.mjd, spec.meta.fiberid) == (8222, 57431, 561)
    assert spec.meta.object_key == "8222-57431-0561"
    assert spec.meta.survey in ("boss", "eboss") and spec.meta.run2d == "v5_13_2"


def test_noextname_read_by_position(sdss_dir: Path, sdss_catalog) -> None:
    rel = next(k for k, v in sdss_catalog.items() if v["format"] == "spec-lite-noextname")
    spec = read_spectrum(sdss_dir / rel)
    assert spec.meta.format == "spec-lite-noextname"
    assert spec.meta.class_ == sdss_catalog[rel]["class"]
    assert spec.meta.survey == "boss"


DR7 = ["dr7/spSpec-51993-0542-631.fit", "dr7/spSpec-52017-0516-139.fit.gz",
       "spectra3/dr7/spSpec-52251-0751-160.fits", "spectra3/dr7/spSpec-52999-1307-323.fits"]


@pytest.mark.parametrize("rel", DR7)
def test_spspec_dr7(sdss_dir: Path, sdss_catalog, rel: str) -> None:
    path = sdss_dir / rel
    spec = read_spectrum(path)
    _assert_clean(spec)
    cat = sdss_catalog[rel]
    assert spec.meta.format == "spSpec-dr7"
    raw = gzip.decompress(path.read_bytes()) if rel.endswith(".gz") else path.read_bytes()
    import io

    with fits.open(io.BytesIO(raw)) as hdul:
        h, img = hdul[0].header, hdul[0].data
        cln = int(h["SPEC_CLN"])
        assert spec.meta.class_ == SPEC_CLN_CLASS[cln] == cat["class"]
        assert spec.meta.extra["spec_cln"] == cln and cat["subclass"] == f"SPEC_CLN={cln}"
        expected_loglam = (h["COEFF0"] + h["COEFF1"] * np.arange(img.shape[1])).astype(np.float32)
        np.testing.assert_array_equal(spec.loglam, expected_loglam)
        sigma = img[2].astype(np.float64)
        good = sigma > 0
        np.testing.assert_allclose(spec.ivar[good], 1.0 / sigma[good] ** 2, rtol=1e-6)
        assert np.all(spec.ivar[~good] == 0)
        np.testing.assert_array_equal(spec.flux, img[0].astype(np.float32))
        np.testing.assert_array_equal(spec.and_mask, img[3].astype(np.int32))
    assert spec.meta.zwarning == int(float(cat["zwarning"]))
    assert spec.meta.z == pytest.approx(float(cat["z"]), rel=1e-5)
    assert spec.npix == int(float(cat["npix"]))
    assert int((spec.ivar <= 0).sum()) == int(float(cat["n_ivar_le0"]))
    assert (spec.meta.plate, spec.meta.mjd, spec.meta.fiberid) == tuple(
        int(float(cat[k])) for k in ("plate", "mjd", "fiberid")
    )


def test_gzip_detected_by_content_not_suffix(sdss_dir: Path, tmp_path: Path) -> None:
    # a gzip spSpec saved with a plain .fits name
    src = sdss_dir / "dr7" / "spSpec-52017-0516-139.fit.gz"
    disguised = tmp_path / "spSpec-52017-0516-139.fits"
    shutil.copyfile(src, disguised)
    a, b = read_spectrum(src), read_spectrum(disguised)
    np.testing.assert_array_equal(a.flux, b.flux)
    # a gzip spec-lite with a .fits name: still the native path, same arrays as the plain file
    plain = sdss_dir / "spectra" / "spec-0266-51602-0013.fits"
    gz_as_fits = tmp_path / "spec-0266-51602-0013.fits"
    gz_as_fits.write_bytes(gzip.compress(plain.read_bytes()))
    c, d = read_spectrum(plain), read_spectrum(gz_as_fits)
    assert d.meta.extra["reader"] == "native"
    np.testing.assert_array_equal(c.flux, d.flux)
    assert _meta_dict(c) | {"file": ""} == _meta_dict(d) | {"file": ""}
    # and a plain FITS file named .gz is read as plain FITS
    fake_gz = tmp_path / "plain.fits.gz"
    shutil.copyfile(plain, fake_gz)
    np.testing.assert_array_equal(read_spectrum(fake_gz).flux, c.flux)


def test_other_layout_table_ngc3522(sdss_dir: Path, sdss_catalog) -> None:
    rel = "other_layouts/NGC3522_SDSS.fits"
    spec = read_spectrum(sdss_dir / rel)
    _assert_clean(spec, npix=3847)
    with fits.open(sdss_dir / rel) as hdul:
        t = hdul[1].data
        np.testing.assert_array_equal(spec.flux, t["flux"].astype(np.float32))
        np.testing.assert_array_equal(spec.ivar, t["inverse_variance"].astype(np.float32))
        np.testing.assert_array_equal(spec.and_mask, t["and_mask"].astype(np.int32))
        np.testing.assert_allclose(spec.wavelength, t["wavelength"], rtol=1e-6)
    assert spec.meta.format == "table" and spec.meta.class_ == ""  # no label in the file
    assert int((spec.ivar <= 0).sum()) == int(float(sdss_catalog[rel]["n_ivar_le0"]))
    labelled = read_spectrum(sdss_dir / rel, label="galaxy")
    assert labelled.meta.class_ == "GALAXY" and labelled.meta.extra["label_source"] == "user"


def test_iraf_1d_rest_frame_linear_cg922(sdss_dir: Path) -> None:
    path = sdss_dir / "spectra2" / "other_layouts" / "cg922.fits"
    spec = read_spectrum(path)
    _assert_clean(spec, npix=3830)
    assert spec.meta.format == "iraf-1d"
    assert spec.meta.class_ == "GALAXY" and spec.meta.object_key == "1329-52767-0180"
    assert spec.meta.extra["has_ivar"] is False and np.all(spec.ivar == 1)
    # file grid: CRVAL1 + CD1_1 * i, rest frame; we return it in the observed frame
    z = 0.0485982
    assert spec.meta.extra["rest_frame_in_file"] is True
    assert spec.wavelength[0] == pytest.approx(3634.79339018633 * (1 + z), rel=1e-6)
    assert spec.wavelength[-1] == pytest.approx((3634.79339018633 + 3829 * 1.34314085060173) * (1 + z), rel=1e-6)
    # observed start == 10**COEFF0, where the original spSpec grid started
    assert spec.wavelength[0] == pytest.approx(10**3.5811, abs=1.0)
    # the file stores erg/s/cm2/A; we return 1e-17 erg/s/cm2/A
    with fits.open(path) as hdul:
        np.testing.assert_allclose(spec.flux, hdul[0].data.astype(np.float64) * 1e17, rtol=1e-6)


def test_mastar_multi_spectrum_table(sdss_dir: Path) -> None:
    path = sdss_dir / "spectra2" / "other_layouts" / "mastar_example_spectral_types.fits"
    spectra = read_spectra(path)
    assert len(spectra) == 7
    assert [s.meta.subclass for s in spectra][:2] == ["O6.5V", "B2"]
    assert all(s.meta.class_ == "STAR" and s.npix == 4563 for s in spectra)
    assert [s.meta.extra["row"] for s in spectra] == list(range(7))
    with pytest.raises(SpectrumReadError, match=r"holds 7 spectra.*read_spectra"):
        read_spectrum(path)
    third = read_spectrum(path, row=2)
    np.testing.assert_array_equal(third.flux, spectra[2].flux)
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(third.flux, hdul[1].data["FLUX"][2].astype(np.float32))
    with pytest.raises(SpectrumReadError, match="row=7 is out of range"):
        read_spectrum(path, row=7)


@pytest.fixture(scope="module")
def lamost_catalog(shared_data: Path) -> dict[str, dict[str, str]]:
    return _catalog(shared_data / "other_surveys")


def test_lamost_all_files(shared_data: Path, lamost_catalog) -> None:
    """Every LAMOST LRS file (DR1 no wavelength row, DR2-8 wavelength row, DR9 table, gz) vs catalog.csv."""
    base = shared_data / "other_surveys"
    seen = set()
    for rel, cat in lamost_catalog.items():
        if not cat["survey"].upper().startswith("LAMOST"):  # DESI rows: tests/test_io_desi.py
            continue
        spec = read_spectrum(base / rel)
        _assert_clean(spec, npix=int(float(cat["npix"])))
        seen.add(spec.meta.format)
        assert spec.meta.survey == "lamost"
        assert spec.meta.class_ == cat["class"].upper()
        assert spec.meta.subclass == cat["subclass"].upper()
        assert spec.wavelength[0] == pytest.approx(float(cat["wave_min"]), abs=0.06)
        assert spec.wavelength[-1] == pytest.approx(float(cat["wave_max"]), abs=0.06)
        assert int((spec.ivar <= 0).sum()) == int(float(cat["n_ivar_le0"]))
    assert seen == {"lamost-lrs-image", "lamost-lrs-table"}


def test_lamost_dr1_wavelength_from_coeff(shared_data: Path) -> None:
    path = sorted((shared_data / "other_surveys" / "lamost" / "dr1_B6212").glob("*.fits"))[0]
    spec = read_spectrum(path)
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert "Wavelength" not in h["EXTEN0"]
        expected = h["COEFF0"] + h["COEFF1"] * np.arange(h["NAXIS1"])
        np.testing.assert_allclose(spec.loglam, expected, atol=1e-6)
        np.testing.assert_array_equal(spec.ivar, hdul[0].data[1].astype(np.float32))


def test_text_spectra_with_label_table(sdss_dir: Path) -> None:
    labels = load_text_labels(sdss_dir / "arrays" / "sdss_star_spectra_txt.csv")
    # 1,113 rows, some spectra listed twice (with the same label)
    assert len(labels) == 963 and labels["0266-51602-0051"] == ("STAR", "CV")
    files = sorted((sdss_dir / "text_stars").glob("*.txt"))
    assert len(files) == 38
    results = list(iter_spectra(sdss_dir / "text_stars", label=labels))
    assert len(results) == 38 and all(s is not None for _, s, _ in results)
    n_labelled = 0
    for path, spec, _ in results:
        _assert_clean(spec)
        assert spec.meta.format == "text" and spec.meta.extra["has_ivar"] is False
        assert spec.meta.object_key == Path(path).stem.removeprefix("spec-")[:15]
        if spec.meta.object_key in labels:
            n_labelled += 1
            assert (spec.meta.class_, spec.meta.subclass) == labels[spec.meta.object_key]
        else:
            assert spec.meta.class_ == ""
    assert n_labelled == 32
    # the catalog (same columns) labels all 38, as the curator recorded them
    cat_labels = load_text_labels(sdss_dir / "catalog.csv")
    cat = _catalog(sdss_dir)
    for path, spec, _ in iter_spectra(files, label=cat_labels):
        row = cat[f"text_stars/{Path(path).name}"]
        assert (spec.meta.class_, spec.meta.subclass) == (row["class"], row["subclass"].upper())
        assert spec.npix == int(float(row["npix"]))
    first = files[0]
    raw = np.loadtxt(first)
    spec = read_spectrum(first)
    np.testing.assert_array_equal(spec.flux, raw[:, 1].astype(np.float32))
    np.testing.assert_allclose(spec.wavelength, raw[:, 0], rtol=1e-6)
    assert np.all(spec.ivar == 1) and spec.meta.class_ == ""
    assert read_spectrum(first, label=("star", "k7")).meta.subclass == "K7"


def test_iter_spectra_whole_tree_never_aborts(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((shared_data / "sdss" / "spectra").glob("*.fits"))[:3]
    for p in good:
        shutil.copyfile(p, folder / p.name)
    (folder / "spec-9999-99999-0001.fits").write_text("<!DOCTYPE html><html><body>404</body></html>")
    (folder / "spec-9999-99999-0002.fits").write_bytes(good[0].read_bytes()[:10000])
    results = list(iter_spectra(folder))
    assert len(results) == 5
    ok = [r for r in results if r[1] is not None]
    bad = {Path(p).name: why for p, s, why in results if s is None}
    assert len(ok) == 3
    assert "HTML" in bad["spec-9999-99999-0001.fits"]
    assert "truncated" in bad["spec-9999-99999-0002.fits"]


def test_label_table_conflict_is_an_error(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("plate,mjd,fiberid,class,subclass\n266,51602,51,STAR,CV\n266,51602,51,star,K7\n")
    with pytest.raises(SpectrumReadError, match=r"labels.csv: line 3: 0266-51602-0051 is labelled"):
        load_text_labels(table)
    table.write_text("plate,mjd,class\n266,51602,STAR\n")
    with pytest.raises(SpectrumReadError, match="lacks column.*fiberid"):
        load_text_labels(table)


@pytest.mark.parametrize(
    "rel",
    ["spectra/spec-0266-51602-0013.fits", "spectra2/spec-3655-55240-0370.fits",
     "spectra3/spec-7102-56666-0914.fits", "sky/first", "full/8222-57431-0561.fits"],
)
def test_metadata_against_raw_astropy_row(sdss_dir: Path, rel: str) -> None:
    """Every SpectrumMeta field straight from astropy's HDU 2 row (one file per folder/layout)."""
    path = sdss_dir / rel if rel != "sky/first" else sorted((sdss_dir / "sky").glob("spec-*.fits"))[0]
    spec = read_spectrum(path)
    with fits.open(path) as hdul:
        row = hdul[2].data[0]
        cols = {n.upper(): n for n in hdul[2].columns.names}
        get = lambda c: row[cols[c]]  # noqa: E731
        assert spec.meta.class_ == get("CLASS").strip().upper()
        assert spec.meta.subclass == get("SUBCLASS").strip().upper()
        assert (spec.meta.plate, spec.meta.mjd, spec.meta.fiberid) == (get("PLATE"), get("MJD"), get("FIBERID"))
        assert spec.meta.z == float(get("Z")) and spec.meta.zwarning == get("ZWARNING")
        assert spec.meta.run2d == str(get("RUN2D")).strip()
        assert spec.meta.ra == float(get("PLUG_RA")) and spec.meta.dec == float(get("PLUG_DEC"))
        if "SURVEY" in cols:
            assert spec.meta.survey == get("SURVEY").strip().lower()
        else:  # BOSS spAll rows carry CHUNK ('boss…' / 'eboss…') instead
            assert spec.meta.survey == ("eboss" if get("CHUNK").lower().startswith("eboss") else "boss")
    assert spec.meta.file == str(path)
    if rel.startswith("sky"):
        assert spec.meta.zwarning & 1  # SKY bit

