"""An emulator of the SDSS spectro-1D pipeline's decision: CLASS, SUBCLASS, Z, ZWARNING.

The SDSS labels that specclass learns (CLASS, SUBCLASS, Z) are made by idlspec2d's
``spreduce1d``: a reduced-chi2 scan of the pipeline's eigenspectra over redshift
(:mod:`.zscan`, :mod:`.classify`, templates in :mod:`.templates`) and Gaussian line fits
with a few rules for the GALAXY/QSO subclass (:mod:`.lines`). This package re-implements
both in numpy, so that

* simulated spectra are labelled the way real ones were (``specclass simulate``), and
* every accuracy table has a non-ML anchor beside the networks
  (``benchmarks/spectro1d_agreement.py``, ``benchmarks/accuracy.py``).

Example:
    >>> from specclass.io import read_spectrum
    >>> from specclass.spectro1d import classify_spectrum
    >>> r = classify_spectrum(read_spectrum("spec-0266-51602-0013.fits"))  # doctest: +SKIP
    >>> r.class_, r.subclass, round(r.z, 4)                                # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from specclass.spectro1d.classify import Spectro1dResult, decide
from specclass.spectro1d.lines import fit_lines, subclass_from_lines
from specclass.spectro1d.templates import TemplateError, template_generation
from specclass.spectro1d.zscan import ScanError, prepare

__all__ = [
    "Spectro1dResult", "ScanError", "TemplateError", "classify", "classify_prepared", "classify_spectrum",
    "template_generation",
]


def classify(
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray | None = None,
    run2d: str = "",
    or_mask: np.ndarray | None = None,
    generation: str | None = None,
    lines: bool = True,
) -> Spectro1dResult:
    """Emulate the SDSS pipeline's CLASS / SUBCLASS / Z for one spectrum.

    Args:
        loglam: ``(N,)`` log10 vacuum Å in uniform 1e-4 dex steps (native SDSS/BOSS pixels,
            or :class:`specclass.spectra.grid.LogLamGrid`).
        flux: ``(N,)`` 1e-17 erg/s/cm²/Å.
        ivar: ``(N,)`` inverse variance (0 = no data).
        and_mask: ``(N,)`` SPPIXMASK AND-mask, or None (BRIGHTSKY pixels are masked for
            SDSS-I/II reductions).
        run2d: the reduction (picks the template generation; '' = from the wavelength range).
        or_mask: ``(N,)`` SPPIXMASK OR-mask, or None (BADSKYCHI/REDMONSTER pixels are masked
            for BOSS reductions, as the BOSS pipeline does; :func:`.zscan.prepare`).
        generation: force 'sdss' (-53724 templates) or 'boss' (later ones).
        lines: also fit emission lines for GALAXY/QSO and set the SUBCLASS.

    Returns:
        :class:`~specclass.spectro1d.classify.Spectro1dResult`; when no template fit had
        more than 10 degrees of freedom (e.g. a fully masked spectrum) ``fitted`` is False
        and the rest is what the pipeline writes for such a fiber (GALAXY, z = 0, unknown).

    Raises:
        ScanError: arrays of different lengths or a non-uniform wavelength grid.
        TemplateError: a shipped template file is missing.
    """
    loglam = np.asarray(loglam, dtype=np.float64)
    gen = generation or template_generation(run2d, float(loglam[-1]) if loglam.size else None)
    return classify_prepared(prepare(loglam, flux, ivar, and_mask, or_mask, generation=gen), gen, lines=lines)


def classify_prepared(obj, generation: str, lines: bool = True) -> Spectro1dResult:
    """:func:`classify` for a spectrum already through :func:`.zscan.prepare` (masks applied).

    Args:
        obj: :class:`.zscan.ObjectSpectrum`.
        generation: 'sdss' or 'boss'.
        lines: also fit emission lines for GALAXY/QSO and set the SUBCLASS.
    """
    res = decide(obj, generation=generation)
    if lines and res.fitted and res.class_ in ("GALAXY", "QSO"):
        fit = fit_lines(obj.loglam, obj.flux, obj.ivar, res.z, res.class_, generation=res.generation)
        res.lines = None if fit is None else {
            "area": fit.area, "area_err": fit.area_err, "ew": fit.ew, "ew_err": fit.ew_err,
            "sigma": fit.sigma, "sigma_err": fit.sigma_err, "dv": fit.dv, "dof": fit.dof,
        }
        res.subclass = subclass_from_lines(fit)
    return res


def classify_spectrum(spec, generation: str | None = None, lines: bool = True) -> Spectro1dResult:
    """:func:`classify` for a :class:`specclass.spectrum.Spectrum` (any reader's output).

    Raises:
        ScanError: the spectrum is not on uniform 1e-4 dex pixels (e.g. LAMOST, text
            spectra): grid it first with :mod:`specclass.spectra.grid`.
    """
    return classify(spec.loglam, spec.flux, spec.ivar, spec.and_mask, run2d=spec.meta.run2d,
                    or_mask=spec.or_mask, generation=generation, lines=lines)
