"""``specclass simulate``: labelled SDSS-like spectra from the SDSS pipeline eigenspectra.

specclass simulate --n-per-class 2000 --labels seed4 --seed 1 --out sim.h5 writes a
dataset file (the same format as specclass build-dataset: HDF5, or .npz by suffix) with
N spectra of each class of the label scheme on the default grid (log10 wavelength
3.58-3.96, 1e-4 dex), split 80/10/10 into train/val/test per class. Every row is marked
source 'simulated'; the method, seed and template checksums are stored in the file. The
method is described in the specclass.simulate.simulator module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from specclass.cli import CLIError
from specclass.commands.argtypes import positive_int, probability


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate labelled SDSS-like spectra from the pipeline eigenspectra",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--n-per-class", type=positive_int, required=True, metavar="N", help="spectra per class")
    p.add_argument("--labels", choices=("seed4", "class3"), default="seed4", help="label scheme (default seed4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same file")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output dataset (.h5 or .npz)")
    p.add_argument("--snr", type=float, nargs=2, metavar=("MIN", "MAX"), default=(3.0, 40.0),
                   help="median S/N per pixel, drawn log-uniformly (default 3 40)")
    p.add_argument("--galaxy-z", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.01, 0.40),
                   help="galaxy redshift range (default 0.01 0.40; emission-line galaxies stop at 0.36); "
                        "--galaxy-nearby-fraction of them are drawn at z 0-0.01 instead")
    p.add_argument("--galaxy-nearby-fraction", type=probability, default=0.1, metavar="F",
                   help="fraction of galaxies and AGN drawn at z 0-0.01, where their absorption lines sit almost "
                        "at rest like a star's (default 0.1; 0 = all within --galaxy-z)")
    p.add_argument("--qso-narrow-line-fraction", type=probability, default=0.0, metavar="F",
                   help="fraction of quasars below z 0.8 given an extra narrow-line region (Seyfert [OIII], [NII], "
                        "narrow Balmer lines; default 0: the eigenspectra's own lines only; 0.5 cost QSO recall "
                        "in the cross-validation, README 'Benchmarks')")
    p.add_argument("--qso-z", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.1, 4.0),
                   help="quasar redshift range (default 0.1 4.0)")
    p.add_argument("--label-source", choices=("pipeline", "construction"), default="pipeline",
                   help="labels from the emulated SDSS pipeline's decision on each spectrum (default; cached, "
                        "0.05-0.2 s per spectrum on all cores; built in memory) or from what was built (fast; "
                        "written chunk by chunk to .h5, memory does not grow with N)")
    p.add_argument("--float16", action="store_true",
                   help="store flux and ivar as float16 (half the disk; .h5 only; read back as float32)")
    p.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                   help="flux/ivar storage of a chunk-by-chunk .h5 (--label-source construction): gzip (default, "
                        "about 20 %% smaller) or none (streamed training reads it at memory speed; for files meant "
                        "for 'specclass train --stream on' on few cores)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Simulate and save; print a short summary (``--json``: one JSON line). Returns 0."""
    import numpy as np

    from specclass.simulate.simulator import SimulationConfig, Simulator

    out: Path = args.out
    if out.suffix not in (".h5", ".hdf5", ".npz"):
        raise CLIError(f"--out {out}: the file name must end in .h5, .hdf5 or .npz")
    if out.exists() and not args.overwrite:
        raise CLIError(f"--out {out}: file exists (use --overwrite to replace it)")
    emission_z_max = min(0.36, args.galaxy_z[1])
    cfg = SimulationConfig(
        n_per_class=args.n_per_class, labels=args.labels, seed=args.seed,
        snr_range=tuple(args.snr), galaxy_z=tuple(args.galaxy_z), qso_z=tuple(args.qso_z),
        emission_z_max=emission_z_max, galaxy_nearby_fraction=args.galaxy_nearby_fraction,
        qso_narrow_line_fraction=args.qso_narrow_line_fraction,
        galaxy_nearby_z=(0.0, min(0.01, emission_z_max)),
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.float16 and out.suffix == ".npz":
        raise CLIError(f"--out {out}: --float16 needs an HDF5 file (.h5)")
    if args.compression != "gzip" and (out.suffix == ".npz" or args.label_source == "pipeline"):
        raise CLIError(f"--compression {args.compression} is for .h5 files written chunk by chunk "
                       "(--label-source construction)")
    t0 = time.perf_counter()
    progress = not args.no_progress and sys.stderr.isatty()
    if args.label_source == "pipeline":  # relabelled (and topped up) in memory
        from specclass.simulate.pipeline_labels import label_like_the_pipeline

        ds = Simulator(cfg).run(progress=progress)
        print(f"labelling {len(ds)} spectra with the emulated SDSS pipeline (cached) ...", file=sys.stderr, flush=True)
        ds = label_like_the_pipeline(ds, cfg)
        if args.float16:
            raise CLIError("--float16 is for --label-source construction (written chunk by chunk); "
                           "pipeline-labelled files are written as float32")
        path = ds.save(out)
        n, attrs, split = len(ds), ds.attrs, np.asarray(ds.meta["split"])
    elif out.suffix == ".npz":  # one compressed archive: built in memory
        ds = Simulator(cfg).run(progress=progress)
        path = ds.save(out)
        n, attrs, split = len(ds), ds.attrs, np.asarray(ds.meta["split"])
    else:  # written chunk by chunk: memory does not grow with N
        from specclass.spectra.ondisk import OnDiskDataset

        path = Simulator(cfg).run(progress=progress, out=out, storage_dtype="float16" if args.float16 else "float32",
                                  compression=args.compression)
        with OnDiskDataset(path) as ds:
            n, attrs, split = len(ds), ds.attrs, np.asarray(ds.meta["split"])
    dt = time.perf_counter() - t0
    summary = {
        "out": str(path),
        "n": n,
        "per_class": attrs["build_report"]["per_class"],
        "seconds": round(dt, 2),
        "spectra_per_minute": round(n / dt * 60),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in summary["per_class"].items())
        splits = np.bincount(split, minlength=3)
        print(f"wrote {path}: {n} simulated spectra ({counts}); train/val/test {splits[0]}/{splits[1]}/{splits[2]}; "
              f"{dt:.1f} s ({summary['spectra_per_minute']:,} spectra/min)")
    return 0
