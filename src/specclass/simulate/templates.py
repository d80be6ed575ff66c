"""The SDSS pipeline eigenspectra shipped with specclass, and the fitted coefficient priors.

Files (in ``specclass/templates/``; provenance in ``templates/PROVENANCE.md``):

* ``spEigenStar-53724.fits`` -- 40 stellar templates (one per SDSS stellar SUBCLASS,
  names in header ``NAME<i>``), observed-frame at z = 0.
* ``spEigenGal-56436.fits`` -- 4 galaxy eigenspectra (BOSS), rest frame 1183-10500 Å.
* ``spEigenQSO-55732.fits`` -- 4 quasar eigenspectra (BOSS), rest frame 450-10400 Å.

Each is a primary image ``(n_templates, npix)`` float32 with the log-lambda wavelength
``loglam = COEFF0 + COEFF1 * i`` (vacuum Å; the ``COEFF0``/``COEFF1`` header keywords
idlspec2d writes, as in the spec files). They are the templates the SDSS
pipeline itself fits to every spectrum (Bolton et al. 2012, AJ 144, 144), so they
are already at SDSS resolution (R ~ 2000) and on SDSS's 1e-4 dex pixel step.

``coefficient_priors.json`` holds the eigen-coefficient ratios measured by projecting
real SDSS galaxy and quasar spectra onto these eigenspectra, with their mean and
covariance (built by :mod:`specclass.simulate.assets`); :class:`CoefficientPrior` draws
from a kernel-density estimate over them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from specclass.simulate.lines import EMISSION_WINDOWS

TEMPLATE_FILES: dict[str, str] = {
    "STAR": "spEigenStar-53724.fits",
    "GALAXY": "spEigenGal-56436.fits",
    "QSO": "spEigenQSO-55732.fits",
}
PRIORS_FILE = "coefficient_priors.json"
IVAR_BANK_FILE = "ivar_bank.npz"


class TemplateError(ValueError):
    """A template or prior file is missing or malformed (message names the file)."""


@dataclass(frozen=True)
class EigenTemplates:
    """One spEigen file.

    Attributes:
        kind: 'STAR', 'GALAXY' or 'QSO'.
        loglam: ``(npix,)`` float64, log10 vacuum Å (rest frame for GALAXY/QSO,
            observed at z = 0 for STAR).
        flux: ``(n_templates, npix)`` float64 eigenspectra (arbitrary flux units).
        names: ``n_templates`` names (stellar SUBCLASS for STAR, 'eigen<i>' otherwise).
        file: file name the templates came from.
    """

    kind: str
    loglam: np.ndarray
    flux: np.ndarray
    names: tuple[str, ...]
    file: str

    @property
    def coverage(self) -> tuple[float, float]:
        """``(loglam_min, loglam_max)`` of the template, log10 Å."""
        return float(self.loglam[0]), float(self.loglam[-1])


def templates_dir() -> Path:
    """The folder ``specclass/templates`` inside the installed package."""
    return Path(str(resources.files("specclass") / "templates"))


def read_spEigen(path: str | Path, kind: str) -> EigenTemplates:
    """Read an idlspec2d ``spEigen*.fits`` file.

    Args:
        path: the FITS file.
        kind: 'STAR', 'GALAXY' or 'QSO' (stored on the result).

    Returns:
        :class:`EigenTemplates` with native-endian float64 arrays.

    Raises:
        TemplateError: if the file lacks a 2-D primary image or ``COEFF0``/``COEFF1``.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise TemplateError(f"{path}: template file not found")
    with fits.open(path, memmap=False) as hdul:
        hdr = hdul[0].header
        data = hdul[0].data
        if data is None or data.ndim != 2:
            raise TemplateError(f"{path}: primary HDU is not a 2-D (n_templates, npix) image")
        if "COEFF0" not in hdr or "COEFF1" not in hdr:
            raise TemplateError(f"{path}: primary header lacks COEFF0/COEFF1 (log-lambda wavelength)")
        flux = np.asarray(data, dtype=np.float64)
        loglam = float(hdr["COEFF0"]) + float(hdr["COEFF1"]) * np.arange(flux.shape[1])
        names = tuple(str(hdr.get(f"NAME{i}", f"eigen{i}")).strip() for i in range(flux.shape[0]))
    if not np.all(np.isfinite(flux)):
        raise TemplateError(f"{path}: template image has non-finite values")
    return EigenTemplates(kind=kind, loglam=loglam, flux=flux, names=names, file=path.name)


