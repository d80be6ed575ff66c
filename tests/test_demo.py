"""The main job on the embedded sample: sample contents, dataset build, and a short end-to-end run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from specclass import sample
from specclass.spectra.dataset import SpectralDataset


def test_embedded_sample_is_real_small_and_float32_on_load():
    files = [sample.gridded_path(), *sample.spectra_dir().iterdir(), sample.text_labels_path()]
    total = sum(p.stat().st_size for p in files)
    assert total < 6e6, f"embedded sample is {total / 1e6:.1f} MB; keep it a few MB"
    ds = sample.load_gridded()
    assert ds.flux.dtype == np.float32 and ds.ivar.dtype == np.float32
    assert ds.class_names == ["AGN", "GALAXY", "QSO", "STAR"]
    counts = np.bincount(ds.labels, minlength=4)
    assert (counts > 0).all(), counts
    # every row names its real source file and has some good pixels
    assert all(ds.meta["file"])
    assert ((ds.ivar > 0).sum(axis=1) > 500).all()  # picca test files cover only ~600 pixels
    assert (sample.gridded_path().parent / "PROVENANCE.md").exists()


def test_demo_dataset_build_groups_and_keeps_every_raw_file(tmp_path):
    from specclass.demo import build_demo_dataset

    ds, report, path = build_demo_dataset(tmp_path, log=lambda s: None)
    loaded = SpectralDataset.load(path)
    assert len(loaded) == len(ds) == len(sample.load_gridded()) + len(list(sample.spectra_dir().iterdir()))
    assert not report.skipped
    assert set(np.unique(loaded.meta["split"])) == {0, 1, 2}
    # the raw files (classified by predict at the end of the demo) are held out in the test split
    raw = {p.name for p in sample.spectra_dir().iterdir()}
    in_raw = np.array([Path(f).name in raw for f in loaded.meta["file"]])
    assert in_raw.sum() == len(raw) and (loaded.meta["split"][in_raw] == 2).all()
    assert loaded.attrs["split"]["counts"]["test"] == {
        c: int(((loaded.meta["split"] == 2) & (loaded.labels == i)).sum()) for i, c in enumerate(loaded.class_names)}
    # object groups never straddle splits
    for oid in np.unique(loaded.meta["object_id"]):
        assert len(set(loaded.meta["split"][loaded.meta["object_id"] == oid].tolist())) == 1


def test_demo_end_to_end_short(tmp_path):
    from specclass.demo import run_demo

    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", epochs=1, compare_tutorial=False, n_sim_per_class=10, verbose=0,
                       log=lines.append)
    ds = SpectralDataset.load(tmp_path / "demo" / "dataset.h5")
    sim = ds.meta["source"] == "simulated"
    # about 10 per class (pipeline labels: counts follow the emulated decision, topped up)
    assert 30 <= sim.sum() <= 60 and (ds.meta["split"][sim] == 0).all()  # simulated spectra train only
    assert ds.attrs["simulated_in_train"]["label_source"] == "pipeline"
    assert set(ds.meta["class"][sim]) <= {"STAR", "GALAXY", "QSO"}
    out = tmp_path / "demo"
    for rel in ("dataset.h5", "run/model.keras", "run/preprocessing.json", "run/metrics.json",
                "run/report.html", "run/confusion_matrix.png", "predictions.csv", "summary.json"):
        assert (out / rel).stat().st_size > 0, rel
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list(sample.spectra_dir().iterdir()))
    assert all(r["predicted_class"] in {"AGN", "GALAXY", "QSO", "STAR"} for r in rows)
    assert json.loads((out / "summary.json").read_text())["models"]["spectral_tutorial"]["accuracy"] is not None
    assert any("predictions:" in line for line in lines)
    # the figures are those of the pipeline rule, and the demo says so with the network's own
    rule = summary["models"]["spectral_tutorial"]["pipeline_rule"]
    assert rule["applied"] and any("SDSS pipeline rule on top of the network" in line for line in lines)
    assert any(f"{rule['changed']} network labels changed" in line for line in lines)
    assert {"network_class", "template_class", "line_subclass"} <= set(rows[0])
    assert summary["predictions"]["classified"] == len(rows)
    assert all(r["in_test_split"] for r in summary["predictions"]["rows"])


def test_demo_cli_default_model_is_resolved(capsys):
    """`specclass demo` without --model used to stop with "--model None is not a registered model"
    (found by a fresh-clone trial of `make demo`); a later option error shows the model check passed."""
    from specclass.cli import main

    assert main(["demo", "--n-sim-per-class", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--n-sim-per-class must be >= 0" in err and "not a registered model" not in err
