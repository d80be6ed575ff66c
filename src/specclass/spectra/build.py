"""Build a dataset from spectrum files: read, filter, label, grid, split - streaming.

:func:`build_dataset` turns files and folders of spectra into one
:class:`~specclass.spectra.dataset.SpectralDataset` plus a :class:`BuildReport`
of what was skipped and why. It streams: each file is read, checked and put on
the grid, and only its gridded ``flux``/``ivar`` rows and a few metadata values
are kept (rows go into a preallocated buffer; untouched pages cost no memory),
so memory grows with the output, not with the files' size or count.

Each file passes these checks, in order; the first that fails skips it with a
reason (one row of ``BuildReport.skipped``; counts per category):

====================  ==============================================================
category              when
====================  ==============================================================
``unreadable``        the reader raised (HTML page, truncated FITS, missing HDU ...)
``zwarning``          ``golden=True`` and ``ZWARNING != 0`` (or unknown); the bits
                      are counted per name in ``BuildReport.zwarning_removals``
``sky``               a sky fibre (ZWARNING bit SKY): its CLASS is a fit to blank sky
``no label``          no CLASS (text spectra not in ``text_labels`` and no ``label``),
                      or the scheme gives none (e.g. a galaxy under ``star_subclass``)
``unknown class``     a CLASS other than GALAXY/QSO/STAR (e.g. LAMOST 'Unknown')
``bad data``          arrays the grid code rejects (loglam not increasing ...)
``all masked``        no good pixel on the grid (ivar all 0, outside the grid,
                      or fewer than ``min_good_fraction`` of the grid's pixels)
``duplicate``         ``dedupe=True`` and a spectrum with the same PLATE-MJD-FIBERID
                      was already kept (e.g. the lite and the full file of one
                      spectrum); the first in sorted path order is kept
====================  ==============================================================

With ``strict=True`` the first ``unreadable``, ``unknown class``, ``bad data``
or ``all masked`` file raises :class:`BuildError`; the deliberate filters
(golden, sky, scheme) still just skip.

Labels of text spectra come from ``text_labels`` (a CSV such as
``sdss/arrays/sdss_star_spectra_txt.csv``, read with
:func:`specclass.io.load_text_labels`), and ``label`` ('STAR' or 'STAR:K7')
fills in any spectrum that has no CLASS of its own; it never overrides a
pipeline CLASS. ``meta['source']`` is 'fits', 'text' or 'other-survey';
``meta['row']`` is the table row for files that hold several spectra (MaStar),
-1 otherwise.

Shards (one SLURM array task each): :func:`build_shard` cuts the sorted file
list into ``n_shards`` contiguous blocks, builds block ``shard_index`` and
writes it as one dataset file (labels but no splits); :func:`merge_datasets` concatenates the shards in
order, re-derives the class list and assigns splits, giving exactly what
:func:`build_dataset` gives in one process.
"""

from __future__ import annotations

import csv
import io
import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from specclass.atomic import write_text_atomic
from specclass.spectra import zwarning as zw
from specclass.spectra.dataset import SPLIT_CODES, SpectralDataset
from specclass.spectra.grid import DEFAULT_BAD_MASK_BITS, DEFAULT_GRID, LogLamGrid, mask_bits, mask_names, rebin_arrays
from specclass.spectra.labels import LabelScheme, check_labels, get_scheme, normalize
from specclass.spectra.splits import DEFAULT_RADIUS_ARCSEC, assign_splits

#: Skip categories, in report order.
CATEGORIES = ("unreadable", "zwarning", "sky", "no label", "unknown class", "bad data", "all masked", "duplicate")
#: Categories that make ``strict=True`` raise.
STRICT_CATEGORIES = ("unreadable", "unknown class", "bad data", "all masked")
#: Surveys whose spectra are tagged ``source='other-survey'``.
OTHER_SURVEYS = ("lamost", "desi")


