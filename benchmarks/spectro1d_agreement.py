"""How well the pipeline emulator (specclass.spectro1d) reproduces SDSS's own labels, and how fast.

Runs :func:`specclass.spectro1d.classify_spectrum` on every real FITS spectrum in
``../shared/data/sdss`` (``spectra/``, ``spectra2/``, ``spectra3/``, ``dr7/``; sky
fibres, the byte-identical ``full/`` copies and files without pixels on SDSS's 1e-4 dex
log-lambda lattice are left out, each with its reason) on its native pixels, and compares
with the CLASS, SUBCLASS and Z the pipeline wrote into the file:

* CLASS agreement (counts per pipeline class, confusion matrix);
* seed4 AGN (SUBCLASS exactly 'AGN') agreement on the spectra whose CLASS agrees;
* Z within 1000 km/s (``|dz| / (1 + z) c``) on the spectra whose CLASS agrees;
* the same on the "complete" spectra: those whose good pixels span > 2000 Å (five BOSS
  files in the collection were cut to 3700-4400 Å upstream, so the pipeline saw far more
  than the file holds);
* seconds per spectrum (one process, reading excluded) and spectra per second.

Usage (outside CI)::

    .venv/bin/python benchmarks/spectro1d_agreement.py            # all files, ~1 min
    .venv/bin/python benchmarks/spectro1d_agreement.py --limit 20 # smoke test

Writes ``benchmarks/results/spectro1d_agreement.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _results import environment, shared_data_dir, write_report

C_KMS = 2.99792458e5
FOLDERS = ("spectra", "spectra2", "spectra3", "dr7")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared-data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--limit", type=int, default=0, help="first N files only (smoke test)")
    ap.add_argument("--stem", default="spectro1d_agreement", help="results file stem")
    args = ap.parse_args(argv)

    from specclass.io import read_spectrum
    from specclass.spectro1d import ScanError, classify_spectrum
    from specclass.spectra.labels import get_scheme

    sdss = (args.shared_data or shared_data_dir()) / "sdss"
    files = sorted(f for d in FOLDERS for f in (sdss / d).glob("*") if f.is_file() and ".fit" in f.name)
    if args.limit:
        files = files[: args.limit]
    seed4 = get_scheme("seed4")
    rows, skipped = [], []
    seconds = seconds_class = cpu_class = cpu_all = 0.0
    for f in files:
        try:
            spec = read_spectrum(f)
        except Exception as exc:  # noqa: BLE001 - report every unreadable file with its reason
            skipped.append((f.name, f"unreadable: {exc}"))
            continue
        if spec.meta.class_ not in ("GALAXY", "QSO", "STAR"):
            skipped.append((f.name, f"no pipeline CLASS ({spec.meta.class_!r})"))
            continue
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            r = classify_spectrum(spec, lines=False)
            t1, c1 = time.perf_counter(), time.process_time()
            r = classify_spectrum(spec)
            t2, c2 = time.perf_counter(), time.process_time()
            seconds += t2 - t1
            seconds_class += t1 - t0
            cpu_class += c1 - c0
            cpu_all += c2 - c1
        except ScanError as exc:
            skipped.append((f.name, str(exc)))
            continue
        good = spec.ivar > 0
        span = float(10 ** spec.loglam[good].max() - 10 ** spec.loglam[good].min()) if good.any() else 0.0
        dv = abs(r.z - spec.meta.z) / (1 + spec.meta.z) * C_KMS if np.isfinite(r.z) else np.inf
        rows.append({
            "file": f"{f.parent.name}/{f.name}", "run2d": spec.meta.run2d, "generation": r.generation,
            "class": spec.meta.class_, "subclass": spec.meta.subclass, "z": float(spec.meta.z),
            "zwarning": int(spec.meta.zwarning),
            "emu_class": r.class_ or "(none)", "emu_subclass": r.subclass, "emu_z": float(r.z),
            "emu_rchi2diff": float(r.rchi2diff), "emu_zwarning": int(r.zwarning),
            "dv_kms": float(dv), "span_A": span,
            "seed4": seed4(spec.meta.class_, spec.meta.subclass)[0],
            "emu_seed4": seed4(r.class_, r.subclass)[0] if r.class_ else None,
        })
    if not rows:
        print("no spectrum classified", file=sys.stderr)
        return 1

    def summary(sel: list[dict]) -> dict:
        n = len(sel)
        same = [r for r in sel if r["emu_class"] == r["class"]]
        zok = sum(r["dv_kms"] < 1000 for r in same)
        agn_true = sum(r["subclass"] == "AGN" for r in same)
        agn_tp = sum(r["subclass"] == "AGN" and r["emu_subclass"] == "AGN" for r in same)
        agn_fp = sum(r["subclass"] != "AGN" and r["emu_subclass"] == "AGN" for r in same)
        s4 = sum(r["emu_seed4"] == r["seed4"] for r in sel)
        # the whole SUBCLASS string of GALAXY/QSO ('AGN', 'STARFORMING BROADLINE', '', ...)
        lined = [r for r in same if r["class"] in ("GALAXY", "QSO")]
        sub_ok = {k: sum(r["emu_subclass"] == r["subclass"] for r in lined if r["generation"] == k) for k in ("sdss", "boss")}
        sub_n = {k: sum(r["generation"] == k for r in lined) for k in ("sdss", "boss")}
        per = {c: f"{sum(r['emu_class'] == c for r in sel if r['class'] == c)}/{sum(r['class'] == c for r in sel)}"
               for c in ("GALAXY", "QSO", "STAR")}
        conf = Counter((r["class"], r["emu_class"]) for r in sel)
        return {
            "n": n, "class_agree": len(same), "class_agree_frac": len(same) / n, "per_class": per,
            "z_within_1000kms": zok, "agn_true": agn_true, "agn_found": agn_tp, "agn_false": agn_fp,
            "seed4_agree": s4, "seed4_agree_frac": s4 / n,
            "subclass_agree": {k: f"{sub_ok[k]}/{sub_n[k]}" for k in sub_ok},
            "confusion": {f"{a}->{b}": v for (a, b), v in sorted(conf.items())},
        }

    complete = [r for r in rows if r["span_A"] > 2000.0]
    result = {
        "environment": environment(loadavg_at_start=[round(x, 2) for x in __import__("os").getloadavg()]),
        "files": len(files), "classified": len(rows), "skipped": skipped,
        "seconds_per_spectrum": seconds / len(rows), "spectra_per_second": len(rows) / seconds,
        "class_only_spectra_per_second": len(rows) / seconds_class,
        # CPU seconds of this process (with OPENBLAS_NUM_THREADS=1: one core), robust to other load
        "class_only_spectra_per_cpu_second": len(rows) / cpu_class,
        "spectra_per_cpu_second": len(rows) / cpu_all,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "(default)"),
        "all": summary(rows), "complete": summary(complete),
        "disagreements": [r for r in rows if r["emu_class"] != r["class"] or r["dv_kms"] >= 1000
                          or (r["subclass"] == "AGN") != (r["emu_subclass"] == "AGN")],
    }
    md = [
        "# Pipeline emulator vs the SDSS pipeline's labels",
        "",
        f"`python benchmarks/spectro1d_agreement.py` on {len(rows)} real FITS spectra of `../shared/data/sdss` "
        f"({len(skipped)} files left out, reasons in the JSON). One process: "
        f"**{result['class_only_spectra_per_cpu_second']:.1f} spectra per CPU-second** for CLASS/Z (the chi2 scans; "
        f"{result['spectra_per_cpu_second']:.1f} with the GALAXY/QSO line fits; OPENBLAS_NUM_THREADS="
        f"{result['blas_threads']}); wall clock on the shared machine "
        f"{result['class_only_spectra_per_second']:.1f} spectra/s for CLASS/Z, "
        f"{result['spectra_per_second']:.1f} spectra/s with the GALAXY/QSO line fits "
        f"({1000 * result['seconds_per_spectrum']:.0f} ms per spectrum; reading excluded; "
        f"load average at start {result['environment']['loadavg_at_start']}).",
        "",
        "| set | spectra | CLASS agrees | GALAXY | QSO | STAR | Z within 1000 km/s (of CLASS agreeing) | seed4 label agrees | AGN found / true (false AGN) | GALAXY/QSO SUBCLASS string agrees, SDSS-I/II / BOSS reductions |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in (("all", result["all"]), ("complete (> 2000 Å of data)", result["complete"])):
        md.append(
            f"| {name} | {s['n']} | {s['class_agree']} ({100 * s['class_agree_frac']:.1f} %) | {s['per_class']['GALAXY']} | "
            f"{s['per_class']['QSO']} | {s['per_class']['STAR']} | {s['z_within_1000kms']}/{s['class_agree']} | "
            f"{s['seed4_agree']} ({100 * s['seed4_agree_frac']:.1f} %) | {s['agn_found']}/{s['agn_true']} ({s['agn_false']}) | "
            f"{s['subclass_agree']['sdss']} / {s['subclass_agree']['boss']} |"
        )
    md += ["", "Disagreements (CLASS, Z or AGN):", "",
           "| file | run2d | pipeline | emulator | Δv (km/s) | RCHI2DIFF | good-pixel span (Å) |",
           "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in result["disagreements"]:
        md.append(f"| {r['file']} | {r['run2d']} | {r['class']} {r['subclass']} z={r['z']:.4f} | "
                  f"{r['emu_class']} {r['emu_subclass']} z={r['emu_z']:.4f} | {r['dv_kms']:.0f} | "
                  f"{r['emu_rchi2diff']:.3f} | {r['span_A']:.0f} |")
    write_report(Path(__file__).resolve().parent / "results", args.stem, result, lambda _r: "\n".join(md) + "\n")
    print("\n".join(md[:9]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
