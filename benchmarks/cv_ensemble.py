"""Ensembles scored from the fold models an ``accuracy.py --folds K`` run left behind (no training).

``accuracy.py --folds K --work WORK`` keeps each fold model in ``WORK/SCHEME-all-TRAIN-MODEL-foldK``.
This script rebuilds the same real datasets and folds (same seed, same ``cv_folds``), lets every
fold model predict its own held-out fold again (calibrated probabilities are not used: raw
softmax, as the accuracy table), and scores

* each network alone (the same figures as the accuracy table, a consistency check),
* the two networks averaged (mean log-probability),
* each network, and both, combined with the pipeline emulator (``specclass.spectro1d``): its
  label as a probability vector ``(1 - eps)`` on its class, ``eps`` spread over the others,
  multiplied into the network probabilities (mean log-probability with weight ``--emulator-weight``),
* the emulator alone.

Usage::

    .venv/bin/python benchmarks/cv_ensemble.py --work /tmp/bench/cvA --schemes seed4 class3

Writes ``benchmarks/results/cv-ensemble.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import command_line, environment, shared_data_dir, utc_now, write_report
from accuracy import _proba, _score, cv_folds, emulator_proba, load_data

REPO = Path(__file__).resolve().parents[1]
MODELS = ("spectral_resnet", "spectral_tutorial")


def mean_log(ps: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    w = np.ones(len(ps)) if weights is None else np.asarray(weights, float)
    lp = sum(wi * np.log(np.clip(p, 1e-7, 1.0)) for wi, p in zip(w, ps)) / w.sum()
    e = np.exp(lp - lp.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def soften(onehot: np.ndarray, eps: float) -> np.ndarray:
    c = onehot.shape[1]
    return onehot * (1 - eps) + (1 - onehot) * eps / (c - 1)


def oof_of(work: Path, tag: str, real: Any, folds: int, seed: int) -> np.ndarray:
    from types import SimpleNamespace

    from specclass.persistence import load_run

    fold = cv_folds(real, folds, seed)
    oof = np.zeros((len(real), len(real.class_names)), np.float32)
    for k in range(folds):
        run = load_run(work / f"{tag}-fold{k}", compile=False)
        res = SimpleNamespace(model=run.model, preprocessor=run.preprocessor)
        oof[fold == k] = _proba(res, real.subset(np.flatnonzero(fold == k)))
    return oof


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="the --work folder of the accuracy.py --folds run")
    p.add_argument("--schemes", nargs="+", default=["seed4", "class3"])
    p.add_argument("--train", default="real+sim", help="training-set name in the run folders (default real+sim)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eps", type=float, default=0.1, help="probability the emulator leaves to the other classes")
    p.add_argument("--emulator-weight", type=float, default=1.0, help="weight of the emulator in the mean log-probability")
    p.add_argument("--shared-data", type=Path, default=shared_data_dir())
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--stem", default="cv-ensemble")
    args = p.parse_args(argv)
    t0 = time.time()
    results = []
    for scheme in args.schemes:
        data = load_data(args.shared_data, scheme, 0, args.seed, True)
        real = data["real"]
        fits = np.asarray(real.meta["source"]) == "fits"
        probs = {}
        for m in MODELS:
            tag = f"{scheme}-all-{args.train}-{m}".replace(" ", "_").replace("(", "").replace(")", "")
            if (args.work / f"{tag}-fold0").is_dir():
                probs[m] = oof_of(args.work, tag, real, args.folds, args.seed)
        emu = soften(np.round(emulator_proba(real, scheme)), args.eps)
        combos: dict[str, np.ndarray] = {f"{m}": p_ for m, p_ in probs.items()}
        if len(probs) == 2:
            combos["resnet + tutorial"] = mean_log(list(probs.values()))
        for m, p_ in probs.items():
            combos[f"{m} + emulator"] = mean_log([p_, emu], [1.0, args.emulator_weight])
        if len(probs) == 2:
            combos["resnet + tutorial + emulator"] = mean_log([*probs.values(), emu], [1.0, 1.0, args.emulator_weight])
        combos["emulator alone"] = emu
        for name, pr in combos.items():
            results.append({"scheme": scheme, "name": name,
                            "real FITS, out-of-fold": _score(real.subset(fits), pr[fits]),
                            "real, out-of-fold": _score(real, pr)})
            e = results[-1]["real FITS, out-of-fold"]
            print(f"{scheme} {name}: FITS bal.acc {e['balanced_accuracy']:.3f} acc {e['accuracy']:.3f}", flush=True)
    report = {"benchmark": "cv_ensemble", "command": command_line(), "date_utc": utc_now(), "settings": {
        k: (Path(v).name if isinstance(v, Path) else v) for k, v in vars(args).items()},  # no machine paths
        "seconds": round(time.time() - t0, 1), "environment": environment(), "results": results}

    def md(r: dict[str, Any]) -> str:
        lines = ["# Ensembles from the cross-validated fold models", "",
                 f"Command: `{r['command']}` ({r['date_utc']} UTC). Out-of-fold predictions of the "
                 f"`accuracy.py --folds {args.folds}` fold models, combined without retraining; emulator = "
                 f"`specclass.spectro1d` label with eps = {args.eps}, weight {args.emulator_weight}.", "",
                 "| scheme | predictor | real FITS bal. acc. | accuracy | per-class correct/n | all real (FITS + text) bal. acc. |",
                 "| --- | --- | ---: | ---: | --- | ---: |"]
        for x in r["results"]:
            e, a = x["real FITS, out-of-fold"], x["real, out-of-fold"]
            pcs = "; ".join(f"{c['name']} {c['correct']}/{c['support']}" for c in e["per_class"])
            lines.append(f"| {x['scheme']} | {x['name']} | {e['balanced_accuracy']:.3f} | {e['accuracy']:.3f} | {pcs} | "
                         f"{a['balanced_accuracy']:.3f} |")
        return "\n".join(lines) + "\n"

    write_report(args.out, args.stem, report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
