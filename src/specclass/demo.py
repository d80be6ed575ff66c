"""The main job on the shipped sample: build → train → evaluate → report → predict.

:func:`run_demo` is what ``specclass demo`` (and ``make demo``) runs. It needs no
network and no data outside the package (:mod:`specclass.sample`):

1. **build** - read and grid the raw sample files (:func:`specclass.spectra.build.build_rows`),
   add the pre-gridded sample spectra, assign seeded, class-stratified,
   object-grouped train/val/test splits, save ``OUT/dataset.h5`` (and the
   skipped-files report);
2. **train** the default network (:data:`specclass.models.DEFAULT_MODEL`, ``spectral_tutorial``)
   the specclass way (pipeline-labelled simulated spectra in train, augmentation, best epoch by
   validation balanced accuracy) into ``OUT/run/`` and, unless ``compare_tutorial=False``, the
   tutorial's network the tutorial's way (no augmentation) on the same splits into ``OUT/run-tutorial/``;
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

import numpy as np


from specclass import sample

#: Default training settings of the demo (chosen to finish in a few minutes on 2 CPU cores).
DEMO_DEFAULTS = {"epochs": 30, "batch_size": 32, "early_stopping": 10, "seed": 42, "n_sim_per_class": 150}


def build_demo_dataset(out_dir: str | os.PathLike, seed: int = 42, n_sim_per_class: int = 0,
                       log: Callable[[str], None] = print):
    """Build ``out_dir/dataset.h5`` from the embedded sample.

    With ``n_sim_per_class > 0``, that many simulated spectra per class
    (:func:`specclass.simulate.simulator.simulate`, same grid, ``source =
    simulated``) are added to the **training** split only: validation and test
    stay real, so every figure the demo reports is on real spectra.

    Returns:
        ``(dataset, report, path)``: the :class:`SpectralDataset` (seed4 labels,
        splits assigned), the :class:`~specclass.spectra.build.BuildReport` of
        the raw files, and the written path.
    """
    from specclass.spectra.build import build_rows, finalize, list_files
    from specclass.spectra.dataset import SPLIT_CODES, SpectralDataset
    from specclass.spectra.splits import split_summary

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
    # The raw files are the "new spectra" the demo classifies with predict at the
    # end: hold them (and every other observation of their objects) out of
    # training and validation, so that step shows the model on unseen spectra.
    raw_names = {Path(f).name for f in files}
    is_raw = np.array([Path(f).name in raw_names for f in ds.meta["file"]])
    held = np.isin(ds.meta["object_id"], np.unique(ds.meta["object_id"][is_raw]))
    ds.meta["split"][held] = SPLIT_CODES["test"]
    settings = {k: v for k, v in ds.attrs["split"].items() if k not in ("method", "counts", "objects")}
    ds.attrs["split"] = split_summary(ds, **settings)
    if n_sim_per_class > 0:
        from specclass.simulate.mix import add_simulated_to_train

        log(f"simulating {n_sim_per_class} spectra per class and labelling them with the emulated SDSS pipeline "
            "(cached after the first run) ...")
        ds = add_simulated_to_train(ds, n_sim_per_class, seed=seed)
        settings = {k: v for k, v in ds.attrs["split"].items() if k not in ("method", "counts", "objects")}
        ds.attrs["split"] = split_summary(ds, **settings)
    ds.attrs["split"]["held_out_for_predict"] = sorted(raw_names)
    ds.attrs["description"] = ("specclass demo dataset: embedded real SDSS sample (seed4 labels); "
                               "the raw sample files are in the test split")
    path = ds.save(out_dir / "dataset.h5")
    report.write_skipped_csv(out_dir / "dataset.h5.skipped.csv")
    counts = ds.attrs["split"]["counts"]
    sim_rows = np.asarray(ds.meta["source"]) == "simulated"
    head = "train (real + simulated)" if n_sim_per_class > 0 else "train"
    log(f"{'class':<8} {head:>24} {'val':>6} {'test':>6}")
    for i, c in enumerate(ds.class_names):
        n_sim = int(np.count_nonzero(sim_rows & (ds.labels == i) & (ds.meta["split"] == SPLIT_CODES["train"])))
        train_txt = f"{counts['train'][c] - n_sim} + {n_sim}" if n_sim_per_class > 0 else str(counts["train"][c])
        log(f"{c:<8} {train_txt:>24} {counts['val'][c]:>6} {counts['test'][c]:>6}")
    log(f"({len(files)} raw files read and held out in the test split; {report.n_spectra - len(files)} "
        f"pre-gridded sample spectra; skipped: {len(report.skipped)}"
        + (f"; + {int(sim_rows.sum())} simulated spectra in train only, labelled by the emulated SDSS pipeline)"
           if n_sim_per_class > 0 else ")"))
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
    model: str | None = None,
    compare_tutorial: bool = True,
    n_sim_per_class: int = DEMO_DEFAULTS["n_sim_per_class"],
    verbose: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline on the embedded sample into ``out_dir``.

    Args:
        out_dir: output folder (created). Re-running resumes finished training.
        epochs, batch_size, early_stopping, seed: training settings (both networks).
        model: the main network (a registry name).
        compare_tutorial: also train ``spectral_tutorial`` on the same splits.
        n_sim_per_class: simulated spectra per class added to the training split
            (0 = real spectra only); validation and test stay real.
        verbose: Keras ``fit`` verbosity (0 silent, 1 bar, 2 a line per epoch).
        log: where progress lines go.

    Returns:
        The summary dict also written to ``out_dir/summary.json``.
    """
    from specclass.evaluation import evaluate_run
    from specclass.persistence import write_json_atomic
    from specclass.predict import predict_files
    from specclass.training import train

    from specclass.models import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # run label -> (network, run folder, trained the specclass way?)
    runs = {model: (model, out_dir / "run", True)}
    if compare_tutorial:
        label = "tutorial recipe" if model == "spectral_tutorial" else "spectral_tutorial"
        runs[label] = ("spectral_tutorial", out_dir / "run-tutorial", False)
    n_steps = 2 * len(runs) + 2
    log(f"[1/{n_steps}] building the dataset from the embedded sample -> {out_dir / 'dataset.h5'}")
    ds, report, ds_path = build_demo_dataset(out_dir, seed=seed, n_sim_per_class=n_sim_per_class, log=log)

    summary: dict[str, Any] = {"dataset": str(ds_path), "n_spectra": len(ds), "class_names": ds.class_names,
                               "split_counts": ds.attrs.get("split", {}).get("counts"), "models": {}}
    step = 2
    for name, (net, run_dir, specclass_way) in runs.items():
        log(f"[{step}/{n_steps}] training {name} ({epochs} epochs max, batch {batch_size}) -> {run_dir}")
        step += 1
        t = time.perf_counter()
        result = train(ds_path, net, run_dir, epochs=epochs, batch_size=batch_size, seed=seed,
                       early_stopping=early_stopping, augment=specclass_way,
                       monitor="val_balanced_accuracy" if specclass_way else "val_loss", verbose=verbose)
        train_s = time.perf_counter() - t
        reused = bool(result.initial_epoch and result.epochs_done == result.initial_epoch)
        if reused:  # the recorded training time of the session that trained it
            train_s = float(result.config.get("train_seconds_this_session") or train_s)
        if reused:
            log(f"      {run_dir} already holds this finished run ({result.epochs_done} epochs): reused, not "
                f"retrained (delete the folder to train again)")
        elif result.initial_epoch:
            log(f"      resumed after epoch {result.initial_epoch}; {result.epochs_done} epochs done")
        log(f"[{step}/{n_steps}] evaluating {name} on the held-out test split")
        step += 1
        m = evaluate_run(run_dir, ds_path, "test")  # the path: the report names the file
        cal = result.calibration
        summary["models"][name] = {
            "run": str(run_dir), "train_seconds": round(train_s, 1), "epochs": result.epochs_done,
            "best_epoch": None if result.best_epoch is None else result.best_epoch + 1,
            "accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
            "per_class": _per_class(m), "report": str(run_dir / "report.html"),
            "temperature": result.temperature,
            "val_ece": None if cal is None else [cal.ece_before, cal.ece_after],
            "val_nll": None if cal is None else [cal.nll_before, cal.nll_after],
            "pipeline_rule": m.get("pipeline_rule"),
        }
    main_run = runs[model][1]
    pred_csv = out_dir / "predictions.csv"
    log(f"[{n_steps}/{n_steps}] classifying the raw sample files (held out of training) with {main_run} -> {pred_csv}")
    rows, failures = predict_files(main_run, sample.spectra_dir(), out=pred_csv)
    test_names = {Path(f).name for f in ds.meta["file"][ds.meta["split"] == 2].tolist()}
    summary["predictions"] = {"csv": str(pred_csv), "classified": len(rows), "failed": len(failures),
                              "rows": [{"file": Path(r["file"]).name, "predicted": r.get("predicted_class"),
                                        "probability": r.get("probability"), "uncertain": bool(r.get("uncertain")),
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
    lines = ["", "=== specclass demo: recall per class on the held-out test split of the embedded sample ==="]
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
        flag = "  (fewer than 20 test spectra: anecdotal)" if (n or 0) < 20 else ""
        lines.append(f"{c:<8} {n or 0:>6} " + " ".join(vals) + flag)
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc.")):
        vals = [summary["models"][n][key] for n in names]
        lines.append(f"{label:<15} " + " ".join(f"{'-' if v is None else f'{100 * v:.1f}%':>22}" for v in vals))
    lines.append("(balanced accuracy = mean of the per-class recalls; with a handful of AGN and GALAXY test spectra")
    lines.append(" it moves by 20+ points when one spectrum flips - see benchmarks/ in the repository for larger sets)")
    rules = [(n, summary["models"][n].get("pipeline_rule")) for n in names]
    if any(r for _, r in rules):
        lines.append("SDSS pipeline rule on top of the network (STAR, GALAXY vs QSO by template fits, AGN vs GALAXY by the")
        lines.append(" measured lines; the specclass predict/evaluate default, --no-pipeline-rule turns it off): " + "; ".join(
            f"{n}: {r.get('template_decided', 0)} spectra decided by the template fits, {r['changed']} network labels "
            f"changed, network alone accuracy {100 * r['network_accuracy']:.1f}%, balanced accuracy "
            f"{100 * r['network_balanced_accuracy']:.1f}%" for n, r in rules if r))
    lines.append("")
    lines.append(f"dataset:      {summary['dataset']}")
    for name in names:
        lines.append(f"run {name}: {summary['models'][name]['run']}  (report: {summary['models'][name]['report']})")
        t = summary["models"][name].get("temperature")
        if t is not None:
            ece = summary["models"][name].get("val_ece") or [None, None]
            nll = summary["models"][name].get("val_nll") or [None, None]
            extra = ""
            if None not in ece and None not in nll:
                extra = f"; validation log-loss {nll[0]:.3f} -> {nll[1]:.3f}, ECE {ece[0]:.3f} -> {ece[1]:.3f}"
                if ece[1] > ece[0]:
                    extra += ": T minimises the log-loss, and on a small split the ECE can rise"
            lines.append(f"   probabilities calibrated with temperature T = {t:.2f} (fitted on the validation split{extra})")
    p = summary["predictions"]
    lines.append(f"predictions:  {p['csv']}  ({p['classified']} classified, {p['failed']} unreadable)")
    for r in p["rows"]:
        pipeline = r["pipeline"] or "- (text file: no CLASS in it)"
        p_txt = "" if r.get("probability") is None else f" p={r['probability']:.2f}"
        flag = " (uncertain)" if r.get("uncertain") else ""
        lines.append(f"   {r['file']:<32} predicted {str(r['predicted']):<7}{p_txt}{flag}  pipeline CLASS {pipeline}")
    lines.append(f"total time:   {summary['seconds']:.0f} s")
    return lines
