"""The CLASS decision of the SDSS pipeline: the lowest reduced chi2 over all template fits.

idlspec2d ``spreduce1d.pro`` (v5): every spectrum gets 5 GALAXY and 5 QSO minima, one
minimum per stellar template and one for the CV-star set; all are sorted by chi2/dof
(fits without degrees of freedom last); the best is the CLASS, Z and (for stars) the
SUBCLASS. ``RCHI2DIFF`` is the chi2/dof of the next solution more than 1000 km/s away
minus the best one; when it is below 0.01 (or below 0.01 x the best chi2/dof) the pipeline
sets ZWARNING bit 2, SMALL_DELTA_CHI2 (versions before v5 called such spectra UNKNOWN).
ZWARNING bit 1, LITTLE_COVERAGE, is set when fewer than 0.18 dex of pixels have data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specclass.spectro1d.templates import DLOGLAM, load_template_sets, template_generation
from specclass.spectro1d.zscan import Minimum, ObjectSpectrum, find_minima, scan

#: Minimum velocity between the best solution and the one it is compared with (km/s).
MIN_VDIFF_KMS = 1000.0
C_KMS = 2.99792458e5
#: RCHI2DIFF threshold of SMALL_DELTA_CHI2 / UNKNOWN (spreduce1d ``minrchi2diff``).
MIN_RCHI2DIFF = 0.01
#: WCOVERAGE (dex of pixels with data) below which LITTLE_COVERAGE is set.
MIN_WCOVERAGE = 0.18

LITTLE_COVERAGE = 1 << 1
SMALL_DELTA_CHI2 = 1 << 2


@dataclass
class Spectro1dResult:
    """What the emulated pipeline says about one spectrum (an spZbest row, emulated).

    Attributes:
        class_: 'GALAXY', 'QSO' or 'STAR' (best solution; 'GALAXY' when nothing could be
            fitted, as in the pipeline, with ``fitted`` False).
        subclass: star template name for stars; for GALAXY/QSO the emission-line
            subclass ('AGN', 'STARFORMING', 'STARBURST', each possibly followed by
            'BROADLINE', or 'BROADLINE' alone, or '') when lines were fitted.
        z: redshift of the best solution.
        z_err: its 1-sigma error.
        rchi2: chi2/dof of the best solution.
        rchi2diff: chi2/dof difference to the next solution > 1000 km/s away (NaN if none).
        zwarning: emulated ZWARNING bits (LITTLE_COVERAGE, SMALL_DELTA_CHI2).
        unknown: True when ``rchi2diff < 0.01``: the pre-v5 pipeline's CLASS 'UNKNOWN'.
        rchi2_class: best chi2/dof per class {'GALAXY', 'QSO', 'STAR'} (inf if none).
        z_class: redshift of each class's best solution.
        generation: template generation used ('sdss' or 'boss').
        lines: emission-line measurements at the best redshift (:mod:`.lines`), or None.
        solutions: every minimum, sorted (spZall rows).
        fitted: False when no trial redshift of any template left more than 10 degrees of
            freedom (e.g. a fully masked spectrum); the result is then the pipeline's answer
            for such a fiber -- GALAXY, z = 0, RCHI2DIFF 0, ``unknown`` -- and means "no data".
    """

    class_: str
    subclass: str
    z: float
    z_err: float
    rchi2: float
    rchi2diff: float
    zwarning: int
    unknown: bool
    rchi2_class: dict[str, float]
    z_class: dict[str, float]
    generation: str
    lines: dict | None = None
    solutions: list[Minimum] = field(default_factory=list, repr=False)
    fitted: bool = True


#: Star sets with more templates than this are first fitted on every ``STAR_COARSE_STEP``-th
#: lag; only the ``STAR_KEEP`` best templates then get the full scan (the 123 BOSS templates
#: would otherwise cost 5x the rest of the decision). Only the best star matters for CLASS
#: and RCHI2DIFF: all star solutions lie within 1000 km/s of one another.
STAR_KEEP = 12
STAR_COARSE_STEP = 6


def solutions(obj: ObjectSpectrum, generation: str, kinds: tuple[str, ...] | None = None) -> list[Minimum]:
    """Every minimum of every template fit (or of the sets of ``kinds`` only, e.g. ``("STAR", "CV")``),
    sorted the pipeline's way (best first)."""
    out: list[Minimum] = []
    for ts in load_template_sets(generation):
        if kinds is not None and ts.kind not in kinds:
            continue
        curves = None
        if ts.separate and ts.eigen.shape[0] > STAR_KEEP:
            coarse = scan(obj, ts, lag_step=STAR_COARSE_STEP)
            if coarse:
                best = np.array([np.min(c.rchi2) for c in coarse])
                keep = np.sort(np.argsort(best, kind="stable")[:STAR_KEEP])
                curves = scan(obj, ts, members=keep)
        for curve in (curves if curves is not None else scan(obj, ts)):
            out.extend(find_minima(curve, ts.nfind, ts.width, ts.fit_width))
    bad = [m for m in out if not np.isfinite(m.rchi2)]
    good = sorted((m for m in out if np.isfinite(m.rchi2)), key=lambda m: m.rchi2)
    return good + bad


