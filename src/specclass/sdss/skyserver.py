"""Select spectra from the SDSS ``SpecObj`` table through SkyServer's SQL service.

The SQL is built only from validated options (:class:`SpecObjQuery`): class names
from a fixed set, subclasses matching a conservative pattern, integers for TOP and the
plate/MJD ranges. User text is never pasted into SQL.

The request goes to SkyServer's web service (DR10-DR17)::

    GET {skyserver_url}/dr17/SkyServerWS/SearchTools/SqlSearch?cmd=<SQL>&format=csv

or, for DR8 and DR9, to the classic form ``/drNN/en/tools/search/x_sql.asp`` with the
same ``cmd``/``format`` parameters (the URLs used by astroquery's ``SDSS.query_sql``
and SciServer's ``SkyServer.sqlSearch``). The CSV answer starts with a ``#Table1``
line, then a header row, then the rows; :func:`parse_catalog_csv` checks all of it.

The tutorial's four selections are :data:`PRESETS`:

* ``stars``     -- ``class = 'STAR'``, TOP 1000
* ``galaxies``  -- ``class = 'GALAXY' AND (subclass IS NULL OR subclass <> 'AGN')``
* ``qsos``      -- ``class = 'QSO' AND (subclass IS NULL OR subclass <> 'AGN')``
* ``agn``       -- ``subclass = 'AGN'`` (any class; exact match, so 'AGN BROADLINE'
  is *not* AGN -- the tutorial's semantics)

``golden=True`` adds ``zWarning = 0`` (the tutorial's "golden" sample).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import requests
from astropy.table import Table, vstack

from specclass.sdss.config import SDSSConfig, conf, parse_release
from specclass.sdss.sas import decode_text, parse_ids, parse_run2d

log = logging.getLogger(__name__)

#: The pipeline classes of SpecObj.CLASS.
CLASSES: tuple[str, ...] = ("STAR", "GALAXY", "QSO")

#: Columns of a catalog, in order, with their dtype.
CATALOG_COLUMNS: dict[str, type] = {
    "plate": int,
    "mjd": int,
    "fiberid": int,
    "run2d": str,
    "survey": str,
    "class": str,
    "subclass": str,
    "z": float,
    "zwarning": int,
    "specobjid": int,
}

#: Columns a catalog given to ``download`` must have (the rest are optional).
REQUIRED_COLUMNS: tuple[str, ...] = ("plate", "mjd", "fiberid", "run2d")

#: Allowed subclass text: letters, digits, space and ``. + ( ) / _``; no quotes.
SUBCLASS_RE = re.compile(r"^[A-Za-z0-9 .+()/_]{1,40}$")

#: Largest TOP accepted (SkyServer's SqlSearch returns at most 500,000 rows).
MAX_TOP = 500_000

_SELECT = (
    "s.plate AS plate, s.mjd AS mjd, s.fiberID AS fiberid, s.run2d AS run2d, "
    "s.survey AS survey, s.class, s.subClass AS subclass, s.z AS z, "
    "s.zWarning AS zwarning, s.specObjID AS specobjid"
)


class SkyServerError(RuntimeError):
    """SkyServer answered with an error, an HTML page, or a table of the wrong shape."""


class EmptyResultError(SkyServerError):
    """The query ran but no spectrum matched."""


def _upper_tuple(name: str, values: Iterable[str] | str | None, allowed: Sequence[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        text = decode_text(v).upper()
        if allowed is not None:
            if text not in allowed:
                raise ValueError(f"{name}: {v!r} is not allowed; choose from {', '.join(allowed)}")
        elif not SUBCLASS_RE.match(text):
            raise ValueError(
                f"{name}: {v!r} is not a valid SDSS subclass (letters, digits, space and "
                ". + ( ) / _ only, at most 40 characters)"
            )
        if text not in out:
            out.append(text)
    return tuple(out)


def _range(name: str, value: Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        lo, hi = (int(decode_text(v)) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two integers (min, max), got {value!r}") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"{name} must satisfy 0 <= min <= max, got {lo}..{hi}")
    return (lo, hi)


@dataclass(frozen=True)
class SpecObjQuery:
    """A validated selection of SpecObj rows; :meth:`sql` renders it.

    Attributes:
        classes: keep these CLASS values (``STAR``/``GALAXY``/``QSO``); empty = any.
        exclude_classes: drop these CLASS values.
        subclasses: keep rows whose SUBCLASS equals one of these (exact match).
        exclude_subclasses: drop rows whose SUBCLASS equals one of these (rows with
            a NULL subclass are kept).
        golden: keep only ``zWarning = 0``.
        top: at most this many rows (``SELECT TOP n``), 1..500000; None = no limit.
        plate_range, mjd_range: inclusive ``(min, max)`` or None.
        data_release: 8..17.
        label: free name carried along for messages and catalogs (never put in SQL).

    Raises:
        ValueError: naming the option, the value and what is allowed.
    """

    classes: tuple[str, ...] = ()
    exclude_classes: tuple[str, ...] = ()
    subclasses: tuple[str, ...] = ()
    exclude_subclasses: tuple[str, ...] = ()
    golden: bool = False
    top: int | None = None
    plate_range: tuple[int, int] | None = None
    mjd_range: tuple[int, int] | None = None
    data_release: int = 17
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("classes", _upper_tuple("classes", self.classes, CLASSES))
        set_("exclude_classes", _upper_tuple("exclude_classes", self.exclude_classes, CLASSES))
        set_("subclasses", _upper_tuple("subclasses", self.subclasses, None))
        set_("exclude_subclasses", _upper_tuple("exclude_subclasses", self.exclude_subclasses, None))
        both = set(self.classes) & set(self.exclude_classes)
        if both:
            raise ValueError(f"class {sorted(both)} is both included and excluded")
        both = set(self.subclasses) & set(self.exclude_subclasses)
        if both:
            raise ValueError(f"subclass {sorted(both)} is both included and excluded")
        set_("golden", bool(self.golden))
        if self.top is not None:
            text = decode_text(self.top)
            if not text.isdigit() or not 1 <= int(text) <= MAX_TOP:
                raise ValueError(f"top must be an integer in 1..{MAX_TOP}, got {self.top!r}")
            set_("top", int(text))
        set_("plate_range", _range("plate_range", self.plate_range))
        set_("mjd_range", _range("mjd_range", self.mjd_range))
        set_("data_release", parse_release(self.data_release))

    def where(self) -> list[str]:
        """The WHERE conditions, one string each (joined with AND by :meth:`sql`)."""
        quote = lambda vs: ", ".join(f"'{v}'" for v in vs)  # noqa: E731  (validated values only)
        cond: list[str] = []
        if self.classes:
            cond.append(f"s.class IN ({quote(self.classes)})")
        if self.exclude_classes:
            cond.append(f"s.class NOT IN ({quote(self.exclude_classes)})")
        if self.subclasses:
            cond.append(f"s.subClass IN ({quote(self.subclasses)})")
        if self.exclude_subclasses:
            cond.append(f"(s.subClass IS NULL OR s.subClass NOT IN ({quote(self.exclude_subclasses)}))")
        if self.golden:
            cond.append("s.zWarning = 0")
        if self.plate_range:
            cond.append(f"s.plate BETWEEN {self.plate_range[0]:d} AND {self.plate_range[1]:d}")
        if self.mjd_range:
            cond.append(f"s.mjd BETWEEN {self.mjd_range[0]:d} AND {self.mjd_range[1]:d}")
        return cond

    def sql(self) -> str:
        """The SQL statement (one line, SQL Server dialect, ordered by specObjID)."""
        top = f"TOP {self.top:d} " if self.top else ""
        where = self.where()
        text = f"SELECT {top}{_SELECT} FROM SpecObj AS s"
        if where:
            text += " WHERE " + " AND ".join(where)
        return text + " ORDER BY s.specObjID"

    def describe(self) -> str:
        """Short human description for messages ('class QSO, zWarning = 0, TOP 5, DR17')."""
        parts = [p for p in self.where()] or ["all SpecObj rows"]
        if self.top:
            parts.append(f"TOP {self.top}")
        parts.append(f"DR{self.data_release}")
        return (f"{self.label}: " if self.label else "") + ", ".join(parts)


#: The tutorial's four selections (see module docstring). ``top`` is the tutorial's 1000.
PRESETS: dict[str, dict[str, Any]] = {
    "stars": dict(classes=("STAR",), label="STAR"),
    "galaxies": dict(classes=("GALAXY",), exclude_subclasses=("AGN",), label="GALAXY"),
    "qsos": dict(classes=("QSO",), exclude_subclasses=("AGN",), label="QSO"),
    "agn": dict(subclasses=("AGN",), label="AGN"),
}

#: seed4 label name -> preset.
LABEL_PRESETS: dict[str, str] = {"STAR": "stars", "GALAXY": "galaxies", "QSO": "qsos", "AGN": "agn"}


def preset_query(name: str, top: int | None = 1000, **changes: Any) -> SpecObjQuery:
    """Build one of :data:`PRESETS` (``stars``, ``galaxies``, ``qsos``, ``agn``), with
    ``top`` and any other :class:`SpecObjQuery` field overridden.

    Raises:
        ValueError: for an unknown preset name (lists the valid ones) or a bad field.
    """
    key = decode_text(name).lower()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    kwargs = dict(PRESETS[key])
    kwargs.update(changes)
    return SpecObjQuery(top=top, **kwargs)


@dataclass(frozen=True)
class SQLRequest:
    """A request that can be printed (dry run) or sent.

    Attributes:
        url: endpoint URL without the query string.
        params: ``{'cmd': SQL, 'format': 'csv'}`` (plus ``searchtool`` where needed).
    """

    url: str
    params: dict[str, str]

    @property
    def sql(self) -> str:
        return self.params["cmd"]

    def full_url(self) -> str:
        """The GET URL with the encoded query string (what would be sent)."""
        return requests.Request("GET", self.url, params=self.params).prepare().url or self.url


def endpoint_url(data_release: int | str, config: SDSSConfig | None = None) -> str:
    """SQL endpoint for a release: ``SkyServerWS/SearchTools/SqlSearch`` for DR10+, the
    classic ``en/tools/search/x_sql.asp`` for DR8/DR9."""
    cfg = config or conf
    dr = parse_release(data_release)
    if dr >= 10:
        return f"{cfg.skyserver_url}/dr{dr}/SkyServerWS/SearchTools/SqlSearch"
    return f"{cfg.skyserver_url}/dr{dr}/en/tools/search/x_sql.asp"


def build_request(query: SpecObjQuery, config: SDSSConfig | None = None) -> SQLRequest:
    """The request for ``query`` without sending it (astroquery's ``get_query_payload``)."""
    return SQLRequest(url=endpoint_url(query.data_release, config), params={"cmd": query.sql(), "format": "csv"})


def _looks_like_html(text: str, content_type: str) -> bool:
    head = text.lstrip()[:200].lower()
    return "html" in content_type.lower() or head.startswith(("<!doctype", "<html", "<?xml", "<"))


def _html_title(text: str) -> str:
    m = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    return " ".join(m.group(1).split())[:120] if m else text.strip()[:120].replace("\n", " ")


def parse_catalog_csv(text: str, source: str = "SkyServer answer", content_type: str = "") -> Table:
    """Parse SkyServer's CSV (``#Table1`` line, header, rows) into a catalog table.

    Args:
        text: the body of the answer.
        source: what to call it in error messages (URL or file name).
        content_type: the HTTP ``Content-Type``, used to spot HTML pages.

    Returns:
        ``astropy.table.Table`` with exactly :data:`CATALOG_COLUMNS` (lower-case names;
        int64 plate/mjd/fiberid/zwarning, int64/uint64 specobjid, float64 z, str others).
        Empty tables are returned as such (callers decide if that is an error).

    Raises:
        SkyServerError: HTML instead of CSV, an error message, more than one table, a
            missing/unexpected column, or a value that does not parse (the message names
            the row and column).
    """
    if _looks_like_html(text, content_type):
        raise SkyServerError(f"{source}: got an HTML page instead of CSV ({_html_title(text)!r})")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tables = [ln for ln in lines if ln.startswith("#Table")]
    if len(tables) > 1:
        raise SkyServerError(f"{source}: answer holds {len(tables)} tables, expected one")
    body = [ln for ln in lines if not ln.startswith("#")]
    if not body:
        raise SkyServerError(f"{source}: answer is empty (no header row)")
    first = body[0].strip().lower()
    if first.startswith("error") or "error_message" in text.lower() or first.startswith("exception"):
        raise SkyServerError(f"{source}: server reported an error: {' '.join(body)[:300]}")
    reader = csv.reader(io.StringIO("\n".join(body)))
    header = [h.strip().lower() for h in next(reader)]
    expected = list(CATALOG_COLUMNS)
    if sorted(header) != sorted(expected):
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        raise SkyServerError(
            f"{source}: wrong columns (missing {missing or 'none'}, unexpected {extra or 'none'}); "
            f"got {header}"
        )
    rows = list(reader)
    cols: dict[str, list[Any]] = {c: [] for c in expected}
    for i, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise SkyServerError(f"{source}: row {i} has {len(row)} fields, header has {len(header)}")
        for name, raw in zip(header, row):
            cols[name].append(_convert(name, raw, source, i))
    return _make_table(cols)


def _convert(name: str, raw: str, source: str, row: int) -> Any:
    kind = CATALOG_COLUMNS[name]
    raw = raw.strip()
    try:
        if kind is int:
            if raw == "" and name == "zwarning":
                return -1
            return int(float(raw)) if name != "specobjid" else int(raw)
        if kind is float:
            return float(raw) if raw not in ("", "null", "NULL") else float("nan")
        if name == "run2d":
            return parse_run2d(raw)
        if name in ("class", "subclass"):
            return raw.upper() if raw.lower() != "null" else ""
        return raw
    except ValueError as exc:
        raise SkyServerError(f"{source}: row {row}, column {name!r}: bad value {raw!r} ({exc})") from None


def _make_table(cols: dict[str, list[Any]]) -> Table:
    t = Table()
    for name, kind in CATALOG_COLUMNS.items():
        values = cols[name]
        if name == "specobjid":
            big = any(v > np.iinfo(np.int64).max for v in values)
            t[name] = np.array(values, dtype=np.uint64 if big else np.int64)
        elif kind is int:
            t[name] = np.array(values, dtype=np.int64)
        elif kind is float:
            t[name] = np.array(values, dtype=np.float64)
        else:
            t[name] = np.array(values, dtype=str) if values else np.array([], dtype="U1")
    return t


def _retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def send(request: SQLRequest, config: SDSSConfig | None = None, session: requests.Session | None = None) -> requests.Response:
    """Send ``request``; retry HTTP 5xx/429, timeouts and connection errors with backoff.

    Raises:
        SkyServerError: after the last retry, or at once for other HTTP errors
            (the message has the status, reason and the start of the body).
    """
    cfg = config or conf
    sess = session or requests.Session()
    headers = {"User-Agent": cfg.user_agent}
    last = ""
    for attempt in range(cfg.retries + 1):
        response = None
        try:
            response = sess.get(request.url, params=request.params, timeout=cfg.timeout, headers=headers)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code} {response.reason}: {response.text.strip()[:200]!r}"
            if response.status_code < 500 and response.status_code != 429:
                raise SkyServerError(f"{request.url}: {last}")
        except (requests.Timeout, requests.ConnectionError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < cfg.retries:
            delay = cfg.retry_delay(attempt, _retry_after(response))
            log.warning("SkyServer attempt %d failed (%s); retrying in %.1f s", attempt + 1, last, delay)
            time.sleep(delay)
    raise SkyServerError(f"{request.url}: gave up after {cfg.retries + 1} attempts; last error: {last}")


def run_query(
    query: SpecObjQuery,
    config: SDSSConfig | None = None,
    session: requests.Session | None = None,
    allow_empty: bool = False,
) -> Table:
    """Run ``query`` on SkyServer and return the catalog (see :func:`parse_catalog_csv`).

    The table's ``meta`` holds ``sql``, ``url``, ``data_release`` and ``label``.

    Raises:
        EmptyResultError: no row matched (unless ``allow_empty``); the message repeats
            the selection.
        SkyServerError: see :func:`send` and :func:`parse_catalog_csv`.
    """
    request = build_request(query, config)
    response = send(request, config, session)
    table = parse_catalog_csv(response.text, source=request.url, content_type=response.headers.get("Content-Type", ""))
    if len(table) == 0 and not allow_empty:
        raise EmptyResultError(f"no spectra match the selection ({query.describe()})")
    table.meta.update(sql=query.sql(), url=request.url, data_release=query.data_release, label=query.label)
    return table


def combine(tables: Sequence[Table], labels: Sequence[str] | None = None) -> Table:
    """Stack catalogs, dropping repeats of one plate-mjd-fiber (first one wins).

    With ``labels`` (one per table) a ``label`` column records which selection a row
    came from (e.g. the seed4 class).
    """
    parts = []
    for i, t in enumerate(tables):
        t = t.copy(copy_data=True)
        if labels is not None:
            t["label"] = np.array([labels[i]] * len(t), dtype=str) if len(t) else np.array([], dtype="U1")
        parts.append(t)
    if not parts:
        raise ValueError("nothing to combine")
    out = vstack(parts, join_type="exact", metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    seen: set[tuple[int, int, int]] = set()
    keep = []
    for row in out:
        key = (int(row["plate"]), int(row["mjd"]), int(row["fiberid"]))
        keep.append(key not in seen)
        seen.add(key)
    out = out[np.array(keep, dtype=bool)] if len(out) else out
    out.meta.clear()
    return out


def write_catalog(table: Table, path: str | os.PathLike) -> Path:
    """Write a catalog as CSV atomically (temp file in the same folder, then rename).

    Raises:
        EmptyResultError: for an empty table (no empty files are written).
    """
    path = Path(path)
    if len(table) == 0:
        raise EmptyResultError(f"{path}: refusing to write an empty catalog")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            t = table.copy(copy_data=False)
            t.meta.clear()
            t.write(fh, format="ascii.csv")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_catalog(path: str | os.PathLike) -> Table:
    """Read a catalog CSV written by :func:`write_catalog`, by SkyServer (``#Table1``
    first line) or by hand. Column names are matched case-insensitively.

    Returns:
        Table with at least :data:`REQUIRED_COLUMNS`; ``plate``/``mjd``/``fiberid`` as
        int64, ``run2d`` as validated str.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: an empty file, a missing column, or a bad value (the message names
            the file, the row number and the column). Rows are counted as in every catalog
            message (SkyServer answers, ``sdss download``): data rows from 1, the header,
            blank and ``#`` lines not counted.
    """
    path = Path(path)
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: catalog is empty")
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: catalog lacks column(s) {missing}; has {header}")
    rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: catalog has a header but no rows")
    cols: dict[str, list[Any]] = {h: [] for h in header}
    for i, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} fields, header has {len(header)}")
        rec = dict(zip(header, row))
        try:
            plate, mjd, fiberid = parse_ids(rec["plate"], rec["mjd"], rec["fiberid"])
            run2d = parse_run2d(rec["run2d"])
        except ValueError as exc:
            raise ValueError(f"{path}: row {i}: {exc}") from None
        for h in header:
            value: Any = rec[h]
            if h == "plate":
                value = plate
            elif h == "mjd":
                value = mjd
            elif h == "fiberid":
                value = fiberid
            elif h == "run2d":
                value = run2d
            cols[h].append(value)
    t = Table()
    for h in header:
        if h in ("plate", "mjd", "fiberid"):
            t[h] = np.array(cols[h], dtype=np.int64)
        elif h == "zwarning":
            t[h] = np.array([int(float(v)) if v.strip() else -1 for v in cols[h]], dtype=np.int64)
        elif h == "z":
            t[h] = np.array([float(v) if v.strip() else np.nan for v in cols[h]], dtype=np.float64)
        else:
            t[h] = np.array([decode_text(v) for v in cols[h]], dtype=str)
    t.meta["path"] = str(path)
    return t


__all__ = [
    "CATALOG_COLUMNS",
    "CLASSES",
    "EmptyResultError",
    "LABEL_PRESETS",
    "PRESETS",
    "SQLRequest",
    "SkyServerError",
    "SpecObjQuery",
    "build_request",
    "combine",
    "endpoint_url",
    "parse_catalog_csv",
    "preset_query",
    "read_catalog",
    "run_query",
    "send",
    "write_catalog",
]
