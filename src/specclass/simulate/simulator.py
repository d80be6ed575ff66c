"""SDSS-like labelled spectra made from the SDSS pipeline's own eigenspectra.

Method (one spectrum; every random draw comes from one ``numpy.random.Generator``
seeded by :attr:`SimulationConfig.seed`, so a seed fixes the whole output):

STAR
    One of the 40 ``spEigenStar-53724`` templates (the stellar templates the SDSS
    pipeline fits, one per SUBCLASS such as 'A0', 'F5', 'K7', 'M2', 'WD'; Bolton et al.
    2012, AJ 144, 144), chosen with :data:`STAR_GROUP_WEIGHTS`, Doppler-shifted by a
    radial velocity ``v ~ N(0, star_rv_sigma_kms)`` clipped to +-500 km/s (``z = v/c``);
    half of them blended with a neighbouring subtype (:data:`STAR_SEQUENCE`).
GALAXY
    ``spEigenGal-56436`` eigenspectra with their emission lines removed, combined with
    coefficients drawn from a kernel-density estimate of how real SDSS galaxies project
    onto them (:class:`~specclass.simulate.templates.CoefficientPrior`; line-less
    galaxies around real quiescent/AGN hosts, star-forming ones around real star-forming
    galaxies, AGN around all), redrawn until the continuum is positive, at
    ``z ~ U(galaxy_z)`` (10 % at ``z ~ U(galaxy_nearby_z)``, 0-0.01). SUBCLASS '' (no lines), 'STARFORMING' or 'STARBURST' (Hα
    equivalent width above 50 Å, the SDSS rule) get narrow lines with ratios below the
    SDSS AGN line (the star-forming sequence, and in 35 % of draws composites and LINER-like
    ratios, which SDSS also calls STARFORMING); 'AGN' gets narrow lines above it
    (:func:`specclass.simulate.lines.draw_line_ratios`). Emission-line galaxies have
    ``z <= emission_z_max`` so Hα stays on the grid (the pipeline needs it for the BPT
    subclass).
QSO
    ``spEigenQSO-55732`` eigenspectra (broad and narrow lines, Lyα forest mean
    absorption are in the templates) with coefficients drawn from the kernel-density
    estimate over real SDSS quasars, at ``z ~ U(qso_z)``, times unit-mean lognormal Lyα
    forest fluctuations (:func:`~specclass.simulate.lines.lya_forest_fluctuations`), plus
    host-galaxy starlight below z = 0.8 (:data:`HOST_FRACTION`); SUBCLASS 'BROADLINE'. With
    ``qso_narrow_line_fraction > 0`` (default 0) that fraction of the quasars below z = 0.8
    also gets an extra narrow-line region (Seyfert BPT ratios, [OIII] 5007 rest EW log-uniform
    in :data:`QSO_NLR_EW_OIII`, sigma 150-450 km/s), aimed at low-z quasars with strong narrow
    [OIII] beside broad Balmer lines (spec-0851-52376-0443, spec-2025-53431-0603), which the
    network calls GALAXY. It is off by default: at 0.5 the 5-fold cross-validation lost QSO
    recall (203 -> 200 of 216, seed4) and still called those quasars GALAXY
    (``benchmarks/results/accuracy-cv5-qsonlr-seed4.md``). Pixels whose rest wavelength lies
    outside the template get ``ivar = 0``.

All classes then get a smooth spectrophotometric calibration error
(:data:`FLUXCAL_SIGMA`), Milky-Way foreground dust (Cardelli, Clayton & Mathis 1989, ApJ
345, 245, R_V = 3.1; ``E(B-V) ~ Exp(0.03)`` capped at 0.25, typical of SDSS high-latitude
fields, Schlegel et al. 1998), a flux scale from an AB r magnitude (STAR 14.5-20,
GALAXY 14.5-17.77 = the main-sample limit of Strauss et al. 2002, QSO 17-21), and
the noise model of :mod:`specclass.simulate.noise` (real SDSS ivar rows scaled to a
median S/N drawn log-uniformly in ``snr_range``, sky residuals, masked stretches).
The pixel grid is :class:`specclass.spectra.grid.LogLamGrid` (SDSS 1e-4 dex pixels);
the eigenspectra are already at SDSS resolution, and added lines are convolved with
the SDSS line-spread function (:data:`~specclass.simulate.lines.SIGMA_INSTRUMENT_KMS`).

Known simplifications: S/N is drawn independently of magnitude; no damped Lyα systems,
metal absorbers or BAL troughs; galaxy continua come from 4 eigenspectra, so rare
populations (E+A, very red dusty galaxies) are only as frequent as the Gaussian prior
makes them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from specclass.simulate import lines as L
from specclass.simulate.noise import apply_noise
from specclass.simulate.writer import row_stores, write_simulation
from specclass.simulate.templates import (
    IVAR_BANK_FILE,
    PRIORS_FILE,
    TEMPLATE_FILES,
    CoefficientPrior,
    EigenTemplates,
    load_ivar_bank,
    load_priors,
    load_templates,
    templates_dir,
)
from specclass.spectra.dataset import SPLIT_CODES, SpectralDataset

#: Relative frequency of stellar template groups (first letters of the spEigenStar
#: names), roughly the mix of SDSS spectroscopic stars (mostly F/G/K/M; Yanny et al.
#: 2009, AJ 137, 4377, SEGUE); each group's weight is shared equally by its templates.
STAR_GROUP_WEIGHTS: dict[str, float] = {
    "O": 0.02, "B": 0.03, "A": 0.12, "F": 0.18, "G": 0.15, "K": 0.18, "M": 0.20,
    "W": 0.05,  # WD, WDmagnetic
    "C": 0.03,  # Carbon, Carbon_lines, CarbonWD
    "L": 0.03, "T": 0.01,
}

#: spEigenStar templates in order of effective temperature; a star drawn from one of them
#: is, with probability 1/2, blended with a neighbour (weight U(0, 0.5)) to give the
#: intermediate subtypes the 40 templates skip. Its SUBCLASS stays the nearer template's.
STAR_SEQUENCE: tuple[str, ...] = (
    "O", "OB", "B6", "B9", "A0", "F2", "F5", "F9", "G0", "G2", "G5", "K1", "K3", "K5", "K7",
    "M0V", "M1", "M2", "M2V", "M3", "M4", "M5", "M6", "M7", "M8",
    "L0", "L1", "L2", "L3", "L4", "L5", "L5.5", "L9", "T2",
)

#: rms of the smooth multiplicative spectrophotometric error applied to every spectrum
#: (first and second Legendre terms across the grid): SDSS spectrophotometry is good to
#: ~4 % (Adelman-McCarthy et al. 2008, ApJS 175, 297).
FLUXCAL_SIGMA = 0.03

#: Quasars below ``HOST_Z_MAX`` get host-galaxy starlight making a fraction
#: ``U(HOST_FRACTION)`` of the flux at rest 5100 Å: at z < 0.8 the host typically gives
#: 0-60 % of an SDSS quasar's optical light (Vanden Berk et al. 2006, AJ 131, 84;
#: Shen et al. 2011, ApJS 194, 45).
HOST_Z_MAX = 0.8
HOST_FRACTION = (0.0, 0.6)

#: Rest-frame equivalent width range (Å, log-uniform) of the extra narrow [OIII] 5007 of
#: simulated quasars: SDSS DR7 quasars have EW([OIII]) from below 1 Å to over 100 Å, median
#: ~10-20 Å (Shen et al. 2011, ApJS 194, 45).
QSO_NLR_EW_OIII = (3.0, 100.0)

#: r-band approximation used for the flux scale: top-hat 5500-6900 Å with pivot
#: wavelength 6166 Å (SDSS r, Doi et al. 2010, AJ 139, 1628).
R_BAND_WINDOW = (5500.0, 6900.0)
R_BAND_PIVOT = 6166.0

#: Class-appropriate AB r-magnitude ranges (see module docstring).
RMAG_RANGE = {"STAR": (14.5, 20.0), "GALAXY": (14.5, 17.77), "QSO": (17.0, 21.0)}

C_KMS = L.C_KMS

#: Kernel width of the coefficient draws, in units of Scott's bandwidth. Scott's rule is
#: optimal for Gaussian data and oversmooths multimodal data (Scott 1992), here
#: the red/blue galaxy bimodality, so half of it is used: the draws then reproduce the
#: real spectra's 4000 Å-to-5500 Å colour quartiles (0.57/0.69/0.85 real vs ~0.65/0.76/0.93
#: drawn before the positivity check) instead of shifting them blue.
KDE_BANDWIDTH_SCALE = 0.5


@dataclass
class SimulationConfig:
    """Parameters of one simulation run (validated by :meth:`validate`).

    Attributes:
        n_per_class: spectra per class of the label scheme (>= 1).
        labels: label scheme, 'seed4' (AGN, GALAXY, QSO, STAR) or 'class3' (GALAXY, QSO, STAR).
        seed: random seed; the same config gives byte-identical output.
        snr_range: ``(min, max)`` median S/N per pixel, drawn log-uniformly.
        galaxy_z: ``(min, max)`` redshift of galaxies without lines.
        emission_z_max: upper redshift of emission-line galaxies and AGN.
        qso_z: ``(min, max)`` quasar redshift.
        qso_lowz_fraction: fraction of quasars drawn instead from ``U(qso_lowz)``: low-z
            quasars with host light, where real spectra sit on the QSO/GALAXY/AGN boundary
            (most of the networks' errors on real spectra were there).
        qso_lowz: ``(min, max)`` redshift of those.
        galaxy_nearby_fraction: fraction of galaxies and AGN drawn instead from
            ``U(galaxy_nearby_z)``: nearby galaxies whose absorption lines sit almost at rest
            like a star's (the real SDSS galaxy spec-0522-52024-0396 at z = 0.003, an old bulge
            spectrum, was called STAR at p = 0.995 when no simulated galaxy was below z = 0.01).
        galaxy_nearby_z: ``(min, max)`` redshift of those (the pipeline's GALAXY scan starts at
            z = -0.01, spreduce1d.pro).
        qso_narrow_line_fraction: fraction of quasars below ``HOST_Z_MAX`` that get an extra
            narrow-line region (module docstring; default 0: it did not help).
        construction_counts: spectra to build per construction ('AGN', 'GALAXY', 'QSO',
            'STAR'; 0 allowed) instead of ``n_per_class`` each (used to top up a label the
            emulated pipeline rarely gives).
        star_rv_sigma_kms: standard deviation of stellar radial velocities, km/s.
        galaxy_mix: SUBCLASS -> fraction for the GALAXY class ('' = no emission lines).
        agn_fraction_class3: fraction of GALAXY spectra that are narrow-line AGN under
            'class3' (in 'seed4' AGN are their own class).
        sky_probability: chance that each night-sky line leaves a residual.
        mask_probability: chance of extra masked stretches in a spectrum.
        split_fractions: train/val/test fractions (stratified by label).
    """

    n_per_class: int = 1000
    labels: str = "seed4"
    seed: int = 0
    snr_range: tuple[float, float] = (3.0, 40.0)
    galaxy_z: tuple[float, float] = (0.01, 0.40)
    emission_z_max: float = 0.36
    qso_z: tuple[float, float] = (0.1, 4.0)
    construction_counts: dict[str, int] | None = None
    qso_lowz_fraction: float = 0.3
    qso_lowz: tuple[float, float] = (0.05, 0.8)
    galaxy_nearby_fraction: float = 0.1
    galaxy_nearby_z: tuple[float, float] = (0.0, 0.01)
    qso_narrow_line_fraction: float = 0.0
    star_rv_sigma_kms: float = 60.0
    galaxy_mix: dict[str, float] = field(default_factory=lambda: {"": 0.4, "STARFORMING": 0.45, "STARBURST": 0.15})
    agn_fraction_class3: float = 0.2
    sky_probability: float = 0.5
    mask_probability: float = 0.2
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def validate(self) -> None:
        """Check every parameter.

        Raises:
            ValueError: naming the parameter, its value and what is allowed.
        """
        if int(self.n_per_class) < 1:
            raise ValueError(f"n_per_class must be >= 1, got {self.n_per_class}")
        if self.labels not in ("seed4", "class3"):
            raise ValueError(f"labels must be 'seed4' or 'class3', got {self.labels!r}")
        lo, hi = self.snr_range
        if not 0 < lo <= hi:
            raise ValueError(f"snr_range must satisfy 0 < min <= max, got {self.snr_range}")
        for name, (a, b), top in (("galaxy_z", self.galaxy_z, 1.0), ("qso_z", self.qso_z, 7.0)):
            if not 0 <= a <= b <= top:
                raise ValueError(f"{name} must satisfy 0 <= min <= max <= {top}, got {(a, b)}")
        if not self.galaxy_z[0] <= self.emission_z_max <= 0.389:
            raise ValueError(
                f"emission_z_max must be in [galaxy_z min, 0.389] (Hα leaves the 9120 Å grid end above), "
                f"got {self.emission_z_max}"
            )
        allowed = {"", "STARFORMING", "STARBURST"}
        if set(self.galaxy_mix) - allowed or abs(sum(self.galaxy_mix.values()) - 1) > 1e-6:
            raise ValueError(f"galaxy_mix keys must be in {sorted(allowed)} with fractions summing to 1, got {self.galaxy_mix}")
        if self.construction_counts is not None and (
            set(self.construction_counts) - {"AGN", "GALAXY", "QSO", "STAR"}
            or min(self.construction_counts.values(), default=0) < 0
        ):
            raise ValueError(f"construction_counts keys must be AGN/GALAXY/QSO/STAR with counts >= 0, got {self.construction_counts}")
        if not 0 <= self.qso_lowz[0] <= self.qso_lowz[1] <= 7.0:
            raise ValueError(f"qso_lowz must satisfy 0 <= min <= max <= 7, got {self.qso_lowz}")
        if not 0 <= self.galaxy_nearby_z[0] <= self.galaxy_nearby_z[1] <= self.emission_z_max:
            raise ValueError(f"galaxy_nearby_z must satisfy 0 <= min <= max <= emission_z_max, got {self.galaxy_nearby_z}")
        for name in ("agn_fraction_class3", "sky_probability", "mask_probability", "qso_lowz_fraction",
                     "galaxy_nearby_fraction", "qso_narrow_line_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {self.split_fractions}")


def ccm89_a_over_ebv(wave: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Extinction ``A_λ / E(B-V)`` of Cardelli, Clayton & Mathis (1989, ApJ 345, 245), eqs. 2-3.

    Args:
        wave: vacuum Å, any shape, 3030-33000 Å (optical/NIR branches, 0.3 <= x <= 3.3 µm⁻¹).
        r_v: total-to-selective extinction ratio.

    Returns:
        float64 array of ``A_λ / E(B-V) = R_V a(x) + b(x)``.
    """
    x = 1e4 / np.asarray(wave, dtype=np.float64)
    a = np.empty_like(x)
    b = np.empty_like(x)
    ir = x < 1.1
    a[ir] = 0.574 * x[ir] ** 1.61
    b[ir] = -0.527 * x[ir] ** 1.61
    y = x[~ir] - 1.82
    a[~ir] = np.polyval([0.32999, -0.77530, 0.01979, 0.72085, -0.02427, -0.50447, 0.17699, 1.0], y)
    b[~ir] = np.polyval([-2.09002, 5.30260, -0.62251, -5.38434, 1.07233, 2.28305, 1.41338, 0.0], y)
    return r_v * a + b


