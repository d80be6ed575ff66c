"""The redshift scan: reduced chi2 of template + polynomial fits at every trial redshift.

This is idlspec2d's ``zcompute``/``computechi2`` (``pro/spec1d/``): at each integer pixel
lag between a spectrum and a template set (both on SDSS's 1e-4 dex log-lambda pixels),
the basis ``B`` (eigenspectra plus ``npoly`` polynomial columns, ``K`` columns) is fitted
to the object flux by weighted linear least squares over the pixels the two have in
common; ``dof = (good object pixels in common) - K`` and the figure of merit is
``chi2 / dof``.

Speed: the pipeline solves one least-squares problem per lag. Here every quantity of the
normal equations is a cross-correlation of an object vector with a template product,

    A_kl(l) = sum_i ivar_i B_k(i+l) B_l(i+l)        b_k(l) = sum_i ivar_i f_i B_k(i+l)
    S(l)    = sum_i ivar_i f_i^2 [i+l in template]  n(l)   = sum_i [ivar_i > 0][i+l in template]

so all lags come from a handful of FFTs (or, for the few lags of the star fits, one
matrix product), then ``chi2(l) = S - b . A^-1 b`` for all lags in one batched solve.
This gives the pipeline's numbers (up to floating-point rounding) at every lag, where the
pipeline itself scans GALAXY/QSO on every 2nd/4th lag and refines near the 5 best minima
(``zrefind``); scanning every lag can only find the same or a lower minimum. The chi2/dof a
minimum reports -- the number that decides CLASS -- is, as in the pipeline, the value of a
Gaussian-plus-constant fit to the chi2 curve around the lowest lag (:func:`find_minima`), not
the lowest lag itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from specclass.spectro1d.templates import DLOGLAM, TemplateSet

#: Minimum degrees of freedom for a lag to count (zcompute's MINDOF default).
MINDOF = 10

#: SPPIXMASK bit 23, BRIGHTSKY: sky-dominated pixels. The SDSS-I/II pipeline (RUN2D 26 and
#: older) masks them in the AND-mask, grown by 2 pixels each side, before the fits
#: (idlspec2d ``skymask.pro``; bits from the SDSS data model ``sppixmask``).
BRIGHTSKY = 1 << 23
#: SPPIXMASK bits 27 BADSKYCHI and 28 REDMONSTER: what the BOSS pipeline (RUN2D v5_*) masks
#: instead, in the OR-mask, grown by 2 pixels (the later ``skymask.pro``, where the BRIGHTSKY
#: test is commented out). Measured on the complete BOSS spec files in ../shared: this
#: leaves the pipeline's DOF + fitted parameters to within 3 pixels (BRIGHTSKY masking was
#: 60-740 pixels off), and it decides CLASS/SUBCLASS of spec-8398-57870-0908.
BOSS_SKYMASK = (1 << 27) | (1 << 28)

#: Pixels this many sigma *below* zero are masked with 2 neighbours on each side
#: (spreduce1d.pro: "unphysically negative (10-sigma negatives)").
NEGATIVE_NSIGMA = 10.0

#: Wavelength range used by the v5 pipeline fits (spreduce1d ``chop_data`` default, Å).
CHOP_DATA = (3600.0, 10400.0)

#: Function evaluations of one minimum's Gaussian fit before its current parameters are kept (MPFIT
#: stops after 200 iterations). Calibrated on the one degenerate fit whose result is in a file: the CV
#: star spec-9367-57758-0500, RCHI2 1.2971 and RCHI2DIFF 0.026 in SDSS, 1.2996 and 0.023 here after
#: 100 evaluations (1.281 after 200, 1.311 after 60; a converged fit 1.278).
MAX_PEAK_EVALS = 100

#: Lag counts up to which the correlations are done as one matrix product instead of FFTs.
DIRECT_MAX_LAGS = 96


class ScanError(ValueError):
    """The spectrum cannot be scanned (the message says why)."""


@dataclass(frozen=True)
class ObjectSpectrum:
    """A spectrum ready for the fits.

    Attributes:
        loglam0: log10 Å of pixel 0 (vacuum).
        flux: ``(N,)`` float64, 1e-17 erg/s/cm²/Å (zero where ``ivar = 0``).
        ivar: ``(N,)`` float64 after the pipeline's masks (BRIGHTSKY, 10-sigma negatives,
            outside :data:`CHOP_DATA`).
    """

    loglam0: float
    flux: np.ndarray
    ivar: np.ndarray

    @property
    def npix(self) -> int:
        return int(self.flux.size)

    @property
    def loglam(self) -> np.ndarray:
        """``(N,)`` float64 log10 Å of every pixel."""
        return self.loglam0 + DLOGLAM * np.arange(self.npix)


def _grow(mask: np.ndarray, n: int = 2) -> np.ndarray:
    """``mask`` grown by ``n`` pixels each side (IDL ``smooth(float(mask), 2n+1) GT 0``)."""
    if not mask.any():
        return mask
    k = np.convolve(mask.astype(np.float64), np.ones(2 * n + 1), mode="same")
    return k > 0


def on_sdss_pixels(loglam: np.ndarray) -> bool:
    """True when ``loglam`` (log10 Å) steps uniformly by :data:`DLOGLAM` (to 2 %), as the fits need."""
    step = np.diff(np.asarray(loglam, dtype=np.float64))
    return bool(step.size) and bool(np.abs(step - DLOGLAM).max() <= 0.02 * DLOGLAM)


def prepare(
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray | None = None,
    or_mask: np.ndarray | None = None,
    generation: str = "sdss",
) -> ObjectSpectrum:
    """Apply the pipeline's pre-fit masks to one spectrum on SDSS pixels.

    Args:
        loglam: ``(N,)`` log10 vacuum Å, uniform 1e-4 dex steps (any SDSS/BOSS spectrum,
            or a spectrum on ``specclass.spectra.grid.LogLamGrid``).
        flux: ``(N,)`` 1e-17 erg/s/cm²/Å.
        ivar: ``(N,)`` inverse variance (0 = no data).
        and_mask: ``(N,)`` SPPIXMASK AND-mask, or None: its BRIGHTSKY pixels are masked
            for ``generation='sdss'`` (:data:`BRIGHTSKY`).
        or_mask: ``(N,)`` SPPIXMASK OR-mask, or None: its BADSKYCHI/REDMONSTER pixels are
            masked for ``generation='boss'`` (:data:`BOSS_SKYMASK`).
        generation: the reduction's pipeline generation, 'sdss' or 'boss'
            (:func:`specclass.spectro1d.templates.template_generation`).

    Returns:
        :class:`ObjectSpectrum`.

    Raises:
        ScanError: arrays of different lengths, fewer than 2 pixels, or a wavelength
            grid that is not uniform in 1e-4 dex steps.
    """
    loglam = np.asarray(loglam, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    if not (loglam.shape == flux.shape == ivar.shape) or loglam.ndim != 1 or loglam.size < 2:
        raise ScanError(f"loglam, flux, ivar must be 1-D of one length >= 2, got {loglam.shape}, {flux.shape}, {ivar.shape}")
    if not on_sdss_pixels(loglam):
        step = np.diff(loglam)
        raise ScanError(
            f"wavelength grid is not uniform in {DLOGLAM} dex pixels (steps {step.min():.3g}..{step.max():.3g}): "
            "put the spectrum on SDSS pixels first (specclass.spectra.grid)"
        )
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    ivar = np.where(good, ivar, 0.0)
    flux = np.where(good, flux, 0.0)
    if generation == "boss":
        if or_mask is not None:
            ivar[_grow((np.asarray(or_mask).astype(np.int64) & BOSS_SKYMASK) != 0)] = 0.0
    elif and_mask is not None:
        ivar[_grow((np.asarray(and_mask).astype(np.int64) & BRIGHTSKY) != 0)] = 0.0
    neg = flux * np.sqrt(ivar) <= -NEGATIVE_NSIGMA
    ivar[_grow(neg)] = 0.0
    wave = 10**loglam
    ivar[(wave < CHOP_DATA[0]) | (wave > CHOP_DATA[1])] = 0.0
    flux = np.where(ivar > 0, flux, 0.0)
    return ObjectSpectrum(loglam0=float(loglam[0]), flux=flux, ivar=ivar)


def _correlate(obj: np.ndarray, rows: np.ndarray, lags: np.ndarray, cache: dict, key: str) -> np.ndarray:
    """``c[l, r] = sum_i obj[i] rows[r, i + l]`` for every ``l`` in ``lags`` (zero outside).

    Args:
        obj: ``(N,)`` float64 object vector.
        rows: ``(R, Nt)`` float64 template vectors.
        lags: ``(nlag,)`` increasing int lags.
        cache: per-template-set dict for the rows' FFTs.
        key: cache key of ``rows`` (None: rows are a one-off subset, correlated directly).

    Returns:
        ``(nlag, R)`` float64.
    """
    n, nt = obj.size, rows.shape[1]
    lo, hi = int(lags[0]), int(lags[-1])
    if lags.size <= DIRECT_MAX_LAGS or key is None:
        # only template pixels j = i + l that some object pixel reaches: [lo, n - 1 + hi]
        j0, j1 = max(lo, 0), min(n - 1 + hi, nt - 1)
        if j1 < j0:
            return np.zeros((lags.size, rows.shape[0]))
        # opad[q] = obj[q + j0 - hi]; the window for lag l starts at q = hi - l
        width = j1 - j0 + 1
        opad = np.zeros(width + hi - lo)
        q = np.arange(opad.size)
        i = q + j0 - hi
        ok = (i >= 0) & (i < n)
        opad[ok] = obj[i[ok]]
        win = np.lib.stride_tricks.sliding_window_view(opad, width)[hi - lags]
        return win @ rows[:, j0 : j1 + 1].T
    m = sfft.next_fast_len(n + nt, real=True)
    ck = (key, m)
    if key is None:
        ft = sfft.rfft(rows, m, axis=1)
    else:
        if ck not in cache:
            cache[ck] = sfft.rfft(rows, m, axis=1)
        ft = cache[ck]
    fo = np.conj(sfft.rfft(obj, m))
    corr = sfft.irfft(ft * fo[None, :], m, axis=1)
    return corr[:, np.mod(lags, m)].T


@dataclass
class ScanCurve:
    """chi2/dof of one fitted unit (a template set, or one star template) at every lag.

    Attributes:
        kind: template kind ('GALAXY', 'QSO', 'STAR', 'CV').
        name: SUBCLASS of a star template, else the kind.
        z: ``(nlag,)`` trial redshifts.
        rchi2: ``(nlag,)`` chi2/dof (inf where ``dof <= MINDOF``).
        dof: ``(nlag,)`` degrees of freedom.
        theta: ``(nlag, K)`` fitted coefficients.
    """

    kind: str
    name: str
    z: np.ndarray
    rchi2: np.ndarray
    dof: np.ndarray
    theta: np.ndarray


def _solve(A: np.ndarray, b: np.ndarray, s: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched least squares: ``theta = A^-1 b``, ``chi2 = s - b . theta``.

    ``A`` is scaled to unit diagonal (columns that vanish over the overlap get
    coefficient 0) and solved with a 1e-12 ridge. Lags where ``valid`` (broadcast over
    ``A``'s batch axes) is False -- too few pixels for the fit, so their chi2/dof is
    discarded anyway -- are not solved (theta 0, chi2 = s): a fit to fewer pixels than
    parameters is a singular system (a spectrum with one good pixel raised LinAlgError).
    Should LAPACK still find a singular system, the pseudo-inverse solves it.
    """
    k = A.shape[-1]
    if valid is not None:
        A = np.where(valid[..., None, None], A, np.eye(k))
        b = np.where(valid[..., None], b, 0.0)
    d = np.sqrt(np.einsum("...kk->...k", A))
    zero = d <= 0
    d = np.where(zero, 1.0, d)
    As = A / (d[..., :, None] * d[..., None, :])
    eye = np.eye(k)
    As = np.where(zero[..., :, None] | zero[..., None, :], 0.0, As) + eye * (1e-12 + zero[..., None, :] * 1.0)
    bs = np.where(zero, 0.0, b / d)
    try:
        ts = np.linalg.solve(As, bs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        ts = (np.linalg.pinv(As) @ bs[..., None])[..., 0]
    chi2 = s - np.einsum("...k,...k->...", bs, ts)
    return ts / d, chi2


def _lags(obj: ObjectSpectrum, ts: TemplateSet) -> tuple[np.ndarray, np.ndarray]:
    """Integer lags ``l = j - i`` to scan and their redshifts (zfind's pmin/pmax)."""
    poffset = (obj.loglam0 - ts.loglam0) / DLOGLAM
    pix = int(round(poffset))
    pmin = int(np.floor(np.log10(1 + ts.zmin) / DLOGLAM))
    pmax = int(np.ceil(np.log10(1 + ts.zmax) / DLOGLAM))
    lags = np.arange(pix - pmax, pix - pmin + 1)
    lags = lags[(lags > -obj.npix) & (lags < ts.npix)]
    z = 10 ** (DLOGLAM * (poffset - lags)) - 1
    return lags, z


def scan(obj: ObjectSpectrum, ts: TemplateSet, members: np.ndarray | None = None, lag_step: int = 1) -> list[ScanCurve]:
    """chi2/dof curves of a template set over its redshift range.

    Args:
        obj: prepared spectrum (:func:`prepare`).
        ts: template set.
        members: for STAR sets, the template indices to fit (default all).
        lag_step: fit every ``lag_step``-th lag only (a coarse pass).

    Returns:
        One :class:`ScanCurve` (GALAXY, QSO, CV) or one per fitted star template (STAR), in
        template order; empty if the spectrum and templates never overlap.
    """
    lags, z = _lags(obj, ts)
    if lag_step > 1 and lags.size:
        sel = np.arange(lags.size)
        sel = sel[(sel - lags.size // 2) % lag_step == 0]
        lags, z = lags[sel], z[sel]
    if lags.size == 0:
        return []
    w = obj.ivar
    wf = w * obj.flux
    wf2 = wf * obj.flux
    m = (w > 0).astype(np.float64)
    ones = np.ones((1, ts.npix))
    cache = ts._cache
    poly = ts.poly()
    S = _correlate(wf2, ones, lags, cache, "ones")[:, 0]
    n = np.rint(_correlate(m, ones, lags, cache, "ones")[:, 0])
    if not ts.separate:
        basis = np.vstack([ts.eigen, poly])
        k = basis.shape[0]
        iu = np.triu_indices(k)
        if "prod" not in cache:
            cache["prod"] = basis[iu[0]] * basis[iu[1]]
            cache["basis"] = basis
        Aw = _correlate(w, cache["prod"], lags, cache, "prod")
        bw = _correlate(wf, cache["basis"], lags, cache, "basis")
        A = np.empty((lags.size, k, k))
        A[:, iu[0], iu[1]] = Aw
        A[:, iu[1], iu[0]] = Aw
        dof = n - k
        theta, chi2 = _solve(A, bw, S, valid=dof > MINDOF)
        return [_curve(ts.kind, ts.kind, z, chi2, dof, theta)]
    # STAR: each template with the shared polynomial columns
    p = ts.npoly
    k = 1 + p
    nall = ts.eigen.shape[0]
    if "star_rows" not in cache:
        e = ts.eigen
        pi = np.triu_indices(p)
        cache["star_rows"] = np.vstack([e * e, (e[:, None, :] * poly[None, :, :]).reshape(nall * p, -1), poly[pi[0]] * poly[pi[1]]])
        cache["star_b"] = np.vstack([e, poly])
    idx = np.arange(nall) if members is None else np.asarray(members, dtype=np.int64)
    ns = idx.size
    if members is None:
        rows_w, rows_b = cache["star_rows"], cache["star_b"]
    else:
        ep = (nall + idx[:, None] * p + np.arange(p)[None, :]).ravel()
        pp = np.arange(nall + nall * p, cache["star_rows"].shape[0])
        rows_w = cache["star_rows"][np.concatenate([idx, ep, pp])]
        rows_b = cache["star_b"][np.concatenate([idx, np.arange(nall, nall + p)])]
    Cw = _correlate(w, rows_w, lags, cache, "star_rows" if members is None else None)
    Cb = _correlate(wf, rows_b, lags, cache, "star_b" if members is None else None)
    nl = lags.size
    A = np.empty((ns, nl, k, k))
    A[:, :, 0, 0] = Cw[:, :ns].T
    ep = Cw[:, ns : ns + ns * p].reshape(nl, ns, p).transpose(1, 0, 2)
    A[:, :, 0, 1:] = ep
    A[:, :, 1:, 0] = ep
    pi = np.triu_indices(p)
    pp = Cw[:, ns + ns * p :]
    PP = np.empty((nl, p, p))
    PP[:, pi[0], pi[1]] = pp
    PP[:, pi[1], pi[0]] = pp
    A[:, :, 1:, 1:] = PP[None]
    b = np.empty((ns, nl, k))
    b[:, :, 0] = Cb[:, :ns].T
    b[:, :, 1:] = Cb[:, ns:][None]
    dof = n - k
    theta, chi2 = _solve(A, b, S[None, :], valid=(dof > MINDOF)[None, :])
    return [_curve("STAR", ts.names[j], z, chi2[s], dof, theta[s]) for s, j in enumerate(idx)]


def _curve(kind: str, name: str, z: np.ndarray, chi2: np.ndarray, dof: np.ndarray, theta: np.ndarray) -> ScanCurve:
    ok = dof > MINDOF
    rchi2 = np.where(ok, chi2 / np.where(ok, dof, 1), np.inf)
    return ScanCurve(kind=kind, name=name, z=z, rchi2=rchi2, dof=dof, theta=theta)


@dataclass(frozen=True)
class Minimum:
    """One chi2/dof minimum of a :class:`ScanCurve` (one row of spZall).

    Attributes:
        kind, name: as in the curve ('STAR' minima carry the template's SUBCLASS).
        z: redshift at the parabola's minimum.
        z_err: 1-sigma from the parabola's curvature (0 when not fitted).
        rchi2: chi2/dof at the minimum.
        dof: degrees of freedom at the nearest lag.
        index: nearest lag index in the curve.
    """

    kind: str
    name: str
    z: float
    z_err: float
    rchi2: float
    dof: float
    index: int


def _peak_estimates(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Starting values ``[depth, centre, sigma, baseline]`` for a negative Gaussian through
    ``(x, y)``: the baseline is the curve's mean height (trapezoid area / x range), the centre
    its lowest point, the width the area below the baseline over twice the depth (the
    estimator of Markwardt's ``mpfitpeak``, which idlspec2d's ``find_nminima`` calls)."""
    dx = 0.5 * np.concatenate([[x[1] - x[0]], x[2:] - x[:-2], [x[-1] - x[-2]]])
    area = float(np.sum(dx * y))
    av = area / float(x[-1] - x[0])
    i = int(np.argmin(y))
    peak = float(y[i]) - av
    below = area - float(np.sum(dx * np.minimum(y, av)))
    if peak == 0:
        peak = 0.5 * below
    sigma = below / (2 * abs(peak)) if peak != 0 else 0.0
    if not np.isfinite(sigma) or sigma == 0:
        sigma = float(np.median(dx))
    return np.array([peak, float(x[i]), sigma, av])


def _gaussian_minimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """idlspec2d ``zfitmin``: a Gaussian plus constant fitted (unweighted, Levenberg-Marquardt)
    to chi2 values ``y`` at lag offsets ``x`` (the lowest point at ``x = 0``).

    Returns:
        ``(x_best, y_best, x_err)`` -- the Gaussian's centre, its value there (constant +
        depth) and the error of the centre -- or None where the pipeline flags the fit
        (depth above -1 in chi2, i.e. no minimum; centre outside the points), in which case
        it keeps the lowest point.
    """
    from scipy.optimize import least_squares

    def resid(p: np.ndarray) -> np.ndarray:
        return p[3] + p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) - y

    def jac(p: np.ndarray) -> np.ndarray:
        u = (x - p[1]) / p[2]
        e = np.exp(-0.5 * u * u)
        return np.stack([e, p[0] * e * u / p[2], p[0] * e * u * u / p[2], np.ones_like(x)], axis=1)

    p0 = _peak_estimates(x, y)
    try:
        # MPFIT's tolerances; like MPFIT at its iteration limit, a fit still running after
        # MAX_PEAK_EVALS evaluations keeps its current parameters (a narrow dip between
        # two lags deepens without end: its value is wherever the iterations stop)
        fit = least_squares(resid, p0, jac=jac, method="lm", xtol=1e-10, ftol=1e-10, gtol=1e-10,
                            max_nfev=MAX_PEAK_EVALS)
    except (ValueError, np.linalg.LinAlgError):
        return None
    p = fit.x
    if fit.status < 0 or not np.all(np.isfinite(p)) or p[0] >= -1.0 or not (x[0] <= p[1] <= x[-1]):
        return None
    # error of the centre: formal (rescaled by the rms residual) and where chi2 rises by 1
    xerr2 = abs(p[2]) * np.sqrt(2.0 * np.log(p[0] / (p[0] + 1.0)))
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac)
        yerr = np.sqrt(np.sum(fit.fun**2) / max(x.size - 4, 1))
        xerr1 = np.sqrt(max(cov[1, 1], 0.0)) * yerr
    except np.linalg.LinAlgError:
        xerr1 = 0.0
    return float(p[1]), float(p[3] + p[0]), float(np.hypot(xerr1, xerr2))


def find_minima(curve: ScanCurve, nfind: int, width: int, fit_width: int | None = None) -> list[Minimum]:
    """The ``nfind`` lowest local minima of a curve, at least ``width`` lags apart.

    idlspec2d's ``find_nminima``/``zfitmin`` as ``zrefind`` applies them: take the lowest
    valid point, fit a Gaussian plus constant to chi2 over the points within ``fit_width``
    lags of it (:func:`_gaussian_minimum`; three points get a parabola), report the fitted
    centre (sub-pixel redshift) and the fitted value there as the minimum's chi2/dof --
    or the lowest point itself when the pipeline would flag the fit -- exclude ``width``
    lags on each side, repeat.

    The fitted value is what decides CLASS: it lies above the lowest point for a sharp
    minimum (a bright quasar's emission lines) and can lie below it for a noisy, flat one,
    exactly as in the pipeline's own chi2/dof (measured on the BOSS spectra in ../shared:
    spec-7338-56664-0695 QSO 1.48261 here, RCHI2 1.4826112 in the file; the lowest lag is 1.4625).

    Args:
        curve: one :class:`ScanCurve`.
        nfind: minima to return.
        width: exclusion half-width in lags around each minimum.
        fit_width: half-width of the fitted points (default ``width // 2``;
            :class:`~specclass.spectro1d.templates.TemplateSet` ``fit_width``).

    Returns:
        Up to ``nfind`` :class:`Minimum`, lowest first (by the lowest point).
    """
    r = curve.rchi2.copy()
    out: list[Minimum] = []
    half = max(width // 2, 1) if fit_width is None else max(int(fit_width), 1)
    nl = r.size
    lagidx = np.arange(nl)
    for _ in range(nfind):
        if not np.isfinite(r).any():
            break
        i = int(np.argmin(r))
        lo, hi = max(0, i - half), min(nl, i + half + 1)
        ok = np.isfinite(curve.rchi2[lo:hi])
        x = (np.arange(lo, hi) - i)[ok].astype(np.float64)
        dof = curve.dof[lo:hi][ok]
        zi, rmin, zerr = float(curve.z[i]), float(curve.rchi2[i]), 0.0
        if x.size >= 3 and x[0] < 0 < x[-1]:
            meandof = float(dof.mean())
            y = curve.rchi2[lo:hi][ok] * meandof
            if x.size == 3:
                c2, c1, c0 = np.polyfit(x, y, 2)
                res = (-c1 / (2 * c2), c0 - c1 * c1 / (4 * c2), 1.0 / np.sqrt(c2)) if c2 > 0 else None
            else:
                res = _gaussian_minimum(x, y)
            if res is not None:
                xm, ybest, xerr = res
                rmin = ybest / meandof
                # z varies smoothly with lag: interpolate it at the fractional lag
                zi = float(np.interp(i + xm, lagidx, curve.z))
                zerr = float(abs(np.interp(i + xm + xerr, lagidx, curve.z) - zi))
        out.append(Minimum(curve.kind, curve.name, zi, zerr, rmin, float(curve.dof[i]), i))
        r[max(0, i - width) : min(nl, i + width + 1)] = np.inf
    return out
