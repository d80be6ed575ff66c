"""The SDSS pipeline's own decisions on top of the network: GALAXY vs QSO by template chi2, AGN by lines.

SDSS labels a spectrum in two steps (idlspec2d ``pro/spec1d/spreduce1d.pro``): CLASS is the
class whose eigenspectra + polynomial fit reaches the lowest chi2/dof over its redshift range
(GALAXY -0.01-1.00, QSO 0.0033-7.00, STAR templates one by one), flagged SMALL_DELTA_CHI2 when
the next solution is worse by less than 0.01 (or 1 % of chi2/dof); SUBCLASS comes afterwards
from Gaussian line fits at that redshift ('AGN' by a BPT line, :mod:`.spectro1d.lines`). The
labels a classifier is scored against are these decisions, and two of them are thresholds on
quantities a network only approximates. :func:`apply_pipeline_rule` therefore lets the network
decide what it is good at -- STAR or not, and a first guess of the family -- and measures the
rest the pipeline's way, for every spectrum whose network family is a galaxy or a QSO:

1. **GALAXY vs QSO (template step, runs with GALAXY and QSO classes)**: the GALAXY and QSO
   eigenspectra are fitted over the pipeline's redshift ranges (:func:`.spectro1d.galaxy.best_fit`,
   the emulator's scan, ~20 ms per spectrum). When one family's best chi2/dof beats the other's by
   at least the pipeline's SMALL_DELTA_CHI2 margin (:data:`MARGIN`, absolute and relative), that
   family takes the probability of both; otherwise the network's split stands. One exception,
   from the pipeline's taxonomy: a spectrum the network calls a galaxy whose lines at the GALAXY
   redshift give exactly the narrow-line SUBCLASS 'AGN' (no BROADLINE) stays a galaxy: SDSS names
   narrow-line AGN GALAXY AGN, and the QSO eigenspectra, which carry narrow lines too, can fit a
   bright nearby Seyfert 2 slightly better (spec-2101-53858-0049, GALAXY AGN at z = 0.0036 in
   SDSS, QSO by 0.7 in chi2/dof in our fit).
2. **AGN vs GALAXY (line step, runs with GALAXY and AGN classes: seed4)**: for a spectrum now in
   the galaxy family (P(GALAXY) + P(AGN) at least every other class's probability), the lines are
   fitted at the best GALAXY redshift and the BPT rule gives the family's probability to AGN or
   GALAXY (:mod:`specclass.line_subclass`).

Measured (``benchmarks/accuracy.py``, 5-fold grouped cross-validation on 266 real SDSS FITS
spectra, out-of-fold, README "Benchmarks"): every network measured gains; the shipped seed4
recipe goes from 0.809 (network) and 0.896 (line step only) to 0.919 balanced accuracy, class3
from 0.925 to 0.941. Spectra not on SDSS's 1e-4 dex pixels keep the network's call (:func:`applies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: The pipeline's SMALL_DELTA_CHI2 threshold (spreduce1d.pro ``minrchi2diff = 0.01``): the template
#: step decides only when the chi2/dof difference is at least this and at least this times chi2/dof.
MARGIN = 0.01


@dataclass(frozen=True)
class PipelineRuleResult:
    """Output of :func:`apply_pipeline_rule`.

    Attributes:
        proba: ``(N, C)`` float32 probabilities after the rule (rows sum to 1).
        template_class: ``(N,)`` str, 'GALAXY' or 'QSO' where the template step found a
            decisive chi2/dof difference, '' elsewhere (not fitted, or within :data:`MARGIN`).
        measured: ``(N,)`` bool, True where the lines were measured (``subclass`` is set).
        subclass: ``(N,)`` str, the measured SDSS SUBCLASS ('' where not measured).
        z: ``(N,)`` float64 best GALAXY-template redshift of the fitted rows (NaN elsewhere).
        rchi2: ``(N, 2)`` float64 best chi2/dof of the GALAXY and QSO fits (NaN where not fitted).
    """

    proba: np.ndarray
    template_class: np.ndarray
    measured: np.ndarray
    subclass: np.ndarray
    z: np.ndarray
    rchi2: np.ndarray


def applies(class_names: Sequence[str], loglam: np.ndarray | None = None) -> bool:
    """True when the run's classes hold GALAXY and QSO or AGN (class3, seed4, ...) and, when ``loglam``
    is given, its grid is on SDSS's uniform 1e-4 dex pixels (the fits need them; a run trained on a
    coarser ``--grid-step`` keeps the network's call)."""
    if "GALAXY" not in class_names or not ({"QSO", "AGN"} & set(class_names)):
        return False
    from specclass.spectro1d.zscan import on_sdss_pixels

    return loglam is None or on_sdss_pixels(loglam)


def enabled(pipeline_rule: bool | None, class_names: Sequence[str], loglam: np.ndarray) -> bool:
    """Whether ``predict``/``evaluate`` apply the rule: ``pipeline_rule`` True (asked for), False
    (refused), or None (the default: when :func:`applies` to the run's classes and grid)."""
    return bool(pipeline_rule) or (pipeline_rule is None and applies(class_names, loglam))


