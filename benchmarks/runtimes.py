"""Runtimes benchmark: spectra/s of one run under Keras, ONNX Runtime and the numpy predictor.

One run folder (``--run``, else a small class3 ``spectral_resnet`` run trained here on
the real SDSS FITS spectra, ``--epochs`` epochs, into ``OUT/tmp/runtimes-run``) is
exported (``specclass export --format numpy`` and ``--format onnx``) and timed three ways:

* **from arrays**: :func:`specclass.predict.predict_arrays` (preprocessing + the
  network, batch 256) on the gridded real SDSS FITS spectra repeated to
  ``--n-arrays`` rows; one untimed warm-up call, best and median of ``--repeats``;
* **from FITS files**: :func:`specclass.predict.predict_files` on the real SDSS FITS
  folders (read, grid, preprocess, predict; page cache warm after one untimed pass).

The runtimes take turns (repeat 1 of each, then repeat 2 of each, ...), so a change of load
on a shared machine affects all of them alike.

It also reports the largest difference of each runtime's probabilities from Keras's
on those arrays, and classifies the DESI files of ``../shared/data/other_surveys/desi``
with the same run (our class beside redrock's SPECTYPE).

Outputs ``OUT/runtimes.json`` and ``OUT/runtimes.md``::

    .venv/bin/python benchmarks/runtimes.py
    .venv/bin/python benchmarks/runtimes.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import REPO, command_line, environment, run_sentence, shared_data_dir, utc_now, write_report

FITS_DIRS = ("spectra", "spectra2", "spectra3", "dr7", "other_layouts")
RUNTIMES = ("keras", "onnxruntime", "numpy")


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _rate(n: int, times: list[float]) -> dict[str, Any]:
    return {"n": n, "seconds": [round(t, 3) for t in times], "spectra_per_s_best": round(n / min(times), 1),
            "spectra_per_s_median": round(n / float(np.median(times)), 1)}


def train_small_run(run_dir: Path, dirs: list[Path], epochs: int) -> Path:
    """A class3 spectral_resnet run (default options) on the real SDSS FITS spectra, unless one is there."""
    from specclass.spectra.build import build_dataset
    from specclass.training import train

    if (run_dir / "calibration.json").is_file():
        return run_dir
    ds, _ = build_dataset(dirs, labels="class3")
    train(ds, "spectral_resnet", run_dir, epochs=epochs, verbose=2)
    return run_dir


def load_runtimes(run_dir: Path, threads: int | None) -> dict[str, Any]:
    from specclass import persistence
    from specclass.inference.export import export_run
    from specclass.inference.load import load_exported

    out: dict[str, Any] = {"keras": persistence.load_run(run_dir, compile=False)}
    try:
        out["onnxruntime"] = load_exported(export_run(run_dir, "onnx"), threads=threads)
    except Exception as exc:  # noqa: BLE001 - ONNX export can fail (missing tf2onnx, converter bugs): time the others
        out["onnxruntime"] = f"{type(exc).__name__}: {exc}"
    out["numpy"] = load_exported(export_run(run_dir, "numpy"))
    return out


def desi_table(run: Any, desi_dir: Path) -> list[dict[str, Any]]:
    """Our class beside redrock's for every spectrum in the DESI files."""
    from specclass.io import read_spectra
    from specclass.predict import predict_files

    rows, failures = predict_files(run, [desi_dir])
    truth = {}
    for p in sorted(desi_dir.glob("coadd-*.fits")):
        for s in read_spectra(p):
            truth[(str(p), s.meta.extra["row"])] = s.meta
    out = []
    for r in rows:
        m = truth.get((r["file"], r["row"]))
        out.append({"file": Path(r["file"]).name, "row": r["row"], "targetid": r["targetid"],
                    "redrock_spectype": m.class_ if m else "", "redrock_z": None if m is None else m.z,
                    "zwarn": None if m is None else m.zwarning,
                    "ours": r["predicted_class"], "probability": round(r["probability"], 3)})
    out += [{"file": Path(f["file"]).name, "not_classified": f["reason"]} for f in failures]
    return out


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from specclass.predict import predict_arrays, predict_files
    from specclass.spectra.build import build_dataset

    sdss = args.shared_data / "sdss"
    dirs = [sdss / d for d in FITS_DIRS if (sdss / d).is_dir()]
    run_dir = args.run or train_small_run(args.out / "tmp" / "runtimes-run", dirs, args.epochs)
    if args.quick:
        dirs = dirs[:1]
    runtimes = load_runtimes(run_dir, args.threads)
    keras_run = runtimes["keras"]
    ds, _ = build_dataset(dirs, labels="class3")
    reps = int(np.ceil(args.n_arrays / len(ds)))
    flux = np.tile(ds.flux, (reps, 1))[: args.n_arrays]
    ivar = np.tile(ds.ivar, (reps, 1))[: args.n_arrays]
    pre = keras_run.preprocessor
    reference = predict_arrays(keras_run.model, pre, ds.flux, ds.ivar, temperature=keras_run.temperature)
    ready = {name: run for name, run in runtimes.items() if not isinstance(run, str)}
    for run in ready.values():  # warm-ups: graph tracing, sessions, page cache
        predict_arrays(run.model, run.preprocessor, flux[:512], ivar[:512])
        predict_files(run, dirs)
    # the runtimes take turns, repeat by repeat, so a change of load on a shared machine hits all of them
    t_arrays: dict[str, list[float]] = {name: [] for name in ready}
    t_files: dict[str, list[float]] = {name: [] for name in ready}
    n_files: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, run in ready.items():
            t_arrays[name] += _timed(lambda r=run: predict_arrays(r.model, r.preprocessor, flux, ivar), 1)
        for name, run in ready.items():
            t_files[name] += _timed(lambda r=run, k=name: n_files.__setitem__(k, len(predict_files(r, dirs)[0])), 1)
    results = []
    for name in RUNTIMES:
        run = runtimes[name]
        if isinstance(run, str):
            results.append({"runtime": name, "unavailable": run})
            continue
        proba = predict_arrays(run.model, run.preprocessor, ds.flux, ds.ivar, temperature=run.temperature)
        row = {"runtime": name, "arrays": _rate(len(flux), t_arrays[name]), "fits": _rate(n_files[name], t_files[name]),
               "max_abs_diff_vs_keras": float(np.abs(proba - reference).max())}
        results.append(row)
        print(f"{name}: arrays {row['arrays']['spectra_per_s_best']}/s, FITS {row['fits']['spectra_per_s_best']}/s, "
              f"max |p - p_keras| {row['max_abs_diff_vs_keras']:.2e}", flush=True)
    desi_dir = args.shared_data / "other_surveys" / "desi"
    return {
        "benchmark": "runtimes",
        "command": command_line(),
        "date_utc": utc_now(),
        "run": {"folder": run_dir.name, "model": keras_run.config.get("model"),
                "params": int(keras_run.model.count_params()), "classes": keras_run.class_names,
                "epochs": keras_run.config.get("epochs"), "temperature": keras_run.temperature},
        "settings": {"n_arrays": args.n_arrays, "repeats": args.repeats, "batch_size": 256,
                     "fits_dirs": [d.name for d in dirs], "n_fits_spectra": len(ds), "onnx_threads": args.threads},
        "environment": environment(),
        "results": results,
        "desi": desi_table(runtimes["numpy"], desi_dir) if desi_dir.is_dir() else [],
    }


