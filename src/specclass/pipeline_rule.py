"""The SDSS pipeline's own decisions on top of the network: STAR and GALAXY vs QSO by template chi2, AGN by lines.

SDSS labels a spectrum in two steps (idlspec2d ``pro/spec1d/spreduce1d.pro``): CLASS is the
class whose eigenspectra + polynomial fit reaches the lowest chi2/dof over its redshift range
(GALAXY -0.01-1.00, QSO 0.0033-7.00, STAR templates one by one), flagged SMALL_DELTA_CHI2 when
the next solution is worse by less than 0.01 (or 1 % of chi2/dof); SUBCLASS comes afterwards
from Gaussian line fits at that redshift ('AGN' by a BPT line, :mod:`.spectro1d.lines`). The
labels a classifier is scored against are these decisions, and two of them are thresholds on
quantities a network only approximates. :func:`apply_pipeline_rule` therefore lets the network
decide what it is good at -- which spectra are stars, and a first guess of the family -- and
measures the rest the pipeline's way, for every spectrum whose network family is a galaxy or a QSO
(and checks the network's STAR calls):

0. **STAR (star step, runs with STAR, GALAXY and QSO classes)**: the STAR (and CV) templates
   are fitted one by one over the pipeline's stellar range (:func:`.spectro1d.classify.solutions`, ~10 ms); when the best
   star's chi2/dof beats both the GALAXY and the QSO fits by the margin below, the spectrum is a STAR:
   P(STAR) takes the whole probability of the galaxy and QSO families.
   A network STAR call gives way only to a far better GALAXY or QSO fit, chi2/dof at least
   :data:`STAR_OVERTURN_RATIO` times lower (:func:`overturns_star`), or to a better one (by the
   margin) when the lines show what no star does: the four BPT emission lines at the GALAXY redshift,
   or the pipeline's BROADLINE test passed at the QSO redshift (emission-line galaxies and broad-line
   quasars are never stars); P(STAR) then goes to the better-fitting family and the next steps
   decide. On other surveys the network finds stars the templates miss (LAMOST STAR recall 0.954
   network vs 0.938 template fit), while the templates find the stars the network misses (0.954 ->
   0.984 with this step) and the broad-line quasars and galaxies it mistakes for stars.
1. **GALAXY vs QSO (template step, runs with GALAXY and QSO classes)**: the GALAXY and QSO
   eigenspectra are fitted over the pipeline's redshift ranges (:func:`.spectro1d.galaxy.best_fit`,
   the emulator's scan, ~20 ms per spectrum). When one family's best chi2/dof beats the other's by
   at least the pipeline's SMALL_DELTA_CHI2 margin (:data:`MARGIN`, absolute and relative), that
   family takes the probability of both (whichever family the network preferred); otherwise the
   network's split stands. One exception, from the pipeline's taxonomy: a spectrum the network
   calls a galaxy whose lines at the GALAXY redshift give exactly the narrow-line SUBCLASS 'AGN'
   (no BROADLINE) stays a galaxy (and takes the QSO probability): SDSS names narrow-line AGN
   GALAXY AGN, and the QSO eigenspectra, which carry narrow lines too, can fit a
   bright nearby Seyfert 2 slightly better (spec-2101-53858-0049, GALAXY AGN at z = 0.0036 in
   SDSS, QSO by 0.7 in chi2/dof in our fit).
2. **AGN vs GALAXY (line step, runs with GALAXY and AGN classes: seed4)**: for a spectrum now in
   the galaxy family (P(GALAXY) + P(AGN) at least every other class's probability), the lines are
   fitted at the best GALAXY redshift and the BPT rule gives the family's probability to AGN or
   GALAXY (:mod:`specclass.line_subclass`).

Measured (``benchmarks/accuracy.py``, 5-fold grouped cross-validation on 266 real SDSS FITS
spectra, out-of-fold, README "Benchmarks"): every network measured gains; the shipped seed4
recipe goes from 0.809 (network) and 0.896 (line step only) to 0.920 balanced accuracy (0.919 when
the network's STAR calls always stood), class3 from 0.925 to 0.951 (0.941); LAMOST STAR recall (the
fold models pooled) from 0.954 / 0.939 to 0.984 / 0.982. Spectra not on SDSS's 1e-4 dex pixels keep
the network's call (:func:`applies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from specclass.spectro1d.classify import MIN_RCHI2DIFF, clear_margin

#: The pipeline's SMALL_DELTA_CHI2 threshold (spreduce1d.pro ``minrchi2diff = 0.01``): the template
#: step decides only when the chi2/dof difference is at least this and at least this times chi2/dof.
MARGIN = MIN_RCHI2DIFF
#: A network STAR call stands unless the best star template's chi2/dof is at least this many times
#: the best GALAXY/QSO fit's (:func:`overturns_star`), or the GALAXY/QSO fit is better by the margin
#: and the lines show a BPT SUBCLASS at the GALAXY redshift or broad lines at the QSO redshift. The
#: star templates fit real stars of other surveys worse than SDSS's own: on the 112 LAMOST stars in
#: ../shared the largest ratio is 1.38, and none of those above 1 shows either kind of line
#: (``benchmarks/accuracy.py`` LAMOST column); the emission-line objects the cross-validated, packaged
#: or demo networks called STAR reach 1.38-3.2 (spec-0581-52356-0226 1.38 and spec-0568-52254-0039
#: 1.44, QSO BROADLINE, by the broad-line test; spec-0390-51900-0282 GALAXY STARFORMING 1.47 by its BPT
#: lines; spec-1224-52765-0334 QSO BROADLINE 2.9 and spec-0522-52024-0396 GALAXY AGN BROADLINE 3.2 by
#: the ratio).
STAR_OVERTURN_RATIO = 1.5
#: The BPT SUBCLASS words (:func:`.spectro1d.lines.subclass_from_lines`): all four BPT lines detected.
EMISSION_SUBCLASSES = frozenset({"AGN", "STARFORMING", "STARBURST"})


@dataclass(frozen=True)
class PipelineRuleResult:
    """Output of :func:`apply_pipeline_rule`.

    Attributes:
        proba: ``(N, C)`` float32 probabilities after the rule (rows sum to 1).
        template_class: ``(N,)`` str, 'STAR' where the star step called a star, 'GALAXY' or
            'QSO' where the template step found a decisive chi2/dof difference, '' elsewhere
            (not fitted, within :data:`MARGIN`, or a network STAR call that stands).
        measured: ``(N,)`` bool, True where the lines were measured (``subclass`` is set).
        subclass: ``(N,)`` str, the measured SDSS SUBCLASS ('' where not measured).
        z: ``(N,)`` float64 best GALAXY-template redshift of the fitted rows (NaN elsewhere).
        rchi2: ``(N, 3)`` float64 best chi2/dof of the GALAXY, QSO and STAR fits (NaN where not
            fitted).
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


