"""Downloads from a local SAS-like server serving the real spec files: every failure mode,
resume, and a real ``specclass sdss download`` process killed mid-download."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers.catalog import key_of
from servers.fixtures import net_config, sas, sas_server, sky, sky_server  # noqa: F401  (fixtures)
from specclass.sdss.download import (
    FileCheckError,
    clean_partials,
    download_catalog,
    read_manifest,
    sha256_of,
    verify_spec_file,
)
from specclass.sdss.skyserver import write_catalog


def _catalog(sas, n: int, start: int = 0) -> list[dict]:
    rows = [r for r in sas.rows if r["lite"]][start : start + n]
    return [{"plate": r["plate"], "mjd": r["mjd"], "fiberid": r["fiberID"], "run2d": r["run2d"]} for r in rows]


def _write_csv(rows: list[dict], path: Path) -> Path:
    from astropy.table import Table

    return write_catalog(Table(rows=rows), path)


def _keys(rows) -> list[str]:
    return [f"{r['plate']:04d}-{r['mjd']:05d}-{r['fiberid']:04d}" for r in rows]


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_normal_download_is_byte_identical_and_resumes(sas, net_config, tmp_path, sdss_dir):
    rows = _catalog(sas, 6)
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert [r.status for r in report.results] == ["downloaded"] * 6
    src = {key_of(r): Path(r["file"]) for r in sas.rows}
    for res, key in zip(report.results, _keys(rows)):
        got = tmp_path / f"spec-{key}.fits"
        assert got.read_bytes() == src[key].read_bytes()
        assert res.sha256 == sha256_of(src[key]) and res.bytes == src[key].stat().st_size
    assert _files(tmp_path) == sorted([f"spec-{k}.fits" for k in _keys(rows)] + ["manifest.jsonl"])
    # second run: nothing is requested again
    n_requests = len(sas.requests)
    again = download_catalog(rows, tmp_path, net_config, progress=False)
    assert [r.status for r in again.results] == ["present"] * 6 and len(sas.requests) == n_requests
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 12 and {m["status"] for m in manifest} == {"downloaded", "present"}
    assert set(manifest[0]) >= {"url", "path", "status", "reason", "bytes", "sha256", "object", "http_status"}


def test_503_then_success(sas, net_config, tmp_path):
    rows = _catalog(sas, 3)
    k = _keys(rows)[1]
    sas.faults[k] = ("503", 2)
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert all(r.ok for r in report.results)
    assert sas.count(k) == 3 and report.results[1].attempts == 3


def test_html_page_with_status_200(sas, net_config, tmp_path):
    rows = _catalog(sas, 3)
    k = _keys(rows)[0]
    sas.faults[k] = "html"
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    bad = report.failed
    assert [b.object for b in bad] == [k]
    assert bad[0].reason == "server sent an HTML page, not FITS ('SAS maintenance') (gave up after 3 attempts)"
    assert sas.count(k) == 3  # retried like a 503 (issue 12 item 11)
    assert not (tmp_path / f"spec-{k}.fits").exists()
    assert f"FAILED {k}: server sent an HTML page" in report.summary()


def test_a_maintenance_page_that_goes_away_is_retried(sas, net_config, tmp_path, sdss_dir):
    # issue 12 item 11: an HTML answer with status 200 is a transient state of real servers
    rows = _catalog(sas, 2)
    k = _keys(rows)[1]
    sas.faults[k] = ("html", 1)
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert all(r.ok for r in report.results) and report.results[1].attempts == 2 and sas.count(k) == 2
    src = Path(next(r["file"] for r in sas.rows if key_of(r) == k))
    assert (tmp_path / f"spec-{k}.fits").read_bytes() == src.read_bytes()


def test_failure_reasons_have_no_empty_or_unbalanced_parentheses(sas, net_config, tmp_path):
    import dataclasses
    import socket

    from specclass.sdss.download import _detail

    assert _detail("") == "" and _detail("  ") == ""
    assert _detail("HTTPSConnectionPool(host='x', port=443): Max retries (Caused by NewConn") == (
        " (HTTPSConnectionPool(host='x', port=443): Max retries (Caused by NewConn))")
    assert _detail("a) b (c") == " (a b (c))"
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = dataclasses.replace(net_config, sas_url=f"http://127.0.0.1:{port}/sas", retries=0)
    report = download_catalog(_catalog(sas, 1), tmp_path, cfg, progress=False)
    (bad,) = report.failed
    assert bad.reason.startswith("connection error (") and "()" not in bad.reason
    assert bad.reason.count("(") == bad.reason.count(")")


def test_body_cut_short_is_retried_then_reported(sas, net_config, tmp_path):
    rows = _catalog(sas, 2)
    k = _keys(rows)[1]
    sas.faults[k] = "short"
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    (bad,) = report.failed
    assert bad.object == k and sas.count(k) == 3
    size = Path(next(r["file"] for r in sas.rows if key_of(r) == k)).stat().st_size
    assert f"body cut short: got {size // 2} of {size} bytes (Content-Length)" in bad.reason
    assert "gave up after 3 attempts" in bad.reason
    assert _files(tmp_path) == sorted([f"spec-{_keys(rows)[0]}.fits", "manifest.jsonl"])


def test_slow_response_past_the_timeout(sas, net_config, tmp_path):
    rows = _catalog(sas, 2)
    k = _keys(rows)[0]
    sas.faults[k] = ("slow", 1.0)
    cfg = net_config.replace(timeout=0.3, retries=1)
    t0 = time.perf_counter()
    report = download_catalog(rows, tmp_path, cfg, progress=False)
    (bad,) = report.failed
    assert bad.object == k and "timed out after 0.3 s" in bad.reason and "gave up after 2 attempts" in bad.reason
    assert report.results[1].ok and time.perf_counter() - t0 < 5


def test_404_for_one_file_among_many(sas, net_config, tmp_path):
    rows = _catalog(sas, 10, start=20)
    k = _keys(rows)[4]
    sas.faults[k] = "404"
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert [r.object for r in report.failed] == [k] and report.failed[0].reason == "HTTP 404 Not Found"
    assert report.failed[0].http_status == 404 and sas.count(k) == 1
    assert len(report.ok_paths) == 9 and all(p.exists() for p in report.ok_paths)
    latest = read_manifest(tmp_path / "manifest.jsonl")
    assert set(latest) == set(_keys(rows)) and latest[k]["status"] == "failed"
    assert latest[k]["url"].endswith(f"spec-{k}.fits")


def test_server_file_name_with_dotdot_is_ignored(sas, net_config, tmp_path):
    out = tmp_path / "deep" / "out"
    rows = _catalog(sas, 2)
    sas.faults["*"] = "evil-name"
    report = download_catalog(rows, out, net_config, progress=False)
    assert all(r.ok for r in report.results)
    assert _files(out) == sorted([f"spec-{k}.fits" for k in _keys(rows)] + ["manifest.jsonl"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["deep", "out", "manifest.jsonl"] + [f"spec-{k}.fits" for k in _keys(rows)])
    assert not list(tmp_path.parent.glob("evil*")) and not (tmp_path / "evil.fits").exists()


def test_wrong_file_is_caught_by_identity_check(sas, net_config, tmp_path):
    rows = _catalog(sas, 1, start=3)
    k = _keys(rows)[0]
    sas.faults[k] = "wrong-file"
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    (bad,) = report.failed
    assert f"expected {k}" in bad.reason and "failed verification" in bad.reason


def test_bad_catalog_rows_fail_alone(sas, net_config, tmp_path):
    rows = _catalog(sas, 2) + [{"plate": 266, "mjd": 51602, "fiberid": 1, "run2d": "v9_9_9"}]
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert len(report.results) == 3 and len(report.failed) == 1
    assert report.failed[0].object == "row 3" and "v9_9_9" in report.failed[0].reason


def test_damaged_existing_file_is_fetched_again(sas, net_config, tmp_path):
    rows = _catalog(sas, 1)
    k = _keys(rows)[0]
    target = tmp_path / f"spec-{k}.fits"
    src = Path(next(r["file"] for r in sas.rows if key_of(r) == k))
    target.write_bytes(src.read_bytes()[:5760])  # a truncated copy
    with pytest.raises(FileCheckError):
        verify_spec_file(target)
    report = download_catalog(rows, tmp_path, net_config, progress=False)
    assert report.results[0].status == "downloaded" and target.read_bytes() == src.read_bytes()


def test_verify_rejects_html_and_truncated(tmp_path, sdss_dir):
    html = tmp_path / "spec-0266-51602-0001.fits"
    html.write_bytes(b"<html>" + b" " * 2874)
    with pytest.raises(FileCheckError, match="not a FITS file"):
        verify_spec_file(html)
    real = sdss_dir / "spectra" / "spec-0266-51602-0001.fits"
    if real.exists():
        verify_spec_file(real, (266, 51602, 1))
        with pytest.raises(FileCheckError, match="holds spectrum 0266-51602-0001, expected 0266-51602-0002"):
            verify_spec_file(real, (266, 51602, 2))


def test_stale_partials_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".spec-0266-51602-0001.fits.{dead.pid}.0.part"
    live = tmp_path / f".spec-0266-51602-0002.fits.{os.getppid()}.0.part"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    assert clean_partials(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def test_killed_mid_download_then_rerun(sas, net_config, tmp_path):
    """A real `specclass sdss download` process is SIGKILLed while the server trickles
    the files; the re-run fetches only what was not verified, leaves no temp files and
    completes the manifest."""
    rows = _catalog(sas, 8, start=40)
    catalog = _write_csv(rows, tmp_path / "catalog.csv")
    out = tmp_path / "spectra"
    sas.faults["*"] = ("trickle", 0.04)
    cmd = [sys.executable, "-m", "specclass", "sdss", "download", str(catalog), "--out", str(out),
           "--sas-url", sas.url, "--workers", "2", "--timeout", "5", "--retries", "1", "--backoff", "0.01",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    manifest = out / "manifest.jsonl"
    while time.time() < deadline:
        done = [ln for ln in manifest.read_text().splitlines()] if manifest.exists() else []
        if len(done) >= 2 and list(out.glob(".*.part")):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    before = read_manifest(manifest)
    verified_before = {k for k, rec in before.items() if rec["status"] == "downloaded"}
    assert 2 <= len(verified_before) < len(rows)
    # whatever spec file exists was renamed into place only after verification
    for p in out.glob("spec-*.fits"):
        verify_spec_file(p)
    counts_before = {k: sas.count(k) for k in _keys(rows)}

    sas.faults.clear()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failed" in r.stdout
    for k in verified_before:  # verified files were not requested again
        assert sas.count(k) == counts_before[k] == 1, k
    assert not list(out.glob(".*.part")) and not list(out.glob("*.part"))
    latest = read_manifest(manifest)
    assert set(latest) == set(_keys(rows))
    assert all(rec["status"] in ("downloaded", "present") and len(rec["sha256"]) == 64 for rec in latest.values())
    for k in _keys(rows):
        verify_spec_file(out / f"spec-{k}.fits", tuple(int(x) for x in k.split("-")))


def test_full_files_from_their_own_sas_paths(sas, net_config, tmp_path, sdss_dir):
    import csv

    full = [r for r in csv.DictReader(open(sdss_dir / "catalog.csv")) if r["format"] == "spec-full"]
    rows = [{"plate": r["plate"], "mjd": r["mjd"], "fiberid": r["fiberid"],
             "run2d": r["run2d"] if r["run2d"] in ("26", "103", "104") else "v5_13_2"} for r in full]
    report = download_catalog(rows, tmp_path, net_config, lite=False, progress=False)
    assert len(report.results) == len(full) >= 2 and not report.failed, report.summary()
    for res, r in zip(report.results, full):
        assert ("/spectra/full/" in res.url) != (r["run2d"] == "26")
        assert (tmp_path / res.path).read_bytes() == (sdss_dir / r["filename"]).read_bytes()
