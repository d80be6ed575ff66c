"""Noise, masks and sky residuals drawn from real SDSS inverse-variance vectors.

The model for one simulated spectrum with noise-free flux ``f`` (on the common grid):

1. A real ``ivar`` row ``r`` is drawn from the shipped bank
   (:func:`specclass.simulate.templates.load_ivar_bank`: sky fibres and object spectra
   from ../shared/data/sdss). It carries the real wavelength dependence of the SDSS
   noise (throughput, dichroic at ~6000 Å, sky lines) and its real masked stretches.
2. It is scaled, ``ivar = k r``, so the median per-pixel S/N over covered pixels,
   ``median(f sqrt(ivar))`` -- the SDSS ``SN_MEDIAN_ALL`` definition (spAll data model)
   -- equals the requested S/N.
3. Gaussian noise ``N(0, 1/ivar)`` is added; pixels with ``ivar = 0`` get flux 0.
4. Sky-subtraction residuals (:func:`add_sky_residuals`) and extra masked stretches
   (cosmic rays / bad columns, :func:`add_masked_stretches`) are added.
"""

from __future__ import annotations

import numpy as np

from specclass.simulate.lines import air_to_vacuum

#: Bright night-sky lines, **air** Å: [OI] 5577.338, Na I D 5889.95/5895.92, [OI] 6300.304
#: and 6363.776 (Osterbrock et al. 1996, PASP 108, 277), and strong OH Meinel-band lines
#: in the red (Osterbrock et al. 1996). Converted to vacuum with
#: :func:`~specclass.simulate.lines.air_to_vacuum`. These are where SDSS sky subtraction
#: leaves its largest residuals (Stoughton et al. 2002, AJ 123, 485).
SKY_LINES_AIR: tuple[float, ...] = (
    5577.338, 5889.950, 5895.924, 6300.304, 6363.776, 6863.955, 7244.94, 7276.405, 7316.282,
    7340.885, 7750.640, 7794.112, 7821.503, 7913.708, 7993.332, 8344.602, 8399.170,
    8430.174, 8827.096, 8885.850, 8919.610,
)
SKY_LINES_VACUUM: np.ndarray = air_to_vacuum(np.asarray(SKY_LINES_AIR))


def scale_ivar_to_snr(flux: np.ndarray, ivar_rel: np.ndarray, snr: float) -> np.ndarray:
    """Scale a relative ivar row so that ``median(flux * sqrt(ivar))`` over pixels with
    ``ivar_rel > 0`` equals ``snr``.

    Args:
        flux: ``(L,)`` noise-free flux.
        ivar_rel: ``(L,)`` relative ivar (>= 0; 0 = masked).
        snr: target median S/N per pixel (> 0).

    Returns:
        ``(L,)`` float64 ivar.

    Raises:
        ValueError: if ``snr <= 0`` or no pixel has ``ivar_rel > 0``.
    """
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    good = ivar_rel > 0
    if not good.any():
        raise ValueError("ivar row has no unmasked pixel")
    per_unit = np.median(np.abs(flux[good]) * np.sqrt(ivar_rel[good]))
    if per_unit <= 0:
        per_unit = np.mean(np.abs(flux[good]) * np.sqrt(ivar_rel[good])) or 1.0
    return ivar_rel * (snr / per_unit) ** 2


def add_sky_residuals(
    rng: np.random.Generator,
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    probability: float = 0.5,
    amplitude_sigma: float = 3.0,
) -> np.ndarray:
    """Add sky-subtraction residuals at the night-sky lines (in place) and return their flux.

    Each line in :data:`SKY_LINES_VACUUM` inside the grid gets, with ``probability``,
    a Gaussian residual (sigma 1 pixel, the SDSS line-spread function) whose peak is
    ``N(0, amplitude_sigma)`` times the local noise sigma.

    Args:
        loglam: ``(L,)`` grid, log10 vacuum Å.
        flux: ``(L,)`` float64, modified in place.
        ivar: ``(L,)`` ivar (residuals are only added where > 0).

    Returns:
        ``(L,)`` float64 residual flux that was added.
    """
    step = loglam[1] - loglam[0]
    pix = (np.log10(SKY_LINES_VACUUM) - loglam[0]) / step
    resid = np.zeros_like(flux, dtype=np.float64)
    idx = np.arange(loglam.size)
    for p in pix:
        if p < 3 or p > loglam.size - 4 or rng.random() >= probability:
            continue
        lo, hi = int(p) - 4, int(p) + 5
        i0 = int(round(p))
        sig = 1.0 / np.sqrt(ivar[i0]) if ivar[i0] > 0 else 0.0
        amp = rng.normal(0.0, amplitude_sigma) * sig
        resid[lo:hi] += amp * np.exp(-0.5 * (idx[lo:hi] - p) ** 2)
    resid[ivar <= 0] = 0.0
    flux += resid
    return resid


def add_masked_stretches(
    rng: np.random.Generator, ivar: np.ndarray, probability: float = 0.2, max_stretches: int = 3
) -> int:
    """With ``probability``, zero 1..``max_stretches`` random stretches of 3-60 pixels of ``ivar`` (in place).

    Models bad CCD columns and cosmic-ray rejected pixels (SPPIXMASK bits, SDSS data
    model) beyond the real masks already in the bank rows.

    Returns:
        Number of pixels newly masked.
    """
    if rng.random() >= probability:
        return 0
    n0 = int((ivar > 0).sum())
    for _ in range(rng.integers(1, max_stretches + 1)):
        width = int(rng.integers(3, 61))
        start = int(rng.integers(0, max(ivar.size - width, 1)))
        ivar[start : start + width] = 0.0
    return n0 - int((ivar > 0).sum())


def apply_noise(
    rng: np.random.Generator,
    loglam: np.ndarray,
    truth: np.ndarray,
    coverage: np.ndarray,
    ivar_rel: np.ndarray,
    snr: float,
    sky_probability: float = 0.5,
    mask_probability: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Observe a noise-free spectrum: real ivar shape scaled to ``snr``, noise, sky residuals, masks.

    Args:
        loglam: ``(L,)`` grid, log10 vacuum Å.
        truth: ``(L,)`` noise-free flux, 1e-17 erg/s/cm²/Å.
        coverage: ``(L,)`` bool, where the template has data.
        ivar_rel: ``(L,)`` relative ivar row from the bank.
        snr: target median S/N per pixel.

    Returns:
        ``(flux, ivar)``, both ``(L,)`` float32; ``flux = 0`` where ``ivar = 0``.
    """
    rel = np.where(coverage, ivar_rel, 0.0).astype(np.float64)
    if not (rel > 0).any():
        return np.zeros_like(truth, dtype=np.float32), np.zeros_like(truth, dtype=np.float32)
    ivar = scale_ivar_to_snr(truth, rel, snr)
    flux = truth.astype(np.float64).copy()
    good = ivar > 0
    flux[good] += rng.standard_normal(int(good.sum())) / np.sqrt(ivar[good])
    add_sky_residuals(rng, loglam, flux, ivar, probability=sky_probability)
    add_masked_stretches(rng, ivar, probability=mask_probability)
    flux[ivar <= 0] = 0.0
    return flux.astype(np.float32), ivar.astype(np.float32)
