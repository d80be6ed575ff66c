"""The streaming dataset builder, shards + merge, and the build-dataset / export-npy / dataset-info CLI."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specclass.cli import main
from specclass.spectra.build import (
    BuildError,
    BuildReport,
    build_dataset,
    build_shard,
    list_files,
    merge_datasets,
    shard_slice,
)
from specclass.spectra.dataset import SpectralDataset
from specclass.spectra.grid import LogLamGrid
from specclass.spectra.splits import check_no_leak

REPO = Path(__file__).resolve().parents[1]
ALL_MASKED = "spec-0269-51581-0003.fits"


@pytest.fixture(scope="module")
def star_csv(sdss_dir: Path) -> Path:
    return sdss_dir / "arrays" / "sdss_star_spectra_txt.csv"


@pytest.fixture(scope="module")
def inputs(sdss_dir: Path) -> list[Path]:
    """All of sdss/spectra, text_stars, sky, dr7 and full (full copies of three spectra/ files)."""
    return [sdss_dir / "spectra", sdss_dir / "text_stars", sdss_dir / "sky", sdss_dir / "dr7", sdss_dir / "full"]


@pytest.fixture(scope="module")
def built(inputs, star_csv):
    return build_dataset(inputs, labels="seed4", text_labels=star_csv, seed=3)


def _by_category(report: BuildReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in report.skipped:
        out.setdefault(s.category, []).append(Path(s.file).name)
    return out


# --------------------------------------------------------------------------- builder
def test_build_everything_skips_with_reasons(built, sdss_dir):
    ds, report = built
    n_files = sum(len(list((sdss_dir / d).iterdir())) for d in ("spectra", "text_stars", "sky", "dr7", "full"))
    assert report.n_files == n_files
    assert report.n_kept == len(ds) == report.n_spectra - len(report.skipped)
    cats = _by_category(report)
    assert len(cats["sky"]) == 50 and all(n.startswith("spec-") for n in cats["sky"])
    assert cats["all masked"] == [ALL_MASKED]
    # text stars missing from the label table are reported, not guessed
    assert cats["no label"] and all(n.endswith(".txt") for n in cats["no label"])
    assert report.skip_counts == {k: len(v) for k, v in cats.items()}
    # the full/ copies sort first and are kept; their lite twins in spectra/ are duplicates
    assert len(cats["duplicate"]) == 3
    dup_reasons = [s.reason for s in report.skipped if s.category == "duplicate"]
    assert all("duplicate of " in r and "/full/" in r for r in dup_reasons)
    keys = [f"{p}-{m}-{f}" for p, m, f in zip(ds.meta["plate"], ds.meta["mjd"], ds.meta["fiberid"]) if p >= 0]
    assert len(keys) == len(set(keys))
    # arrays and types
    assert ds.flux.dtype == np.float32 and ds.ivar.dtype == np.float32
    assert ds.flux.shape == (len(ds), 3801)
    assert np.all(np.isfinite(ds.flux)) and np.all(np.isfinite(ds.ivar)) and np.all(ds.ivar >= 0)
    assert ds.class_names == ["AGN", "GALAXY", "QSO", "STAR"]
    assert set(np.unique(ds.meta["source"])) == {"fits", "text"}
    text = ds.meta["source"] == "text"
    assert np.all(ds.class_names.index("STAR") == ds.labels[text])
    # splits: grouped, seeded, recorded
    assert check_no_leak(ds) == []
    assert set(np.unique(ds.meta["split"])) == {0, 1, 2}
    assert ds.attrs["seed"] == 3 and ds.attrs["split"]["seed"] == 3
    assert ds.attrs["grid"] == {"loglam_min": 3.58, "loglam_step": 1e-4, "npix": 3801}
    rm017 = ds.meta["object_id"][ds.meta["class"] == "QSO"]
    assert np.unique(rm017, return_counts=True)[1].max() >= 78
    lines = "\n".join(report.summary_lines())
    assert "AGN" in lines and "sky" in lines and "all masked" in lines


def test_keep_duplicates_and_same_file_twice(sdss_dir, tmp_path):
    lite = sdss_dir / "spectra" / "spec-8222-57431-0561.fits"
    files = [sdss_dir / "full", lite]
    ds, report = build_dataset(files, dedupe=False, val_frac=0, test_frac=0)
    assert len(ds) == 4 and not report.skipped
    link = tmp_path / "again.fits"
    link.symlink_to(lite)
    once = list_files([lite, link, lite])  # one file under two names counts once
    assert len(once) == 1 and os.path.realpath(once[0]) == os.path.realpath(lite)
    ds, report = build_dataset([lite, sdss_dir / "full" / "8222-57431-0561.fits"], val_frac=0, test_frac=0)
    assert len(ds) == 1 and [s.category for s in report.skipped] == ["duplicate"]


def test_text_stars_keep_their_subclass(sdss_dir, star_csv):
    ds, report = build_dataset([sdss_dir / "text_stars"], labels="star_subclass", text_labels=star_csv)
    assert len(ds) >= 30
    assert ds.class_names == sorted(ds.class_names)
    with open(star_csv, newline="") as fh:
        want = {(int(r["plate"]), int(r["mjd"]), int(r["fiberid"])): r["subclass"].strip().upper() for r in csv.DictReader(fh)}
    for k in range(len(ds)):
        key = (int(ds.meta["plate"][k]), int(ds.meta["mjd"][k]), int(ds.meta["fiberid"][k]))
        assert ds.class_names[ds.labels[k]] == want[key]
    assert set(ds.meta["source"]) == {"text"}


def test_golden_counts_removals_per_bit(sdss_dir):
    ds, report = build_dataset([sdss_dir / "sky", sdss_dir / "dr7", sdss_dir / "spectra"], golden=True)
    assert report.zwarning_removals["SKY"] == 50
    assert np.all(ds.meta["zwarning"] == 0)
    cats = _by_category(report)
    assert ALL_MASKED in cats["zwarning"]  # ZWARNING 6 goes before the mask check
    assert "sky" not in cats  # in golden mode the sky fibres are counted as ZWARNING removals
    assert any(k.startswith("DR7_BIT") for k in report.zwarning_removals)
    # a spectrum with two bits counts under both
    assert report.zwarning_removals["LITTLE_COVERAGE"] >= 1 and report.zwarning_removals["SMALL_DELTA_CHI2"] >= 1
    assert ds.attrs["build_report"]["zwarning_removals"] == report.zwarning_removals


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, sdss_dir) -> Path:
    """Real files plus derived bad ones."""
    d = tmp_path_factory.mktemp("bad")
    good = sorted((sdss_dir / "spectra").glob("spec-*.fits"))[:3]
    for p in good:
        shutil.copy(p, d / p.name)
    (d / "spec-9999-55555-0001.fits").write_text("<!DOCTYPE html><html><body>503 Service Unavailable</body></html>\n")
    raw = good[0].read_bytes()
    (d / "spec-9999-55555-0002.fits").write_bytes(raw[: len(raw) // 2])  # truncated mid-data
    (d / "spec-9999-55555-0003.fits").write_bytes(gzip.compress(good[1].read_bytes()))  # gzip named .fits
    with fits.open(good[2]) as h:  # NaN / inf in flux and ivar
        h[1].data["flux"][100:110] = np.nan
        h[1].data["ivar"][200:205] = np.inf
        h.writeto(d / "spec-9999-55555-0004.fits")
    shutil.copy(sdss_dir / "spectra" / ALL_MASKED, d / ALL_MASKED)
    return d


def test_bad_files_are_skipped_not_fatal(bad_dir):
    ds, report = build_dataset([bad_dir], dedupe=False)  # the derived files repeat their originals' ids
    cats = _by_category(report)
    assert sorted(cats["unreadable"]) == ["spec-9999-55555-0001.fits", "spec-9999-55555-0002.fits"]
    reasons = {Path(s.file).name: s.reason for s in report.skipped}
    assert "HTML" in reasons["spec-9999-55555-0001.fits"]
    assert cats["all masked"] == [ALL_MASKED]
    names = [Path(f).name for f in ds.meta["file"]]
    assert "spec-9999-55555-0003.fits" in names  # gzip by content
    assert "spec-9999-55555-0004.fits" in names
    k = names.index("spec-9999-55555-0004.fits")
    assert np.all(np.isfinite(ds.flux[k])) and np.all(np.isfinite(ds.ivar[k]))
    # the gzip copy equals its original, row for row
    orig = names.index(Path(sorted(bad_dir.glob("spec-0*.fits"))[1]).name)
    assert np.array_equal(ds.flux[names.index("spec-9999-55555-0003.fits")], ds.flux[orig])


def test_strict_raises_on_first_bad_file(bad_dir):
    with pytest.raises(BuildError) as err:
        build_dataset([bad_dir], strict=True)
    # sorted order: three good spec-0266 files, then the all-masked spec-0269 file
    assert Path(err.value.path).name == ALL_MASKED
    assert "no good pixel" in err.value.reason and err.value.path in str(err.value)
    html = bad_dir / "spec-9999-55555-0001.fits"
    with pytest.raises(BuildError, match="spec-9999-55555-0001.fits: .*HTML"):
        build_dataset([html], strict=True)


def test_other_surveys_and_multi_spectrum_files(shared_data, sdss_dir):
    lamost = shared_data / "other_surveys" / "lamost" / "spectraml"
    mastar = sdss_dir / "spectra2" / "other_layouts" / "mastar_example_spectral_types.fits"
    ds, report = build_dataset([lamost, mastar], labels="class3", val_frac=0, test_frac=0)
    cats = _by_category(report)
    assert cats["unknown class"] == ["spec-55919-B5591903_sp01-001.fits"]  # CLASS 'Unknown' in the header
    lam = ds.meta["source"] == "other-survey"
    assert lam.sum() == 15 and set(ds.meta["survey"][lam]) == {"lamost"}
    rows = ds.meta["file"] == str(mastar)
    assert rows.sum() == 7 and sorted(ds.meta["row"][rows].tolist()) == list(range(7))
    assert set(ds.meta["source"][rows]) == {"fits"}
    # seven different stars in one file are seven objects
    assert np.unique(ds.meta["object_id"][rows]).size == 7


def test_user_label_fills_only_missing_classes(sdss_dir):
    files = [sdss_dir / "other_layouts" / "NGC3522_SDSS.fits", sdss_dir / "spectra" / "spec-0266-51602-0013.fits"]
    ds, report = build_dataset(files, labels="class3", label="GALAXY", val_frac=0, test_frac=0)
    assert len(ds) == 2, report.skipped
    by_file = {Path(f).name: ds.class_names[i] for f, i in zip(ds.meta["file"], ds.labels)}
    assert by_file["NGC3522_SDSS.fits"] == "GALAXY"
    with fits.open(files[1]) as h:
        own = h[2].data["CLASS"][0].strip()
    assert by_file["spec-0266-51602-0013.fits"] == own


def test_custom_grid_and_bad_bits(sdss_dir):
    files = sorted((sdss_dir / "spectra").glob("spec-0266-*.fits"))[:4]
    grid = LogLamGrid.from_range(3.6, 3.9, 2e-4)
    ds, _ = build_dataset(files, grid=grid, bad_mask_bits=[], val_frac=0, test_frac=0)
    assert ds.flux.shape == (4, grid.npix)
    assert np.allclose(ds.loglam, grid.loglam)
    ds2, _ = build_dataset(files, grid=grid, val_frac=0, test_frac=0)
    assert np.count_nonzero(ds2.ivar) < np.count_nonzero(ds.ivar)  # BRIGHTSKY masked by default
    with pytest.raises(ValueError, match="unknown SPPIXMASK bit"):
        build_dataset(files, bad_mask_bits=["NOPE"])
    with pytest.raises(ValueError, match="unknown label scheme"):
        build_dataset(files, labels="seed5")


def test_shards_merge_to_the_single_process_result(tmp_path, inputs, star_csv, built):
    single, single_report = built
    n = 3
    shard_files = []
    for i in range(n):
        path, rep = build_shard(inputs, i, n, tmp_path / f"shard-{i}.h5", text_labels=star_csv)
        assert np.all(SpectralDataset.load(path).meta["split"] == -1)
        assert Path(f"{path}.skipped.csv").exists()
        shard_files.append(path)
    merged, report = merge_datasets(list(reversed(shard_files)), seed=3)
    assert merged.class_names == single.class_names
    for name in ("flux", "ivar", "labels"):
        assert np.array_equal(getattr(merged, name), getattr(single, name)), name
    for col in single.meta:
        a, b = single.meta[col], merged.meta[col]
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), col
        else:
            assert np.array_equal(a, b), col
    assert report.skip_counts == single_report.skip_counts
    assert report.n_files == single_report.n_files
    with pytest.raises(ValueError, match="incomplete: missing \\[1\\]"):
        merge_datasets([shard_files[0], shard_files[2]])


def test_merge_refuses_mixed_or_foreign_files(tmp_path, sdss_dir, built):
    dr7 = [sdss_dir / "dr7"]
    a, _ = build_shard(dr7, 0, 2, tmp_path / "a.npz", labels="seed4")
    b, _ = build_shard(dr7, 1, 2, tmp_path / "b.npz", labels="class3")
    with pytest.raises(ValueError, match="b.npz: built with different settings .*label_scheme"):
        merge_datasets([a, b])
    plain = built[0].save(tmp_path / "plain.h5")
    with pytest.raises(ValueError, match="plain.h5: not a shard"):
        merge_datasets([plain])
    with pytest.raises(ValueError, match="no shard files"):
        merge_datasets([])


def test_memory_overhead_is_flat_in_n(sdss_dir):
    """Streaming: beyond the output arrays, the builder holds a few MB whatever N (no Spectrum objects)."""
    import tracemalloc

    from specclass.spectra.build import build_rows

    files = list_files([sdss_dir / "spectra"])
    build_rows(files[:2])  # imports, caches
    overhead = []
    for k in (1, 4):
        tracemalloc.start()
        try:
            ds, _ = build_rows(files * k, dedupe=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(ds) == (len(files) - 1) * k  # all but the all-masked file
        overhead.append(peak - ds.flux.nbytes - ds.ivar.nbytes)
        del ds
    assert max(overhead) < 16e6, overhead
    assert overhead[1] < overhead[0] + 4e6, overhead  # 4x the files, not 4x the overhead


def test_shard_slice_and_sorted_listing(sdss_dir):
    blocks = [shard_slice(10, i, 3) for i in range(3)]
    assert [list(range(10))[b] for b in blocks] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="shard_index"):
        shard_slice(10, 3, 3)
    files = list_files([sdss_dir / "dr7", sdss_dir / "dr7"])
    assert files == sorted(files) and len(files) == len(set(files)) == 2


def test_dataset_roundtrip(built, tmp_path):
    ds, _ = built
    path = ds.save(tmp_path / "ds.h5")
    back = SpectralDataset.load(path)
    assert np.array_equal(back.flux, ds.flux) and np.array_equal(back.meta["split"], ds.meta["split"])
    assert back.attrs["build_report"]["n_kept"] == len(ds)


# --------------------------------------------------------------------------- CLI
def test_cli_build_info_export(tmp_path, sdss_dir, star_csv, capsys):
    out = tmp_path / "ds.h5"
    rc = main([
        "build-dataset", str(sdss_dir / "spectra"), str(sdss_dir / "sky"), str(sdss_dir / "text_stars"),
        "--labels", "seed4", "--text-labels", str(star_csv), "--out", str(out), "--no-progress", "--seed", "5",
    ])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "class" in text and "train" in text and "STAR" in text
    assert "skipped files" in text and ALL_MASKED in text
    with open(f"{out}.skipped.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["category"] for r in rows} == {"sky", "all masked", "no label"}
    assert sum(r["category"] == "sky" for r in rows) == 50

    assert main(["dataset-info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "seed4" in info and "3801 pixels" in info and "seed          5" in info

    assert main(["export-npy", str(out), "--out", str(tmp_path / "npy")]) == 0
    data = np.load(tmp_path / "npy" / "data.npy")
    labels = np.load(tmp_path / "npy" / "labels.npy")
    wave = np.load(tmp_path / "npy" / "wavelengths.npy")
    assert data.shape == (labels.shape[0], wave.shape[0]) and data.dtype == np.float32
    assert wave[0] == pytest.approx(3801.9, abs=0.1)
    assert (tmp_path / "npy" / "class_names.txt").read_text().splitlines()[0] == "0 AGN"
    assert main(["export-npy", str(out), "--out", str(tmp_path / "npy_test"), "--split", "test"]) == 0
    assert 0 < np.load(tmp_path / "npy_test" / "labels.npy").shape[0] < labels.shape[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "seed5"], "argument --labels: invalid choice: 'seed5' (choose from"),
        (["--val-frac", "0.6", "--test-frac", "0.5"], "--val-frac 0.6 + --test-frac 0.5 must be < 1"),
        (["--val-frac", "1.5"], "argument --val-frac: 1.5 is not in [0, 1)"),
        (["--grid-min", "3800"], "looks like Angstrom; give log10 of the wavelength (e.g. 3.5798)"),
        (["--grid-min", "3.9", "--grid-max", "3.6"], "--grid-max 3.6 must be greater than --grid-min 3.9"),
        (["--bad-mask-bits", "NODATA,SKYLINE"], "unknown SPPIXMASK bit 'SKYLINE'"),
        (["--label", "PLANET"], "--label 'PLANET': CLASS must be one of GALAXY, QSO, STAR"),
        (["--text-labels", "/nonexistent/labels.csv"], "--text-labels '/nonexistent/labels.csv': no such file"),
    ],
)
def test_cli_validates_options(args, message, tmp_path, sdss_dir, capsys):
    try:
        rc = main(["build-dataset", str(sdss_dir / "dr7"), "--out", str(tmp_path / "x.h5"), "--no-progress", *args])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert not (tmp_path / "x.h5").exists()


def test_cli_bad_out_and_missing_path(tmp_path, sdss_dir, capsys):
    assert main(["build-dataset", str(sdss_dir / "dr7"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .h5, .hdf5, .npz" in capsys.readouterr().err
    assert main(["build-dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "x.h5")]) == 2
    assert "PATH: not found" in capsys.readouterr().err
    assert main(["dataset-info", str(tmp_path / "missing.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_strict_and_nothing_kept_in_a_real_process(tmp_path, bad_dir, sdss_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "specclass", "build-dataset", str(bad_dir), "--strict", "--out", str(tmp_path / "s.h5")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "--strict:" in r.stderr and str(bad_dir) in r.stderr
    assert not (tmp_path / "s.h5").exists()
    # only sky fibres: nothing to keep -> exit 1, the report is still written
    cmd = [sys.executable, "-m", "specclass", "build-dataset", str(sdss_dir / "sky"), "--no-progress", "--out", str(tmp_path / "sky.npz")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "no spectrum was kept" in r.stderr
    assert (tmp_path / "sky.npz.skipped.csv").exists() and not (tmp_path / "sky.npz").exists()


def test_a_dataset_locked_by_another_process_says_so_and_how_to_proceed(tmp_path, sdss_dir, capsys):
    # issue 12 item 7: was "not a readable specclass dataset"
    from specclass.spectra.build import build_dataset
    from specclass.spectra.dataset import DatasetLockedError

    ds, _ = build_dataset([sdss_dir / "spectra3"], labels="class3")
    path = ds.save(tmp_path / "ds.h5")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); "
         "sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE"})
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DatasetLockedError, match="locked by another process") as info:
            SpectralDataset.load(path)
        assert str(path) in str(info.value) and "HDF5_USE_FILE_LOCKING=FALSE" in str(info.value)
        assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
        assert "HDF5_USE_FILE_LOCKING=FALSE" in capsys.readouterr().err
        # what the message suggests works: the same read with locking off
        env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE", "PYTHONPATH": os.pathsep.join(sys.path)}
        code = ("import sys; from specclass.spectra.dataset import SpectralDataset; "
                "print(len(SpectralDataset.load(sys.argv[1])))")
        done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert int(done.stdout.strip()) == len(ds)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
