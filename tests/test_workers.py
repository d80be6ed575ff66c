"""All cores: build-dataset and predict with several processes give the one-process result."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from specclass.parallel import blocks, check_workers, default_workers


def test_default_workers_follow_slurm_then_affinity(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "7")
    assert default_workers() == 7
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert default_workers() == len(os.sched_getaffinity(0))
    assert check_workers(None) == default_workers() and check_workers(3) == 3
    with pytest.raises(ValueError, match="positive int"):
        check_workers(0)


def test_blocks_are_contiguous_and_ordered():
    items = list(range(10))
    parts = blocks(items, 3)
    assert [x for p in parts for x in p] == items and [len(p) for p in parts] == [3, 4, 3]
    assert blocks(items[:2], 5) == [[0], [1]]


@pytest.fixture(scope="module")
def two_builds(sdss_dir: Path):
    """The whole real SDSS folder (spectra, sky fibres, duplicates, DR7, text) with 1 and 2 workers."""
    from specclass.spectra.build import build_dataset

    one = build_dataset([sdss_dir], labels="seed4", workers=1)
    two = build_dataset([sdss_dir], labels="seed4", workers=2)
    return one, two


def test_build_dataset_two_workers_equal_one(two_builds):
    (a, ra), (b, rb) = two_builds
    assert len(a) > 200 and ra.skipped  # real skips (sky fibres, duplicates) are part of the comparison
    for name in ("flux", "ivar", "labels", "loglam"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.class_names == b.class_names
    for k in a.meta:
        assert np.array_equal(a.meta[k], b.meta[k], equal_nan=a.meta[k].dtype.kind == "f"), k
    assert [dataclasses.astuple(s) for s in ra.skipped] == [dataclasses.astuple(s) for s in rb.skipped]
    assert ra.to_dict() == rb.to_dict()


def test_build_dataset_cli_workers(sdss_dir, tmp_path, capsys):
    from specclass.cli import main
    from specclass.spectra.dataset import SpectralDataset

    outs = []
    for n in ("1", "2"):
        out = tmp_path / f"w{n}.h5"
        assert main(["build-dataset", str(sdss_dir / "spectra"), str(sdss_dir / "spectra2"), "--out", str(out),
                     "--no-progress", "--workers", n]) == 0
        outs.append(SpectralDataset.load(out))
    assert outs[0].flux.tobytes() == outs[1].flux.tobytes()
    assert np.array_equal(outs[0].meta["split"], outs[1].meta["split"])
    assert (tmp_path / "w1.h5.skipped.csv").read_bytes() == (tmp_path / "w2.h5.skipped.csv").read_bytes()


keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def run_dir(two_builds, tmp_path_factory):
    from specclass.training import train

    (ds, _), _ = two_builds
    out = tmp_path_factory.mktemp("workers") / "run"
    train(ds, "spectral_tutorial", out, epochs=1, batch_size=64, seed=1, verbose=0)
    return out


def test_predict_two_workers_write_the_one_process_csv(run_dir, sdss_dir, tmp_path):
    from specclass.predict_shards import predict_files_parallel

    inputs = [sdss_dir / "spectra", sdss_dir / "sky"]
    r1, f1 = predict_files_parallel(run_dir, inputs, workers=1, out=tmp_path / "one.csv")
    r2, f2 = predict_files_parallel(run_dir, inputs, workers=2, out=tmp_path / "two.csv")
    assert len(r1) > 100 and f1 and f1 == f2  # (rows hold NaN redshifts: compared through the CSV)
    assert [r["file"] for r in r1] == [r["file"] for r in r2]
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


def test_predict_shards_merge_to_the_one_process_csv(run_dir, sdss_dir, tmp_path):
    from specclass.predict import predict_files
    from specclass.predict_shards import merge_prediction_csvs, predict_shard

    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):  # unreadable files: failure rows, which go after every classified row
        (junk / f"broken-{i}.fits").write_bytes(b"not a FITS file, line 1\nline 2")
    inputs = [sdss_dir / "spectra3", junk, sdss_dir / "dr7", sdss_dir / "text_stars"]
    rows, failures = predict_files(run_dir, inputs, out=tmp_path / "one.csv")
    assert rows and len(failures) == 3
    parts = [tmp_path / f"part-{i}.csv" for i in range(4)]
    for i, part in enumerate(parts):
        predict_shard(run_dir, inputs, i, 4, part)
    assert merge_prediction_csvs(parts, tmp_path / "merged.csv") == (len(rows), len(failures))
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    with pytest.raises(FileNotFoundError, match="part-9.csv"):
        merge_prediction_csvs([*parts, tmp_path / "part-9.csv"], tmp_path / "x.csv")
