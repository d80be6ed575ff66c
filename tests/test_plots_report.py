"""Tests for specclass.plots and specclass.report: real PNGs written atomically, and a
self-contained report.html (inline base64 images, no external assets, escaped text)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from specclass import plots, report
from specclass.evaluation import evaluate_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _only(tmp_path, *names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names), "temp files left behind"


HISTORY = {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
           "accuracy": [0.6, 0.8, 0.9], "val_accuracy": [0.55, 0.7, 0.75]}


def test_history_plot(tmp_path):
    path = plots.plot_history(HISTORY, tmp_path / "curves.png", title="run")
    w, h = _png_size(path)
    assert w > 500 and h > 200
    _only(tmp_path, "curves.png")
    # Keras names the metric after the compile string: sparse_categorical_accuracy works too.
    alt = {"loss": [1.0, 0.5], "sparse_categorical_accuracy": [0.5, 0.7]}
    assert _png_size(plots.plot_history(alt, tmp_path / "alt.png"))[0] > 0
    with pytest.raises(ValueError, match="no 'loss' or accuracy"):
        plots.plot_history({"lr": [0.1]}, tmp_path / "bad.png")


def test_confusion_matrix_plot_and_shape_check(tmp_path):
    counts = np.array([[5, 1, 0], [0, 3, 2], [0, 0, 0]])
    path = plots.plot_confusion_matrix(counts, ["STAR", "QSO", "GALAXY"], tmp_path / "cm.png")
    assert _png_size(path)[0] > 400
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        plots.plot_confusion_matrix(counts, ["A", "B", "C", "D"], tmp_path / "cm2.png")
    _only(tmp_path, "cm.png")


def test_spectra_gallery_from_real_fits(sdss_dir, tmp_path):
    from specclass.io import read_spectrum

    files = sorted((sdss_dir / "spectra").glob("spec-*.fits"))[:4]
    assert files, "no spec-*.fits in the shared data"
    spectra = [read_spectrum(f) for f in files]
    # Each spectrum on its own grid: pass (K, L) wavelength by cutting to a common length.
    n = min(s.npix for s in spectra)
    wave = np.stack([s.wavelength[:n] for s in spectra])
    flux = np.stack([s.flux[:n] for s in spectra])
    ivar = np.stack([s.ivar[:n] for s in spectra])
    path = plots.plot_spectra_gallery(
        wave, flux, ["GALAXY"] * 4, ["QSO"] * 4, [0.9, 0.8, 0.7, 0.6], tmp_path / "gallery.png",
        titles=[s.meta.object_key for s in spectra], ivar=ivar, ncols=2,
    )
    assert _png_size(path)[1] > 300
    with pytest.raises(ValueError, match="4 spectra but 3 true labels"):
        plots.plot_spectra_gallery(wave, flux, ["A"] * 3, ["B"] * 4, [0.5] * 4, tmp_path / "g2.png")


def test_digits_plot(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    path = plots.plot_digits(images, list(range(10)), tmp_path / "digits.png", true=[0] * 10, ncols=5)
    assert _png_size(path)[0] > 300
    with pytest.raises(ValueError, match="K labels"):
        plots.plot_digits(images, [1, 2], tmp_path / "d2.png")


def _metrics():
    rng = np.random.default_rng(3)
    y = rng.choice(3, size=120, p=[0.5, 0.45, 0.05])
    proba = rng.dirichlet([1, 1, 1], size=120)
    proba[np.arange(120), y] += 0.8
    proba /= proba.sum(axis=1, keepdims=True)
    meta = {"zwarning": rng.choice([0, 0, 4], size=120), "source": np.array(["fits"] * 120),
            "file": np.array([f"spec-{i}.fits" for i in range(120)]), "plate": np.full(120, 266),
            "mjd": np.full(120, 51602), "fiberid": np.arange(120)}
    return evaluate_predictions(y, proba, ["STAR", "Q<S>O", "AGN"], meta=meta)


def test_report_is_self_contained(tmp_path):
    m = _metrics()
    images = {
        "Confusion matrix": plots.plot_confusion_matrix(
            np.array(m["confusion_matrix"]["counts"]), m["class_names"], tmp_path / "cm.png"),
        "Training curves": plots.plot_history(HISTORY, tmp_path / "curves.png"),
    }
    path = report.write_report(
        tmp_path / "report.html", title="run <1>", config={"model": "spectral_resnet", "epochs": 3},
        dataset={"n": 120, "per_class": {"STAR": 60}}, metrics=m, images=images,
    )
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # no external assets: no scripts, style sheets, or http(s) references at all
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:)""", html)
    assert "http://" not in html and "https://" not in html
    # each image embedded byte for byte
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(uris) == 2
    assert base64.b64decode(uris[0]) == images["Confusion matrix"].read_bytes()
    assert base64.b64decode(uris[1]) == images["Training curves"].read_bytes()
    # metrics, per-class recall with counts, the small-class warning, breakdown, table
    assert "balanced accuracy" in html and f"{m['balanced_accuracy']:.4f}" in html
    for row in m["per_class"]:
        assert f"<td>{row['support']}</td>" in html
        assert f"{row['recall']:.3f}" in html
    assert m["small_classes"] == ["AGN"] and "class &#x27;AGN&#x27; has only" in html
    assert "By ZWARNING" in html and "spectral_resnet" in html
    assert f"Misclassified examples ({len(m['misclassified'])})" in html
    # user text is escaped, never injected
    assert "Q&lt;S&gt;O" in html and "Q<S>O" not in html and "run &lt;1&gt;" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png", "report.html"]


