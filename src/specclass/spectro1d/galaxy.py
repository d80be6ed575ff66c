"""The SDSS emission-line SUBCLASS of a spectrum already known to be a galaxy.

The pipeline decides SUBCLASS *after* CLASS (idlspec2d ``spreduce1d.pro``): at the best
GALAXY redshift it fits Gaussian lines and applies the BPT rule (:mod:`.lines`). When a
classifier has already decided that a spectrum is a galaxy, only that second step is
needed: the redshift comes from the GALAXY eigenspectra alone (:mod:`.zscan`, the
pipeline's GALAXY range), not from the full GALAXY/QSO/STAR decision of :mod:`.classify`,
which costs 3-10x more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specclass.spectro1d.lines import fit_lines, subclass_from_lines
from specclass.spectro1d.templates import load_template_sets, template_generation
from specclass.spectro1d.zscan import Minimum, ObjectSpectrum, find_minima, prepare, scan


@dataclass(frozen=True)
class GalaxyLines:
    """What :func:`galaxy_subclass` measured.

    Attributes:
        subclass: the pipeline's SUBCLASS from the line fit: 'AGN', 'STARFORMING',
            'STARBURST' (each possibly followed by ' BROADLINE'), 'BROADLINE' or ''
            (no BPT line pair detected at 3 sigma); None when no fit was possible
            (no GALAXY template fit with enough degrees of freedom, or no line in range).
        z: redshift of the best GALAXY eigenspectrum fit (NaN when none).
        rchi2: its chi2/dof (NaN when none).
    """

    subclass: str | None
    z: float
    rchi2: float


def galaxy_subclass(
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray | None = None,
    generation: str | None = None,
    run2d: str = "",
    or_mask: np.ndarray | None = None,
) -> GalaxyLines:
    """The pipeline's line SUBCLASS of one spectrum taken to be a GALAXY.

    Args:
        loglam: ``(N,)`` log10 vacuum Å in uniform 1e-4 dex steps.
        flux: ``(N,)`` 1e-17 erg/s/cm²/Å.
        ivar: ``(N,)`` inverse variance (0 = no data).
        and_mask: ``(N,)`` SPPIXMASK AND-mask, or None.
        generation: 'sdss' (-53724 templates) or 'boss' (later ones); None picks it from
            ``run2d`` and the wavelength range (:func:`.templates.template_generation`).
        run2d: the reduction's RUN2D, when known.
        or_mask: ``(N,)`` SPPIXMASK OR-mask, or None (masks as in :func:`.zscan.prepare`).

    Returns:
        :class:`GalaxyLines`; seed4's AGN is ``subclass == 'AGN'`` exactly (SDSS
        'AGN BROADLINE' is not AGN).

    Raises:
        specclass.spectro1d.ScanError: arrays of different lengths or a non-uniform grid.
        specclass.spectro1d.TemplateError: a shipped template file is missing.
    """
    loglam = np.asarray(loglam, dtype=np.float64)
    gen = generation or template_generation(run2d, float(loglam[-1]) if loglam.size else None)
    obj = prepare(loglam, flux, ivar, and_mask, or_mask, generation=gen)
    best = best_fit(obj, gen, "GALAXY")
    if best is None:
        return GalaxyLines(None, float("nan"), float("nan"))
    return GalaxyLines(lines_subclass(obj, best.z, gen), float(best.z), float(best.rchi2))


def best_fit(obj: ObjectSpectrum, generation: str, kind: str) -> Minimum | None:
    """The lowest chi2/dof minimum of one class's eigenspectrum fit over the pipeline's redshift range.

    Args:
        obj: :func:`specclass.spectro1d.zscan.prepare` output.
        generation: 'sdss' or 'boss' (:mod:`.templates`).
        kind: 'GALAXY' or 'QSO' (a template set of one fit; STAR sets are one fit per template).

    Returns:
        The best :class:`~specclass.spectro1d.zscan.Minimum` (``z``, ``rchi2``), or None when
        no trial redshift leaves enough degrees of freedom.
    """
    ts = next(t for t in load_template_sets(generation) if t.kind == kind)
    best = None
    for curve in scan(obj, ts):
        for m in find_minima(curve, 1, ts.width, ts.fit_width):
            if np.isfinite(m.rchi2) and (best is None or m.rchi2 < best.rchi2):
                best = m
    return best


def lines_subclass(obj: ObjectSpectrum, z: float, generation: str, class_: str = "GALAXY") -> str | None:
    """The pipeline's line SUBCLASS at redshift ``z`` (:func:`.lines.fit_lines` then
    :func:`.lines.subclass_from_lines`), the lines fitted the ``class_`` way ('GALAXY' or 'QSO':
    background and initial widths); None when no line lies in the spectrum's range."""
    fit = fit_lines(obj.loglam, obj.flux, obj.ivar, z, class_, generation=generation)
    return None if fit is None else subclass_from_lines(fit)
