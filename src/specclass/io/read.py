"""One call per file: :func:`read_spectrum`, :func:`read_spectra`, :func:`iter_spectra`.

The file's kind is decided from its bytes (:mod:`specclass.io.sniff`): gzip is
recognised by its magic number whatever the suffix and decompressed in memory;
FITS files go to the native ``spec`` parser (:mod:`specclass.io.native`) when
they have the standard SDSS/BOSS layout, otherwise to astropy
(:mod:`specclass.io.fits`); text goes to :mod:`specclass.io.text`; HTML error
pages and anything else are a :class:`SpectrumReadError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from specclass.io import native
from specclass.io.errors import SpectrumReadError
from specclass.io.fits import read_fits_bytes
from specclass.io.sniff import gunzip, sniff_kind
from specclass.io.text import Label, read_text_bytes, resolve_label
from specclass.spectrum import Spectrum

#: Values of ``fmt``.
FORMATS = ("auto", "spec", "spSpec-dr7", "lamost-lrs-image", "lamost-lrs-table", "desi-coadd", "iraf-1d",
           "table", "table-rows", "text")
#: Values of ``engine``.
ENGINES = ("auto", "native", "astropy")
#: File-name patterns :func:`iter_spectra` picks up inside a directory.
SPECTRUM_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts", ".txt", ".dat")

_HEAD = 1 << 18  # first read: 256 KiB covers a whole spec-lite file


def _validate(fmt: str, engine: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}; allowed: {', '.join(FORMATS)}")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; allowed: {', '.join(ENGINES)}")


def _apply_label(spec: Spectrum, label: Label) -> Spectrum:
    if label is None:
        return spec
    found = resolve_label(label, spec.meta.object_key)
    if found is None:
        return spec
    extra = dict(spec.meta.extra)
    extra["label_source"] = "user"
    if spec.meta.class_ or spec.meta.subclass:
        extra["file_label"] = (spec.meta.class_, spec.meta.subclass)
    spec.meta = dataclasses.replace(spec.meta, class_=found[0], subclass=found[1], extra=extra)
    return spec


def _read_all(
    path: str | os.PathLike[str],
    *,
    fmt: str,
    engine: str,
    nonfinite: str,
    row: int | None,
    single: bool,
) -> list[Spectrum]:
    _validate(fmt, engine)
    name = os.fspath(path)
    try:
        fh = open(name, "rb", buffering=0)  # noqa: SIM115 - raw reads: the reader asks for big chunks
    except IsADirectoryError:
        raise SpectrumReadError(name, "is a directory, not a spectrum file") from None
    except OSError as exc:
        raise SpectrumReadError(name, f"cannot open ({exc.strerror or exc})") from None
    with fh:
        head = fh.read(_HEAD)
        kind = sniff_kind(head[:4096])
        if kind == "fits" and fmt in ("auto", "spec") and engine != "astropy":
            spec = native.read_spec_file(fh, head, name, nonfinite=nonfinite, strict=engine == "native")
            if spec is not None:
                return [spec]
            fh.seek(0)
            head = b""
        data = head + fh.read()
    if kind == "gzip":
        data = gunzip(data, name)
        kind = sniff_kind(data[:4096])
        if kind == "gzip":
            raise SpectrumReadError(name, "gzip inside gzip is not supported")
        if kind == "fits" and fmt in ("auto", "spec") and engine != "astropy":
            spec = native.read_spec_bytes(data, name, nonfinite=nonfinite, strict=engine == "native")
            if spec is not None:
                return [spec]
    if kind == "empty":
        raise SpectrumReadError(name, "file is empty")
    if kind == "html":
        raise SpectrumReadError(name, "is an HTML/XML page (an error page saved instead of the data?), not a spectrum")
    if kind == "binary":
        raise SpectrumReadError(name, "unrecognised binary file (neither FITS, gzip nor text)")
    if kind == "text":
        if fmt not in ("auto", "text"):
            raise SpectrumReadError(name, f"fmt={fmt!r} but the file is text")
        return [read_text_bytes(data, name, nonfinite=nonfinite)]
    if fmt == "text":
        raise SpectrumReadError(name, "fmt='text' but the file is FITS")
    if engine == "native":
        raise SpectrumReadError(name, "engine='native' reads only the standard spec lite/full layout")
    layout = "auto" if fmt == "auto" else fmt
    spectra = read_fits_bytes(data, name, nonfinite=nonfinite, row=row, layout=layout)
    if single and len(spectra) > 1:
        raise SpectrumReadError(
            name,
            f"holds {len(spectra)} spectra (one per table row or DESI fibre); use read_spectra(path) "
            f"or read_spectrum(path, row=0..{len(spectra) - 1})",
        )
    return spectra


def read_spectrum(
    path: str | os.PathLike[str],
    *,
    label: Label = None,
    fmt: str = "auto",
    row: int | None = None,
    nonfinite: str = "mask",
    engine: str = "auto",
) -> Spectrum:
    """Read one spectrum file of any supported format.

    Args:
        path: the file. Its format is detected from its content (gzip by magic
            bytes, FITS layout by its HDUs, text otherwise); the suffix is ignored.
        label: set/override CLASS and SUBCLASS: ``'STAR'``, ``('STAR', 'K7')`` or a
            mapping ``{'PLATE-MJD-FIBER': (class, subclass)}`` from
            :func:`specclass.io.load_text_labels`. It replaces the file's own labels
            (kept in ``meta.extra['file_label']``); ``meta.extra['label_source'] = 'user'``.
            A mapping without the spectrum's key leaves the file's labels alone.
        fmt: ``'auto'`` or a layout name from :data:`FORMATS` to force it.
        row: for files with several spectra (one per table row), which row.
        nonfinite: ``'mask'`` (NaN/inf pixels get flux = ivar = 0) or ``'raise'``.
        engine: ``'auto'`` (native parser for standard spec files, astropy
            otherwise), ``'native'`` (raise if the native parser cannot read it),
            or ``'astropy'``.

    Returns:
        :class:`specclass.spectrum.Spectrum`: ``loglam``, ``flux``, ``ivar`` ``(npix,)``
        native float32; ``and_mask`` ``(npix,)`` int32; ``meta`` with identifiers and labels.

    Raises:
        SpectrumReadError: the file cannot be read as a spectrum (message names file and reason),
            including a multi-spectrum file read without ``row=``.
        ValueError: ``fmt``, ``engine`` or ``nonfinite`` is not an allowed value.
        TypeError: ``label`` has the wrong type.

    Example:
        >>> spec = read_spectrum("spec-0266-51602-0013.fits")  # doctest: +SKIP
        >>> spec.flux.dtype, spec.meta.class_
        (dtype('float32'), 'GALAXY')
    """
    spec = _read_all(path, fmt=fmt, engine=engine, nonfinite=nonfinite, row=row, single=True)[0]
    return _apply_label(spec, label)


def read_spectra(
    path: str | os.PathLike[str],
    *,
    label: Label = None,
    fmt: str = "auto",
    nonfinite: str = "mask",
    engine: str = "auto",
) -> list[Spectrum]:
    """Read every spectrum in one file (several for multi-row tables such as MaStar, and DESI coadds).

    Same arguments, return types and errors as :func:`read_spectrum`, but returns a list;
    ``meta.extra['row']`` gives each spectrum's table row where there is more than one.
    """
    spectra = _read_all(path, fmt=fmt, engine=engine, nonfinite=nonfinite, row=None, single=False)
    return [_apply_label(s, label) for s in spectra]


#: Name stems (upper-case, before the first ``.``/``_``/``-``) of files that are documentation,
#: never spectra, even with a ``.txt`` suffix.
NOT_SPECTRUM_STEMS = ("README", "LICENSE", "LICENCE", "COPYING", "CHANGELOG", "CHANGES", "NOTES", "NOTE",
                      "AUTHORS", "CITATION", "INSTALL", "MANIFEST", "TODO", "PROVENANCE")
_TEXT_SUFFIXES = (".txt", ".dat")
_STEM_RE = re.compile(r"[._\-\s]")


def not_a_spectrum(path: str | os.PathLike[str]) -> str | None:
    """Why a file met in a folder is obviously not a spectrum, or ``None`` if it may be one.

    Rules (only text suffixes ``.txt``/``.dat`` are judged; FITS and gzip files always go to a reader):

    * a hidden file (name starts with ``.``), or a documentation name (:data:`NOT_SPECTRUM_STEMS`:
      ``README.txt``, ``notes.txt``, ``LICENSE.txt`` ...);
    * text whose first five non-blank, non-comment lines hold no row starting with two numbers
      (:func:`specclass.io.text.read_text_bytes` allows at most that many header lines).
    """
    p = Path(path)
    name = p.name
    if name.startswith("."):
        return "hidden file"
    if not name.lower().endswith(_TEXT_SUFFIXES):
        return None
    if _STEM_RE.split(name, 1)[0].upper() in NOT_SPECTRUM_STEMS:
        return "a documentation file name"
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None  # the reader reports it
    if sniff_kind(head) != "text":
        return None
    lines = [ln.strip() for ln in head.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("#", "%", ";"))][:5]
    for line in lines:
        parts = line.replace(",", " ").split()
        try:
            float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            continue
        return None
    return "text without (wavelength, flux) rows"


def find_spectrum_files(
    paths_or_dirs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """Expand files and directories (recursively, sorted) into spectrum file paths.

    Directories contribute files whose names end in :data:`SPECTRUM_SUFFIXES`
    (case-insensitive), except obvious non-spectra (:func:`not_a_spectrum`:
    ``README.txt``, notes ...), which are left out and, if ``skipped`` is a list,
    appended to it as ``(path, why)``. Files given explicitly are always kept (a
    file given twice is listed twice: callers such as benchmarks repeat files on purpose).
    """
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    out: list[Path] = []
    for p in paths_or_dirs:
        p = Path(p)
        if p.is_dir():
            for q in sorted(q for q in p.rglob("*") if q.is_file() and q.name.lower().endswith(SPECTRUM_SUFFIXES)):
                why = not_a_spectrum(q)
                if why is None:
                    out.append(q)
                elif skipped is not None:
                    skipped.append((q, why))
        else:
            out.append(p)
    return out


def iter_spectra(
    paths_or_dirs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    label: Label = None,
    fmt: str = "auto",
    nonfinite: str = "mask",
    engine: str = "auto",
) -> Iterator[tuple[str, Spectrum | None, str | None]]:
    """Read many files, never stopping at a bad one.

    Args:
        paths_or_dirs: a file, a directory (searched recursively, see
            :func:`find_spectrum_files`) or an iterable of them.
        label, fmt, nonfinite, engine: as for :func:`read_spectrum`.

    Yields:
        ``(path, spectrum, None)`` for each spectrum read, ``(path, None, reason)``
        for each file that could not be read (``reason`` is the
        :class:`SpectrumReadError` reason, without the file name). A file holding
        several spectra yields one tuple per spectrum.

    Raises:
        ValueError: only for a bad ``fmt``/``engine``/``nonfinite`` value (checked up front).
    """
    _validate(fmt, engine)
    if nonfinite not in ("mask", "raise"):
        raise ValueError(f"nonfinite={nonfinite!r}; allowed: mask, raise")
    for p in find_spectrum_files(paths_or_dirs):
        name = os.fspath(p)
        try:
            spectra = read_spectra(p, label=label, fmt=fmt, nonfinite=nonfinite, engine=engine)
        except SpectrumReadError as exc:
            yield name, None, exc.reason
            continue
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a reader bug must not abort a build of thousands
            yield name, None, f"unexpected {type(exc).__name__}: {exc}"
            continue
        for spec in spectra:
            yield name, spec, None