@lru_cache(maxsize=None)
def load_templates(kind: str, strip_lines: bool = True) -> EigenTemplates:
    """Load the shipped spEigen templates for ``kind`` ('STAR', 'GALAXY', 'QSO').

    For GALAXY with ``strip_lines`` (default) the narrow emission lines are removed
    (:func:`strip_emission_lines`), because the simulator adds its own lines with
    controlled BPT ratios. Quasar templates keep their broad and narrow lines (they
    *are* the quasar spectrum). Star templates are clipped at 0 (the L/T dwarf rows
    carry small negative noise where the true flux is ~0).

    Raises:
        TemplateError: for an unknown kind or a missing/malformed file.
    """
    if kind not in TEMPLATE_FILES:
        raise TemplateError(f"kind must be one of {sorted(TEMPLATE_FILES)}, got {kind!r}")
    t = read_spEigen(templates_dir() / TEMPLATE_FILES[kind], kind)
    flux = t.flux
    if kind == "GALAXY" and strip_lines:
        flux = strip_emission_lines(t.loglam, flux)
    if kind == "STAR":
        flux = np.clip(flux, 0.0, None)
    flux.setflags(write=False)
    return EigenTemplates(kind=kind, loglam=t.loglam, flux=flux, names=t.names, file=t.file)


def strip_emission_lines(
    loglam: np.ndarray, flux: np.ndarray, windows: tuple[tuple[float, float], ...] = EMISSION_WINDOWS
) -> np.ndarray:
    """Replace each rest-frame emission-line window by a straight line between its edges.

    Args:
        loglam: ``(npix,)`` log10 vacuum Å (rest frame).
        flux: ``(n, npix)`` eigenspectra.
        windows: ``(lo, hi)`` vacuum Å pairs (default :data:`~specclass.simulate.lines.EMISSION_WINDOWS`).

    Returns:
        ``(n, npix)`` float64 copy with the windows linearly interpolated (edge means over
        5 pixels on each side). Stellar Balmer absorption wider than a window survives.
    """
    out = np.array(flux, dtype=np.float64, copy=True)
    wave = 10**loglam
    for lo, hi in windows:
        i0, i1 = np.searchsorted(wave, [lo, hi])
        if i0 < 5 or i1 > wave.size - 5:
            continue
        left = out[:, i0 - 5 : i0].mean(axis=1, keepdims=True)
        right = out[:, i1 : i1 + 5].mean(axis=1, keepdims=True)
        t = (np.arange(i0, i1) - (i0 - 3)) / ((i1 + 2) - (i0 - 3))
        out[:, i0:i1] = left + (right - left) * t
    return out


@dataclass(frozen=True)
class CoefficientPrior:
    """Distribution of eigen-coefficient ratios ``c[1:]/c[0]`` fitted to real spectra.

    Draws are from a Gaussian kernel-density estimate (Scott 1992, *Multivariate Density
    Estimation*): pick one real spectrum's ratio vector, add
    ``N(0, h² cov)`` with Scott's bandwidth ``h = n^(-1/(d+4))``. Unlike one Gaussian
    around the mean, this keeps the real bimodality (red quiescent vs blue star-forming
    continua) and stays near combinations real spectra actually have.

    Attributes:
        kind: 'GALAXY' or 'QSO'.
        mean: ``(d,)`` mean of ``c[k]/c[0]``, ``d = n_eigen - 1``.
        cov: ``(d, d)`` covariance.
        samples: ``(n, d)`` the real spectra's ratio vectors (kernel centres).
        sample_subclass: ``n`` pipeline SUBCLASS of each real spectrum.
        n_spectra: ``n``.
        sources: description of the spectra used.
    """

    kind: str
    mean: np.ndarray
    cov: np.ndarray
    samples: np.ndarray
    sample_subclass: tuple[str, ...]
    n_spectra: int
    sources: str

    @property
    def bandwidth(self) -> float:
        """Scott's factor ``n^(-1/(d+4))``."""
        return float(self.samples.shape[0] ** (-1.0 / (self.samples.shape[1] + 4)))

    def kernels(self, subclasses: tuple[str, ...] | None = None, min_count: int = 3) -> np.ndarray:
        """Indices of the kernels whose SUBCLASS is in ``subclasses`` (all if None or fewer than ``min_count``)."""
        if subclasses is None:
            return np.arange(self.samples.shape[0])
        idx = np.flatnonzero([s in subclasses for s in self.sample_subclass])
        return idx if idx.size >= min_count else np.arange(self.samples.shape[0])

    def draw(self, rng: np.random.Generator, scale: float = 1.0, kernels: np.ndarray | None = None) -> np.ndarray:
        """One coefficient vector ``(n_eigen,)`` = ``[1, r_1, ..., r_d]``.

        Args:
            rng: random generator.
            scale: multiplies the kernel width (``scale < 1`` stays closer to real spectra).
            kernels: indices of the real spectra to draw around (default all).
        """
        idx = self.kernels() if kernels is None else kernels
        centre = self.samples[idx[int(rng.integers(idx.size))]]
        if scale == 0:
            return np.concatenate([[1.0], centre])
        r = rng.multivariate_normal(centre, self.cov * (self.bandwidth * scale) ** 2, method="cholesky")
        return np.concatenate([[1.0], r])


