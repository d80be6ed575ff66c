"""Pretrained classifiers packaged with specclass: where they are, and how ``predict`` finds them.

A packaged classifier is an ordinary run folder (``model.keras``,
``preprocessing.json``, ``calibration.json``, ``config.json``, ``MODEL_CARD.md``,
and ``model.numpy.h5`` for use without TensorFlow) in
``specclass/pretrained/<scheme>/`` inside the installed package, found with
:mod:`importlib.resources`; ``tools/make_pretrained.py`` makes one. The
environment variable ``SPECCLASS_PRETRAINED`` (a folder holding ``<scheme>/``
run folders) takes precedence, for site-wide installs and tests.

``specclass predict FILES`` (no run folder) uses the packaged classifier of
``--pretrained SCHEME`` (default :data:`DEFAULT_SCHEME`) and says so; when none
is packaged it stops with :class:`NoPretrainedError`, whose message says how to
get one.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Sequence

#: Label schemes a pretrained classifier may be packaged for (``specclass build-dataset --labels``).
SCHEMES = ("seed4", "class3")
#: The scheme ``specclass predict FILES`` uses without ``--pretrained``.
DEFAULT_SCHEME = "seed4"
#: Environment variable naming a folder of ``<scheme>/`` run folders used instead of the package's.
ENV_VAR = "SPECCLASS_PRETRAINED"
#: A run folder holds this file (how a folder given to ``predict`` is told from a folder of spectra).
RUN_MARKER = "preprocessing.json"


class NoPretrainedError(FileNotFoundError):
    """No pretrained classifier is packaged for the scheme; the message says how to get one."""


def _root() -> Path | None:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    base = Path(str(resources.files(__name__)))  # a plain folder for every non-zip install
    return base if base.is_dir() else None


def pretrained_dir(scheme: str = DEFAULT_SCHEME) -> Path | None:
    """The packaged run folder for ``scheme``, or ``None`` when this install has none.

    Raises:
        ValueError: ``scheme`` is not one of :data:`SCHEMES`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"pretrained scheme {scheme!r}: allowed {', '.join(SCHEMES)}")
    root = _root()
    if root is None:
        return None
    run = root / scheme
    return run if (run / RUN_MARKER).is_file() else None


def require_pretrained(scheme: str = DEFAULT_SCHEME) -> Path:
    """:func:`pretrained_dir`, or :class:`NoPretrainedError` naming how to get a classifier."""
    run = pretrained_dir(scheme)
    if run is not None:
        return run
    where = f"${ENV_VAR}/{scheme}/" if os.environ.get(ENV_VAR) else f"specclass/pretrained/{scheme}/"
    raise NoPretrainedError(
        f"no run folder given, and this specclass install has no pretrained {scheme} classifier ({where} holds no "
        f"run folder). Either give a run folder: 'specclass predict RUN FILES' (make one with 'specclass "
        f"build-dataset SPECTRA --labels {scheme} --out DATA.h5' and 'specclass train DATA.h5 --out RUN'), or "
        f"package one: 'python tools/make_pretrained.py DATA.h5 --scheme {scheme}' (a source checkout), or set "
        f"{ENV_VAR} to a folder holding {scheme}/."
    )


def split_run_argument(paths: Sequence[Path]) -> tuple[Path | None, list[Path]]:
    """Tell ``specclass predict [RUN] FILES_OR_DIRS`` apart.

    The first path is the run when it is a run folder (holds ``preprocessing.json``),
    an exported model (``model.numpy.h5`` / ``.onnx`` from ``specclass export``), or,
    followed by more paths, a folder with no spectrum file in it or a missing path
    without a spectrum suffix (a mistyped run folder: loading it then says what is wrong). Otherwise every path is input and the run
    is ``None`` (use the pretrained classifier).

    Returns:
        ``(run or None, input paths)``.
    """
    from specclass.inference.load import exported_kind
    from specclass.io import find_spectrum_files
    from specclass.io.read import SPECTRUM_SUFFIXES

    paths = [Path(p) for p in paths]
    if not paths:
        return None, []
    first, rest = paths[0], paths[1:]
    if first.is_dir() and (first / RUN_MARKER).is_file():
        return first, rest
    if first.is_file() and exported_kind(first) is not None:
        return first, rest
    if rest and first.is_dir() and not find_spectrum_files(first):
        return first, rest
    if rest and not first.exists() and not first.name.lower().endswith(SPECTRUM_SUFFIXES):
        return first, rest  # a missing run folder: loading it says "no such run folder"
    return None, paths
