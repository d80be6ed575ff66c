"""Read spectrum FITS files with :mod:`astropy.io.fits` (every supported layout).

This is the general, always-correct path. The standard SDSS/BOSS ``spec`` layout
also has a faster native parser (:mod:`specclass.io.native`) that falls back to
this module for anything unusual.

Layouts (the name goes to ``meta.format``):

``spec-lite`` / ``spec-full`` (``-noextname`` when HDUs carry no EXTNAME)
    SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits``: HDU 1 ``COADD`` table (``flux``,
    ``loglam``, ``ivar``, ``and_mask`` ...), HDU 2 ``SPECOBJ`` (SDSS) or ``SPALL``
    (BOSS) one-row table with the labels; a *full* file also holds the single
    exposures (HDU 4+, EXTNAME ``'B1-00012345-...'``), a *lite* one does not. HDUs are found by EXTNAME, else by position.
    Data model: https://data.sdss.org/datamodel/files/BOSS_SPECTRO_REDUX/RUN2D/spectra/PLATE4/spec.html
``spSpec-dr7``
    DR7 ``spSpec-MJD-PLATE-FIBER.fit`` (recognised by ``COEFF0``/``COEFF1`` and
    ``SPEC_CLN`` or ``Z_WARNIN``): primary image ``(5, NPIX)`` with rows
    flux, continuum-subtracted flux, sigma, mask, (unused); ``loglam = COEFF0 +
    COEFF1 * i``; ``ivar = 1 / sigma**2`` where ``sigma > 0`` else 0; class from
    ``SPEC_CLN`` (:data:`SPEC_CLN_CLASS`), ``zwarning`` = ``Z_WARNIN`` (DR7 bits).
    Data model: https://classic.sdss.org/dr7/dm/flatFiles/spSpec.html
``lamost-lrs-image`` / ``lamost-lrs-table``
    LAMOST low-resolution spectra: primary image ``(5, NPIX)`` whose rows are
    named by ``EXTEN0`` (DR1: ``Flux Inverse Subcontinuum Andmask Ormask``, no
    wavelength row, ``loglam = COEFF0 + COEFF1 * i``; DR2+: row 2 is
    ``Wavelength`` in Å), or (DR9+) a one-row HDU 1 ``COADD`` table with
    ``FLUX, IVAR, WAVELENGTH, ANDMASK ...`` arrays. Labels from the primary header
    (``CLASS``, ``SUBCLASS``, ``Z``; ``Z = -9999`` -> NaN). LAMOST has no plates:
    ``plate = -1`` (the plan name is ``extra['planid']``), ``mjd = LMJD`` (as in the
    file names), ``run2d = VERSPIPE``, ``zwarning = -1``; ``OBSID``, ``SPID``,
    ``DESIG``, ``DATA_V`` go to ``extra``. Flux units are LAMOST's (relative for DR1).
``iraf-1d``
    A 1-D primary image with a linear (``CTYPE1 = 'LINEAR'``, ``DC-FLAG = 0``)
    or log-linear (``DC-FLAG = 1``) WCS, no errors: ``ivar = 1`` where the flux
    is finite (``meta.extra['has_ivar'] = False``). If the header still carries
    the spSpec ``COEFF0`` and ``Z`` and the grid starts at ``10**COEFF0 / (1+Z)``,
    the grid is rest frame and is moved back to the observed frame
    (``* (1 + Z)``, ``meta.extra['rest_frame_in_file'] = True``). Fluxes stored in
    erg/s/cm²/Å (median ``|flux| < 1e-10``) are scaled to 1e-17 erg/s/cm²/Å.
``table``
    One spectrum per table, one pixel per row (e.g. pPXF's ``NGC3522_SDSS.fits``:
    ``wavelength`` (Å), ``flux``, ``inverse_variance``, ``and_mask``).
``desi-coadd``
    DESI coadd files: B/R/Z arms (``X_WAVELENGTH``, ``X_FLUX``, ``X_IVAR``,
    ``X_MASK``) and ``FIBERMAP``, several spectra per file, arms combined
    inverse-variance weighted on their common linear Å lattice; labels from the
    matching ``redrock-*.fits`` file (:mod:`specclass.io.desi`).
``table-rows``
    Several spectra in one table, one spectrum per row of array columns (e.g.
    MaStar ``WAVE``/``FLUX``/``IVAR``/``MASK``); read with :func:`read_spectra`
    or ``row=``.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from specclass.io import desi
from specclass.io.arrays import build_spectrum
from specclass.io.errors import SpectrumReadError
from specclass.io.native import is_exposure_extname
from specclass.io.specobj import SPECOBJ_COLUMNS, decode_label, decode_text, meta_from_specobj
from specclass.spectrum import Spectrum, SpectrumMeta

#: DR7 ``SPEC_CLN`` code -> (class, subclass note).  Source: DR7 spSpec / specObj
#: data model (https://classic.sdss.org/dr7/products/spectra/spectroclasses.php).
SPEC_CLN_CLASS: dict[int, str] = {
    0: "UNKNOWN",
    1: "STAR",
    2: "GALAXY",
    3: "QSO",
    4: "QSO",  # HIZ_QSO
    5: "SKY",
    6: "STAR",  # STAR_LATE
    7: "GALAXY",  # GAL_EM
}
SPEC_CLN_NAME: dict[int, str] = {
    0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "HIZ_QSO", 5: "SKY", 6: "STAR_LATE", 7: "GAL_EM",
}

_WAVE_NAMES = ("WAVELENGTH", "WAVE", "LAMBDA", "WL", "LAM")
_LOGLAM_NAMES = ("LOGLAM", "LOGLAMBDA", "LOGWAVE")
_FLUX_NAMES = ("FLUX", "SPECTRUM")
_IVAR_NAMES = ("IVAR", "INVERSE_VARIANCE", "INVVAR", "INV_VAR")
_SIGMA_NAMES = ("ERROR", "ERR", "SIGMA", "NOISE", "FLUX_ERR", "FLUX_ERROR")
_MASK_NAMES = ("AND_MASK", "ANDMASK", "MASK", "PIXMASK")


# --------------------------------------------------------------------------- open


def open_fits(data: bytes, path: str) -> fits.HDUList:
    """Open in-memory FITS bytes with astropy, mapping failures to :class:`SpectrumReadError`.

    The HDU list is read completely (all headers), so a truncated or damaged
    file fails here, with the reason, rather than later.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=fits.verify.VerifyWarning)
            warnings.filterwarnings("ignore", message=".*[Cc]ard.*")
            warnings.filterwarnings("ignore", message="File may have been truncated")  # checked below
            warnings.filterwarnings("ignore", message="Unexpected extra padding")  # trailing bytes: fine
            hdul = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
    except Exception as exc:  # astropy raises OSError, ValueError, VerifyWarning, ...
        whole = len(data) - len(data) % 2880
        if len(data) % 2880:
            # A few stray bytes after the last HDU (not a whole block) make astropy's strict
            # mode fail on a "header" that is no header; without them the file may be complete.
            if whole and not data[whole : whole + 9].startswith(b"XTENSION="[: len(data) - whole]):
                try:
                    return open_fits(data[:whole], path)
                except SpectrumReadError:
                    pass  # data is missing before those bytes too: truncated
            raise SpectrumReadError(
                path,
                f"FITS file is truncated or damaged: {len(data)} bytes is not a whole number of "
                f"2880-byte blocks (astropy: {_short(exc)})",
            ) from None
        raise SpectrumReadError(path, f"not a readable FITS file ({_short(exc)})") from None
    expected = _data_end(hdul)
    if expected > len(data):
        raise SpectrumReadError(
            path, f"FITS file is truncated: the headers need {expected} bytes, the file has {len(data)}"
        )
    return hdul