@lru_cache(maxsize=None)
def load_priors() -> dict[str, CoefficientPrior]:
    """The shipped coefficient priors ``{'GALAXY': ..., 'QSO': ...}``.

    Raises:
        TemplateError: if ``coefficient_priors.json`` is missing or malformed.
    """
    path = templates_dir() / PRIORS_FILE
    try:
        raw = json.loads(path.read_text())
        return {
            kind: CoefficientPrior(
                kind=kind,
                mean=np.asarray(p["mean"], dtype=np.float64),
                cov=np.asarray(p["cov"], dtype=np.float64),
                samples=np.asarray(p["samples"], dtype=np.float64),
                sample_subclass=tuple(str(x) for x in p["sample_subclass"]),
                n_spectra=int(p["n_spectra"]),
                sources=str(p["sources"]),
            )
            for kind, p in raw["priors"].items()
        }
    except FileNotFoundError as exc:
        raise TemplateError(f"{path}: coefficient prior file not found (run python -m specclass.simulate.assets)") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise TemplateError(f"{path}: malformed coefficient prior file ({exc})") from exc


@dataclass(frozen=True)
class IvarBank:
    """Real SDSS inverse-variance vectors on the simulator grid, normalised to median 1.

    Attributes:
        loglam: ``(L,)`` float64 grid the rows are on, log10 vacuum Å.
        ivar: ``(M, L)`` float32 relative ivar (0 = masked / no coverage).
        files: ``M`` source file names.
    """

    loglam: np.ndarray
    ivar: np.ndarray
    files: tuple[str, ...]


@lru_cache(maxsize=None)
def load_ivar_bank() -> IvarBank:
    """The shipped bank of real ivar rows (``ivar_bank.npz``).

    Raises:
        TemplateError: if the file is missing or malformed.
    """
    path = templates_dir() / IVAR_BANK_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            ivar = z["ivar"].astype(np.float32)
            loglam = z["loglam"].astype(np.float64)
            files = tuple(str(f) for f in z["files"])
    except FileNotFoundError as exc:
        raise TemplateError(f"{path}: ivar bank not found (run python -m specclass.simulate.assets)") from exc
    except (KeyError, ValueError) as exc:
        raise TemplateError(f"{path}: malformed ivar bank ({exc})") from exc
    if ivar.ndim != 2 or ivar.shape[1] != loglam.shape[0] or len(files) != ivar.shape[0]:
        raise TemplateError(f"{path}: ivar {ivar.shape}, loglam {loglam.shape}, files {len(files)} disagree")
    return IvarBank(loglam=loglam, ivar=ivar, files=files)



def simulator_grid() -> np.ndarray:
    """``(L,)`` float64 log10 vacuum Å: the project's default common grid,
    ``specclass.spectra.grid.LogLamGrid()`` (3.58-3.96, 1e-4 dex, 3801 pixels)."""
    from specclass.spectra.grid import LogLamGrid

    return np.asarray(LogLamGrid().loglam, dtype=np.float64)
