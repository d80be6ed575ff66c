"""Column text spectra (wavelength in Å, flux) and their label tables.

A text spectrum holds at least two numeric columns, separated by blanks or
commas: vacuum wavelength in Å and flux (1e-17 erg/s/cm²/Å for SDSS dumps).
Lines starting with ``#`` and a non-numeric header line are skipped; further
columns are ignored. Text files carry no errors, so ``ivar = 1`` where the
flux is finite (0 elsewhere) and ``meta.extra['has_ivar'] = False``.

Plate, MJD and fibre come from a file name of the form
``spec-PLATE-MJD-FIBER*.txt`` (SAS naming). Labels come from the caller:
a class string, a ``(class, subclass)`` pair, or the mapping returned by
:func:`load_text_labels` (looked up by ``'PLATE-MJD-FIBER'``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import numpy as np

from specclass.io.arrays import build_spectrum
from specclass.io.errors import SpectrumReadError
from specclass.io.specobj import decode_label
from specclass.spectrum import Spectrum, SpectrumMeta

#: What ``label=`` may be: ``'STAR'``, ``('STAR', 'K7')`` or ``{'0266-51602-0051': ('STAR', 'CV'), ...}``.
Label = Union[str, tuple[str, str], Mapping[str, tuple[str, str]], None]

#: Fewer numeric rows than this is not a spectrum (a label table, a stray note ...).
MIN_TEXT_ROWS = 10

_NAME_RE = re.compile(r"spec-(\d{3,6})-(\d{5})-(\d{1,4})", re.IGNORECASE)


def object_key(plate: int, mjd: int, fiberid: int) -> str:
    """``'PPPP-MMMMM-FFFF'``, the key used by :func:`load_text_labels` (same as ``SpectrumMeta.object_key``)."""
    return f"{plate:04d}-{mjd:05d}-{fiberid:04d}"


def load_text_labels(csv_path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Read a label table for text spectra into ``{'PLATE-MJD-FIBER': (CLASS, SUBCLASS)}``.

    The CSV needs the columns ``plate, mjd, fiberid, class, subclass`` (any
    case; e.g. ``sdss/arrays/sdss_star_spectra_txt.csv`` or ``sdss/catalog.csv``);
    rows with an empty plate, mjd or fiberid are skipped. Labels are stripped
    and upper-cased. A spectrum listed more than once must carry the same label.

    Raises:
        SpectrumReadError: the file is missing, lacks a column, has a bad number, or
            gives one spectrum two different labels.
    """
    path = os.fspath(csv_path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = {f.lower(): f for f in (reader.fieldnames or [])}
            need = [c for c in ("plate", "mjd", "fiberid", "class") if c not in fields]
            if need:
                raise SpectrumReadError(path, f"label table lacks column(s) {', '.join(need)}")
            out: dict[str, tuple[str, str]] = {}
            for lineno, rec in enumerate(reader, start=2):
                if any(not (rec.get(fields[c]) or "").strip() for c in ("plate", "mjd", "fiberid")):
                    continue  # not a single-fibre spectrum (e.g. a MaStar IFU row)
                try:
                    key = object_key(
                        int(float(rec[fields["plate"]])), int(float(rec[fields["mjd"]])),
                        int(float(rec[fields["fiberid"]])),
                    )
                except (TypeError, ValueError):
                    raise SpectrumReadError(path, f"line {lineno}: plate/mjd/fiberid is not a number") from None
                sub = rec.get(fields["subclass"], "") if "subclass" in fields else ""
                value = (decode_label(rec[fields["class"]]), decode_label(sub))
                if out.setdefault(key, value) != value:
                    raise SpectrumReadError(
                        path, f"line {lineno}: {key} is labelled {value} here but {out[key]} earlier"
                    )
    except OSError as exc:
        raise SpectrumReadError(path, f"cannot read the label table ({exc.strerror or exc})") from None
    return out


def ids_from_name(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(plate, mjd, fiberid) from a ``spec-PLATE-MJD-FIBER`` file name, or ``(-1, -1, -1)``."""
    m = _NAME_RE.search(Path(path).name)
    if not m:
        return -1, -1, -1
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def resolve_label(label: Label, key: str) -> tuple[str, str] | None:
    """Turn a ``label=`` argument into ``(CLASS, SUBCLASS)`` for the spectrum ``key``, or ``None``."""
    if label is None:
        return None
    if isinstance(label, str):
        return decode_label(label), ""
    if isinstance(label, tuple):
        return decode_label(label[0]), decode_label(label[1] if len(label) > 1 else "")
    if isinstance(label, Mapping):
        found = label.get(key)
        if found is None:
            return None
        return resolve_label(tuple(found) if not isinstance(found, str) else found, key)
    raise TypeError(f"label must be a str, a (class, subclass) tuple or a mapping, not {type(label).__name__}")


def read_text_bytes(data: bytes, path: str, *, nonfinite: str = "mask") -> Spectrum:
    """Read a column text spectrum from its bytes (see the module docstring).

    Returns:
        :class:`Spectrum` with ``meta.format = 'text'``; class/subclass empty (set by the caller).

    Raises:
        SpectrumReadError: not text, fewer than two numeric columns, no numeric rows.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpectrumReadError(path, "not a text spectrum (bytes are not UTF-8 text)") from None
    rows: list[tuple[float, float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "%", ";")):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except (ValueError, IndexError):
            if rows:
                raise SpectrumReadError(
                    path, f"line {lineno}: expected two numbers (wavelength, flux), got {line[:60]!r}"
                ) from None
            if lineno > 5:
                raise SpectrumReadError(path, "not a two-column text spectrum (no numeric rows)") from None
            continue  # header line(s)
    if len(rows) < MIN_TEXT_ROWS:
        raise SpectrumReadError(
            path, f"text file holds {len(rows)} (wavelength, flux) rows; a spectrum needs at least {MIN_TEXT_ROWS}"
        )
    arr = np.asarray(rows, dtype=np.float64)
    wave, flux = arr[:, 0], arr[:, 1]
    if np.nanmax(wave) < 100:
        raise SpectrumReadError(path, "first column does not look like a wavelength in Angstrom (all < 100)")
    with np.errstate(divide="ignore", invalid="ignore"):
        loglam = np.log10(wave)
    ivar = np.isfinite(flux).astype(np.float32)
    plate, mjd, fiberid = ids_from_name(path)
    meta = SpectrumMeta(
        file=path,
        plate=plate,
        mjd=mjd,
        fiberid=fiberid,
        survey="sdss" if plate >= 0 else "",
        format="text",
        extra={"reader": "text", "has_ivar": False},
    )
    return build_spectrum(path, loglam, flux, ivar, None, meta, nonfinite=nonfinite)