def _data_end(hdul: fits.HDUList) -> int:
    """Offset just after the last HDU's data (0 when astropy does not say)."""
    expected = 0
    for hdu in hdul:
        # astropy has no public "where does this HDU's data end"; without it, skip the check
        offset, size = getattr(hdu, "_data_offset", None), getattr(hdu, "_data_size", None)
        if isinstance(offset, int) and isinstance(size, int):
            expected = max(expected, offset + size)
    return expected


def trailing_bytes(hdul: fits.HDUList, size: int) -> int:
    """Bytes of a ``size``-byte file after its last HDU's padded data (0 for a standard file)."""
    end = _data_end(hdul)
    return max(0, size - -(-end // 2880) * 2880) if end else 0


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


# ------------------------------------------------------------------ detection


def _colmap(hdu: fits.BinTableHDU) -> dict[str, str]:
    """UPPER-CASE column name -> column name as stored."""
    return {name.upper(): name for name in hdu.columns.names}


def check_case_duplicates(hdu: Any, wanted: tuple[str, ...], path: str, what: str) -> None:
    """Refuse a table where a column we read shares its name, but for case, with another.

    The FITS Standard (4.0, section 7.3.2, ``TTYPEn``) says column names are
    compared case-insensitively, so ``flux`` and ``FLUX`` in one table are the same
    name twice: which holds the data is undefined (readers differ), and a build once
    kept a spectrum whose flux was 0 everywhere. Rule: refuse, naming the columns.

    Raises:
        SpectrumReadError: if any of ``wanted`` (UPPER-CASE) names two or more columns.
    """
    seen: dict[str, list[str]] = {}
    for name in hdu.columns.names:
        seen.setdefault(name.upper(), []).append(name)
    clash = [names for key, names in seen.items() if key in wanted and len(names) > 1]
    if clash:
        listed = "; ".join(" and ".join(repr(n) for n in names) for names in clash)
        raise SpectrumReadError(
            path,
            f"{what} has columns whose names differ only in case ({listed}); FITS column names are "
            "case-insensitive, so it is undefined which holds the data: rename or drop one",
        )


def column_pixels(data: Any, name: str, path: str, what: str) -> np.ndarray:
    """The values of table column ``name`` as one 1-D pixel array.

    A column with one value per row gives its values; a variable-length-array
    column (``TFORM`` ``PE()``/``QD()``..., FITS Standard 4.0 section 7.3.5), which
    astropy returns as one array per row, gives its rows' arrays joined in order
    (one row holding the whole spectrum, or any split of it).

    Raises:
        SpectrumReadError: naming the column, when its rows hold fixed-size arrays
            in more than one row, or values that are not numbers.
    """
    values = data[name]
    arr = values if getattr(values, "dtype", None) == object else np.asarray(values)
    if arr.dtype == object:
        try:
            parts = [np.asarray(v, dtype=np.float64).ravel() for v in arr]
        except (TypeError, ValueError):
            raise SpectrumReadError(path, f"{what} column {name!r} holds values that are not numbers") from None
        return np.concatenate(parts) if parts else np.zeros(0)
    if arr.ndim == 2 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim != 1:
        raise SpectrumReadError(
            path, f"{what} column {name!r} holds an array of {arr.shape[1:]} values in each of {arr.shape[0]} "
                  "rows; expected one value per row (one row per pixel) or a single row")
    return arr


def _is_table(hdu: Any) -> bool:
    return isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))