def rmag_flux_density(rmag: float) -> float:
    """Mean f_λ (1e-17 erg/s/cm²/Å) of an AB magnitude ``rmag`` at the r pivot, ``f_ν c / λ²``."""
    f_nu = 10 ** (-0.4 * (rmag + 48.6))  # erg/s/cm²/Hz (Oke & Gunn 1983)
    return f_nu * 2.99792458e18 / R_BAND_PIVOT**2 * 1e17


class Simulator:
    """Draws SDSS-like spectra on a log-lambda grid (see the module docstring for the method).

    Args:
        config: :class:`SimulationConfig`.
        loglam: ``(L,)`` grid, log10 vacuum Å (default: ``LogLamGrid()``).

    Raises:
        ValueError: invalid config.
        TemplateError: shipped templates, priors or ivar bank missing/malformed.
    """

    def __init__(self, config: SimulationConfig, loglam: np.ndarray | None = None) -> None:
        from specclass.spectra.grid import LogLamGrid

        config.validate()
        self.config = config
        self.grid = LogLamGrid() if loglam is None else LogLamGrid.from_loglam(loglam)
        self.loglam = self.grid.loglam
        self.wave = 10**self.loglam
        self.templates: dict[str, EigenTemplates] = {k: load_templates(k) for k in TEMPLATE_FILES}
        self.priors: dict[str, CoefficientPrior] = load_priors()
        bank = load_ivar_bank()
        # bank rows onto this grid by nearest pixel (identity for the default grid)
        idx = np.rint((self.loglam - bank.loglam[0]) / (bank.loglam[1] - bank.loglam[0])).astype(int)
        inside = (idx >= 0) & (idx < bank.loglam.size)
        self.bank = np.zeros((bank.ivar.shape[0], self.loglam.size), dtype=np.float32)
        self.bank[:, inside] = bank.ivar[:, idx[inside]]
        self.bank_files = bank.files
        self.mw_a = ccm89_a_over_ebv(self.wave)
        star = self.templates["STAR"]
        w = np.array([STAR_GROUP_WEIGHTS.get(n[0].upper(), 0.0) for n in star.names])
        for g in set(n[0].upper() for n in star.names):
            members = [i for i, n in enumerate(star.names) if n[0].upper() == g]
            w[members] /= len(members)
        self.star_p = w / w.sum()
        nz = star.flux > 0
        self.star_first = nz.argmax(axis=1)
        self.star_last = nz.shape[1] - 1 - nz[:, ::-1].argmax(axis=1)
        star_wave = 10**star.loglam
        self.star_rband = (star_wave >= R_BAND_WINDOW[0]) & (star_wave <= R_BAND_WINDOW[1])
        x = np.linspace(-1.0, 1.0, self.loglam.size)
        self.legendre = np.stack([x, 0.5 * (3 * x**2 - 1)])  # P1, P2 across the grid
        self.rband = (self.wave >= R_BAND_WINDOW[0]) & (self.wave <= R_BAND_WINDOW[1])
        # continua of line-less galaxies come from real galaxies without a star-forming
        # subclass, those of star-forming ones from real star-forming galaxies (blue), AGN
        # hosts from all real galaxies
        gp = self.priors["GALAXY"]
        self.galaxy_kernels = {
            "": gp.kernels(("", "AGN")),
            "STARFORMING": gp.kernels(("STARFORMING", "STARBURST")),
            "STARBURST": gp.kernels(("STARFORMING", "STARBURST")),
            "AGN": gp.kernels(),
        }

    # ----------------------------------------------------------- components
    def _star(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        t = self.templates["STAR"]
        k = int(rng.choice(len(t.names), p=self.star_p))
        v = float(np.clip(rng.normal(0.0, self.config.star_rv_sigma_kms), -500, 500))
        z = v / C_KMS
        shifted = t.loglam + np.log10(1 + z)
        lo, hi = shifted[self.star_first[k]], shifted[self.star_last[k]]
        row = t.flux[k]
        template = f"{t.file}:{t.names[k]}"
        if t.names[k] in STAR_SEQUENCE and rng.random() < 0.5:
            pos = STAR_SEQUENCE.index(t.names[k])
            options = [STAR_SEQUENCE[p] for p in (pos - 1, pos + 1) if 0 <= p < len(STAR_SEQUENCE)]
            j = t.names.index(options[int(rng.integers(len(options)))])
            w = float(rng.uniform(0.0, 0.5))
            band = self.star_rband
            row = (1 - w) * row / row[band].mean() + w * t.flux[j] / t.flux[j][band].mean()
            lo, hi = max(lo, shifted[self.star_first[j]]), min(hi, shifted[self.star_last[j]])
            template += f"+{w:.2f}*{t.names[j]}"
        flux = np.interp(self.loglam, shifted, row, left=0.0, right=0.0)
        cov = (self.loglam >= lo) & (self.loglam <= hi)
        return flux, cov, {"class": "STAR", "subclass": t.names[k], "z": z, "template": template}

    def _eigen_continuum(
        self, rng: np.random.Generator, kind: str, z: float, kernels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positive eigen-combination at ``z`` on the grid: ``(flux, coverage, coefficients)``."""
        t = self.templates[kind]
        prior = self.priors[kind]
        rest = self.loglam - np.log10(1 + z)
        cov = (rest >= t.loglam[0]) & (rest <= t.loglam[-1])
        i0 = max(int(np.searchsorted(t.loglam, rest[cov][0])) - 1, 0) if cov.any() else 0
        i1 = int(np.searchsorted(t.loglam, rest[cov][-1])) + 1 if cov.any() else 0
        block = t.flux[:, i0:i1]
        for attempt in range(200):
            c = prior.draw(rng, scale=KDE_BANDWIDTH_SCALE / (1 if attempt < 100 else 2), kernels=kernels)
            s = c @ block
            if (s <= 0).mean() <= 0.01 and np.median(s) > 0:
                break
        else:  # fall back on a real spectrum's own coefficients
            c = prior.draw(rng, scale=0.0, kernels=kernels)
            s = c @ block
        s = np.clip(s, 0.0, None)
        flux = np.zeros(self.loglam.size)
        flux[cov] = np.interp(rest[cov], t.loglam[i0:i1], s)
        return flux, cov, c

    def _galaxy(self, rng: np.random.Generator, subclass: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        cfg = self.config
        zmax = cfg.galaxy_z[1] if subclass == "" else min(cfg.galaxy_z[1], cfg.emission_z_max)
        if cfg.galaxy_nearby_fraction > 0 and rng.random() < cfg.galaxy_nearby_fraction:
            z = float(rng.uniform(*cfg.galaxy_nearby_z))
        else:
            z = float(rng.uniform(cfg.galaxy_z[0], zmax))
        flux, cov, c = self._eigen_continuum(rng, "GALAXY", z, self.galaxy_kernels[subclass])
        info: dict[str, Any] = {"class": "GALAXY", "subclass": subclass, "z": z, "template": self.templates["GALAXY"].file}
        if subclass:
            kind = "AGN" if subclass == "AGN" else "STARFORMING"
            ratios = L.draw_line_ratios(rng, kind)
            ew_range = {"STARFORMING": (3.0, 50.0), "STARBURST": (50.0, 300.0), "AGN": (3.0, 40.0)}[subclass]
            ew = float(np.exp(rng.uniform(*np.log(ew_range))))
            ha_obs = L.LINES_VACUUM["Halpha"] * (1 + z)
            cont_ha = float(np.interp(np.log10(ha_obs), self.loglam, flux))
            ha_flux = ew * (1 + z) * cont_ha  # EW_obs = EW_rest (1+z)
            ebv_gas = float(rng.uniform(0.0, 0.6))
            # Balmer decrement: case B 2.86 (HII regions) or 3.1 (AGN NLR, Halpern & Steiner 1983),
            # reddened with k(Hβ) - k(Hα) = 3.61 - 2.53 (Cardelli et al. 1989).
            intrinsic = 3.1 if kind == "AGN" else L.CASE_B_TO_HBETA["Halpha"]
            decrement = intrinsic * 10 ** (0.4 * ebv_gas * (3.61 - 2.53))
            fl = L.line_fluxes(ratios, ha_flux, decrement)
            names = list(fl)
            centers = np.array([L.LINES_VACUUM[n] for n in names]) * (1 + z)
            # intrinsic sigma; narrow-line regions of type-2 AGN: ~70-250 km/s (Greene & Ho 2005,
            # ApJ 627, 721). Broader ones become 'AGN BROADLINE' under pipeline labels.
            sigma = float(rng.uniform(70.0, 260.0) if kind == "AGN" else rng.uniform(30.0, 120.0))
            flux = flux + L.render_lines(self.loglam, centers, np.array([fl[n] for n in names]), sigma)
            info.update(
                log_nii_ha=ratios["log_nii_ha"], log_oiii_hb=ratios["log_oiii_hb"], ew_halpha=ew, sigma_kms=sigma
            )
        return flux, cov, info

    def _qso(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        lowz = self.config.qso_lowz_fraction > 0 and rng.random() < self.config.qso_lowz_fraction
        z = float(rng.uniform(*(self.config.qso_lowz if lowz else self.config.qso_z)))
        flux, cov, c = self._eigen_continuum(rng, "QSO", z)
        flux = flux * L.lya_forest_fluctuations(rng, self.loglam, z)
        info: dict[str, Any] = {"class": "QSO", "subclass": "BROADLINE", "z": z, "template": self.templates["QSO"].file}
        nlr = self.config.qso_narrow_line_fraction
        if z < HOST_Z_MAX and nlr > 0 and rng.random() < nlr:  # no draw at 0: the random stream is unchanged
            flux = flux + self._narrow_line_region(rng, flux, z, info)
        if z < HOST_Z_MAX:
            # host galaxy starlight: a line-less galaxy continuum at the same z, scaled so it
            # makes a fraction f_host of the total at rest 5100 Å (or the reddest 100 Å on the grid)
            f_host = float(rng.uniform(*HOST_FRACTION))
            host, _, _ = self._eigen_continuum(rng, "GALAXY", z, self.galaxy_kernels[""])
            ref = min(np.log10(5100.0 * (1 + z)), self.loglam[-1] - 0.005)
            win = np.abs(self.loglam - ref) < 0.004
            q_ref, h_ref = float(np.median(flux[win])), float(np.median(host[win]))
            if q_ref > 0 and h_ref > 0:
                flux = flux + host * (f_host / (1 - f_host)) * q_ref / h_ref
                info["host_fraction"] = f_host
        return flux, cov, info

    def _narrow_line_region(self, rng: np.random.Generator, flux: np.ndarray, z: float, info: dict[str, Any]) -> np.ndarray:
        """``(L,)`` narrow Seyfert lines for a quasar continuum ``flux`` at ``z`` (records them in ``info``)."""
        ratios = L.draw_line_ratios(rng, "AGN")
        ew = float(np.exp(rng.uniform(*np.log(QSO_NLR_EW_OIII))))
        cont = float(np.interp(np.log10(L.LINES_VACUUM["OIII_5008"] * (1 + z)), self.loglam, flux))
        if cont <= 0:
            return np.zeros_like(flux)
        decrement = 3.1  # AGN narrow-line region (Halpern & Steiner 1983), no extra dust
        halpha = ew * (1 + z) * cont * decrement / 10 ** ratios["log_oiii_hb"]
        fl = L.line_fluxes(ratios, halpha, decrement)
        names = list(fl)
        centers = np.array([L.LINES_VACUUM[n] for n in names]) * (1 + z)
        sigma = float(rng.uniform(150.0, 450.0))
        info.update(narrow_ew_oiii=ew, log_nii_ha=ratios["log_nii_ha"], log_oiii_hb=ratios["log_oiii_hb"], sigma_kms=sigma)
        return L.render_lines(self.loglam, centers, np.array([fl[n] for n in names]), sigma)

    # ----------------------------------------------------------- one spectrum
    def spectrum(self, rng: np.random.Generator, class_: str, subclass: str = "") -> dict[str, Any]:
        """Draw one spectrum of pipeline ``class_`` ('STAR', 'GALAXY', 'QSO') and ``subclass``.

        Returns:
            dict with ``flux``, ``ivar``, ``truth`` (``(L,)`` float32, noise-free flux in
            1e-17 erg/s/cm²/Å), ``coverage`` (bool), and the drawn parameters
            (``class``, ``subclass``, ``z``, ``rmag``, ``ebv``, ``snr``, ``template``,
            ``ivar_source`` and, for emission-line galaxies, ``log_nii_ha``,
            ``log_oiii_hb``, ``ew_halpha``, ``sigma_kms``; for quasars with an extra
            narrow-line region ``log_nii_ha``, ``log_oiii_hb``, ``sigma_kms`` and
            ``narrow_ew_oiii``, rest Å).

        Raises:
            ValueError: unknown ``class_``.
        """
        if class_ == "STAR":
            truth, cov, info = self._star(rng)
        elif class_ == "GALAXY":
            truth, cov, info = self._galaxy(rng, subclass)
        elif class_ == "QSO":
            truth, cov, info = self._qso(rng)
        else:
            raise ValueError(f"class_ must be STAR, GALAXY or QSO, got {class_!r}")
        ebv = float(min(rng.exponential(0.03), 0.25))
        fluxcal = rng.normal(0.0, FLUXCAL_SIGMA, size=2)
        truth = truth * 10 ** (-0.4 * ebv * self.mw_a) * np.exp(fluxcal @ self.legendre)
        rmag = float(rng.uniform(*RMAG_RANGE[class_]))
        band = self.rband & cov
        mean = truth[band].mean() if band.any() else truth[cov].mean() if cov.any() else 0.0
        if mean > 0:
            truth = truth * (rmag_flux_density(rmag) / mean)
        row = int(rng.integers(self.bank.shape[0]))
        lo, hi = np.log(self.config.snr_range)
        snr = float(np.exp(rng.uniform(lo, hi)))
        flux, ivar = apply_noise(
            rng, self.loglam, truth, cov, self.bank[row], snr,
            sky_probability=self.config.sky_probability, mask_probability=self.config.mask_probability,
        )
        info.update(
            flux=flux, ivar=ivar, truth=truth.astype(np.float32), coverage=cov,
            rmag=rmag, ebv=ebv, snr=snr, ivar_source=self.bank_files[row],
        )
        return info

    # ----------------------------------------------------------- a dataset
    def plan(self) -> list[tuple[str, str, str]]:
        """``(label, class, subclass)`` for every spectrum, in generation order (before shuffling)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 1])
        mix = dict(cfg.galaxy_mix)
        if cfg.labels == "class3":
            mix = {k: v * (1 - cfg.agn_fraction_class3) for k, v in mix.items()}
            mix["AGN"] = cfg.agn_fraction_class3
        keys = list(mix)
        counts = {c: cfg.n_per_class for c in ("AGN", "GALAXY", "QSO", "STAR")}
        counts.update(cfg.construction_counts or {})
        gal_sub = rng.choice(len(keys), size=counts["GALAXY"], p=np.array([mix[k] for k in keys]))
        out: list[tuple[str, str, str]] = []
        if cfg.labels == "seed4":
            out += [("AGN", "GALAXY", "AGN")] * counts["AGN"]
        out += [("GALAXY", "GALAXY", keys[i]) for i in gal_sub]
        out += [("QSO", "QSO", "BROADLINE")] * counts["QSO"]
        out += [("STAR", "STAR", "")] * counts["STAR"]
        return out

    def run(self, return_truth: bool = False, progress: bool = False, *, out: Any = None,
            storage_dtype: str = "float32", compression: str = "gzip") -> Any:
        """Simulate ``n_per_class`` spectra per class as a :class:`SpectralDataset`.

        Rows are shuffled (seeded); ``meta['source'] = 'simulated'``, ``class``,
        ``subclass``, ``z``, ``zwarning = 0``, a train/val/test ``split`` stratified by
        label, and extra columns with the drawn parameters: ``sim_snr`` (requested median
        S/N), ``sim_rmag`` (AB r), ``sim_ebv`` (Milky-Way E(B-V)), ``sim_template``,
        ``sim_ivar_source`` (real file whose ivar shape was used), and for emission-line
        galaxies (and quasars with an extra narrow-line region) ``sim_log_nii_ha``,
        ``sim_log_oiii_hb``, ``sim_sigma_kms``, for galaxies ``sim_ew_halpha`` (rest Å), and for quasars at z < :data:`HOST_Z_MAX` ``sim_host_fraction``
        (NaN otherwise). ``attrs`` record the method, config, seed,
        package version and the sha256 of every asset used.

        Memory: without ``out`` the whole dataset is built in memory (about 30 kB per
        spectrum on the default grid, twice that with ``return_truth``); with ``out``
        only the metadata columns and one chunk of spectra.

        Args:
            return_truth: also return the ``(N, L)`` float32 noise-free fluxes.
            progress: show a tqdm progress bar.
            out: write the dataset to this ``.h5`` file chunk by chunk instead of
                returning it (memory independent of N; same bytes as ``run().save(out)``
                for float32; :mod:`specclass.simulate.writer`); not with ``return_truth``.
            storage_dtype: with ``out``: ``"float32"`` or ``"float16"`` on disk.
            compression: with ``out``: 'gzip' or 'none'
                (:data:`specclass.spectra.ondisk.COMPRESSIONS`).

        Returns:
            The dataset, or ``(dataset, truth)``; with ``out``, the path written.
        """
        from specclass import __version__
        from specclass.spectra.labels import get_scheme

        cfg = self.config
        scheme = get_scheme(cfg.labels)
        class_names = list(scheme.fixed_classes)
        plan = self.plan()
        n, npix = len(plan), self.loglam.size
        if out is not None and return_truth:
            raise ValueError("run(out=...) writes a file; return_truth needs the in-memory path")
        flux, ivar = row_stores(n, npix, out)
        truth = np.zeros((n, npix), np.float32) if return_truth else None
        cols: dict[str, list[Any]] = {k: [] for k in (
            "class", "subclass", "z", "sim_snr", "sim_rmag", "sim_ebv", "sim_template", "sim_ivar_source",
            "sim_log_nii_ha", "sim_log_oiii_hb", "sim_ew_halpha", "sim_sigma_kms", "sim_host_fraction")}
        labels = np.zeros(n, np.int32)
        rng = np.random.default_rng([cfg.seed, 0])
        it = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="simulate", unit="spec")
        t0 = time.perf_counter()
        for i in it:
            label, class_, subclass = plan[i]
            s = self.spectrum(rng, class_, subclass)
            check, why = scheme(s["class"], s["subclass"])
            if check != label:  # the simulator's own contract with the label scheme
                raise AssertionError(f"simulated {s['class']}/{s['subclass']} labels as {check} ({why}), wanted {label}")
            flux[i], ivar[i] = s["flux"], s["ivar"]
            if truth is not None:
                truth[i] = s["truth"]
            labels[i] = class_names.index(label)
            for k, src in (("class", "class"), ("subclass", "subclass"), ("z", "z"), ("sim_snr", "snr"),
                           ("sim_rmag", "rmag"), ("sim_ebv", "ebv"), ("sim_template", "template"),
                           ("sim_ivar_source", "ivar_source"), ("sim_log_nii_ha", "log_nii_ha"),
                           ("sim_log_oiii_hb", "log_oiii_hb"), ("sim_ew_halpha", "ew_halpha"),
                           ("sim_sigma_kms", "sigma_kms"), ("sim_host_fraction", "host_fraction")):
                cols[k].append(s.get(src, np.nan))
        elapsed = time.perf_counter() - t0
        order = np.random.default_rng([cfg.seed, 2]).permutation(n)
        meta: dict[str, np.ndarray] = {}
        for k, v in cols.items():
            arr = np.asarray(v)
            meta[k] = (arr.astype(str) if arr.dtype.kind in "OU" else arr.astype(np.float32))[order]
        meta["zwarning"] = np.zeros(n, np.int32)
        ids = np.array([f"sim-{cfg.seed}-{i:07d}" for i in range(n)])
        meta["file"] = ids
        meta["object_id"] = ids
        for k in ("source", "survey", "format"):
            meta[k] = np.full(n, "simulated")
        labels = labels[order]
        meta["split"] = _stratified_split(labels, cfg.split_fractions, np.random.default_rng([cfg.seed, 3]))
        attrs = {
            "label_scheme": cfg.labels,
            "grid": self.grid.to_dict(),
            "created_by": f"specclass {__version__} simulate",
            "simulation": {
                "method": "SDSS pipeline eigenspectra (spEigenStar/Gal/QSO) x coefficient priors fitted to real "
                "SDSS spectra + BPT-consistent narrow lines + MW dust + real SDSS ivar noise, sky residuals, "
                "masks (specclass.simulate.simulator module docstring)",
                "config": asdict(cfg),
                "seed": cfg.seed,
                "sources": _asset_hashes(),
                "seconds": round(elapsed, 3),
            },
            "build_report": {"n": n, "per_class": {c: int((labels == j).sum()) for j, c in enumerate(class_names)}},
        }
        if out is not None:
            return write_simulation(out, flux, ivar, order, labels, class_names, self.loglam, meta, attrs,
                                    storage_dtype=storage_dtype, compression=compression)
        ds = SpectralDataset(
            flux=flux[order], ivar=ivar[order], labels=labels, class_names=class_names,
            loglam=self.loglam, meta=meta, attrs=attrs,
        )
        if return_truth:
            return ds, truth[order]
        return ds


