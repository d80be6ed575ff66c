"""Bad input for specclass.io: each case is a real file or one derived from a real file in tmp_path.

Every failure must be a SpectrumReadError whose message names the file and the reason,
on both the native and the astropy path.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.io import SpectrumReadError, iter_spectra, read_spectrum
from specclass.io.specobj import decode_label

ENGINES = ["auto", "astropy"]
LITE = "spectra/spec-0266-51602-0013.fits"  # SDSS-I lite file, HDU2 SPECOBJ
BOSS = "spectra2/spec-3655-55240-0370.fits"  # BOSS, HDUs without EXTNAME


@pytest.fixture()
def lite(sdss_dir: Path) -> Path:
    return sdss_dir / LITE


def _expect_error(path: Path, match: str, **kw) -> SpectrumReadError:
    with pytest.raises(SpectrumReadError) as info:
        read_spectrum(path, **kw)
    err = info.value
    assert str(path) in str(err), "the message must name the file"
    assert err.path == str(path)
    assert re.search(match, err.reason), f"reason {err.reason!r} does not match {match!r}"
    assert isinstance(err, ValueError)
    return err


def _derive(src: Path, dst: Path, edit) -> Path:
    """Copy a real FITS file through astropy, letting ``edit(hdul)`` change it."""
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    out = edit(hdul) or hdul
    out.writeto(dst, overwrite=True)
    return dst


# ---------------------------------------------------------------- not a spectrum at all


@pytest.mark.parametrize("engine", ENGINES)
def test_html_page_saved_as_fits(tmp_path: Path, engine: str) -> None:
    page = tmp_path / "spec-0266-51602-0013.fits"
    page.write_text(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        "<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
    )
    _expect_error(page, "HTML", engine=engine)


def test_empty_binary_missing_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    _expect_error(empty, "empty")
    junk = tmp_path / "junk.fits"
    junk.write_bytes(bytes(range(256)) * 20)
    _expect_error(junk, "binary")
    _expect_error(tmp_path / "absent.fits", "cannot open")
    _expect_error(tmp_path, "directory")


def test_csv_that_is_not_a_spectrum(tmp_path: Path) -> None:
    table = tmp_path / "labels.txt"
    table.write_text("plate,mjd,fiberid,class\n266,51602,13,GALAXY\n")
    _expect_error(table, "holds 1 .wavelength, flux. rows; a spectrum needs at least 10")
    notes = tmp_path / "notes.txt"
    notes.write_text("this folder holds the stars\nfrom the 2009 run\n" * 10)
    _expect_error(notes, "no numeric rows")
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("".join(f"{p} {m}\n" for p, m in [(266, 51602), (4000, 55000), (300, 51000)] * 5))
    _expect_error(catalog, "not strictly increasing")


# ---------------------------------------------------------------- damaged FITS


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cut", [2880 * 14, 40001, 2880 * 5 + 100])
def test_fits_truncated(lite: Path, tmp_path: Path, engine: str, cut: int) -> None:
    """Cut inside HDU 1 data (on and off a block boundary) and inside HDU 1's header."""
    bad = tmp_path / lite.name
    bad.write_bytes(lite.read_bytes()[:cut])
    _expect_error(bad, "truncated", engine=engine)


def test_truncated_inside_hdu2(lite: Path, tmp_path: Path) -> None:
    data = lite.read_bytes()
    with fits.open(lite) as hdul:
        hdu2_data = hdul[2]._data_offset  # noqa: SLF001
    bad = tmp_path / lite.name
    bad.write_bytes(data[: hdu2_data + 100])
    _expect_error(bad, "truncated")
    _expect_error(bad, "truncated", engine="astropy")


