"""``specclass demo``: the whole pipeline on the embedded sample (see :mod:`specclass.demo`)."""

from __future__ import annotations

import argparse

from specclass.cli import CLIError
from specclass.commands.argtypes import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``specclass`` parser."""
    from specclass.demo import DEMO_DEFAULTS

    p = subparsers.add_parser(
        "demo", help="build, train, evaluate, report and predict on the shipped sample (no network)",
        description="Run the whole pipeline on the real SDSS sample shipped inside specclass: build the dataset, "
                    "train the default network (and the tutorial's, for comparison), evaluate on the held-out "
                    "test split, write report.html, classify the raw sample files.",
    )
    p.add_argument("--out", default="demo-run", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=DEMO_DEFAULTS["epochs"], help="max epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=DEMO_DEFAULTS["batch_size"], help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEMO_DEFAULTS["seed"], help="(default: %(default)s)")
    p.add_argument("--model", default=None, help="main network (default: specclass.models.DEFAULT_MODEL, spectral_tutorial)")
    p.add_argument("--n-sim-per-class", type=int, default=DEMO_DEFAULTS["n_sim_per_class"],
                   help="simulated spectra per class added to the training split only; 0 = real only "
                        "(default: %(default)s)")
    p.add_argument("--no-tutorial", action="store_true", help="skip training the tutorial network for comparison")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from specclass.demo import run_demo
    from specclass.models import DEFAULT_MODEL, list_models

    args.model = args.model or DEFAULT_MODEL
    if args.model not in list_models():
        raise CLIError(f"--model {args.model!r} is not a registered model; choose from {', '.join(list_models())}")
    if args.n_sim_per_class < 0:
        raise CLIError(f"--n-sim-per-class must be >= 0, got {args.n_sim_per_class}")
    run_demo(args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, model=args.model,
             compare_tutorial=not args.no_tutorial, n_sim_per_class=args.n_sim_per_class,
             verbose=0 if args.quiet else 2)
    return 0