def detect_layout(hdul: fits.HDUList) -> str:
    """Name the layout of an open FITS file (see the module docstring).

    Returns:
        One of ``'spec'``, ``'spSpec-dr7'``, ``'lamost-lrs-image'``, ``'lamost-lrs-table'``,
        ``'desi-coadd'``, ``'iraf-1d'``, ``'table'``, ``'table-rows'``, or ``''`` when unknown.
    """
    if desi.is_desi_coadd(hdul):
        return "desi-coadd"
    h0 = hdul[0].header
    shape = hdul[0].shape if hdul[0].header.get("NAXIS", 0) else ()
    is_lamost = "EXTEN0" in h0 or "LAMOST" in str(h0.get("DATA_V", "")).upper() or (
        "PLANID" in h0 and "DESIG" in h0
    )
    if len(hdul) > 1 and _is_table(hdul[1]):
        cols = _colmap(hdul[1])
        if hdul[1].name.upper() == "COADD" or {"FLUX", "LOGLAM"} <= cols.keys():
            if not (is_lamost and "WAVELENGTH" in cols):
                return "spec"
        if is_lamost and "FLUX" in cols and hdul[1].header.get("NAXIS2", 0) == 1:
            return "lamost-lrs-table"
    if len(shape) == 2:
        if is_lamost:
            return "lamost-lrs-image"
        if "COEFF0" in h0 and "COEFF1" in h0 and shape[0] >= 4 and ("SPEC_CLN" in h0 or "Z_WARNIN" in h0):
            return "spSpec-dr7"
    if len(shape) == 1 and ("CRVAL1" in h0 or "COEFF0" in h0):
        return "iraf-1d"
    for hdu in hdul[1:]:
        if not _is_table(hdu):
            continue
        cols = _colmap(hdu)
        if not any(n in cols for n in _FLUX_NAMES):
            continue
        flux_col = hdu.columns[cols[next(n for n in _FLUX_NAMES if n in cols)]]
        repeat = _repeat(flux_col)
        return "table-rows" if repeat > 1 else "table"
    return ""


def _repeat(col: fits.Column) -> int:
    fmt = str(col.format)
    digits = ""
    for ch in fmt:
        if ch.isdigit():
            digits += ch
        else:
            break
    return int(digits) if digits else 1


