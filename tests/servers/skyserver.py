"""A SkyServer-like SQL service on 127.0.0.1, answering from a sqlite ``SpecObj`` table.

Endpoints (any data release number): ``/drNN/SkyServerWS/SearchTools/SqlSearch`` and
``/drNN/en/tools/search/x_sql.asp``, GET parameters ``cmd`` (SQL) and ``format=csv``.
The SQL is run by sqlite after one translation: ``SELECT TOP n ...`` becomes
``SELECT ... LIMIT n``. Only SELECT statements are accepted. The answer is SkyServer's
CSV: a ``#Table1`` line, a header row, the rows.

``specObjID`` is stored as 20-digit zero-padded text, because plates >= 8192 give ids
above sqlite's signed 64-bit INTEGER; the padding keeps ORDER BY numeric.

Failure modes (``server.fault``): ``("503", n)`` n answers 503 then normal; ``"html"`` an
HTML page with status 200; ``"error"`` a SkyServer-style error text with status 200;
``"wrong-columns"`` a table with other columns; ``("slow", s)`` wait s seconds first.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from servers.loopback import LoopbackServer
from servers.catalog import spectra_rows

_TOP = re.compile(r"^\s*SELECT\s+TOP\s+(\d+)\s+(.*)$", re.I | re.S)
_PATHS = re.compile(r"^/dr\d+/(SkyServerWS/SearchTools/SqlSearch|en/tools/search/x_sql\.asp)$")


def to_sqlite(sql: str) -> str:
    """Translate SkyServer's ``SELECT TOP n ...`` to sqlite's ``... LIMIT n``."""
    m = _TOP.match(sql)
    return f"SELECT {m.group(2).strip()} LIMIT {int(m.group(1))}" if m else sql


class SkyServerSQL(LoopbackServer):
    """Start with ``with SkyServerSQL(sdss_dir) as sky:``; ``sky.url`` is the SkyServer root."""

    path_prefix = ""

    def __init__(self, sdss_dir: Path) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE SpecObj (plate INTEGER, mjd INTEGER, fiberID INTEGER, run2d TEXT, "
            "survey TEXT, class TEXT, subClass TEXT, z REAL, zWarning INTEGER, specObjID TEXT)"
        )
        self.rows = spectra_rows(sdss_dir)
        self.db.executemany(
            "INSERT INTO SpecObj VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (r["plate"], r["mjd"], r["fiberID"], r["run2d"], r["survey"], r["class"], r["subClass"],
                 None if math.isnan(r["z"]) else r["z"], r["zWarning"], f"{r['specObjID']:020d}")
                for r in self.rows
            ],
        )
        self.fault: Any = None
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: str, ctype: str = "text/plain") -> None:
        data = body.encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        if status == 503:
            h.send_header("Retry-After", "0")
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append({"path": parts.path, **params})
            fault = self.fault
            kind = fault[0] if isinstance(fault, tuple) else fault
            if kind == "503":
                if fault[1] > 0:
                    self.fault = ("503", fault[1] - 1)
                else:
                    kind = None
        if not _PATHS.match(parts.path):
            return self._send(h, 404, "Not Found")
        if kind == "503":
            return self._send(h, 503, "Service Unavailable")
        if kind == "slow":
            time.sleep(fault[1])
        if kind == "html":
            return self._send(
                h, 200, "<html><head><title>SkyServer is down</title></head><body>Sorry</body></html>", "text/html"
            )
        if kind == "error":
            return self._send(h, 200, "ERROR: Incorrect syntax near 'FROM'.")
        sql = params.get("cmd", "")
        if params.get("format", "").lower() != "csv":
            return self._send(h, 400, "only format=csv is supported here")
        if not sql.lstrip().upper().startswith("SELECT"):
            return self._send(h, 400, "ERROR: only SELECT statements are allowed")
        if kind == "wrong-columns":
            sql = "SELECT plate AS objid, z AS ra, z AS dec FROM SpecObj LIMIT 3"
        try:
            with self._lock:
                cur = self.db.execute(to_sqlite(sql))
                header = [d[0] for d in cur.description]
                rows = cur.fetchall()
        except sqlite3.Error as exc:
            return self._send(h, 400, f"ERROR: {exc}")
        out = io.StringIO()
        out.write("#Table1\n")
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        w.writerows(["" if v is None else v for v in row] for row in rows)
        return self._send(h, 200, out.getvalue(), "text/plain; charset=utf-8")
