"""Where each spectrum lives on the SDSS Science Archive Server (SAS).

A spec file is found from its data release, ``run2d`` (the idlspec2d reduction
version), plate, MJD and fiber:

=========  ===============================================  ======================
release    SDSS-I/II (run2d 26, 103, 104)                   BOSS / eBOSS
=========  ===============================================  ======================
DR8        ``dr8/sdss/spectro/redux/RUN2D/spectra/P/``      (no BOSS data)
DR9-DR12   ``drNN/sdss/spectro/redux/RUN2D/spectra[/lite]/P``  ``drNN/boss/spectro/redux/RUN2D/spectra[/lite]/P``
DR13-DR15  same                                             ``drNN/eboss/spectro/redux/RUN2D/spectra[/lite]/P``
DR16-DR17  same                                             ``drNN/eboss/spectro/redux/RUN2D/spectra/{lite,full}/P``
=========  ===============================================  ======================

``P`` is the plate zero-padded to 4 digits (plates >= 10000 keep their 5 digits), the
file is ``spec-PPPP-MJDMJ-FFFF.fits``. "lite" files hold only the coadd (HDUs 0-3);
"full" files add the per-exposure HDUs. SDSS-I/II full files stay in ``spectra/P`` in
every release, BOSS full files moved to ``spectra/full/P`` in DR16.

Sources: the SDSS data model (https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/
RUN2D/spectra/PLATE4/spec.html and .../spectra/lite/PLATE4/spec.html), the ``spec`` and
``spec-lite`` templates of the ``sdss/tree`` path definitions, and the run2d of each
release listed in the DR8-DR17 data release notes (BOSS: DR9 v5_4_45, DR10 v5_5_12,
DR11 v5_6_5, DR12 v5_7_0 and v5_7_2, DR13 v5_9_0, DR14/DR15 v5_10_0, DR16 v5_13_0,
DR17 v5_13_2).
"""

from __future__ import annotations

import re
from typing import Any

from specclass.sdss.config import SDSSConfig, conf, parse_release

#: run2d of the SDSS-I/II reductions (SDSS legacy, SEGUE-1 and SEGUE-2 plates).
LEGACY_RUN2D: tuple[str, ...] = ("26", "103", "104")

#: BOSS/eBOSS run2d published in each data release.
BOSS_RUN2D: dict[int, tuple[str, ...]] = {
    8: (),
    9: ("v5_4_45",),
    10: ("v5_5_12",),
    11: ("v5_6_5",),
    12: ("v5_7_0", "v5_7_2"),
    13: ("v5_9_0",),
    14: ("v5_10_0",),
    15: ("v5_10_0",),
    16: ("v5_13_0",),
    17: ("v5_13_2",),
}

_RUN2D_RE = re.compile(r"^(\d{1,4}|v\d+_\d+_\d+)$")


def decode_text(value: Any) -> str:
    """Return ``value`` as a stripped ``str``: bytes/``numpy.bytes_`` are decoded as ASCII,
    numbers are printed without a decimal point when integral (``26.0`` -> ``'26'``)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", errors="replace")
    elif hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def parse_run2d(value: Any) -> str:
    """Return a validated ``run2d`` string (``'26'``, ``'v5_13_2'``) from str/bytes/int.

    Raises:
        ValueError: if it is not digits or ``vN_N_N``.
    """
    text = decode_text(value)
    if not _RUN2D_RE.match(text):
        raise ValueError(f"run2d {value!r} is not an idlspec2d version ('26', '103', '104' or 'vN_N_N')")
    return text


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    text = decode_text(value)
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} {value!r} must be an integer in {low}..{high}")
    return int(number)


def parse_ids(plate: Any, mjd: Any, fiberid: Any) -> tuple[int, int, int]:
    """Validate and return ``(plate, mjd, fiberid)`` as ints (str/bytes/float accepted).

    Raises:
        ValueError: naming the field, if one is not an integer in its range
            (plate 1..99999, MJD 50000..99999, fiber 1..9999).
    """
    return (
        _as_int("plate", plate, 1, 99999),
        _as_int("mjd", mjd, 50000, 99999),
        _as_int("fiberid", fiberid, 1, 9999),
    )


def spec_filename(plate: Any, mjd: Any, fiberid: Any) -> str:
    """``'spec-PLATE-MJD-FIBER.fits'`` with SAS zero padding (plate 4 digits, or 5 when
    >= 10000; MJD 5; fiber 4). Built from validated integers only, so it never holds a
    path separator.

    >>> spec_filename(266, 51602, 1)
    'spec-0266-51602-0001.fits'
    >>> spec_filename(10000, 57346, 2)
    'spec-10000-57346-0002.fits'
    """
    p, m, f = parse_ids(plate, mjd, fiberid)
    return f"spec-{p:04d}-{m:05d}-{f:04d}.fits"


def redux_dir(run2d: Any, data_release: int | str) -> str:
    """The ``drNN/<survey>/spectro/redux/RUN2D`` directory (relative to the SAS root).

    Raises:
        ValueError: if ``run2d`` is not published in that release (the message lists
            the ones that are).
    """
    release = parse_release(data_release)
    run2d = parse_run2d(run2d)
    if run2d in LEGACY_RUN2D:
        survey = "sdss"
    elif run2d in BOSS_RUN2D[release]:
        survey = "boss" if release <= 12 else "eboss"
    else:
        allowed = LEGACY_RUN2D + BOSS_RUN2D[release]
        raise ValueError(
            f"run2d {run2d!r} is not published in DR{release} (DR{release} has run2d "
            f"{', '.join(allowed)}); query the catalog with the same data release"
        )
    return f"dr{release}/{survey}/spectro/redux/{run2d}"


def spec_path(
    plate: Any,
    mjd: Any,
    fiberid: Any,
    run2d: Any,
    data_release: int | str = 17,
    lite: bool = True,
) -> str:
    """Path of one spec file relative to the SAS root (no leading slash).

    Args:
        plate, mjd, fiberid: spectrum identifiers (int, str, bytes or float).
        run2d: reduction version of the row ('26', 'v5_13_2', b'26', 26).
        data_release: 8..17 (or 'dr17').
        lite: the coadd-only file (True) or the full file with exposures (False).

    Returns:
        e.g. ``'dr17/eboss/spectro/redux/v5_13_2/spectra/lite/3586/spec-3586-55181-0890.fits'``.

    Raises:
        ValueError: for a bad identifier, a run2d not in that release, or ``lite``
            with DR8 (which published full files only).
    """
    release = parse_release(data_release)
    base = redux_dir(run2d, release)
    name = spec_filename(plate, mjd, fiberid)
    plate_dir = name.split("-")[1]
    legacy = parse_run2d(run2d) in LEGACY_RUN2D
    if lite:
        if release == 8:
            raise ValueError("DR8 published full spec files only; use lite=False (--full) or DR9+")
        sub = "spectra/lite"
    elif release >= 16 and not legacy:
        sub = "spectra/full"
    else:
        sub = "spectra"
    return f"{base}/{sub}/{plate_dir}/{name}"


def spec_url(
    plate: Any,
    mjd: Any,
    fiberid: Any,
    run2d: Any,
    data_release: int | str | None = None,
    lite: bool = True,
    config: SDSSConfig | None = None,
) -> str:
    """Full URL of one spec file: ``config.sas_url + '/' + spec_path(...)``.

    ``data_release`` defaults to ``config.data_release``. Raises as :func:`spec_path`.
    """
    cfg = config or conf
    release = cfg.data_release if data_release is None else data_release
    return f"{cfg.sas_url}/{spec_path(plate, mjd, fiberid, run2d, release, lite)}"
