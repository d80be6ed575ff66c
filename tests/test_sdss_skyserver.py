"""SkyServer SQL: query building, validation, and real requests to a local SkyServer-like server."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from servers.fixtures import net_config, sas, sas_server, sky, sky_server  # noqa: F401  (fixtures)
from specclass.sdss.config import SDSSConfig
from specclass.sdss.skyserver import (
    CATALOG_COLUMNS,
    EmptyResultError,
    SkyServerError,
    SpecObjQuery,
    build_request,
    endpoint_url,
    parse_catalog_csv,
    preset_query,
    read_catalog,
    run_query,
    write_catalog,
)


# --- SQL building (no network) ----------------------------------------------------------
def test_presets_render_the_tutorial_selections():
    assert "s.class IN ('STAR')" in preset_query("stars").sql()
    assert preset_query("stars").sql().startswith("SELECT TOP 1000 ")
    gal = preset_query("galaxies", top=5, golden=True).sql()
    assert "s.class IN ('GALAXY')" in gal
    assert "(s.subClass IS NULL OR s.subClass NOT IN ('AGN'))" in gal
    assert "s.zWarning = 0" in gal and "TOP 5 " in gal
    assert "s.class IN ('QSO')" in preset_query("qsos").sql()
    agn = preset_query("agn").sql()
    assert "s.subClass IN ('AGN')" in agn and "s.class" not in agn.split("WHERE")[1]


def test_ranges_and_release():
    q = SpecObjQuery(classes=["qso"], plate_range=(266, 300), mjd_range=("51000", 52000), top=7, data_release="dr12")
    sql = q.sql()
    assert "s.plate BETWEEN 266 AND 300" in sql and "s.mjd BETWEEN 51000 AND 52000" in sql
    assert build_request(q).url == "https://skyserver.sdss.org/dr12/SkyServerWS/SearchTools/SqlSearch"
    assert endpoint_url(8) == "https://skyserver.sdss.org/dr8/en/tools/search/x_sql.asp"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(classes=["STAR'; DROP TABLE SpecObj --"]), "not allowed"),
        (dict(classes=["ROCK"]), "not allowed"),
        (dict(subclasses=["AGN' OR '1'='1"]), "not a valid SDSS subclass"),
        (dict(exclude_subclasses=["AGN;--"]), "not a valid SDSS subclass"),
        (dict(top=0), "top must be"),
        (dict(top="5; DELETE"), "top must be"),
        (dict(top=10**7), "top must be"),
        (dict(plate_range=(300, 266)), "plate_range"),
        (dict(mjd_range=("1 OR 1=1", 5)), "mjd_range"),
        (dict(data_release=18), "not supported"),
        (dict(classes=["QSO"], exclude_classes=["QSO"]), "both included and excluded"),
    ],
)
def test_user_text_never_reaches_sql(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpecObjQuery(**kwargs)


def test_payload_mode_builds_without_sending():
    cfg = SDSSConfig(skyserver_url="http://127.0.0.1:9")  # nothing listens there
    req = build_request(preset_query("qsos", top=5, golden=True), cfg)
    assert req.params["format"] == "csv" and req.params["cmd"].startswith("SELECT TOP 5")
    assert req.full_url().startswith("http://127.0.0.1:9/dr17/SkyServerWS/SearchTools/SqlSearch?cmd=SELECT+TOP+5")


def test_parse_rejects_bad_bodies():
    with pytest.raises(SkyServerError, match="HTML page"):
        parse_catalog_csv("<html><title>Down</title></html>", "x")
    with pytest.raises(SkyServerError, match="wrong columns"):
        parse_catalog_csv("#Table1\nobjid,ra,dec\n1,2,3\n", "x")
    with pytest.raises(SkyServerError, match="row 1, column 'plate'"):
        parse_catalog_csv("#Table1\n" + ",".join(CATALOG_COLUMNS) + "\nabc,1,1,26,sdss,QSO,,0.1,0,1\n", "x")
    with pytest.raises(SkyServerError, match="2 tables"):
        parse_catalog_csv("#Table1\na\n#Table2\nb\n", "x")


# --- against the local SkyServer ----------------------------------------------------------
def test_each_preset_returns_matching_rows(sky, net_config):
    for name, check in [
        ("stars", lambda r: r["class"] == "STAR"),
        ("galaxies", lambda r: r["class"] == "GALAXY" and r["subclass"] != "AGN"),
        ("qsos", lambda r: r["class"] == "QSO" and r["subclass"] != "AGN"),
        ("agn", lambda r: r["subclass"] == "AGN"),
    ]:
        t = run_query(preset_query(name, top=4, golden=True), net_config)
        assert 1 <= len(t) <= 4, name
        assert list(t.colnames) == list(CATALOG_COLUMNS)
        assert all(check(r) and r["zwarning"] == 0 for r in t), name
        assert t["plate"].dtype == np.int64 and t["z"].dtype == np.float64
    # TOP n really limits, and ORDER BY specObjID is honoured
    t = run_query(SpecObjQuery(classes=["QSO"], top=10), net_config)
    assert len(t) == 10 and list(t["specobjid"]) == sorted(t["specobjid"])
    # specObjIDs of plates >= 8192 exceed int64 and come back as uint64
    big = run_query(SpecObjQuery(plate_range=(10000, 99999), top=5), net_config)
    assert big["specobjid"].dtype == np.uint64 and (big["plate"] >= 10000).all()
    assert sky.requests[-1]["path"] == "/dr17/SkyServerWS/SearchTools/SqlSearch"


def test_dr8_uses_the_classic_endpoint(sky, net_config):
    t = run_query(SpecObjQuery(classes=["GALAXY"], top=2, data_release=8), net_config)
    assert len(t) == 2 and sky.requests[-1]["path"] == "/dr8/en/tools/search/x_sql.asp"


def test_503_then_success(sky, net_config):
    sky.fault = ("503", 2)
    t = run_query(preset_query("stars", top=2), net_config)
    assert len(t) == 2 and len(sky.requests) == 3


def test_503_forever_gives_up_with_reason(sky, net_config):
    sky.fault = ("503", 99)
    with pytest.raises(SkyServerError, match=r"gave up after 3 attempts; last error: HTTP 503"):
        run_query(preset_query("stars", top=2), net_config)


def test_html_page_with_status_200(sky, net_config):
    sky.fault = "html"
    with pytest.raises(SkyServerError, match="HTML page instead of CSV .*SkyServer is down"):
        run_query(preset_query("stars", top=2), net_config)


def test_error_text_with_status_200(sky, net_config):
    sky.fault = "error"
    with pytest.raises(SkyServerError, match="server reported an error: ERROR: Incorrect syntax"):
        run_query(preset_query("stars", top=2), net_config)


def test_wrong_column_set(sky, net_config):
    sky.fault = "wrong-columns"
    with pytest.raises(SkyServerError, match=r"wrong columns \(missing \['plate'"):
        run_query(preset_query("stars", top=2), net_config)


def test_slow_answer_past_the_timeout(sky, net_config):
    sky.fault = ("slow", 1.0)
    cfg = net_config.replace(timeout=0.3, retries=1)
    t0 = time.perf_counter()
    with pytest.raises(SkyServerError, match="gave up after 2 attempts; last error: .*(Timeout|timed out)"):
        run_query(preset_query("stars", top=2), cfg)
    assert time.perf_counter() - t0 < 3


def test_empty_result_is_a_clear_error_not_an_empty_file(sky, net_config, tmp_path):
    q = SpecObjQuery(classes=["STAR"], plate_range=(1, 2))
    with pytest.raises(EmptyResultError, match=r"no spectra match the selection .*s.plate BETWEEN 1 AND 2"):
        run_query(q, net_config)
    assert len(run_query(q, net_config, allow_empty=True)) == 0
    out = tmp_path / "c.csv"
    with pytest.raises(EmptyResultError):
        write_catalog(run_query(q, net_config, allow_empty=True), out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_catalog_roundtrip(sky, net_config, tmp_path):
    t = run_query(preset_query("qsos", top=6), net_config)
    path = write_catalog(t, tmp_path / "cat.csv")
    back = read_catalog(path)
    assert list(back["plate"]) == list(t["plate"]) and list(back["run2d"]) == list(t["run2d"])
    assert [p.name for p in tmp_path.iterdir()] == ["cat.csv"]  # no temp file left


def test_read_catalog_errors_name_file_and_row(tmp_path):
    # issue 12 item 11: one counting convention (data rows from 1), as SkyServer and download errors
    bad = tmp_path / "bad.csv"
    bad.write_text("#Table1\nplate,mjd,fiberid,run2d\n266,51602,1,26\n\n266,51602,x,26\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 2: fiberid 'x'"):
        read_catalog(bad)
    bad.write_text("plate,mjd,fiberid,run2d\n266,51602,1,26\n266,51602\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 2 has 2 fields, header has 4"):
        read_catalog(bad)
    from specclass.sdss.download import make_tasks

    _, failed = make_tasks([{"plate": 266, "mjd": 51602, "fiberid": 1, "run2d": "26"},
                            {"plate": 266, "mjd": 51602, "fiberid": "x", "run2d": "26"}], tmp_path, 17, True, None)
    assert failed[0].object == "row 2"
    bad.write_text("plate,mjd\n266,51602\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['fiberid', 'run2d'\]"):
        read_catalog(bad)


def test_cli_query_and_dry_run(sky, tmp_path, capsys):
    from specclass.cli import main

    # one real process for the dry run ...
    r = subprocess.run(
        [sys.executable, "-m", "specclass", "sdss", "query", "--class", "QSO", "--golden", "--top", "5", "--dry-run",
         "--base-url", sky.url],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "cmd = SELECT TOP 5" in r.stdout and "s.zWarning = 0" in r.stdout and not sky.requests
    # ... the rest in-process through the same entry point
    out = tmp_path / "q.csv"
    assert main(["sdss", "query", "--preset", "agn", "--top", "3", "--base-url", sky.url, "--out", str(out)]) == 0
    assert len(read_catalog(out)) == 3 and len(sky.requests) == 1
    assert main(["sdss", "query", "--class", "GALAXY", "--top", "2", "--base-url", sky.url]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3].startswith("plate,mjd,fiberid,run2d") and len(printed) >= 3
    none = tmp_path / "none.csv"
    assert main(["sdss", "query", "--class", "STAR", "--plate-max", "2", "--base-url", sky.url, "--out", str(none)]) == 1
    assert "no spectra match" in capsys.readouterr().err and not none.exists()
    assert main(["sdss", "query", "--subclass", "AGN' OR 1=1 --", "--dry-run"]) == 2
    assert "not a valid SDSS subclass" in capsys.readouterr().err