def markdown(report: dict[str, Any]) -> str:
    """The runtimes table and the DESI table."""
    r = report["run"]
    lines = [
        "# Runtimes: Keras vs ONNX Runtime vs numpy (same run)",
        "",
        f"{run_sentence(report)} Run: `{r['model']}` ({r['params']:,} parameters, classes {', '.join(r['classes'])}, "
        f"{r['epochs']} epochs, T = {r['temperature']:.3g}), exported with `specclass export --format onnx|numpy`. "
        f"Arrays: `predict_arrays` (preprocessing + network, batch 256) on {report['settings']['n_arrays']} gridded real "
        f"SDSS spectra; FITS: `predict_files` on {report['settings']['n_fits_spectra']} real SDSS FITS spectra (read + "
        "grid + predict, warm page cache). Best (median) of the timed calls; max |p - p_keras| over the "
        f"{report['settings']['n_fits_spectra']} spectra.",
        "",
        "| runtime | from arrays (spectra/s) | from FITS files (spectra/s) | max abs. difference from Keras |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        if "unavailable" in row:
            lines.append(f"| {row['runtime']} | unavailable: {row['unavailable']} | | |")
            continue
        a, f = row["arrays"], row["fits"]
        lines.append(f"| {row['runtime']} | {a['spectra_per_s_best']:.0f} ({a['spectra_per_s_median']:.0f}) | "
                     f"{f['spectra_per_s_best']:.0f} ({f['spectra_per_s_median']:.0f}) | "
                     f"{row['max_abs_diff_vs_keras']:.1e} |")
    if report["desi"]:
        lines += ["", "## DESI files, classified by the numpy export of the same run", "",
                  "| file | row | TARGETID | redrock SPECTYPE (z, ZWARN) | ours (probability) |",
                  "| --- | ---: | --- | --- | --- |"]
        for d in report["desi"]:
            if "not_classified" in d:
                lines.append(f"| {d['file']} | | | | not classified: {d['not_classified']} |")
                continue
            rr = "no label" if not d["redrock_spectype"] else f"{d['redrock_spectype']} ({d['redrock_z']:.4f}, {d['zwarn']})"
            lines.append(f"| {d['file']} | {d['row']} | {d['targetid'] if d['targetid'] >= 0 else ''} | {rr} | "
                         f"{d['ours']} ({d['probability']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared-data", type=Path, default=shared_data_dir(), help="the shared data folder (default ../shared/data)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where runtimes.json/.md go")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: train a small one into OUT/tmp)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the small run trained without --run (default 8)")
    p.add_argument("--n-arrays", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its choice)")
    p.add_argument("--quick", action="store_true", help="smoke test: one FITS folder, 512 arrays, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n_arrays, args.repeats = 512, 1
    import specclass  # noqa: F401  (sets the oneDNN default before TensorFlow loads)

    report = run_benchmark(args)
    paths = write_report(args.out, "runtimes-quick" if args.quick else "runtimes", report, markdown)
    print(markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
