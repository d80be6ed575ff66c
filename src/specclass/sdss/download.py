"""Download spec files from the SAS: parallel, resumable, verified, atomic, with a manifest.

For every catalog row (plate, mjd, fiberid, run2d) :func:`download_catalog`

1. names the file itself, ``OUT/spec-PLATE-MJD-FIBER.fits`` (never from anything the
   server sends, so a ``Content-Disposition`` with ``../`` cannot place a file outside
   ``OUT``);
2. skips it when that file already exists and passes :func:`verify_spec_file` (so a
   re-run after a crash or Ctrl-C only fetches what is missing);
3. otherwise streams it to a hidden temp file in ``OUT`` (``.spec-...fits.<pid>.<n>.part``),
   checks the byte count against ``Content-Length``, refuses HTML pages, verifies the
   FITS structure and identity, and only then renames it into place (``os.replace``);
4. retries HTTP 5xx/429, timeouts, dropped connections, bodies cut short and HTML pages
   sent with status 200 (a server's maintenance page is a transient state, like a 503),
   waiting ``config.retry_delay(k)`` between attempts; 404s are not retried;
5. appends one JSON line per file to the manifest (``OUT/manifest.jsonl``): time, run id,
   object, url, path, status (``downloaded``/``present``/``failed``), reason,
   http_status, bytes, sha256, attempts.

One failed file never stops the others; the report lists each failure with its object
and reason. Temp files of runs that were killed are removed at the start of the next run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import requests
from astropy.io import fits
from tqdm.auto import tqdm

from specclass.sdss.config import SDSSConfig, conf
from specclass.sdss.sas import decode_text, parse_ids, spec_filename, spec_url

log = logging.getLogger(__name__)

#: FITS files are sequences of 2880-byte blocks (FITS Standard 4.0, section 3.1).
FITS_BLOCK = 2880

#: Columns HDU 1 (COADD) of a spec file must have (SDSS spec data model).
COADD_COLUMNS: tuple[str, ...] = ("flux", "loglam", "ivar")

_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<n>\d+)\.part$")
_counter = itertools.count()


class FileCheckError(ValueError):
    """A downloaded file is not the expected spec file (message says why)."""


class DownloadError(RuntimeError):
    """One attempt at one file failed; ``retryable`` says whether to try again."""

    def __init__(
        self, reason: str, retryable: bool, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after = retry_after


@dataclass(frozen=True)
class DownloadTask:
    """One file to fetch.

    Attributes:
        key: ``'PLATE-MJD-FIBER'`` zero-padded as in the file name (e.g. '0266-51602-0001').
        url: where to fetch it.
        path: final path inside the output folder.
        ids: ``(plate, mjd, fiberid)`` expected inside the file.
        row: index of the catalog row it came from.
    """

    key: str
    url: str
    path: Path
    ids: tuple[int, int, int]
    row: int = -1


@dataclass
class FileResult:
    """Outcome for one file (one manifest line)."""

    object: str
    url: str
    path: str
    status: str  # 'downloaded' | 'present' | 'failed'
    reason: str = ""
    http_status: int | None = None
    bytes: int = 0
    sha256: str = ""
    attempts: int = 0
    row: int = -1

    @property
    def ok(self) -> bool:
        return self.status in ("downloaded", "present")


@dataclass
class DownloadReport:
    """What :func:`download_catalog` did.

    Attributes:
        out_dir, manifest: where files and the manifest are.
        results: one :class:`FileResult` per catalog row, in catalog order.
        seconds: wall time.
    """

    out_dir: Path
    manifest: Path
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def by_status(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[FileResult]:
        return self.by_status("failed")

    @property
    def ok_paths(self) -> list[Path]:
        """Paths of verified files (downloaded now or already present), catalog order."""
        return [self.out_dir / r.path for r in self.results if r.ok]

    @property
    def bytes_downloaded(self) -> int:
        return sum(r.bytes for r in self.by_status("downloaded"))

    def summary(self) -> str:
        """A few lines for people: counts, bytes, rate, then every failure with its reason."""
        n_dl, n_pr, n_f = (len(self.by_status(s)) for s in ("downloaded", "present", "failed"))
        rate = n_dl / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{len(self.results)} spectra: {n_dl} downloaded, {n_pr} already present (verified), "
            f"{n_f} failed; {self.bytes_downloaded / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({rate:.1f} files/s)",
            f"files in {self.out_dir}, manifest {self.manifest}",
        ]
        lines += [f"FAILED {r.object}: {r.reason} ({r.url})" for r in self.failed]
        return "\n".join(lines)


def object_key(plate: int, mjd: int, fiberid: int) -> str:
    """``'PLATE-MJD-FIBER'`` as in :func:`specclass.sdss.sas.spec_filename`."""
    return spec_filename(plate, mjd, fiberid)[len("spec-") : -len(".fits")]


_STR_RE = re.compile(r"'((?:[^']|'')*)'")
_INT_KEYS = re.compile(r"^(BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|PLATEID|MJD|FIBERID)$")
_STR_KEYS = re.compile(r"^(XTENSION|EXTNAME|TTYPE\d+)$")


def fits_layout(path: str | os.PathLike, max_hdus: int = 1000) -> list[dict[str, Any]]:
    """Walk the HDUs of a FITS file from its headers alone and check it is complete.

    Reads only the header blocks; the data size of each HDU comes from FITS Standard
    4.0, section 4.4.1 (``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)``,
    padded to 2880 bytes). Far cheaper than building astropy header objects for the
    hundreds of columns of a SPECOBJ/SPALL table.

    Returns:
        one dict per HDU with the integer keywords (BITPIX, NAXISn, PCOUNT, GCOUNT,
        TFIELDS, PLATEID, MJD, FIBERID), string keywords (XTENSION, EXTNAME, TTYPEn)
        found, plus ``offset`` and ``end`` (bytes).

    Raises:
        FileCheckError: no END card, a bad keyword value, or data that run past the
            end of the file (truncated) or stop short of it (trailing bytes).
    """
    path = Path(path)
    size = path.stat().st_size
    hdus: list[dict[str, Any]] = []
    pos = 0
    with open(path, "rb") as fh:
        while pos < size and len(hdus) < max_hdus:
            info: dict[str, Any] = {"offset": pos}
            while True:
                block = fh.read(FITS_BLOCK)
                if len(block) < FITS_BLOCK:
                    raise FileCheckError(f"{path.name}: header of HDU {len(hdus)} has no END card (truncated?)")
                pos += FITS_BLOCK
                done = False
                for i in range(0, FITS_BLOCK, 80):
                    card = block[i : i + 80]
                    key = card[:8].decode("ascii", "replace").strip()
                    if key == "END":
                        done = True
                        break
                    if card[8:10] != b"= ":
                        continue
                    raw = card[10:].decode("ascii", "replace")
                    if _INT_KEYS.match(key):
                        text = raw.split("/", 1)[0].strip()
                        try:
                            info[key] = int(float(text)) if text not in ("", "T", "F") else text
                        except ValueError:
                            raise FileCheckError(f"{path.name}: HDU {len(hdus)} keyword {key} = {text!r}") from None
                    elif _STR_KEYS.match(key):
                        m = _STR_RE.search(raw)
                        info[key] = m.group(1).replace("''", "'").strip() if m else raw.split("/", 1)[0].strip()
                if done:
                    break
            naxis = int(info.get("NAXIS", 0))
            count = 0
            if naxis:
                count = 1
                for k in range(1, naxis + 1):
                    count *= int(info.get(f"NAXIS{k}", 0))
            nbytes = abs(int(info.get("BITPIX", 8))) // 8 * int(info.get("GCOUNT", 1)) * (int(info.get("PCOUNT", 0)) + count)
            pos += -(-nbytes // FITS_BLOCK) * FITS_BLOCK
            info["end"] = pos
            hdus.append(info)
            if pos > size:
                raise FileCheckError(
                    f"{path.name}: HDU {len(hdus) - 1} needs bytes up to {pos}, file has {size} (truncated)"
                )
            fh.seek(pos)
    return hdus


def verify_spec_file(path: str | os.PathLike, expected: tuple[int, int, int] | None = None) -> None:
    """Check that ``path`` is a complete SDSS spec file (lite or full).

    Checks, cheapest first: size is a whole number of 2880-byte FITS blocks and the file
    starts with ``SIMPLE  =``; the HDUs described by the headers fill the file exactly
    (:func:`fits_layout`, catches truncation); there are at least 3 HDUs; HDU 1 is a
    binary table with ``flux``, ``loglam``, ``ivar`` and astropy reads those arrays;
    HDU 2 (SPECOBJ/SPALL; the EXTNAME may be missing) is a binary table with rows.
    With ``expected = (plate, mjd, fiberid)`` the spectrum's identity must match: from
    the primary header's PLATEID/MJD/FIBERID, or else from HDU 2's first row.

    Raises:
        FileCheckError: with the file name and the reason.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % FITS_BLOCK:
        raise FileCheckError(f"{path.name}: {size} bytes is not a whole number of 2880-byte FITS blocks (truncated?)")
    with open(path, "rb") as fh:
        head = fh.read(80)
    if not head.startswith(b"SIMPLE  ="):
        raise FileCheckError(f"{path.name}: not a FITS file (starts with {head[:20]!r})")
    hdus = fits_layout(path)
    if len(hdus) < 3:
        raise FileCheckError(f"{path.name}: has {len(hdus)} HDUs, a spec file has at least 3")
    if hdus[-1]["end"] != size:
        raise FileCheckError(f"{path.name}: {size - hdus[-1]['end']} bytes after the last HDU")
    for i, what in ((1, "the COADD table"), (2, "a SPECOBJ/SPALL table")):
        if hdus[i].get("XTENSION") != "BINTABLE":
            raise FileCheckError(f"{path.name}: HDU {i} is {hdus[i].get('XTENSION', 'not an extension')}, expected {what}")
    names = {str(v).lower() for k, v in hdus[1].items() if k.startswith("TTYPE")}
    missing = [c for c in COADD_COLUMNS if c not in names]
    if missing:
        raise FileCheckError(f"{path.name}: HDU 1 lacks column(s) {missing}")
    if int(hdus[2].get("NAXIS2", 0)) < 1:
        raise FileCheckError(f"{path.name}: HDU 2 (SPECOBJ/SPALL) has no rows")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy warns on damaged data; make it fatal
            with fits.open(path, memmap=False) as hdul:
                coadd = hdul[1].data
                for c in COADD_COLUMNS:
                    _ = coadd[c]
                got = None
                if expected is not None:
                    primary = hdus[0]
                    if all(isinstance(primary.get(k), int) for k in ("PLATEID", "MJD", "FIBERID")):
                        got = (primary["PLATEID"], primary["MJD"], primary["FIBERID"])
                    else:
                        table = hdul[2]
                        cols = {n.upper(): n for n in table.columns.names}
                        if all(c in cols for c in ("PLATE", "MJD", "FIBERID")):
                            row = table.data[0]
                            got = tuple(int(row[cols[c]]) for c in ("PLATE", "MJD", "FIBERID"))
    except Exception as exc:  # astropy raises many types for damaged files
        raise FileCheckError(f"{path.name}: astropy cannot read it ({type(exc).__name__}: {exc})") from None
    if expected is not None and got is not None and tuple(got) != tuple(expected):
        raise FileCheckError(f"{path.name}: holds spectrum {object_key(*got)}, expected {object_key(*expected)}")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def make_tasks(
    catalog: Any,
    out_dir: str | os.PathLike,
    data_release: int | str | None = None,
    lite: bool = True,
    config: SDSSConfig | None = None,
) -> tuple[list[DownloadTask], list[FileResult]]:
    """Turn catalog rows into download tasks.

    Args:
        catalog: an astropy Table (or any sequence of mappings) with plate, mjd,
            fiberid, run2d.
        out_dir: output folder; every task's path is ``out_dir/spec-...fits``.

    Returns:
        ``(tasks, failures)``: rows that cannot become a URL (bad identifier, run2d not
        in that release) are failures naming the row and the reason, not exceptions.
        Repeats of one plate-mjd-fiber become one task.
    """
    out = Path(out_dir)
    tasks: list[DownloadTask] = []
    bad: list[FileResult] = []
    seen: set[str] = set()
    for i, row in enumerate(catalog):
        try:
            ids = parse_ids(row["plate"], row["mjd"], row["fiberid"])
            key = object_key(*ids)
            url = spec_url(*ids, decode_text(row["run2d"]), data_release, lite, config)
        except (ValueError, KeyError) as exc:
            label = f"row {i + 1}"
            bad.append(FileResult(object=label, url="", path="", status="failed", reason=f"bad catalog row: {exc}", row=i))
            continue
        if key in seen:
            continue
        seen.add(key)
        path = out / spec_filename(*ids)
        tasks.append(DownloadTask(key=key, url=url, path=path, ids=ids, row=i))
    return tasks, bad