# ------------------------------------------------------------------ spec lite/full


def _find_hdu(hdul: fits.HDUList, names: tuple[str, ...], position: int) -> tuple[Any, str]:
    for hdu in hdul[1:]:
        if hdu.name.upper() in names:
            return hdu, hdu.name.upper()
    if len(hdul) > position and _is_table(hdul[position]):
        return hdul[position], ""
    return None, ""


def read_spec_hdul(
    hdul: fits.HDUList, path: str, *, nonfinite: str = "mask", reader: str = "astropy"
) -> Spectrum:
    """Read an SDSS/BOSS ``spec`` lite/full file from an open HDU list.

    Returns:
        :class:`Spectrum`; ``meta.format`` is ``spec-lite``/``spec-full`` (+ ``-noextname``).

    A file without HDU 2 (no SPECOBJ/SPALL table) is read without labels
    (``class_`` empty, identifiers from the primary header,
    ``meta.extra['labels'] = 'missing'``).

    Raises:
        SpectrumReadError: HDU 1 missing, a required column missing or named twice
            (:func:`check_case_duplicates`), an HDU 2 without CLASS or rows, or bad arrays.
    """
    coadd, coadd_name = _find_hdu(hdul, ("COADD",), 1)
    if coadd is None:
        raise SpectrumReadError(path, "no COADD table (HDU 1) with the spectrum")
    cols = _colmap(coadd)
    missing = [c.lower() for c in ("FLUX", "LOGLAM", "IVAR") if c not in cols]
    if missing:
        raise SpectrumReadError(path, f"HDU 1 (COADD) lacks column(s) {', '.join(missing)}")
    check_case_duplicates(coadd, ("FLUX", "LOGLAM", "IVAR", "AND_MASK", "OR_MASK"), path, "HDU 1 (COADD)")
    specobj, specobj_name = _find_hdu(hdul, ("SPECOBJ", "SPALL"), 2)
    labels = "file"
    if specobj is None:
        # No label table (some tools write only the COADD): the spectrum is still usable
        # (predict needs no labels; a dataset build skips it as "no label" unless given one).
        labels, specobj_name, scols = "missing", "", {}
    else:
        scols = _colmap(specobj)
        if "CLASS" not in scols:
            raise SpectrumReadError(path, "HDU 2 (SPECOBJ/SPALL) has no CLASS column")
        if specobj.data is None or len(specobj.data) < 1:
            raise SpectrumReadError(path, "HDU 2 (SPECOBJ/SPALL) has no rows")
    data = coadd.data
    if data is None:
        raise SpectrumReadError(path, "HDU 1 (COADD) has no rows")
    flux = column_pixels(data, cols["FLUX"], path, "HDU 1 (COADD)")
    loglam = column_pixels(data, cols["LOGLAM"], path, "HDU 1 (COADD)")
    ivar = column_pixels(data, cols["IVAR"], path, "HDU 1 (COADD)")
    and_mask = column_pixels(data, cols["AND_MASK"], path, "HDU 1 (COADD)") if "AND_MASK" in cols else None
    or_mask = column_pixels(data, cols["OR_MASK"], path, "HDU 1 (COADD)") if "OR_MASK" in cols else None
    try:
        row0 = specobj.data[0] if specobj is not None else {}
        row = {c: row0[scols[c]] for c in SPECOBJ_COLUMNS if c in scols}
    except Exception as exc:
        raise SpectrumReadError(path, f"cannot read the COADD/SPECOBJ tables ({_short(exc)})") from None
    full = any(is_exposure_extname(hdu.name) for hdu in hdul[4:])
    kind = "spec-full" if full else "spec-lite"
    if not coadd_name:
        kind += "-noextname"
    meta = meta_from_specobj(
        row,
        hdul[0].header,
        file=path,
        format=kind,
        extra={"reader": reader, "hdu2": specobj_name, "has_ivar": True,
               **({"labels": "missing"} if labels == "missing" else {})},
    )
    return build_spectrum(path, loglam, flux, ivar, and_mask, meta, nonfinite=nonfinite, or_mask=or_mask)


# ------------------------------------------------------------------ DR7 spSpec


