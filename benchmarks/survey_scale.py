"""Survey-scale benchmark (not collected by pytest): memory and speed with datasets larger than memory.

Measured in one run, each step in its own subprocess (peak RSS =
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process, so steps do not
inherit each other's peaks), all under ``nice``:

* ``simulate``: ``specclass simulate --n-per-class K --label-source construction`` for
  ``--sizes`` (total spectra = 4 K, seed4), written chunk by chunk: seconds and peak RSS.
  (Labels by construction: the pipeline emulator labels ~10 spectra/s per core, days for
  a million, and builds the set in memory; see ``specclass simulate --help``.)
* ``train``: ``specclass.training.train`` of the default network
  (:data:`specclass.models.DEFAULT_MODEL`, batch 64 as ``specclass train``) for one epoch on each file, streamed from the
  file (``stream=True``), and on the smallest file also in memory (``stream=False``).
  With ``--steps S`` the epoch is cut after S training batches (a callback sets
  ``model.stop_training``), so a large file fits the time budget; validation and the
  calibration pass still run over the whole validation split. Reported: peak RSS,
  training spectra/s over the batches run (Keras' own step timing: ``on_train_batch``
  callbacks, first 20 batches left out as warm-up), wall seconds.
* ``build-dataset`` and ``predict`` with ``--workers 1`` and ``2`` on the real SDSS
  files of ``../shared/data/sdss`` (every file, sky fibres and unreadable ones
  included), ``--replicas`` times over (hard links in the work folder, so there is
  enough work to share; build-dataset reads and grids every copy, then drops the
  repeats as duplicates): input files/s including process start-up (spawned
  workers each import Keras and load the model), and whether the outputs are
  byte-identical.

Results: ``benchmarks/results/survey_scale.json`` and ``survey_scale.md``.

Usage::

    python benchmarks/survey_scale.py --sizes 25000 75000 --steps 600 --work /tmp/survey
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import REPO, command_line, environment, run_sentence, shared_data_dir, utc_now, write_report  # noqa: E402

PY = sys.executable
BATCH = 64  # specclass train's default batch size
#: Augmentation as ``specclass train``'s default recipe (both feedings then prepare every batch on
#: the fly); ``--no-augment`` measures the Python API default, where the in-memory path
#: preprocesses the whole training split once (fast steps, memory ~ N).
AUGMENT = "--no-augment" not in sys.argv
SRC = str(REPO / "src")


def _child(argv: list[str], timeout: float = 3600) -> dict:
    """Run this script with ``argv`` in a fresh, niced process; return the JSON it prints last."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["nice", "-n", "5", PY, __file__, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --------------------------------------------------------------------------- steps (child processes)
def step_simulate(k: int, out: str, compression: str = "gzip") -> dict:
    from specclass.cli import main

    t0 = time.perf_counter()
    rc = main(["simulate", "--n-per-class", str(k), "--seed", "7", "--out", out, "--overwrite", "--no-progress",
               "--json", "--label-source", "construction", "--compression", compression])
    dt = time.perf_counter() - t0
    return {"n": 4 * k, "compression": compression, "rc": rc, "seconds": round(dt, 1), "spectra_per_s": round(4 * k / dt, 1),
            "peak_rss_mb": _peak_mb(), "file_gb": round(Path(out).stat().st_size / 1e9, 2)}


