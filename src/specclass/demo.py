"""The main job on the shipped sample: build → train → evaluate → report → predict.

:func:`run_demo` is what ``specclass demo`` (and ``make demo``) runs. It needs no
network and no data outside the package (:mod:`specclass.sample`):

1. **build** - read and grid the raw sample files (:func:`specclass.spectra.build.build_rows`),
   add the pre-gridded sample spectra, assign seeded, class-stratified,
   object-grouped train/val/test splits, save ``OUT/dataset.h5`` (and the
   skipped-files report);
2. **train** the default network (``spectral_resnet``) into ``OUT/run/`` and,
   unless ``compare_tutorial=False``, the tutorial's network
   (``spectral_tutorial``) on the same splits into ``OUT/run-tutorial/``;
3. **evaluate** each on the held-out test split: ``metrics.json``, confusion
   matrices, curves, misclassified gallery and a self-contained ``report.html``
   in each run folder;
4. **predict** the raw sample files with the trained run: ``OUT/predictions.csv``;
5. print a summary (per-class test recall with counts, both networks) and where
   everything is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable


from specclass import sample

#: Default training settings of the demo (chosen to finish in a few minutes on 2 CPU cores).
DEMO_DEFAULTS = {"epochs": 30, "batch_size": 32, "early_stopping": 10, "seed": 42}


def build_demo_dataset(out_dir: str | os.PathLike, seed: int = 42, log: Callable[[str], None] = print):
    """Build ``out_dir/dataset.h5`` from the embedded sample.

    Returns:
        ``(dataset, report, path)``: the :class:`SpectralDataset` (seed4 labels,
        splits assigned), the :class:`~specclass.spectra.build.BuildReport` of
        the raw files, and the written path.
    """
    from specclass.spectra.build import build_rows, finalize, list_files
    from specclass.spectra.dataset import SpectralDataset

    out_dir = Path(out_dir)
    files = list_files(sample.spectra_dir())
    raw, report = build_rows(files, labels="seed4", text_labels=sample.text_labels_path())
    gridded = sample.load_gridded()
    names = sorted(set(gridded.class_names) | set(raw.class_names))
    both = SpectralDataset.concatenate([raw, gridded], class_names=names)
    both.meta["split"][:] = -1
    report.n_files += len(gridded)
    report.n_spectra += len(gridded)
    ds, report = finalize(both, report, seed=seed)
    ds.attrs["description"] = "specclass demo dataset: embedded real SDSS sample (seed4 labels)"
    path = ds.save(out_dir / "dataset.h5")
    report.write_skipped_csv(out_dir / "dataset.h5.skipped.csv")
    for line in report.summary_lines():
        log(line)
    return ds, report, path


def _per_class(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: {"recall": v.get("recall"), "support": v.get("support")} for v in metrics.get("per_class", [])}


def run_demo(
    out_dir: str | os.PathLike = "demo-run",
    *,
    epochs: int = DEMO_DEFAULTS["epochs"],
    batch_size: int = DEMO_DEFAULTS["batch_size"],
    early_stopping: int | None = DEMO_DEFAULTS["early_stopping"],
    seed: int = DEMO_DEFAULTS["seed"],
    model: str = "spectral_resnet",
    compare_tutorial: bool = True,
    verbose: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline on the embedded sample into ``out_dir``.

    Args:
        out_dir: output folder (created). Re-running resumes finished training.
        epochs, batch_size, early_stopping, seed: training settings (both networks).
        model: the main network (a registry name).
        compare_tutorial: also train ``spectral_tutorial`` on the same splits.
        verbose: Keras ``fit`` verbosity (0 silent, 1 bar, 2 a line per epoch).
        log: where progress lines go.

    Returns:
        The summary dict also written to ``out_dir/summary.json``.
    """
    from specclass.evaluation import evaluate_run
    from specclass.persistence import write_json_atomic
    from specclass.predict import predict_files
    from specclass.training import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"[1/4] building the dataset from the embedded sample -> {out_dir / 'dataset.h5'}")
    ds, report, ds_path = build_demo_dataset(out_dir, seed=seed, log=log)

    runs = {model: out_dir / "run"}
    if compare_tutorial and model != "spectral_tutorial":
        runs["spectral_tutorial"] = out_dir / "run-tutorial"
    summary: dict[str, Any] = {"dataset": str(ds_path), "n_spectra": len(ds), "class_names": ds.class_names,
                               "split_counts": ds.attrs.get("split", {}).get("counts"), "models": {}}
    for i, (name, run_dir) in enumerate(runs.items()):
        log(f"[2/4] training {name} ({epochs} epochs max, batch {batch_size}) -> {run_dir}")
        t = time.perf_counter()
        train(ds, name, run_dir, epochs=epochs, batch_size=batch_size, seed=seed,
              early_stopping=early_stopping, augment=(name != "spectral_tutorial"),
              monitor="val_loss", verbose=verbose)
        train_s = time.perf_counter() - t
        log(f"[3/4] evaluating {name} on the held-out test split")
        m = evaluate_run(run_dir, ds, "test")
        summary["models"][name] = {
            "run": str(run_dir), "train_seconds": round(train_s, 1),
            "accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
            "per_class": _per_class(m), "report": str(run_dir / "report.html"),
        }
    main_run = runs[model]
    pred_csv = out_dir / "predictions.csv"
    log(f"[4/4] classifying the raw sample files with {main_run} -> {pred_csv}")
    rows, failures = predict_files(main_run, sample.spectra_dir(), out=pred_csv)
    test_names = {Path(f).name for f in ds.meta["file"][ds.meta["split"] == 2].tolist()}
    summary["predictions"] = {"csv": str(pred_csv), "classified": len(rows), "failed": len(failures),
                              "rows": [{"file": Path(r["file"]).name, "predicted": r.get("predicted_class"),
                                        "pipeline": f"{r.get('file_class', '')} {r.get('file_subclass', '')}".strip(),
                                        "in_test_split": Path(r["file"]).name in test_names}
                                       for r in rows]}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out_dir / "summary.json", summary)
    for line in summary_lines(summary):
        log(line)
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines for a :func:`run_demo` summary."""
    lines = ["", "=== specclass demo: test split of the embedded sample ==="]
    names = list(summary["models"])
    classes = summary["class_names"]
    head = f"{'class':<8} {'n test':>6} " + " ".join(f"{n[:22]:>22}" for n in names)
    lines += [head, "-" * len(head)]
    for c in classes:
        n = summary["models"][names[0]]["per_class"].get(c, {}).get("support", 0)
        vals = []
        for name in names:
            r = summary["models"][name]["per_class"].get(c, {}).get("recall")
            vals.append(f"{'-' if r is None else f'{100 * r:.1f}%':>22}")
        flag = "  (fewer than 20: read as anecdote)" if (n or 0) < 20 else ""
        lines.append(f"{c:<8} {n or 0:>6} " + " ".join(vals) + flag)
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc.")):
        vals = [summary["models"][n][key] for n in names]
        lines.append(f"{label:<15} " + " ".join(f"{'-' if v is None else f'{100 * v:.1f}%':>22}" for v in vals))
    lines.append("")
    lines.append(f"dataset:      {summary['dataset']}")
    for name in names:
        lines.append(f"run {name}: {summary['models'][name]['run']}  (report: {summary['models'][name]['report']})")
    p = summary["predictions"]
    lines.append(f"predictions:  {p['csv']}  ({p['classified']} classified, {p['failed']} unreadable)")
    for r in p["rows"]:
        lines.append(f"   {r['file']:<32} predicted {str(r['predicted']):<7} pipeline CLASS {r['pipeline']:<22}"
                     f"{' (test split)' if r['in_test_split'] else ''}")
    lines.append(f"total time:   {summary['seconds']:.0f} s")
    return lines