def test_report_refuses_non_png_image(tmp_path):
    fake = tmp_path / "x.png"
    fake.write_bytes(b"GIF89a not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        report.write_report(tmp_path / "r.html", title="t", images={"x": fake})
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- issue 12 item 12: what a new user noticed


def test_report_has_one_confusion_matrix_section_rounded_config_and_one_path_form(tmp_path):
    m = _metrics()
    # as a dataset records them: relative to where the build ran, or absolute
    files = [m["misclassified"][0]["file"], m["misclassified"][1]["file"]]
    m["misclassified"][0]["file"] = f"../shared/data/sdss/spectra/{files[0]}"
    m["misclassified"][1]["file"] = f"/home/user/data/{files[1]}"
    images = {"Confusion matrix": plots.plot_confusion_matrix(
        np.array(m["confusion_matrix"]["counts"]), m["class_names"], tmp_path / "cm.png")}
    html = report.render_report(title="run", config={"best_score": 0.37303122878074646,
                                                     "device": {"memory_gb": 15.623456789}},
                                metrics=m, images=images)
    assert html.count("<h2>Confusion matrix</h2>") == 1
    section = html.split("<h2>Confusion matrix</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<img" in section and "true \\ predicted" in section  # the figure and the table together
    assert "0.37303122878074646" not in html and "<code>0.373</code>" in html and "15.62" in html
    assert f"title='../shared/data/sdss/spectra/{files[0]}'>{files[0]}</td>" in html
    assert f"title='/home/user/data/{files[1]}'>{files[1]}</td>" in html
    assert f">/home/user/data/{files[1]}<" not in html


def test_epoch_ticks_are_whole_numbers():
    fig = plots.history_figure({"loss": [1.0, 0.7], "val_loss": [1.1, 0.9]})
    for ax in fig.axes:
        if ax.axison:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_misclassified_spectra_mark_lines_at_the_pipeline_redshift(sdss_dir, tmp_path):
    from specclass.io import read_spectrum

    spec = read_spectrum(sdss_dir / "spectra" / "spec-0266-51602-0013.fits")  # a GALAXY at its pipeline z
    z = spec.meta.z
    assert 0 < z < 0.3
    fig = plots.spectra_gallery_figure(spec.wavelength[None], spec.flux[None], ["GALAXY"], ["STAR"], [0.8],
                                       ivar=spec.ivar[None], redshifts=[z])
    ax = fig.axes[0]
    labels = {t.get_text(): t.get_position()[0] for t in ax.texts}
    assert labels["Hα"] == pytest.approx(6564.61 * (1 + z)) and "[O III]" in labels and "Na D" in labels
    assert "Lyα" not in labels  # below the observed range at this z
    assert f"z={z:.3f}" in ax.get_title()
    none = plots.spectra_gallery_figure(spec.wavelength[None], spec.flux[None], ["GALAXY"], ["STAR"], [0.8],
                                        redshifts=[float("nan")])
    assert not none.axes[0].texts