def beats(rchi2: float, other: float, margin: float = MARGIN) -> bool:
    """True when chi2/dof ``rchi2`` is lower than ``other`` by at least ``margin``, absolute and
    relative to ``rchi2`` (the pipeline's SMALL_DELTA_CHI2 test); False when either is NaN."""
    return bool(np.isfinite(rchi2) and np.isfinite(other)) and clear_margin(other - rchi2, rchi2, margin)


def overturns_star(rchi2_star: float, rchi2_other: float, margin: float = MARGIN,
                   ratio: float = STAR_OVERTURN_RATIO) -> bool:
    """True when a network STAR call gives way to the templates: the best GALAXY or QSO fit's
    chi2/dof ``rchi2_other`` is lower than the best star's ``rchi2_star`` by at least ``margin``
    (:func:`beats`) and by a factor of at least ``ratio`` (:data:`STAR_OVERTURN_RATIO`);
    False when either is NaN."""
    return beats(rchi2_other, rchi2_star, margin) and bool(rchi2_star >= ratio * rchi2_other)


def decisive(rchi2_galaxy: float, rchi2_qso: float, margin: float = MARGIN) -> str:
    """'GALAXY' or 'QSO' when one fit's chi2/dof is lower by at least ``margin`` (absolute and
    relative to the lower one, :func:`beats`), '' otherwise (either NaN, or the difference the
    pipeline flags SMALL_DELTA_CHI2)."""
    if beats(rchi2_galaxy, rchi2_qso, margin):
        return "GALAXY"
    return "QSO" if beats(rchi2_qso, rchi2_galaxy, margin) else ""


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
    """Apply the star, template and line steps (module docstring) to a probability table.

    Args:
        proba: ``(N, C)`` class probabilities (columns in ``class_names`` order).
        class_names: the run's classes; must contain GALAXY and QSO or AGN.
        loglam: ``(L,)`` the run's grid, log10 vacuum Å in 1e-4 dex steps.
        flux, ivar: ``(N, L)`` the spectra on that grid (1e-17 erg/s/cm²/Å, inverse variance).
        generation: template generation per row ('sdss' or 'boss', e.g. from
            :func:`specclass.spectro1d.templates.generation_of`) or one for all.
        templates: False skips the star and template steps (the line step alone,
            :mod:`specclass.line_subclass`).
        margin: the template step's chi2/dof margin (:data:`MARGIN`).

    Returns:
        :class:`PipelineRuleResult`.

    Raises:
        ValueError: ``class_names`` lacks GALAXY or both QSO and AGN, or the shapes disagree.
        specclass.spectro1d.ScanError: the grid is not in uniform 1e-4 dex steps.
    """
    names = list(class_names)
    if not applies(names):
        raise ValueError(f"the pipeline rule needs GALAXY and QSO or AGN among the classes; the run has {names}")
    proba = np.array(proba, dtype=np.float32, copy=True)
    n = proba.shape[0]
    if proba.ndim != 2 or proba.shape[1] != len(names) or len(flux) != n or len(ivar) != n:
        raise ValueError(f"proba {proba.shape}, flux {len(flux)} rows and ivar {len(ivar)} rows do not agree "
                         f"with {len(names)} classes")
    gens = [generation] * n if isinstance(generation, str) else list(generation)
    cols = _Columns(names, templates)
    family = proba[:, cols.family].sum(axis=1)
    p_qso = proba[:, cols.qso] if cols.qso is not None else np.zeros(n, np.float32)
    rest = proba[:, cols.other].max(axis=1) if cols.other else np.zeros(n, np.float32)
    out = PipelineRuleResult(proba, np.full(n, "", dtype="U6"), np.zeros(n, bool), np.full(n, "", dtype="U32"),
                             np.full(n, np.nan), np.full((n, 3), np.nan))
    top_gal = family >= np.maximum(p_qso, rest)
    top_qso = (cols.qso is not None) & ~top_gal & (p_qso >= rest)
    top_star = np.zeros(n, bool)
    if cols.star is not None:
        top_star = ~top_gal & ~top_qso & (proba.argmax(axis=1) == cols.star)
    for i in np.flatnonzero(top_gal | top_qso | top_star):
        network = "GALAXY" if top_gal[i] else "QSO" if top_qso[i] else "STAR"
        _rule_row(out, i, cols, network, loglam, flux[i], ivar[i], gens[i], margin)
    return out