def test_fits_that_is_gzip_and_damaged_gzip(lite: Path, tmp_path: Path) -> None:
    gz = tmp_path / lite.name  # a .fits file holding gzip
    gz.write_bytes(gzip.compress(lite.read_bytes()))
    spec = read_spectrum(gz)
    np.testing.assert_array_equal(spec.flux, read_spectrum(lite).flux)
    broken = tmp_path / "broken.fits"
    broken.write_bytes(gz.read_bytes()[:20000])
    _expect_error(broken, "gzip data is damaged or truncated")


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_hdu2_reads_without_labels(lite: Path, tmp_path: Path, engine: str) -> None:
    # issue 12 item 2: predict needs no labels, so a spec file without SPECOBJ/SPALL is read
    bad = _derive(lite, tmp_path / "no-hdu2.fits", lambda h: fits.HDUList([h[0], h[1]]))
    spec = read_spectrum(bad, engine=engine)
    with fits.open(bad) as h:
        np.testing.assert_array_equal(spec.flux, h[1].data["flux"])
        np.testing.assert_array_equal(spec.ivar, h[1].data["ivar"])
    assert spec.meta.class_ == "" and spec.meta.extra["labels"] == "missing"
    assert (spec.meta.plate, spec.meta.mjd, spec.meta.fiberid) == (266, 51602, 13)  # from the primary header


def test_missing_hdu2_is_skipped_as_unlabelled_by_a_build(lite: Path, tmp_path: Path) -> None:
    from specclass.spectra.build import build_dataset

    bad = _derive(lite, tmp_path / "no-hdu2.fits", lambda h: fits.HDUList([h[0], h[1]]))
    ds, report = build_dataset([bad, lite], labels="class3")
    assert len(ds) == 1
    assert [(Path(s.file).name, s.category) for s in report.skipped] == [("no-hdu2.fits", "no label")]


# ---------------------------------------------------------------- issue 12: bytes after the last HDU


@pytest.mark.parametrize("engine", ["auto", "astropy"])
@pytest.mark.parametrize("tail", [b"\0" * 2880, b"\n\n\0x"], ids=["nul-block", "stray-bytes"])
def test_bytes_after_the_last_hdu_are_not_truncation(lite: Path, tmp_path: Path, engine: str, tail: bytes) -> None:
    path = tmp_path / lite.name
    path.write_bytes(lite.read_bytes() + tail)
    spec = read_spectrum(path, engine=engine)
    with fits.open(path) as h:  # astropy reads it (with a warning): same arrays
        np.testing.assert_array_equal(spec.flux, h[1].data["flux"])
        np.testing.assert_array_equal(spec.loglam, h[1].data["loglam"])
        assert decode_label(h[2].data["CLASS"][0]) == spec.meta.class_
    assert spec.meta.extra["trailing_bytes"] == len(tail)


@pytest.mark.parametrize("engine", ["auto", "astropy"])
def test_really_truncated_is_still_truncated(lite: Path, tmp_path: Path, engine: str) -> None:
    data = lite.read_bytes()
    path = tmp_path / lite.name
    path.write_bytes(data[: len(data) - 2880 - 100])  # the last HDU's data cut
    _expect_error(path, "truncated", engine=engine)
    path.write_bytes(data + b"XTENSION= 'BINTABLE'")  # a header that starts and stops
    _expect_error(path, "truncated", engine=engine)


# ---------------------------------------------------------------- issue 12: column names equal but for case


@pytest.mark.parametrize("engine", ENGINES)
def test_flux_and_FLUX_columns_are_refused(lite: Path, tmp_path: Path, engine: str) -> None:
    def add_upper(h):
        zeros = fits.Column(name="FLUX", format="E", array=np.zeros(len(h[1].data), "f4"))
        h[1] = fits.BinTableHDU.from_columns(fits.ColDefs(list(h[1].columns) + [zeros]), name="COADD")

    bad = _derive(lite, tmp_path / lite.name, add_upper)
    with fits.open(bad) as h:  # astropy reads both: the file is well-formed, just ambiguous
        assert h[1].data["flux"].any() and not h[1].data["FLUX"].any()
    _expect_error(bad, r"columns whose names differ only in case \('flux' and 'FLUX'\)", engine=engine)


