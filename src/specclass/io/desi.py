"""Read DESI coadd files (several spectra per file, B/R/Z arms) and their redrock labels.

Layout (DESI data model, ``coadd-SURVEY-PROGRAM-PIXNUM.fits`` / ``coadd-PETAL-TILEID-thruNIGHT.fits``,
https://desidatamodel.readthedocs.io/en/latest/DESI_SPECTRO_REDUX/SPECPROD/healpix/SURVEY/PROGRAM/PIXGROUP/PIXNUM/coadd-SURVEY-PROGRAM-PIXNUM.html):

* one image HDU set per spectrograph arm (camera) ``X`` in ``B``, ``R``, ``Z``:
  ``X_WAVELENGTH`` ``(npix_X,)`` vacuum Å on a **linear** grid (0.8 Å steps, B
  3600-5800 Å, R 5760-7620 Å, Z 7520-9824 Å), ``X_FLUX`` ``(nspec, npix_X)`` in
  1e-17 erg/s/cm²/Å, ``X_IVAR`` (same shape, inverse variance of the flux) and,
  optionally, ``X_MASK`` (int, 0 = good);
* ``FIBERMAP``: one row per spectrum, in the same order (``TARGETID``,
  ``TARGET_RA``, ``TARGET_DEC``, ``TILEID``, ``FIBER`` ...). Files without it
  (e.g. QuasarNP's test coadd) read with ``targetid = -1``.

Arms combined (what ``desispec.coaddition.coadd_cameras`` does): the arms share
one linear 0.8 Å lattice, so the output grid is the union of the arms' pixels
(B 3600 Å ... Z 9824 Å, 7,781 pixels for the standard arms) and nothing is
resampled. Where arms overlap (5760-5800 Å and 7520-7620 Å) the same wavelength
appears in two arms and is combined inverse-variance weighted::

    flux = sum_a(ivar_a * flux_a) / sum_a(ivar_a),    ivar = sum_a(ivar_a)

(a pixel with ``sum_a(ivar_a) = 0`` gets flux 0, ivar 0). A pixel whose
``X_MASK`` is non-zero has its ivar set to 0 before combining. DESI's mask bits
(``desispec.maskbits.specmask``) are not SDSS SPPIXMASK bits, so they are applied
here and ``and_mask`` is returned as zeros. Arms not on one common lattice (a
wavelength more than 1e-3 of a step away from it) are a :class:`SpectrumReadError`.
The linear vacuum Å grid is returned as ``loglam = log10(wavelength)`` (still
linear in Å, not uniform in loglam); :func:`specclass.spectra.grid.rebin` puts
it on a run's uniform log10 Å grid like any other spectrum.

Labels come from the matching **redrock** file in the same folder
(``redrock-<same suffix>`` or the older ``zbest-<same suffix>``, plain or ``.gz``),
table ``REDSHIFTS`` (``ZBEST`` in old files), joined on ``TARGETID``:
``SPECTYPE`` -> ``class_``, ``SUBTYPE`` -> ``subclass``, ``Z`` -> ``z``,
``ZWARN`` -> ``zwarning`` (redrock's ZWARN bits 0-9 follow SDSS ZWARNING:
https://github.com/desihub/redrock/blob/main/py/redrock/zwarning.py). Without a
redrock file, or a row for the TARGETID, the labels are empty and ``zwarning = -1``.

Identifiers: DESI has no plates: ``plate = mjd = fiberid = -1``; ``meta.extra``
holds ``targetid`` (the survey's own id, written to the predict CSV), ``row``
(the spectrum's index in the file), ``tileid``, ``fiber``, ``redrock_file``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from specclass.io.arrays import build_spectrum
from specclass.io.errors import SpectrumReadError
from specclass.io.specobj import decode_label
from specclass.spectrum import Spectrum, SpectrumMeta

#: Arm (camera) order when the file holds the standard three.
ARMS = ("B", "R", "Z")
#: Tolerance, in units of the lattice step, for two arms' pixels to be the same wavelength.
LATTICE_TOLERANCE = 1e-3
#: Redshift tables searched in a redrock file (``ZBEST`` in zbest files before 2021).
REDSHIFT_HDUS = ("REDSHIFTS", "ZBEST")

_SUFFIX_RE = re.compile(r"(\.fits|\.fit|\.fits\.gz|\.fit\.gz)$", re.IGNORECASE)


def is_desi_coadd(hdul: fits.HDUList) -> bool:
    """True when the file has at least one arm with ``X_WAVELENGTH``, ``X_FLUX`` and ``X_IVAR`` image HDUs."""
    return bool(find_arms(hdul))


def is_redrock(hdul: fits.HDUList) -> bool:
    """True for a redrock/zbest redshift catalogue (a ``REDSHIFTS``/``ZBEST`` table with ``SPECTYPE``)."""
    for hdu in hdul[1:]:
        if hdu.name.upper() in REDSHIFT_HDUS and isinstance(hdu, fits.BinTableHDU):
            return "SPECTYPE" in {n.upper() for n in hdu.columns.names}
    return False


def find_arms(hdul: fits.HDUList) -> list[str]:
    """Arm names (``'B'``, ``'R'``, ``'Z'``, or others) that have WAVELENGTH, FLUX and IVAR HDUs, blue first."""
    names = {hdu.name.upper() for hdu in hdul}
    arms = [n[: -len("_WAVELENGTH")] for n in names if n.endswith("_WAVELENGTH")]
    arms = [a for a in arms if a and f"{a}_FLUX" in names and f"{a}_IVAR" in names]
    return sorted(arms, key=lambda a: (ARMS.index(a) if a in ARMS else len(ARMS), a))


def redrock_path_for(coadd_path: str) -> Path | None:
    """The redrock (or zbest) file that labels ``coadd_path``, or ``None``.

    ``.../coadd-4-80613-thru20210324.fits`` -> ``.../redrock-4-80613-thru20210324.fits``
    (also ``.fits.gz`` and ``zbest-...``). A file whose name does not start with
    ``coadd-`` has no matching redrock file.
    """
    p = Path(coadd_path)
    if not p.name.lower().startswith("coadd-"):
        return None
    stem = _SUFFIX_RE.sub("", p.name[len("coadd-"):])
    for prefix in ("redrock-", "zbest-"):
        for suffix in (".fits", ".fits.gz", ".fit", ".fit.gz"):
            cand = p.with_name(prefix + stem + suffix)
            if cand.is_file():
                return cand
    return None


def read_redrock(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """``{TARGETID: {'class', 'subclass', 'z', 'zwarning'}}`` from a redrock file's redshift table.

    Args:
        path: a ``redrock-*.fits`` (``REDSHIFTS`` HDU) or ``zbest-*.fits`` (``ZBEST``) file.

    Raises:
        SpectrumReadError: unreadable file, no redshift table, or missing
            ``TARGETID``/``SPECTYPE``/``Z``/``ZWARN`` columns (names the file).
    """
    name = os.fspath(path)
    try:
        with fits.open(name, memmap=False) as hdul:
            hdu = next((h for h in hdul[1:] if h.name.upper() in REDSHIFT_HDUS), None)
            if hdu is None:
                raise SpectrumReadError(name, f"redrock file has no {'/'.join(REDSHIFT_HDUS)} table")
            cols = {c.upper(): c for c in hdu.columns.names}
            missing = [c for c in ("TARGETID", "SPECTYPE", "Z", "ZWARN") if c not in cols]
            if missing:
                raise SpectrumReadError(name, f"redrock {hdu.name} table lacks column(s) {', '.join(missing)}")
            data = hdu.data
            tid = np.asarray(data[cols["TARGETID"]], dtype=np.int64)
            spectype = data[cols["SPECTYPE"]]
            subtype = data[cols["SUBTYPE"]] if "SUBTYPE" in cols else [""] * len(tid)
            z = np.asarray(data[cols["Z"]], dtype=np.float64)
            zwarn = np.asarray(data[cols["ZWARN"]], dtype=np.int64)
    except SpectrumReadError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, ...
        raise SpectrumReadError(name, f"cannot read the redrock file ({type(exc).__name__}: {exc})") from None
    return {
        int(t): {"class": decode_label(c), "subclass": decode_label(s), "z": float(zz), "zwarning": int(w)}
        for t, c, s, zz, w in zip(tid, spectype, subtype, z, zwarn)
    }


def _arm_arrays(hdul: fits.HDUList, arm: str, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wave (npix,), flux (nspec, npix), ivar (nspec, npix)) of one arm, ivar 0 where X_MASK != 0."""
    wave = np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64)
    flux = np.asarray(hdul[f"{arm}_FLUX"].data, dtype=np.float64)
    ivar = np.asarray(hdul[f"{arm}_IVAR"].data, dtype=np.float64)
    if flux.ndim == 1:
        flux, ivar = flux[None, :], ivar[None, :]
    if wave.ndim != 1 or flux.ndim != 2 or flux.shape != ivar.shape or flux.shape[1] != wave.shape[0]:
        raise SpectrumReadError(
            path, f"DESI arm {arm}: {arm}_WAVELENGTH {wave.shape}, {arm}_FLUX {flux.shape} and "
                  f"{arm}_IVAR {ivar.shape} do not match"
        )
    if f"{arm}_MASK" in hdul:
        mask = np.asarray(hdul[f"{arm}_MASK"].data)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != flux.shape:
            raise SpectrumReadError(path, f"DESI arm {arm}: {arm}_MASK {mask.shape} does not match {arm}_FLUX {flux.shape}")
        ivar = np.where(mask != 0, 0.0, ivar)
    return wave, flux, ivar


