"""Turn the pipeline's per-spectrum labels (HDU 2 ``SPECOBJ``/``SPALL`` row, or header cards) into :class:`SpectrumMeta`.

Both the astropy reader and the native reader hand this module a plain
``{UPPER-CASE COLUMN NAME: value}`` mapping, so both produce identical metadata.
Column meanings follow the SDSS ``specObj`` / ``spAll`` data models
(https://data.sdss.org/datamodel/files/SPECTRO_REDUX/specObj.html,
https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spAll.html).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from specclass.spectrum import SpectrumMeta

#: HDU 2 columns the readers copy into :class:`SpectrumMeta`.
SPECOBJ_COLUMNS = (
    "PLATE", "MJD", "FIBERID", "CLASS", "SUBCLASS", "Z", "ZWARNING", "RUN2D",
    "PLUG_RA", "PLUG_DEC", "SURVEY", "CHUNK", "PROGRAMNAME",
)


def decode_label(value: Any) -> str:
    """Decode a CLASS/SUBCLASS-like value: bytes -> str, strip blanks and NULs, upper-case.

    >>> decode_label(b"GALAXY  ")
    'GALAXY'
    >>> decode_label(np.bytes_(b"wdhotter"))
    'WDHOTTER'
    """
    return decode_text(value).upper()


def decode_text(value: Any) -> str:
    """Decode bytes (ASCII, undecodable bytes replaced) or str to a stripped ``str``; ``None`` -> ''."""
    if value is None:
        return ""
    if isinstance(value, bytes):  # also np.bytes_
        return value.decode("ascii", errors="replace").replace("\x00", "").strip()
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else b"".join(np.atleast_1d(value).tolist())
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        value = bytes(value).decode("ascii", errors="replace")
    return str(value).replace("\x00", "").strip()


def _as_int(value: Any, default: int = -1) -> int:
    if value is None:
        return default
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        if isinstance(value, (bytes, str, np.bytes_, np.str_)):
            text = decode_text(value)
            return int(float(text)) if text else default
        return int(np.asarray(value).item())
    except (TypeError, ValueError, OverflowError):
        return default


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (float, int, np.floating, np.integer)):
        return float(value)
    try:
        if isinstance(value, (bytes, str, np.bytes_, np.str_)):
            text = decode_text(value)
            return float(text) if text else math.nan
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError):
        return math.nan


def survey_name(survey: str, chunk: str, run2d: str) -> str:
    """Survey of an SDSS spectrum: the ``SURVEY`` column, else from ``CHUNK``, else from ``RUN2D``.

    SDSS-I/II (``RUN2D`` 26, 103, 104) -> 'sdss'; BOSS spectrograph reductions
    (``v5_*``, ``v6_*``) -> 'boss' unless ``CHUNK`` says 'eboss...'.
    """
    if survey:
        return survey.lower()
    chunk = chunk.lower()
    if chunk.startswith("eboss"):
        return "eboss"
    if chunk.startswith("boss"):
        return "boss"
    if run2d.startswith(("v5", "v6")):
        return "boss"
    if run2d.isdigit():
        return "sdss"
    return ""


def meta_from_specobj(
    row: Mapping[str, Any],
    header: Mapping[str, Any],
    *,
    file: str,
    format: str,
    extra: dict[str, Any] | None = None,
) -> SpectrumMeta:
    """Build :class:`SpectrumMeta` from an HDU 2 row and the primary header.

    Args:
        row: ``{COLUMN: value}`` for (a subset of) :data:`SPECOBJ_COLUMNS`; bytes or str,
            numpy or Python scalars. Missing keys fall back to ``header``.
        header: primary-header cards (``PLATEID``, ``MJD``, ``FIBERID``, ``RUN2D``,
            ``PLUG_RA``, ``PLUG_DEC``) used when the row lacks a value.
        file: path string stored in ``meta.file``.
        format: layout name stored in ``meta.format``.
        extra: stored in ``meta.extra``.

    Returns:
        :class:`SpectrumMeta` with CLASS/SUBCLASS decoded, stripped, upper-cased.
    """

    def pick(col: str, card: str | None = None) -> Any:
        if col in row and row[col] is not None:
            return row[col]
        return header.get(card or col)

    run2d = decode_text(pick("RUN2D"))
    return SpectrumMeta(
        file=file,
        plate=_as_int(pick("PLATE", "PLATEID")),
        mjd=_as_int(pick("MJD")),
        fiberid=_as_int(pick("FIBERID")),
        class_=decode_label(row.get("CLASS")),
        subclass=decode_label(row.get("SUBCLASS")),
        z=_as_float(row.get("Z")),
        zwarning=_as_int(row.get("ZWARNING")),
        run2d=run2d,
        ra=_as_float(pick("PLUG_RA")),
        dec=_as_float(pick("PLUG_DEC")),
        survey=survey_name(decode_text(row.get("SURVEY")), decode_text(row.get("CHUNK")), run2d),
        format=format,
        extra=dict(extra or {}),
    )
