"""AGN vs GALAXY decided by the measured emission lines (specclass.line_subclass), on real SDSS spectra.

The two galaxies are the ones the cross-validated seed4 network got wrong (README
"Benchmarks"): spec-0285-51930-0309, SUBCLASS 'AGN', called GALAXY (p = 0.86), and
spec-0349-51699-0582, SUBCLASS 'STARFORMING' at log [NII]/Hα = -0.18 (a composite), called AGN.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from specclass.io import read_spectrum
from specclass.line_subclass import applies, apply_line_rule
from specclass.spectro1d.galaxy import galaxy_subclass

AGN_FILE = "spectra3/spec-0285-51930-0309.fits"
SF_FILE = "spectra3/spec-0349-51699-0582.fits"
STAR_FILE = "spectra/spec-0266-51602-0031.fits"  # a white dwarf
C_KMS = 2.99792458e5


def _read(sdss_dir, name):
    path = sdss_dir / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    return read_spectrum(path)


@pytest.mark.parametrize("name, expected", [(AGN_FILE, "AGN"), (SF_FILE, "STARFORMING")])
def test_galaxy_subclass_matches_the_pipeline_on_real_spectra(sdss_dir, name, expected):
    spec = _read(sdss_dir, name)
    assert spec.meta.subclass == expected  # what the SDSS pipeline wrote in the file
    res = galaxy_subclass(spec.loglam, spec.flux, spec.ivar, spec.and_mask, run2d=spec.meta.run2d, or_mask=spec.or_mask)
    assert res.subclass == expected
    assert abs(res.z - spec.meta.z) * C_KMS / (1 + spec.meta.z) < 1000.0
    assert np.isfinite(res.rchi2) and res.rchi2 > 0


def test_rule_moves_the_galaxy_family_to_the_measured_subclass(sdss_dir):
    from specclass.spectra.grid import DEFAULT_GRID as grid
    from specclass.spectra.grid import rebin

    specs = [_read(sdss_dir, n) for n in (AGN_FILE, SF_FILE, STAR_FILE, AGN_FILE)]
    flux = np.zeros((len(specs), grid.npix), np.float32)
    ivar = np.zeros_like(flux)
    for i, s in enumerate(specs):
        flux[i], ivar[i] = rebin(s, grid)
    names = ["AGN", "GALAXY", "QSO", "STAR"]
    proba = np.array([
        [0.10, 0.80, 0.05, 0.05],  # the AGN, called GALAXY by the network
        [0.70, 0.20, 0.05, 0.05],  # the star-forming composite, called AGN
        [0.02, 0.03, 0.05, 0.90],  # a star: not measured
        [0.20, 0.20, 0.60, 0.00],  # galaxy family below QSO: the network's call stands
    ], np.float32)
    res = apply_line_rule(proba, names, grid.loglam, flux, ivar, "sdss")
    assert res.measured.tolist() == [True, True, False, False]
    assert res.subclass.tolist() == ["AGN", "STARFORMING", "", ""]
    np.testing.assert_allclose(res.proba[0], [0.90, 0.0, 0.05, 0.05], atol=1e-6)
    np.testing.assert_allclose(res.proba[1], [0.0, 0.90, 0.05, 0.05], atol=1e-6)
    np.testing.assert_array_equal(res.proba[2:], proba[2:])
    np.testing.assert_allclose(res.proba.sum(axis=1), 1.0, atol=1e-6)
    assert abs(res.z[0] - specs[0].meta.z) < 0.005 and np.isnan(res.z[2])
    assert proba[0, 1] == np.float32(0.80)  # the input is not modified


def test_rule_needs_galaxy_and_agn_classes():
    assert applies(["AGN", "GALAXY", "QSO", "STAR"]) and not applies(["GALAXY", "QSO", "STAR"])
    sdss_pixels = 3.58 + 1e-4 * np.arange(100)
    assert applies(["AGN", "GALAXY"], sdss_pixels) and not applies(["AGN", "GALAXY"], 3.58 + 2e-4 * np.arange(100))
    with pytest.raises(ValueError, match="GALAXY.*AGN"):
        apply_line_rule(np.full((1, 3), 1 / 3), ["GALAXY", "QSO", "STAR"], np.arange(10) * 1e-4 + 3.6,
                        np.ones((1, 10)), np.ones((1, 10)))
    with pytest.raises(ValueError, match="do not agree"):
        apply_line_rule(np.full((2, 4), 0.25), ["AGN", "GALAXY", "QSO", "STAR"], np.arange(10) * 1e-4 + 3.6,
                        np.ones((1, 10)), np.ones((1, 10)))


def test_predict_decides_agn_by_the_lines_unless_told_not_to(sdss_dir, tmp_path):
    from specclass.inference.load import load_any_run
    from specclass.predict import predict_files
    from specclass.pretrained import pretrained_dir

    if pretrained_dir("seed4") is None:
        pytest.skip("no packaged seed4 classifier")
    run = load_any_run(pretrained_dir("seed4"))
    files = [sdss_dir / AGN_FILE, sdss_dir / SF_FILE, sdss_dir / STAR_FILE]
    if not all(f.exists() for f in files):
        pytest.skip("real spectra missing")
    out = tmp_path / "p.csv"
    rows, failures = predict_files(run, files, out=out)
    assert not failures
    by = {r["file"].split("/")[-1]: r for r in rows}
    agn, sf = by["spec-0285-51930-0309.fits"], by["spec-0349-51699-0582.fits"]
    assert (agn["predicted_class"], agn["line_subclass"]) == ("AGN", "AGN")
    assert (sf["predicted_class"], sf["line_subclass"]) == ("GALAXY", "STARFORMING")
    assert by["spec-0266-51602-0031.fits"]["line_subclass"] == ""
    for r in rows:
        assert r["network_class"] in ("AGN", "GALAXY", "QSO", "STAR")
        assert r["probability"] == pytest.approx(max(r[f"p_{c}"] for c in ("AGN", "GALAXY", "QSO", "STAR")))
    header = next(csv.reader(out.open()))
    assert header[-4:] == ["network_class", "template_class", "line_subclass", "reason"]
    plain, _ = predict_files(run, files, pipeline_rule=False)
    assert all("network_class" not in r for r in plain)
    for r, p in zip(rows, plain):
        assert r["network_class"] == p["predicted_class"]


@pytest.mark.parametrize("name, expected", [
    # SDSS 'AGN' with broad Balmer wings: one shared width (the SDSS-I/II line list) keeps the
    # Balmer lines narrow, so [NII]/Hα is the AGN's; a separate Balmer width made it STARBURST BROADLINE
    ("spectra3/spec-2101-53858-0049.fits", "AGN"),
    # SDSS 'STARFORMING' that the separate Balmer width called AGN
    ("spectra3/spec-0358-51818-0349.fits", "STARFORMING"),
])
def test_sdss_reductions_fit_one_shared_line_width(sdss_dir, name, expected):
    from specclass.spectro1d.lines import WIDTH_GROUPS, fit_lines, subclass_from_lines
    from specclass.spectro1d.zscan import prepare

    spec = _read(sdss_dir, name)
    assert spec.meta.run2d == "26" and spec.meta.subclass == expected
    res = galaxy_subclass(spec.loglam, spec.flux, spec.ivar, spec.and_mask, run2d=spec.meta.run2d, or_mask=spec.or_mask)
    assert res.subclass == expected
    obj = prepare(spec.loglam, spec.flux, spec.ivar, spec.and_mask)
    fit = fit_lines(obj.loglam, obj.flux, obj.ivar, res.z, "GALAXY", generation="sdss")
    assert len({round(v, 6) for v in fit.sigma.values()}) == 1  # one width for every line
    boss = fit_lines(obj.loglam, obj.flux, obj.ivar, res.z, "GALAXY", generation="boss")
    assert boss.sigma["H_alpha"] != boss.sigma["[N_II] 6583"] and WIDTH_GROUPS["boss"] >= {"H_alpha", "H_beta"}
    assert subclass_from_lines(boss) != expected
    with pytest.raises(ValueError, match="generation"):
        fit_lines(obj.loglam, obj.flux, obj.ivar, res.z, "GALAXY", generation="desi")
