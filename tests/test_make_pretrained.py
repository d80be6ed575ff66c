"""tools/make_pretrained.py: trains with the default recipe, writes the packaged folder and its model card."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

REPO = Path(__file__).resolve().parents[1]


def test_make_pretrained_packages_a_run_that_predict_uses(sdss_dir, tmp_path, monkeypatch, capsys) -> None:
    from specclass.cli import main

    data = tmp_path / "ds.h5"
    assert main(["build-dataset", str(sdss_dir / "spectra3"), str(sdss_dir / "dr7"), "--labels", "class3",
                 "--out", str(data)]) == 0
    dest = tmp_path / "pretrained" / "class3"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_pretrained.py"), str(data), "--scheme", "class3",
         "--workdir", str(tmp_path / "work"), "--dest", str(dest),
         "--", "--epochs", "1", "--model", "spectral_resnet", "--model-option", "filters=[16,16]",
         "--n-sim-per-class", "0"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["MODEL_CARD.md", "calibration.json", "config.json", "metrics.json", "model.numpy.h5",
         "preprocessing.json"])
    for f in dest.glob("*.json"):  # a packaged file never names the machine it was made on
        assert '"/' not in f.read_text(), f.name
    card = (dest / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Recipe", "## Figures", "## Cross-validated figures", "## Known weaknesses"):
        assert section in card
    assert "| GALAXY | fits |" in card and "--epochs 1" in card and "spectral_resnet" in card
    # the card says whether the probabilities are calibrated (an unfitted T = 1 is raw softmax)
    import json

    cal = json.loads((dest / "calibration.json").read_text())
    assert ("Probabilities are the raw softmax" in card) == (not cal.get("fitted", True))
    assert ("Probabilities are temperature-calibrated" in card) == bool(cal.get("fitted", True))
    # wrong scheme: refused before any training
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "make_pretrained.py"), str(data), "--scheme", "seed4",
                          "--workdir", str(tmp_path / "w2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "labelled with scheme 'class3', not 'seed4'" in bad.stderr
    monkeypatch.setenv("SPECCLASS_PRETRAINED", str(dest.parent))
    spectra = sorted((sdss_dir / "spectra3").glob("*.fits"))[:3]
    capsys.readouterr()
    assert main(["predict", "--pretrained", "class3", *map(str, spectra), "--out", str(tmp_path / "p.csv")]) == 0
    assert "using the pretrained class3 classifier packaged with specclass" in capsys.readouterr().out