def decisive(rchi2_galaxy: float, rchi2_qso: float, margin: float = MARGIN) -> str:
    """'GALAXY' or 'QSO' when one fit's chi2/dof is lower by at least ``margin`` (absolute and
    relative to the lower one), '' otherwise (either NaN, or the difference the pipeline flags
    SMALL_DELTA_CHI2)."""
    if not (np.isfinite(rchi2_galaxy) and np.isfinite(rchi2_qso)):
        return ""
    d = rchi2_galaxy - rchi2_qso
    if abs(d) < margin or abs(d) < margin * min(rchi2_galaxy, rchi2_qso):
        return ""
    return "QSO" if d > 0 else "GALAXY"


def apply_pipeline_rule(
    proba: np.ndarray,
    class_names: Sequence[str],
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    generation: Sequence[str] | str = "sdss",
    *,
    templates: bool = True,
    margin: float = MARGIN,
) -> PipelineRuleResult:
    """Apply the template step and the line step (module docstring) to a probability table.

    Args:
        proba: ``(N, C)`` class probabilities (columns in ``class_names`` order).
        class_names: the run's classes; must contain GALAXY and QSO or AGN.
        loglam: ``(L,)`` the run's grid, log10 vacuum Å in 1e-4 dex steps.
        flux, ivar: ``(N, L)`` the spectra on that grid (1e-17 erg/s/cm²/Å, inverse variance).
        generation: template generation per row ('sdss' or 'boss', e.g. from
            :func:`specclass.spectro1d.templates.generation_of`) or one for all.
        templates: False skips the template step (the line step alone, :mod:`specclass.line_subclass`).
        margin: the template step's chi2/dof margin (:data:`MARGIN`).

    Returns:
        :class:`PipelineRuleResult`.

    Raises:
        ValueError: ``class_names`` lacks GALAXY or both QSO and AGN, or the shapes disagree.
        specclass.spectro1d.ScanError: the grid is not in uniform 1e-4 dex steps.
    """
    from specclass.spectro1d.galaxy import best_fit, lines_subclass
    from specclass.spectro1d.zscan import prepare

    names = list(class_names)
    if not applies(names):
        raise ValueError(f"the pipeline rule needs GALAXY and QSO or AGN among the classes; the run has {names}")
    proba = np.array(proba, dtype=np.float32, copy=True)
    n = proba.shape[0]
    if proba.ndim != 2 or proba.shape[1] != len(names) or len(flux) != n or len(ivar) != n:
        raise ValueError(f"proba {proba.shape}, flux {len(flux)} rows and ivar {len(ivar)} rows do not agree "
                         f"with {len(names)} classes")
    gens = [generation] * n if isinstance(generation, str) else list(generation)
    ig = names.index("GALAXY")
    ia = names.index("AGN") if "AGN" in names else None
    iq = names.index("QSO") if "QSO" in names and templates else None
    fam_cols = [ig] if ia is None else [ig, ia]
    other = [j for j in range(len(names)) if j not in fam_cols and j != iq]
    family = proba[:, fam_cols].sum(axis=1)
    p_qso = proba[:, iq] if iq is not None else np.zeros(n, np.float32)
    rest = proba[:, other].max(axis=1) if other else np.zeros(n, np.float32)
    template_class = np.full(n, "", dtype=object)
    measured = np.zeros(n, bool)
    subclass = np.full(n, "", dtype=object)
    z = np.full(n, np.nan)
    rchi2 = np.full((n, 2), np.nan)
    top_gal = family >= np.maximum(p_qso, rest)
    top_qso = (iq is not None) & ~top_gal & (p_qso >= rest)
    for i in np.flatnonzero(top_gal | top_qso):
        obj = prepare(loglam, np.asarray(flux[i]), np.asarray(ivar[i]))
        gal = best_fit(obj, gens[i], "GALAXY")
        if gal is not None:
            z[i], rchi2[i, 0] = gal.z, gal.rchi2
        sub: str | None = None
        is_gal = bool(top_gal[i])
        if iq is not None:
            qso = best_fit(obj, gens[i], "QSO")
            if qso is not None:
                rchi2[i, 1] = qso.rchi2
            template_class[i] = winner = decisive(rchi2[i, 0], rchi2[i, 1], margin)
            if winner == "QSO" and is_gal:
                sub = lines_subclass(obj, gal.z, gens[i])
                if sub != "AGN":  # a narrow-line AGN stays a galaxy (module docstring)
                    proba[i, iq] += family[i]
                    proba[i, fam_cols] = 0.0
                    is_gal = False
            elif winner == "GALAXY" and not is_gal:
                if family[i] > 0:
                    proba[i, fam_cols] *= (family[i] + p_qso[i]) / family[i]
                else:
                    proba[i, ig] = p_qso[i]
                proba[i, iq] = 0.0
                is_gal = True
        if ia is not None and is_gal and gal is not None:
            if sub is None:
                sub = lines_subclass(obj, gal.z, gens[i])
            if sub is not None:
                fam = proba[i, fam_cols].sum()
                proba[i, ia], proba[i, ig] = (fam, 0.0) if sub == "AGN" else (0.0, fam)
        if sub is not None:
            measured[i], subclass[i] = True, sub
    return PipelineRuleResult(proba, template_class.astype(str), measured, subclass.astype(str), z, rchi2)