def read_spspec_hdul(hdul: fits.HDUList, path: str, *, nonfinite: str = "mask") -> Spectrum:
    """Read a DR7 ``spSpec`` image file (see the module docstring)."""
    h0 = hdul[0].header
    img = np.asarray(hdul[0].data)
    if img.ndim != 2 or img.shape[0] < 4:
        raise SpectrumReadError(path, f"spSpec primary image has shape {img.shape}, expected (5, NPIX)")
    npix = img.shape[1]
    loglam = float(h0["COEFF0"]) + float(h0["COEFF1"]) * np.arange(npix, dtype=np.float64)
    flux = img[0]
    sigma = img[2].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ivar = np.where(sigma > 0, 1.0 / (sigma * sigma), 0.0)
    cln = _int_card(h0, "SPEC_CLN", -1)
    meta = SpectrumMeta(
        file=path,
        plate=_int_card(h0, "PLATEID", -1),
        mjd=_int_card(h0, "MJD", -1),
        fiberid=_int_card(h0, "FIBERID", -1),
        class_=SPEC_CLN_CLASS.get(cln, ""),
        subclass="",
        z=_float_card(h0, "Z"),
        zwarning=_int_card(h0, "Z_WARNIN", -1),
        run2d="",
        ra=_float_card(h0, "RAOBJ"),
        dec=_float_card(h0, "DECOBJ"),
        survey="sdss",
        format="spSpec-dr7",
        extra={
            "reader": "astropy",
            "spec_cln": cln,
            "spec_cln_name": SPEC_CLN_NAME.get(cln, ""),
            "zwarning_bits": "dr7",
            "has_ivar": True,
        },
    )
    return build_spectrum(path, loglam, flux, ivar, img[3], meta, nonfinite=nonfinite)


def _int_card(h: Mapping[str, Any], key: str, default: int = -1) -> int:
    v = h.get(key)
    try:
        return int(str(v).strip()) if v is not None and str(v).strip() != "" else default
    except ValueError:
        try:
            return int(float(str(v)))
        except ValueError:
            return default


def _float_card(h: Mapping[str, Any], key: str) -> float:
    v = h.get(key)
    try:
        f = float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
    return math.nan if f <= -9999 else f


# ------------------------------------------------------------------ LAMOST


def _lamost_meta(h0: Mapping[str, Any], path: str, kind: str) -> SpectrumMeta:
    extra = {
        "reader": "astropy",
        "has_ivar": True,
        "planid": decode_text(h0.get("PLANID")),
        "spid": _int_card(h0, "SPID", -1),
        "obsid": _int_card(h0, "OBSID", -1),
        "designation": decode_text(h0.get("DESIG")),
        "data_release": decode_text(h0.get("DATA_V")),
        "lamost_mjd": _int_card(h0, "MJD", -1),
    }
    return SpectrumMeta(
        file=path,
        plate=-1,
        mjd=_int_card(h0, "LMJD", _int_card(h0, "MJD", -1)),
        fiberid=_int_card(h0, "FIBERID", -1),
        class_=decode_label(h0.get("CLASS")),
        subclass=decode_label(h0.get("SUBCLASS")),
        z=_float_card(h0, "Z"),
        zwarning=-1,
        run2d=decode_text(h0.get("VERSPIPE")),
        ra=_float_card(h0, "RA"),
        dec=_float_card(h0, "DEC"),
        survey="lamost",
        format=kind,
        extra=extra,
    )


