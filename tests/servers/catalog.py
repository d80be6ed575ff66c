"""SpecObj-like rows built from ``../shared/data/sdss/catalog.csv`` for the test servers.

Only real SDSS spec files with plate/mjd/fiber are used (``spec-lite``,
``spec-lite-noextname`` and ``spec-full`` formats), sky fibres (``sky/``) are left out
as SpecObj's science-primary view leaves them out, and each plate-mjd-fiber appears once
(the lite copy preferred). Values are given as DR17's SpecObj would give them: ``run2d``
'26'/'103'/'104' for SDSS-I/II plates and 'v5_13_2' for BOSS/eBOSS; ``survey`` 'sdss',
'boss' (MJD < 56900) or 'eboss'; ``specObjID`` from the documented bit layout
(plate << 50 | fiber << 38 | (mjd - 50000) << 24 | rerun << 10, with rerun =
(N - 5) * 10000 + M * 100 + P for run2d vN_M_P).
"""

from __future__ import annotations

import csv
from pathlib import Path

SPEC_FORMATS = ("spec-lite", "spec-lite-noextname", "spec-full")
LEGACY = ("26", "103", "104")
DR17_BOSS_RUN2D = "v5_13_2"


def _rerun(run2d: str) -> int:
    if run2d.startswith("v"):
        n, m, p = (int(x) for x in run2d[1:].split("_"))
        return (n - 5) * 10000 + m * 100 + p
    return int(run2d)


def spec_obj_id(plate: int, mjd: int, fiberid: int, run2d: str) -> int:
    """SDSS DR8+ specObjID bit layout."""
    return (plate << 50) | (fiberid << 38) | ((mjd - 50000) << 24) | (_rerun(run2d) << 10)


def spectra_rows(sdss_dir: Path) -> list[dict]:
    """One dict per distinct spectrum: SpecObj columns plus ``file`` (absolute path)
    and ``lite`` (True for lite layouts)."""
    rows: dict[tuple[int, int, int], dict] = {}
    with open(sdss_dir / "catalog.csv", newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec["format"] not in SPEC_FORMATS or rec["filename"].startswith("sky/"):
                continue
            if not (rec["plate"] and rec["mjd"] and rec["fiberid"]):
                continue
            plate, mjd, fiber = (int(float(rec[k])) for k in ("plate", "mjd", "fiberid"))
            src_run2d = rec["run2d"].strip()
            run2d = src_run2d if src_run2d in LEGACY else DR17_BOSS_RUN2D
            lite = rec["format"] != "spec-full"
            row = {
                "plate": plate,
                "mjd": mjd,
                "fiberID": fiber,
                "run2d": run2d,
                "survey": "sdss" if run2d in LEGACY else ("boss" if mjd < 56900 else "eboss"),
                "class": rec["class"].strip().upper(),
                "subClass": rec["subclass"].strip().upper(),
                "z": float(rec["z"]) if rec["z"] else float("nan"),
                "zWarning": int(float(rec["zwarning"])) if rec["zwarning"] else 0,
                "specObjID": spec_obj_id(plate, mjd, fiber, run2d),
                "file": str(sdss_dir / rec["filename"]),
                "lite": lite,
            }
            key = (plate, mjd, fiber)
            if key not in rows or (lite and not rows[key]["lite"]):
                rows[key] = row
    return sorted(rows.values(), key=lambda r: r["specObjID"])


def key_of(row: dict) -> str:
    """'PLATE-MJD-FIBER' zero-padded like the SAS file names."""
    return f"{row['plate']:04d}-{row['mjd']:05d}-{row['fiberID']:04d}"
