"""``specclass ensemble RUN_A RUN_B ... --out RUN`` and the member loop of ``specclass train --ensemble K``.

::

    specclass train DATASET --out RUN --ensemble 5      # members seed42 ... seed46 in RUN/members/
    specclass ensemble RUN_A RUN_B RUN_C --out RUN      # copy existing compatible runs into RUN/members/
    specclass evaluate RUN DATASET                      # as for any run folder
    specclass predict RUN FILES --out predictions.csv

See :mod:`specclass.ensemble` for the folder layout and how members are combined.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from specclass.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ensemble`` to the ``specclass`` parser."""
    p = subparsers.add_parser(
        "ensemble", help="put existing compatible run folders together as one ensemble run folder",
        description="Copy the run folders RUNS (same classes, grid and preprocessing) into OUT/members/ and write "
                    "OUT/ensemble.json. 'specclass predict OUT' and 'specclass evaluate OUT' then combine the "
                    "members: geometric mean of their calibrated probabilities, renormalised. "
                    "('specclass train DATASET --out OUT --ensemble K' trains K members directly.)",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders written by 'specclass train'")
    p.add_argument("--out", type=Path, required=True, help="ensemble folder to create (must not exist, or be empty)")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    """``specclass ensemble``."""
    from specclass.ensemble import EnsembleError, assemble, read_ensemble_info

    try:
        out = assemble(args.runs, args.out)
    except EnsembleError as exc:
        raise CLIError(str(exc)) from None
    names = read_ensemble_info(out)["members"]
    print(f"ensemble of {len(names)} members -> {out}: {', '.join(names)}")
    print(f"next: specclass evaluate {out} DATASET   |   specclass predict {out} FILES_OR_DIRS")
    return 0


def train_ensemble(args: argparse.Namespace, dataset: Any, train_one: Callable[[Path, int], Any]) -> int:
    """Train (or resume) ``args.ensemble`` members, seeds ``args.seed + i``, then write ``ensemble.json``.

    Args:
        args: the ``specclass train`` arguments (``out``, ``ensemble``, ``seed``, ``model``, ``dataset``).
        dataset: the training dataset (the same for every member).
        train_one: ``train_one(member_dir, seed)`` trains or resumes one member and prints its summary.

    Returns:
        0.

    Raises:
        CLIError: ``--out`` holds a single run or an ensemble made by ``specclass ensemble``.
    """
    from specclass.ensemble import (MEMBERS_DIR, EnsembleError, is_ensemble, member_name_for_seed,
                                    read_ensemble_info, write_ensemble)
    from specclass.persistence import MODEL_FILES

    out: Path = args.out
    k = int(args.ensemble)
    if not (out / MEMBERS_DIR).is_dir() and ((out / MODEL_FILES["keras"]).is_file() or (out / "checkpoints").is_dir()):
        raise CLIError(f"{out}: holds a single run (model or checkpoints at its top level), not an ensemble; "
                       "use another --out for --ensemble")
    if is_ensemble(out) and not str(read_ensemble_info(out).get("created_by", "")).startswith("specclass train"):
        raise CLIError(f"{out}: an ensemble assembled by 'specclass ensemble', not trained by 'specclass train "
                       "--ensemble'; use another --out")
    seeds = [args.seed + i for i in range(k)]
    names = [member_name_for_seed(s) for s in seeds]
    print(f"training an ensemble of {k} {args.model} members on {args.dataset} ({len(dataset)} rows, classes "
          f"{dataset.class_names}) -> {out}/{MEMBERS_DIR}/ ({', '.join(names)})", flush=True)
    for i, (name, seed) in enumerate(zip(names, seeds)):
        print(f"member {i + 1}/{k}: {name} (seed {seed})", flush=True)
        train_one(out / MEMBERS_DIR / name, seed)
    try:
        path = write_ensemble(out, names, created_by=f"specclass train --ensemble {k}",
                              extra={"dataset": str(args.dataset), "model": args.model})
    except EnsembleError as exc:
        raise CLIError(str(exc)) from None
    print(f"ensemble of {k} members written: {path}")
    print(f"next: specclass evaluate {out} {args.dataset}")
    return 0
