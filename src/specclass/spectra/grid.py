"""Common log-wavelength grid and inverse-variance-weighted rebinning.

Every spectrum that enters a dataset is put on one :class:`LogLamGrid`, so a
model sees the same wavelength at the same input index. The grid is uniform in
``loglam`` (log10 vacuum Å) with the SDSS coadd step of 1e-4 dex (69 km/s per
pixel; SDSS spec data model, ``COEFF1`` = 1e-4,
https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/lite/PLATE4/spec.html).

Rebinning (:func:`rebin`) keeps the inverse variance beside the flux (as in
specutils' resamplers) and never inverts an ivar of 0:

* Each input pixel ``j`` covers ``[e_j, e_{j+1}]`` in loglam (edges half-way
  between pixel centres); each output pixel ``i`` covers
  ``[c_i - step/2, c_i + step/2]``. ``ov_ij`` is the length of their overlap.
* A pixel has weight 0 when its ``ivar <= 0``, its flux or ivar is not finite,
  or ``and_mask & bad_mask_bits != 0``. Output pixels outside the spectrum's
  coverage get no input at all.
* Output flux is the flux-conserving, ivar-weighted average of the input pixels
  that overlap it::

      flux_i = sum_j(ivar_j * ov_ij * flux_j) / sum_j(ivar_j * ov_ij)

  (weights = ivar x overlap fraction of the output pixel, ``ov_ij / step``).
* Output ivar is the overlap-weighted sum of input ivar, each input pixel's
  ivar shared among the output pixels in proportion to the part of it they
  cover::

      ivar_i = sum_j(ivar_j * ov_ij / width_j)

  so an input already on the grid is returned unchanged, merging k input
  pixels into one gives the ivar of their weighted mean (sum of ivar), and
  ``sum_i(ivar_i * flux_i)`` equals ``sum_j(ivar_j * flux_j)`` when input and
  output share the step and the grid covers the input.
* Output pixels with no weight get ``flux = 0`` and ``ivar = 0`` (the mask).
* Input pixel edges within 1 % of a grid step of a grid edge are moved onto
  it (when that keeps them increasing): ``loglam`` arrives as float32, whose
  rounding (~0.3 % of a 1e-4 dex pixel) would otherwise leak slivers of a
  neighbour into a masked pixel.

SDSS/BOSS coadds are sampled on this very grid (``COEFF0`` is a multiple of
1e-4), so :func:`rebin` detects inputs that sit on the grid within 1 % of a pixel
and copies them with an integer shift (exact, and about 5x faster than the
general path). In the shared test data every spec-lite/full, DR7 spSpec,
LAMOST, MaStar and SDSS text dump does; only re-sampled files (e.g. an IRAF
1-D image linear in Å) and non-default grids take the general overlap path.

SPPIXMASK ``and_mask`` bits are named in :data:`SPPIXMASK` (idlutils
``data/sdss/sdssMaskbits.par``; https://www.sdss4.org/dr17/algorithms/bitmasks/#SPPIXMASK).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from specclass.spectrum import Spectrum

#: SDSS coadd pixel step in log10(Å) (SDSS spec data model, ``COEFF1``).
SDSS_LOGLAM_STEP = 1e-4

#: Default grid: loglam 3.5800 .. 3.9600 (3801.9 .. 9120.1 Å), 3801 pixels.
#: Why this range: it is the wavelength range SDSS-I/II and BOSS/eBOSS coadds
#: have in common. SDSS-I/II (run2d 26) coadds start at loglam 3.5786-3.5831 and
#: end at 3.963-3.965 (about 3800-9200 Å); BOSS/eBOSS ones cover 3.55-4.02
#: (3600-10400 Å). A wider grid would leave the BOSS-only ends empty for every
#: SDSS-I/II spectrum, so a model could tell the surveys (and the classes they
#: targeted) apart by where the data stop. At most ~30 blue pixels of an
#: SDSS-I/II spectrum fall below its first pixel and stay masked (ivar 0).
#: 3.5800 is also a multiple of the 1e-4 step, like every SDSS coadd ``COEFF0``,
#: so SDSS spectra land on the grid with an integer shift (the fast path).
DEFAULT_LOGLAM_MIN = 3.5800
DEFAULT_LOGLAM_MAX = 3.9600

#: SPPIXMASK bit number -> name (idlutils ``sdssMaskbits.par``). Bits 0-12 are
#: per fibre, bits 16-28 per pixel.
SPPIXMASK: dict[int, str] = {
    0: "NOPLUG",
    1: "BADTRACE",
    2: "BADFLAT",
    3: "BADARC",
    4: "MANYBADCOLUMNS",
    5: "MANYREJECTED",
    6: "LARGESHIFT",
    7: "BADSKYFIBER",
    8: "NEARWHOPPER",
    9: "WHOPPER",
    10: "SMEARIMAGE",
    11: "SMEARHIGHSN",
    12: "SMEARMEDSN",
    16: "NEARBADPIXEL",
    17: "LOWFLAT",
    18: "FULLREJECT",
    19: "PARTIALREJECT",
    20: "SCATTEREDLIGHT",
    21: "CROSSTALK",
    22: "NOSKY",
    23: "BRIGHTSKY",
    24: "NODATA",
    25: "COMBINEREJ",
    26: "BADFLUXFACTOR",
    27: "BADSKYCHI",
    28: "REDMONSTER",
}
SPPIXMASK_BITS: dict[str, int] = {name: bit for bit, name in SPPIXMASK.items()}

#: ``and_mask`` bits that make a pixel bad by default:
#:
#: * ``FULLREJECT`` (18) and ``NOSKY`` (22): the data model marks these as
#:   INVVAR = 0 in every exposure - the value is not a measurement;
#: * ``BRIGHTSKY`` (23): sky brighter than flux + 10 sigma, where sky-subtraction
#:   residuals dominate; idlspec2d's own redshift fit drops these pixels
#:   (``skymask.pro``: ``andmask AND BRIGHTSKY``).
#:
#: Not bad by default: ``NODATA`` (24). In a coadd's AND mask it says no
#: exposure had data there; where that is true the coadd ivar is already 0 and
#: the pixel gets weight 0 anyway, and where ivar > 0 the pixel holds data (in
#: the 166 lite files of sdss/spectra + sdss/sky, 3,873 pixels carry NODATA and
#: only one of them has ivar > 0). Fibre-level bits (0-12) and soft pixel flags
#: (PARTIALREJECT, SCATTEREDLIGHT, BADFLUXFACTOR, ...) would throw away good
#: pixels of whole spectra, so they are left to the user.
DEFAULT_BAD_MASK_NAMES: tuple[str, ...] = ("FULLREJECT", "NOSKY", "BRIGHTSKY")


def mask_bits(names: Iterable[str] | int | None) -> int:
    """Turn SPPIXMASK bit names (or an int) into an integer bit mask.

    Args:
        names: iterable of names from :data:`SPPIXMASK` (case-insensitive), a
            comma/space-separated string of them (``'none'`` or ``''`` = 0), an
            ``int`` (returned as is), or ``None`` (0: no bit is bad).

    Returns:
        ``int`` with the named bits set.

    Raises:
        ValueError: an unknown name (the message lists the allowed names).
    """
    if names is None:
        return 0
    if isinstance(names, (int, np.integer)):
        if names < 0:
            raise ValueError(f"bad_mask_bits must be >= 0, got {names}")
        return int(names)
    if isinstance(names, str):
        if names.strip().lower() in ("", "none", "0"):
            return 0
        names = [n for n in names.replace(",", " ").split() if n]
    out = 0
    for name in names:
        key = str(name).strip().upper()
        if key not in SPPIXMASK_BITS:
            raise ValueError(f"unknown SPPIXMASK bit {name!r}; allowed: {', '.join(SPPIXMASK_BITS)}")
        out |= 1 << SPPIXMASK_BITS[key]
    return out


def mask_names(value: int) -> list[str]:
    """Names of the SPPIXMASK bits set in ``value`` (unknown bits as 'BIT<n>')."""
    return [SPPIXMASK.get(b, f"BIT{b}") for b in range(32) if int(value) >> b & 1]


#: Default bad ``and_mask`` bits as an int (FULLREJECT | NOSKY | BRIGHTSKY).
DEFAULT_BAD_MASK_BITS: int = mask_bits(DEFAULT_BAD_MASK_NAMES)

#: An input is treated as sitting on the grid when its pixel centres are within
#: this fraction of a pixel of grid centres (float32 loglam rounding is ~0.3 %).
ALIGN_TOLERANCE = 0.01


@dataclass(frozen=True)
class LogLamGrid:
    """A uniform grid in log10 vacuum wavelength.

    Pixel ``i`` is centred on ``loglam_min + i * step`` and spans half a step
    either side.

    Attributes:
        loglam_min: centre of the first pixel, log10 Å (vacuum).
        step: pixel width in dex (default 1e-4, the SDSS coadd step).
        npix: number of pixels ``L``.

    Raises:
        ValueError: if ``step <= 0``, ``npix < 1`` or a value is not finite.

    Example:
        >>> g = LogLamGrid.from_range(3.58, 3.96)
        >>> g.npix, round(float(g.wavelength[0]), 1)
        (3801, 3801.9)
    """

    loglam_min: float = DEFAULT_LOGLAM_MIN
    step: float = SDSS_LOGLAM_STEP
    npix: int = round((DEFAULT_LOGLAM_MAX - DEFAULT_LOGLAM_MIN) / SDSS_LOGLAM_STEP) + 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "loglam_min", float(self.loglam_min))
        object.__setattr__(self, "step", float(self.step))
        object.__setattr__(self, "npix", int(self.npix))
        if not (math.isfinite(self.loglam_min) and math.isfinite(self.step)):
            raise ValueError(f"grid loglam_min={self.loglam_min} and step={self.step} must be finite")
        if self.step <= 0:
            raise ValueError(f"grid step must be > 0 dex, got {self.step}")
        if self.npix < 1:
            raise ValueError(f"grid npix must be >= 1, got {self.npix}")

    @classmethod
    def from_range(cls, loglam_min: float, loglam_max: float, step: float = SDSS_LOGLAM_STEP) -> "LogLamGrid":
        """Grid with first centre ``loglam_min`` and last centre ``loglam_max`` (inclusive, rounded to a step).

        Raises:
            ValueError: if ``loglam_max <= loglam_min`` or ``step <= 0``.
        """
        if step <= 0:
            raise ValueError(f"grid step must be > 0 dex, got {step}")
        if not loglam_max > loglam_min:
            raise ValueError(f"grid max ({loglam_max}) must be greater than grid min ({loglam_min})")
        npix = int(round((loglam_max - loglam_min) / step)) + 1
        return cls(loglam_min=loglam_min, step=step, npix=npix)

    @classmethod
    def from_wavelength(cls, wave_min: float, wave_max: float, step: float = SDSS_LOGLAM_STEP) -> "LogLamGrid":
        """Grid from a vacuum wavelength range in Å (converted with log10)."""
        if not (wave_min > 0 and wave_max > 0):
            raise ValueError(f"wavelengths must be > 0 Å, got {wave_min}, {wave_max}")
        return cls.from_range(math.log10(wave_min), math.log10(wave_max), step)

    @property
    def loglam_max(self) -> float:
        """Centre of the last pixel, log10 Å."""
        return self.loglam_min + (self.npix - 1) * self.step

    @property
    def loglam(self) -> np.ndarray:
        """``(L,)`` float64 pixel centres, log10 Å."""
        return self.loglam_min + self.step * np.arange(self.npix, dtype=np.float64)

    @property
    def wavelength(self) -> np.ndarray:
        """``(L,)`` float64 pixel centres, vacuum Å."""
        return np.power(10.0, self.loglam)

    @property
    def edges(self) -> np.ndarray:
        """``(L + 1,)`` float64 pixel edges, log10 Å."""
        return self.loglam_min + self.step * (np.arange(self.npix + 1, dtype=np.float64) - 0.5)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (saved with datasets and models)."""
        return {"loglam_min": self.loglam_min, "loglam_step": self.step, "npix": self.npix}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LogLamGrid":
        """Inverse of :meth:`to_dict` (also accepts ``step`` for ``loglam_step``).

        Raises:
            ValueError: if a key is missing (names it).
        """
        try:
            step = d["loglam_step"] if "loglam_step" in d else d["step"]
            return cls(loglam_min=float(d["loglam_min"]), step=float(step), npix=int(d["npix"]))
        except KeyError as exc:
            raise ValueError(f"grid description lacks {exc.args[0]!r}: {dict(d)}") from None

    @classmethod
    def from_loglam(cls, loglam: np.ndarray) -> "LogLamGrid":
        """The grid whose centres are ``loglam`` (e.g. a dataset's ``/loglam``).

        Raises:
            ValueError: if ``loglam`` is not uniform to 1e-3 of a step.
        """
        loglam = np.asarray(loglam, dtype=np.float64)
        if loglam.ndim != 1 or loglam.size < 2:
            raise ValueError(f"loglam must be 1-D with >= 2 pixels, got shape {loglam.shape}")
        step = (loglam[-1] - loglam[0]) / (loglam.size - 1)
        grid = cls(loglam_min=float(loglam[0]), step=float(step), npix=int(loglam.size))
        if np.max(np.abs(grid.loglam - loglam)) > 1e-3 * abs(step):
            raise ValueError("loglam is not a uniform grid")
        return grid