@dataclass(frozen=True)
class _Columns:
    """Column indices of the classes the rule moves probability between."""

    names: list[str]
    templates: bool

    @property
    def galaxy(self) -> int:
        return self.names.index("GALAXY")

    @property
    def agn(self) -> int | None:
        return self.names.index("AGN") if "AGN" in self.names else None

    @property
    def qso(self) -> int | None:
        return self.names.index("QSO") if "QSO" in self.names and self.templates else None

    @property
    def star(self) -> int | None:
        return self.names.index("STAR") if "STAR" in self.names and self.qso is not None else None

    @property
    def family(self) -> list[int]:
        return [self.galaxy] if self.agn is None else [self.galaxy, self.agn]

    @property
    def other(self) -> list[int]:
        return [j for j in range(len(self.names)) if j not in self.family and j != self.qso]


def _star_call_gives_way(obj, gal, qso, rchi2: np.ndarray, best_other: float, generation: str,
                         margin: float) -> tuple[bool, str | None]:
    """Whether a network STAR call gives way (module docstring, step 0), and the line SUBCLASS at the
    GALAXY redshift when it was measured on the way (None otherwise).

    It gives way to a GALAXY/QSO fit :data:`STAR_OVERTURN_RATIO` times better in chi2/dof
    (:func:`overturns_star`), or to one better by ``margin`` when the lines show what the stars of
    ../shared never do at those redshifts: the four BPT emission lines at the GALAXY redshift (an
    emission-line galaxy) or the pipeline's BROADLINE test passed at the QSO redshift (a broad-line QSO).
    """
    from specclass.spectro1d.galaxy import lines_subclass

    if overturns_star(rchi2[2], best_other, margin):
        return True, None
    if not beats(best_other, rchi2[2], margin):
        return False, None
    sub = lines_subclass(obj, gal.z, generation) if gal is not None else None
    if sub is not None and EMISSION_SUBCLASSES & set(sub.split()):
        return True, sub
    if qso is None:
        return False, None
    return "BROADLINE" in (lines_subclass(obj, qso.z, generation, "QSO") or "").split(), sub


