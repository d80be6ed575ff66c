"""Training-time augmentation of gridded spectra (part of :mod:`specclass.training`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Random, physically motivated perturbations of gridded spectra (training only).

    Each spectrum of a batch is perturbed independently (before normalisation):

    * ``flux_scale``: flux times ``exp(u)``, ``u ~ U(-flux_scale, flux_scale)``,
      ivar divided by the square of that factor (distance/aperture changes; with
      the scale-free default normalisation this only matters for ``"none"``);
    * ``noise``: extra Gaussian noise of ``a / sqrt(ivar)`` per good pixel, ``a ~
      U(0, noise)``, ivar reduced to ``ivar / (1 + a**2)`` (a fainter twin of the
      same object);
    * ``mask_prob``/``mask_max_frac``: with probability ``mask_prob``, one random
      contiguous chunk of up to ``mask_max_frac`` of the grid gets ivar 0 (bad
      columns, dropped CCD regions, sky residual masking);
    * ``shift_pixels``: shift by ``k ~ U{-s..s}`` pixels; on a log-lambda grid
      with step ``d`` dex this is a redshift change ``(1+z) -> (1+z) * 10**(k d)``
      (1e-4 dex: ``dz/(1+z) = 2.3e-4`` per pixel); pixels shifted in from the edge
      get ivar 0.

    ``Augmentation.off()`` disables everything; :func:`train` uses no
    augmentation unless asked.
    """

    flux_scale: float = 0.5
    noise: float = 1.0
    mask_prob: float = 0.3
    mask_max_frac: float = 0.05
    shift_pixels: int = 3

    @classmethod
    def off(cls) -> "Augmentation":
        """No perturbation at all."""
        return cls(0.0, 0.0, 0.0, 0.0, 0)

    @property
    def enabled(self) -> bool:
        """True if any perturbation is on."""
        return bool(self.flux_scale or self.noise or (self.mask_prob and self.mask_max_frac) or self.shift_pixels)

    def apply(self, flux: np.ndarray, ivar: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Perturb a batch.

        Args:
            flux, ivar: ``(B, L)`` arrays (not modified).
            rng: NumPy random generator.

        Returns:
            ``(flux, ivar)``: new ``(B, L)`` float32 arrays.
        """
        flux = np.array(flux, dtype=np.float32, copy=True)
        ivar = np.array(ivar, dtype=np.float32, copy=True)
        b, n = flux.shape
        if self.flux_scale:
            s = np.exp(rng.uniform(-self.flux_scale, self.flux_scale, size=(b, 1))).astype(np.float32)
            flux *= s
            ivar /= s * s
        if self.noise:
            a = rng.uniform(0.0, self.noise, size=(b, 1)).astype(np.float32)
            good = ivar > 0
            sigma = np.zeros_like(ivar)
            np.divide(1.0, np.sqrt(ivar, where=good, out=np.zeros_like(ivar)), where=good, out=sigma)
            flux += np.where(good, a * sigma * rng.standard_normal((b, n)).astype(np.float32), 0.0)
            ivar /= 1.0 + a * a
        if self.mask_prob and self.mask_max_frac:
            hit = rng.random(b) < self.mask_prob
            for i in np.flatnonzero(hit):
                width = int(rng.integers(1, max(2, int(self.mask_max_frac * n) + 1)))
                start = int(rng.integers(0, max(1, n - width + 1)))
                ivar[i, start : start + width] = 0.0
        if self.shift_pixels:
            shifts = rng.integers(-self.shift_pixels, self.shift_pixels + 1, size=b)
            for i in np.flatnonzero(shifts):
                k = int(shifts[i])
                flux[i] = np.roll(flux[i], k)
                ivar[i] = np.roll(ivar[i], k)
                if k > 0:
                    ivar[i, :k] = 0.0
                else:
                    ivar[i, k:] = 0.0
        return flux, ivar

    def to_dict(self) -> dict[str, Any]:
        """JSON dict of the settings."""
        return {
            "flux_scale": self.flux_scale,
            "noise": self.noise,
            "mask_prob": self.mask_prob,
            "mask_max_frac": self.mask_max_frac,
            "shift_pixels": self.shift_pixels,
        }
