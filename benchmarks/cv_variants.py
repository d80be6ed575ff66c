"""Model variants compared by K-fold cross-validation on the real SDSS FITS spectra (CPU-sized).

The accuracy benchmark's single test split holds only 31 real FITS spectra, too few to tell two
networks apart. This script trains each *variant* (a registered model + model options) K times,
each time on the other folds of the 266 real FITS spectra (grouped by object, stratified; see
``accuracy.cv_folds``) plus the simulated training spectra, and predicts the held-out fold, so every
real FITS spectrum gets one out-of-fold prediction. The LAMOST stars are scored by every fold model
(pooled). Out-of-fold probabilities are kept (``OUT/tmp/cv-variants/NAME.npz``), so ensembles of
variants (mean log-probability) are scored too, at no extra training.

Text stars are left out (they make STAR trivial and cost 60 % more time); training follows
``benchmarks/accuracy.py`` (balanced class weights, augmentation, best epoch by validation balanced
accuracy). Needs the bundle ``accuracy.py --save-bundle`` writes. About 3 min (tutorial network)
and 6 min (``spectral_resnet``) per variant at 12 epochs on 2 CPU cores::

    .venv/bin/python benchmarks/accuracy.py --save-bundle benchmarks/results/tmp/acc-bundle.npz
    .venv/bin/python benchmarks/cv_variants.py --scheme seed4 \\
        --variant tutorial=spectral_tutorial --variant flatten=spectral_resnet:head=flatten \\
        --variant global=spectral_resnet:head=global --ensemble tutorial+global
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _results import command_line, environment, utc_now, write_report
from accuracy import _score, concat, cross_validate, read_bundle

REPO = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME=MODEL[:key=value,...]`` -> (name, model, options); values parsed as JSON when they can be."""
    name, _, rest = text.partition("=")
    model, _, opts = rest.partition(":")
    if not name or not model:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=MODEL[:key=value,...]")
    options: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError:
            options[k] = v
    return name, model, options


def run_variant(args: argparse.Namespace, data: dict[str, Any], name: str, model: str, options: dict[str, Any]) -> Path:
    """Train the K fold models of one variant (:func:`accuracy.cross_validate`: batch 64, augmentation on);
    save out-of-fold and LAMOST probabilities; return the npz path."""
    fit_args = argparse.Namespace(folds=args.folds, seed=args.seed, epochs=args.epochs, batch_size=64,
                                  no_augment=False, evaluate_only=False)
    cv = cross_validate(fit_args, data["real"], data["lamost"], data["sims"].get("real+sim"), model,
                        args.work / f"{args.scheme}-{name}", model_options=options)
    path = args.work / f"{args.scheme}-{name}.npz"
    np.savez(path, oof=cv["oof"], lamost=cv["lamost"], best_epoch=np.array(cv["best_epoch"]), seconds=cv["seconds"])
    return path


