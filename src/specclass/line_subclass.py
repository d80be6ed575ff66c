"""The seed4 AGN / GALAXY split decided the pipeline's way: by measured emission lines.

SDSS decides CLASS first and SUBCLASS afterwards, from Gaussian line fits at the GALAXY
redshift (idlspec2d ``spreduce1d.pro``: 'AGN' when [OIII] 5007, Hβ, Hα and [NII] 6583 are
all detected at > 3 sigma and log([OIII]/Hβ) > 0.7 - 1.2 (log([NII]/Hα) + 0.4)). The seed4
class AGN is exactly that SUBCLASS, a threshold on measured line ratios, which a network
learns only approximately: in the 5-fold cross-validation on the real SDSS FITS spectra the
network alone confused star-forming galaxies near the line with AGN, while letting the
network decide the family (galaxy / QSO / STAR) and the line rule decide AGN vs GALAXY
raised seed4 balanced accuracy in every run measured (README "Benchmarks",
``benchmarks/accuracy.py``, row "... + SDSS line rule").

:func:`apply_line_rule` does this to a probability table: for each spectrum whose galaxy
family (P(GALAXY) + P(AGN)) is at least every other class's probability, it measures the
lines (:func:`specclass.spectro1d.galaxy.galaxy_subclass`, 0.02-0.1 s per spectrum) and
gives the family's whole probability to AGN or GALAXY; spectra whose lines cannot be
fitted keep the network's probabilities. ``specclass predict``/``evaluate`` apply it as the
second step of :mod:`specclass.pipeline_rule`, after GALAXY vs QSO is decided by template fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: The classes the rule splits; it applies to runs that have both (seed4).
RULE_CLASSES = ("GALAXY", "AGN")


@dataclass(frozen=True)
class LineRuleResult:
    """Output of :func:`apply_line_rule`.

    Attributes:
        proba: ``(N, C)`` float32 probabilities after the rule (rows sum to 1).
        measured: ``(N,)`` bool, True where the lines decided AGN vs GALAXY.
        subclass: ``(N,)`` str, the measured SDSS SUBCLASS ('' where not measured or
            no rule fired).
        z: ``(N,)`` float64 GALAXY-template redshift of the measured rows (NaN elsewhere).
    """

    proba: np.ndarray
    measured: np.ndarray
    subclass: np.ndarray
    z: np.ndarray


def applies(class_names: Sequence[str], loglam: np.ndarray | None = None) -> bool:
    """True when the run's classes hold both GALAXY and AGN (the seed4 scheme) and, when
    ``loglam`` is given, its grid is on SDSS's uniform 1e-4 dex pixels (the line fits need
    them; a run trained on a coarser ``--grid-step`` keeps the network's call)."""
    from specclass import pipeline_rule

    return all(c in class_names for c in RULE_CLASSES) and pipeline_rule.applies(class_names, loglam)


def apply_line_rule(
    proba: np.ndarray,
    class_names: Sequence[str],
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    generation: Sequence[str] | str = "sdss",
) -> LineRuleResult:
    """Decide AGN vs GALAXY by the pipeline's line rule for the rows the network calls galaxies.

    Args:
        proba: ``(N, C)`` class probabilities (columns in ``class_names`` order).
        class_names: the run's classes; must contain 'GALAXY' and 'AGN'.
        loglam: ``(L,)`` the run's grid, log10 vacuum Å in 1e-4 dex steps.
        flux, ivar: ``(N, L)`` the spectra on that grid (1e-17 erg/s/cm²/Å, inverse variance).
        generation: template generation per row ('sdss' or 'boss', e.g. from
            :func:`specclass.spectro1d.templates.generation_of`) or one for all.

    Returns:
        :class:`LineRuleResult`.

    Raises:
        ValueError: ``class_names`` lacks GALAXY or AGN, or the shapes disagree.
        specclass.spectro1d.ScanError: the grid is not in uniform 1e-4 dex steps.
    """
    from specclass.pipeline_rule import apply_pipeline_rule

    if not applies(class_names):
        raise ValueError(f"the line rule needs classes {RULE_CLASSES}; the run has {list(class_names)}")
    res = apply_pipeline_rule(proba, class_names, loglam, flux, ivar, generation, templates=False)
    return LineRuleResult(res.proba, res.measured, res.subclass, np.where(res.measured, res.z, np.nan))
