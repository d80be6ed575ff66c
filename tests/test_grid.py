"""Common grid and rebinning: against a slow reference, and on real spec-lite files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.spectra.grid import (
    DEFAULT_BAD_MASK_BITS,
    DEFAULT_GRID,
    SPPIXMASK_BITS,
    LogLamGrid,
    Rebinner,
    mask_bits,
    mask_names,
    rebin,
    rebin_arrays,
)
from specclass.spectrum import Spectrum, SpectrumMeta


def reference_rebin(loglam, flux, ivar, and_mask, grid, bad_bits):
    """Slow, obvious implementation of the documented formulas (pixel by pixel)."""
    ll = np.asarray(loglam, dtype=np.float64)
    n = ll.size
    edges = np.empty(n + 1)
    edges[1:-1] = 0.5 * (ll[1:] + ll[:-1])
    edges[0] = ll[0] - 0.5 * (ll[1] - ll[0])
    edges[-1] = ll[-1] + 0.5 * (ll[-1] - ll[-2])
    out_e = grid.edges
    snapped = edges.copy()
    for k, e in enumerate(edges):  # documented: edges within 1 % of a step of a grid edge move onto it
        nearest = out_e[np.argmin(np.abs(out_e - e))]
        if abs(nearest - e) < 0.01 * grid.step:
            snapped[k] = nearest
    if np.all(np.diff(snapped) > 0):
        edges = snapped
    out_f = np.zeros(grid.npix)
    out_iv = np.zeros(grid.npix)
    for i in range(grid.npix):
        num = den = iv = 0.0
        for j in range(n):
            ov = min(out_e[i + 1], edges[j + 1]) - max(out_e[i], edges[j])
            if ov <= 0:
                continue
            f, w = float(flux[j]), float(ivar[j])
            if not (np.isfinite(f) and np.isfinite(w)) or w <= 0:
                continue
            if and_mask is not None and int(and_mask[j]) & bad_bits:
                continue
            num += w * ov * f
            den += w * ov
            iv += w * ov / (edges[j + 1] - edges[j])
        if den > 0:
            out_f[i] = num / den
            out_iv[i] = iv
    return out_f, out_iv


def read_lite(path: Path) -> Spectrum:
    with fits.open(path) as h:
        d = h[1].data
        return Spectrum(d["loglam"], d["flux"], d["ivar"], d["and_mask"], SpectrumMeta(file=str(path)))


@pytest.fixture(scope="module")
def lite_files(sdss_dir: Path) -> list[Path]:
    return sorted((sdss_dir / "spectra").glob("spec-*.fits"))


# ---------------------------------------------------------------- grid object
def test_default_grid_covers_sdss_range():
    g = DEFAULT_GRID
    assert g.step == 1e-4
    assert g.npix == 3801
    assert g.loglam[0] == pytest.approx(3.58)
    assert g.loglam_max == pytest.approx(3.96)
    assert g.wavelength[0] == pytest.approx(3801.9, abs=0.1)
    assert g.wavelength[-1] == pytest.approx(9120.1, abs=0.1)
    assert g.edges.shape == (3802,)
    assert np.allclose(np.diff(g.edges), 1e-4)


def test_grid_dict_roundtrip_and_validation():
    g = LogLamGrid.from_range(3.6, 3.9, step=2e-4)
    assert g.npix == 1501
    assert LogLamGrid.from_dict(g.to_dict()) == g
    back = LogLamGrid.from_loglam(g.loglam)
    assert back.npix == g.npix and back.step == pytest.approx(g.step)
    w = LogLamGrid.from_wavelength(4000, 8000)
    assert w.wavelength[0] == pytest.approx(4000)
    with pytest.raises(ValueError, match="step"):
        LogLamGrid(3.6, 0.0, 10)
    with pytest.raises(ValueError, match="greater"):
        LogLamGrid.from_range(3.9, 3.6)
    with pytest.raises(ValueError, match="npix"):
        LogLamGrid.from_dict({"loglam_min": 3.6, "loglam_step": 1e-4})
    with pytest.raises(ValueError, match="not a uniform"):
        LogLamGrid.from_loglam(np.array([3.6, 3.6001, 3.6005]))


def test_mask_bits_names():
    assert SPPIXMASK_BITS["NODATA"] == 24 and SPPIXMASK_BITS["BRIGHTSKY"] == 23
    assert DEFAULT_BAD_MASK_BITS == (1 << 18) | (1 << 22) | (1 << 23)
    assert not DEFAULT_BAD_MASK_BITS & (1 << SPPIXMASK_BITS["NODATA"])
    assert mask_bits(["nodata", "FULLREJECT"]) == (1 << 24) | (1 << 18)
    assert mask_bits("NOSKY,BRIGHTSKY") == (1 << 22) | (1 << 23)
    assert mask_bits(None) == 0 and mask_bits(5) == 5 and mask_bits("none") == 0 and mask_bits([]) == 0
    assert mask_names(DEFAULT_BAD_MASK_BITS) == ["FULLREJECT", "NOSKY", "BRIGHTSKY"]
    with pytest.raises(ValueError, match="unknown SPPIXMASK bit 'SKYY'.*NODATA"):
        mask_bits(["SKYY"])


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_general_path_matches_reference_on_irregular_input(seed):
    rng = np.random.default_rng(seed)
    grid = LogLamGrid(3.6, 1e-4, 120)
    # irregular pixels, partly outside the grid, some 2.5x wider, some narrower
    steps = rng.uniform(0.3e-4, 2.5e-4, 90)
    ll = 3.5985 + np.cumsum(steps)
    flux = rng.normal(10, 3, ll.size)
    ivar = rng.uniform(0, 4, ll.size)
    ivar[rng.random(ll.size) < 0.1] = 0
    flux[5] = np.nan
    ivar[7] = np.inf
    am = np.where(rng.random(ll.size) < 0.1, 1 << 23, 0).astype(np.int32)
    got_f, got_iv = rebin_arrays(ll, flux, ivar, am, grid)
    ref_f, ref_iv = reference_rebin(ll, flux, ivar, am, grid, DEFAULT_BAD_MASK_BITS)
    assert got_f.dtype == np.float32 and got_iv.dtype == np.float32
    assert np.all(np.isfinite(got_f)) and np.all(np.isfinite(got_iv))
    np.testing.assert_allclose(got_f, ref_f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_iv, ref_iv, rtol=1e-5, atol=1e-6)
    assert np.array_equal(got_iv > 0, ref_iv > 0)


def test_real_file_offset_grid_matches_reference(lite_files):
    s = read_lite(lite_files[0])
    # half a pixel off the SDSS grid: the general path
    grid = LogLamGrid(3.6000 + 0.5e-4, 1e-4, 300)
    sl = slice(0, 400)
    got_f, got_iv = rebin_arrays(s.loglam[sl], s.flux[sl], s.ivar[sl], s.and_mask[sl], grid)
    ref_f, ref_iv = reference_rebin(s.loglam[sl], s.flux[sl], s.ivar[sl], s.and_mask[sl], grid, DEFAULT_BAD_MASK_BITS)
    np.testing.assert_allclose(got_f, ref_f, rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(got_iv, ref_iv, rtol=2e-5, atol=1e-6)


def test_fast_path_agrees_with_general_path(lite_files):
    s = read_lite(lite_files[5])
    fast_f, fast_iv = rebin(s, DEFAULT_GRID)
    # same arrays, one pixel dropped in the middle: no longer uniform -> general path
    keep = np.ones(s.npix, dtype=bool)
    keep[2000] = False
    gen_f, gen_iv = rebin_arrays(s.loglam[keep], s.flux[keep], s.ivar[keep], s.and_mask[keep], DEFAULT_GRID)
    far = np.abs(DEFAULT_GRID.loglam - float(s.loglam[2000])) > 2.5e-4
    np.testing.assert_array_equal(gen_iv[far] > 0, fast_iv[far] > 0)
    np.testing.assert_allclose(gen_f[far], fast_f[far], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gen_iv[far], fast_iv[far], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- properties on real files
def test_identity_when_input_is_on_the_grid(lite_files):
    s = read_lite(lite_files[1])
    grid = LogLamGrid.from_loglam(s.loglam.astype(np.float64).round(4))
    f, iv = rebin(s, grid, bad_mask_bits=0)
    good = (s.ivar > 0) & np.isfinite(s.flux)
    assert np.array_equal(f[good], s.flux[good])
    assert np.array_equal(iv[good], s.ivar[good])
    assert np.all(iv[~good] == 0) and np.all(f[~good] == 0)


def test_flux_weighted_sum_conserved(lite_files):
    for path in lite_files[:3]:
        s = read_lite(path)
        # a grid 0.37 pixel off the input and wider than it: every input pixel lands in full
        ll = s.loglam.astype(np.float64)
        grid = LogLamGrid(round(ll[0], 4) - 5e-4 + 0.37e-4, 1e-4, s.npix + 12)
        f, iv = rebin(s, grid, bad_mask_bits=0)
        good = (s.ivar > 0) & np.isfinite(s.flux)
        want = np.sum(s.ivar[good].astype(np.float64) * s.flux[good])
        got = np.sum(iv.astype(np.float64) * f)
        assert got == pytest.approx(want, rel=1e-5)
        assert np.sum(iv, dtype=np.float64) == pytest.approx(np.sum(s.ivar[good], dtype=np.float64), rel=1e-5)


def test_downsampling_sums_ivar():
    grid_in = LogLamGrid(3.6, 1e-4, 200)
    rng = np.random.default_rng(3)
    flux = rng.normal(5, 1, 200)
    ivar = rng.uniform(1, 2, 200)
    coarse = LogLamGrid(3.6 + 0.5e-4, 2e-4, 99)
    f, iv = rebin_arrays(grid_in.loglam, flux, ivar, None, coarse)
    # coarse pixel i covers input pixels 2i and 2i+1 exactly
    a, b = ivar[0:198:2], ivar[1:199:2]
    np.testing.assert_allclose(iv, a + b, rtol=1e-6)
    np.testing.assert_allclose(f, (a * flux[0:198:2] + b * flux[1:199:2]) / (a + b), rtol=1e-5)


def test_masked_pixels_excluded_and_ivar_zero_never_inverted(lite_files):
    s = read_lite(lite_files[2])
    # BRIGHTSKY pixels of the real file get weight 0 by default, kept with bad_mask_bits=0
    bright = (s.and_mask & (1 << 23)) != 0
    assert bright.any(), "test file should have BRIGHTSKY pixels"
    f, iv = rebin(s, DEFAULT_GRID)
    f0, iv0 = rebin(s, DEFAULT_GRID, bad_mask_bits=0)
    k0 = round((float(s.loglam[0]) - 3.58) / 1e-4)
    idx = np.flatnonzero(bright) + k0
    idx = idx[(idx >= 0) & (idx < DEFAULT_GRID.npix)]
    assert np.all(iv[idx] == 0) and np.all(f[idx] == 0)
    assert np.any(iv0[idx] > 0)
    # poison a pixel: NaN flux must not leak, and a huge flux behind ivar = 0 must not count
    flux = s.flux.copy()
    ivar = s.ivar.copy()
    flux[1000] = np.nan
    flux[1001] = 1e30
    ivar[1001] = 0
    f2, iv2 = rebin_arrays(s.loglam, flux, ivar, s.and_mask, DEFAULT_GRID)
    assert np.all(np.isfinite(f2)) and np.max(np.abs(f2)) < 1e6
    assert iv2[1000 + k0] == 0 and iv2[1001 + k0] == 0


def test_outside_coverage_is_zero_and_all_masked_file(sdss_dir):
    s = read_lite(sdss_dir / "spectra" / "spec-0269-51581-0003.fits")
    f, iv = rebin(s, DEFAULT_GRID)
    assert not np.any(iv) and not np.any(f)
    g = LogLamGrid(3.2, 1e-4, 50)  # entirely blue of the spectrum
    s2 = read_lite(sorted((sdss_dir / "spectra").glob("*.fits"))[0])
    f, iv = rebin(s2, g)
    assert not np.any(iv) and not np.any(f)


def test_bad_input_errors_name_the_spectrum():
    ll = np.array([3.6, 3.6002, 3.6001, 3.6003])
    with pytest.raises(ValueError, match="myfile.fits: loglam is not strictly increasing"):
        rebin_arrays(ll, np.ones(4), np.ones(4), None, DEFAULT_GRID, name="myfile.fits")
    with pytest.raises(ValueError, match="must be 1-D and equal"):
        rebin_arrays(ll, np.ones(3), np.ones(4), None, DEFAULT_GRID)
    with pytest.raises(ValueError, match="non-finite"):
        rebin_arrays(np.array([3.6, np.nan]), np.ones(2), np.ones(2), None, DEFAULT_GRID)
    on_grid = DEFAULT_GRID.loglam[:50].copy()
    on_grid[20] = np.nan  # must not slip through the on-grid fast path
    with pytest.raises(ValueError, match="non-finite"):
        rebin_arrays(on_grid, np.ones(50), np.ones(50), None, DEFAULT_GRID)


def test_out_arrays_are_overwritten(lite_files):
    s = read_lite(lite_files[0])
    buf = np.full((2, DEFAULT_GRID.npix), 7.0, dtype=np.float32)
    ivb = np.full_like(buf, 7.0)
    f, iv = rebin(s, DEFAULT_GRID)
    got = rebin_arrays(s.loglam, s.flux, s.ivar, s.and_mask, DEFAULT_GRID, out=(buf[1], ivb[1]))
    assert got[0].base is buf or np.shares_memory(got[0], buf)
    assert np.array_equal(buf[1], f) and np.array_equal(ivb[1], iv)
    assert np.all(buf[0] == 7.0)
    shifted = LogLamGrid(3.58 + 0.3e-4, 1e-4, 3801)  # general path overwrites too
    rebin_arrays(s.loglam, s.flux, s.ivar, s.and_mask, shifted, out=(buf[1], ivb[1]))
    assert np.array_equal(buf[1], rebin(s, shifted)[0])
    with pytest.raises(ValueError, match="out arrays must be"):
        rebin_arrays(s.loglam, s.flux, s.ivar, s.and_mask, DEFAULT_GRID, out=(np.zeros(5, np.float32), np.zeros(5, np.float32)))


def test_rebinner_batch_and_speed(lite_files):
    spectra = [read_lite(p) for p in lite_files[:20]]
    rb = Rebinner(DEFAULT_GRID)
    flux, ivar = rb.batch(spectra)
    assert flux.shape == (20, DEFAULT_GRID.npix) and flux.dtype == np.float32
    f0, iv0 = rebin(spectra[0], DEFAULT_GRID)
    assert np.array_equal(flux[0], f0) and np.array_equal(ivar[0], iv0)
    # SDSS coadds sit on the grid: gridding must cost well under a millisecond each
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        for s in spectra:
            rb(s)
        t.append((time.perf_counter() - t0) / len(spectra))
    assert min(t) < 1e-3, f"rebin took {min(t) * 1e3:.2f} ms per spectrum"
