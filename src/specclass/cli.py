"""The ``specclass`` command line: one sub-command per pipeline step.

Each group of sub-commands lives in its own module under :mod:`specclass.commands`
and exposes ``register(subparsers)``; that function adds its parsers and sets
``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
Heavy imports (Keras, TensorFlow) happen inside ``func``, so ``specclass --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from specclass import __version__

# Keep TensorFlow's C++ start-up chatter out of the output (set before anything imports it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Modules under ``specclass.commands`` whose ``register`` adds sub-commands, in
#: the order they are listed by ``specclass --help`` (the order of the pipeline).
COMMAND_MODULES: tuple[str, ...] = (
    "sdss",
    "dataset",
    "simulate",
    "train",
    "ensemble",
    "export",
    "mnist",
    "slurm",
    "view",
    "demo",
)


class _DropRetracingWarning(logging.Filter):
    """Drop TensorFlow's "N out of the last M calls to <...one_step_on_data...> triggered
    tf.function retracing" warning.

    Keras traces its predict/train step once per model and input shape; TensorFlow
    counts those traces across models (same Python function) and warns after five, so
    every run that builds or loads several models (``demo``, ``train`` with
    calibration and evaluation, cross-validation) printed it, though nothing is traced
    more than needed. Other TensorFlow warnings are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_tensorflow_retracing() -> None:
    """Install :class:`_DropRetracingWarning` on the ``tensorflow`` logger (no TensorFlow import)."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropRetracingWarning) for f in logger.filters):
        logger.addFilter(_DropRetracingWarning())


class CLIError(Exception):
    """An error caused by the user's input; printed without a traceback (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``specclass`` parser from every module in :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="specclass",
        description="Turn public SDSS spectra into trained Keras classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"specclass {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"specclass.commands.{name}")
        except ModuleNotFoundError as exc:  # a group not written yet
            if exc.name == f"specclass.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``specclass`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    quiet_tensorflow_retracing()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"specclass {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
