"""Emission-line fits at the best redshift and the pipeline's SUBCLASS rules for GALAXY/QSO.

Follows idlspec2d ``speclinefit.pro`` / ``linebackfit.pro`` with the line list
``etc/emlines.par``: all lines (Lyα is not fitted) share one velocity offset
(``zindex``), [OIII] 4959 is tied to 1/3 of [OIII] 5007 (``findex``), every other line has
a free area. Widths follow the line list of the reduction (:data:`WIDTH_GROUPS`): the
earlier ``emlines.par`` ties every width together (``windex`` 'wemission'), the later one
gives the Balmer lines (Hε, Hδ, Hβ, Hα) a width of their own (``w_balmer``) beside the
shared one. Measured on the real SDSS FITS spectra in ../shared
(``benchmarks/spectro1d_agreement.py``), one shared width reproduces the SUBCLASS of the
SDSS-I/II reductions (RUN2D 26) and the Balmer group that of the BOSS ones (v5_*), e.g.
the 'AGN' galaxies spec-1655-53523-0204 and spec-2101-53858-0049 (broad Balmer wings, no
BROADLINE) and the 'STARBURST BROADLINE' quasars of BOSS. The background under the lines is

* GALAXY: a stellar continuum with free amplitude (the pipeline uses its ELODIE
  velocity-dispersion fit; here the line-free BOSS galaxy eigenspectra
  ``spEigenGal-56436``, :func:`specclass.simulate.templates.load_templates`), fitted
  over the whole spectrum together with the lines; the continuum level for equivalent
  widths is the background 300-600 km/s either side of the line;
* QSO: one linear term per 0.030 dex window around each line (0.005 dex for other
  classes), fitted only in those windows; the continuum level is the background at the
  line centre.

SUBCLASS (spreduce1d.pro): when [OIII] 5007, Hβ, Hα and [NII] 6583 are all detected at
> 3 sigma, 'AGN' if ``[OIII]/Hβ x ([NII]/Hα)^1.2 > 10^0.22`` (i.e. log([OIII]/Hβ) >
0.7 - 1.2 (log([NII]/Hα) + 0.4), Kauffmann et al. 2003 style straight line), else
'STARFORMING', upgraded to 'STARBURST' when EW(Hα) > 50 Å at > 3 sigma; ' BROADLINE' is
appended when any line but Lyα is detected at > 10 sigma with sigma - 5 sigma_err >
200 km/s. Areas are in 1e-17 erg/s/cm², equivalent widths in observed-frame Å, sigmas in
km/s (observed, instrumental broadening included, as the pipeline's LINESIGMA).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize

C_KMS = 2.99792458e5

#: Vacuum rest wavelengths (Å) of the pipeline's line list (emlines.par gives air
#: wavelengths above 2000 Å; converted to vacuum with the IAU formula of Morton 1991,
#: ApJS 77, 119, as idlutils ``airtovac`` does).
LINES: dict[str, float] = {
    "C_IV 1549": 1549.48,
    "He_II 1640": 1640.42,
    "C_III] 1908": 1908.734,
    "Mg_II 2799": 2800.315,
    "[O_II] 3725": 3727.09,
    "[O_II] 3727": 3729.88,
    "H_delta": 4102.89,
    "H_gamma": 4341.68,
    "[O_III] 4363": 4364.44,
    "H_beta": 4862.68,
    "[O_III] 4959": 4960.30,
    "[O_III] 5007": 5008.24,
    "[O_I] 6300": 6302.05,
    "[O_I] 6363": 6365.54,
    "[N_II] 6548": 6549.86,
    "H_alpha": 6564.61,
    "[N_II] 6583": 6585.27,
    "[S_II] 6716": 6718.29,
    "[S_II] 6730": 6732.67,
}
BPT = ("[O_III] 5007", "H_beta", "H_alpha", "[N_II] 6583")
#: Lines sharing the "broad" width (Balmer and the permitted quasar lines); the forbidden
#: lines share the other width. The v5 pipeline's SUBCLASS values ('STARBURST BROADLINE'
#: QSOs: broad Hα, narrow [NII]) need the Balmer width free of the forbidden lines'.
WIDTH_GROUPS: dict[str, frozenset[str]] = {
    # SDSS-I/II reductions: every line in 'wemission'
    "sdss": frozenset(),
    # BOSS/eBOSS reductions: 'w_balmer' (Hε is not in LINES; Hγ stays in 'wemission', as in the file)
    "boss": frozenset({"H_delta", "H_beta", "H_alpha"}),
}
#: Thresholds of spreduce1d.pro.
BPT_NSIGMA = 3.0
STARBURST_EW = 50.0
BROAD_NSIGMA = 10.0
BROAD_SIGMA_KMS = 200.0
#: Initial widths (speclinefit: 0.003 dex for QSOs, 1.5e-4 dex otherwise) in km/s.
SIGMA_GUESS_KMS = {"QSO": 2070.0, "GALAXY": 104.0}
#: Background window widths (dex) around lines without a model background.
FLAT_WIDTH = {"QSO": 0.030, "GALAXY": 0.005}
#: Velocity range searched around the template redshift (km/s).
DV_MAX_KMS = 1000.0


@dataclass
class LineFit:
    """Joint Gaussian fit of the lines at one redshift.

    Attributes:
        area, area_err: ``{line: value}`` in 1e-17 erg/s/cm² (err -1 when unconstrained).
        ew, ew_err: equivalent widths, observed Å.
        sigma, sigma_err: ``{line: value}`` Gaussian sigma of each line's width group and
            its error, km/s (err -1 when unconstrained).
        dv: shared velocity offset from the template redshift, km/s.
        dof: pixels fitted minus parameters.
    """

    area: dict[str, float]
    area_err: dict[str, float]
    ew: dict[str, float]
    ew_err: dict[str, float]
    sigma: dict[str, float]
    sigma_err: dict[str, float]
    dv: float
    dof: int


@lru_cache(maxsize=1)
def _galaxy_continuum() -> tuple[np.ndarray, np.ndarray]:
    from specclass.simulate.templates import load_templates

    t = load_templates("GALAXY", strip_lines=True)
    return np.asarray(t.loglam, np.float64), np.asarray(t.flux, np.float64)


def fit_lines(loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: float, class_: str,
              generation: str = "sdss") -> LineFit | None:
    """Fit the line list at redshift ``z`` for a GALAXY or QSO.

    Args:
        loglam, flux, ivar: ``(N,)`` spectrum (log10 vacuum Å, 1e-17 erg/s/cm²/Å, ivar
            after the pipeline masks).
        z: template redshift.
        class_: 'GALAXY' or 'QSO' (chooses background and initial width).
        generation: 'sdss' or 'boss': the reduction's line list (:data:`WIDTH_GROUPS`).

    Raises:
        ValueError: unknown ``generation``.

    Returns:
        :class:`LineFit`, or None when no line of the list falls on good pixels.
    """
    if generation not in WIDTH_GROUPS:
        raise ValueError(f"generation must be one of {sorted(WIDTH_GROUPS)}, got {generation!r}")
    group = WIDTH_GROUPS[generation]
    lam = 10 ** np.asarray(loglam, np.float64)
    good = ivar > 0
    lo_obs, hi_obs = lam[good].min() if good.any() else 0, lam[good].max() if good.any() else 0
    names = [n for n, w in LINES.items() if lo_obs * 1.002 < w * (1 + z) < hi_obs / 1.002]
    if not names:
        return None
    kind = "QSO" if class_ == "QSO" else "GALAXY"
    # ---- background columns and the pixels fitted
    bg_cols: list[np.ndarray] = []
    if kind == "GALAXY":
        # the stellar continuum: line-free eigenspectra + a quadratic, fitted with the line
        # windows masked, then used as one background column with a free amplitude (as the
        # pipeline's dispflux)
        tl, tf = _galaxy_continuum()
        rest = np.log10(lam / (1 + z))
        inside = (rest >= tl[0]) & (rest <= tl[-1])
        cols = [np.interp(rest, tl, row) * inside for row in tf]
        xq = np.linspace(-1, 1, lam.size)
        cols += [inside * xq, inside * xq**2]
        near = np.zeros(lam.size, bool)
        for n in names:
            near |= np.abs(lam / (LINES[n] * (1 + z)) - 1) * C_KMS < 800.0
        use = inside & good & ~near
        if use.sum() > 20:
            Xc = np.array(cols).T
            wc = np.sqrt(ivar[use])
            cc, *_ = np.linalg.lstsq(Xc[use] * wc[:, None], flux[use] * wc, rcond=None)
            bg_cols.append(Xc @ cc)
        else:
            inside[:] = False
        # fit the pixels within 3000 km/s of a line on the continuum
        fitmask = inside & good & np.zeros(lam.size, bool)
        for n in names:
            fitmask |= inside & good & (np.abs(lam / (LINES[n] * (1 + z)) - 1) * C_KMS < 3000.0)
    else:
        fitmask = np.zeros(lam.size, bool)
    half = FLAT_WIDTH[kind] / 2
    covered = fitmask.copy() if kind == "GALAXY" else None
    win = np.zeros(lam.size, bool)
    for n in names:
        c = np.log10(LINES[n] * (1 + z))
        w = (loglam > c - half) & (loglam < c + half)
        if kind == "QSO" or not covered[w].any():
            win |= w
    if win.any():
        edges = np.flatnonzero(np.diff(np.concatenate([[0], win.astype(int), [0]])))
        x = (lam - lam.mean()) / lam.mean()
        for a, b in zip(edges[::2], edges[1::2]):
            for p in (np.ones_like(lam), x):
                col = np.zeros_like(lam)
                col[a:b] = p[a:b]
                bg_cols.append(col)
        fitmask |= win & good
    if fitmask.sum() < 10:
        return None
    sel = np.flatnonzero(fitmask)
    lam_s, f_s, sw = lam[sel], flux[sel], np.sqrt(ivar[sel])
    B = np.array([c[sel] for c in bg_cols]).T if bg_cols else np.zeros((sel.size, 0))
    centers0 = np.array([LINES[n] * (1 + z) for n in names])
    broad = np.array([n in group for n in names])
    two = bool(broad.any() and not broad.all())  # else one shared width (s_b == s_f)
    tie = {names.index("[O_III] 4959"): names.index("[O_III] 5007")} if "[O_III] 4959" in names and "[O_III] 5007" in names else {}
    free = [i for i in range(len(names)) if i not in tie]
    y = f_s * sw
    Bw = B * sw[:, None]

    def design(dv: float, s_b: float, s_f: float) -> np.ndarray:
        c = centers0 * (1 + dv / C_KMS)
        s = c * np.where(broad, s_b, s_f)[:] / C_KMS
        g = np.exp(-0.5 * ((lam_s[None, :] - c[:, None]) / s[:, None]) ** 2) / (np.sqrt(2 * np.pi) * s[:, None])
        for i, j in tie.items():
            g[j] = g[j] + g[i] / 3.0
        return g[free].T

    def solve(dv: float, s_b: float, s_f: float) -> tuple[np.ndarray, float, np.ndarray]:
        X = np.hstack([design(dv, s_b, s_f) * sw[:, None], Bw])
        # normal equations, scaled to unit diagonal, with a tiny ridge (columns never vanish:
        # every line and window has pixels by construction, but may be degenerate)
        xtx = X.T @ X
        d = np.sqrt(np.clip(np.diag(xtx), 1e-300, None))
        a = xtx / np.outer(d, d) + 1e-10 * np.eye(d.size)
        coef = np.linalg.solve(a, (X.T @ y) / d) / d
        r = y - X @ coef
        return coef, float(r @ r), X

    # coarse search of the two widths on a log grid, then a local refinement of
    # (dv, log sigma_broad, log sigma_narrow)
    top = 8000.0 if kind == "QSO" else 3000.0
    grid = np.geomspace(50.0, top, 9)
    narrow_grid = np.geomspace(50.0, 800.0, 5)
    best = (np.inf, 0.0, 0.0)
    for sb in grid:
        for sf in (narrow_grid if two else (sb,)):
            c2 = solve(0.0, sb, sf)[1]
            if c2 < best[0]:
                best = (c2, sb, sf)
    log_bounds = (np.log(20.0), np.log(20000.0))
    if two:
        res = optimize.minimize(
            lambda p: solve(p[0] * 100.0, float(np.exp(p[1])), float(np.exp(p[2])))[1],
            x0=[0.0, np.log(best[1]), np.log(best[2])], method="Nelder-Mead",
            bounds=[(-DV_MAX_KMS / 100.0, DV_MAX_KMS / 100.0), log_bounds, log_bounds],
            options={"xatol": 5e-3, "fatol": 1e-2, "maxiter": 80},
        )
        log_sb, log_sf = res.x[1], res.x[2]
    else:
        res = optimize.minimize(
            lambda p: solve(p[0] * 100.0, float(np.exp(p[1])), float(np.exp(p[1])))[1],
            x0=[0.0, np.log(best[1])], method="Nelder-Mead",
            bounds=[(-DV_MAX_KMS / 100.0, DV_MAX_KMS / 100.0), log_bounds],
            options={"xatol": 5e-3, "fatol": 1e-2, "maxiter": 80},
        )
        log_sb = log_sf = res.x[1]
    dv = float(np.clip(res.x[0] * 100.0, -DV_MAX_KMS, DV_MAX_KMS))
    s_b = float(np.clip(np.exp(log_sb), 20.0, 20000.0))
    s_f = float(np.clip(np.exp(log_sf), 20.0, 20000.0))
    coef, chi2, X = solve(dv, s_b, s_f)
    # covariance of all parameters from the Jacobian (linear columns + numeric dv, sigmas)
    nfree = len(free)
    m0 = design(dv, s_b, s_f) @ coef[:nfree]
    d_dv = design(dv + 1.0, s_b, s_f) @ coef[:nfree] - m0
    if two:
        d_sb = (design(dv, s_b * 1.001, s_f) @ coef[:nfree] - m0) / (s_b * 1e-3)
        d_sf = (design(dv, s_b, s_f * 1.001) @ coef[:nfree] - m0) / (s_f * 1e-3)
        d_s = [d_sb, d_sf]
    else:
        d_s = [(design(dv, s_f * 1.001, s_f * 1.001) @ coef[:nfree] - m0) / (s_f * 1e-3)]
    J = np.hstack([X, (d_dv * sw)[:, None], *((d * sw)[:, None] for d in d_s)])
    dof = int(sel.size - J.shape[1])
    try:
        cov = np.linalg.pinv(J.T @ J)
    except np.linalg.LinAlgError:
        cov = np.full((J.shape[1], J.shape[1]), np.nan)
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    err_w = [float(e) if np.isfinite(e) and e > 0 else -1.0 for e in err[len(err) - len(d_s):]]
    err_b, err_f = (err_w[0], err_w[-1])
    area, area_err, ew, ew_err = {}, {}, {}, {}
    nb = B.shape[1]
    bg_coef = coef[len(free):]
    full_bg = (np.array(bg_cols).T @ bg_coef) if nb else np.zeros_like(lam)
    for k, n in enumerate(names):
        src = tie.get(k)
        if src is None:
            j = free.index(k)
            a, ae = float(coef[j]), float(err[j])
        else:
            j = free.index(src)
            a, ae = float(coef[j]) / 3.0, float(err[j]) / 3.0
        c = centers0[k] * (1 + dv / C_KMS)
        if kind == "GALAXY":
            v = np.abs(lam - c) / c * C_KMS
            side = (v > 300) & (v < 600)
        else:
            side = np.abs(lam - c) <= lam[np.argmin(np.abs(lam - c))] * 1.5e-4
        cont = float(np.mean(full_bg[side])) if side.any() else 0.0
        area[n], area_err[n] = a, (ae if ae > 0 else -1.0)
        ew[n] = a / cont if cont > 0 else 0.0
        ew_err[n] = ae / cont if cont > 0 and ae > 0 else -1.0
    sigma = {n: (s_b if b else s_f) for n, b in zip(names, broad)}
    sigma_err = {n: (err_b if b else err_f) for n, b in zip(names, broad)}
    return LineFit(area, area_err, ew, ew_err, sigma, sigma_err, dv, dof)


def subclass_from_lines(fit: LineFit | None) -> str:
    """The pipeline's SUBCLASS for a GALAXY/QSO from its line fit ('' when no rule fires)."""
    if fit is None:
        return ""
    a, e = fit.area, fit.area_err
    parts: list[str] = []
    if all(n in a and e[n] > 0 and a[n] > BPT_NSIGMA * e[n] for n in BPT):
        agn = a["[O_III] 5007"] * a["[N_II] 6583"] ** 1.2 > 10**0.22 * a["H_beta"] * a["H_alpha"] ** 1.2
        if agn:
            parts.append("AGN")
        else:
            ew, ee = fit.ew["H_alpha"], fit.ew_err["H_alpha"]
            strong = ew > STARBURST_EW and ee > 0 and ew > BPT_NSIGMA * ee
            parts.append("STARBURST" if strong else "STARFORMING")
    broad = any(
        e[n] > 0 and a[n] > BROAD_NSIGMA * e[n] and fit.sigma_err[n] > 0
        and fit.sigma[n] - 5 * fit.sigma_err[n] > BROAD_SIGMA_KMS
        for n in a
    )
    if broad and fit.dof >= 1:
        parts.append("BROADLINE")
    return " ".join(parts)