def _stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """int8 split codes (0 train, 1 val, 2 test), per label in proportion to ``fractions``.

    A class with at least 3 rows keeps at least one validation and one test row when
    the fraction is > 0 (so a small simulated file can be trained on as it is)."""
    split = np.zeros(labels.size, np.int8)
    for lab in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        n_val = int(round(fractions[1] * idx.size))
        n_test = int(round(fractions[2] * idx.size))
        if idx.size >= 3:
            n_val = max(n_val, int(fractions[1] > 0))
            n_test = max(n_test, int(fractions[2] > 0))
        split[idx[:n_test]] = SPLIT_CODES["test"]
        split[idx[n_test : n_test + n_val]] = SPLIT_CODES["val"]
    return split


def _asset_hashes() -> dict[str, str]:
    """``{file name: sha256}`` of the templates, priors and ivar bank used."""
    out = {}
    for name in (*TEMPLATE_FILES.values(), PRIORS_FILE, IVAR_BANK_FILE):
        out[name] = hashlib.sha256((templates_dir() / name).read_bytes()).hexdigest()
    return out


#: Where the labels of simulated spectra come from: 'pipeline' (the emulated SDSS decision,
#: :mod:`specclass.simulate.pipeline_labels`; the default since it raised cross-validated
#: accuracy on real spectra, README "Benchmarks") or 'construction' (what was built).
LABEL_SOURCES = ("pipeline", "construction")


