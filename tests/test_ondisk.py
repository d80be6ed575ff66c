"""Datasets larger than memory: chunked simulate, lazy rows, streamed training, evaluation, prediction."""

from __future__ import annotations

import hashlib
import math

import h5py
import numpy as np
import pytest

from specclass.simulate.simulator import SimulationConfig, Simulator
from specclass.spectra.dataset import SpectralDataset
from specclass.spectra.ondisk import DatasetWriter, OnDiskDataset, open_dataset, read_rows
from specclass.training.feeding import stream_order, use_streaming


@pytest.fixture(scope="module")
def sim_pair(tmp_path_factory):
    """The same simulation (seed4, 40 per class = 160 rows) in memory and written chunk by chunk."""
    folder = tmp_path_factory.mktemp("ondisk")
    cfg = SimulationConfig(n_per_class=40, labels="seed4", seed=3)
    ds = Simulator(cfg).run()
    path = Simulator(cfg).run(out=folder / "chunked.h5")
    return ds, path


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f")


def test_chunked_simulate_writes_the_in_memory_bytes(sim_pair, tmp_path):
    ds, path = sim_pair
    back = SpectralDataset.load(path)
    for name in ("flux", "ivar", "labels", "loglam"):
        assert getattr(back, name).tobytes() == getattr(ds, name).tobytes(), name
    assert set(back.meta) == set(ds.meta)
    assert all(_equal(back.meta[k], ds.meta[k]) for k in ds.meta)
    assert back.attrs["build_report"] == ds.attrs["build_report"]
    with h5py.File(path) as h5:
        assert h5["flux"].chunks == (160, back.flux.shape[1]) and h5["flux"].compression == "gzip"
    assert not list(path.parent.glob(".specclass-simulate-*"))  # scratch files gone


def test_float16_storage_reads_back_float32_within_half_precision(sim_pair, tmp_path):
    ds, _ = sim_pair
    path = Simulator(SimulationConfig(n_per_class=40, labels="seed4", seed=3)).run(
        out=tmp_path / "half.h5", storage_dtype="float16")
    with h5py.File(path) as h5:
        assert h5["flux"].dtype == np.float16
    back = SpectralDataset.load(path)
    assert back.flux.dtype == np.float32 and back.attrs["storage_dtype"] == "float16"
    np.testing.assert_allclose(back.flux, ds.flux, rtol=2**-11, atol=6e-8)
    np.testing.assert_allclose(back.ivar, ds.ivar, rtol=2**-11, atol=6e-8)
    assert path.stat().st_size < 0.8 * sim_pair[1].stat().st_size


def test_uncompressed_storage_holds_the_same_arrays(sim_pair, tmp_path):
    from specclass.cli import main

    ds, path = sim_pair
    plain = Simulator(SimulationConfig(n_per_class=40, labels="seed4", seed=3)).run(
        out=tmp_path / "plain.h5", compression="none")
    with h5py.File(plain) as h5:
        assert h5["flux"].compression is None and h5["flux"].chunks == (160, ds.flux.shape[1])
    back = SpectralDataset.load(plain)
    assert back.flux.tobytes() == ds.flux.tobytes() and back.ivar.tobytes() == ds.ivar.tobytes()
    assert plain.stat().st_size > path.stat().st_size  # gzip is the smaller file
    with pytest.raises(ValueError, match="compression must be one of"):
        Simulator(SimulationConfig(n_per_class=2, labels="seed4", seed=3)).run(out=tmp_path / "x.h5", compression="lz4")
    assert main(["simulate", "--n-per-class", "2", "--out", str(tmp_path / "p.h5"), "--compression", "none"]) == 2


def test_float16_overflow_is_refused_and_leaves_no_file(tmp_path):
    out = tmp_path / "big.h5"
    loglam = 3.58 + 1e-4 * np.arange(8)
    with pytest.raises(ValueError, match=r"ivar reaches 1e\+05.*float16"):
        with DatasetWriter(out, 2, loglam, storage_dtype="float16") as w:
            w.write(0, np.ones((2, 8)), np.full((2, 8), 1e5))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_writer_closed_without_finish_writes_nothing(tmp_path):
    out = tmp_path / "half-done.h5"
    with pytest.raises(RuntimeError, match="before finish"):
        with DatasetWriter(out, 2, 3.58 + 1e-4 * np.arange(8)) as w:
            w.write(0, np.ones((2, 8)), np.ones((2, 8)))
    assert not out.exists()


def test_lazy_rows_index_like_arrays(sim_pair):
    ds, path = sim_pair
    with OnDiskDataset(path) as lazy:
        assert lazy.flux.shape == ds.flux.shape and len(lazy) == len(ds)
        for key in (5, slice(10, 20), np.array([150, 3, 77, 3]), ds.labels == 1):
            assert np.array_equal(lazy.flux[key], ds.flux[key])
            assert np.array_equal(lazy.ivar[key], ds.ivar[key])
        val = lazy.split("val")
        ref = ds.split("val")
        assert np.array_equal(val.labels, ref.labels) and np.array_equal(np.asarray(val.flux), ref.flux)
        assert np.array_equal(val.flux[[2, 0]], ref.flux[[2, 0]])