class Manifest:
    """Append-only JSON-lines log of per-file outcomes, safe across threads.

    Each :meth:`write` appends one complete line and flushes it to disk, so a killed
    process leaves at most one incomplete last line, which :func:`read_manifest` skips.
    """

    def __init__(self, path: str | os.PathLike, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:  # end a line cut by a killed run
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def write(self, result: FileResult) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run": self.run_id}
        record.update({k: v for k, v in asdict(result).items() if k != "row"})
        line = (json.dumps(record, sort_keys=False) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def read_manifest(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Latest record per object from a manifest (incomplete lines are skipped)."""
    latest: dict[str, dict[str, Any]] = {}
    p = Path(path)
    if not p.exists():
        return latest
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "object" in rec:
            latest[rec["object"]] = rec
    return latest


def clean_partials(out_dir: str | os.PathLike) -> list[Path]:
    """Remove temp files left in ``out_dir`` by runs that are no longer alive.

    Returns the removed paths. Temp files of a live process (another run in the same
    folder) are kept.
    """
    removed = []
    d = Path(out_dir)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _PART_RE.match(p.name)
        if not m:
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_local = threading.local()


def _session(config: SDSSConfig) -> requests.Session:
    sess = getattr(_local, "session", None)
    if sess is None:
        sess = requests.Session()
        sess.headers["User-Agent"] = config.user_agent
        _local.session = sess
    return sess


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _fetch_once(task: DownloadTask, tmp: Path, config: SDSSConfig) -> tuple[int, str]:
    """One GET of ``task.url`` into ``tmp``. Returns ``(bytes, sha256)``.

    Raises:
        DownloadError: with the reason and whether a retry may help.
    """
    sess = _session(config)
    try:
        with sess.get(task.url, stream=True, timeout=(config.timeout, config.timeout)) as r:
            if r.status_code != 200:
                retryable = r.status_code >= 500 or r.status_code in (408, 429)
                raise DownloadError(f"HTTP {r.status_code} {r.reason or ''}".rstrip(), retryable, r.status_code,
                                    _retry_after(r))
            ctype = r.headers.get("Content-Type", "")
            declared = r.headers.get("Content-Length")
            encoded = bool(r.headers.get("Content-Encoding", "").strip() not in ("", "identity"))
            h = hashlib.sha256()
            n = 0
            with open(tmp, "wb") as fh:
                for chunk in r.iter_content(chunk_size=config.chunk_size):
                    if n == 0 and chunk:
                        start = chunk.lstrip()[:256].lower()
                        if "text/html" in ctype.lower() or start.startswith((b"<!doctype", b"<html", b"<")):
                            title = re.search(rb"<title[^>]*>(.*?)</title>", chunk, re.I | re.S)
                            what = title.group(1).decode(errors="replace").strip()[:80] if title else ctype
                            # a maintenance/error page served with 200 is transient on real servers: retry
                            raise DownloadError(f"server sent an HTML page, not FITS{_detail(repr(what) if what else '')}",
                                                True, 200, _retry_after(r))
                    fh.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if declared is not None and not encoded and declared.isdigit() and n != int(declared):
                raise DownloadError(f"body cut short: got {n} of {declared} bytes (Content-Length)", True, 200)
            return n, h.hexdigest()
    except DownloadError:
        raise
    except requests.exceptions.ChunkedEncodingError as exc:
        m = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", str(exc))
        if m:
            got, more = int(m.group(1)), int(m.group(2))
            raise DownloadError(
                f"body cut short: got {got} of {got + more} bytes (Content-Length), connection closed", True, 200
            ) from None
        raise DownloadError(f"connection broken mid-body{_detail(_short(exc))}", True) from None
    except (requests.Timeout, requests.exceptions.ReadTimeout) as exc:
        raise DownloadError(f"timed out after {config.timeout:g} s without data{_detail(_short(exc))}", True) from None
    except requests.ConnectionError as exc:
        text = _short(exc)
        if "timed out" in text.lower():
            raise DownloadError(f"timed out after {config.timeout:g} s without data{_detail(text)}", True) from None
        raise DownloadError(f"connection error{_detail(text)}", True) from None
    except requests.RequestException as exc:
        raise DownloadError(f"request failed{_detail(_short(exc))}", False) from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"(Read timed out[^)']*|IncompleteRead\([^)]*\)|Connection refused|Connection reset[^)']*)", text)
    return (m.group(1) if m else text)[:160]


def _detail(text: str) -> str:
    """``" (text)"`` with balanced parentheses, or ``""`` for empty text (never ``()``).

    Exception texts cut to a length (:func:`_short`) can stop inside a nested ``(...)``;
    unmatched ``)`` are dropped and open ``(`` closed, so messages stay readable.
    """
    text = text.strip()
    if not text:
        return ""
    out, depth = [], 0
    for ch in text:
        if ch == ")":
            if not depth:
                continue
            depth -= 1
        elif ch == "(":
            depth += 1
        out.append(ch)
    return " (" + "".join(out) + ")" * depth + ")"


def download_one(task: DownloadTask, config: SDSSConfig | None = None, manifest: Manifest | None = None) -> FileResult:
    """Fetch one file (or accept the verified copy already there); never raises for
    network or content problems -- they come back as a ``failed`` result."""
    cfg = config or conf
    out_dir = task.path.parent
    if task.path.name != spec_filename(*task.ids) or out_dir.resolve() != task.path.resolve().parent:
        raise ValueError(f"refusing to write {task.path}: not a spec file name inside the output folder")
    result = FileResult(object=task.key, url=task.url, path=task.path.name, status="failed", row=task.row)
    if task.path.exists():
        try:
            verify_spec_file(task.path, task.ids)
            result.status, result.bytes, result.sha256 = "present", task.path.stat().st_size, sha256_of(task.path)
            result.reason = "verified copy already present"
        except FileCheckError as exc:
            log.warning("%s: existing file fails verification (%s); downloading it again", task.key, exc)
            task.path.unlink(missing_ok=True)
    if result.status != "present":
        tmp = out_dir / f".{task.path.name}.{os.getpid()}.{next(_counter)}.part"
        try:
            for attempt in range(cfg.retries + 1):
                result.attempts = attempt + 1
                try:
                    n, digest = _fetch_once(task, tmp, cfg)
                    try:
                        verify_spec_file(tmp, task.ids)
                    except FileCheckError as exc:
                        reason = str(exc).replace(tmp.name, task.path.name)
                        raise DownloadError(f"downloaded file failed verification: {reason}", "truncated" in reason, 200) from None
                    os.replace(tmp, task.path)
                    result.status, result.bytes, result.sha256 = "downloaded", n, digest
                    result.reason, result.http_status = "", 200
                    break
                except DownloadError as exc:
                    result.reason, result.http_status = exc.reason, exc.http_status
                    tmp.unlink(missing_ok=True)
                    if not exc.retryable or attempt == cfg.retries:
                        if exc.retryable and cfg.retries:
                            result.reason += f" (gave up after {attempt + 1} attempts)"
                        break
                    delay = cfg.retry_delay(attempt, exc.retry_after)
                    log.info("%s: %s; retry %d in %.2f s", task.key, exc.reason, attempt + 1, delay)
                    time.sleep(delay)
        finally:
            tmp.unlink(missing_ok=True)
    if manifest is not None:
        manifest.write(result)
    return result


def download_catalog(
    catalog: Any,
    out_dir: str | os.PathLike,
    config: SDSSConfig | None = None,
    data_release: int | str | None = None,
    lite: bool = True,
    manifest_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> DownloadReport:
    """Download every spectrum of ``catalog`` into ``out_dir`` (see module docstring).

    Args:
        catalog: astropy Table / sequence of mappings with plate, mjd, fiberid, run2d.
        out_dir: folder for the spec files (created if needed).
        config: URLs, timeout, retries, backoff, workers (default :data:`conf`).
        data_release: SAS release to fetch from (default ``config.data_release``).
        lite: lite files (coadd only, default) or full files.
        manifest_path: default ``out_dir/manifest.jsonl``.
        progress: show a tqdm progress bar on stderr.

    Returns:
        :class:`DownloadReport` with one result per distinct catalog spectrum.
    """
    cfg = config or conf
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in clean_partials(out):
        log.info("removed temp file of an interrupted run: %s", p.name)
    manifest = Manifest(manifest_path or out / "manifest.jsonl")
    tasks, bad = make_tasks(catalog, out, data_release, lite, cfg)
    report = DownloadReport(out_dir=out, manifest=manifest.path)
    for r in bad:
        manifest.write(r)
    t0 = time.perf_counter()
    results: dict[str, FileResult] = {}
    bar = tqdm(total=len(tasks), unit="file", desc="download", disable=not progress, leave=False)
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="sdss-dl")
    try:
        futures = {pool.submit(download_one, t, cfg, manifest): t for t in tasks}
        for fut in as_completed(futures):
            task = futures[fut]
            res = fut.result()
            results[task.key] = res
            bar.update(1)
            if not res.ok and progress:
                bar.write(f"failed {task.key}: {res.reason}")
    except BaseException:
        # Ctrl-C: start nothing new; files in flight finish (verified + renamed) or
        # remove their temp file, so the next run resumes cleanly
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    report.seconds = time.perf_counter() - t0
    report.results = sorted(list(results.values()) + bad, key=lambda r: r.row)
    return report


def catalog_keys(catalog: Iterable[Any]) -> Sequence[str]:
    """Object keys ('PLATE-MJD-FIBER') of a catalog's rows, in order."""
    return [object_key(*parse_ids(r["plate"], r["mjd"], r["fiberid"])) for r in catalog]