def step_train(path: str, stream: bool, steps: int, run_dir: str) -> dict:
    import keras

    from specclass.models import DEFAULT_MODEL
    from specclass.training import train

    class Cut(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.n, self.t = 0, []

        def on_train_batch_begin(self, batch, logs=None):
            self.t.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self.n += 1
            if steps and self.n >= steps:
                self.model.stop_training = True

    cut = Cut()
    t0 = time.perf_counter()
    res = train(path, DEFAULT_MODEL, run_dir, epochs=1, batch_size=BATCH, seed=1, verbose=0, stream=stream,
                extra_callbacks=[cut], resume=False, augment=AUGMENT)
    wall = time.perf_counter() - t0
    warm = cut.t[20:]
    rate = BATCH * (len(warm) - 1) / (warm[-1] - warm[0]) if len(warm) > 2 else None
    return {"model": DEFAULT_MODEL, "augment": AUGMENT, "stream": stream, "batches": cut.n, "train_spectra_per_s": None if rate is None else round(rate, 1),
            "wall_s": round(wall, 1), "peak_rss_mb": _peak_mb(), "n_train": res.config["dataset"]["n_train"],
            "n_rows": res.config["dataset"]["n_rows"]}


def step_cli(argv: list[str], out: str) -> dict:
    from specclass.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    dt = time.perf_counter() - t0
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()[:16] if Path(out).is_file() else None
    return {"rc": rc, "seconds": round(dt, 2), "sha256": digest, "peak_rss_mb": _peak_mb()}


# --------------------------------------------------------------------------- orchestration
def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": command_line(), "date_utc": utc_now(), "simulate": [], "train": [], "workers": {}}
    files = []
    for k in args.sizes:
        out = work / (f"sim-{4 * k}.h5" if args.compression == "gzip" else f"sim-{4 * k}-{args.compression}.h5")
        record = out.with_name(out.name + ".json")
        if args.reuse and out.is_file() and record.is_file():  # simulated by an earlier (interrupted) run
            r = json.loads(record.read_text())
        else:
            r = _child(["--step", "simulate", str(k), str(out), args.compression])
            record.write_text(json.dumps(r))
        print("simulate", r, flush=True)
        report["simulate"].append(r)
        files.append(out)
    for i, f in enumerate(files):
        modes = [True, False] if i == 0 and not args.no_memory else [True]
        for stream in modes:
            r = _child(["--step", "train", str(f), str(int(stream)), str(args.steps), str(work / f"run-{f.stem}-{int(stream)}-a{int(not args.no_augment)}"),
                        *(["--no-augment"] if args.no_augment else [])])
            r["file"] = f.name
            print("train", r, flush=True)
            report["train"].append(r)
    sdss = None if args.skip_workers else _replicas(shared_data_dir() / "sdss", work / "real", args.replicas)
    if sdss is not None:
        for n in (1, 2):
            out = work / f"real-w{n}.h5"
            r = _child(["--step", "cli", str(out), "build-dataset", str(sdss), "--out", str(out), "--no-progress",
                        "--workers", str(n)])
            r["files"] = sum(1 for f in sdss.rglob("*") if f.is_file() and not f.name.endswith((".md", ".csv")))
            print("build", n, r, flush=True)
            report["workers"][f"build-dataset w{n}"] = r
        run_dir = work / f"run-{files[0].stem}-1-a{int(not args.no_augment)}"
        for n in (1, 2):
            out = work / f"pred-w{n}.csv"
            r = _child(["--step", "cli", str(out), "predict", str(run_dir), str(sdss), "--out", str(out),
                        "--workers", str(n)])
            r["files"] = sum(1 for _ in open(out)) - 1  # one CSV row per spectrum or failed file
            print("predict", n, r, flush=True)
            report["workers"][f"predict w{n}"] = r
    report["environment"] = environment(disk_free_gb=round(os.statvfs(work).f_bavail * os.statvfs(work).f_frsize / 1e9, 1))
    return report


def _replicas(src: Path, dst: Path, n: int) -> Path | None:
    """``dst/rep-I/...``: ``n`` hard links (copies if linking fails) of every file under ``src``."""
    import shutil

    if not src.is_dir():
        return None
    files = [f for f in src.rglob("*") if f.is_file()]
    for i in range(n):
        for f in files:
            target = dst / f"rep-{i}" / f.relative_to(src)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
    return dst


def _rows(path: Path) -> int | None:
    if not path.is_file():
        return None
    from specclass.spectra.dataset import SpectralDataset

    return SpectralDataset.peek(path)[0]


def markdown(report: dict) -> str:
    lines = ["# Survey-scale benchmark", "", run_sentence(report), "",
             "## simulate (chunked writer)", "",
             "| spectra | flux/ivar storage | seconds | spectra/s | peak RSS (MB) | file (GB) |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['n']:,} | {r.get('compression', 'gzip')} | {r['seconds']} | {r['spectra_per_s']} | "
              f"{r['peak_rss_mb']:,} | {r['file_gb']} |" for r in report["simulate"]]
    model = report["train"][0].get("model", "spectral_resnet") if report["train"] else ""
    lines += ["", f"## one training epoch of {model} (batch {BATCH if model != 'spectral_resnet' else 32})", "",
              "| file | rows | feeding | augmentation | batches run | training spectra/s | wall (s) | peak RSS (MB) |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['file']} | {r['n_rows']:,} | {'stream' if r['stream'] else 'in memory'} | "
              f"{'on' if r.get('augment') else 'off'} | {r['batches']} | "
              f"{r['train_spectra_per_s']} | {r['wall_s']} | {r['peak_rss_mb']:,} |" for r in report["train"]]
    if report["workers"]:
        lines += ["", "## --workers on the real SDSS files", "",
                  "| command | inputs | seconds | inputs/s | output sha256 |", "| --- | ---: | ---: | ---: | --- |"]
        for name, r in report["workers"].items():
            rate = round(r["files"] / r["seconds"], 1) if r.get("files") else None
            lines.append(f"| {name} | {r.get('files')} | {r['seconds']} | {rate} | {r['sha256']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[25000, 75000], metavar="K",
                   help="spectra per class of each simulated file (4 classes)")
    p.add_argument("--steps", type=int, default=600, help="training batches per epoch (0 = the whole epoch)")
    p.add_argument("--work", default="/tmp/specclass-survey", help="folder for the files (needs disk)")
    p.add_argument("--replicas", type=int, default=8,
                   help="copies (hard links) of the real SDSS folder for the --workers runs (default 8)")
    p.add_argument("--reuse", action="store_true",
                   help="keep simulated files of an earlier run in --work (with their timing record)")
    p.add_argument("--no-memory", action="store_true", help="skip the in-memory training run")
    p.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                   help="flux/ivar storage of the simulated files (specclass simulate --compression)")
    p.add_argument("--no-augment", action="store_true",
                   help="train without augmentation (the in-memory path then preprocesses everything once)")
    p.add_argument("--skip-workers", action="store_true", help="skip the --workers runs on the real files")
    p.add_argument("--stem", default="survey_scale", help="output file name stem (default survey_scale)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    if sys.argv[1:2] == ["--step"]:  # one measured step, in a child process
        kind, *rest = sys.argv[2:]
        if kind == "simulate":
            r = step_simulate(int(rest[0]), rest[1], *rest[2:3])
        elif kind == "train":
            r = step_train(rest[0], bool(int(rest[1])), int(rest[2]), rest[3])
        else:
            r = step_cli(rest[1:], rest[0])
        print(json.dumps(r))
        return 0
    args = p.parse_args()
    report = run(args)
    paths = write_report(args.out, args.stem, report, markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