DEFAULT_GRID = LogLamGrid()


def _good_weights(flux: np.ndarray, ivar: np.ndarray, and_mask: np.ndarray | None, bad_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (flux with bad values zeroed, weight ivar) as float64."""
    f = flux.astype(np.float64)
    w = ivar.astype(np.float64)
    good = np.isfinite(f) & np.isfinite(w) & (w > 0)
    if bad_bits and and_mask is not None:
        good &= (and_mask & bad_bits) == 0
    w = np.where(good, w, 0.0)
    f = np.where(good, f, 0.0)
    return f, w


def _aligned_offset(loglam: np.ndarray, grid: LogLamGrid) -> int | None:
    """Integer pixel offset of input pixel 0 on ``grid`` when the input sits on it, else None."""
    n = loglam.shape[0]
    if n < 2:
        return None
    l0 = float(loglam[0])
    step_in = (float(loglam[-1]) - l0) / (n - 1)
    # comparisons are written so that NaN fails them
    if not abs(step_in - grid.step) * (n - 1) <= ALIGN_TOLERANCE * grid.step:
        return None
    pos = (l0 - grid.loglam_min) / grid.step
    k = round(pos)
    if not abs(pos - k) <= ALIGN_TOLERANCE:
        return None
    # every pixel (not just the ends) must sit on the grid
    model = grid.loglam_min + grid.step * (k + np.arange(n, dtype=np.float64))
    if not np.max(np.abs(loglam - model)) <= ALIGN_TOLERANCE * grid.step:
        return None
    return int(k)


def _pixel_edges(loglam: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` float64 edges half-way between centres, ends mirrored."""
    ll = loglam.astype(np.float64)
    edges = np.empty(ll.size + 1)
    edges[1:-1] = 0.5 * (ll[1:] + ll[:-1])
    if ll.size > 1:
        edges[0] = ll[0] - 0.5 * (ll[1] - ll[0])
        edges[-1] = ll[-1] + 0.5 * (ll[-1] - ll[-2])
    else:  # a single pixel: give it one grid step
        edges[0], edges[-1] = ll[0] - 0.5e-4, ll[0] + 0.5e-4
    return edges


def _snap_edges(edges: np.ndarray, grid: LogLamGrid) -> np.ndarray:
    """Move edges within :data:`ALIGN_TOLERANCE` steps of a grid edge onto it (if still increasing)."""
    u = (edges - (grid.loglam_min - 0.5 * grid.step)) / grid.step
    r = np.round(u)
    near = (np.abs(u - r) < ALIGN_TOLERANCE) & (r >= 0) & (r <= grid.npix)
    if not near.any():
        return edges
    snapped = np.where(near, grid.loglam_min + (r - 0.5) * grid.step, edges)
    if np.all(np.diff(snapped) > 0):
        return snapped
    return edges


def rebin_arrays(
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray | None = None,
    grid: LogLamGrid = DEFAULT_GRID,
    *,
    bad_mask_bits: int | Iterable[str] | None = DEFAULT_BAD_MASK_BITS,
    name: str = "spectrum",
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rebin one spectrum given as arrays onto ``grid`` (see the module docstring for the formulas).

    Args:
        loglam: ``(n,)`` log10 vacuum Å, strictly increasing.
        flux: ``(n,)`` flux, 1e-17 erg/s/cm²/Å.
        ivar: ``(n,)`` inverse variance of ``flux``; <= 0 or non-finite = no data.
        and_mask: ``(n,)`` int SPPIXMASK bits, or None.
        grid: the output :class:`LogLamGrid` (``L`` pixels).
        bad_mask_bits: int mask or SPPIXMASK names whose pixels get weight 0
            (default :data:`DEFAULT_BAD_MASK_BITS`; None or 0 = none).
        name: used in error messages (e.g. the file name).
        out: optional ``(flux, ivar)`` ``(L,)`` float32 arrays to write into
            (e.g. rows of a preallocated ``(N, L)`` buffer); they are overwritten.

    Returns:
        ``(flux, ivar)``, each ``(L,)`` float32; both 0 where no good input pixel
        overlaps the output pixel (``out`` itself when given).

    Raises:
        ValueError: arrays of different lengths, not 1-D, or ``loglam`` not
            finite and strictly increasing (message names ``name``).
    """
    bad = mask_bits(bad_mask_bits) if not isinstance(bad_mask_bits, (int, np.integer)) else int(bad_mask_bits)
    loglam = np.asarray(loglam)
    flux = np.asarray(flux)
    ivar = np.asarray(ivar)
    n = loglam.shape[0] if loglam.ndim == 1 else -1
    if loglam.ndim != 1 or flux.shape != (n,) or ivar.shape != (n,) or (and_mask is not None and np.shape(and_mask) != (n,)):
        raise ValueError(
            f"{name}: loglam {loglam.shape}, flux {flux.shape}, ivar {ivar.shape}"
            f"{'' if and_mask is None else f', and_mask {np.shape(and_mask)}'} must be 1-D and equal"
        )
    L = grid.npix
    if out is None:
        out_f = np.zeros(L, dtype=np.float32)
        out_iv = np.zeros(L, dtype=np.float32)
    else:
        out_f, out_iv = out
        if out_f.shape != (L,) or out_iv.shape != (L,) or out_f.dtype != np.float32 or out_iv.dtype != np.float32:
            raise ValueError(f"out arrays must be ({L},) float32, got {out_f.shape} {out_f.dtype}, {out_iv.shape} {out_iv.dtype}")
    if n == 0:
        out_f[:] = 0
        out_iv[:] = 0
        return out_f, out_iv
    if and_mask is not None:
        and_mask = np.asarray(and_mask)
    ll64 = loglam.astype(np.float64)

    k = _aligned_offset(ll64, grid)  # implies finite and strictly increasing
    if k is not None:
        # Fast path: input pixel j is output pixel k + j (exact copy, masked).
        lo, hi = max(k, 0), min(k + n, L)
        out_f[:lo] = 0
        out_iv[:lo] = 0
        out_f[max(hi, lo):] = 0
        out_iv[max(hi, lo):] = 0
        if lo >= hi:
            return out_f, out_iv
        sl = slice(lo - k, hi - k)
        f = flux[sl]
        w = ivar[sl]
        good = np.isfinite(f) & np.isfinite(w) & (w > 0)
        if bad and and_mask is not None:
            good &= (and_mask[sl] & bad) == 0
        np.copyto(out_f[lo:hi], np.where(good, f, 0), casting="unsafe")
        np.copyto(out_iv[lo:hi], np.where(good, w, 0), casting="unsafe")
        return out_f, out_iv

    if not np.all(np.isfinite(ll64)):
        raise ValueError(f"{name}: loglam has non-finite values")
    d = np.diff(ll64)
    if d.size and not np.all(d > 0):
        raise ValueError(f"{name}: loglam is not strictly increasing (pixel {int(np.argmin(d > 0)) + 1})")
    out_f[:] = 0
    out_iv[:] = 0

    # General path: merge the two sorted edge lists; each piece between
    # consecutive merged edges lies in exactly one input pixel j and one output
    # pixel i. The merge is done arithmetically (the output grid is uniform).
    f, w = _good_weights(flux, ivar, and_mask, bad)
    e_in = _snap_edges(_pixel_edges(ll64), grid)
    e_out = grid.edges
    # below[m]: number of output edges strictly below input edge m (sorted)
    below = np.ceil((e_in - e_out[0]) / grid.step)
    np.clip(below, 0, L + 1, out=below)
    below = below.astype(np.intp)
    pos_in = np.arange(n + 1) + below
    total = n + L + 2
    is_in = np.zeros(total, dtype=bool)
    is_in[pos_in] = True
    merged = np.empty(total, dtype=np.float64)
    merged[pos_in] = e_in
    merged[~is_in] = e_out
    # pieces s in [start, stop) lie inside both the input and the output range
    first_out = int(np.searchsorted(below, 0, side="right"))
    last_out = L + int(np.searchsorted(below, L, side="right"))
    start, stop = max(int(pos_in[0]), first_out), min(int(pos_in[-1]), last_out)
    if start >= stop:
        return out_f, out_iv
    j = np.cumsum(is_in[: stop])[start:] - 1
    i = np.arange(start, stop) - j - 1
    length = np.maximum(merged[start + 1 : stop + 1] - merged[start:stop], 0.0)
    width = np.diff(e_in)[j]
    wl = w[j] * length
    den = np.bincount(i, weights=wl, minlength=L)
    num = np.bincount(i, weights=wl * f[j], minlength=L)
    ivo = np.bincount(i, weights=wl / width, minlength=L)
    has = den > 0
    out_f[has] = num[has] / den[has]
    out_iv[has] = ivo[has]
    return out_f, out_iv


def rebin(
    spectrum: Spectrum,
    grid: LogLamGrid = DEFAULT_GRID,
    *,
    bad_mask_bits: int | Iterable[str] | None = DEFAULT_BAD_MASK_BITS,
) -> tuple[np.ndarray, np.ndarray]:
    """Put one :class:`~specclass.spectrum.Spectrum` on ``grid``.

    Args:
        spectrum: ``loglam``, ``flux``, ``ivar``, ``and_mask``, each ``(n,)``.
        grid: output grid (``L`` pixels), default :data:`DEFAULT_GRID`.
        bad_mask_bits: ``and_mask`` bits that give a pixel weight 0 (int or
            SPPIXMASK names; default FULLREJECT | NOSKY | BRIGHTSKY).

    Returns:
        ``(flux, ivar)``: ``(L,)`` float32 each, 1e-17 erg/s/cm²/Å and its
        inverse variance; 0/0 where no good input pixel overlaps.

    Raises:
        ValueError: ``loglam`` not finite or not strictly increasing (names the file).

    Example:
        >>> import numpy as np
        >>> from specclass.spectrum import Spectrum
        >>> g = LogLamGrid(3.6, 1e-4, 4)
        >>> s = Spectrum(g.loglam, np.ones(4), np.full(4, 2.0), np.zeros(4))
        >>> rebin(s, g)[1].tolist()
        [2.0, 2.0, 2.0, 2.0]
    """
    return rebin_arrays(
        spectrum.loglam,
        spectrum.flux,
        spectrum.ivar,
        spectrum.and_mask,
        grid,
        bad_mask_bits=bad_mask_bits,
        name=spectrum.meta.file or "spectrum",
    )


class Rebinner:
    """Callable that puts spectra on one grid with one set of bad bits.

    Args:
        grid: output :class:`LogLamGrid`.
        bad_mask_bits: int or SPPIXMASK names (see :func:`rebin`).

    ``Rebinner(grid)(spectrum) -> (flux (L,), ivar (L,))``;
    :meth:`batch` returns ``(N, L)`` arrays for a list of spectra.
    """

    def __init__(self, grid: LogLamGrid = DEFAULT_GRID, bad_mask_bits: int | Iterable[str] | None = DEFAULT_BAD_MASK_BITS):
        self.grid = grid
        self.bad_mask_bits = mask_bits(bad_mask_bits)

    def __call__(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
        return rebin(spectrum, self.grid, bad_mask_bits=self.bad_mask_bits)

    def batch(self, spectra: Iterable[Spectrum]) -> tuple[np.ndarray, np.ndarray]:
        """Rebin many spectra: returns ``(flux, ivar)``, each ``(N, L)`` float32."""
        spectra = list(spectra)
        flux = np.zeros((len(spectra), self.grid.npix), dtype=np.float32)
        ivar = np.zeros_like(flux)
        for row, s in enumerate(spectra):
            flux[row], ivar[row] = self(s)
        return flux, ivar
