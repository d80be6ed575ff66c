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


#: The 'AGN BROADLINE' bulge at z = 0.003: its absorption lines sit almost at rest like a star's.
#: Called STAR out of fold by every cross-validated network (README "Benchmarks") and by the
#: packaged seed4 classifier made with the version-2 emulator labels (p = 0.81); see MODEL_CARD.md.
NEARBY_BULGE = "spec-0522-52024-0396.fits"


def _packaged_seed4_calls(sdss_dir):
    """``(picked files, rows)``: the packaged seed4 classifier on every strong-emission-line galaxy
    (SUBCLASS STARFORMING/STARBURST/AGN) and broad-line QSO in ../shared/data/sdss/spectra."""
    from specclass.inference.load import load_any_run
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
    rows, failures = predict_files(load_any_run(run), picked)
    assert not failures and len(rows) == len(picked)
    return picked, rows


def test_packaged_classifier_never_calls_emission_line_galaxies_or_broad_line_qsos_star(sdss_dir):
    """Sanity on real spec files: the default (pretrained seed4) classifier never calls a
    strong-emission-line galaxy (SUBCLASS STARFORMING/STARBURST/AGN) or a broad-line QSO a STAR,
    the nearby bulge :data:`NEARBY_BULGE` apart (its own strict xfail below)."""
    picked, rows = _packaged_seed4_calls(sdss_dir)
    assert len(picked) >= 50 and any(p.name == NEARBY_BULGE for p in picked)
    stars = [(r["file"], r["file_class"], r["file_subclass"], r["probability"]) for r in rows
             if r["predicted_class"] == "STAR" and not r["file"].endswith(NEARBY_BULGE)]
    assert not stars, stars


@pytest.mark.xfail(strict=True, reason="known weakness (MODEL_CARD.md): the z = 0.003 'AGN BROADLINE' bulge "
                   "spec-0522-52024-0396 looks like a star to the network; it passed with the previous packaged "
                   "classifier only, never out of fold")
def test_packaged_classifier_calls_the_nearby_bulge_a_galaxy(sdss_dir):
    _, rows = _packaged_seed4_calls(sdss_dir)
    bulge = [r for r in rows if r["file"].endswith(NEARBY_BULGE)]
    assert len(bulge) == 1 and bulge[0]["predicted_class"] in ("GALAXY", "AGN"), bulge