class BuildError(ValueError):
    """A file stopped a ``strict=True`` build (message names the file and the reason)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Skipped:
    """One skipped file (or spectrum): ``file``, ``category`` (see :data:`CATEGORIES`), ``reason``."""

    file: str
    category: str
    reason: str


@dataclass
class BuildReport:
    """What a build read, kept and skipped.

    Attributes:
        n_files: files considered.
        n_spectra: spectra read (a file may hold several).
        n_kept: rows in the dataset.
        skipped: one :class:`Skipped` per skipped spectrum/file.
        zwarning_removals: ``{bit name: n}`` for golden removals (a spectrum with
            two bits counts under both).
        class_counts: ``{class: n}`` kept per class (0 for empty classes).
        empty_classes: classes of a fixed scheme with no spectrum.
        split_counts: ``{split: {class: n}}`` once splits are assigned.
        settings: the build settings (scheme, grid, golden, bad bits ...).
    """

    n_files: int = 0
    n_spectra: int = 0
    n_kept: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    zwarning_removals: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    empty_classes: list[str] = field(default_factory=list)
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def skip_counts(self) -> dict[str, int]:
        """``{category: n}`` in :data:`CATEGORIES` order (only non-zero)."""
        c = Counter(s.category for s in self.skipped)
        return {k: c[k] for k in CATEGORIES if c[k]}

    def to_dict(self, max_skipped: int = 50) -> dict[str, Any]:
        """JSON-ready summary; the skipped list is cut to ``max_skipped`` rows
        (the full list goes to ``<out>.skipped.csv``)."""
        return {
            "n_files": self.n_files,
            "n_spectra": self.n_spectra,
            "n_kept": self.n_kept,
            "n_skipped": len(self.skipped),
            "skip_counts": self.skip_counts,
            "zwarning_removals": dict(self.zwarning_removals),
            "class_counts": dict(self.class_counts),
            "empty_classes": list(self.empty_classes),
            "split_counts": self.split_counts,
            "settings": self.settings,
            "skipped_head": [dataclasses.asdict(s) for s in self.skipped[:max_skipped]],
        }

    def write_skipped_csv(self, path: str | os.PathLike) -> Path:
        """Write ``file,category,reason`` rows atomically; returns the path."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "category", "reason"])
        for s in self.skipped:
            w.writerow([s.file, s.category, s.reason])
        return write_text_atomic(path, buf.getvalue())

    @staticmethod
    def read_skipped_csv(path: str | os.PathLike) -> list[Skipped]:
        """Read a file written by :meth:`write_skipped_csv`."""
        with open(path, newline="", encoding="utf-8") as fh:
            return [Skipped(r["file"], r["category"], r["reason"]) for r in csv.DictReader(fh)]

    def skipped_lines(self, per_category: int = 10) -> list[str]:
        """The skipped-files table, at most ``per_category`` rows per category."""
        if not self.skipped:
            return []
        width = min(70, max(len(s.file) for s in self.skipped))
        lines = []
        for cat in CATEGORIES:
            rows = [s for s in self.skipped if s.category == cat]
            for s in rows[:per_category]:
                lines.append(f"  {s.file:<{width}}  {s.reason}")
            if len(rows) > per_category:
                lines.append(f"  ... {len(rows) - per_category} more '{cat}'")
        return lines

    def summary_lines(self) -> list[str]:
        """The human summary: counts per class and split, skips per category, zwarning removals."""
        lines = [f"files: {self.n_files}   spectra read: {self.n_spectra}   kept: {self.n_kept}   skipped: {len(self.skipped)}"]
        classes = list(self.class_counts)
        if classes:
            width = max(8, *(len(c) for c in classes))
            splits = [s for s in SPLIT_CODES if s in self.split_counts]
            head = f"{'class':<{width}}  {'total':>7}" + "".join(f"  {s:>7}" for s in splits)
            lines += ["", head, "-" * len(head)]
            for c in classes:
                row = f"{c:<{width}}  {self.class_counts[c]:>7}"
                row += "".join(f"  {self.split_counts[s].get(c, 0):>7}" for s in splits)
                lines.append(row)
        if self.empty_classes:
            lines.append(f"WARNING: empty classes: {', '.join(self.empty_classes)}")
        if self.skipped:
            lines += ["", "skipped:"]
            lines += [f"  {k:<14} {n:>7}" for k, n in self.skip_counts.items()]
        if self.zwarning_removals:
            lines += ["", "golden (zwarning != 0) removals per bit:"]
            lines += [f"  {k:<18} {n:>7}" for k, n in self.zwarning_removals.items()]
        return lines


