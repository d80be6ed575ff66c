"""Issue 12 item 1: an absurd flux with a finite, positive ivar must not reach the network.

Inputs are real SDSS spec files copied into tmp_path with one pixel (or two) set to 1e30.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.io import iter_spectra, read_spectrum
from specclass.preprocessing import ABSURD_SIGMA, SPIKE_SIGMA, Preprocessor, outlier_mask
from specclass.spectra.grid import DEFAULT_GRID

GALAXY = "spectra/spec-0266-51602-0013.fits"
STARBURST = "spectra3/spec-0358-51818-0504.fits"  # H-alpha peak 1,064 robust sigmas: the strongest real line


def _with_flux(src: Path, dst: Path, pixels: list[int], value: float) -> Path:
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    for i in pixels:
        assert hdul[1].data["ivar"][i] > 0  # a "good" pixel by its ivar
        hdul[1].data["flux"][i] = value
    hdul.writeto(dst)
    return dst


def _pre(**kw) -> Preprocessor:
    return Preprocessor(grid=DEFAULT_GRID.to_dict(), class_names=["GALAXY", "QSO", "STAR"], channels=2, **kw)


@pytest.mark.parametrize("pixels", [[1500], [1500, 1501]], ids=["one-pixel", "two-pixels"])
@pytest.mark.parametrize("normalisation", ["robust", "standard", "none"])
def test_absurd_flux_is_masked_before_the_network(sdss_dir: Path, tmp_path: Path, pixels, normalisation) -> None:
    src = sdss_dir / GALAXY
    bad = _with_flux(src, tmp_path / src.name, pixels, 1e30)
    with fits.open(bad) as h:  # the file really holds it, with a positive ivar
        assert h[1].data["flux"][pixels[0]] == np.float32(1e30) and h[1].data["ivar"][pixels[0]] > 0
    pre = _pre(normalisation=normalisation)
    x_bad = pre.transform_spectrum(read_spectrum(bad))
    x_ref = pre.transform_spectrum(read_spectrum(src))
    assert np.abs(x_bad[..., 0]).max() < 1e3  # was 1e29 before the fix
    changed = np.flatnonzero(x_bad[0, :, 1] != x_ref[0, :, 1])
    assert len(changed) == len(pixels) and (x_bad[0, changed] == 0).all()  # masked: flux 0, weight 0
    # every other pixel keeps its value (robust statistics barely move without one pixel)
    keep = np.ones(x_ref.shape[1], bool)
    keep[changed] = False
    np.testing.assert_allclose(x_bad[0, keep, 0], x_ref[0, keep, 0], atol=0 if normalisation == "none" else 5e-3)
    off = _pre(normalisation=normalisation, mask_outliers=False).transform_spectrum(read_spectrum(bad))
    # what the network saw before: a 1e29 input (robust, none) or a spectrum squashed to ~0 (standard)
    assert np.abs(off[0, :, 0] - x_ref[0, :, 0]).max() > 10


def test_real_spectra_lose_no_pixel(sdss_dir: Path) -> None:
    """On clean real spectra (every layout in spectra3 and dr7, plus the strongest real line) nothing is masked."""
    pre = _pre()
    spectra = [s for _, s, _ in iter_spectra([sdss_dir / "spectra3", sdss_dir / "dr7", sdss_dir / STARBURST]) if s]
    assert len(spectra) >= 20
    grid = [pre.grid_spectrum(s) for s in spectra]
    flux = np.stack([g[0] for g in grid])
    ivar = np.stack([g[1] for g in grid])
    assert not outlier_mask(flux, ivar > 0).any()
    norm, good = pre.normalise(flux, ivar)
    ref, ref_good = _pre(mask_outliers=False).normalise(flux, ivar)
    np.testing.assert_array_equal(norm, ref)
    np.testing.assert_array_equal(good, ref_good)
    assert norm.max() > 1000  # the starburst's H-alpha (1,064 robust sigma) is kept, far above SPIKE_SIGMA
    assert SPIKE_SIGMA < norm.max() < ABSURD_SIGMA


def test_a_spike_is_masked_but_a_line_as_wide_as_the_instrument_is_not(sdss_dir: Path) -> None:
    spec = read_spectrum(sdss_dir / GALAXY)
    flux, ivar = _pre().grid_spectrum(spec)
    good = ivar > 0
    sigma = np.subtract(*np.percentile(flux[good], [75, 25])) / 1.349
    med = np.median(flux[good])
    spiked = flux.copy()
    spiked[2000] = med + 100 * sigma  # a cosmic ray: one pixel
    line = flux.copy()
    line[1999:2002] = med + 100 * sigma * np.array([0.6, 1.0, 0.6])  # an unresolved line: FWHM ~2.3 px
    mask = outlier_mask(np.stack([spiked, line]), np.stack([good, good]))
    assert np.flatnonzero(mask[0]).tolist() == [2000]
    assert not mask[1].any()


def test_old_preprocessing_files_mask_outliers_too() -> None:
    d = _pre().to_dict()
    assert d["mask_outliers"] is True
    del d["mask_outliers"]  # a preprocessing.json written before the option existed
    assert Preprocessor.from_dict(d).mask_outliers is True
    assert Preprocessor.from_dict({**d, "mask_outliers": False}).mask_outliers is False