def test_read_rows_reads_one_slab_per_chunk(tmp_path):
    data = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    with h5py.File(tmp_path / "c.h5", "w") as h5:
        h5.create_dataset("x", data=data, chunks=(8, 3))
    with h5py.File(tmp_path / "c.h5") as h5:
        rows = np.array([39, 0, 9, 8, 17, 0])
        assert np.array_equal(read_rows(h5["x"], rows), data[rows])


def test_npz_is_opened_in_memory_and_cannot_stream(sim_pair, tmp_path):
    ds, _ = sim_pair
    npz = ds.save(tmp_path / "d.npz")
    assert isinstance(open_dataset(npz), SpectralDataset)
    with pytest.raises(ValueError, match="HDF5"):
        use_streaming(npz, True)
    with pytest.raises(ValueError, match="in-memory"):
        use_streaming(ds, True)
    assert use_streaming(sim_pair[1], None) is False  # small file: auto keeps it in memory


def test_stream_order_small_file_is_the_in_memory_permutation():
    rows = np.arange(0, 300, 2)
    order, buf = stream_order(rows, 16, seed=5, epoch=2, buffer_rows=1000)
    assert np.array_equal(order, np.random.default_rng([5, 2]).permutation(rows.size))
    assert not buf.any()


def test_stream_order_large_file_visits_each_row_once_in_whole_chunk_buffers():
    rows = np.flatnonzero(np.random.default_rng(0).random(5000) < 0.8)
    order, buf = stream_order(rows, 64, seed=1, epoch=0, buffer_rows=256)
    assert np.array_equal(np.sort(order), np.arange(rows.size))
    chunk = rows // 64
    for b in np.unique(buf):  # a buffer holds whole chunks, about buffer_rows rows
        pos = np.flatnonzero(buf == b)
        assert set(chunk[pos]).isdisjoint(chunk[buf != b])
        assert len(set(chunk[pos])) <= 4
    # rows of one buffer are contiguous in the visiting order
    assert np.all(np.diff(buf[order]) >= 0)
    again, _ = stream_order(rows, 64, seed=1, epoch=0, buffer_rows=256)
    other, _ = stream_order(rows, 64, seed=1, epoch=1, buffer_rows=256)
    assert np.array_equal(order, again) and not np.array_equal(order, other)


keras = pytest.importorskip("keras")


def _sequences(ds, path, buffer_rows, augmentation=None):
    from specclass.preprocessing import Preprocessor
    from specclass.training.feeding import _spectra_sequence_class, _split_rows, _streaming_sequence_class

    train_idx, _ = _split_rows(ds)
    y = ds.labels[train_idx]
    w = np.ones(y.size, np.float32)
    pre = Preprocessor.from_dataset(ds)
    mem = _spectra_sequence_class()(ds.flux[train_idx], ds.ivar[train_idx], y, w, pre, 16, augmentation, 9)
    lazy = OnDiskDataset(path)
    disk = _streaming_sequence_class()(lazy.subset(train_idx), y, w, pre, 16, augmentation, 9, 0, buffer_rows)
    return mem, disk, lazy


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_batches_equal_the_in_memory_sequence(sim_pair, augment):
    from specclass.training import Augmentation

    ds, path = sim_pair
    mem, disk, lazy = _sequences(ds, path, 4096, Augmentation() if augment else None)
    with lazy:
        assert not disk.sequential  # one buffer: Keras may shuffle the batch order, as for `mem`
        for _ in range(2):  # two epochs: reshuffled the same way
            assert len(mem) == len(disk)
            for i in range(len(mem)):
                for a, b in zip(mem[i], disk[i]):
                    assert np.array_equal(a, b)
            mem.on_epoch_end()
            disk.on_epoch_end()


def test_streaming_holds_at_most_three_buffers_and_reads_ahead(sim_pair, tmp_path):
    ds, _ = sim_pair
    path = tmp_path / "small-chunks.h5"
    order = np.arange(len(ds))
    from specclass.spectra.ondisk import write_rows_in_order

    write_rows_in_order(path, ds.flux, ds.ivar, order, ds.labels, ds.class_names, ds.loglam, ds.meta,
                        ds.attrs, chunk_rows=8)
    _, disk, lazy = _sequences(ds, path, 24)
    _, plain, lazy2 = _sequences(ds, path, 24)
    plain._read_ahead = lambda b: None  # the same sequence without the background reader
    with lazy, lazy2:
        seen, ahead = [], 0
        for i in range(len(disk)):
            x, y, _ = disk[i]
            assert len(disk._cache) + (disk._ahead is not None) <= 3
            ahead += disk._ahead is not None
            for a, b in zip((x, y), plain[i]):
                assert np.array_equal(a, b)  # reading ahead changes when, never what
            seen.append(y)
        assert ahead > 0 and plain._reader is None
        assert sorted(np.concatenate(seen).tolist()) == sorted(ds.labels[ds.meta["split"] == 0].tolist())
        assert math.ceil(int((ds.meta["split"] == 0).sum()) / 16) == len(disk)
        assert disk.sequential  # several buffers: train() asks Keras for the batches in order
        for i in np.random.default_rng(0).permutation(len(disk)):  # any access order stays bounded
            disk[int(i)]
            assert len(disk._cache) <= 2 and len(disk._cache) + (disk._ahead is not None) <= 3
        disk.on_epoch_end()  # a pending read is finished, not lost, before the next epoch's order
        assert disk._ahead is None