def parse_user_label(label: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """'STAR' -> ('STAR', ''), 'STAR:K7' -> ('STAR', 'K7'), tuples normalised; None stays None."""
    if label is None:
        return None
    if isinstance(label, tuple):
        c, s = (label + ("",))[:2]
    else:
        c, _, s = str(label).partition(":")
    c, s = normalize(c), normalize(s)
    if not c:
        raise ValueError(f"label {label!r} has no CLASS")
    return c, s


def _table_row(extra: Mapping[str, Any]) -> int:
    """``meta.extra['row']`` (set by readers for multi-spectrum files) or -1."""
    row = extra.get("row")
    return int(row) if isinstance(row, (int, np.integer)) and not isinstance(row, bool) else -1


def _targetid(extra: Mapping[str, Any]) -> int:
    """``meta.extra['targetid']`` (the DESI id, set by :mod:`specclass.io.desi`) or -1."""
    tid = extra.get("targetid")
    return int(tid) if isinstance(tid, (int, np.integer)) and not isinstance(tid, bool) else -1


def source_of(survey: str, fmt: str) -> str:
    """'text', 'other-survey' or 'fits' from a spectrum's ``meta.survey`` and ``meta.format``."""
    if fmt == "text":
        return "text"
    if survey.lower() in OTHER_SURVEYS or fmt.lower().startswith(OTHER_SURVEYS):
        return "other-survey"
    return "fits"


def list_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand files/folders (recursively) into a sorted, de-duplicated list of path strings.

    Sorting by path makes shards and single builds see files in the same order.
    """
    from specclass.io import find_spectrum_files

    out: list[str] = []
    seen: set[str] = set()
    for p in sorted({os.fspath(p) for p in find_spectrum_files(paths)}):
        real = os.path.realpath(p)  # the same file reached by two names counts once
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out


def _dup_key(plate: int, mjd: int, fiberid: int) -> str | None:
    """'PLATE-MJD-FIBERID' when all three are known, else None (never a duplicate)."""
    if plate >= 0 and mjd >= 0 and fiberid >= 0:
        return f"{plate:04d}-{mjd:05d}-{fiberid:04d}"
    return None


def cross_part_duplicates(ds: SpectralDataset, kept_keys: dict[str, str], duplicates: list[Skipped]) -> np.ndarray:
    """``(N,)`` bool keep-mask of ``ds``'s rows whose PLATE-MJD-FIBERID an earlier part already holds.

    For merging parts built separately (SLURM shards, ``--workers`` blocks), each free of
    duplicates itself: ``kept_keys`` (key -> file kept) is updated with this part's rows, and
    each dropped row is appended to ``duplicates`` with the reason, as a one-pass build reports it.
    """
    keep = np.ones(len(ds), dtype=bool)
    cols = (ds.meta["plate"].tolist(), ds.meta["mjd"].tolist(), ds.meta["fiberid"].tolist(), ds.meta["file"].tolist())
    for r, (pl, mj, fi, fname) in enumerate(zip(*cols)):
        key = _dup_key(pl, mj, fi)
        if key is None:
            continue
        if key in kept_keys:
            keep[r] = False
            duplicates.append(Skipped(str(fname), "duplicate", _dup_reason(kept_keys[key], key)))
        else:
            kept_keys[key] = str(fname)
    return keep


def _dup_reason(kept_file: str, key: str) -> str:
    return f"duplicate of {kept_file} (same PLATE-MJD-FIBERID {key})"


def shard_slice(n_items: int, shard_index: int, n_shards: int) -> slice:
    """Contiguous block ``shard_index`` of ``n_shards`` nearly equal blocks of ``range(n_items)``.

    Raises:
        ValueError: ``n_shards < 1`` or ``shard_index`` outside ``[0, n_shards)``.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if not 0 <= shard_index < n_shards:
        raise ValueError(f"shard_index must be in [0, {n_shards - 1}], got {shard_index}")
    bounds = np.linspace(0, n_items, n_shards + 1).round().astype(int)
    return slice(int(bounds[shard_index]), int(bounds[shard_index + 1]))


class _RowBuffer:
    """Growable ``(capacity, L)`` float32 flux/ivar buffers plus metadata lists."""

    META = ("file", "row", "plate", "mjd", "fiberid", "targetid", "class", "subclass", "z", "zwarning", "run2d", "ra", "dec", "survey", "format", "source")

    def __init__(self, capacity: int, npix: int):
        self.n = 0
        self.flux = np.empty((max(capacity, 1), npix), dtype=np.float32)
        self.ivar = np.empty_like(self.flux)
        self.labels: list[str] = []
        self.meta: dict[str, list[Any]] = {k: [] for k in self.META}

    def next_row(self) -> tuple[np.ndarray, np.ndarray]:
        """The (flux, ivar) rows the next spectrum is gridded into (grows the buffer when full)."""
        if self.n == self.flux.shape[0]:
            grow = max(64, self.n // 2)
            pad = np.empty((grow, self.flux.shape[1]), dtype=np.float32)
            self.flux = np.concatenate([self.flux, pad])
            self.ivar = np.concatenate([self.ivar, pad])
        return self.flux[self.n], self.ivar[self.n]

    def commit(self, label: str, meta: Mapping[str, Any]) -> None:
        """Keep the row last handed out by :meth:`next_row`."""
        self.labels.append(label)
        for k in self.META:
            self.meta[k].append(meta[k])
        self.n += 1

    def meta_arrays(self) -> dict[str, np.ndarray]:
        dtypes = {"row": np.int32, "targetid": np.int64, "plate": np.int32, "mjd": np.int32, "fiberid": np.int32, "z": np.float32, "zwarning": np.int32, "ra": np.float64, "dec": np.float64}
        out = {}
        for k, v in self.meta.items():
            out[k] = np.array(v, dtype=dtypes[k]) if k in dtypes else np.array(v, dtype=str).astype(str)
        return out


def _settings(scheme: LabelScheme, grid: LogLamGrid, golden: bool, bad: int, min_good_fraction: float) -> dict[str, Any]:
    return {
        "label_scheme": scheme.name,
        "grid": grid.to_dict(),
        "golden": bool(golden),
        "bad_mask_bits": int(bad),
        "bad_mask_names": mask_names(bad),
        "min_good_fraction": float(min_good_fraction),
    }


def build_rows(
    files: Sequence[str],
    *,
    labels: str | LabelScheme = "seed4",
    golden: bool = False,
    grid: LogLamGrid | None = None,
    strict: bool = False,
    bad_mask_bits: int | Iterable[str] | None = DEFAULT_BAD_MASK_BITS,
    text_labels: str | os.PathLike | Mapping[str, tuple[str, str]] | None = None,
    label: str | tuple[str, str] | None = None,
    min_good_fraction: float = 0.0,
    dedupe: bool = True,
    progress: bool | Callable[[int], None] = False,
) -> tuple[SpectralDataset, BuildReport]:
    """Read, filter, label and grid ``files`` (in the given order); no splits.

    Same arguments as :func:`build_dataset` (``files`` already expanded). The
    returned dataset has ``meta['split'] = -1`` everywhere.
    """
    from specclass.io import iter_spectra, load_text_labels

    scheme = get_scheme(labels)
    grid = grid or DEFAULT_GRID
    bad = mask_bits(bad_mask_bits)
    if not 0.0 <= min_good_fraction <= 1.0:
        raise ValueError(f"min_good_fraction must be in [0, 1], got {min_good_fraction}")
    user_label = parse_user_label(label)
    mapping = None
    if text_labels is not None:
        mapping = text_labels if isinstance(text_labels, Mapping) else load_text_labels(text_labels)
    min_good = max(1, int(np.ceil(min_good_fraction * grid.npix)))

    settings = _settings(scheme, grid, golden, bad, min_good_fraction)
    if isinstance(text_labels, Mapping):
        settings["text_labels"] = f"<mapping of {len(text_labels)} labels>"
    else:
        settings["text_labels"] = None if text_labels is None else os.fspath(text_labels)
    settings["label"] = None if user_label is None else ":".join(x for x in user_label if x)
    settings["dedupe"] = bool(dedupe)
    kept_keys: dict[str, str] = {}
    report = BuildReport(n_files=len(files), settings=settings)
    buf = _RowBuffer(len(files), grid.npix)
    zw_removed: Counter[str] = Counter()

    bar = None
    tick: Callable[[int], None] | None = None
    if callable(progress):
        tick = progress
    elif progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc="build-dataset")
        tick = bar.update

    def skip(path: str, category: str, reason: str) -> None:
        if strict and category in STRICT_CATEGORIES:
            raise BuildError(path, reason)
        report.skipped.append(Skipped(path, category, reason))

    last_path = None
    try:
        for path, spec, why in iter_spectra(list(files), label=mapping):
            if path != last_path:
                if tick is not None and last_path is not None:
                    tick(1)
                last_path = path
            if spec is None:
                skip(path, "unreadable", why or "unreadable")
                continue
            report.n_spectra += 1
            m = spec.meta
            class_, subclass = normalize(m.class_), normalize(m.subclass)
            if not class_ and user_label is not None:
                class_, subclass = user_label
            # DR7 Z_WARNIN has other bits: readers flag it (extra['zwarning_bits'] = 'dr7')
            is_dr7 = m.extra.get("zwarning_bits") == "dr7" or m.format.lower().startswith("spspec")
            if golden and m.zwarning != 0:
                if m.zwarning < 0:
                    zw_removed.update(["UNKNOWN"])
                    skip(path, "zwarning", "golden: the file has no ZWARNING (unknown is not golden)")
                    continue
                names = zw.decode(m.zwarning, dr7=is_dr7)
                zw_removed.update(names)
                key = "Z_WARNIN (DR7 bits)" if is_dr7 else "ZWARNING"
                skip(path, "zwarning", f"golden: {key} {m.zwarning} ({', '.join(names)})")
                continue
            if not is_dr7 and zw.is_sky(m.zwarning):
                names = ", ".join(zw.decode(m.zwarning))
                skip(path, "sky", f"sky fibre (ZWARNING {m.zwarning}: {names}); its CLASS {class_!r} is a fit to blank sky")
                continue
            if not class_:
                hint = "--text-labels table or --label" if m.format == "text" else "--label"
                skip(path, "no label", f"no CLASS in the file and none given (use {hint})")
                continue
            lab, why = scheme(class_, subclass)
            if lab is None:
                unknown = why is not None and (why.startswith("unknown CLASS") or why == "no CLASS")
                skip(path, "unknown class" if unknown else "no label", why or "no label")
                continue
            row_f, row_iv = buf.next_row()
            try:
                flux, ivar = rebin_arrays(
                    spec.loglam, spec.flux, spec.ivar, spec.and_mask, grid,
                    bad_mask_bits=bad, name=path, out=(row_f, row_iv),
                )
            except ValueError as exc:
                skip(path, "bad data", str(exc))
                continue
            n_good = int(np.count_nonzero(ivar > 0))
            if n_good < min_good:
                if n_good == 0:
                    reason = "no good pixel on the grid (ivar = 0 / masked everywhere, or outside the grid)"
                else:
                    reason = f"only {n_good} good pixels on the grid (< min_good_fraction {min_good_fraction})"
                skip(path, "all masked", reason)
                continue
            key = _dup_key(m.plate, m.mjd, m.fiberid) if dedupe else None
            if key is not None:
                if key in kept_keys:
                    skip(path, "duplicate", _dup_reason(kept_keys[key], key))
                    continue
                kept_keys[key] = path
            buf.commit(
                lab,
                {
                    "file": path,
                    "row": _table_row(m.extra),
                    "plate": m.plate,
                    "mjd": m.mjd,
                    "fiberid": m.fiberid,
                    "targetid": _targetid(m.extra),
                    "class": class_,
                    "subclass": subclass,
                    "z": m.z,
                    "zwarning": m.zwarning,
                    "run2d": m.run2d,
                    "ra": m.ra,
                    "dec": m.dec,
                    "survey": m.survey,
                    "format": m.format,
                    "source": source_of(m.survey, m.format),
                },
            )
        if tick is not None and last_path is not None:
            tick(1)
    finally:
        if bar is not None:
            bar.close()

    order = {n: i for i, n in enumerate(zw.ZWARNING_BITS.values())}
    report.zwarning_removals = dict(sorted(zw_removed.items(), key=lambda kv: (order.get(kv[0], 100), kv[0])))
    class_names = scheme.class_names_for(buf.labels)
    index = {c: i for i, c in enumerate(class_names)}
    lab_idx = np.array([index[x] for x in buf.labels], dtype=np.int32)
    n = buf.n
    ds = SpectralDataset(
        flux=buf.flux[:n],
        ivar=buf.ivar[:n],
        labels=lab_idx,
        class_names=class_names,
        loglam=grid.loglam,
        meta=buf.meta_arrays(),
        attrs={"label_scheme": scheme.name, "grid": grid.to_dict()},
    )
    report.n_kept = n
    return ds, report


def finalize(
    ds: SpectralDataset,
    report: BuildReport,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 42,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
) -> tuple[SpectralDataset, BuildReport]:
    """Check labels (empty classes), assign object ids and splits, and fill the report and attrs."""
    from specclass import __version__

    check = check_labels(ds.labels, ds.class_names)
    report.class_counts = check.counts
    report.empty_classes = check.empty
    report.n_kept = len(ds)
    assign_splits(ds, val_frac=val_frac, test_frac=test_frac, seed=seed, radius_arcsec=radius_arcsec)
    report.split_counts = ds.attrs["split"]["counts"]
    report.settings.update(seed=seed, val_frac=val_frac, test_frac=test_frac, radius_arcsec=radius_arcsec)
    ds.attrs.update(
        label_scheme=report.settings.get("label_scheme", ds.attrs.get("label_scheme")),
        grid=report.settings.get("grid", ds.attrs.get("grid")),
        golden=report.settings.get("golden", False),
        bad_mask_bits=report.settings.get("bad_mask_bits"),
        seed=seed,
        created_by=f"specclass {__version__}",
        build_report=report.to_dict(),
    )
    return ds, report


def build_dataset(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    labels: str | LabelScheme = "seed4",
    golden: bool = False,
    grid: LogLamGrid | None = None,
    strict: bool = False,
    *,
    bad_mask_bits: int | Iterable[str] | None = DEFAULT_BAD_MASK_BITS,
    text_labels: str | os.PathLike | Mapping[str, tuple[str, str]] | None = None,
    label: str | tuple[str, str] | None = None,
    min_good_fraction: float = 0.0,
    dedupe: bool = True,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 42,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    progress: bool | Callable[[int], None] = False,
    workers: int = 1,
) -> tuple[SpectralDataset, BuildReport]:
    """Build a labelled, gridded, split dataset from spectrum files and folders.

    Args:
        paths: files and/or folders (searched recursively; sorted by path).
        labels: label scheme name ('seed4', 'class3', 'star_subclass') or a
            :class:`~specclass.spectra.labels.LabelScheme`.
        golden: keep only ``ZWARNING == 0`` (the tutorial's golden dataset).
        grid: output :class:`~specclass.spectra.grid.LogLamGrid` (default 3.58-3.96, 1e-4 dex).
        strict: raise :class:`BuildError` at the first bad file instead of skipping it.
        bad_mask_bits: ``and_mask`` bits that mask a pixel (int or SPPIXMASK names).
        text_labels: label CSV for text spectra (or its loaded mapping).
        label: CLASS (or 'CLASS:SUBCLASS') for spectra that carry no CLASS.
        min_good_fraction: skip spectra with fewer good grid pixels than this
            fraction of the grid (0 = at least one).
        dedupe: keep only the first (in sorted path order) of spectra sharing a
            PLATE-MJD-FIBERID (lite + full copies, re-reductions).
        val_frac, test_frac, seed, radius_arcsec: split settings
            (:mod:`specclass.spectra.splits`).
        progress: show a tqdm bar (True) or call ``progress(n_files_done)``.
        workers: processes reading and gridding contiguous blocks of the sorted
            file list (:mod:`specclass.spectra.parallel_build`); the result equals
            one process's.

    Returns:
        ``(dataset, report)``: ``dataset.flux``/``ivar`` ``(N, L)`` float32,
        ``labels`` ``(N,)`` int32, ``meta`` with ``object_id`` and ``split``;
        ``report`` a :class:`BuildReport`.

    Raises:
        BuildError: with ``strict=True``, the first bad file.
        ValueError: an unknown scheme, bad bit name or fraction out of range
            (checked before any file is read).
    """
    from specclass.spectra.splits import split_indices

    get_scheme(labels)
    split_indices(np.zeros(0), np.zeros(0), val_frac=val_frac, test_frac=test_frac)  # validate fractions first
    files = list_files(paths)
    rows = build_rows
    if workers > 1:
        from functools import partial

        from specclass.spectra.parallel_build import build_rows_parallel

        rows = partial(build_rows_parallel, workers=workers)
    ds, report = rows(
        files,
        labels=labels,
        golden=golden,
        grid=grid,
        strict=strict,
        bad_mask_bits=bad_mask_bits,
        text_labels=text_labels,
        label=label,
        min_good_fraction=min_good_fraction,
        dedupe=dedupe,
        progress=progress,
    )
    return finalize(ds, report, val_frac=val_frac, test_frac=test_frac, seed=seed, radius_arcsec=radius_arcsec)


def build_shard(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    shard_index: int,
    n_shards: int,
    out: str | os.PathLike,
    **kwargs: Any,
) -> tuple[Path, BuildReport]:
    """Build shard ``shard_index`` of ``n_shards`` and save it to ``out`` (plus ``<out>.skipped.csv``).

    The sorted file list is cut into ``n_shards`` contiguous blocks
    (:func:`shard_slice`), so shard files depend only on the inputs. The shard
    has labels but no splits (``meta['split'] = -1``); :func:`merge_datasets`
    assigns them. ``kwargs`` are :func:`build_rows` arguments.

    Returns:
        ``(path written, report)``.

    Raises:
        ValueError: bad ``shard_index``/``n_shards``.
    """
    files = list_files(paths)
    sl = shard_slice(len(files), shard_index, n_shards)
    ds, report = build_rows(files[sl], **kwargs)
    ds.attrs.update(
        shard={"index": shard_index, "n_shards": n_shards, "n_files_total": len(files)},
        build_report=report.to_dict(),
    )
    path = ds.save(out)
    report.write_skipped_csv(f"{path}.skipped.csv")
    return path, report


def merge_datasets(
    files: Sequence[str | os.PathLike],
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 42,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
) -> tuple[SpectralDataset, BuildReport]:
    """Merge shard files from :func:`build_shard` into one dataset, then assign splits.

    Shards are ordered by their recorded index; all shards of the set must be
    present and built with the same settings. Shards are read one at a time into
    the merged arrays (peak memory: the result plus one shard). The result
    equals a one-process :func:`build_dataset` over the same inputs.

    Raises:
        ValueError: no files, a missing/duplicate shard, or shards built with
            different settings (names the files).
    """
    if not files:
        raise ValueError("merge_datasets: no shard files given")
    # first pass: attributes and sizes only (flux/ivar stay on disk)
    shards = []
    for f in files:
        n_rows, attrs = SpectralDataset.peek(f)
        info = attrs.get("shard")
        if not isinstance(info, dict) or "build_report" not in attrs:
            raise ValueError(f"{f}: not a shard (no 'shard' attribute); build it with build_shard")
        shards.append((int(info["index"]), int(info["n_shards"]), Path(f), n_rows, attrs))
    shards.sort(key=lambda t: t[0])
    n_shards = {t[1] for t in shards}
    if len(n_shards) != 1:
        raise ValueError(f"shards come from different sets (n_shards {sorted(n_shards)})")
    (n_total,) = n_shards
    indices = [t[0] for t in shards]
    if indices != list(range(n_total)):
        missing = sorted(set(range(n_total)) - set(indices))
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(f"shard set incomplete: missing {missing}, duplicated {dup} (of {n_total})")
    settings0 = shards[0][4]["build_report"]["settings"]
    for _, _, p, _, attrs in shards[1:]:
        s = attrs["build_report"]["settings"]
        if s != settings0:
            diff = sorted(k for k in set(s) | set(settings0) if s.get(k) != settings0.get(k))
            raise ValueError(f"{p}: built with different settings than {shards[0][2]} ({', '.join(diff)})")
    scheme = get_scheme(settings0["label_scheme"])
    grid = LogLamGrid.from_dict(settings0["grid"])

    # second pass: one shard in memory at a time, copied into the merged arrays
    n_rows_total = sum(t[3] for t in shards)
    flux = np.empty((n_rows_total, grid.npix), dtype=np.float32)
    ivar = np.empty_like(flux)
    names: list[str] = []
    meta_parts: dict[str, list[np.ndarray]] = {}
    dedupe = bool(settings0.get("dedupe", False))
    kept_keys: dict[str, str] = {}
    duplicates: list[Skipped] = []
    row = 0
    for _, _, p, n_rows, _ in shards:
        ds = SpectralDataset.load(p)
        if len(ds) != n_rows or ds.flux.shape[1] != grid.npix:
            raise ValueError(f"{p}: changed while merging (expected {n_rows} x {grid.npix})")
        # each shard is free of duplicates; look across shards
        keep = cross_part_duplicates(ds, kept_keys, duplicates) if dedupe else np.ones(n_rows, dtype=bool)
        n_keep = int(keep.sum())
        flux[row : row + n_keep] = ds.flux[keep] if n_keep < n_rows else ds.flux
        ivar[row : row + n_keep] = ds.ivar[keep] if n_keep < n_rows else ds.ivar
        names.extend(ds.class_names[i] for i in ds.labels[keep].tolist())
        for k, v in ds.meta.items():
            meta_parts.setdefault(k, []).append(v[keep])
        row += n_keep
        del ds
    class_names = scheme.class_names_for(names)
    index = {c: i for i, c in enumerate(class_names)}
    merged = SpectralDataset(
        flux=flux[:row],
        ivar=ivar[:row],
        labels=np.array([index[x] for x in names], dtype=np.int32),
        class_names=class_names,
        loglam=grid.loglam,
        meta={k: np.concatenate(v) for k, v in meta_parts.items()},
        attrs={"label_scheme": scheme.name, "grid": settings0["grid"]},
    )
    report = BuildReport(settings=dict(settings0))
    removals: Counter[str] = Counter()
    for _, _, p, _, attrs in shards:
        r = attrs["build_report"]
        report.n_files += int(r["n_files"])
        report.n_spectra += int(r["n_spectra"])
        removals.update(r.get("zwarning_removals", {}))
        side = Path(f"{p}.skipped.csv")
        if side.exists():
            report.skipped.extend(BuildReport.read_skipped_csv(side))
        else:  # only the head survives in the attrs
            report.skipped.extend(Skipped(**s) for s in r.get("skipped_head", []))
    report.skipped.extend(duplicates)
    order = {n: i for i, n in enumerate(zw.ZWARNING_BITS.values())}
    report.zwarning_removals = dict(sorted(removals.items(), key=lambda kv: (order.get(kv[0], 100), kv[0])))
    return finalize(merged, report, val_frac=val_frac, test_frac=test_frac, seed=seed, radius_arcsec=radius_arcsec)


def report_json(report: BuildReport) -> str:
    """The report as indented JSON (all skipped rows)."""
    d = report.to_dict(max_skipped=len(report.skipped))
    return json.dumps(d, indent=2, default=str)
