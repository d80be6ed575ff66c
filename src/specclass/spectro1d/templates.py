"""The eigenspectra and fit settings of the SDSS spectro-1D pipeline, per reduction.

The SDSS pipeline (idlspec2d ``pro/spec1d/spreduce1d.pro``) classifies every spectrum by
fitting, at each trial redshift, a linear combination of a class's eigenspectra plus a
polynomial (``poly_array``: ``x**i`` over the *template* pixels, so the polynomial moves
with the template). The settings below are those of the idlspec2d v5 ``spreduce1d`` that
made the CLASS/Z of DR8-DR17 (SDSS-I/II plates reprocessed as RUN2D 26, BOSS/eBOSS RUN2D
v5_*):

=========  =====================  =====  ====================  ======  =====
kind       eigenfile              npoly  z range               pspace  nfind
=========  =====================  =====  ====================  ======  =====
GALAXY     spEigenGal-?????       3      -0.01 ... 1.00        2       5
QSO        spEigenQSO-?????       3      0.0033 ... 7.00       4       5
STAR       spEigenStar-?????      4      -0.004 ... 0.004      1       1  (each template alone)
STAR (CV)  spEigenCVstar-?????    3      -0.0033 ... 0.0033    1       1
=========  =====================  =====  ====================  ======  =====

Which generation of files a reduction used (:func:`template_generation`): RUN2D 26 and
older (SDSS-I/II spectrographs) used the ``-53724`` files; BOSS/eBOSS reductions
(RUN2D ``v5_*``) the later ones (``spEigenGal-56436``, ``spEigenQSO-55732``,
``spEigenStar-55734``, ``spEigenCVstar-55734``; the ``spEigenStar-55734`` set has 123
templates named after their MK types and ELODIE/CV ids). All files are shipped in
``specclass/templates/`` (provenance and sha256 in ``templates/PROVENANCE.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

#: Template files per generation and kind (see the module docstring).
GENERATIONS: dict[str, dict[str, str]] = {
    "sdss": {
        "GALAXY": "spEigenGal-53724.fits.gz",
        "QSO": "spEigenQSO-53724.fits.gz",
        "STAR": "spEigenStar-53724.fits",
        "CV": "spEigenCVstar-53724.fits.gz",
    },
    "boss": {
        "GALAXY": "spEigenGal-56436.fits",
        "QSO": "spEigenQSO-55732.fits",
        "STAR": "spEigenStar-55734.fits.gz",
        "CV": "spEigenCVstar-55734.fits.gz",
    },
}

#: ``(npoly, zmin, zmax, nfind, width_pixels, fit_width_pixels)`` per kind, from
#: spreduce1d.pro (v5): the minima finder's separation ``width`` is ``5*pspace`` (GALAXY,
#: stars) and ``7*pspace`` (QSO); ``fit_width`` is the half-width in lags of the points
#: whose minimum is fitted for the reported Z and chi2/dof (``zrefind``'s ``width`` = 5 for
#: GALAXY, 11 for QSO; ``zfind``'s ``width=5*pspace`` for stars and CV stars).
FIT_SETTINGS: dict[str, tuple[int, float, float, int, int, int]] = {
    "GALAXY": (3, -0.01, 1.00, 5, 10, 5),
    "QSO": (3, 0.0033, 7.00, 5, 28, 11),
    "STAR": (4, -0.004, 0.004, 1, 5, 5),
    "CV": (3, -0.0033, 0.0033, 1, 5, 5),
}

#: Pixel step of every SDSS spectrum and template, log10 Å (SDSS data model, COEFF1).
DLOGLAM = 1e-4


class TemplateError(ValueError):
    """A template file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class TemplateSet:
    """One class's fit basis: eigenspectra (or one star) plus polynomial columns.

    Attributes:
        kind: 'GALAXY', 'QSO', 'STAR' or 'CV'.
        file: template file name.
        loglam0: log10 Å of template pixel 0 (rest frame; observed for stars at z = 0).
        eigen: ``(n_eigen, Nt)`` float64 eigenspectra (arbitrary units).
        names: one name per fitted unit: for STAR each template is fitted alone and
            named after its SUBCLASS; for the other kinds one name (``kind``).
        npoly: polynomial columns appended to every fit.
        zmin, zmax: trial redshift range.
        nfind: solutions kept per fitted unit.
        width: lags that separate two chi2 minima of one fit.
        fit_width: half-width in lags of the points whose minimum is fitted
            (:func:`specclass.spectro1d.zscan.find_minima`).
        separate: True when each eigen row is its own fit (STAR), False when all rows
            are fitted together (GALAXY, QSO, CV).
    """

    kind: str
    file: str
    loglam0: float
    eigen: np.ndarray
    names: tuple[str, ...]
    npoly: int
    zmin: float
    zmax: float
    nfind: int
    width: int
    separate: bool
    fit_width: int = 5
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def npix(self) -> int:
        """Template length ``Nt`` in pixels."""
        return int(self.eigen.shape[1])

    def poly(self) -> np.ndarray:
        """``(npoly, Nt)`` float64 polynomial columns over the template pixels.

        Legendre polynomials of ``x = 2 j / Nt - 1``: they span the same space as
        idlspec2d's ``poly_array`` (``(j / Nt)**i``), so every fit, chi2 and dof is the
        same, with better numerical conditioning.
        """
        x = 2.0 * np.arange(self.npix) / self.npix - 1.0
        return np.polynomial.legendre.legvander(x, max(self.npoly - 1, 0)).T[: self.npoly].copy()


