"""``specclass build-dataset | export-npy | dataset-info``: make and inspect dataset files.

Thin wrappers over :func:`specclass.spectra.build.build_dataset` and
:class:`specclass.spectra.dataset.SpectralDataset`. Options are validated here,
before any file is read, with messages naming the option, the value and what is
allowed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from specclass.cli import CLIError
from specclass.commands.argtypes import positive_int

#: Dataset file suffixes ``--out`` accepts (HDF5, or compressed npz for small sets).
DATASET_SUFFIXES = (".h5", ".hdf5", ".npz")
#: How many skipped files per category ``build-dataset`` prints (all go to ``<out>.skipped.csv``).
MAX_SKIPPED_PER_CATEGORY = 10

_EPILOG_BUILD = """\
labels:
  seed4          AGN / GALAXY / QSO / STAR, the tutorial's SQL (AGN = SUBCLASS exactly 'AGN')
  class3         GALAXY / QSO / STAR (the pipeline CLASS)
  star_subclass  stars only, labelled by SUBCLASS (classes = subclasses found)

grid: --grid-min/--grid-max are log10 of the vacuum wavelength in Angstrom
(default 3.58 .. 3.96 = 3802 .. 9120 A), --grid-step is in dex (default 1e-4, the
SDSS coadd step).

