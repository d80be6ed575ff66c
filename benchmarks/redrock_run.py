"""Time redrock (DESI's template-fitting redshift/classification code) on real SDSS spec-lite files.

Runs in its own virtual environment (redrock pins its own numpy/numba; it is not a
specclass dependency)::

    python3 -m venv /tmp/rrvenv && /tmp/rrvenv/bin/pip install redrock
    /tmp/rrvenv/bin/python benchmarks/redrock_run.py --n 60 --out benchmarks/results/tmp/redrock.csv

For each of the first ``--n`` spec-lite files (sorted by name) under
``../shared/data/sdss/spectra``: wavelength ``10**loglam``, ``flux``, ``ivar`` (0 where
``and_mask`` is set, as ``rrboss --use-andmask`` does), cut to 3,600-9,900 A (the
templates' coverage), and a Gaussian resolution matrix
from the file's ``wdisp`` (built as in ``redrock.external.boss.read_spectra``) make one
``redrock.targets.Target``. All targets go through one ``redrock.zfind.zfind`` call
(one process) with the DESI templates of ``../shared/data/templates/redrock``. Wall
time of template loading/rebinning and of ``zfind`` are both recorded; the CSV holds
per file the redrock SPECTYPE, Z, ZWARN, the pipeline CLASS, and the run's timing in
``# key=value`` header lines. ``benchmarks/inference.py --redrock-csv`` reads it and
compares with the networks' classes; the committed run is
``benchmarks/results/inference-redrock.csv`` (40 files).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Observed range kept: the galaxy template ends at 10,000 A rest frame and is scanned from
# z = -0.005, so redrock refuses BOSS pixels beyond ~9,950 A ("edges must be within input x range").
WAVE_MIN, WAVE_MAX = 3600.0, 9900.0


def gaussian_resolution(wdisp: np.ndarray):
    """Sparse ``(L, L)`` resolution matrix with per-pixel Gaussian sigma ``wdisp`` (pixels),
    columns normalised to 1 (as ``redrock.external.boss.read_spectra``)."""
    from scipy import sparse

    wd = np.where(wdisp < 1e-5, 2.0, wdisp).astype(np.float64)
    ndiag = int(4 * np.ceil(min(wd.max(), 5.0)) + 1)
    nbins = wd.size
    reso = np.zeros((ndiag, nbins))
    offsets = ndiag // 2 - np.arange(ndiag)
    for idiag, off in enumerate(offsets):
        reso[idiag] = np.exp(-(off ** 2) / 2.0 / wd ** 2)
    reso /= reso.sum(axis=0)
    return sparse.dia_matrix((reso, offsets), (nbins, nbins))


def template_files(template_dir: Path, scratch: Path) -> list[str]:
    """The redrock template files to use, as copies with an ``RRIGM`` header keyword.

    The stored templates (``RRVER = 0.0.0.dev``) lack ``RRIGM``, which redrock 0.21
    requires unless it recognises the version; the copies get the IGM model redrock
    itself assigns to those template families (``Kamble20`` for the QSO-LOZ/HIZ v1.1
    templates, ``Calura12`` for the galaxy template; stars need none). The older
    single QSO template (``QSO-None-v0.1``) is left out: redrock's current default set
    is galaxy + QSO-LOZ + QSO-HIZ + stars.
    """
    from astropy.io import fits

    out_dir = scratch / "rrtemplates"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for f in sorted(template_dir.glob("rrtemplate-*.fits")):
        if "QSO-None" in f.name:
            continue
        with fits.open(f, memmap=False) as h:
            hdr = h[0].header
            if "RRIGM" not in hdr and hdr.get("RRTYPE", "").strip().upper() != "STAR":
                hdr["RRIGM"] = "Kamble20" if ("HIZ" in f.name or "LOZ" in f.name) else "Calura12"
            h.writeto(out_dir / f.name, overwrite=True)
        files.append(str(out_dir / f.name))
    return files


def main(argv: list[str] | None = None) -> int:
    from astropy.io import fits
    from redrock.targets import DistTargetsCopy, Spectrum, Target
    from redrock.templates import load_dist_templates
    from redrock.zfind import zfind

    shared = Path(os.environ.get("SPECCLASS_SHARED_DATA", REPO.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spectra", type=Path, default=shared / "sdss" / "spectra")
    p.add_argument("--templates", type=Path, default=shared / "templates" / "redrock")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    files = sorted(args.spectra.rglob("spec-*.fits"))[: args.n]
    t0 = time.perf_counter()
    targets, rows = [], []
    for i, f in enumerate(files):
        with fits.open(f, memmap=False) as h:
            c = h[1].data
            cls = str(h[2].data["CLASS"][0]).strip()
            loglam = np.asarray(c["loglam"], np.float64)
            flux = np.asarray(c["flux"], np.float64)
            ivar = np.asarray(c["ivar"], np.float64) * (np.asarray(c["and_mask"]) == 0)
            wdisp = np.asarray(c["wdisp"], np.float64)
        keep = (loglam >= np.log10(WAVE_MIN)) & (loglam <= np.log10(WAVE_MAX))
        loglam, flux, ivar, wdisp = loglam[keep], flux[keep], ivar[keep], wdisp[keep]
        spec = Spectrum(10 ** loglam, flux, ivar.copy(), gaussian_resolution(wdisp), None)
        targets.append(Target(i, [spec], coadd=False))
        rows.append({"file": str(f.relative_to(args.spectra)), "file_class": cls})
    t_read = time.perf_counter() - t0

    t0 = time.perf_counter()
    dtargets = DistTargetsCopy(targets)
    dtemplates = load_dist_templates(dtargets.wavegrids(), templates=template_files(args.templates, args.out.parent),
                                     mp_procs=1)
    t_templates = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, zfit = zfind(dtargets, dtemplates, 1, nminima=3)
    t_zfind = time.perf_counter() - t0
    best = zfit[zfit["znum"] == 0]
    by_id = {int(r["targetid"]): r for r in best}
    for i, row in enumerate(rows):
        r = by_id[i]
        row.update(spectype=str(r["spectype"]).strip(), subtype=str(r["subtype"]).strip(),
                   z=float(r["z"]), zwarn=int(r["zwarn"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        fh.write(f"# n={len(rows)}\n# read_seconds={t_read:.3f}\n# templates_seconds={t_templates:.3f}\n"
                 f"# zfind_seconds={t_zfind:.3f}\n# processes=1\n# loadavg={os.getloadavg()[0]:.2f}\n")
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(args.out)
    print(f"redrock: {len(rows)} spectra, zfind {t_zfind:.1f} s ({t_zfind / len(rows):.2f} s/spectrum), "
          f"templates {t_templates:.1f} s, read {t_read:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