def score(data: dict[str, Any], probs: list[np.ndarray], lamost: list[np.ndarray]) -> dict[str, Any]:
    """Scores of the mean log-probability of ``probs`` (one variant: a list of one)."""
    def mean_log(ps: list[np.ndarray]) -> np.ndarray:
        lp = np.mean([np.log(np.clip(p, 1e-7, 1.0)) for p in ps], axis=0)
        e = np.exp(lp - lp.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    lam = mean_log(lamost)  # (folds, n_lamost, classes)
    pooled = concat([data["lamost"]] * lam.shape[0])
    return {"real FITS, out-of-fold": _score(data["real"], mean_log(probs)),
            f"LAMOST, {lam.shape[0]} fold models pooled": _score(pooled, lam.reshape(-1, lam.shape[-1]))}


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = ["# Model variants, K-fold cross-validation on real SDSS FITS spectra", "",
             f"Command: `{report['command']}` ({report['date_utc']} UTC, {env['cpus']} CPUs, Keras backend "
             f"{env['keras_backend']}, {report['seconds']:.0f} s"
             f"{'; scored from the saved fold predictions of an earlier training run' if report.get('reused') else ''}"
             f"). Training: about 3 min per variant for the tutorial network, 6 min for spectral_resnet. Scheme {report['scheme']}, {report['folds']} folds, "
             f"{report['epochs']} epochs, real FITS + {report['n_sim_per_class']} simulated spectra per class "
             "(simulated only in training). Balanced accuracy = mean per-class recall; `*` = fewer than 20 spectra.", "",
             "| variant | model, options | balanced acc. | accuracy | per-class correct/n | LAMOST STAR recall |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    for r in report["results"]:
        e = r["eval"]["real FITS, out-of-fold"]
        lam = next(v for k, v in r["eval"].items() if k.startswith("LAMOST"))
        star = next((c for c in lam["per_class"] if c["name"] == "STAR"), None)
        pcs = "; ".join(f"{c['name']} {c['correct']}/{c['support']}{'*' if c['small'] else ''}" for c in e["per_class"])
        lst = "-" if star is None else f"{star['recall']:.3f} ({star['correct']}/{star['support']})"
        lines.append(f"| {r['name']} | {r['what']} | {e['balanced_accuracy']:.3f} | {e['accuracy']:.3f} | {pcs} | {lst} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "benchmarks" / "results" / "tmp" / "acc-bundle.npz")
    p.add_argument("--scheme", default="seed4", choices=["seed4", "class3"])
    p.add_argument("--variant", action="append", type=parse_variant, required=True,
                   help="NAME=MODEL[:key=value,...] (repeat); e.g. global=spectral_resnet:head=global")
    p.add_argument("--ensemble", action="append", default=[], help="NAME+NAME[+...] of variants to average (repeat)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n-sim-per-class", type=int, default=300)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=None, help="run folders and npz (default OUT/tmp/cv-variants)")
    p.add_argument("--reuse", action="store_true", help="score the npz an earlier run left instead of training")
    args = p.parse_args(argv)
    args.work = args.work or args.out / "tmp" / "cv-variants"
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.bundle.is_file():
        p.error(f"--bundle {args.bundle}: no such file (make it with accuracy.py --save-bundle)")
    names = {v[0] for v in args.variant}
    for ens in args.ensemble:
        if not set(ens.split("+")) <= names:
            p.error(f"--ensemble {ens}: every member must be a --variant name ({sorted(names)})")

    from specclass.simulate import simulate

    t0 = time.time()
    b = read_bundle(args.bundle)[args.scheme]
    real = b["real"].subset(np.asarray(b["real"].meta["source"]) == "fits")
    sim = simulate(args.n_sim_per_class, labels=args.scheme, seed=args.seed) if args.n_sim_per_class else None
    data = {"real": real, "lamost": b["lamost"], "sims": {"real+sim": sim} if sim is not None else {}}
    saved: dict[str, Any] = {}
    results = []
    for name, model, options in args.variant:
        path = args.work / f"{args.scheme}-{name}.npz"
        if not (args.reuse and path.is_file()):
            path = run_variant(args, data, name, model, options)
        with np.load(path) as z:
            saved[name] = {"oof": z["oof"], "lamost": z["lamost"]}
        what = model + (" " + ", ".join(f"{k}={v}" for k, v in options.items()) if options else "")
        results.append({"name": name, "what": what, "eval": score(data, [saved[name]["oof"]], [saved[name]["lamost"]])})
    for ens in args.ensemble:
        members = ens.split("+")
        results.append({"name": ens, "what": "ensemble: mean log-probability of " + ", ".join(members),
                        "eval": score(data, [saved[m]["oof"] for m in members], [saved[m]["lamost"] for m in members])})
    report = {"benchmark": "cv_variants", "command": command_line(), "date_utc": utc_now(), "scheme": args.scheme,
              "folds": args.folds, "epochs": args.epochs, "n_sim_per_class": args.n_sim_per_class,
              "seconds": round(time.time() - t0, 1), "reused": bool(args.reuse), "environment": environment(),
              "results": results}
    write_report(args.out, f"cv-variants-{args.scheme}", report, markdown)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