def test_train_streamed_equals_in_memory_sequence_run(sim_pair, tmp_path):
    """Same seed, same batches: a streamed run's history equals the in-memory PyDataset run's."""
    from specclass.training import Augmentation, train

    ds, path = sim_pair
    kw = dict(epochs=2, batch_size=32, seed=4, verbose=0, augment=Augmentation(noise=0.5))
    mem = train(ds, "spectral_tutorial", tmp_path / "mem", **kw)
    disk = train(path, "spectral_tutorial", tmp_path / "disk", stream=True, **kw)
    assert disk.config["feeding"] == {"mode": "stream", "shuffle_buffer": 8192}
    assert disk.config["dataset"]["sha256"] == mem.config["dataset"]["sha256"]
    for key in ("loss", "val_loss", "val_accuracy", "val_balanced_accuracy"):
        np.testing.assert_allclose(disk.history[key], mem.history[key], rtol=1e-5, err_msg=key)
    assert disk.temperature == pytest.approx(mem.temperature, rel=1e-4)
    assert (tmp_path / "disk" / "model.keras").is_file()


def test_evaluate_and_predict_dataset_stream(sim_pair, tmp_path):
    from specclass.evaluation import evaluate_run
    from specclass.predict import predict_dataset
    from specclass.training import train

    ds, path = sim_pair
    run = tmp_path / "run"
    train(ds, "spectral_tutorial", run, epochs=1, batch_size=32, seed=4, verbose=0)
    on_disk = evaluate_run(run, path, split="test")
    in_mem = evaluate_run(run, ds, split="test")
    assert on_disk["confusion_matrix"] == in_mem["confusion_matrix"]
    assert on_disk["accuracy"] == pytest.approx(in_mem["accuracy"])
    rows_disk = predict_dataset(run, path, split="val", out=tmp_path / "p.csv")
    rows_mem = predict_dataset(run, ds, split="val")
    assert [r["predicted_class"] for r in rows_disk] == [r["predicted_class"] for r in rows_mem]
    np.testing.assert_allclose([r["probability"] for r in rows_disk], [r["probability"] for r in rows_mem],
                               rtol=1e-5)


def test_simulate_cli_float16(tmp_path, capsys):
    from specclass.cli import main

    out = tmp_path / "cli.h5"
    assert main(["simulate", "--n-per-class", "5", "--seed", "1", "--out", str(out), "--float16", "--json",
                 "--label-source", "construction"]) == 0
    assert '"n": 20' in capsys.readouterr().out
    assert SpectralDataset.load(out).attrs["storage_dtype"] == "float16"
    digest = hashlib.sha256(SpectralDataset.load(out).flux.tobytes()).hexdigest()
    assert main(["simulate", "--n-per-class", "5", "--seed", "1", "--out", str(out), "--float16",
                 "--overwrite", "--json", "--label-source", "construction"]) == 0
    assert hashlib.sha256(SpectralDataset.load(out).flux.tobytes()).hexdigest() == digest


def test_meta_columns_are_read_when_used(sim_pair):
    """A million-row file held 637 MB of metadata in memory as soon as it was opened (README
    "Survey scale"); columns are now read on first use, views index them by their rows."""
    ds, path = sim_pair
    with OnDiskDataset(path) as lazy:
        assert lazy.meta._cache == {} and set(lazy.meta) == set(ds.meta)
        train = lazy.split("train")
        assert set(lazy.meta._cache) == {"split"} and train.meta._cache.keys() == {"split"}
        rows = np.flatnonzero(ds.meta["split"] == 0)
        for k in ("object_id", "sim_template", "z"):
            assert _equal(train.meta[k], ds.meta[k][rows])  # read through the view
        first = train.subset(slice(0, 5))
        assert _equal(first.meta["object_id"], ds.meta["object_id"][rows[:5]])
        assert _equal(first.subset(np.array([4, 0])).meta["sim_template"], ds.meta["sim_template"][rows[[4, 0]]])
        train.meta["note"] = np.full(len(train), "x")
        assert "note" in train.meta and "note" not in lazy.meta and train.subset(slice(0, 2)).meta["note"].tolist() == ["x", "x"]
        with pytest.raises(KeyError):
            lazy.meta["no_such_column"]
        assert _equal(lazy.to_memory().meta["object_id"], ds.meta["object_id"])
