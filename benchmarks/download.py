"""Download throughput benchmark (not collected by pytest): files/s at concurrency 1 vs 8.

Starts the tests' SAS-like HTTP server on 127.0.0.1 (``tests/servers/sas.py``), which
serves the real lite spec files of ``../shared/data/sdss``, and downloads the same
``--files`` spectra into a fresh folder with ``specclass.sdss.download.download_catalog``
(the code behind ``specclass sdss download``: streaming, SHA-256, FITS verification with
astropy, atomic rename, manifest) at each concurrency in ``--workers``.

Two server settings are measured:

* ``local``   -- answers at once: measures our per-file cost (HTTP + verify + rename);
* ``latency`` -- waits ``--latency`` seconds before each answer, a stand-in for the
  round trip and queueing at the real SAS, where concurrency pays off.

Each (setting, workers) pair runs ``--repeats`` times; the best and median wall times
are kept. Results go to ``benchmarks/results/download.json`` and ``download.md``.

Usage::

    python benchmarks/download.py [--files 64] [--workers 1 8] [--latency 0.05] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test servers


def _shared_sdss() -> Path:
    env = os.environ.get("SPECCLASS_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "sdss"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=64, help="spectra per run (default 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8], help="concurrencies (default 1 8)")
    parser.add_argument("--latency", type=float, default=0.05, help="server delay per request, s (default 0.05)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from servers.sas import SASServer

    from specclass import __version__
    from specclass.sdss.config import SDSSConfig
    from specclass.sdss.download import download_catalog

    sdss = _shared_sdss()
    if not (sdss / "catalog.csv").exists():
        print(f"no real data at {sdss} (set SPECCLASS_SHARED_DATA)", file=sys.stderr)
        return 2
    rows = []
    with SASServer(sdss) as sas:
        lite = [r for r in sas.rows if r["lite"]][: args.files]
        catalog = [{"plate": r["plate"], "mjd": r["mjd"], "fiberid": r["fiberID"], "run2d": r["run2d"]} for r in lite]
        total_bytes = sum(Path(r["file"]).stat().st_size for r in lite)
        for setting, fault in (("local", None), ("latency", ("slow", args.latency))):
            for workers in args.workers:
                cfg = SDSSConfig(sas_url=sas.url, workers=workers, timeout=30, retries=0)
                times = []
                for _ in range(args.repeats):
                    sas.faults.clear()
                    if fault:
                        sas.faults["*"] = fault
                    out = Path(tempfile.mkdtemp(prefix="sdss-bench-"))
                    try:
                        t0 = time.perf_counter()
                        report = download_catalog(catalog, out, cfg, progress=False)
                        times.append(time.perf_counter() - t0)
                        if report.failed:
                            raise SystemExit(f"benchmark download failed:\n{report.summary()}")
                    finally:
                        shutil.rmtree(out, ignore_errors=True)
                best, med = min(times), statistics.median(times)
                row = dict(
                    setting=setting,
                    latency_s=args.latency if fault else 0.0,
                    workers=workers,
                    files=len(catalog),
                    mb=round(total_bytes / 1e6, 2),
                    best_s=round(best, 3),
                    median_s=round(med, 3),
                    files_per_s=round(len(catalog) / best, 1),
                    files_per_s_median=round(len(catalog) / med, 1),
                    mb_per_s=round(total_bytes / 1e6 / best, 1),
                )
                rows.append(row)
                print(f"{setting:8s} workers={workers:2d}: {row['files_per_s']:6.1f} files/s "
                      f"(median {row['files_per_s_median']:.1f}), {row['mb_per_s']:.1f} MB/s")
    result = dict(
        benchmark="sdss download throughput against a local SAS-like server",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        specclass=__version__,
        python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        results=rows,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "download.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Download throughput (`specclass sdss download`, local SAS-like server)",
        "",
        f"{result['created']}, specclass {__version__}, Python {result['python']}, {result['machine']}.",
        f"{len(catalog)} real lite spec files ({rows[0]['mb']} MB) from ../shared/data/sdss per run; "
        f"best of {args.repeats} runs (median in brackets). Each file is streamed, hashed (SHA-256), "
        "verified with astropy and renamed into place; every outcome goes to the manifest.",
        "",
        "| server | workers | files/s | MB/s | wall s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        server = "instant" if r["setting"] == "local" else f"+{r['latency_s'] * 1000:.0f} ms per request"
        lines.append(f"| {server} | {r['workers']} | {r['files_per_s']} ({r['files_per_s_median']}) | "
                     f"{r['mb_per_s']} | {r['best_s']} |")
    lines += ["", "Reproduce: `python benchmarks/download.py`", ""]
    (args.out / "download.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'download.json'} and {args.out / 'download.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
