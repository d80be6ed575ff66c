"""Training-speed benchmark: spectra per second per epoch, the tutorial network vs the default.

Both networks (``spectral_tutorial``, ``spectral_resnet``, default options) are trained
with :func:`specclass.training.train` on the same rows -- the real SDSS FITS spectra of
``../shared/data/sdss`` (seed4 labels, grouped split) plus ``--n-sim-per-class``
simulated spectra per class (:func:`specclass.simulate.simulate`) -- for ``--epochs``
epochs, batch 64, balanced class weights, with and without the default augmentation.
A callback times every epoch (wall clock from ``on_epoch_begin`` to ``on_epoch_end``,
so it includes the validation pass and the ``val_balanced_accuracy`` prediction); the
first epoch (graph tracing) is reported separately and the rate is
``n_train / median(later epoch times)``.

TensorFlow runs with whatever ``TF_ENABLE_ONEDNN_OPTS`` is in effect (``specclass``
defaults it to ``0``: oneDNN crashed training here). Outputs
``benchmarks/results/training_speed.json`` and ``.md``::

    .venv/bin/python benchmarks/training_speed.py
    .venv/bin/python benchmarks/training_speed.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import REPO, command_line, environment, run_sentence, shared_data_dir, utc_now, write_report

MODELS = ("spectral_tutorial", "spectral_resnet")
FITS_DIRS = ("spectra", "spectra2", "spectra3", "dr7", "other_layouts")


def epoch_timer():
    """A Keras callback recording the wall time of every epoch in ``.seconds``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import keras

    from specclass.simulate import simulate
    from specclass.spectra.build import build_dataset
    from specclass.training import train

    from accuracy import concat

    sdss = args.shared_data / "sdss"
    real, _ = build_dataset([sdss / d for d in FITS_DIRS if (sdss / d).is_dir()], labels="seed4", seed=args.seed)
    ds = concat([real, simulate(args.n_sim_per_class, labels="seed4", seed=args.seed)]) if args.n_sim_per_class else real
    ds = ds.subset(ds.meta["split"] != 2)
    n_train = int(((ds.meta["split"] == 0) & (ds.labels >= 0)).sum())
    n_val = int(((ds.meta["split"] == 1) & (ds.labels >= 0)).sum())
    results = []
    for augment in args.augment:
        for model_name in args.models:
            run_dir = args.work / f"{model_name}-{'aug' if augment else 'plain'}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            timer = epoch_timer()
            t0 = time.perf_counter()
            res = train(ds, model_name=model_name, out_dir=run_dir, epochs=args.epochs, batch_size=args.batch_size,
                        seed=args.seed, augment=augment, extra_callbacks=[timer], verbose=0, resume=False)
            total = time.perf_counter() - t0
            later = timer.seconds[1:] or timer.seconds
            row = {"model": model_name, "augment": augment, "params": int(res.model.count_params()),
                   "epoch_seconds": [round(s, 2) for s in timer.seconds], "total_seconds": round(total, 1),
                   "first_epoch_seconds": round(timer.seconds[0], 2),
                   "spectra_per_s": round(n_train / float(np.median(later)), 1)}
            results.append(row)
            print(f"{model_name} augment={augment}: {row['spectra_per_s']} spectra/s per epoch "
                  f"(epochs {row['epoch_seconds']})", flush=True)
            keras.backend.clear_session()
    return {
        "benchmark": "training_speed",
        "command": command_line(),
        "date_utc": utc_now(),
        "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "n_train": n_train, "n_val": n_val,
                     "n_sim_per_class": args.n_sim_per_class, "seed": args.seed},
        "environment": environment(),
        "results": results,
    }


def markdown(report: dict[str, Any]) -> str:
    """The training-speed table."""
    st = report["settings"]
    lines = [
        "# Training-speed benchmark",
        "",
        f"{run_sentence(report)} {st['n_train']} training + {st['n_val']} validation spectra (real SDSS FITS + "
        f"{st['n_sim_per_class']} simulated per class, seed4), batch {st['batch_size']}, {st['epochs']} epochs. "
        "Rate = training spectra / median wall time of the epochs after the first (an epoch includes its "
        "validation pass).",
        "",
        "| model | params | augmentation | spectra/s per epoch | first epoch (s) | later epochs (s) |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['params']:,} | {'on' if r['augment'] else 'off'} | {r['spectra_per_s']:.0f} | "
                     f"{r['first_epoch_seconds']:.1f} | {', '.join(f'{s:.1f}' for s in r['epoch_seconds'][1:])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared-data", type=Path, default=shared_data_dir())
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=None, help="run folders (default OUT/tmp/training-speed-runs)")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-sim-per-class", type=int, default=300)
    p.add_argument("--augment", nargs="+", type=lambda s: s.lower() in ("1", "true", "on", "yes"),
                   default=[False, True], help="augmentation settings to time (default: off on)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 20 simulated per class, no augmentation")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.n_sim_per_class, args.augment = 2, 20, [False]
    args.work = args.work or args.out / "tmp" / "training-speed-runs"
    import specclass  # noqa: F401  (sets the oneDNN default before TensorFlow loads)

    report = run_benchmark(args)
    paths = write_report(args.out, "training_speed-quick" if args.quick else "training_speed", report, markdown)
    print(markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