def read_lamost_hdul(hdul: fits.HDUList, path: str, *, nonfinite: str = "mask") -> Spectrum:
    """Read a LAMOST LRS file (image or one-row table layout; see the module docstring)."""
    h0 = hdul[0].header
    if len(hdul) > 1 and _is_table(hdul[1]) and hdul[0].header.get("NAXIS", 0) == 0:
        cols = _colmap(hdul[1])
        need = [c for c in ("FLUX", "IVAR", "WAVELENGTH") if c not in cols]
        if need:
            raise SpectrumReadError(path, f"LAMOST COADD table lacks column(s) {', '.join(need)}")
        r = hdul[1].data[0]
        wave = np.asarray(r[cols["WAVELENGTH"]], dtype=np.float64)
        flux, ivar = np.asarray(r[cols["FLUX"]]), np.asarray(r[cols["IVAR"]])
        mask = np.asarray(r[cols["ANDMASK"]]) if "ANDMASK" in cols else None
        meta = _lamost_meta(h0, path, "lamost-lrs-table")
    else:
        img = np.asarray(hdul[0].data)
        if img.ndim != 2 or img.shape[0] < 3:
            raise SpectrumReadError(path, f"LAMOST primary image has shape {img.shape}, expected (5, NPIX)")
        names = [n.strip().upper() for n in str(h0.get("EXTEN0", "")).replace(",", " ").split()]
        idx = {n: i for i, n in enumerate(names)}
        if not names:
            # No EXTEN0: decide from the data whether row 2 is a wavelength row.
            row2 = img[2].astype(np.float64)
            looks_like_wave = bool(np.all(np.diff(row2) > 0) and 3000 < row2[0] < 11000)
            names = ["FLUX", "INVERSE", "WAVELENGTH" if looks_like_wave else "SUBCONTINUUM", "ANDMASK", "ORMASK"]
            idx = {n: i for i, n in enumerate(names)}
        if "FLUX" not in idx or "INVERSE" not in idx:
            raise SpectrumReadError(path, f"LAMOST EXTEN0 {h0.get('EXTEN0')!r} names no Flux/Inverse rows")
        flux, ivar = img[idx["FLUX"]], img[idx["INVERSE"]]
        mask = img[idx["ANDMASK"]] if "ANDMASK" in idx and idx["ANDMASK"] < img.shape[0] else None
        if "WAVELENGTH" in idx:
            wave = img[idx["WAVELENGTH"]].astype(np.float64)
        else:
            if "COEFF0" not in h0 or "COEFF1" not in h0:
                raise SpectrumReadError(path, "LAMOST image has neither a Wavelength row nor COEFF0/COEFF1")
            wave = 10.0 ** (float(h0["COEFF0"]) + float(h0["COEFF1"]) * np.arange(img.shape[1]))
        meta = _lamost_meta(h0, path, "lamost-lrs-image")
    with np.errstate(divide="ignore", invalid="ignore"):
        loglam = np.log10(wave)
    return build_spectrum(path, loglam, flux, ivar, mask, meta, nonfinite=nonfinite)


# ------------------------------------------------------------------ IRAF 1-D


