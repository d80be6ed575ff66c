"""A SAS-like HTTP server on 127.0.0.1 serving the real spec files of ../shared/data/sdss.

Paths follow DR17: ``/sas/dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits``
for SDSS-I/II plates and ``/sas/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/PLATE/...``
for BOSS/eBOSS; the three full files of ``full/`` are also served at their full-file
paths (``spectra/PLATE`` for run2d 26, ``spectra/full/PLATE`` for BOSS).

Failure modes are switched per object key ('PLATE-MJD-FIBER') or for every file ('*'):

=================  ==========================================================
``("503", n)``     answer 503 (Retry-After: 0) n times, then the file
``"html"``         a maintenance HTML page with status 200
``("html", n)``    that page n times, then the file (a maintenance window that ends)
``"short"``        full Content-Length, but only half the body, then close
``("slow", s)``    wait s seconds before answering (past the client's timeout)
``"404"``          404 Not Found
``"evil-name"``    the file, with ``Content-Disposition: attachment; filename="../../evil.fits"``
``("trickle", s)`` the file in 16 KiB pieces, s seconds apart
``"wrong-file"``   another real spec file (a different plate-mjd-fiber)
=================  ==========================================================
"""

from __future__ import annotations

import csv
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from servers.loopback import LoopbackServer
from servers.catalog import LEGACY, key_of, spectra_rows

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>SAS maintenance</title></head>"
    b"<body><h1>The Science Archive Server is down for maintenance</h1></body></html>"
)


def _plate_dir(plate: int) -> str:
    return f"{plate:04d}"


class SASServer(LoopbackServer):
    """Start with ``with SASServer(sdss_dir) as sas:``; ``sas.url`` is the SAS root."""

    path_prefix = "/sas"

    def __init__(self, sdss_dir: Path, release: int = 17) -> None:
        self.rows = spectra_rows(sdss_dir)
        self.files: dict[str, Path] = {}  # URL path -> local file
        self.key_of_path: dict[str, str] = {}
        for row in self.rows:
            if not row["lite"]:
                continue
            name = f"spec-{key_of(row)}.fits"
            top = "sdss" if row["run2d"] in LEGACY else "eboss"
            path = f"/sas/dr{release}/{top}/spectro/redux/{row['run2d']}/spectra/lite/{_plate_dir(row['plate'])}/{name}"
            self.files[path] = Path(row["file"])
            self.key_of_path[path] = key_of(row)
        with open(sdss_dir / "catalog.csv", newline="") as fh:
            for rec in csv.DictReader(fh):
                if rec["format"] != "spec-full":
                    continue
                plate, mjd, fiber = (int(float(rec[k])) for k in ("plate", "mjd", "fiberid"))
                key = f"{plate:04d}-{mjd:05d}-{fiber:04d}"
                legacy = rec["run2d"] in LEGACY
                run2d = rec["run2d"] if legacy else "v5_13_2"
                top, sub = ("sdss", "spectra") if legacy else ("eboss", "spectra/full")
                path = f"/sas/dr{release}/{top}/spectro/redux/{run2d}/{sub}/{_plate_dir(plate)}/spec-{key}.fits"
                self.files[path] = sdss_dir / rec["filename"]
                self.key_of_path[path] = key
        self.faults: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []  # (path, fault applied or '')
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------

    def count(self, key: str) -> int:
        """How many GETs reached the file of object ``key``."""
        with self._lock:
            return self._counts.get(key, 0)

    # -- serving -------------------------------------------------------------------
    def _fault_for(self, key: str) -> Any:
        return self.faults.get(key, self.faults.get("*"))

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        local = self.files.get(path)
        key = self.key_of_path.get(path, "")
        fault = self._fault_for(key) if key else None
        kind = fault[0] if isinstance(fault, tuple) else fault
        with self._lock:
            self.requests.append((path, kind or ""))
            if key:
                self._counts[key] = self._counts.get(key, 0) + 1
        if local is None or kind == "404":
            h.send_error(404, "Not Found")
            return
        if kind == "503":
            with self._lock:
                left = fault[1]
                if left > 0:
                    self.faults[key if key in self.faults else "*"] = ("503", left - 1)
            if left > 0:
                h.send_response(503, "Service Unavailable")
                h.send_header("Retry-After", "0")
                h.send_header("Content-Type", "text/plain")
                h.end_headers()
                h.wfile.write(b"busy")
                return
        if kind == "slow":
            time.sleep(fault[1])
        if kind == "html" and isinstance(fault, tuple):
            with self._lock:
                left = fault[1]
                if left > 0:
                    self.faults[key if key in self.faults else "*"] = ("html", left - 1)
            if left <= 0:
                kind = None
        if kind == "html":
            h.send_response(200)
            h.send_header("Content-Type", "text/html; charset=utf-8")
            h.send_header("Content-Length", str(len(HTML_PAGE)))
            h.end_headers()
            h.wfile.write(HTML_PAGE)
            return
        if kind == "wrong-file":
            other = next(p for k, p in self.files.items() if self.key_of_path[k] != key and "/lite/" in k)
            local = other
        data = local.read_bytes()
        h.send_response(200)
        h.send_header("Content-Type", "application/fits")
        h.send_header("Content-Length", str(len(data)))
        if kind == "evil-name":
            h.send_header("Content-Disposition", 'attachment; filename="../../evil.fits"')
        h.end_headers()
        if kind == "short":
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if kind == "trickle":
            step = 16 * 1024
            for i in range(0, len(data), step):
                h.wfile.write(data[i : i + step])
                h.wfile.flush()
                time.sleep(fault[1])
            return
        h.wfile.write(data)