# ---------------------------------------------------------------- issue 12: variable-length arrays


@pytest.mark.parametrize("engine", ENGINES)
def test_variable_length_array_columns_are_read(lite: Path, tmp_path: Path, engine: str) -> None:
    def to_vla(h):
        d = h[1].data
        cols = [fits.Column(name=n, format=f"P{c}()", array=np.array([d[n].astype(t)], dtype=object))
                for n, c, t in (("flux", "E", "f4"), ("loglam", "E", "f4"), ("ivar", "E", "f4"))]
        h[1] = fits.BinTableHDU.from_columns(cols, name="COADD")

    vla = _derive(lite, tmp_path / lite.name, to_vla)
    spec = read_spectrum(vla, engine=engine)
    with fits.open(vla) as h:
        assert h[1].columns["flux"].format.startswith("PE")
        np.testing.assert_array_equal(spec.flux, h[1].data["flux"][0])
        np.testing.assert_array_equal(spec.ivar, h[1].data["ivar"][0])
    ref = read_spectrum(lite)
    np.testing.assert_array_equal(spec.flux, ref.flux)
    assert spec.meta.class_ == ref.meta.class_


def test_fixed_arrays_in_many_coadd_rows_are_refused_with_the_column(lite: Path, tmp_path: Path) -> None:
    def to_arrays(h):
        d = h[1].data
        n = (len(d) // 4) * 4
        cols = [fits.Column(name=c, format="4E", array=d[c][:n].astype("f4").reshape(-1, 4))
                for c in ("flux", "loglam", "ivar")]
        h[1] = fits.BinTableHDU.from_columns(cols, name="COADD")

    bad = _derive(lite, tmp_path / lite.name, to_arrays)
    _expect_error(bad, r"column 'flux' holds an array of \(4,\) values", engine="astropy")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("column", ["ivar", "loglam"])
def test_missing_column(lite: Path, tmp_path: Path, engine: str, column: str) -> None:
    def drop(h):
        cols = [c for c in h[1].columns if c.name != column]
        new1 = fits.BinTableHDU.from_columns(cols, header=None, name="COADD")
        return fits.HDUList([h[0], new1, h[2], h[3]])

    bad = _derive(lite, tmp_path / f"no-{column}.fits", drop)
    _expect_error(bad, rf"lacks column\(s\) {column}", engine=engine)


def test_missing_column_native_only_says_why(lite: Path, tmp_path: Path) -> None:
    def drop(h):
        cols = [c for c in h[1].columns if c.name != "ivar"]
        return fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, name="COADD"), h[2], h[3]])

    bad = _derive(lite, tmp_path / "no-ivar.fits", drop)
    _expect_error(bad, "not the standard spec lite/full layout", engine="native")


def test_missing_class_column(lite: Path, tmp_path: Path) -> None:
    def drop(h):
        cols = [c for c in h[2].columns if c.name != "CLASS"]
        return fits.HDUList([h[0], h[1], fits.BinTableHDU.from_columns(cols, name="SPECOBJ"), h[3]])

    bad = _derive(lite, tmp_path / "no-class.fits", drop)
    _expect_error(bad, "no CLASS column")


def test_wavelength_in_angstrom_where_log_expected(lite: Path, tmp_path: Path) -> None:
    def to_angstrom(h):
        h[1].data["loglam"] = 10.0 ** h[1].data["loglam"]

    bad = _derive(lite, tmp_path / "angstrom.fits", to_angstrom)
    for engine in ENGINES:
        _expect_error(bad, "wrong unit", engine=engine)


# ---------------------------------------------------------------- odd but readable


