"""SAS paths and URLs against real published paths."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from specclass.sdss.config import SDSSConfig
from specclass.sdss.sas import parse_ids, parse_run2d, spec_filename, spec_path, spec_url

# Real SAS paths, as published in SDSS documentation and used in public code.
KNOWN = [
    # DR17 eBOSS full (BOSS/eBOSS run2d v5_13_2; full files under spectra/full since DR16)
    ((3586, 55181, 890, "v5_13_2", 17, False), "dr17/eboss/spectro/redux/v5_13_2/spectra/full/3586/spec-3586-55181-0890.fits"),
    ((3586, 55181, 16, "v5_13_2", 17, False), "dr17/eboss/spectro/redux/v5_13_2/spectra/full/3586/spec-3586-55181-0016.fits"),
    # DR17 SDSS-I/II lite
    ((2488, 54149, 1, "26", 17, True), "dr17/sdss/spectro/redux/26/spectra/lite/2488/spec-2488-54149-0001.fits"),
    ((266, 51602, 1, "26", 17, True), "dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits"),
    ((1198, 52669, 40, "26", 17, True), "dr17/sdss/spectro/redux/26/spectra/lite/1198/spec-1198-52669-0040.fits"),
    # DR16
    ((1887, 53239, 253, "26", 16, True), "dr16/sdss/spectro/redux/26/spectra/lite/1887/spec-1887-53239-0253.fits"),
    ((3586, 55181, 756, "v5_13_0", 16, True), "dr16/eboss/spectro/redux/v5_13_0/spectra/lite/3586/spec-3586-55181-0756.fits"),
    ((7399, 57162, 376, "v5_13_0", 16, True), "dr16/eboss/spectro/redux/v5_13_0/spectra/lite/7399/spec-7399-57162-0376.fits"),
    # DR12 BOSS lite
    ((3586, 55181, 190, "v5_7_0", 12, True), "dr12/boss/spectro/redux/v5_7_0/spectra/lite/3586/spec-3586-55181-0190.fits"),
    # DR8 SDSS-I/II full (DR8 has no lite files)
    ((266, 51602, 1, "26", 8, False), "dr8/sdss/spectro/redux/26/spectra/0266/spec-0266-51602-0001.fits"),
    # SEGUE plates (run2d 103/104) live under sdss/
    ((2895, 54567, 346, "104", 17, True), "dr17/sdss/spectro/redux/104/spectra/lite/2895/spec-2895-54567-0346.fits"),
]


@pytest.mark.parametrize("args,expected", KNOWN)
def test_known_real_paths(args, expected):
    assert spec_path(*args) == expected


def test_five_digit_plates_are_not_truncated():
    path = spec_path(10000, 57346, 2, "v5_13_2", 17, lite=False)
    assert path == "dr17/eboss/spectro/redux/v5_13_2/spectra/full/10000/spec-10000-57346-0002.fits"
    assert spec_filename(11109, 58523, 450) == "spec-11109-58523-0450.fits"


def test_catalog_source_paths_from_a_real_dr16_mirror(sdss_dir):
    """spectra3 rows copied from a mirror of dr16/sdss/spectro/redux/26/spectra/PLATE/ (full files)."""
    rows = [r for r in csv.DictReader(open(sdss_dir / "catalog.csv")) if r["source_path"].startswith("dr16/sdss/spectro")]
    assert len(rows) >= 5
    for r in rows:
        got = spec_path(float(r["plate"]), float(r["mjd"]), float(r["fiberid"]), r["run2d"], "dr16", lite=False)
        assert got == r["source_path"], r["filename"]


def test_bytes_numpy_and_float_inputs_are_decoded():
    assert spec_path(b"266", np.int64(51602), 1.0, b"26 ", "DR17") == spec_path(266, 51602, 1, "26", 17)
    assert spec_path(np.bytes_(b"3586"), "55181", "0890", np.bytes_(b"v5_13_2")) == KNOWN[0][1].replace("full", "lite")
    assert parse_run2d(26) == "26" and parse_run2d(26.0) == "26"


def test_url_uses_configured_root():
    cfg = SDSSConfig(sas_url="http://127.0.0.1:9/mirror/sas/")
    assert spec_url(266, 51602, 1, "26", config=cfg) == (
        "http://127.0.0.1:9/mirror/sas/dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51602-0001.fits"
    )
    assert spec_url(266, 51602, 1, "26").startswith("https://data.sdss.org/sas/dr17/")


@pytest.mark.parametrize(
    "args,match",
    [
        ((266, 51602, 1, "v5_13_2", 12, True), "not published in DR12"),
        ((266, 51602, 1, "v5_7_0", 17, True), "not published in DR17"),
        ((266, 51602, 1, "26", 8, True), "DR8 published full spec files only"),
        ((266, 51602, 1, "26", 7, True), "not supported"),
        ((266, 51602, 1, "../26", 17, True), "run2d"),
        (("../266", 51602, 1, "26", 17, True), "plate"),
        ((266, 51602, 0, "26", 17, True), "fiberid"),
        ((266, 123, 1, "26", 17, True), "mjd"),
        ((266.5, 51602, 1, "26", 17, True), "plate"),
    ],
)
def test_bad_inputs_name_the_field(args, match):
    with pytest.raises(ValueError, match=match):
        spec_path(*args)


def test_parse_ids_range():
    assert parse_ids("0266", b"51602", 1.0) == (266, 51602, 1)
