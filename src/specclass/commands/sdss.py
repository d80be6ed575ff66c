"""``specclass sdss query|urls|download|fetch``: get spectra from SDSS.

Thin wrappers over :mod:`specclass.sdss.skyserver`, :mod:`specclass.sdss.sas`,
:mod:`specclass.sdss.download` and :mod:`specclass.sdss.fetch`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specclass.cli import CLIError
from specclass.commands.argtypes import positive_int

# Kept here so that building the parser (``specclass --help``) does not import
# astropy/requests; tests check they equal specclass.sdss.skyserver's CLASSES,
# PRESETS and MAX_TOP.
CLASS_CHOICES: tuple[str, ...] = ("STAR", "GALAXY", "QSO")
PRESET_CHOICES: tuple[str, ...] = ("stars", "galaxies", "qsos", "agn")
SEED4_CHOICES: tuple[str, ...] = ("STAR", "GALAXY", "QSO", "AGN")
MAX_TOP = 500_000

_EPILOG_QUERY = """\
presets (the tutorial's four selections):
  stars     class = 'STAR'
  galaxies  class = 'GALAXY' and subclass <> 'AGN'
  qsos      class = 'QSO' and subclass <> 'AGN'
  agn       subclass = 'AGN' (exact; 'AGN BROADLINE' is not AGN)

examples:
  specclass sdss query --class QSO --golden --top 5
  specclass sdss query --preset agn --release dr16 --out agn.csv
  specclass sdss query --preset stars --dry-run
"""

_EPILOG_FETCH = """\
writes OUT/catalog.csv, OUT/spectra/spec-*.fits, OUT/manifest.jsonl, OUT/dataset.h5.
Running the same command again resumes: verified files are not downloaded again.

example:
  specclass sdss fetch --per-class 250 --golden --release dr17 --out sdss-run
"""


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _add_release(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--release",
        default=None,
        metavar="DRNN",
        help="SDSS data release, dr8 ... dr17 (default dr17)",
    )


def _add_network(p: argparse.ArgumentParser, sql: bool, sas: bool, workers: bool) -> None:
    g = p.add_argument_group("network")
    if sql:
        g.add_argument(
            "--base-url",
            metavar="URL",
            help="SkyServer root URL (default https://skyserver.sdss.org; env SPECCLASS_SKYSERVER_URL)",
        )
    if sas:
        g.add_argument(
            "--sas-url",
            metavar="URL",
            help="Science Archive Server root that holds drNN/ (default https://data.sdss.org/sas; "
            "env SPECCLASS_SAS_URL)",
        )
    g.add_argument("--timeout", type=_nonneg_float, metavar="S", help="seconds without an answer before a try fails (default 60)")
    g.add_argument("--retries", type=int, metavar="N", help="retries after HTTP 5xx/429, timeouts, cut bodies (default 4)")
    g.add_argument("--backoff", type=_nonneg_float, metavar="S", help="first wait between retries, doubled each time (default 2)")
    if workers:
        g.add_argument("--workers", type=positive_int, metavar="N", help="parallel downloads (default 4, max 64)")


def _add_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--golden", action="store_true", help="only zWarning = 0 (the tutorial's golden sample)")
    g.add_argument("--plate-min", type=int, metavar="P", help="smallest plate")
    g.add_argument("--plate-max", type=int, metavar="P", help="largest plate")
    g.add_argument("--mjd-min", type=int, metavar="MJD", help="earliest MJD")
    g.add_argument("--mjd-max", type=int, metavar="MJD", help="latest MJD")


def _config(args: argparse.Namespace):
    from specclass.sdss.config import conf

    try:
        return conf.replace(
            skyserver_url=getattr(args, "base_url", None),
            sas_url=getattr(args, "sas_url", None),
            timeout=getattr(args, "timeout", None),
            retries=getattr(args, "retries", None),
            backoff=getattr(args, "backoff", None),
            workers=getattr(args, "workers", None),
            data_release=getattr(args, "release", None),
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _ranges(args: argparse.Namespace) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    plate = None
    if args.plate_min is not None or args.plate_max is not None:
        plate = (args.plate_min if args.plate_min is not None else 0, args.plate_max if args.plate_max is not None else 99999)
    mjd = None
    if args.mjd_min is not None or args.mjd_max is not None:
        mjd = (args.mjd_min if args.mjd_min is not None else 0, args.mjd_max if args.mjd_max is not None else 99999)
    return plate, mjd


def _print_request(label: str, request) -> None:
    print(f"# {label}" if label else "# request (not sent)")
    print(f"GET {request.url}")
    for k, v in request.params.items():
        print(f"  {k} = {v}")
    print(f"URL: {request.full_url()}")


# --- query ---------------------------------------------------------------------------
def cmd_query(args: argparse.Namespace) -> int:
    from specclass.sdss import skyserver as sk

    cfg = _config(args)
    plate, mjd = _ranges(args)
    try:
        changes = dict(
            golden=args.golden, plate_range=plate, mjd_range=mjd, data_release=cfg.data_release
        )
        if args.preset:
            if args.classes or args.subclasses:
                raise ValueError("--preset cannot be combined with --class or --subclass")
            extra = tuple(sk.PRESETS[args.preset].get("exclude_subclasses", ())) + tuple(args.exclude_subclasses or ())
            query = sk.preset_query(
                args.preset,
                top=args.top,
                exclude_classes=tuple(args.exclude_classes or ()),
                exclude_subclasses=extra,
                **changes,
            )
        else:
            query = sk.SpecObjQuery(
                classes=tuple(args.classes or ()),
                exclude_classes=tuple(args.exclude_classes or ()),
                subclasses=tuple(args.subclasses or ()),
                exclude_subclasses=tuple(args.exclude_subclasses or ()),
                top=args.top,
                **changes,
            )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    request = sk.build_request(query, cfg)
    if args.dry_run:
        _print_request(query.describe(), request)
        return 0
    try:
        table = sk.run_query(query, cfg)
    except sk.EmptyResultError as exc:
        print(f"specclass sdss query: {exc}; nothing written", file=sys.stderr)
        return 1
    except sk.SkyServerError as exc:
        print(f"specclass sdss query: error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        path = sk.write_catalog(table, args.out)
        print(f"{len(table)} rows -> {path}", file=sys.stderr)
    else:
        t = table.copy(copy_data=False)
        t.meta.clear()
        t.write(sys.stdout, format="ascii.csv")
    return 0


# --- urls ----------------------------------------------------------------------------
def _read_catalog(path: str):
    from specclass.sdss.skyserver import read_catalog

    try:
        return read_catalog(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read catalog: {exc}") from None


def cmd_urls(args: argparse.Namespace) -> int:
    from specclass.sdss.download import make_tasks

    cfg = _config(args)
    catalog = _read_catalog(args.catalog)
    tasks, bad = make_tasks(catalog, Path("."), cfg.data_release, not args.full, cfg)
    lines = [t.url for t in tasks]
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"{len(lines)} URLs -> {args.out}", file=sys.stderr)
    else:
        print("\n".join(lines))
    for r in bad:
        print(f"skipped {r.object}: {r.reason}", file=sys.stderr)
    return 1 if bad else 0


# --- download ------------------------------------------------------------------------
def cmd_download(args: argparse.Namespace) -> int:
    from specclass.sdss.download import download_catalog

    cfg = _config(args)
    catalog = _read_catalog(args.catalog)
    report = download_catalog(
        catalog,
        args.out,
        cfg,
        lite=not args.full,
        manifest_path=args.manifest,
        progress=not args.no_progress,
    )
    print(report.summary())
    return 1 if report.failed else 0


# --- fetch ---------------------------------------------------------------------------
def cmd_fetch(args: argparse.Namespace) -> int:
    from specclass.sdss import fetch as fe
    from specclass.sdss.skyserver import EmptyResultError, SkyServerError

    cfg = _config(args)
    plate, mjd = _ranges(args)
    classes = [c.upper() for c in (args.classes or fe.SEED4)]
    try:
        if args.dry_run:
            for _, query, request in fe.fetch_requests(args.per_class, classes, args.golden, cfg.data_release, plate, mjd, cfg):
                _print_request(query.describe(), request)
            print(f"# then download to {Path(args.out) / 'spectra'} and build {Path(args.out) / 'dataset.h5'}")
            return 0
        result = fe.fetch(
            args.out,
            args.per_class,
            golden=args.golden,
            data_release=cfg.data_release,
            classes=classes,
            plate_range=plate,
            mjd_range=mjd,
            lite=not args.full,
            labels=args.labels,
            build=not args.no_build,
            config=cfg,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except (EmptyResultError, SkyServerError, RuntimeError) as exc:
        print(f"specclass sdss fetch: error: {exc}", file=sys.stderr)
        return 1
    for m in result.messages:
        print(f"warning: {m}", file=sys.stderr)
    found = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    print(f"catalog: {len(result.catalog)} spectra ({found}) -> {result.catalog_path}")
    print(result.download.summary())
    if result.dataset_path:
        print(f"dataset: {result.dataset_path}")
        if result.build_report is not None:
            lines = getattr(result.build_report, "summary_lines", None)
            print("\n".join(lines()) if callable(lines) else result.build_report)
    return 1 if result.download.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``specclass sdss ...``."""
    CLASSES, PRESETS = CLASS_CHOICES, PRESET_CHOICES
    sdss = subparsers.add_parser(
        "sdss",
        help="query SkyServer, build SAS URLs, download spectra, fetch a whole dataset",
        description="Get spectra from SDSS: SkyServer SQL, SAS URLs, downloads, one-command fetch.",
    )
    sub = sdss.add_subparsers(dest="sdss_command", metavar="SUBCOMMAND", required=True)

    q = sub.add_parser(
        "query",
        help="select SpecObj rows on SkyServer -> catalog CSV",
        description="Select spectra from SDSS SpecObj through SkyServer SQL; print or save the catalog "
        "(plate, mjd, fiberid, run2d, survey, class, subclass, z, zwarning, specobjid).",
        epilog=_EPILOG_QUERY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--preset", choices=list(PRESETS), help="one of the tutorial's four selections")
    q.add_argument("--class", dest="classes", action="append", type=str.upper, choices=CLASSES, metavar="CLASS",
                   help=f"keep this CLASS ({', '.join(CLASSES)}); repeatable")
    q.add_argument("--exclude-class", dest="exclude_classes", action="append", type=str.upper, choices=CLASSES,
                   metavar="CLASS", help="drop this CLASS; repeatable")
    q.add_argument("--subclass", dest="subclasses", action="append", metavar="SUBCLASS",
                   help="keep rows whose SUBCLASS equals this (exact); repeatable")
    q.add_argument("--exclude-subclass", dest="exclude_subclasses", action="append", metavar="SUBCLASS",
                   help="drop rows whose SUBCLASS equals this (exact); repeatable")
    q.add_argument("--top", type=positive_int, default=1000, metavar="N",
                   help=f"at most N rows (SELECT TOP N), 1..{MAX_TOP} (default 1000)")
    _add_selection(q)
    _add_release(q)
    q.add_argument("--out", metavar="FILE", help="write the catalog CSV here (atomic) instead of stdout")
    q.add_argument("--dry-run", action="store_true", help="print the request (URL, SQL) without sending it")
    _add_network(q, sql=True, sas=False, workers=False)
    q.set_defaults(func=cmd_query)

    u = sub.add_parser(
        "urls",
        help="print the SAS URL of every spectrum in a catalog",
        description="Print the SAS URL of each catalog row (plate, mjd, fiberid, run2d).",
    )
    u.add_argument("catalog", metavar="CATALOG", help="catalog CSV (from `specclass sdss query --out`)")
    _add_release(u)
    u.add_argument("--full", action="store_true", help="full spec files (with exposures) instead of lite")
    u.add_argument("--out", metavar="FILE", help="write the URLs here instead of stdout")
    u.add_argument("--sas-url", metavar="URL", help="SAS root (default https://data.sdss.org/sas)")
    u.set_defaults(func=cmd_urls)

    d = sub.add_parser(
        "download",
        help="download every spectrum of a catalog (parallel, resumable, verified)",
        description="Download the spec files of a catalog into DIR: parallel, resumable (verified files "
        "are skipped), atomic (temp file, FITS check, rename), retried with backoff; every outcome "
        "goes to the manifest (JSON lines). Exit code 1 if any file failed.",
    )
    d.add_argument("catalog", metavar="CATALOG", help="catalog CSV with plate, mjd, fiberid, run2d")
    d.add_argument("--out", required=True, metavar="DIR", help="folder for spec-PLATE-MJD-FIBER.fits files")
    _add_release(d)
    d.add_argument("--full", action="store_true", help="full spec files (with exposures) instead of lite")
    d.add_argument("--manifest", metavar="FILE", help="manifest path (default DIR/manifest.jsonl)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_network(d, sql=False, sas=True, workers=True)
    d.set_defaults(func=cmd_download)

    f = sub.add_parser(
        "fetch",
        help="query + download + build the dataset, in one command",
        description="Query SkyServer for each class (the tutorial's four selections), download the "
        "spectra and build the dataset file: the tutorial's chapter 6.3-6.4 in one command.",
        epilog=_EPILOG_FETCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--per-class", type=positive_int, required=True, metavar="N",
                   help=f"spectra per class (SELECT TOP N each), 1..{MAX_TOP}")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder")
    f.add_argument("--classes", nargs="+", type=str.upper, choices=SEED4_CHOICES, metavar="CLASS",
                   help="subset of STAR GALAXY QSO AGN (default all four)")
    _add_selection(f)
    _add_release(f)
    f.add_argument("--full", action="store_true", help="full spec files (with exposures) instead of lite")
    f.add_argument("--labels", default="seed4", metavar="SCHEME",
                   help="label scheme for the dataset: seed4 (default), class3, ...")
    f.add_argument("--no-build", action="store_true", help="stop after downloading (no dataset.h5)")
    f.add_argument("--dry-run", action="store_true", help="print the SkyServer requests without sending them")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_network(f, sql=True, sas=True, workers=True)
    f.set_defaults(func=cmd_fetch)
