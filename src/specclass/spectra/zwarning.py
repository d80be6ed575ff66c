"""SDSS ``ZWARNING`` bits: names, decoding, and the "golden" filter.

Bit assignments are those of the SDSS-III/IV spectroscopic pipeline (idlspec2d;
idlutils ``data/sdss/sdssMaskbits.par``, https://www.sdss4.org/dr17/algorithms/bitmasks/#ZWARNING):

====  ==================  ==================================================
bit   name                meaning
====  ==================  ==================================================
0     SKY                 sky fibre
1     LITTLE_COVERAGE     too little wavelength coverage (WCOVERAGE < 0.18)
2     SMALL_DELTA_CHI2    best fit's chi2 too close to the second best
3     NEGATIVE_MODEL      synthetic spectrum is negative (stars and QSOs)
4     MANY_OUTLIERS       too many points > 5 sigma from the best model
5     Z_FITLIMIT          chi2 minimum at the edge of the redshift range
6     NEGATIVE_EMISSION   a QSO line has negative emission
7     UNPLUGGED           fibre unplugged: no spectrum
8     BAD_TARGET          catastrophically bad targeting data
9     NODATA              no data for this fibre (e.g. broken fibre)
====  ==================  ==================================================

DR7 and earlier (``spSpec`` files, header keyword ``Z_WARNIN``) used a different
set of bits under the same idea; those values cannot be decoded with this
table. :func:`decode` names them ``DR7_BIT<n>`` when told the value is a DR7
one, and :func:`golden` still keeps only 0 (no warning), which means the same
in both schemes.

The seed tutorial's "golden dataset" keeps spectra with ``zwarning == 0``
(:func:`golden`); a build report counts the removals per bit name
(:func:`count_removals`), so a spectrum with two bits set counts once under each.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

#: Bit number -> name (SDSS-III/IV ZWARNING).
ZWARNING_BITS: dict[int, str] = {
    0: "SKY",
    1: "LITTLE_COVERAGE",
    2: "SMALL_DELTA_CHI2",
    3: "NEGATIVE_MODEL",
    4: "MANY_OUTLIERS",
    5: "Z_FITLIMIT",
    6: "NEGATIVE_EMISSION",
    7: "UNPLUGGED",
    8: "BAD_TARGET",
    9: "NODATA",
}
#: Name -> bit number.
ZWARNING_NAMES: dict[str, int] = {name: bit for bit, name in ZWARNING_BITS.items()}

#: ``ZWARNING`` value of a sky fibre (bit 0).
SKY = 1 << ZWARNING_NAMES["SKY"]


def decode(zwarning: int, *, dr7: bool = False) -> list[str]:
    """Names of the bits set in ``zwarning``, lowest bit first.

    Args:
        zwarning: the bit mask (``int``; must be >= 0).
        dr7: the value is a DR7 ``Z_WARNIN``: bits are named ``DR7_BIT<n>``.

    Returns:
        e.g. ``decode(6) == ['LITTLE_COVERAGE', 'SMALL_DELTA_CHI2']``; bits above 9
        come back as ``'BIT<n>'``; ``[]`` for 0.

    Raises:
        ValueError: if ``zwarning`` is negative (-1 means "unknown" in a
            :class:`~specclass.spectrum.SpectrumMeta`; decide what that means first).
    """
    z = int(zwarning)
    if z < 0:
        raise ValueError(f"zwarning must be >= 0 to decode, got {z} (-1 means unknown)")
    if dr7:
        return [f"DR7_BIT{b}" for b in range(z.bit_length()) if z >> b & 1]
    return [ZWARNING_BITS.get(b, f"BIT{b}") for b in range(z.bit_length()) if z >> b & 1]


def encode(names: Iterable[str] | str) -> int:
    """Bit mask from names (case-insensitive; a string may hold several, comma- or space-separated).

    Raises:
        ValueError: an unknown name (lists the allowed names).
    """
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    out = 0
    for name in names:
        key = str(name).strip().upper()
        if key not in ZWARNING_NAMES:
            raise ValueError(f"unknown ZWARNING bit {name!r}; allowed: {', '.join(ZWARNING_NAMES)}")
        out |= 1 << ZWARNING_NAMES[key]
    return out


def is_sky(zwarning: int) -> bool:
    """True when the SKY bit (0) is set (a sky fibre: its CLASS is a fit to blank sky)."""
    return int(zwarning) >= 0 and bool(int(zwarning) & SKY)


def golden(zwarning: np.ndarray | int) -> np.ndarray | bool:
    """The tutorial's "golden" selection: ``zwarning == 0``.

    Unknown values (-1, e.g. text spectra without a pipeline fit) are not golden.

    Args:
        zwarning: scalar or ``(N,)`` integer array.

    Returns:
        bool, or ``(N,)`` bool array.
    """
    z = np.asarray(zwarning)
    out = z == 0
    return bool(out) if out.ndim == 0 else out


def count_removals(zwarnings: Iterable[int], *, dr7: Iterable[bool] | None = None) -> dict[str, int]:
    """Count, per bit name, the spectra a golden selection removes.

    Args:
        zwarnings: the ``ZWARNING`` values of the removed spectra (0 ones are ignored,
            -1 counts as ``'UNKNOWN'``).
        dr7: optional flags saying which values are DR7 ``Z_WARNIN``.

    Returns:
        ``{name: count}`` in bit order.
    """
    zs = list(zwarnings)
    flags = list(dr7) if dr7 is not None else [False] * len(zs)
    counts: Counter[str] = Counter()
    for z, d in zip(zs, flags):
        z = int(z)
        if z < 0:
            counts["UNKNOWN"] += 1
        elif z:
            counts.update(decode(z, dr7=d))
    order = {name: i for i, name in enumerate(ZWARNING_BITS.values())}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], 100), kv[0])))
