"""How ``specclass predict [RUN] FILES`` tells the run from the inputs, and the packaged-classifier lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from specclass.pretrained import NoPretrainedError, pretrained_dir, require_pretrained, split_run_argument


def test_split_run_argument(sdss_dir: Path, tmp_path: Path) -> None:
    spectra = sdss_dir / "spectra3"
    one = sorted(spectra.glob("*.fits"))[0]
    run = tmp_path / "run"
    run.mkdir()
    (run / "preprocessing.json").write_text("{}")
    assert split_run_argument([run, spectra]) == (run, [spectra])
    assert split_run_argument([spectra, one]) == (None, [spectra, one])  # a folder of spectra is input
    assert split_run_argument([one]) == (None, [one])
    missing = tmp_path / "norun"
    assert split_run_argument([missing, one]) == (missing, [one])  # mistyped run: loading it says so
    assert split_run_argument([tmp_path / "gone.fits", one]) == (None, [tmp_path / "gone.fits", one])
    empty = tmp_path / "runs"  # the folder above run folders: taken as the run, whose loading names them
    (empty / "r1").mkdir(parents=True)
    assert split_run_argument([empty, one]) == (empty, [one])
    h5 = tmp_path / "model.numpy.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert split_run_argument([h5, one]) == (h5, [one])


def test_pretrained_lookup(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPECCLASS_PRETRAINED", str(tmp_path))
    assert pretrained_dir("seed4") is None
    with pytest.raises(NoPretrainedError, match=r"no pretrained class3 classifier \(\$SPECCLASS_PRETRAINED/class3/"):
        require_pretrained("class3")
    (tmp_path / "class3").mkdir()
    (tmp_path / "class3" / "preprocessing.json").write_text("{}")
    assert require_pretrained("class3") == tmp_path / "class3"
    with pytest.raises(ValueError, match="allowed seed4, class3"):
        pretrained_dir("star_subclass")
    monkeypatch.delenv("SPECCLASS_PRETRAINED")
    assert pretrained_dir("seed4") is None  # nothing is packaged in this source tree yet
