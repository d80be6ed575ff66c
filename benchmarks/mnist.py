"""MNIST benchmark (not collected by pytest): full data, dense net and CNN.

Trains each configuration on the full 60,000 training images (10 % held out at
random for validation, the tutorial's share) with the tutorial's epochs and batch
size through the same code as ``specclass mnist train``, evaluates on the 10,000
test images through ``specclass mnist evaluate``'s code, and writes
``benchmarks/results/mnist.json`` and ``benchmarks/results/mnist.md`` (test
accuracy, train and total wall time, device, backend, versions).

Configurations (``--only`` picks some by name; see ``CONFIGS``): the tutorial's
settings (Adam for the dense net, Adadelta lr 0.1 for the CNN, constant learning
rate, x/255 or the tutorial's ``keras.utils.normalize``), Adam for the CNN, and
the same networks and epochs with a cosine learning-rate decay (Adam, AdamW), and
the default ``augmented`` recipe (``dense_aug``, ``cnn_aug``: random shifts and
rotations of the training images, cosine decay, best validation epoch kept).
Targets: dense >= 98.0 %, CNN >= 99.3 % test accuracy. Rows of configurations not
run are kept from the previous ``mnist.json``; each row names its machine.

Usage::

    python benchmarks/mnist.py --data ../shared/data/mnist/mnist.npz [--device auto|cpu|gpu]
        [--only dense cnn] [--seed 0] [--out benchmarks/results]

Takes a few minutes on a GPU; on one CPU core ``cnn_aug`` alone took 26 minutes
and ``dense_aug`` 4 minutes. Run folders go to ``<out>/tmp/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from specclass.commands.mnist import RECIPES  # no Keras import: --device still applies

CONFIGS = {
    # the tutorial's settings (constant learning rate)
    "dense": dict(model_name="mnist_dense", optimizer="adam", lr_schedule="constant", target=0.980),
    "dense_keras_l2": dict(model_name="mnist_dense", optimizer="adam", normalisation="keras_l2", target=None),
    "cnn_tutorial": dict(model_name="mnist_cnn", optimizer="tutorial", lr_schedule="constant", target=None),
    "cnn": dict(model_name="mnist_cnn", optimizer="adam", lr_schedule="constant", target=0.993),
    # same networks, same epochs: cosine learning-rate decay, and AdamW
    "dense_cosine": dict(model_name="mnist_dense", optimizer="adam", lr_schedule="cosine", target=0.980),
    "dense_adamw_cosine": dict(model_name="mnist_dense", optimizer="adamw", weight_decay=0.05, lr_schedule="cosine",
                               target=0.980),
    "cnn_cosine": dict(model_name="mnist_cnn", optimizer="adam", lr_schedule="cosine", target=0.993),
    "cnn_adamw_cosine": dict(model_name="mnist_cnn", optimizer="adamw", weight_decay=0.05, lr_schedule="cosine",
                             target=0.993),
    # the default recipe ('augmented', specclass.commands.mnist.RECIPES): training-time augmentation
    # (random shift + rotation), cosine decay, the best epoch by validation accuracy restored
    "dense_aug": dict(model_name="mnist_dense", **RECIPES["augmented"]["mnist_dense"], target=0.980),
    "cnn_aug": dict(model_name="mnist_cnn", **RECIPES["augmented"]["mnist_cnn"], target=0.993),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, help="local mnist.npz (default: Keras's cache/download)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--only", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--epochs", type=int, help="override the tutorial's epochs (quick trials only)")
    parser.add_argument("--limit", type=int, help="use only the first N training images (timing trials only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite mnist.md from mnist.json in --out (no training)")
    args = parser.parse_args(argv)
    if args.markdown_only:
        summary = json.loads((args.out / "mnist.json").read_text())
        (args.out / "mnist.md").write_text("\n".join(markdown(summary)) + "\n")
        return 0

    from specclass.commands.mnist import _resolve_device, evaluate, train

    device = _resolve_device(args.device)  # before Keras is imported anywhere
    from specclass.datasets.mnist import load_mnist

    data = load_mnist(path=args.data)
    print(f"device {device['device']} ({device['backend']}; {', '.join(device['gpus']) or 'no GPU'})", flush=True)
    results = []
    for name in args.only:
        cfg = {"normalisation": "scale", "lr_schedule": "constant", **CONFIGS[name]}
        target = cfg.pop("target")
        epochs = args.epochs or cfg.pop("epochs", None)
        cfg.pop("epochs", None)
        run_dir = args.out / "tmp" / f"mnist-{name}"
        t0 = time.perf_counter()
        config = train(out=run_dir, data=data, data_path=str(args.data) if args.data else None,
                       epochs=epochs, limit=args.limit, seed=args.seed, device=device, verbose=2, **cfg)
        m = evaluate(run_dir, data=data)
        total = time.perf_counter() - t0
        row = {
            "name": name, "model": cfg["model_name"], "optimizer": config["optimizer"],
            "learning_rate": config["learning_rate"], "lr_schedule": cfg["lr_schedule"],
            "weight_decay": config["model_options"].get("weight_decay"),
            "normalisation": cfg["normalisation"],
            "augment_shift": config["augment_shift"], "augment_rotation": config["augment_rotation"],
            "restore_best": config["restore_best"], "best_epoch": config.get("best_epoch"),
            "epochs": config["epochs"], "batch_size": config["batch_size"], "n_train": config["n_train"],
            "n_val": config["n_val"], "n_test": m["n"], "test_accuracy": m["keras_accuracy"],
            "sklearn_accuracy": m["sklearn_accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "final_val_accuracy": config["history"]["val_accuracy"][-1], "train_seconds": config["train_seconds"],
            "total_seconds": round(total, 2), "target": target,
            "meets_target": None if target is None else bool(m["keras_accuracy"] >= target),
        }
        results.append(row)
        print(json.dumps(row), flush=True)

    machine = _machine(device)
    for row in results:
        row.update(machine, versions=config["versions"])
    quick = args.epochs is not None or args.limit is not None
    suffix = "-quick" if quick else ""
    json_path = args.out / f"mnist{suffix}.json"
    # Keep the rows of configurations not run this time (each row names the machine it ran on).
    kept = []
    if json_path.is_file():
        old = json.loads(json_path.read_text())
        old_machine = {k: old.get(k) for k in ("device", "gpus", "backend", "cpu_count", "versions")}
        ran = {r["name"] for r in results}
        kept = [{**old_machine, **r} for r in old.get("results", []) if r["name"] not in ran]
    summary = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": args.seed, "versions": config["versions"],
        "epochs_overridden": args.epochs is not None, "limit": args.limit,
        "results": kept + results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    lines = markdown(summary, quick)
    (args.out / f"mnist{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def markdown(summary: dict, quick: bool = False) -> list[str]:
    """The lines of ``mnist.md`` for a ``mnist.json`` summary (``--markdown-only`` rewrites it alone)."""
    lines = [
        f"# MNIST benchmark ({summary['written']})", "",
        f"Keras {summary['versions'].get('keras')}; seed {summary['seed']}; "
        + ("full data: 54,000 train / 6,000 validation (random 10 %) / 10,000 test." if not quick else
           f"QUICK trial (limit {summary.get('limit')}): not comparable with the full runs."), "",
        "Augmentation: random shift up to N px and rotation up to M degrees of the training images, afresh "
        "every epoch; best = weights of the best validation-accuracy epoch restored. Wall times on a CPU "
        "core shared with other jobs vary with their load.", "",
        "| config | model | optimizer | lr schedule | augmentation | best | epochs | test accuracy | target "
        "| train s | total s | machine |",
        "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in summary["results"]:
        target = "–" if r["target"] is None else f"{r['target']:.1%} {'✓' if r['meets_target'] else '✗'}"
        aug = (f"{r['augment_shift']:g} px, {r['augment_rotation']:g}°" if r.get("augment_shift") or
               r.get("augment_rotation") else "none")
        best = f"epoch {r['best_epoch']}" if r.get("restore_best") else "last"
        where = r.get("machine") or (f"{', '.join(r['gpus'])}" if r.get("gpus") else
                                     f"CPU ({r.get('cpu_threads') or r.get('cpu_count')} thread(s))")
        where = f"{where}; {r.get('backend')}"
        lines.append(f"| {r['name']} | {r['model']} | {r['optimizer']} {r['learning_rate']:g} | {r['lr_schedule']} "
                     f"| {aug} | {best} "
                     f"| {r['epochs']} | {r['test_accuracy']:.2%} | {target} | {r['train_seconds']:.0f} "
                     f"| {r['total_seconds']:.0f} | {where} |")
    return lines


def _machine(device: dict) -> dict:
    """Where this run trained: device, backend, GPUs, and CPU threads usable by this process."""
    try:
        threads = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        threads = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    if device["gpus"]:
        machine = f"{', '.join(device['gpus'])} (GPU)"
    else:
        machine = f"{cpu}, {threads} of {os.cpu_count()} CPU threads"
    return {"device": device["device"], "gpus": device["gpus"], "backend": device["backend"],
            "cpu_count": os.cpu_count(), "cpu_threads": threads, "cpu": cpu, "machine": machine}


if __name__ == "__main__":
    sys.exit(main())