def test_all_masked_spectrum_reads(sdss_dir: Path) -> None:
    """spec-0269-51581-0003: ivar == 0 everywhere. Reading and gridding must not crash."""
    path = sdss_dir / "spectra" / "spec-0269-51581-0003.fits"
    for engine in ENGINES:
        spec = read_spectrum(path, engine=engine)
        assert spec.npix > 3000 and np.all(spec.ivar == 0)
        assert spec.meta.class_ == "GALAXY" and spec.meta.zwarning == 6
        assert np.isfinite(spec.flux).all()
    results = list(iter_spectra([path]))
    assert results[0][1] is not None and results[0][2] is None
    from specclass.spectra.grid import rebin

    flux, ivar = rebin(spec)
    assert np.all(ivar == 0) and np.isfinite(flux).all()


@pytest.fixture()
def nan_file(lite: Path, tmp_path: Path) -> Path:
    def poison(h):
        d = h[1].data
        d["flux"][10] = np.nan
        d["flux"][11] = np.inf
        d["ivar"][20] = -np.inf
        d["ivar"][21] = np.nan

    return _derive(lite, tmp_path / lite.name, poison)


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_inf_masked(nan_file: Path, lite: Path, engine: str) -> None:
    spec = read_spectrum(nan_file, engine=engine)
    assert spec.meta.extra["reader"] == ("native" if engine == "auto" else "astropy")
    good = read_spectrum(lite)
    bad_pix = [10, 11, 20, 21]
    assert np.all(spec.ivar[bad_pix] == 0) and np.all(spec.flux[bad_pix] == 0)
    keep = np.setdiff1d(np.arange(spec.npix), bad_pix)
    np.testing.assert_array_equal(spec.flux[keep], good.flux[keep])
    np.testing.assert_array_equal(spec.ivar[keep], good.ivar[keep])
    assert spec.meta.extra["n_nonfinite"] == 4 and good.meta.extra["n_nonfinite"] == 0
    assert np.isfinite(spec.flux).all() and np.isfinite(spec.ivar).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_inf_raise(nan_file: Path, engine: str) -> None:
    _expect_error(nan_file, r"4 of \d+ pixels have NaN/inf flux or ivar", engine=engine, nonfinite="raise")


def test_all_nan_flux(lite: Path, tmp_path: Path) -> None:
    def blank(h):
        h[1].data["flux"][:] = np.nan

    bad = _derive(lite, tmp_path / "allnan.fits", blank)
    _expect_error(bad, "no pixel has a finite flux")
    results = list(iter_spectra([bad]))
    assert results == [(str(bad), None, "no pixel has a finite flux")]


def test_big_endian_arrays_become_native(sdss_dir: Path) -> None:
    """The file stores big-endian floats; what we return is native and survives a keras.ops call."""
    import keras

    path = sdss_dir / BOSS
    with fits.open(path) as hdul:
        raw = hdul[1].data["FLUX"]
        assert raw.dtype.byteorder == ">"
        known = float(raw[1000])
    for engine in ENGINES:
        spec = read_spectrum(path, engine=engine)
        for arr in (spec.loglam, spec.flux, spec.ivar, spec.and_mask):
            assert arr.dtype.isnative and arr.dtype.byteorder in ("=", "|")
        tensor = keras.ops.convert_to_tensor(spec.flux)
        doubled = keras.ops.convert_to_numpy(keras.ops.multiply(tensor, 2.0))
        assert float(doubled[1000]) == pytest.approx(2 * known, rel=1e-7)
        total = float(keras.ops.convert_to_numpy(keras.ops.sum(tensor)))
        assert total == pytest.approx(float(np.sum(raw.astype(np.float64))), rel=1e-4)
    # what the tutorial's loop risks: the same bytes read with the wrong byte order are garbage
    wrong = np.frombuffer(raw.astype(">f4").tobytes(), dtype="<f4")
    assert float(wrong[1000]) != pytest.approx(known, rel=1e-3)


