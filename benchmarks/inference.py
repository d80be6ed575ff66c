"""Inference benchmark: spectra per second for ``predict``, the tutorial network vs the default.

For each network (``spectral_tutorial``, ``spectral_resnet``) a trained run folder is
loaded (by default the seed4 / all spectra / real + simulated runs that
``benchmarks/accuracy.py`` leaves in ``benchmarks/results/tmp/accuracy-runs``) and timed

* **from arrays**: :func:`specclass.predict.predict_arrays` (preprocessing + ``model.predict``,
  batch 256) on real SDSS FITS spectra already on the grid, repeated to ``--n-arrays`` rows;
  one untimed warm-up call, then the best and the median of ``--repeats`` timed calls;
* **from FITS files**: :func:`specclass.predict.predict_files` on the real SDSS FITS
  files (read, grid, preprocess, predict), page cache warm (one untimed pass first), without
  and with the SDSS pipeline rule that ``predict`` applies by default
  (:mod:`specclass.pipeline_rule`: GALAXY and QSO eigenspectrum scans for every spectrum the
  network calls a galaxy or a QSO, and for seed4 a line fit for the galaxies).

TensorFlow runs with whatever ``TF_ENABLE_ONEDNN_OPTS`` is in effect; ``specclass``
sets it to ``0`` unless the user set it (oneDNN crashed training here), so the default
figures are with oneDNN off. ``--threads N`` pins TensorFlow's intra/inter-op pools.

redrock (DESI's template-fitting classifier; ``pip install redrock`` into a separate venv)
is timed by ``benchmarks/redrock_run.py`` on real spec-lite files; given its CSV this
script reports its time per spectrum and how often the class3 runs of both networks
agree with its SPECTYPE on the same files.

Outputs ``benchmarks/results/inference.json`` and ``benchmarks/results/inference.md``::

    .venv/bin/python benchmarks/inference.py
    .venv/bin/python benchmarks/inference.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import REPO, command_line, environment, run_sentence, shared_data_dir, utc_now, write_report

MODELS = ("spectral_tutorial", "spectral_resnet")
FITS_DIRS = ("spectra", "spectra2", "spectra3", "dr7", "other_layouts")


def time_arrays(run: Any, flux: np.ndarray, ivar: np.ndarray, repeats: int) -> dict[str, Any]:
    """Spectra/s of ``predict_arrays`` (best and median of ``repeats`` timed calls after a warm-up)."""
    from specclass.predict import predict_arrays

    predict_arrays(run.model, run.preprocessor, flux[:512], ivar[:512])  # warm-up (traces the graph)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_arrays(run.model, run.preprocessor, flux, ivar)
        times.append(time.perf_counter() - t0)
    n = flux.shape[0]
    return {"n": n, "seconds": [round(t, 3) for t in times],
            "spectra_per_s_best": round(n / min(times), 1), "spectra_per_s_median": round(n / float(np.median(times)), 1)}


def time_files(run: Any, dirs: list[Path], repeats: int, pipeline_rule: bool = False) -> dict[str, Any]:
    """Spectra/s of ``predict_files`` on FITS folders (after one untimed pass: warm page cache);
    ``pipeline_rule``: with the SDSS pipeline rule (``predict``'s default, :mod:`specclass.pipeline_rule`)."""
    from specclass.predict import predict_files

    rows, failures = predict_files(run, dirs, pipeline_rule=pipeline_rule)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows, failures = predict_files(run, dirs, pipeline_rule=pipeline_rule)
        times.append(time.perf_counter() - t0)
    n = len(rows)
    return {"n": n, "failures": len(failures), "seconds": [round(t, 3) for t in times],
            "spectra_per_s_best": round(n / min(times), 1), "spectra_per_s_median": round(n / float(np.median(times)), 1)}


def redrock_comparison(csv_path: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """redrock's time per spectrum (from ``benchmarks/redrock_run.py``'s CSV) and how often the
    class3 runs of both networks agree with its SPECTYPE on the same files."""
    import csv

    from specclass import persistence
    from specclass.predict import predict_files

    if csv_path is None or not csv_path.is_file():
        return {"available": False, "reason": f"no redrock CSV ({csv_path}); run benchmarks/redrock_run.py in a "
                "separate venv with `pip install redrock` first"}
    header: dict[str, str] = {}
    lines = csv_path.read_text().splitlines()
    for line in lines:
        if line.startswith("# "):
            k, _, v = line[2:].partition("=")
            header[k] = v
    rows = list(csv.DictReader([ln for ln in lines if not ln.startswith("#")]))
    n = len(rows)
    spectra_dir = args.shared_data / "sdss" / "spectra"
    out: dict[str, Any] = {
        "available": True, "n": n, "processes": int(header.get("processes", 1)),
        "zfind_seconds": float(header["zfind_seconds"]), "templates_seconds": float(header["templates_seconds"]),
        "seconds_per_spectrum": round(float(header["zfind_seconds"]) / n, 3),
        "spectra_per_s": round(n / float(header["zfind_seconds"]), 3),
        "loadavg_during": float(header.get("loadavg", "nan")),
        "agreement_with_file_class": round(float(np.mean([r["spectype"] == r["file_class"] for r in rows])), 3),
        "models": {},
    }
    for model_name in args.models:
        run_dir = args.runs / args.run_pattern.format(scheme="class3", model=model_name)
        if not (run_dir / "preprocessing.json").is_file():
            continue
        run = persistence.load_run(run_dir, compile=False)
        files = [spectra_dir / r["file"] for r in rows]
        t0 = time.perf_counter()
        pred, _ = predict_files(run, files)
        dt = time.perf_counter() - t0
        ours = {Path(p["file"]).name: p["predicted_class"] for p in pred}
        agree = [ours.get(Path(r["file"]).name) == r["spectype"] for r in rows]
        vs_file = [ours.get(Path(r["file"]).name) == r["file_class"] for r in rows]
        out["models"][model_name] = {"run": run_dir.name, "agreement_with_redrock": round(float(np.mean(agree)), 3),
                                     "agreement_with_file_class": round(float(np.mean(vs_file)), 3),
                                     "predict_files_seconds_incl_load": round(dt, 3)}
    return out


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from specclass import persistence, pipeline_rule
    from specclass.spectra.build import build_dataset

    sdss = args.shared_data / "sdss"
    dirs = [sdss / d for d in FITS_DIRS if (sdss / d).is_dir()]
    if args.quick:
        dirs = dirs[:1]
    ds, _ = build_dataset(dirs, labels=args.scheme)
    reps = int(np.ceil(args.n_arrays / len(ds)))
    flux = np.tile(ds.flux, (reps, 1))[: args.n_arrays]
    ivar = np.tile(ds.ivar, (reps, 1))[: args.n_arrays]
    import keras

    results = []
    for model_name in args.models:
        run_dir = args.runs / args.run_pattern.format(scheme=args.scheme, model=model_name)
        if not (run_dir / "preprocessing.json").is_file():
            raise SystemExit(f"{run_dir}: no run folder (run benchmarks/accuracy.py first, or pass --runs)")
        run = persistence.load_run(run_dir, compile=False)
        row = {"model": model_name, "run": run_dir.name, "params": int(run.model.count_params()),
               "arrays": time_arrays(run, flux, ivar, args.repeats),
               "fits": time_files(run, dirs, max(1, args.repeats - 1))}
        if pipeline_rule.applies(run.class_names, run.preprocessor.loglam):
            row["fits_pipeline_rule"] = time_files(run, dirs, max(1, args.repeats - 1), pipeline_rule=True)
        results.append(row)
        print(f"{model_name}: arrays {row['arrays']['spectra_per_s_best']}/s, FITS {row['fits']['spectra_per_s_best']}/s",
              flush=True)
        keras.backend.clear_session()
    return {
        "benchmark": "inference",
        "command": command_line(),
        "date_utc": utc_now(),
        "settings": {"n_arrays": args.n_arrays, "repeats": args.repeats, "scheme": args.scheme, "batch_size": 256,
                     "fits_dirs": [d.name for d in dirs], "n_fits_spectra": len(ds)},
        "environment": environment(threads=args.threads),
        "results": results,
        "redrock": redrock_comparison(args.redrock_csv, args),
        "target": {"default_arrays_spectra_per_s": 2000},
    }


def markdown(report: dict[str, Any]) -> str:
    """The inference table."""
    lines = [
        "# Inference benchmark",
        "",
        f"{run_sentence(report)} Arrays: `predict_arrays` (preprocessing + `model.predict`, batch 256) on "
        f"{report['settings']['n_arrays']} gridded real SDSS spectra; FITS: `predict_files` on "
        f"{report['settings']['n_fits_spectra']} real SDSS FITS spectra (read + grid + predict, warm page cache). "
        "Best (median) of the timed calls.",
        "",
        "| model | params | from arrays (spectra/s) | from FITS files (spectra/s) | from FITS files, SDSS pipeline rule (the default; spectra/s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        a, f, lr = r["arrays"], r["fits"], r.get("fits_pipeline_rule")
        ruled = f"{lr['spectra_per_s_best']:.0f} ({lr['spectra_per_s_median']:.0f})" if lr else "n/a"
        lines.append(f"| {r['model']} | {r['params']:,} | {a['spectra_per_s_best']:.0f} ({a['spectra_per_s_median']:.0f}) | "
                     f"{f['spectra_per_s_best']:.0f} ({f['spectra_per_s_median']:.0f}) | {ruled} |")
    by = {r["model"]: r for r in report["results"]}
    lines.append("")
    if "spectral_resnet" in by:
        v = by["spectral_resnet"]["arrays"]["spectra_per_s_best"]
        met = "met" if v >= report["target"]["default_arrays_spectra_per_s"] else "NOT met"
        lines.append(f"* Target >= 2,000 spectra/s from arrays for the default network (spectral_resnet): {met} ({v:.0f}/s).")
    if len(by) == 2:
        ratio = by["spectral_resnet"]["arrays"]["spectra_per_s_best"] / by["spectral_tutorial"]["arrays"]["spectra_per_s_best"]
        lines.append(f"* spectral_resnet / spectral_tutorial from arrays: {ratio:.2f}x.")
    rr = report["redrock"]
    if not rr["available"]:
        lines.append(f"* redrock: not measured -- {rr['reason']}")
    else:
        lines.append(
            f"* redrock 0.21 (`benchmarks/redrock_run.py`, {rr['processes']} process, DESI templates, load average "
            f"{rr['loadavg_during']:.1f} during the run): {rr['seconds_per_spectrum']:.2f} s per spectrum "
            f"({rr['spectra_per_s']:.2f} spectra/s; plus {rr['templates_seconds']:.0f} s template rebinning once) on "
            f"{rr['n']} real SDSS spec-lite files; its SPECTYPE equals the SDSS pipeline CLASS for "
            f"{rr['agreement_with_file_class']:.0%} of them.")
        for m, v in rr["models"].items():
            ratio = by[m]["arrays"]["spectra_per_s_best"] / rr["spectra_per_s"] if m in by else float("nan")
            lines.append(f"  * {m} (class3 run `{v['run']}`): class agrees with redrock on {v['agreement_with_redrock']:.0%}, "
                         f"with the pipeline CLASS on {v['agreement_with_file_class']:.0%}; from arrays it is "
                         f"{ratio:,.0f}x redrock's rate.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared-data", type=Path, default=shared_data_dir(), help="the shared data folder (default ../shared/data)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where inference.json/.md go")
    p.add_argument("--runs", type=Path, default=None, help="folder of run folders (default OUT/tmp/accuracy-runs)")
    p.add_argument("--run-pattern", default="{scheme}-all-real+sim-{model}", help="run folder name under --runs")
    p.add_argument("--scheme", default="seed4", choices=["seed4", "class3"])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--n-arrays", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="TensorFlow intra/inter-op threads (default: TF's choice)")
    p.add_argument("--redrock-csv", type=Path, default=None,
                   help="CSV of benchmarks/redrock_run.py (default OUT/tmp/redrock.csv, else OUT/inference-redrock.csv)")
    p.add_argument("--quick", action="store_true", help="smoke test: one FITS folder, 1024 arrays, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n_arrays, args.repeats = 1024, 1
    args.runs = args.runs or args.out / "tmp" / "accuracy-runs"
    if args.redrock_csv is None:  # a fresh redrock_run.py output, else the committed one
        fresh = args.out / "tmp" / "redrock.csv"
        args.redrock_csv = fresh if fresh.is_file() else args.out / "inference-redrock.csv"
    import specclass  # noqa: F401  (sets the oneDNN default before TensorFlow loads)

    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    report = run_benchmark(args)
    paths = write_report(args.out, "inference-quick" if args.quick else "inference", report, markdown)
    print(markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
