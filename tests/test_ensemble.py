"""Ensembles as run folders: train --ensemble (resumable), specclass ensemble, load_run, predict, evaluate, export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from specclass import persistence  # noqa: E402
from specclass.cli import main  # noqa: E402
from specclass.ensemble import EnsembleError, EnsembleRun, assemble, combine_probabilities, load_ensemble  # noqa: E402
from specclass.predict import predict_dataset, predict_files  # noqa: E402


@pytest.fixture(scope="module")
def inputs(sdss_dir: Path) -> list[Path]:
    return [sdss_dir / "spectra3", *sorted((sdss_dir / "spectra2").glob("spec-*.fits"))[:8]]


@pytest.fixture(scope="module")
def ds_path(tmp_path_factory, inputs) -> Path:
    from specclass.spectra.build import build_dataset

    ds, _ = build_dataset(inputs, labels="class3")
    assert len(ds) >= 12
    return ds.save(tmp_path_factory.mktemp("ds") / "ds.h5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ds_path):
    """An ensemble trained as 1 member, then extended to 2 by re-running with --ensemble 2.

    Returns ``(run, first_output, second_output, member seed3's probabilities after the first call)``.
    """
    capsys = _Capture()
    run = tmp_path_factory.mktemp("ens") / "run"
    first = capsys.call(lambda: _train_cli(ds_path, run, 1))
    alone = predict_dataset(run / "members" / "seed3", ds_path)
    second = capsys.call(lambda: _train_cli(ds_path, run, 2))
    return run, first, second, alone


class _Capture:
    """Module-scoped stand-in for capsys: the CLI's stdout of one call."""

    def call(self, fn) -> str:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert fn() == 0
        return buf.getvalue()


def _train_cli(ds_path: Path, out: Path, k: int) -> int:
    return main(["train", str(ds_path), "--model", "spectral_tutorial", "--epochs", "1", "--batch-size", "16",
                 "--out", str(out), "--quiet", "--seed", "3", "--n-sim-per-class", "0", "--ensemble", str(k)])


def _p(rows, names) -> np.ndarray:
    return np.array([[r[f"p_{c}"] for c in names] for r in rows], dtype=np.float64)


def test_train_ensemble_continues_unfinished_members(trained) -> None:
    run, first, second, alone = trained
    info = json.loads((run / "ensemble.json").read_text())
    assert info["members"] == ["seed3", "seed4"] and info["seeds"] == {"seed3": 3, "seed4": 4}
    assert info["combination"] == "mean_log_probability" and info["created_by"] == "specclass train --ensemble 2"
    assert "member 1/1: seed3 (seed 3)" in first and "ensemble of 1 members written" in first
    # the second call keeps the finished member (resumed at its last epoch, nothing trained) and trains the new one
    member1, member2 = second.split("member 2/2: seed4 (seed 4)")
    assert "resumed from epoch 1" in member1 and "resumed from" not in member2
    names = persistence.load_preprocessor(run).class_names
    assert json.loads((run / "members" / "seed4" / "config.json").read_text())["seed"] == 4
    # member seed3's model is the same after the second call
    kept = predict_dataset(run / "members" / "seed3", _ds_of(run))
    np.testing.assert_allclose(_p(kept, names), _p(alone, names), rtol=0, atol=1e-6)


def _ds_of(run: Path) -> Path:
    return Path(json.loads((run / "ensemble.json").read_text())["dataset"])


def test_an_interrupted_ensemble_says_how_to_finish_it(trained, tmp_path) -> None:
    run = trained[0]
    partial = tmp_path / "partial"
    shutil.copytree(run / "members", partial / "members")
    with pytest.raises(persistence.RunFolderError, match="unfinished ensemble .*seed3, seed4.*re-run"):
        persistence.load_run(partial)


def test_ensemble_predicts_the_geometric_mean_of_its_members(trained, inputs) -> None:
    run = trained[0]
    ens = persistence.load_run(run, compile=False)
    assert isinstance(ens, EnsembleRun) and list(ens.members) == ["seed3", "seed4"]
    names = ens.class_names
    members = [persistence.load_run(run / "members" / m, compile=False) for m in ("seed3", "seed4")]
    assert all(m.calibration is not None for m in members)
    for calibrate in (True, False):
        # the network's own probabilities (the SDSS pipeline rule acts on the combined ones)
        rows, fails = predict_files(ens, inputs, calibrate=calibrate, pipeline_rule=False)
        alone = [predict_files(m, inputs, calibrate=calibrate, pipeline_rule=False)[0] for m in members]
        assert len(rows) == len(alone[0]) == len(alone[1]) >= 12 and not fails
        logp = np.mean([np.log(_p(a, names)) for a in alone], axis=0)  # each member calibrated by its own T
        want = np.exp(logp) / np.exp(logp).sum(axis=1, keepdims=True)
        got = _p(rows, names)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        assert [r["predicted_class"] for r in rows] == [names[i] for i in want.argmax(axis=1)]
        assert [r["uncertain"] for r in rows] == [int(p < 0.5) for p in want.max(axis=1)]
    # the dataset path gives the same probabilities as the files
    ds_rows = predict_dataset(ens, _ds_of(run), pipeline_rule=False)
    alone = [predict_dataset(m, _ds_of(run), pipeline_rule=False) for m in members]
    np.testing.assert_allclose(_p(ds_rows, names), combine_probabilities([_p(a, names) for a in alone]),
                               rtol=0, atol=2e-6)


def test_combine_probabilities_is_the_renormalised_geometric_mean() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    b = np.array([[0.1, 0.6, 0.3], [0.2, 0.4, 0.4]])
    got = combine_probabilities([a, b])
    g = np.sqrt(a * b)
    np.testing.assert_allclose(got[0], g[0] / g[0].sum(), rtol=1e-6)
    assert got[1, 0] < 1e-15 and got.dtype == np.float32 and np.allclose(got.sum(axis=1), 1)
    np.testing.assert_allclose(combine_probabilities([a]), a, atol=1e-7)
    with pytest.raises(ValueError, match="K >= 1"):
        combine_probabilities(np.zeros((0, 2, 3)))


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_mismatched_members_are_refused_naming_the_member(trained, tmp_path, capsys) -> None:
    run = trained[0]
    a = run / "members" / "seed3"
    other = shutil.copytree(run / "members" / "seed4", tmp_path / "other")
    _edit(other / "preprocessing.json", lambda d: d.update(class_names=list(reversed(d["class_names"]))))
    with pytest.raises(EnsembleError, match=r"run folder \S*other cannot join run folder \S*seed3: it has classes \['STAR', 'QSO', 'GALAXY'\] instead of"):
        assemble([a, other], tmp_path / "e1")
    assert not (tmp_path / "e1").exists()

    grid = shutil.copytree(run / "members" / "seed4", tmp_path / "grid")
    _edit(grid / "preprocessing.json", lambda d: d["grid"].update(loglam_min=d["grid"]["loglam_min"] + 0.01))
    assert main(["ensemble", str(a), str(grid), "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert f"run folder {grid} cannot join run folder {a}: it has grid" in err and "Å" in err

    nomodel = shutil.copytree(run / "members" / "seed4", tmp_path / "nomodel")
    (nomodel / "model.keras").unlink()
    with pytest.raises(EnsembleError, match="nomodel: missing model.keras"):
        assemble([a, nomodel], tmp_path / "e3")
    with pytest.raises(EnsembleError, match="is itself an ensemble"):
        assemble([run], tmp_path / "e4")

    # a member changed or removed after the ensemble was made: loading names it
    broken = shutil.copytree(run, tmp_path / "broken")
    _edit(broken / "members" / "seed4" / "preprocessing.json", lambda d: d.update(channels=2))
    with pytest.raises(EnsembleError, match="member seed4 cannot join member seed3: it has channels 2 instead of 1"):
        persistence.load_run(broken)
    shutil.rmtree(broken / "members" / "seed4")
    assert main(["predict", str(broken), str(a.parent.parent), "--out", str(tmp_path / "x.csv")]) == 2
    assert "member seed4 listed in ensemble.json is missing" in capsys.readouterr().err


def test_assembled_ensemble_predict_and_evaluate_cli(trained, inputs, tmp_path, capsys) -> None:
    run = trained[0]
    out = tmp_path / "assembled"
    assert main(["ensemble", str(run / "members" / "seed3"), str(run / "members" / "seed4"), "--out", str(out)]) == 0
    assert "ensemble of 2 members" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "members").iterdir()) == ["seed3", "seed4"]
    assert not (out / "members" / "seed3" / "checkpoints").exists()
    assert not any(p.is_symlink() for p in out.rglob("*"))

    csv_path = tmp_path / "p.csv"
    assert main(["predict", str(out), *map(str, inputs), "--out", str(csv_path)]) == 0
    text = capsys.readouterr().out
    assert "probabilities: ensemble of 2 members: mean of the members' log-probabilities" in text
    assert "seed3 T = " in text and "classified" in text
    with csv_path.open() as fh:
        table = [r for r in csv.DictReader(fh) if not r["reason"]]
    rows, _ = predict_files(run, inputs)  # the trained ensemble: same members
    assert len(table) == len(rows)
    names = persistence.load_preprocessor(out).class_names
    for got, want in zip(table, rows):
        assert got["predicted_class"] == want["predicted_class"] and int(got["uncertain"]) == want["uncertain"]
        assert all(abs(float(got[f"p_{c}"]) - want[f"p_{c}"]) < 1e-5 for c in names)

    assert main(["evaluate", str(out), str(_ds_of(run)), "--split", "all"]) == 0
    text = capsys.readouterr().out
    assert "balanced_accuracy=" in text and "ensemble of 2 members: mean of the members" in text
    metrics = json.loads((out / "metrics-all.json").read_text())
    assert metrics["n"] == len(rows) and (out / "report-all.html").is_file()
    assert metrics["calibration"]["ece_calibrated"] is not None


def test_export_numpy_exports_each_member_and_refuses_onnx(trained, inputs, tmp_path, capsys) -> None:
    from specclass.inference.load import _member_numpy_loader

    run = shutil.copytree(trained[0], tmp_path / "run")
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "is an ensemble: only --format numpy exports it" in capsys.readouterr().err
    assert main(["export", str(run)]) == 0
    assert "exported member seed4" in capsys.readouterr().out
    assert all((run / "members" / m / "model.numpy.h5").is_file() for m in ("seed3", "seed4"))
    numpy_ens = load_ensemble(run, loader=_member_numpy_loader)
    rows_np, _ = predict_files(numpy_ens, inputs)
    rows, _ = predict_files(run, inputs)
    names = numpy_ens.class_names
    np.testing.assert_allclose(_p(rows_np, names), _p(rows, names), rtol=0, atol=1e-5)

    # without Keras, 'specclass predict ENSEMBLE' uses the members' numpy files (the one import tried is the
    # check whether Keras is there, as for a single run folder)
    import subprocess
    import sys

    from test_numpy_predictor import _no_tf_env

    env = _no_tf_env(tmp_path)
    out = tmp_path / "no_tf.csv"
    proc = subprocess.run([sys.executable, "-m", "specclass", "predict", str(run), *map(str, inputs), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "blocked.txt").read_text() == "keras" and "ensemble of 2 members" in proc.stdout
    with out.open() as fh:
        table = [r for r in csv.DictReader(fh) if not r["reason"]]
    assert [r["predicted_class"] for r in table] == [r["predicted_class"] for r in rows]
    assert np.allclose([[float(r[f"p_{c}"]) for c in names] for r in table], _p(rows, names), rtol=0, atol=2e-5)


def test_train_ensemble_refuses_a_single_run_folder(trained, capsys) -> None:
    run = trained[0]
    assert main(["train", str(_ds_of(run)), "--model", "spectral_tutorial", "--epochs", "1", "--out",
                 str(run / "members" / "seed3"), "--n-sim-per-class", "0", "--ensemble", "2"]) == 2
    assert "holds a single run (model or checkpoints at its top level), not an ensemble" in capsys.readouterr().err