def simulate(
    n_per_class: int, labels: str = "seed4", seed: int = 0, return_truth: bool = False,
    label_source: str = "pipeline", workers: int | None = None, **options: Any
) -> SpectralDataset | tuple[SpectralDataset, np.ndarray]:
    """Simulate a labelled SDSS-like dataset (convenience wrapper over :class:`Simulator`).

    Args:
        n_per_class: spectra built per class (with ``label_source='pipeline'`` the counts per
            label follow the emulated pipeline's decision, and rows it cannot label are dropped).
        labels: 'seed4' or 'class3'.
        seed: random seed.
        return_truth: also return the noise-free ``(N, L)`` float32 fluxes.
        label_source: 'pipeline' or 'construction' (:data:`LABEL_SOURCES`).
        workers: processes for the pipeline labels (default: all CPUs this process may use).
        **options: any other :class:`SimulationConfig` field.

    Returns:
        :class:`~specclass.spectra.dataset.SpectralDataset` with ``N = n_per_class x n_classes``
        rows on ``LogLamGrid()`` (``(N, 3801)`` float32 flux and ivar), or ``(dataset, truth)``.

    Raises:
        ValueError: invalid option (names it).

    Example:
        >>> ds = simulate(5, labels="class3", seed=1)
        >>> ds.flux.shape, ds.class_names
        ((15, 3801), ['GALAXY', 'QSO', 'STAR'])
    """
    unknown = set(options) - set(SimulationConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown simulation option(s) {sorted(unknown)}")
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    cfg = SimulationConfig(n_per_class=n_per_class, labels=labels, seed=seed, **options)
    out = Simulator(cfg).run(return_truth=return_truth)
    if label_source == "construction":
        return out
    from specclass.simulate.pipeline_labels import label_like_the_pipeline

    if return_truth:
        raise ValueError("return_truth needs label_source='construction' (pipeline labels drop and add rows)")
    return label_like_the_pipeline(out, cfg, workers=workers)
