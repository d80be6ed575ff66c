"""specclass on a real SLURM: a single-node cluster on localhost (see ``slurm_cluster.py``).

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them); skipped,
with the reason, when they are not installed. Jobs run as the current user with
the interpreter running the tests, so they import this checkout.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slurm_cluster import LocalSlurm, missing_programs
from specclass.cli import main
from specclass.cluster import arrays, slurm
from specclass.cluster.slurm import EXIT_INTERRUPTED

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM (partitions std and gpu); stopped after this module."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def slurm_env(cluster, monkeypatch):
    """``SLURM_CONF`` of the test cluster in ``os.environ`` (for in-process ``specclass slurm``)."""
    for key, value in cluster.env().items():
        if key == "SLURM_CONF":
            monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_")) and k != "SLURM_CONF"]:
        monkeypatch.delenv(key)
    return cluster.env()


def _cli(capsys, *argv: str) -> list[str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"specclass {' '.join(argv)} -> {code}\n{err}"
    return out.strip().splitlines()


def _wait_ok(job_ids, env, timeout=240.0, logs=()):
    rows = slurm.wait(job_ids, timeout=timeout, poll=1.0, env=env)
    bad = [r for r in rows if r.state != "COMPLETED"]
    if bad:
        text = "\n".join(f"--- {p}\n{Path(p).read_text()[-3000:]}" for p in logs if Path(p).exists())
        pytest.fail(f"jobs not COMPLETED: {bad}\n{text}")
    return rows


def test_cluster_is_up(cluster, capsys, slurm_env):
    res = subprocess.run(["sinfo", "-h", "-o", "%P %a %t"], capture_output=True, text=True, env=slurm_env)
    assert res.stdout.split("\n")[:2] == ["std* up idle", "gpu up idle"]


def test_rendered_scripts_pass_sbatch_test_only(cluster, capsys, slurm_env, tmp_path):
    # the tutorial's Hamburg job (fitted to this 2-CPU node) and a gpu-partition job
    for argv in (["--profile", "hamburg", "-c", "2", "--mail-user", "nobody@localhost"],
                 ["--profile", "venv", "-p", "gpu", "-t", "00:05:00", "-n", "2", "-c", "1", "--srun"]):
        lines = _cli(capsys, "slurm", "submit", "--test-only", *argv, "-D", str(tmp_path), "--",
                     "train", "--epochs", "2")
        assert any("to start at" in line for line in lines), lines
    # a script SLURM refuses is reported with the failing command
    code = main(["slurm", "submit", "--test-only", "-p", "nosuchpartition", "--", "train"])
    err = capsys.readouterr().err
    assert code == 2 and "`sbatch --test-only" in err and "invalid partition" in err.lower()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, sdss_dir):
    """The real spec-lite files of ``sdss/spectra`` (115 spectra) as a dataset file."""
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset([sdss_dir / "spectra"])
    return ds.save(tmp_path_factory.mktemp("data") / "tiny.h5")


def _train_argv(dataset, epochs):
    return ["train", str(dataset), "--model", "spectral_tutorial", "--epochs", str(epochs), "--batch-size", "8",
            "--out", "run", "--quiet", "--n-sim-per-class", "0"]


def test_short_training_job_leaves_its_run_folder(cluster, capsys, slurm_env, tmp_path, tiny_dataset):
    log = tmp_path / "job.out"
    (job_id,) = _cli(capsys, "slurm", "submit", "-J", "train2", "-t", "00:05:00", "-c", "2",
                     "-o", str(log), "-D", str(tmp_path), "--", *_train_argv(tiny_dataset, 2))
    lines = _cli(capsys, "slurm", "status", job_id)  # queued or running: squeue answers
    assert lines[1].split()[0] == job_id and lines[1].endswith("[squeue]")
    _wait_ok([job_id], slurm_env, logs=[log])
    run = tmp_path / "run"
    assert (run / "model.keras").is_file() and (run / "preprocessing.json").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["epochs_done"] == 2
    text = log.read_text()
    assert "cpu_threads=2" in text  # SLURM_CPUS_PER_TASK reached the device strategy
    assert f"specclass job {job_id}: command exited with status 0" in text
    final = _cli(capsys, "slurm", "status", job_id)
    assert "COMPLETED" in final[1]


def _history_epochs(run: Path) -> list[int]:
    path = run / "history.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def test_signalled_job_resumes_without_lost_or_repeated_epochs(cluster, capsys, slurm_env, tmp_path, tiny_dataset):
    epochs = 10
    run = tmp_path / "run"
    log1, log2 = tmp_path / "first.out", tmp_path / "second.out"
    common = ["-t", "00:05:00", "-c", "2", "-D", str(tmp_path), "--"]
    (first,) = _cli(capsys, "slurm", "submit", "-J", "resume", "-o", str(log1), *common,
                    *_train_argv(tiny_dataset, epochs))
    deadline = time.monotonic() + 180
    while len(_history_epochs(run)) < 2:  # let it finish two epochs, then warn it as SLURM would
        assert time.monotonic() < deadline, log1.read_text() if log1.exists() else "no log"
        time.sleep(0.2)
    _cli(capsys, "slurm", "cancel", first, "--signal", "USR1", "--batch")
    rows = slurm.wait([first], timeout=120, poll=0.5, env=slurm_env)
    text = log1.read_text()
    assert rows[0].exit_code.startswith(f"{EXIT_INTERRUPTED}:"), (rows, text[-3000:])
    assert "received SIGUSR1" in text and f"command exited with status {EXIT_INTERRUPTED}" in text
    done = _history_epochs(run)
    assert 2 <= len(done) < epochs and done == list(range(len(done)))
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == len(done)

    (second,) = _cli(capsys, "slurm", "submit", "-J", "resume", "-o", str(log2), *common,
                     *_train_argv(tiny_dataset, epochs))
    _wait_ok([second], slurm_env, logs=[log2])
    assert _history_epochs(run) == list(range(epochs))  # each epoch exactly once
    config = json.loads((run / "config.json").read_text())
    assert config["resumed_from_epoch"] == len(done) and config["epochs_done"] == epochs
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_loss"]) == epochs
    # the default monitor is val_balanced_accuracy (the benchmark recipe): best = its maximum
    assert config["monitor"] == "val_balanced_accuracy"
    bal = [v for v in history["val_balanced_accuracy"] if v is not None]
    assert config["best_score"] == pytest.approx(max(bal), rel=1e-6)  # best over both sessions


def _same_dataset(a, b):
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.ivar, b.ivar)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert list(a.class_names) == list(b.class_names)
    for col in a.meta:
        np.testing.assert_array_equal(a.meta[col], b.meta[col], err_msg=col)


def test_array_build_equals_one_process_and_a_failed_shard_reruns_alone(cluster, capsys, slurm_env, tmp_path,
                                                                          sdss_dir):
    from specclass.spectra.build import build_dataset
    from specclass.spectra.dataset import SpectralDataset

    folder = tmp_path / "spectra"
    folder.mkdir()
    # strict: any unreadable or fully masked file fails its shard (leave out the real all-masked one)
    real = sorted(f for f in (sdss_dir / "spectra").glob("spec-*.fits") if f.name != "spec-0269-51581-0003.fits")
    for f in real:
        (folder / f.name).symlink_to(f)
    broken = folder / real[len(real) // 2].name.replace(".fits", "-b.fits")  # sorts into the middle shard
    broken.write_text("<html><body>503 Service Unavailable</body></html>")
    out = tmp_path / "sdss.h5"
    lines = _cli(capsys, "slurm", "build-dataset-array", str(folder), "--out", str(out), "--n-shards", "3",
                 "--strict", "-t", "00:05:00", "-J", "shards")
    array_id, merge_id = lines[-2], lines[-1]
    plan_path = out.with_name("sdss.h5.shards") / "plan.json"
    plan = arrays.ArrayPlan.load(plan_path)
    deadline = time.monotonic() + 180
    while True:  # the shard holding the broken file fails; the merge job can never start
        tasks = {r.job_id: r for r in slurm.status([array_id], env=slurm_env)}
        if len(tasks) == 3 and all(r.finished for r in tasks.values()):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(1)
    assert {k: v.state for k, v in tasks.items()} == {
        f"{array_id}_0": "COMPLETED", f"{array_id}_1": "FAILED", f"{array_id}_2": "COMPLETED"}
    assert plan.missing_shards() == [1] and not out.exists()
    merge_row = slurm.status([merge_id], env=slurm_env)[0]
    assert merge_row.state == "PENDING" and "Dependency" in merge_row.reason  # (…NeverSatisfied, soon)
    assert broken.name in (Path(plan.shard_dir) / f"shard-{array_id}_1.out").read_text()

    # fix the input, re-run only the failed shard; the stuck merge job is cancelled
    broken.unlink()
    broken.symlink_to(real[0])
    lines = _cli(capsys, "slurm", "build-dataset-array", "--plan", str(plan_path), "--only-shards", "missing",
                 "-t", "00:05:00")
    assert "shards 1)" in lines[-3]
    array2, merge2 = lines[-2], lines[-1]
    _wait_ok([array2, merge2], slurm_env, logs=list(Path(plan.shard_dir).glob("*.out")))
    assert [r.job_id for r in slurm.status([array2], env=slurm_env)] == [f"{array2}_1"]  # only shard 1 ran
    assert slurm.status([merge_id], env=slurm_env)[0].state == "CANCELLED"
    reference, _ = build_dataset([folder], strict=True)
    built = SpectralDataset.load(out)
    assert len(built) == len(reference) == len(real)  # the copy is dropped as a duplicate
    _same_dataset(built, reference)
    assert [j["shards"] for j in arrays.ArrayPlan.load(plan_path).jobs] == ["0-2", "1"]


def _job_fields(job_id: str, env) -> dict[str, str]:
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True,
                         env=env).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def test_requeue_on_signal_resumes_in_the_same_job(cluster, capsys, slurm_env, tmp_path, tiny_dataset):
    epochs = 8
    run, log = tmp_path / "run", tmp_path / "job.out"
    (job,) = _cli(capsys, "slurm", "submit", "-J", "requeue", "-o", str(log), "-t", "00:05:00", "-c", "2",
                  "--requeue-on-signal", "-D", str(tmp_path), "--", *_train_argv(tiny_dataset, epochs))
    deadline = time.monotonic() + 180
    while len(_history_epochs(run)) < 2:
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.2)
    _cli(capsys, "slurm", "cancel", job, "--signal", "USR1", "--batch")
    while True:  # the job requeues itself; SLURM then holds it back (BeginTime) for a while
        fields = _job_fields(job, slurm_env)
        if fields.get("Restarts") == "1" and fields.get("JobState") == "PENDING":
            break
        assert time.monotonic() < deadline, fields
        time.sleep(0.5)
    done = len(_history_epochs(run))
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, env=slurm_env)
    _wait_ok([job], slurm_env, logs=[log])
    text = log.read_text()  # --requeue implies --open-mode=append: both runs are in the log
    assert f"command exited with status {EXIT_INTERRUPTED}" in text and "command exited with status 0" in text
    assert f"resumed from epoch {done}" in text
    assert _history_epochs(run) == list(range(epochs))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax not installed (pip install 'specclass[jax]'); multi-process path needs JAX")
def test_two_process_data_parallel_equals_one_process(cluster, capsys, slurm_env, tmp_path, shared_data):
    data = shared_data / "sdss" / "arrays" / "sdss_star_spectra_txt.npz"
    log = tmp_path / "dp.out"
    job = [sys.executable, str(TESTS / "slurm_dp_job.py"), "--data", str(data), "--out", str(tmp_path / "two")]
    (job_id,) = _cli(capsys, "slurm", "submit", "-J", "dp", "-t", "00:05:00", "-n", "2", "-c", "1", "--srun",
                     "--env", "KERAS_BACKEND=jax", "-o", str(log), "--", *job)
    one = subprocess.run([sys.executable, str(TESTS / "slurm_dp_job.py"), "--data", str(data),
                          "--out", str(tmp_path / "one"), "--strategy", "none"],
                         env={**slurm_env, "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    _wait_ok([job_id], slurm_env, logs=[log])
    text = log.read_text()
    assert "strategy=multi-node backend=jax replicas=2 processes=2" in text
    ref = np.load(tmp_path / "one" / "result-0.npz")
    for rank in (0, 1):
        got = np.load(tmp_path / "two" / f"result-{rank}.npz")
        assert int(got["num_processes"]) == 2
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5)
        for key in (k for k in ref.files if k.startswith("w")):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert ref["loss"][-1] < ref["loss"][0]  # it learned something


def test_predict_array_merges_to_the_one_process_csv_and_a_failed_shard_reruns_alone(
        cluster, capsys, slurm_env, tmp_path, tiny_dataset, sdss_dir):
    from specclass.predict import predict_files
    from specclass.training import train

    run = tmp_path / "run"
    train(tiny_dataset, "spectral_tutorial", run, epochs=1, batch_size=16, seed=2, verbose=0)
    inputs = [sdss_dir / "spectra3", sdss_dir / "sky", sdss_dir / "text_stars"]
    reference = tmp_path / "one.csv"
    predict_files(run, inputs, out=reference)
    out = tmp_path / "pred.csv"
    shard_dir = tmp_path / "pred.csv.shards"
    (shard_dir / "shard-0001-of-0003.csv").mkdir(parents=True)  # shard 1 cannot write its CSV: it fails
    lines = _cli(capsys, "slurm", "predict-array", str(run), *map(str, inputs), "--out", str(out),
                 "--n-shards", "3", "-t", "00:05:00", "-J", "pred")
    array_id, merge_id = lines[-2], lines[-1]
    plan_path = shard_dir / "plan.json"
    deadline = time.monotonic() + 200
    while True:
        tasks = {r.job_id: r for r in slurm.status([array_id], env=slurm_env)}
        if len(tasks) == 3 and all(r.finished for r in tasks.values()):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(1)
    assert {k: v.state for k, v in tasks.items()} == {
        f"{array_id}_0": "COMPLETED", f"{array_id}_1": "FAILED", f"{array_id}_2": "COMPLETED"}
    assert arrays.ArrayPlan.load(plan_path).missing_shards() == [1] and not out.exists()

    (shard_dir / "shard-0001-of-0003.csv").rmdir()
    lines = _cli(capsys, "slurm", "predict-array", "--plan", str(plan_path), "--only-shards", "missing",
                 "-t", "00:05:00")
    array2, merge2 = lines[-2], lines[-1]
    _wait_ok([array2, merge2], slurm_env, logs=list(shard_dir.glob("*.out")))
    assert [r.job_id for r in slurm.status([array2], env=slurm_env)] == [f"{array2}_1"]  # only shard 1 ran
    assert slurm.status([merge_id], env=slurm_env)[0].state == "CANCELLED"
    assert out.read_bytes() == reference.read_bytes()
