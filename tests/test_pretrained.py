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
    for scheme in ("seed4", "class3"):  # both packaged (tools/make_pretrained.py), numpy export only
        run = pretrained_dir(scheme)
        assert run is not None and (run / "model.numpy.h5").is_file() and (run / "MODEL_CARD.md").is_file()
        for f in run.glob("*.json"):  # no absolute machine paths in what is shipped
            assert '"/' not in f.read_text(), f


def test_packaged_classifier_never_calls_emission_line_galaxies_or_broad_line_qsos_star(sdss_dir, tmp_path):
    """Sanity on real spec files: the default (pretrained seed4) classifier never calls a
    strong-emission-line galaxy (SUBCLASS STARFORMING/STARBURST/AGN) or a broad-line QSO a STAR.

    It failed (a strict xfail) until simulated galaxies reached below z = 0.01: the 'AGN BROADLINE'
    bulge spec-0522-52024-0396 (z = 0.003) was called STAR at p = 0.995. Most of these files are in
    the packaged classifier's training split; out of fold (benchmarks/accuracy.py --folds 5) that
    spectrum is still called STAR (p = 0.85), as MODEL_CARD.md says."""
    from specclass.io import read_spectrum
    from specclass.predict import predict_files

    run = pretrained_dir("seed4")
    folder = sdss_dir / "spectra"
    if run is None or not folder.is_dir():
        pytest.skip("no packaged classifier or no real spectra")
    picked = []
    for path in sorted(folder.glob("spec-*.fits")):
        m = read_spectrum(path).meta
        if (m.class_ == "GALAXY" and any(k in m.subclass for k in ("STARFORMING", "STARBURST", "AGN"))) or (
                m.class_ == "QSO" and "BROADLINE" in m.subclass):
            picked.append(path)
    assert len(picked) >= 50
    from specclass.inference.load import load_any_run

    rows, failures = predict_files(load_any_run(run), picked)
    assert not failures and len(rows) == len(picked)
    stars = [(r["file"], r["file_class"], r["file_subclass"], r["probability"]) for r in rows if r["predicted_class"] == "STAR"]
    assert not stars, stars
