"""Build the simulator's data assets from real SDSS spectra (run once; outputs are shipped).

``python -m specclass.simulate.assets --sdss-dir ../shared/data/sdss --out src/specclass/templates``
writes:

* ``coefficient_priors.json`` -- for GALAXY and QSO, the eigen-coefficient ratios
  ``c[k]/c[0]`` of every real spectrum used (the kernels of the simulator's kernel-density
  draw, with their pipeline SUBCLASS) and their mean and covariance, obtained by
  projecting real SDSS spectra
  (rest frame, from their pipeline ``Z``) onto the shipped spEigen eigenspectra with
  ivar-weighted least squares, the same linear fit the SDSS pipeline does
  (Bolton et al. 2012, AJ 144, 144). Galaxy fits mask the emission-line
  windows; quasar fits keep them. Ratios further than 5 robust sigma from the median
  are dropped before the mean/covariance are taken.
* ``ivar_bank.npz`` -- real ``ivar`` rows (sky fibres, galaxies, one epoch per quasar)
  placed on the simulator grid by their integer 1e-4 dex pixel offset (SDSS spectra are
  sampled on that global grid), each divided by its median over covered pixels, stored as
  float16. They carry the real throughput shape (dichroic near 6000 Å), sky-line noise
  spikes and masked stretches.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import numpy as np

from specclass.simulate.lines import EMISSION_WINDOWS
from specclass.simulate.templates import IVAR_BANK_FILE, PRIORS_FILE, load_templates, simulator_grid

log = logging.getLogger(__name__)


def read_lite(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """``(loglam, flux, ivar, ra, dec)`` from a spec-lite file, reading HDUs by position.

    Raises:
        ValueError: if HDU 1 lacks loglam/flux/ivar columns (names the file).
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        d = hdul[1].data
        names = [n.lower() for n in d.columns.names]
        if not {"loglam", "flux", "ivar"} <= set(names):
            raise ValueError(f"{path}: HDU 1 has no loglam/flux/ivar columns")
        cols = {n.lower(): n for n in d.columns.names}
        loglam = np.asarray(d[cols["loglam"]], dtype=np.float64)
        flux = np.asarray(d[cols["flux"]], dtype=np.float64)
        ivar = np.asarray(d[cols["ivar"]], dtype=np.float64)
        ra = dec = np.nan
        if len(hdul) > 2 and hdul[2].data is not None:
            t = hdul[2].data
            tn = {n.upper(): n for n in t.columns.names}
            for rk, dk in (("PLUG_RA", "PLUG_DEC"), ("RA", "DEC")):
                if rk in tn and dk in tn:
                    ra, dec = float(t[tn[rk]][0]), float(t[tn[dk]][0])
                    break
    return loglam, flux, ivar, ra, dec