def read_iraf1d_hdul(hdul: fits.HDUList, path: str, *, nonfinite: str = "mask") -> Spectrum:
    """Read a 1-D image spectrum with a linear or log-linear WCS (see the module docstring)."""
    h0 = hdul[0].header
    flux = np.asarray(hdul[0].data, dtype=np.float64)
    npix = flux.shape[0]
    crpix = float(h0.get("CRPIX1", 1.0))
    if "CRVAL1" in h0:
        crval = float(h0["CRVAL1"])
        step = float(h0.get("CD1_1", h0.get("CDELT1", 0.0)))
    else:  # SDSS-style COEFF0/COEFF1 only
        crval, step, crpix = float(h0["COEFF0"]), float(h0["COEFF1"]), 1.0
    if step == 0.0:
        raise SpectrumReadError(path, "1-D image has no wavelength step (CD1_1/CDELT1)")
    grid = crval + step * (np.arange(npix, dtype=np.float64) + 1.0 - crpix)
    log_linear = int(h0.get("DC-FLAG", 0)) == 1 or "CRVAL1" not in h0
    wave = 10.0**grid if log_linear else grid
    extra: dict[str, Any] = {"reader": "astropy", "has_ivar": False}
    z = _float_card(h0, "Z")
    if "COEFF0" in h0 and np.isfinite(z) and not log_linear:
        observed_start = 10.0 ** float(h0["COEFF0"])
        if abs(observed_start / (1.0 + z) - wave[0]) < abs(step) and abs(observed_start - wave[0]) > abs(step):
            wave = wave * (1.0 + z)
            extra["rest_frame_in_file"] = True
    finite = np.isfinite(flux)
    if finite.any() and 0 < np.nanmedian(np.abs(flux[finite])) < 1e-10:
        flux = flux * 1e17
        extra["flux_scaled_by"] = 1e17
    ivar = finite.astype(np.float32)
    cln = _int_card(h0, "SPEC_CLN", -1)
    if cln >= 0:
        extra["spec_cln"] = cln
    meta = SpectrumMeta(
        file=path,
        plate=_int_card(h0, "PLATEID", -1),
        mjd=_int_card(h0, "MJD", -1),
        fiberid=_int_card(h0, "FIBERID", -1),
        class_=SPEC_CLN_CLASS.get(cln, "") if cln >= 0 else decode_label(h0.get("CLASS")),
        subclass=decode_label(h0.get("SUBCLASS")),
        z=z,
        zwarning=_int_card(h0, "Z_WARNIN", _int_card(h0, "ZWARNING", -1)),
        ra=_float_card(h0, "RAOBJ") if "RAOBJ" in h0 else _float_card(h0, "RA"),
        dec=_float_card(h0, "DECOBJ") if "DECOBJ" in h0 else _float_card(h0, "DEC"),
        survey="sdss" if "SPEC_CLN" in h0 else "",
        format="iraf-1d",
        extra=extra,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        loglam = np.log10(wave)
    return build_spectrum(path, loglam, flux, ivar, None, meta, nonfinite=nonfinite)


# ------------------------------------------------------------------ tables


def _first(cols: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in cols:
            return cols[n]
    return None


def _table_hdu(hdul: fits.HDUList) -> Any:
    for hdu in hdul[1:]:
        if _is_table(hdu) and any(n in _colmap(hdu) for n in _FLUX_NAMES):
            return hdu
    return None


def _arrays_from(get, cols: Mapping[str, str], path: str) -> tuple[np.ndarray, ...]:
    """loglam, flux, ivar, mask, has_ivar from a table row/column accessor ``get(name)``."""
    flux_c = _first(cols, _FLUX_NAMES)
    wave_c, loglam_c = _first(cols, _WAVE_NAMES), _first(cols, _LOGLAM_NAMES)
    if flux_c is None or (wave_c is None and loglam_c is None):
        raise SpectrumReadError(path, "table has no flux and wavelength/loglam columns")
    flux = np.asarray(get(flux_c))
    if loglam_c is not None:
        loglam = np.asarray(get(loglam_c), dtype=np.float64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            loglam = np.log10(np.asarray(get(wave_c), dtype=np.float64))
    ivar_c, sigma_c = _first(cols, _IVAR_NAMES), _first(cols, _SIGMA_NAMES)
    has_ivar = True
    if ivar_c is not None:
        ivar = np.asarray(get(ivar_c))
    elif sigma_c is not None:
        sigma = np.asarray(get(sigma_c), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ivar = np.where(sigma > 0, 1.0 / (sigma * sigma), 0.0)
    else:
        ivar = np.isfinite(flux).astype(np.float32)
        has_ivar = False
    mask_c = _first(cols, _MASK_NAMES)
    mask = np.asarray(get(mask_c)) if mask_c is not None else None
    return loglam, flux, ivar, mask, has_ivar


def read_table_hdul(
    hdul: fits.HDUList, path: str, *, nonfinite: str = "mask", row: int | None = None
) -> list[Spectrum]:
    """Read one-table layouts: one spectrum per table, or one per row of array columns.

    Args:
        row: for multi-spectrum tables, read only this row (0-based).

    Returns:
        A list of :class:`Spectrum` (one element for a one-spectrum table).

    Raises:
        SpectrumReadError: no suitable table, missing columns, ``row`` out of range.
    """
    hdu = _table_hdu(hdul)
    if hdu is None:
        raise SpectrumReadError(path, "no table HDU with a flux column")
    cols = _colmap(hdu)
    data = hdu.data
    nrows = 0 if data is None else len(data)
    if nrows == 0:
        raise SpectrumReadError(path, f"table HDU {hdu.name or 1} has no rows")
    flux_col = hdu.columns[_first(cols, _FLUX_NAMES)]
    h0 = hdul[0].header
    if _repeat(flux_col) <= 1:  # pixels are rows
        loglam, flux, ivar, mask, has_ivar = _arrays_from(lambda c: data[c], cols, path)
        meta = _table_meta(h0, {}, cols, path, "table", has_ivar)
        return [build_spectrum(path, loglam, flux, ivar, mask, meta, nonfinite=nonfinite)]
    rows = range(nrows) if row is None else [row]
    if row is not None and not 0 <= row < nrows:
        raise SpectrumReadError(path, f"row={row} is out of range: the table has {nrows} spectra")
    out = []
    for i in rows:
        r = data[i]
        loglam, flux, ivar, mask, has_ivar = _arrays_from(lambda c, r=r: r[c], cols, path)
        meta = _table_meta(h0, r, cols, path, "table-rows", has_ivar)
        meta.extra["row"] = i
        out.append(build_spectrum(f"{path}", loglam, flux, ivar, mask, meta, nonfinite=nonfinite))
    return out


def _table_meta(
    h0: Mapping[str, Any], r: Any, cols: Mapping[str, str], path: str, kind: str, has_ivar: bool
) -> SpectrumMeta:
    def val(*names: str) -> Any:
        for n in names:
            if n in cols and r is not None and not isinstance(r, dict):
                return r[cols[n]]
            if n in h0:
                return h0[n]
        return None

    extra: dict[str, Any] = {"reader": "astropy", "has_ivar": has_ivar}
    cls = decode_label(val("CLASS"))
    sub = decode_label(val("SUBCLASS"))
    survey = ""
    if "SP_TYPE" in cols and not isinstance(r, dict):  # MaStar (stellar library): stars by definition
        cls = cls or "STAR"
        sub = sub or decode_label(r[cols["SP_TYPE"]])
        survey = "mastar"
        for key in ("MANGAID_1", "MANGAID", "IFUDESIGN", "TEFF_MED", "LOGG_MED", "FEH_MED"):
            if key in cols:
                v = r[cols[key]]
                extra[key.lower()] = decode_text(v) if isinstance(v, (str, bytes)) else float(v)
    f = lambda v: _float_card({"v": v}, "v")  # noqa: E731
    i = lambda v: _int_card({"v": v}, "v")  # noqa: E731
    return SpectrumMeta(
        file=path,
        plate=i(val("PLATE", "PLATEID")),
        mjd=i(val("MJD")),
        fiberid=i(val("FIBERID")),
        class_=cls,
        subclass=sub,
        z=f(val("Z")),
        zwarning=i(val("ZWARNING")),
        run2d=decode_text(val("RUN2D")),
        ra=f(val("RA", "PLUG_RA")),
        dec=f(val("DEC", "PLUG_DEC")),
        survey=survey,
        format=kind,
        extra=extra,
    )


# ------------------------------------------------------------------ entry point


def read_fits_bytes(
    data: bytes,
    path: str,
    *,
    nonfinite: str = "mask",
    row: int | None = None,
    layout: str = "auto",
) -> list[Spectrum]:
    """Read every spectrum in FITS ``data`` (already decompressed) with astropy.

    Args:
        data: the FITS file bytes.
        path: file name for metadata and messages.
        nonfinite: see :func:`specclass.io.arrays.build_spectrum`.
        row: for multi-spectrum tables, only this row.
        layout: force a layout name from :func:`detect_layout`, or ``'auto'``.

    Returns:
        list of :class:`Spectrum` (length 1 except for ``table-rows`` files).

    Raises:
        SpectrumReadError: unreadable FITS, unknown layout, or a layout-specific problem.
    """
    hdul = open_fits(data, path)
    try:
        spectra = _read_layout(hdul, path, nonfinite=nonfinite, row=row, layout=layout)
    finally:
        hdul.close()
    trailing = trailing_bytes(hdul, len(data))
    if trailing:
        for spec in spectra:
            spec.meta.extra["trailing_bytes"] = trailing
    return spectra


def _read_layout(hdul: fits.HDUList, path: str, *, nonfinite: str, row: int | None, layout: str) -> list[Spectrum]:
    try:
        kind = detect_layout(hdul) if layout == "auto" else layout
        if kind == "spec":
            return [read_spec_hdul(hdul, path, nonfinite=nonfinite)]
        if kind == "spSpec-dr7":
            return [read_spspec_hdul(hdul, path, nonfinite=nonfinite)]
        if kind in ("lamost-lrs-image", "lamost-lrs-table"):
            return [read_lamost_hdul(hdul, path, nonfinite=nonfinite)]
        if kind == "iraf-1d":
            return [read_iraf1d_hdul(hdul, path, nonfinite=nonfinite)]
        if kind in ("table", "table-rows"):
            return read_table_hdul(hdul, path, nonfinite=nonfinite, row=row)
        if kind == "desi-coadd":
            return desi.read_desi_hdul(hdul, path, nonfinite=nonfinite, row=row)
        if desi.is_redrock(hdul):
            raise SpectrumReadError(
                path, "is a redrock redshift catalogue (REDSHIFTS table), not spectra: it labels the "
                      "coadd-*.fits file of the same name, which is the file to read"
            )
        summary = ", ".join(f"{i}:{h.name or '-'}({type(h).__name__})" for i, h in enumerate(hdul))
        h0 = hdul[0].header
        if h0.get("NAXIS", 0) == 2 and "COEFF0" in h0 and "SPEC_CLN" not in h0:
            raise SpectrumReadError(
                path,
                "a 2-D log-lambda image without the spSpec keywords SPEC_CLN/Z_WARNIN "
                f"(an eigenspectrum template such as spEigen*?), not a spectrum (HDUs {summary})",
            )
        raise SpectrumReadError(path, f"unrecognised FITS spectrum layout (HDUs {summary})")
    except SpectrumReadError:
        raise
    except Exception as exc:  # astropy/numpy surprises on odd files
        raise SpectrumReadError(path, f"cannot read spectrum ({type(exc).__name__}: {_short(exc)})") from None
