"""Build specclass's embedded sample (``src/specclass/sample/``) from ../shared/data.

Run from the repository root (developers only; users never need it)::

    .venv/bin/python tools/make_sample.py [--shared ../shared/data]

It writes

* ``sample/gridded.npz`` - real SDSS spectra already on the default grid, in
  the :class:`~specclass.spectra.dataset.SpectralDataset` ``.npz`` layout with
  ``flux``/``ivar`` stored as float16 to stay small (loading casts to float32);
* ``sample/spectra/`` - a handful of raw files (spec-lite FITS, a DR7 spSpec
  ``.fit.gz``, a text star) that ``specclass demo`` reads, grids and adds to the
  dataset, and classifies with ``predict``;
* ``sample/text_labels.csv`` - labels for the text star among the raw files;
* ``sample/PROVENANCE.md`` - where every spectrum came from.

Selection (deterministic): every labelled FITS spectrum in ``sdss/`` except sky
fibres, with at most ``--max-epochs`` observations per object (the SDSS-RM
quasar RM017 has 78); the text stars; and ``--stars-per-subclass`` stars of each
subclass from ``sdss/arrays/sdss_star_spectra_txt.npz``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from specclass.spectra.build import build_dataset
from specclass.spectra.grid import DEFAULT_GRID, rebin
from specclass.spectra.dataset import SpectralDataset
from specclass.spectrum import Spectrum, SpectrumMeta

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "specclass" / "sample"

#: Raw files shipped for the demo's build and predict steps (relative to shared/data/sdss).
RAW_FILES = [
    "spectra/spec-0266-51602-0013.fits",   # QSO
    "spectra2/spec-0390-51900-0282.fits",  # GALAXY (dwarf)
    "spectra3/spec-0285-51930-0309.fits",  # GALAXY AGN
    "spectra3/spec-0907-52373-0419.fits",  # 
    "spectra/spec-4455-55539-0692.fits",   # STAR (white dwarf)
    "spectra3/spec-7102-56666-0914.fits",  # BOSS layout
    "dr7/spSpec-52017-0516-139.fit.gz",    # DR7, gzip
    "text_stars/spec-0266-51602-0084.txt", # text star (A0)
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--stars-per-subclass", type=int, default=8)
    args = ap.parse_args()
    sdss = Path(args.shared) / "sdss"
    text_csv = sdss / "arrays" / "sdss_star_spectra_txt.csv"

    ds, report = build_dataset(sdss, labels="seed4", text_labels=text_csv, seed=0)
    raw_abs = {str((sdss / f).resolve()) for f in RAW_FILES}
    keep = np.array([str(Path(f).resolve()) not in raw_abs for f in ds.meta["file"]])
    # at most max_epochs spectra per object (grouping by position / plate-mjd-fiber)
    per_obj: Counter[str] = Counter()
    for i in np.flatnonzero(keep):
        oid = ds.meta["object_id"][i]
        per_obj[oid] += 1
        if per_obj[oid] > args.max_epochs:
            keep[i] = False
    real = ds.subset(keep)
    real.meta["file"] = np.array([str(Path(f).resolve().relative_to(sdss.resolve())) for f in real.meta["file"]])

    # stars from the packed text-star array, a few per subclass
    z = np.load(sdss / "arrays" / "sdss_star_spectra_txt.npz", allow_pickle=False)
    taken = set(zip(real.meta["plate"].tolist(), real.meta["mjd"].tolist(), real.meta["fiberid"].tolist()))
    per_sub: Counter[str] = Counter()
    rows = []
    for i in range(len(z["npix"])):
        key = (int(z["plate"][i]), int(z["mjd"][i]), int(z["fiberid"][i]))
        sub = str(z["subclass"][i]).strip().upper()
        if key in taken or per_sub[sub] >= args.stars_per_subclass:
            continue
        n = int(z["npix"][i])
        wave, flux = z["wave"][i, :n].astype(np.float64), z["flux"][i, :n]
        good = np.isfinite(wave) & np.isfinite(flux)
        s = Spectrum(np.log10(wave[good]), flux[good], np.ones(good.sum()), np.zeros(good.sum()),
                     SpectrumMeta(file=f"arrays/sdss_star_spectra_txt.npz#{i}", plate=key[0], mjd=key[1], fiberid=key[2]))
        f, iv = rebin(s, DEFAULT_GRID)
        if not (iv > 0).any():
            continue
        per_sub[sub] += 1
        taken.add(key)
        rows.append((f, iv, key, sub, s.meta.file))
    n_old = len(real)
    star = real.class_names.index("STAR")
    meta = {k: v.copy() for k, v in real.meta.items()}
    add = len(rows)
    for k, v in meta.items():
        fill = {"U": "", "i": -1, "f": np.nan}.get(v.dtype.kind, -1)
        meta[k] = np.concatenate([v, np.full(add, fill, dtype=v.dtype)])
    for j, (_, _, key, sub, fname) in enumerate(rows):
        i = n_old + j
        meta["plate"][i], meta["mjd"][i], meta["fiberid"][i] = key
        meta["class"][i], meta["subclass"][i], meta["file"][i] = "STAR", sub, fname
        meta["format"][i], meta["source"][i], meta["survey"][i] = "text", "text", "sdss"
        meta["z"][i] = np.nan
    meta["split"][:] = -1
    meta["object_id"][:] = ""
    flux = np.concatenate([real.flux, np.array([r[0] for r in rows])])
    ivar = np.concatenate([real.ivar, np.array([r[1] for r in rows])])
    labels = np.concatenate([real.labels, np.full(add, star, dtype=np.int32)])

    OUT.mkdir(parents=True, exist_ok=True)
    attrs = {
        "format": "specclass-dataset", "format_version": 1, "class_names": real.class_names,
        "label_scheme": "seed4", "grid": DEFAULT_GRID.to_dict(),
        "description": "specclass embedded sample: real SDSS spectra on the default grid (float16 storage)",
        "provenance": "see PROVENANCE.md beside this file",
    }
    arrays = {
        "flux": np.clip(flux, -65000, 65000).astype(np.float16),
        "ivar": np.clip(ivar, 0, 65000).astype(np.float16),
        "labels": labels.astype(np.int32),
        "loglam": real.loglam,
        "attrs": np.array(json.dumps(attrs)),
    }
    for k, v in meta.items():
        arrays[f"meta/{k}"] = v.astype(str) if v.dtype.kind in "OU" else v
    np.savez_compressed(OUT / "gridded.npz", **arrays)
    check = SpectralDataset.load(OUT / "gridded.npz")
    assert check.flux.dtype == np.float32 and len(check) == len(labels)

    raw_dir = OUT / "spectra"
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    raw_dir.mkdir()
    for f in RAW_FILES:
        shutil.copyfile(sdss / f, raw_dir / Path(f).name)
    with open(text_csv) as fh, open(OUT / "text_labels.csv", "w", newline="") as out:
        r = csv.DictReader(fh)
        w = csv.DictWriter(out, fieldnames=["plate", "mjd", "fiberid", "class", "subclass"])
        w.writeheader()
        names = {Path(f).name for f in RAW_FILES if f.endswith(".txt")}
        for row in r:
            if Path(row["source_path"]).name in names:
                w.writerow({k: row[k] for k in ("plate", "mjd", "fiberid", "class", "subclass")})

    counts = Counter(np.asarray(real.class_names)[labels].tolist())
    sources = Counter(meta["source"].tolist())
    print(f"gridded: {len(labels)} spectra {dict(counts)} sources {dict(sources)}")
    print(f"size gridded.npz: {(OUT / 'gridded.npz').stat().st_size / 1e6:.2f} MB; raw: "
          f"{sum(p.stat().st_size for p in raw_dir.iterdir()) / 1e6:.2f} MB")
    _write_provenance(real, rows, counts, sources, args)


def _write_provenance(real, rows, counts, sources, args) -> None:
    lines = [
        "# Provenance of the embedded sample",
        "",
        "Built by `tools/make_sample.py` from the project's shared real-data folder",
        "(`../shared/data/sdss`, itself documented in its own PROVENANCE.md: every file is a",
        "public SDSS data product copied byte-for-byte from public GitHub repositories).",
        "SDSS asks users to acknowledge the survey: see https://www.sdss.org/collaboration/citing-sdss/.",
        "",
        "## `gridded.npz`",
        "",
        f"{sum(counts.values())} spectra on the default grid (log10 λ from {real.loglam[0]:.4f} in steps of 1e-4 dex,",
        f"{len(real.loglam)} pixels), seed4 labels: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))};",
        f"sources: {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}.",
        "`flux` and `ivar` are stored as float16 to keep the file small (the loader returns float32);",
        "the quantisation error (relative 5e-4) is far below the spectra's noise.",
        "",
        f"* every labelled FITS spectrum under `sdss/` except sky fibres and the fully masked file, at most {args.max_epochs} epochs per object;",
        "* the two-column text star spectra of `sdss/text_stars/` (labels from `sdss/arrays/sdss_star_spectra_txt.csv`);",
        f"* {len(rows)} stars from `sdss/arrays/sdss_star_spectra_txt.npz`, at most {args.stars_per_subclass} per SDSS subclass.",
        "   Text spectra carry no errors: their ivar is 1 wherever flux exists.",
        "",
        "Each row's `meta/file` names its source path relative to `sdss/`.",
        "",
        "## `spectra/`",
        "",
        "Raw files, byte-identical copies, read by `specclass demo` (build and predict steps):",
        "",
    ]
    lines += [f"* `{Path(f).name}` - `sdss/{f}`" for f in RAW_FILES]
    lines += ["", "`text_labels.csv` holds the label of the text star (from `sdss/arrays/sdss_star_spectra_txt.csv`).", ""]
    (OUT / "PROVENANCE.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
