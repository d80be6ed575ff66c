"""Last step of every reader: check the pixel arrays and wrap them in a :class:`Spectrum`.

Every reader (native or astropy, any layout) hands its arrays to
:func:`build_spectrum`, so all of them apply the same rules:

* arrays leave as native-endian, C-contiguous float32 (``and_mask`` int32);
* ``loglam`` must be finite, inside ``LOGLAM_RANGE`` (log10 Å; catches Å given
  where log10 Å was expected) and strictly increasing (a strictly decreasing
  grid is reversed, with every array);
* pixels whose ``flux`` or ``ivar`` is NaN/±inf get ``flux = 0`` and ``ivar = 0``
  (weight zero, never used) and are counted in ``meta.extra['n_nonfinite']``;
  with ``nonfinite='raise'`` they are a :class:`SpectrumReadError` instead;
* a spectrum with no pixels, or with no finite flux at all, is a
  :class:`SpectrumReadError`.

An all-zero ``ivar`` (a fully masked spectrum such as
``spec-0269-51581-0003.fits``) is *not* an error here: it reads fine and the
dataset builder decides to skip it.
"""

from __future__ import annotations

import numpy as np

from specclass.io.errors import SpectrumReadError
from specclass.spectrum import Spectrum, SpectrumMeta

#: Accepted range of ``loglam`` (log10 Å): 100 Å .. 1e6 Å.
LOGLAM_RANGE = (2.0, 6.0)

#: Values of the ``nonfinite`` option.
NONFINITE_POLICIES = ("mask", "raise")


_DTYPES = {"f4": np.dtype("=f4"), "i4": np.dtype("=i4")}


def _native(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Native-endian, C-contiguous, writable copy-or-view of ``arr`` as ``dtype``."""
    out = np.ascontiguousarray(arr, dtype=_DTYPES[dtype])
    if not out.flags.writeable:
        out = out.copy()
    return out


def build_spectrum(
    path: str,
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray | None,
    meta: SpectrumMeta,
    *,
    nonfinite: str = "mask",
    or_mask: np.ndarray | None = None,
) -> Spectrum:
    """Validate reader output and return a :class:`Spectrum`.

    Args:
        path: file name used in error messages.
        loglam: ``(npix,)`` log10 vacuum wavelength in Å, any float dtype/byte order.
        flux: ``(npix,)`` flux, any float dtype/byte order.
        ivar: ``(npix,)`` inverse variance.
        and_mask: ``(npix,)`` integer (or float-coded) mask bits, or ``None`` for zeros.
        meta: metadata; ``meta.extra`` receives ``'n_nonfinite'``.
        nonfinite: ``'mask'`` (default) zeroes flux and ivar of NaN/inf pixels;
            ``'raise'`` makes them an error.
        or_mask: ``(npix,)`` OR-mask bits like ``and_mask``, or ``None`` for zeros.

    Returns:
        :class:`Spectrum` with float32 ``loglam``/``flux``/``ivar`` and int32 ``and_mask``/``or_mask``.

    Raises:
        SpectrumReadError: empty spectrum, shape mismatch, non-finite/unsorted/out-of-range
            ``loglam``, no finite flux, or NaN/inf with ``nonfinite='raise'``.
        ValueError: ``nonfinite`` is not one of :data:`NONFINITE_POLICIES`.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite={nonfinite!r}; allowed: {', '.join(NONFINITE_POLICIES)}")
    loglam = _native(loglam, "f4")
    flux = _native(flux, "f4")
    ivar = _native(ivar, "f4")
    n = loglam.shape[0] if loglam.ndim == 1 else -1
    and_mask = _mask_bits(and_mask, n)
    or_mask = _mask_bits(or_mask, n)
    for name, arr in (("loglam", loglam), ("flux", flux), ("ivar", ivar), ("and_mask", and_mask), ("or_mask", or_mask)):
        if arr.ndim != 1:
            raise SpectrumReadError(path, f"{name} is not 1-D (shape {arr.shape})")
        if arr.shape[0] != n:
            raise SpectrumReadError(path, f"{name} has {arr.shape[0]} pixels, loglam has {n}")
    if n == 0:
        raise SpectrumReadError(path, "the spectrum has no pixels")
    # strictly increasing also rules out NaN (every comparison with NaN is False)
    if n > 1 and not (np.diff(loglam) > 0).all():
        if not np.isfinite(loglam).all():
            raise SpectrumReadError(path, f"wavelength has {int((~np.isfinite(loglam)).sum())} NaN/inf values")
        if (np.diff(loglam) < 0).all():
            loglam, flux, ivar, and_mask, or_mask = (a[::-1].copy() for a in (loglam, flux, ivar, and_mask, or_mask))
        else:
            raise SpectrumReadError(path, "wavelengths are not strictly increasing")
    lo, hi = float(loglam[0]), float(loglam[-1])
    if not (LOGLAM_RANGE[0] <= lo and hi <= LOGLAM_RANGE[1]):
        raise SpectrumReadError(
            path,
            f"log10 wavelength spans {lo:.4g}..{hi:.4g}, outside {LOGLAM_RANGE[0]}..{LOGLAM_RANGE[1]} "
            "(wrong unit? expected log10 of Angstrom)",
        )
    n_bad = 0
    # fast path: a finite float64 sum means every value is finite
    if not (np.isfinite(flux.sum(dtype=np.float64)) and np.isfinite(ivar.sum(dtype=np.float64))):
        bad = ~(np.isfinite(flux) & np.isfinite(ivar))
        n_bad = int(bad.sum())
        if nonfinite == "raise":
            raise SpectrumReadError(path, f"{n_bad} of {n} pixels have NaN/inf flux or ivar")
        if n_bad == n or not np.isfinite(flux).any():
            raise SpectrumReadError(path, "no pixel has a finite flux")
        flux[bad] = 0.0
        ivar[bad] = 0.0
    meta.extra["n_nonfinite"] = n_bad
    return Spectrum(loglam=loglam, flux=flux, ivar=ivar, and_mask=and_mask, meta=meta, or_mask=or_mask)


def _mask_bits(mask: np.ndarray | None, n: int) -> np.ndarray:
    """Mask bits as native int32 (float-coded masks: non-finite values become 0); zeros when None."""
    if mask is None:
        return np.zeros(max(n, 0), dtype=np.int32)
    m = np.asarray(mask)
    if m.dtype.kind == "f":
        m = np.where(np.isfinite(m), m, 0).astype(np.int64)
    return _native(m, "i4")
