"""``specclass export RUN --format numpy|onnx|savedmodel``: the run's model for inference without TensorFlow.

::

    specclass export RUN                       # RUN/model.numpy.h5 (numpy + h5py predictor)
    specclass export RUN --format onnx         # RUN/model.onnx (ONNX Runtime)
    specclass predict RUN/model.numpy.h5 FILES # classify with it: no TensorFlow imported

See :mod:`specclass.inference.export` for what each file holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specclass.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``specclass`` parser."""
    from specclass.inference.export import EXPORT_FORMATS

    p = subparsers.add_parser(
        "export", help="export a run's model (with its preprocessing and calibration) for inference "
                       "without TensorFlow: numpy, ONNX or TF SavedModel",
        description="Write the run's model as a numpy network file (numpy + h5py only), an ONNX model "
                    "(ONNX Runtime) or a TF SavedModel, with the preprocessing and calibration inside. "
                    "'specclass predict EXPORTED_FILE FILES' classifies with a numpy or ONNX export.",
    )
    p.add_argument("run", type=Path, help="run folder written by 'specclass train' (an ensemble folder: each "
                   "member exported as numpy inside it)")
    p.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="numpy",
                   help="numpy (default: RUN/model.numpy.h5), onnx (RUN/model.onnx; needs tf2onnx and onnx), "
                        "savedmodel (RUN/saved_model/)")
    p.add_argument("--out", type=Path, help="output file or folder (default in the run folder, see --format)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``specclass export``."""
    from specclass.inference.export import export_run
    from specclass.persistence import RunFolderError

    try:
        path = export_run(args.run, args.format, args.out)
    except (RunFolderError, ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    from specclass.ensemble import MEMBERS_DIR, is_ensemble, read_ensemble_info

    if is_ensemble(args.run):
        names = read_ensemble_info(args.run)["members"]
        for name in names:
            f = Path(args.run) / MEMBERS_DIR / name / "model.numpy.h5"
            print(f"exported member {name}: {f} ({f.stat().st_size / 1024:.0f} KiB)")
        print(f"exported the {len(names)} members of the ensemble {args.run} as numpy (preprocessing and "
              "calibration included)")
        print(f"next: specclass predict {args.run} FILES_OR_DIRS --out predictions.csv   (no TensorFlow needed)")
        return 0
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    print(f"exported {args.run} as {args.format}: {path} ({size / 1024:.0f} KiB; preprocessing and calibration included)")
    if args.format in ("numpy", "onnx"):
        print(f"next: specclass predict {path} FILES_OR_DIRS --out predictions.csv   (no TensorFlow needed)")
    return 0