def templates_dir() -> Path:
    """The shipped ``specclass/templates`` folder."""
    return Path(str(resources.files("specclass") / "templates"))


def template_generation(run2d: str, loglam_max: float | None = None) -> str:
    """'sdss' (the -53724 files) or 'boss' (the later ones) for a reduction.

    Args:
        run2d: the spectrum's RUN2D ('26', '103', '104', 'v5_13_2', ...); '' if unknown.
        loglam_max: the spectrum's reddest log10 Å, used when ``run2d`` is unknown: BOSS
            spectra reach beyond 9300 Å (SDSS-I/II stop near 9200 Å).

    Returns:
        'boss' for RUN2D ``v5_*`` / ``v6_*`` or unknown reductions reaching past 9300 Å, else 'sdss'.
    """
    r = (run2d or "").strip().lower()
    if r.startswith("v"):
        return "boss"
    if r:
        return "sdss"
    return "boss" if (loglam_max is not None and 10**loglam_max > 9300.0) else "sdss"


#: Surveys observed with the BOSS spectrographs (3600-10400 Å), whose spectra the later
#: template generations describe; SDSS-I/II ('sdss', 'segue1', 'segue2') use the -53724 files.
BOSS_SURVEYS = frozenset({"boss", "eboss", "sequels", "mastar", "manga", "sdss-v", "bhm", "mwm"})
#: SDSS-I/II surveys: their RUN2D (26, 103, 104) or wavelength range decides.
SDSS_SURVEYS = frozenset({"sdss", "segue", "segue1", "segue2", "sdss-i", "sdss-ii", "legacy"})


def generation_of(run2d: str = "", survey: str = "", loglam_max: float | None = None) -> str:
    """The template generation for a spectrum from what its file says about it.

    * BOSS-spectrograph surveys (:data:`BOSS_SURVEYS`, e.g. MaStar, whose files carry no
      RUN2D): 'boss'.
    * Other instruments (a survey named but not an SDSS one: LAMOST, DESI, ...): 'boss', the
      later and larger stellar library (123 MK types + CV stars); their "RUN2D" is their
      own pipeline's version (LAMOST 'v2.6.4'), not an SDSS reduction. Measured on the 112
      LAMOST stars of the shared data (gridded): STAR 105 with these templates, 102 with
      the -53724 ones (``benchmarks/results/accuracy-cv5-sim1500.md``).
    * SDSS-I/II or unknown survey: RUN2D when known (:func:`template_generation`), else the
      wavelength rule (on a model's grid, which stops before 9300 Å, pass
      ``loglam_max=None`` to fall back to 'sdss').

    Returns:
        'sdss' or 'boss'.
    """
    s = (survey or "").strip().lower()
    if s in BOSS_SURVEYS or (s and s not in SDSS_SURVEYS):
        return "boss"
    if (run2d or "").strip():
        return template_generation(run2d)
    return template_generation("", loglam_max)


def _read(file: str) -> tuple[np.ndarray, float, list[str]]:
    from astropy.io import fits

    path = templates_dir() / file
    if not path.exists():
        raise TemplateError(f"{path}: template file missing from the specclass installation")
    try:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header
            data = np.asarray(hdul[0].data, dtype=np.float64)
            if data.ndim == 1:
                data = data[None, :]
            if "COEFF0" not in hdr or abs(float(hdr.get("COEFF1", 0)) - DLOGLAM) > 1e-9:
                raise TemplateError(f"{path}: needs COEFF0 and COEFF1 = {DLOGLAM} in the primary header")
            names = [str(hdr.get(f"NAME{i}", f"eigen{i}")).strip() for i in range(data.shape[0])]
            return np.ascontiguousarray(data), float(hdr["COEFF0"]), names
    except OSError as exc:
        raise TemplateError(f"{path}: not a readable FITS template ({exc})") from exc


@lru_cache(maxsize=None)
def load_template_sets(generation: str) -> tuple[TemplateSet, ...]:
    """The four fit bases (GALAXY, QSO, STAR, CV) of one template generation.

    Args:
        generation: 'sdss' or 'boss' (:func:`template_generation`).

    Returns:
        ``(galaxy, qso, star, cv)`` :class:`TemplateSet` (cached; treat as read-only).

    Raises:
        ValueError: unknown generation.
        TemplateError: a shipped file is missing or malformed.
    """
    if generation not in GENERATIONS:
        raise ValueError(f"template generation must be one of {sorted(GENERATIONS)}, got {generation!r}")
    out = []
    for kind, file in GENERATIONS[generation].items():
        eigen, loglam0, names = _read(file)
        npoly, zmin, zmax, nfind, width, fit_width = FIT_SETTINGS[kind]
        separate = kind == "STAR"
        out.append(TemplateSet(
            kind=kind, file=file.replace(".gz", ""), loglam0=loglam0, eigen=eigen,
            names=tuple(_star_subclass(n) for n in names) if separate else (kind,),
            npoly=npoly, zmin=zmin, zmax=zmax, nfind=nfind, width=width, separate=separate,
            fit_width=fit_width,
        ))
    return tuple(out)


def _star_subclass(name: str) -> str:
    """SUBCLASS the pipeline writes for a star template: the NAME keyword, stripped."""
    return name.strip()