def test_byte_string_labels(lite: Path, tmp_path: Path) -> None:
    """CLASS/SUBCLASS written as padded, lower-case byte strings come out decoded, stripped, upper-case."""

    def relabel(h):
        cols = []
        for c in h[2].columns:
            if c.name == "CLASS":
                cols.append(fits.Column(name="CLASS", format="10A", array=np.array([b"  qso\x00"])))
            elif c.name == "SUBCLASS":
                cols.append(fits.Column(name="SUBCLASS", format="21A", array=np.array([b" starburst broadline "])))
            else:
                cols.append(c)
        return fits.HDUList([h[0], h[1], fits.BinTableHDU.from_columns(cols, name="SPECOBJ"), h[3]])

    bad = _derive(lite, tmp_path / lite.name, relabel)
    for engine in ENGINES:
        spec = read_spectrum(bad, engine=engine)
        assert spec.meta.class_ == "QSO"
        assert spec.meta.subclass == "STARBURST BROADLINE"
    assert decode_label(np.bytes_(b"galaxy  ")) == "GALAXY"
    assert decode_label(b"STAR\x00\x00") == "STAR"
    assert decode_label(np.array([b" agn "])) == "AGN"
    assert decode_label(None) == ""


def test_bad_options_are_value_errors(lite: Path) -> None:
    with pytest.raises(ValueError, match="fmt='spec-lite'; allowed"):
        read_spectrum(lite, fmt="spec-lite")
    with pytest.raises(ValueError, match="engine='fast'; allowed"):
        read_spectrum(lite, engine="fast")
    with pytest.raises(ValueError, match="nonfinite='drop'; allowed"):
        read_spectrum(lite, nonfinite="drop")
    with pytest.raises(ValueError, match="nonfinite='drop'; allowed"):
        list(iter_spectra([lite], nonfinite="drop"))
    with pytest.raises(TypeError, match="label must be"):
        read_spectrum(lite, label=3)


def test_templates_are_not_spectra(shared_data: Path) -> None:
    """idlspec2d eigenspectra (2-D log-lambda images) and redrock templates are refused, not misread."""
    folder = shared_data / "templates"
    results = list(iter_spectra([folder / "idlspec2d", folder / "redrock"]))
    assert len(results) >= 10
    assert all(spec is None for _, spec, _ in results)
    reasons = {Path(p).name: why for p, _, why in results}
    assert "eigenspectrum template" in reasons["spEigenGal-56436.fits"]
    assert "unrecognised FITS spectrum layout" in reasons["rrtemplate-QSO-HIZ-v1.1.fits"]


# ---------------------------------------------------------------- issue 12 item 6: non-spectra in a folder


def test_readme_and_notes_in_a_spectra_folder_are_left_out_with_a_reason(sdss_dir: Path, tmp_path: Path) -> None:
    from specclass.io import find_spectrum_files

    folder = tmp_path / "spectra"
    folder.mkdir()
    star = sorted((sdss_dir / "text_stars").glob("*.txt"))[0]
    (folder / star.name).write_bytes(star.read_bytes())  # a real text spectrum: kept
    (folder / "spec-0266-51602-0013.fits").write_bytes((sdss_dir / LITE).read_bytes())
    (folder / "README.txt").write_bytes((sdss_dir / "PROVENANCE.md").read_bytes())
    (folder / "notes.txt").write_text("plate 266 looks odd\nre-download 0013 tomorrow\n")
    (folder / "observing_log.dat").write_text("night 1: clouds\nnight 2: clear, seeing 1.2\n")
    (folder / "._spec-0266-51602-0013.fits").write_bytes(b"\0\5\26\7" + b"\0" * 80)  # macOS AppleDouble
    skipped: list = []
    files = find_spectrum_files(folder, skipped=skipped)
    assert sorted(p.name for p in files) == sorted([star.name, "spec-0266-51602-0013.fits"])
    assert {p.name: why for p, why in skipped} == {
        "README.txt": "a documentation file name",
        "notes.txt": "a documentation file name",
        "observing_log.dat": "text without (wavelength, flux) rows",
        "._spec-0266-51602-0013.fits": "hidden file",
    }
    # a file named explicitly is always read, and says why it fails
    _expect_error(folder / "notes.txt", "not a two-column text spectrum|rows")
    assert [r is None for _, s, r in iter_spectra(folder)] == [True, True]
