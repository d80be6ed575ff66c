"""`specclass sdss fetch`: query + download + dataset, end to end against the local servers."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from servers.fixtures import net_config, sas, sas_server, sky, sky_server  # noqa: F401  (fixtures)
from specclass.sdss.download import read_manifest
from specclass.sdss.fetch import fetch, fetch_requests
from specclass.sdss.skyserver import EmptyResultError, read_catalog


def _fetch_cli(sky, sas, out, *extra):
    cmd = [sys.executable, "-m", "specclass", "sdss", "fetch", "--per-class", "8", "--golden", "--release", "dr17",
           "--out", str(out), "--base-url", sky.url, "--sas-url", sas.url, "--no-progress", "--backoff", "0.01", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_fetch_all_classes_then_resume(sky, sas, tmp_path):
    from specclass.spectra.dataset import SpectralDataset

    out = tmp_path / "run"
    r = _fetch_cli(sky, sas, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "catalog: 24 spectra (STAR 3, GALAXY 8, QSO 8, AGN 5)" in r.stdout
    assert "24 downloaded, 0 already present (verified), 0 failed" in r.stdout
    catalog = read_catalog(out / "catalog.csv")
    assert sorted(set(catalog["label"])) == ["AGN", "GALAXY", "QSO", "STAR"]
    assert (catalog["zwarning"] == 0).all()
    assert all(c == "STAR" for c, lab in zip(catalog["class"], catalog["label"]) if lab == "STAR")
    assert all(s == "AGN" for s, lab in zip(catalog["subclass"], catalog["label"]) if lab == "AGN")
    assert all(s != "AGN" for s, lab in zip(catalog["subclass"], catalog["label"]) if lab in ("GALAXY", "QSO"))
    assert len(sky.requests) == 4 and all("zWarning = 0" in q["cmd"] for q in sky.requests)

    ds = SpectralDataset.load(out / "dataset.h5")
    assert len(ds) == 24 and ds.flux.dtype == np.float32
    assert sorted(ds.class_names) == ["AGN", "GALAXY", "QSO", "STAR"]
    assert sorted(np.unique(ds.labels).tolist()) == [0, 1, 2, 3]
    want = {(int(p), int(m), int(f)) for p, m, f in zip(catalog["plate"], catalog["mjd"], catalog["fiberid"])}
    got = {(int(p), int(m), int(f)) for p, m, f in zip(ds.meta["plate"], ds.meta["mjd"], ds.meta["fiberid"])}
    assert got == want
    latest = read_manifest(out / "manifest.jsonl")
    assert len(latest) == 24 and all(rec["status"] == "downloaded" for rec in latest.values())

    # the same command again: the query runs, no spectrum is downloaded again
    n_sas = len(sas.requests)
    r = _fetch_cli(sky, sas, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 downloaded, 24 already present (verified), 0 failed" in r.stdout
    assert len(sas.requests) == n_sas and len(sky.requests) == 8


def test_fetch_dry_run_sends_nothing(sky, sas, tmp_path):
    r = _fetch_cli(sky, sas, tmp_path / "dry", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("GET ") == 4 and r.stdout.count("cmd = SELECT TOP 8 ") == 4
    assert "# AGN: s.subClass IN ('AGN'), s.zWarning = 0, TOP 8, DR17" in r.stdout
    assert not sky.requests and not sas.requests and not (tmp_path / "dry").exists()
    reqs = fetch_requests(2, ["QSO"], golden=False, data_release=12)
    assert reqs[0][0] == "QSO" and "/dr12/" in reqs[0][2].url and reqs[0][1].top == 2


def test_fetch_keeps_going_past_an_empty_class_and_a_missing_file(sky, sas, net_config, tmp_path):
    # plates 270..400: QSOs but no stars; make one QSO file 404 on the SAS
    qsos = [r for r in sas.rows if r["class"] == "QSO" and 270 <= r["plate"] <= 400 and r["subClass"] != "AGN"
            and r["mjd"] <= 51700]
    missing = f"{qsos[0]['plate']:04d}-{qsos[0]['mjd']:05d}-{qsos[0]['fiberID']:04d}"
    sas.faults[missing] = "404"
    result = fetch(tmp_path, per_class=3, classes=["STAR", "QSO"], plate_range=(270, 400), mjd_range=(51000, 51700),
                   build=False, config=net_config, progress=False)
    assert result.counts["QSO"] >= 2 and result.counts["STAR"] == 0
    failed = result.download.failed
    assert [f.object for f in failed] == [missing] and failed[0].reason == "HTTP 404 Not Found"
    assert len(result.download.ok_paths) == len(result.catalog) - 1
    # a class with no match is a message, and all classes empty is an error
    assert any("no STAR spectra match" in m and "s.plate BETWEEN 270 AND 400" in m for m in result.messages)
    with pytest.raises(EmptyResultError, match="no spectra match any class"):
        fetch(tmp_path / "none", per_class=3, plate_range=(1, 2), build=False, config=net_config, progress=False)
    assert not (tmp_path / "none" / "catalog.csv").exists()


def test_fetch_rejects_bad_options_before_any_request(sky, sas, net_config, tmp_path):
    with pytest.raises(ValueError, match="class 'ROCK'"):
        fetch(tmp_path, per_class=3, classes=["ROCK"], build=False, config=net_config)
    with pytest.raises(ValueError, match="top must be"):
        fetch(tmp_path, per_class=0, build=False, config=net_config)
    with pytest.raises(ValueError, match="label scheme|scheme"):
        fetch(tmp_path, per_class=3, labels="nonsense", config=net_config)
    assert not sky.requests and not sas.requests


def test_fetch_help_documents_every_option():
    from specclass.cli import build_parser
    from specclass.commands import sdss as cmd
    from specclass.sdss import fetch as fe
    from specclass.sdss import skyserver as sk

    assert cmd.CLASS_CHOICES == sk.CLASSES and cmd.PRESET_CHOICES == tuple(sk.PRESETS)
    assert cmd.MAX_TOP == sk.MAX_TOP and cmd.SEED4_CHOICES == fe.SEED4 == tuple(sk.LABEL_PRESETS)

    parser = build_parser()
    sdss = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["sdss"]
    subs = next(a for a in sdss._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subs) == {"query", "urls", "download", "fetch"}
    for name, sub in subs.items():
        text = sub.format_help()
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text, (name, opt)
            assert action.help and action.help.strip(), (name, action.dest)
    fetch_help = subs["fetch"].format_help()
    for opt in ("--per-class", "--golden", "--release", "--out", "--classes", "--base-url", "--sas-url", "--timeout",
                "--retries", "--backoff", "--workers", "--full", "--labels", "--no-build", "--dry-run"):
        assert opt in fetch_help


def test_urls_command(sky, sas, net_config, tmp_path):
    from astropy.table import Table

    from specclass.sdss.skyserver import write_catalog

    cat = write_catalog(Table(rows=[{"plate": 266, "mjd": 51602, "fiberid": 1, "run2d": "26"},
                                    {"plate": 10000, "mjd": 57346, "fiberid": 2, "run2d": "v5_13_2"}]), tmp_path / "c.csv")
    r = subprocess.run([sys.executable, "-m", "specclass", "sdss", "urls", str(cat), "--full"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "https://data.sdss.org/sas/dr17/sdss/spectro/redux/26/spectra/0266/spec-0266-51602-0001.fits",
        "https://data.sdss.org/sas/dr17/eboss/spectro/redux/v5_13_2/spectra/full/10000/spec-10000-57346-0002.fits",
    ]


def test_build_failure_keeps_the_downloads(sky, sas, net_config, tmp_path):
    def broken_builder(paths, labels, golden):
        raise ValueError("grid has no pixels")

    with pytest.raises(RuntimeError, match=r"building the dataset from the 2 downloaded spectra failed .*grid has no"):
        fetch(tmp_path, per_class=2, classes=["QSO"], config=net_config, progress=False, builder=broken_builder)
    assert len(list((tmp_path / "spectra").glob("spec-*.fits"))) == 2
    assert not (tmp_path / "dataset.h5").exists()