examples:
  specclass build-dataset spectra/ --labels seed4 --golden --out data/seed4.h5
  specclass build-dataset text_stars/ --labels star_subclass \\
      --text-labels sdss_star_spectra_txt.csv --out stars.h5
  specclass build-dataset my_stars/*.txt --label STAR --out stars.npz
"""


# --------------------------------------------------------------------------- value checks
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1)")
    return value


def _loglam(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value > 100:
        raise argparse.ArgumentTypeError(
            f"{value} looks like Angstrom; give log10 of the wavelength (e.g. {math.log10(value):.4f})"
        )
    if not 3.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"{value} is outside 3.0 .. 5.0 (log10 Angstrom: 1000 .. 100000 A)")
    return value


def _step(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 0.01:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 0.01] dex")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _dataset_out(path: str, option: str = "--out") -> Path:
    p = Path(path)
    if p.suffix.lower() not in DATASET_SUFFIXES:
        raise CLIError(f"{option} {path!r}: the dataset file must end in {', '.join(DATASET_SUFFIXES)}")
    if p.exists() and p.is_dir():
        raise CLIError(f"{option} {path!r} is a directory; give a file name ending in .h5 or .npz")
    return p


# --------------------------------------------------------------------------- parsers
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build-dataset``, ``export-npy`` and ``dataset-info``."""
    from specclass.spectra.labels import SCHEME_NAMES

    p = subparsers.add_parser(
        "build-dataset",
        help="read spectra, label, grid and split them into one dataset file",
        description="Read spectrum files/folders, keep the labelled ones, put them on a common "
        "log-wavelength grid, assign grouped train/val/test splits and write one dataset file "
        "plus <out>.skipped.csv (file, category, reason).",
        epilog=_EPILOG_BUILD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="spectrum files and/or folders (searched recursively)")
    p.add_argument("--labels", default="seed4", choices=SCHEME_NAMES, help="label scheme (default seed4)")
    p.add_argument("--golden", action="store_true", help="keep only ZWARNING == 0 (the tutorial's golden dataset)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file instead of skipping it")
    p.add_argument("--grid-min", type=_loglam, default=None, help="first pixel, log10 A (default 3.58)")
    p.add_argument("--grid-max", type=_loglam, default=None, help="last pixel, log10 A (default 3.96)")
    p.add_argument("--grid-step", type=_step, default=None, help="pixel step, dex (default 1e-4)")
    p.add_argument(
        "--bad-mask-bits",
        default=None,
        metavar="NAMES",
        help="and_mask (SPPIXMASK) bits that mask a pixel, comma-separated, or 'none' "
        "(default FULLREJECT,NOSKY,BRIGHTSKY)",
    )
    p.add_argument("--min-good-fraction", type=_fraction, default=0.0, help="skip spectra with fewer good grid pixels (default 0)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep every spectrum even if one with the same PLATE-MJD-FIBERID was kept (lite + full copies)")
    p.add_argument("--text-labels", default=None, metavar="CSV", help="labels for text spectra (plate,mjd,fiberid,class,subclass)")
    p.add_argument("--label", default=None, metavar="CLASS[:SUBCLASS]", help="label for spectra that carry no CLASS")
    p.add_argument("--seed", type=_int, default=42, help="split seed (default 42)")
    p.add_argument("--val-frac", type=_fraction, default=0.15, help="validation fraction (default 0.15)")
    p.add_argument("--test-frac", type=_fraction, default=0.15, help="test fraction (default 0.15)")
    p.add_argument("--radius-arcsec", type=float, default=2.0, help="repeat-observation match radius (default 2)")
    p.add_argument("--out", required=True, metavar="FILE", help="dataset file (.h5 or .npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="processes reading the files (default: the cores SLURM or the machine gives this process); "
                        "the dataset is the same for any N")
    p.set_defaults(func=cmd_build_dataset)

    p = subparsers.add_parser(
        "export-npy",
        help="write the tutorial's data.npy, labels.npy, wavelengths.npy",
        description="Export a dataset file as the seed tutorial's triple: data.npy (N, L) float32 flux, "
        "labels.npy (N,) int32, wavelengths.npy (L,) float64 Angstrom (plus class_names.txt).",
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset file (.h5 or .npz)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--split", choices=("train", "val", "test"), default=None, help="export one split only")
    p.set_defaults(func=cmd_export_npy)

    p = subparsers.add_parser(
        "dataset-info",
        help="describe a dataset file",
        description="Print a dataset's size, grid, classes, counts per class and split, and its build report.",
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset file (.h5 or .npz)")
    p.set_defaults(func=cmd_dataset_info)


# --------------------------------------------------------------------------- commands
def _grid_from_args(args: argparse.Namespace):
    from specclass.spectra.grid import DEFAULT_GRID, LogLamGrid

    if args.grid_min is None and args.grid_max is None and args.grid_step is None:
        return DEFAULT_GRID
    lo = args.grid_min if args.grid_min is not None else DEFAULT_GRID.loglam_min
    hi = args.grid_max if args.grid_max is not None else DEFAULT_GRID.loglam_max
    step = args.grid_step if args.grid_step is not None else DEFAULT_GRID.step
    if hi <= lo:
        raise CLIError(f"--grid-max {hi} must be greater than --grid-min {lo}")
    return LogLamGrid.from_range(lo, hi, step)


def _bad_bits_from_args(value: str | None) -> int:
    from specclass.spectra.grid import DEFAULT_BAD_MASK_BITS, mask_bits

    if value is None:
        return DEFAULT_BAD_MASK_BITS
    if value.strip().lower() in ("none", "0", ""):
        return 0
    try:
        return mask_bits(value)
    except ValueError as exc:
        raise CLIError(f"--bad-mask-bits {value!r}: {exc}") from None


def cmd_build_dataset(args: argparse.Namespace) -> int:
    """Run ``build-dataset``; exit 0 on success, 1 when no spectrum was kept."""
    from specclass.parallel import check_workers
    from specclass.spectra.build import BuildError, build_dataset, parse_user_label
    from specclass.spectra.labels import KNOWN_CLASSES

    out = _dataset_out(args.out)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise CLIError(f"PATH: not found: {', '.join(missing)}")
    if args.val_frac + args.test_frac >= 1.0:
        raise CLIError(f"--val-frac {args.val_frac} + --test-frac {args.test_frac} must be < 1")
    if args.radius_arcsec < 0:
        raise CLIError(f"--radius-arcsec {args.radius_arcsec} must be >= 0")
    if args.text_labels is not None and not Path(args.text_labels).is_file():
        raise CLIError(f"--text-labels {args.text_labels!r}: no such file")
    if args.label is not None:
        try:
            cls, _ = parse_user_label(args.label)
        except ValueError as exc:
            raise CLIError(f"--label {args.label!r}: {exc}") from None
        if cls not in KNOWN_CLASSES:
            raise CLIError(f"--label {args.label!r}: CLASS must be one of {', '.join(KNOWN_CLASSES)}")
    grid = _grid_from_args(args)
    bad = _bad_bits_from_args(args.bad_mask_bits)

    try:
        ds, report = build_dataset(
            args.paths,
            labels=args.labels,
            golden=args.golden,
            grid=grid,
            strict=args.strict,
            bad_mask_bits=bad,
            text_labels=args.text_labels,
            label=args.label,
            min_good_fraction=args.min_good_fraction,
            dedupe=not args.keep_duplicates,
            val_frac=args.val_frac,
            test_frac=args.test_frac,
            seed=args.seed,
            radius_arcsec=args.radius_arcsec,
            progress=not args.no_progress,
            workers=check_workers(args.workers),
        )
    except BuildError as exc:
        raise CLIError(f"--strict: {exc}") from None
    except ValueError as exc:  # e.g. a damaged --text-labels table
        raise CLIError(str(exc)) from None

    skipped_csv = report.write_skipped_csv(f"{out}.skipped.csv")
    print("\n".join(report.summary_lines()))
    if report.skipped:
        print(f"\nskipped files ({len(report.skipped)}; all of them in {skipped_csv}):")
        print("\n".join(report.skipped_lines(MAX_SKIPPED_PER_CATEGORY)))
    if len(ds) == 0:
        print(f"\nno spectrum was kept; nothing written to {out} (see {skipped_csv})", file=sys.stderr)
        return 1
    path = ds.save(out)
    print(f"\nwrote {path}: {len(ds)} spectra x {ds.flux.shape[1]} pixels, classes {', '.join(ds.class_names)}")
    return 0


def _load(path: str):
    from specclass.spectra.dataset import DatasetFormatError, SpectralDataset

    try:
        return SpectralDataset.load(path)
    except FileNotFoundError:
        raise CLIError(f"DATASET {path!r}: no such file") from None
    except DatasetFormatError as exc:
        raise CLIError(str(exc)) from None


def cmd_export_npy(args: argparse.Namespace) -> int:
    """Run ``export-npy``."""
    ds = _load(args.dataset)
    if args.split:
        ds = ds.split(args.split)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out!r} exists and is not a folder")
    paths = ds.export_npy(out)
    names = out / "class_names.txt"
    tmp = out / ".class_names.txt.part"
    tmp.write_text("".join(f"{i} {c}\n" for i, c in enumerate(ds.class_names)), encoding="utf-8")
    tmp.replace(names)
    for key, p in paths.items():
        print(f"{key:<12} {p}")
    print(f"{'class_names':<12} {names}")
    print(f"{len(ds)} spectra x {ds.flux.shape[1]} pixels")
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:
    """Run ``dataset-info``."""
    import numpy as np

    from specclass.spectra.dataset import SPLIT_CODES

    ds = _load(args.dataset)
    n, npix = ds.flux.shape
    print(f"file          {args.dataset}")
    print(f"spectra       {n}")
    if npix:
        print(f"grid          {npix} pixels, loglam {ds.loglam[0]:.4f} .. {ds.loglam[-1]:.4f} "
              f"({ds.wavelength[0]:.1f} .. {ds.wavelength[-1]:.1f} A), step {np.diff(ds.loglam[:2])[0] if npix > 1 else 0:.2e} dex")
    attrs = ds.attrs
    print(f"label scheme  {attrs.get('label_scheme', '?')}")
    sim = attrs.get("simulation") if isinstance(attrs.get("simulation"), dict) else None
    sim_cfg = (sim or {}).get("config") or {}
    if sim is not None:
        print("golden        n/a (simulated spectra)")
        print(f"seed          {sim_cfg.get('seed', 'n/a')} (simulation)")
    else:
        print(f"golden        {attrs.get('golden', 'n/a')}")
        print(f"seed          {attrs.get('seed', attrs.get('split', {}).get('seed', 'n/a'))}")
    if "created_by" in attrs:
        print(f"created by    {attrs['created_by']}")
    width = max([8] + [len(c) for c in ds.class_names])
    head = f"{'class':<{width}}  {'total':>7}" + "".join(f"  {s:>7}" for s in SPLIT_CODES) + f"  {'unsplit':>7}"
    print("\n" + head + "\n" + "-" * len(head))
    split = ds.meta["split"]
    for i, c in enumerate(ds.class_names):
        sel = ds.labels == i
        row = f"{c:<{width}}  {int(sel.sum()):>7}"
        row += "".join(f"  {int(np.count_nonzero(sel & (split == code))):>7}" for code in SPLIT_CODES.values())
        row += f"  {int(np.count_nonzero(sel & (split < 0))):>7}"
        print(row)
    objects = np.unique(ds.meta["object_id"]).size if n else 0
    print(f"\nobjects       {objects}")
    src, cnt = np.unique(ds.meta["source"], return_counts=True)
    print("sources       " + ", ".join(f"{s or '?'} {c}" for s, c in zip(src.tolist(), cnt.tolist())))
    good = float(np.mean(ds.ivar > 0)) if ds.ivar.size else 0.0
    print(f"good pixels   {100 * good:.1f} %")
    rep = attrs.get("build_report")
    if isinstance(rep, dict) and sim is None:
        print(f"\nbuild: {rep.get('n_files', '?')} files, {rep.get('n_kept', '?')} kept, {rep.get('n_skipped', '?')} skipped")
        for k, v in (rep.get("skip_counts") or {}).items():
            print(f"  {k:<14} {v:>7}")
        if rep.get("zwarning_removals"):
            print("  golden removals per ZWARNING bit: " + ", ".join(f"{k} {v}" for k, v in rep["zwarning_removals"].items()))
        if rep.get("empty_classes"):
            print(f"  WARNING: empty classes: {', '.join(rep['empty_classes'])}")
    return 0
