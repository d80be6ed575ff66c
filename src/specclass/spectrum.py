"""The one in-memory spectrum type every reader returns.

Conventions follow the SDSS spec-lite data model
(https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/lite/PLATE4/spec.html):
``loglam`` is log10 of the vacuum wavelength in Å, ``flux`` is in
1e-17 erg/s/cm²/Å, ``ivar`` is the inverse variance of ``flux`` (0 = no data),
``and_mask`` is the per-pixel AND of the exposure masks (SPPIXMASK bits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SpectrumMeta:
    """Identity and pipeline labels of one spectrum.

    Attributes:
        file: path (as given to the reader) of the file the spectrum came from.
        plate, mjd, fiberid: SDSS identifiers; -1 when the file has none.
        class_: pipeline ``CLASS`` (decoded, stripped, upper-cased: 'STAR',
            'GALAXY', 'QSO'), '' when unknown. Spelled ``class_`` because
            ``class`` is a Python keyword.
        subclass: pipeline ``SUBCLASS`` (decoded, stripped, upper-cased), '' if none.
        z: pipeline redshift, NaN when unknown.
        zwarning: ``ZWARNING`` bit mask (see :mod:`specclass.spectra.zwarning`);
            -1 when the file has none.
        run2d: idlspec2d reduction version ('26', 'v5_13_2', ...), '' if unknown.
        ra, dec: J2000 position in degrees, NaN when unknown.
        survey: 'sdss', 'boss', 'eboss', 'lamost', ... ('' when unknown).
        format: reader layout that produced it ('spec-lite', 'spec-full',
            'spSpec-dr7', 'text', 'lamost-lrs', ...).
        extra: any further header values a reader chose to keep.
    """

    file: str = ""
    plate: int = -1
    mjd: int = -1
    fiberid: int = -1
    class_: str = ""
    subclass: str = ""
    z: float = float("nan")
    zwarning: int = -1
    run2d: str = ""
    ra: float = float("nan")
    dec: float = float("nan")
    survey: str = ""
    format: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def object_key(self) -> str:
        """'PLATE-MJD-FIBERID' (zero-padded like SAS file names), or the file name."""
        if self.plate >= 0 and self.mjd >= 0 and self.fiberid >= 0:
            return f"{self.plate:04d}-{self.mjd:05d}-{self.fiberid:04d}"
        return self.file


@dataclass
class Spectrum:
    """One spectrum on its native pixel grid.

    Attributes:
        loglam: ``(npix,)`` float32, log10 vacuum wavelength in Å, increasing.
        flux: ``(npix,)`` float32, 1e-17 erg/s/cm²/Å.
        ivar: ``(npix,)`` float32, inverse variance of ``flux``; 0 means no
            information. Files without errors get ``ivar = 1`` where flux is finite.
        and_mask: ``(npix,)`` int32 SPPIXMASK AND-mask bits; zeros if the file has none.
        meta: :class:`SpectrumMeta`.
        or_mask: ``(npix,)`` int32 SPPIXMASK OR-mask bits (a bit set in any exposure);
            zeros if the file has none (the BOSS pipeline masks its BADSKYCHI and
            REDMONSTER pixels before the redshift fits, :mod:`specclass.spectro1d`).

    All arrays are native-endian and C-contiguous; the constructor checks and
    converts, so nothing big-endian leaves a reader.

    Raises:
        ValueError: if the arrays have different lengths or are not 1-D.
    """

    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    and_mask: np.ndarray
    meta: SpectrumMeta = field(default_factory=SpectrumMeta)
    or_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.loglam = np.ascontiguousarray(self.loglam, dtype=np.float32)
        self.flux = np.ascontiguousarray(self.flux, dtype=np.float32)
        self.ivar = np.ascontiguousarray(self.ivar, dtype=np.float32)
        self.and_mask = np.ascontiguousarray(self.and_mask, dtype=np.int32)
        if self.or_mask is None:
            self.or_mask = np.zeros(self.loglam.shape, dtype=np.int32)
        self.or_mask = np.ascontiguousarray(self.or_mask, dtype=np.int32)
        n = self.loglam.shape
        for name in ("flux", "ivar", "and_mask", "or_mask"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape != n:
                raise ValueError(
                    f"{self.meta.file or 'spectrum'}: {name} has shape {arr.shape}, "
                    f"loglam has {n}; all must be 1-D and equal"
                )

    @property
    def npix(self) -> int:
        """Number of pixels."""
        return int(self.loglam.shape[0])

    @property
    def wavelength(self) -> np.ndarray:
        """``(npix,)`` float64 vacuum wavelength in Å (``10**loglam``)."""
        return np.power(10.0, self.loglam.astype(np.float64))
