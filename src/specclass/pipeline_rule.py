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
   network's split stands. (Until this release a spectrum the network called a galaxy whose lines gave
   the narrow-line SUBCLASS 'AGN' stayed a galaxy whatever the fits said, for the Seyfert 2
   spec-2101-53858-0049; with the pipeline's own fit of each chi2 minimum its GALAXY fit wins, and the
   exception only kept the SDSS QSO spec-2025-53431-0603 a galaxy, so it is gone.)
2. **AGN vs GALAXY (line step, runs with GALAXY and AGN classes: seed4)**: for a spectrum now in
   the galaxy family (P(GALAXY) + P(AGN) at least every other class's probability), the lines are
   fitted at the best GALAXY redshift and the BPT rule gives the family's probability to AGN or
   GALAXY (:mod:`specclass.line_subclass`).

**Which pixels are fitted.** A spectrum that is an SDSS file (``native``: ``predict`` on files, or a
dataset row whose file is still there, :func:`native_spectra`) is fitted on its own pixels with its
reduction's masks (:func:`fit_input`): those fits are the pipeline's own (the emulator agrees with
SDSS's CLASS on all 257 FITS spectra of ../shared), so there the lower chi2/dof decides
(:data:`EXACT_MARGIN`) and a network STAR call gives way to any better GALAXY/QSO fit, as in the
pipeline. Other rows are fitted on the run's grid with the margin and the STAR protections above.

Measured (``benchmarks/accuracy.py``, 5-fold grouped cross-validation on 266 real SDSS FITS
spectra, out-of-fold, README "Benchmarks"): the shipped seed4 recipe goes from 0.809 (network) to
0.958 balanced accuracy (0.916 with the fits on the gridded rows only; last release's rule 0.920),
class3 from 0.925 to 1.000 (0.955; 0.951); LAMOST STAR recall (the fold models pooled) from 0.954 /
0.939 to 0.984 / 0.982. Spectra not on SDSS's 1e-4 dex pixels keep the network's call (:func:`applies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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
#: or demo networks called STAR reach 1.60-3.65 with the pipeline's Gaussian fit of each chi2 minimum
#: (QSO BROADLINE spec-0568-52254-0039 1.60, spec-0581-52356-0226 1.64, spec-1224-52765-0334 3.38;
#: GALAXY STARFORMING spec-0390-51900-0282 2.21; GALAXY AGN BROADLINE spec-0522-52024-0396 3.65; with
#: the parabola fit of the last release 1.38-3.2, and the lines overturned 0568, 0581 and 0390).
STAR_OVERTURN_RATIO = 1.5
#: Margin of the star and template steps for an SDSS spectrum fitted on its own pixels with the
#: pipeline's masks (:func:`is_sdss_reduction`): its fits are the pipeline's own (the emulator agrees
#: with SDSS's CLASS on all 257 such files in ../shared), so the lower chi2/dof decides, as it does in
#: the pipeline, where SMALL_DELTA_CHI2 only flags the decision.
EXACT_MARGIN = 0.0
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
    native: Sequence[Any | None] | None = None,
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
        native: optional, one entry per row: the spectrum on its own pixels (a
            :class:`specclass.spectrum.Spectrum`, e.g. from :func:`native_spectra`) or None.
            Where given and on SDSS's 1e-4 dex pixels, the fits use it -- every pixel the
            pipeline fitted, with the pipeline's own masks (:func:`.spectro1d.zscan.prepare`) --
            instead of the row on the run's grid, which stops at 9120 Å and is rebinned.
            Measured on the 257 SDSS FITS spectra of ../shared, the emulator's CLASS agrees with
            SDSS for all 257 on native pixels and for 250 on the grid
            (``benchmarks/spectro1d_agreement.py``, ``benchmarks/accuracy.py``).

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
    natives = list(native) if native is not None else [None] * n
    if len(natives) != n:
        raise ValueError(f"native has {len(natives)} entries for {n} rows")
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
        obj = fit_input(loglam, flux[i], ivar[i], natives[i], gens[i])
        exact = natives[i] is not None and is_sdss_reduction(natives[i])  # fitted on its own pixels
        _rule_row(out, i, cols, network, obj, gens[i], EXACT_MARGIN if exact else margin, exact)
    return out


def is_sdss_reduction(spec: Any) -> bool:
    """True for a spectrum as the SDSS pipeline reduced and classified it: on SDSS's 1e-4 dex pixels,
    with a RUN2D, and not from another survey's pipeline (LAMOST files carry their own 'RUN2D')."""
    from specclass.spectro1d.templates import BOSS_SURVEYS, SDSS_SURVEYS
    from specclass.spectro1d.zscan import on_sdss_pixels

    meta = getattr(spec, "meta", None)
    if meta is None or not str(getattr(meta, "run2d", "") or "").strip():
        return False
    survey = str(getattr(meta, "survey", "") or "").strip().lower()
    return (not survey or survey in SDSS_SURVEYS or survey in BOSS_SURVEYS) and on_sdss_pixels(spec.loglam)


def fit_input(loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, native: Any | None, generation: str):
    """The :class:`~specclass.spectro1d.zscan.ObjectSpectrum` the fits of one row use.

    Args:
        loglam: ``(L,)`` the run's grid (log10 Å, 1e-4 dex steps).
        flux, ivar: ``(L,)`` the row on that grid.
        native: the same spectrum on its own pixels (:class:`specclass.spectrum.Spectrum`), or None.
        generation: 'sdss' or 'boss' (which of the pipeline's masks apply).

    Returns:
        The native spectrum with the pipeline's masks (:func:`.spectro1d.zscan.prepare`) when
        given and on SDSS's 1e-4 dex pixels, else the grid row.
    """
    from specclass.spectro1d.zscan import on_sdss_pixels, prepare

    if native is not None and native.loglam.size > 1 and on_sdss_pixels(native.loglam):
        return prepare(native.loglam, native.flux, native.ivar, getattr(native, "and_mask", None),
                       getattr(native, "or_mask", None), generation=generation)
    return prepare(loglam, np.asarray(flux), np.asarray(ivar))


def native_spectra(meta: Any, n: int) -> list[Any | None]:
    """The native-pixel spectra behind ``n`` dataset rows, for :func:`apply_pipeline_rule`'s ``native``.

    Args:
        meta: the dataset's metadata (``meta['file']``, and ``meta['row']`` when present).
        n: number of rows.

    Returns:
        One :class:`specclass.spectrum.Spectrum` per row whose ``file`` still exists, holds one
        spectrum (no table ``row``) and is on SDSS's 1e-4 dex pixels; None for the others (those
        rows are fitted on the grid). Unreadable files give None, never an error.
    """
    import os

    from specclass.io import read_spectrum
    from specclass.spectro1d.zscan import on_sdss_pixels

    files = list(meta["file"]) if "file" in meta else [""] * n
    rows = list(meta["row"]) if "row" in meta else [""] * n
    out: list[Any | None] = []
    for f, r in zip(files, rows):
        spec = None
        if f and str(r) in ("", "-1") and os.path.isfile(str(f)):
            try:
                spec = read_spectrum(str(f))
            except Exception:  # noqa: BLE001 - an unreadable file just keeps its grid row
                spec = None
            if spec is not None and not on_sdss_pixels(spec.loglam):
                spec = None
        out.append(spec)
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


def _rule_row(out: PipelineRuleResult, i: int, cols: _Columns, network: str, obj, generation: str,
              margin: float, exact: bool = False) -> None:
    """The steps for row ``i`` whose network family is ``network`` ('GALAXY', 'QSO' or 'STAR'), fitting
    ``obj`` (:func:`fit_input`), in place; ``exact``: ``obj`` is an SDSS spectrum on its own pixels
    with the pipeline's masks, so the fits are the pipeline's and the lowest chi2/dof decides."""
    from specclass.spectro1d.classify import solutions
    from specclass.spectro1d.galaxy import best_fit, lines_subclass

    p, rchi2 = out.proba[i], out.rchi2[i]
    is_gal = network == "GALAXY"
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
                if exact:
                    gives_way = beats(best_other, rchi2[2], margin)
                else:
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
