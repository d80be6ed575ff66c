"""One call from nothing to a dataset file: query, download, build.

:func:`fetch` runs the tutorial's chapter 6.3-6.4 in one step:

1. one SkyServer query per class (the seed4 presets of
   :data:`specclass.sdss.skyserver.LABEL_PRESETS`: STAR, GALAXY without AGN subclass,
   QSO without AGN subclass, AGN), each ``TOP per_class``, optionally golden;
2. the combined catalog is written to ``OUT/catalog.csv`` (with a ``label`` column
   naming the selection a row came from);
3. the spec files are downloaded to ``OUT/spectra/`` (manifest ``OUT/manifest.jsonl``),
   resumably -- running the same command again only fetches what is missing;
4. the dataset is built with :func:`specclass.spectra.build.build_dataset` and saved to
   ``OUT/dataset.h5``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from astropy.table import Table

from specclass.sdss.config import SDSSConfig, conf, parse_release
from specclass.sdss.download import DownloadReport, download_catalog
from specclass.sdss.skyserver import (
    LABEL_PRESETS,
    EmptyResultError,
    SpecObjQuery,
    SQLRequest,
    build_request,
    combine,
    preset_query,
    run_query,
    write_catalog,
)

log = logging.getLogger(__name__)

#: The seed4 classes, in the tutorial's order.
SEED4: tuple[str, ...] = ("STAR", "GALAXY", "QSO", "AGN")


@dataclass
class FetchResult:
    """What :func:`fetch` produced.

    Attributes:
        out_dir: the output folder.
        catalog_path: ``OUT/catalog.csv``.
        catalog: the combined catalog.
        counts: rows found per class label (0 for a class with no match).
        download: the :class:`~specclass.sdss.download.DownloadReport`.
        dataset_path: ``OUT/dataset.h5``, or None when not built.
        build_report: whatever ``build_dataset`` returned as its report.
    """

    out_dir: Path
    catalog_path: Path
    catalog: Table
    counts: dict[str, int]
    download: DownloadReport
    dataset_path: Path | None = None
    build_report: Any = None
    messages: list[str] = field(default_factory=list)


def _queries(
    per_class: int,
    classes: Sequence[str],
    golden: bool,
    data_release: int,
    plate_range: tuple[int, int] | None,
    mjd_range: tuple[int, int] | None,
):
    out = []
    for name in classes:
        key = str(name).strip().upper()
        if key not in LABEL_PRESETS:
            raise ValueError(f"class {name!r} is not one of {', '.join(SEED4)}")
        out.append(
            (
                key,
                preset_query(
                    LABEL_PRESETS[key],
                    top=per_class,
                    golden=golden,
                    data_release=data_release,
                    plate_range=plate_range,
                    mjd_range=mjd_range,
                ),
            )
        )
    return out


def fetch_requests(
    per_class: int,
    classes: Sequence[str] = SEED4,
    golden: bool = False,
    data_release: int | str | None = None,
    plate_range: tuple[int, int] | None = None,
    mjd_range: tuple[int, int] | None = None,
    config: SDSSConfig | None = None,
) -> list[tuple[str, SpecObjQuery, SQLRequest]]:
    """``(class, query, request)`` for each SkyServer request :func:`fetch` would send,
    unsent (dry run)."""
    cfg = config or conf
    dr = parse_release(cfg.data_release if data_release is None else data_release)
    return [(k, q, build_request(q, cfg)) for k, q in _queries(per_class, classes, golden, dr, plate_range, mjd_range)]


def _default_builder() -> Callable[..., Any]:
    try:
        from specclass.spectra.build import build_dataset
    except ImportError as exc:  # the dataset builder is another module of the package
        raise RuntimeError(
            "specclass.spectra.build.build_dataset is not available in this installation "
            f"({exc}); the spectra are downloaded, run again with build=False (--no-build)"
        ) from None
    return build_dataset


def fetch(
    out_dir: str | os.PathLike,
    per_class: int,
    golden: bool = False,
    data_release: int | str | None = None,
    classes: Sequence[str] = SEED4,
    plate_range: tuple[int, int] | None = None,
    mjd_range: tuple[int, int] | None = None,
    lite: bool = True,
    labels: str = "seed4",
    build: bool = True,
    config: SDSSConfig | None = None,
    progress: bool = True,
    builder: Callable[..., Any] | None = None,
) -> FetchResult:
    """Query SkyServer, download the spectra, build and save the dataset.

    Args:
        out_dir: output folder (created); gets catalog.csv, spectra/, manifest.jsonl,
            dataset.h5.
        per_class: TOP n for each class query (1..500000).
        golden: only zWarning = 0.
        data_release: 8..17 or 'drNN' (default ``config.data_release``).
        classes: subset of ``('STAR', 'GALAXY', 'QSO', 'AGN')``.
        plate_range, mjd_range: inclusive (min, max) limits for every query.
        lite: lite (default) or full spec files.
        labels: label scheme passed to ``build_dataset`` ('seed4', 'class3', ...).
        build: build and save the dataset after downloading.
        config: URLs, timeout, retries, backoff, workers.
        progress: progress bars.
        builder: the dataset builder (default ``specclass.spectra.build.build_dataset``,
            called as ``builder(paths, labels=labels, golden=golden)`` and returning
            ``(SpectralDataset, report)``).

    Returns:
        :class:`FetchResult`.

    Raises:
        ValueError: bad options (names the option).
        EmptyResultError: no class matched anything.
        SkyServerError: SkyServer failed after retries.
        RuntimeError: no spectrum could be downloaded, the builder is missing, or the
            build failed (the downloaded files are kept).
    """
    cfg = config or conf
    dr = parse_release(cfg.data_release if data_release is None else data_release)
    build_fn = None
    if build:  # fail on a missing builder or an unknown label scheme before any download
        build_fn = builder or _default_builder()
        if builder is None:
            from specclass.spectra.labels import get_scheme

            get_scheme(labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    messages: list[str] = []
    tables, names, counts = [], [], {}
    for key, query in _queries(per_class, classes, golden, dr, plate_range, mjd_range):
        table = run_query(query, cfg, allow_empty=True)
        counts[key] = len(table)
        if len(table) == 0:
            msg = f"no {key} spectra match ({query.describe()}); continuing without them"
            log.warning(msg)
            messages.append(msg)
            continue
        tables.append(table)
        names.append(key)
    if not tables:
        raise EmptyResultError(f"no spectra match any class {list(classes)} (DR{dr}, golden={golden})")
    catalog = combine(tables, labels=names)
    catalog_path = write_catalog(catalog, out / "catalog.csv")
    report = download_catalog(
        catalog, out / "spectra", cfg, data_release=dr, lite=lite, manifest_path=out / "manifest.jsonl", progress=progress
    )
    result = FetchResult(out, catalog_path, catalog, counts, report, messages=messages)
    if not report.ok_paths:
        raise RuntimeError(f"none of the {len(report.results)} spectra could be downloaded:\n{report.summary()}")
    if build_fn is not None:
        try:
            dataset, build_report = build_fn(report.ok_paths, labels=labels, golden=golden)
            result.dataset_path = Path(dataset.save(out / "dataset.h5"))
        except Exception as exc:
            raise RuntimeError(
                f"building the dataset from the {len(report.ok_paths)} downloaded spectra failed "
                f"({type(exc).__name__}: {exc}); the spectra and the manifest are kept in {out}"
            ) from exc
        result.build_report = build_report
    return result