def _rule_row(out: PipelineRuleResult, i: int, cols: _Columns, network: str, loglam: np.ndarray,
              flux: np.ndarray, ivar: np.ndarray, generation: str, margin: float) -> None:
    """The steps for row ``i`` whose network family is ``network`` ('GALAXY', 'QSO' or 'STAR'), in place."""
    from specclass.spectro1d.classify import solutions
    from specclass.spectro1d.galaxy import best_fit, lines_subclass
    from specclass.spectro1d.zscan import prepare

    p, rchi2 = out.proba[i], out.rchi2[i]
    is_gal = network == "GALAXY"
    obj = prepare(loglam, np.asarray(flux), np.asarray(ivar))
    gal = best_fit(obj, generation, "GALAXY")
    if gal is not None:
        out.z[i], rchi2[0] = gal.z, gal.rchi2
    sub: str | None = None
    if cols.qso is not None:
        qso = best_fit(obj, generation, "QSO")
        if qso is not None:
            rchi2[1] = qso.rchi2
        if cols.star is not None:
            stars = solutions(obj, generation, kinds=("STAR", "CV"))
            if stars and np.isfinite(stars[0].rchi2):
                rchi2[2] = stars[0].rchi2
            best_other = np.nanmin(rchi2[:2]) if np.isfinite(rchi2[:2]).any() else np.nan
            if network == "STAR":
                gives_way, sub = _star_call_gives_way(obj, gal, qso, rchi2, best_other, generation, margin)
                if not gives_way:
                    return
                is_gal = bool(rchi2[0] == best_other)  # the better-fitting family takes P(STAR)
                to = cols.galaxy if is_gal else cols.qso
                p[to] += p[cols.star]
                p[cols.star] = 0.0
            elif beats(rchi2[2], best_other, margin):
                p[cols.star] += p[cols.family].sum() + p[cols.qso]
                p[cols.family] = 0.0
                p[cols.qso] = 0.0
                out.template_class[i] = "STAR"
                return
        out.template_class[i] = winner = decisive(rchi2[0], rchi2[1], margin)
        if winner == "QSO" and is_gal:
            if sub is None:  # not yet measured at the GALAXY redshift by the STAR check
                sub = lines_subclass(obj, gal.z, generation)
            if sub == "AGN":  # a narrow-line AGN stays a galaxy (module docstring)
                winner = "GALAXY"
        fam = p[cols.family].sum()
        if winner == "QSO":
            p[cols.qso] += fam
            p[cols.family] = 0.0
            is_gal = False
        elif winner == "GALAXY":
            if fam > 0:
                p[cols.family] *= (fam + p[cols.qso]) / fam
            else:
                p[cols.galaxy] = p[cols.qso]
            p[cols.qso] = 0.0
            is_gal = True
    if cols.agn is not None and is_gal and gal is not None:
        if sub is None:
            sub = lines_subclass(obj, gal.z, generation)
        if sub is not None:
            fam = p[cols.family].sum()
            p[cols.agn], p[cols.galaxy] = (fam, 0.0) if sub == "AGN" else (0.0, fam)
    if sub is not None:
        out.measured[i], out.subclass[i] = True, sub