def clear_margin(diff: float, rchi2: float, margin: float = MIN_RCHI2DIFF) -> bool:
    """True when chi2/dof difference ``diff`` to the next solution is at least ``margin`` and at
    least ``margin * rchi2``: the pipeline's test for *not* setting SMALL_DELTA_CHI2 (spreduce1d.pro
    ``minrchi2diff``); False when ``diff`` is NaN."""
    return bool(np.isfinite(diff)) and diff >= margin and diff >= margin * rchi2


def rchi2diff(sols: list[Minimum]) -> float:
    """chi2/dof of the next solution more than 1000 km/s from the best, minus the best's."""
    if not sols or not np.isfinite(sols[0].rchi2):
        return float("nan")
    dz = MIN_VDIFF_KMS / C_KMS
    for m in sols[1:]:
        if np.isfinite(m.rchi2) and abs(m.z - sols[0].z) > dz:
            return float(m.rchi2 - sols[0].rchi2)
    return float("nan")


def decide(obj: ObjectSpectrum, generation: str | None = None, run2d: str = "") -> Spectro1dResult:
    """CLASS, Z, RCHI2DIFF and ZWARNING of one prepared spectrum (no line fits).

    Args:
        obj: :func:`specclass.spectro1d.zscan.prepare` output.
        generation: 'sdss' or 'boss'; None picks it from ``run2d`` and the wavelength range
            (:func:`~specclass.spectro1d.templates.template_generation`).
        run2d: the reduction's RUN2D, when known.

    Returns:
        :class:`Spectro1dResult` with ``subclass`` the star template name for stars and ''
        otherwise (:func:`specclass.spectro1d.classify_spectrum` adds the line subclass).
    """
    gen = generation or template_generation(run2d, float(obj.loglam[-1]))
    sols = solutions(obj, gen)
    per_class = {"GALAXY": np.inf, "QSO": np.inf, "STAR": np.inf}
    z_class = {"GALAXY": np.nan, "QSO": np.nan, "STAR": np.nan}
    for m in sols:
        c = "STAR" if m.kind in ("STAR", "CV") else m.kind
        if m.rchi2 < per_class[c]:
            per_class[c], z_class[c] = m.rchi2, m.z
    wcoverage = float((obj.ivar > 0).sum() * DLOGLAM)
    zw = LITTLE_COVERAGE if wcoverage < MIN_WCOVERAGE else 0
    if not sols or not np.isfinite(sols[0].rchi2):
        # What spreduce1d writes for a fiber without usable pixels: every fit keeps its
        # initial chi2 = dof = z = 0, the sort leaves them in fitting order (GALAXY first),
        # no solution has dof > 0 to compare with (RCHI2DIFF 0, SMALL_DELTA_CHI2). SDSS's
        # fully masked spec-0269-51581-0003 reads CLASS GALAXY, Z 0, ZWARNING 6.
        return Spectro1dResult("GALAXY", "", 0.0, 0.0, 0.0, 0.0, zw | SMALL_DELTA_CHI2, True,
                               per_class, z_class, gen, None, sols, fitted=False)
    best = sols[0]
    diff = rchi2diff(sols)
    if not clear_margin(diff, best.rchi2):
        zw |= SMALL_DELTA_CHI2
    cls = "STAR" if best.kind in ("STAR", "CV") else best.kind
    sub = ("CV" if best.kind == "CV" else best.name) if cls == "STAR" else ""
    return Spectro1dResult(
        class_=cls, subclass=sub, z=best.z, z_err=best.z_err, rchi2=best.rchi2, rchi2diff=diff,
        zwarning=zw, unknown=bool(np.isfinite(diff) and diff < MIN_RCHI2DIFF) or not np.isfinite(diff),
        rchi2_class=per_class, z_class=z_class, generation=gen, lines=None, solutions=sols,
    )