def on_grid(loglam: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Place native 1e-4 dex SDSS pixels onto ``grid`` by integer offset (0 where uncovered)."""
    step = grid[1] - grid[0]
    off = (loglam[0] - grid[0]) / step
    out = np.zeros(grid.size, dtype=np.float64)
    if abs(off - round(off)) < 0.05:
        idx = int(round(off)) + np.arange(loglam.size)
        ok = (idx >= 0) & (idx < grid.size)
        out[idx[ok]] = values[ok]
    else:  # off the global grid: nearest pixel
        idx = np.clip(np.searchsorted(loglam, grid), 1, loglam.size - 1)
        idx = np.where(np.abs(loglam[idx - 1] - grid) < np.abs(loglam[idx] - grid), idx - 1, idx)
        ok = np.abs(loglam[idx] - grid) < step / 2
        out[ok] = values[idx[ok]]
    return out


def fit_coefficients(
    loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: float, kind: str
) -> np.ndarray | None:
    """Ivar-weighted least-squares eigen-coefficients of one spectrum at redshift ``z``.

    Returns:
        ``(n_eigen,)`` coefficients, or ``None`` if fewer than 500 usable pixels.
    """
    t = load_templates(kind)
    rest = loglam - np.log10(1.0 + z)
    lo, hi = t.coverage
    w = np.where((rest > lo) & (rest < hi) & np.isfinite(flux), ivar, 0.0)
    if kind == "GALAXY":
        wave = 10**rest
        for a, b in EMISSION_WINDOWS:
            w[(wave > a - 5) & (wave < b + 5)] = 0.0
    good = w > 0
    if good.sum() < 500:
        return None
    a = np.stack([np.interp(rest[good], t.loglam, row) for row in t.flux], axis=1)
    sw = np.sqrt(w[good])
    coef, *_ = np.linalg.lstsq(a * sw[:, None], flux[good] * sw, rcond=None)
    return coef


def robust_mean_cov(ratios: np.ndarray, nsigma: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and covariance of rows of ``ratios`` after dropping > ``nsigma`` robust outliers.

    Returns:
        ``(mean, cov, kept_mask)``.
    """
    med = np.median(ratios, axis=0)
    mad = 1.4826 * np.median(np.abs(ratios - med), axis=0)
    keep = np.all(np.abs(ratios - med) <= nsigma * np.maximum(mad, 1e-12), axis=1)
    r = ratios[keep]
    return r.mean(axis=0), np.cov(r, rowvar=False), keep


def build_assets(sdss_dir: Path, out_dir: Path, max_bank: int = 96) -> dict:
    """Fit the coefficient priors and build the ivar bank from ``sdss_dir``; write both into ``out_dir``.

    Returns:
        A summary dict (counts per class, files used).

    Raises:
        FileNotFoundError: if ``sdss_dir/catalog.csv`` is missing.
    """
    catalog = sdss_dir / "catalog.csv"
    if not catalog.exists():
        raise FileNotFoundError(f"{catalog}: SDSS catalog not found")
    rows = list(csv.DictReader(catalog.open()))
    grid = simulator_grid()
    ratios: dict[str, list[np.ndarray]] = {"GALAXY": [], "QSO": []}
    used: dict[str, list[str]] = {"GALAXY": [], "QSO": []}
    subclasses: dict[str, list[str]] = {"GALAXY": [], "QSO": []}
    bank, bank_files, seen_pos = [], [], []
    for r in rows:
        if not r["format"].startswith("spec-lite"):
            continue
        path = sdss_dir / r["filename"]
        loglam, flux, ivar, ra, dec = read_lite(path)
        ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
        is_sky = r["filename"].startswith("sky/")
        # one entry per object (repeat epochs within 2 arcsec count once)
        repeat = any(
            np.isfinite(ra) and abs(ra - a) * np.cos(np.radians(dec)) < 2 / 3600 and abs(dec - d) < 2 / 3600
            for a, d in seen_pos
        )
        if not is_sky and np.isfinite(ra):
            seen_pos.append((ra, dec))
        if repeat:
            continue
        g = on_grid(loglam, ivar, grid)
        if (g > 0).sum() > 0.6 * grid.size:
            bank.append((g / np.median(g[g > 0])).astype(np.float16))
            bank_files.append(r["filename"])
        if is_sky or r["class"] not in ratios:
            continue
        z, zw = float(r["z"]), int(float(r["zwarning"] or 0))
        if zw != 0 or not (0.0 < z < 5.0) or "BROADLINE" in r["subclass"] and r["class"] == "GALAXY":
            continue
        coef = fit_coefficients(loglam, flux, ivar, z, r["class"])
        if coef is None or coef[0] <= 0:
            continue
        ratios[r["class"]].append(coef[1:] / coef[0])
        used[r["class"]].append(r["filename"])
        subclasses[r["class"]].append(r["subclass"].strip().upper())
    priors = {}
    for kind, rs in ratios.items():
        arr = np.asarray(rs)
        mean, cov, keep = robust_mean_cov(arr)
        priors[kind] = {
            "template": load_templates(kind).file,
            "mean": mean.tolist(),
            "cov": cov.tolist(),
            "n_spectra": int(keep.sum()),
            "n_rejected": int((~keep).sum()),
            "sources": f"{int(keep.sum())} real SDSS {kind} spectra (one epoch per object, ZWARNING=0) "
            f"from ../shared/data/sdss (catalog.csv rows)",
            "files": [f for f, k in zip(used[kind], keep) if k],
            "samples": arr[keep].tolist(),
            "sample_subclass": [sc for sc, k in zip(subclasses[kind], keep) if k],
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PRIORS_FILE).write_text(
        json.dumps(
            {
                "description": "Mean/covariance of eigen-coefficient ratios c[k]/c[0] of real SDSS spectra "
                "projected onto the shipped spEigen eigenspectra (specclass.simulate.assets).",
                "priors": priors,
            },
            indent=1,
        )
    )
    rng = np.random.default_rng(0)
    order = np.arange(len(bank))
    if len(bank) > max_bank:
        sky = [i for i in order if bank_files[i].startswith("sky/")]
        obj = [i for i in order if not bank_files[i].startswith("sky/")]
        n_obj = max_bank - min(len(sky), max_bank // 2)
        order = np.sort(np.concatenate([sky[: max_bank // 2], rng.choice(obj, size=min(n_obj, len(obj)), replace=False)]))
    np.savez_compressed(
        out_dir / IVAR_BANK_FILE,
        ivar=np.stack([bank[i] for i in order]),
        loglam=grid,
        files=np.array([bank_files[i] for i in order]),
    )
    return {k: v["n_spectra"] for k, v in priors.items()} | {"ivar_rows": len(order)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m specclass.simulate.assets", description=__doc__.split("\n")[0])
    p.add_argument("--sdss-dir", type=Path, required=True, help="folder with catalog.csv and the spectra")
    p.add_argument("--out", type=Path, required=True, help="output folder (src/specclass/templates)")
    p.add_argument("--max-bank", type=int, default=96, help="ivar rows to keep (default 96)")
    args = p.parse_args(argv)
    print(json.dumps(build_assets(args.sdss_dir, args.out, args.max_bank)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
