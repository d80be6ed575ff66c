"""``specclass view``: one self-contained HTML page to look at spectra and their predicted classes.

::

    specclass view RUN DATASET [--split test] --out viewer.html
    specclass view RUN FILES_OR_DIRS... --out viewer.html
    specclass view predictions.csv [FILES_OR_DIRS... | DATASET] --out viewer.html

The page (:mod:`specclass.view.page`) filters and pages through the spectra
(sorted by confidence), draws each with its 1σ band, masked pixels and line
markers, shows its class probabilities, and records and exports classes given by eye.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from specclass.cli import CLIError
from specclass.commands.argtypes import positive_int, probability

DATASET_SUFFIXES = (".h5", ".hdf5", ".npz")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``view`` to the ``specclass`` parser."""
    from specclass.calibration import DEFAULT_UNCERTAIN_BELOW

    p = subparsers.add_parser(
        "view", help="write an interactive HTML page of spectra and their predictions (visual inspection)",
        description="Write one self-contained HTML page (works offline) to filter and page through spectra "
                    "sorted by confidence, see each with its 1-sigma band, masked pixels and emission/absorption "
                    "lines, its class probabilities, and mark classes by eye (exported as CSV). SOURCE is a run "
                    "folder (the spectra are classified now) or a predictions.csv from 'specclass predict'.",
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_PREDICTIONS",
                   help="run folder from 'specclass train', or predictions.csv from 'specclass predict'")
    p.add_argument("spectra", type=Path, nargs="*", metavar="FILES|DATASET",
                   help="spectrum files / folders, or one dataset file (.h5/.npz); with a predictions.csv "
                        "the default is the files its 'file' column names")
    p.add_argument("--out", type=Path, default=Path("viewer.html"), help="HTML file to write (default viewer.html)")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="rows of a DATASET classified with a run (default test)")
    p.add_argument("--bin", type=positive_int, default=2, metavar="K",
                   help="merge K pixels into one in the page (ivar-weighted; default 2; 1 = full resolution, "
                        "about twice the page size)")
    p.add_argument("--uncertain-below", type=probability, default=DEFAULT_UNCERTAIN_BELOW, metavar="P",
                   help=f"flag a spectrum uncertain when its top probability is below P (default "
                        f"{DEFAULT_UNCERTAIN_BELOW})")
    p.add_argument("--no-calibration", action="store_true",
                   help="with a run: the network's raw softmax instead of the calibrated probabilities")
    p.add_argument("--title", help="page title (default: from the inputs)")
    p.set_defaults(func=cmd_view)


def _is_dataset(paths: list[Path]) -> bool:
    return len(paths) == 1 and paths[0].suffix.lower() in DATASET_SUFFIXES and paths[0].is_file()


def cmd_view(args: argparse.Namespace) -> int:
    """``specclass view``: load, classify if needed, write the page; print its size."""
    from specclass import view
    from specclass.persistence import RunFolderError
    from specclass.spectra.dataset import DatasetFormatError

    missing = [str(p) for p in [args.source, *args.spectra] if not p.exists()]
    if missing:
        raise CLIError(f"no such file or folder: {', '.join(missing)}")
    t0 = time.perf_counter()
    calibrate = not args.no_calibration
    try:
        if args.source.is_dir():
            if not args.spectra:
                raise CLIError(f"{args.source} is a run folder: give the spectra to classify "
                               "(files / folders, or a dataset file)")
            if _is_dataset(args.spectra):
                data = view.from_dataset(args.source, args.spectra[0], args.split, calibrate=calibrate,
                                         uncertain_below=args.uncertain_below)
                what = f"{args.spectra[0].name} [{args.split}] classified by {args.source.name}"
            else:
                data = view.from_files(args.source, args.spectra, calibrate=calibrate,
                                       uncertain_below=args.uncertain_below)
                what = f"spectra classified by {args.source.name}"
        else:
            data = view.from_predictions_csv(args.source, args.spectra, uncertain_below=args.uncertain_below)
            what = args.source.name
    except (RunFolderError, DatasetFormatError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    data.title = args.title or f"specclass viewer: {what}"
    try:
        path = view.write_viewer(args.out, data, bin_factor=args.bin)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    size = path.stat().st_size / 1e6
    print(f"wrote {path}: {len(data)} spectra ({int(data.uncertain.sum())} uncertain, "
          f"{int((data.agreement == 'disagree').sum())} disagree with the pipeline), {size:.1f} MB, "
          f"{time.perf_counter() - t0:.1f} s; open it in a browser (works offline)")
    return 0