def combine_arms(
    arms: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put the arms on the union of their pixels; overlapping pixels inverse-variance weighted.

    Args:
        arms: per arm ``(wave (npix_a,) Å, flux (nspec, npix_a), ivar (nspec, npix_a))``.
        path: file name for messages.

    Returns:
        ``(wave (npix,), flux (nspec, npix), ivar (nspec, npix))`` float64, wavelength increasing.
        Formula in the module docstring; NaN/inf flux or ivar count as ivar 0 in the sum
        (a pixel non-finite in every arm that has it gets NaN flux, which ``build_spectrum`` masks).

    Raises:
        SpectrumReadError: arms with different numbers of spectra, or not on one lattice.
    """
    nspec = {a[1].shape[0] for a in arms}
    if len(nspec) != 1:
        raise SpectrumReadError(path, f"DESI arms hold different numbers of spectra: {sorted(nspec)}")
    w0 = min(float(a[0][0]) for a in arms)
    step = float(np.median(np.diff(arms[0][0]))) if arms[0][0].size > 1 else 1.0
    if not step > 0:
        raise SpectrumReadError(path, "DESI wavelengths are not increasing")
    index = []
    for wave, _, _ in arms:
        k = np.rint((wave - w0) / step).astype(np.int64)
        off = np.abs(wave - (w0 + k * step))
        if off.max(initial=0.0) > LATTICE_TOLERANCE * step or (np.diff(k) <= 0).any():
            raise SpectrumReadError(
                path, f"DESI arms are not on one common linear wavelength lattice (step {step:g} Å from {w0:g} Å)"
            )
        index.append(k)
    used = np.unique(np.concatenate(index))
    n = int(nspec.pop())
    num = np.zeros((n, used.size))
    den = np.zeros((n, used.size))
    any_finite = np.zeros((n, used.size), dtype=bool)
    for k, (_, flux, ivar) in zip(index, arms):
        pos = np.searchsorted(used, k)
        ok = np.isfinite(flux) & np.isfinite(ivar)
        w = np.where(ok & (ivar > 0), ivar, 0.0)
        num[:, pos] += w * np.where(ok, flux, 0.0)
        den[:, pos] += w
        any_finite[:, pos] |= ok
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    # a pixel with nothing finite in any arm stays visible as non-finite (build_spectrum counts/masks it)
    flux[~any_finite] = np.nan
    wave = np.zeros(used.size)
    for k, (wv, _, _) in zip(index, arms):  # the file's own wavelengths, not w0 + k * step
        wave[np.searchsorted(used, k)] = wv
    return wave, flux, den


def _fibermap(hdul: fits.HDUList, nspec: int, path: str) -> list[dict[str, Any]]:
    if "FIBERMAP" not in hdul:
        return [{} for _ in range(nspec)]
    data = hdul["FIBERMAP"].data
    if data is None or len(data) != nspec:
        raise SpectrumReadError(
            path, f"FIBERMAP has {0 if data is None else len(data)} rows but the arms hold {nspec} spectra"
        )
    cols = {c.upper(): c for c in hdul["FIBERMAP"].columns.names}

    def col(name: str) -> Any:
        return data[cols[name]] if name in cols else None

    out = []
    for i in range(nspec):
        row: dict[str, Any] = {}
        for key in ("TARGETID", "TILEID", "FIBER"):
            c = col(key)
            if c is not None:
                row[key] = int(c[i])
        for key in ("TARGET_RA", "TARGET_DEC"):
            c = col(key)
            if c is not None:
                row[key] = float(c[i])
        out.append(row)
    return out


def read_desi_hdul(
    hdul: fits.HDUList, path: str, *, nonfinite: str = "mask", row: int | None = None
) -> list[Spectrum]:
    """Read every spectrum (or only ``row``) of a DESI coadd file; labels from its redrock file.

    Args:
        hdul: the open coadd file.
        path: its file name (also used to find ``redrock-*.fits`` beside it).
        nonfinite: see :func:`specclass.io.arrays.build_spectrum`.
        row: only this spectrum (0-based index in the file).

    Returns:
        list of :class:`Spectrum`, one per spectrum in the file (``meta.format = 'desi-coadd'``,
        ``meta.survey = 'desi'``, ``meta.extra['row']`` its index, ``meta.extra['targetid']``).

    Raises:
        SpectrumReadError: arms that do not match, ``row`` out of range, an unreadable redrock file.
    """
    arms = find_arms(hdul)
    if not arms:
        raise SpectrumReadError(path, "no DESI arm with X_WAVELENGTH, X_FLUX and X_IVAR HDUs")
    wave, flux, ivar = combine_arms([_arm_arrays(hdul, a, path) for a in arms], path)
    nspec = flux.shape[0]
    if row is not None and not 0 <= row < nspec:
        raise SpectrumReadError(path, f"row={row} is out of range: the file holds {nspec} spectra")
    fmap = _fibermap(hdul, nspec, path)
    rr_path = redrock_path_for(path)
    labels = read_redrock(rr_path) if rr_path is not None else {}
    with np.errstate(divide="ignore", invalid="ignore"):
        loglam = np.log10(wave)
    out = []
    for i in range(nspec) if row is None else [row]:
        fm = fmap[i]
        tid = fm.get("TARGETID", -1)
        lab = labels.get(tid, {}) if tid >= 0 else {}
        extra: dict[str, Any] = {
            "reader": "astropy",
            "has_ivar": True,
            "row": i,
            "targetid": tid,
            "tileid": fm.get("TILEID", -1),
            "fiber": fm.get("FIBER", -1),
            "arms": "".join(arms),
            "redrock_file": "" if rr_path is None else str(rr_path),
            "label_source": "redrock" if lab else "",
        }
        meta = SpectrumMeta(
            file=path,
            plate=-1,
            mjd=-1,
            fiberid=-1,
            class_=lab.get("class", ""),
            subclass=lab.get("subclass", ""),
            z=lab.get("z", math.nan),
            zwarning=lab.get("zwarning", -1),
            run2d="",
            ra=fm.get("TARGET_RA", math.nan),
            dec=fm.get("TARGET_DEC", math.nan),
            survey="desi",
            format="desi-coadd",
            extra=extra,
        )
        out.append(build_spectrum(path, loglam, flux[i], ivar[i], None, meta, nonfinite=nonfinite))
    return out
