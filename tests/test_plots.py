"""Tests for what the figures of specclass.plots say: the restored best epoch on the
training curves, and flux-axis labels that match each spectrum's source (real SDSS
FITS and flux-only text files from ../shared/data, simulated spectra)."""

from __future__ import annotations

import numpy as np
import pytest

from specclass import plots

HISTORY = {"loss": [1.0, 0.6, 0.4, 0.45, 0.5], "val_loss": [1.1, 0.8, 0.65, 0.7, 0.72],
           "accuracy": [0.6, 0.8, 0.9, 0.91, 0.92], "val_accuracy": [0.55, 0.7, 0.78, 0.76, 0.75]}


def _best_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_label().startswith("best epoch")]


def test_history_marks_best_epoch_one_based(tmp_path):
    fig = plots.history_figure(HISTORY, best_epoch=3)
    acc_ax, loss_ax = fig.axes[:2]
    for ax in (acc_ax, loss_ax):
        (line,) = _best_lines(ax)
        assert line.get_label() == "best epoch 3"
        assert list(line.get_xdata()) == [3, 3]  # a vertical line at x = epoch 3 ...
        # ... which is where the third point of the curves sits (x counts from 1, like Keras' log).
        assert ax.get_lines()[0].get_xdata()[2] == 3
        assert "best epoch 3" in [t.get_text() for t in ax.get_legend().get_texts()]
    # The marker sits at the minimum of val_loss, as a restored-best run would have it.
    assert int(np.argmin(HISTORY["val_loss"])) + 1 == 3
    # The PNG writer takes the same argument.
    path = plots.plot_history(HISTORY, tmp_path / "curves.png", best_epoch=np.int64(5))
    assert path.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_history_without_best_epoch_has_no_marker():
    fig = plots.history_figure(HISTORY)
    assert not any(_best_lines(ax) for ax in fig.axes)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["training", "validation"]


@pytest.mark.parametrize("bad", [0, 6, -1, 2.0, True, "3"])
def test_history_rejects_best_epoch_outside_the_history(bad):
    with pytest.raises(ValueError, match=r"best_epoch=.*between 1 and 5"):
        plots.history_figure(HISTORY, best_epoch=bad)


def test_flux_axis_label_rules():
    assert plots.flux_axis_label("text", "text") == "flux (arbitrary units)"
    assert plots.flux_axis_label("text") == plots.ARBITRARY_FLUX_LABEL
    assert plots.flux_axis_label("", "text") == plots.ARBITRARY_FLUX_LABEL
    assert plots.flux_axis_label("simulated", "simulated") == "simulated flux, 1e-17 erg/s/cm²/Å"
    assert plots.flux_axis_label("fits", "spec-lite") == "flux [1e-17 erg/s/cm²/Å]"
    assert plots.flux_axis_label("other-survey", "lamost-lrs") == plots.LAMOST_FLUX_LABEL
    assert plots.flux_axis_label() == plots.SDSS_FLUX_LABEL


def test_gallery_labels_flux_by_source_on_real_data(sdss_dir, tmp_path):
    """A dataset of real text stars, real FITS spectra and simulated rows: each panel's
    flux axis follows the row's meta['source'] / meta['format'] from the dataset."""
    from specclass.simulate import simulate
    from specclass.spectra.build import build_dataset
    from specclass.spectra.dataset import META_COLUMNS, SpectralDataset

    text_files = sorted((sdss_dir / "text_stars").glob("spec-*.txt"))[:2]
    fits_files = [sdss_dir / "spectra" / "spec-0266-51602-0013.fits", sdss_dir / "spectra" / "spec-0266-51602-0031.fits"]
    assert len(text_files) == 2 and all(f.is_file() for f in fits_files)
    text_ds, _ = build_dataset(text_files, labels="seed4", label="STAR", val_frac=0, test_frac=0)
    fits_ds, _ = build_dataset(fits_files, labels="seed4", val_frac=0, test_frac=0)
    sim_ds = simulate(1, labels="seed4", seed=3, label_source="construction")
    parts = [text_ds, fits_ds, sim_ds.subset(np.arange(2))]
    ds = SpectralDataset(
        flux=np.concatenate([d.flux for d in parts]), ivar=np.concatenate([d.ivar for d in parts]),
        labels=np.concatenate([d.labels for d in parts]), class_names=fits_ds.class_names, loglam=fits_ds.loglam,
        meta={k: np.concatenate([np.asarray(d.meta[k]) for d in parts]) for k in META_COLUMNS},
    )
    assert ds.meta["source"].tolist() == ["text", "text", "fits", "fits", "simulated", "simulated"]
    k = len(ds)
    kw = dict(titles=ds.meta["file"].tolist(), ivar=ds.ivar, ncols=3,
              sources=ds.meta["source"], formats=ds.meta["format"])
    fig = plots.spectra_gallery_figure(
        ds.wavelength, ds.flux, ["STAR"] * k, ["QSO"] * k, [0.9] * k, **kw)
    ylabels = [ax.get_ylabel() for ax in fig.axes[:k]]
    assert ylabels == ["flux (arbitrary units)"] * 2 + ["flux [1e-17 erg/s/cm²/Å]"] * 2 \
        + ["simulated flux, 1e-17 erg/s/cm²/Å"] * 2
    # The text panels draw the file's own flux values (pixels without data stay undrawn).
    drawn = fig.axes[0].get_lines()[0].get_ydata()
    assert np.allclose(drawn[ds.ivar[0] > 0], ds.flux[0][ds.ivar[0] > 0])
    path = plots.plot_spectra_gallery(ds.wavelength, ds.flux, ["STAR"] * k, ["QSO"] * k, [0.9] * k,
                                      tmp_path / "gallery.png", **kw)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="6 spectra but 5 sources"):
        plots.spectra_gallery_figure(ds.wavelength, ds.flux, ["STAR"] * k, ["QSO"] * k, [0.9] * k,
                                     sources=ds.meta["source"][:5])


def test_gallery_without_sources_keeps_sdss_units(sdss_dir):
    from specclass.io import read_spectrum

    spec = read_spectrum(sdss_dir / "spectra" / "spec-0266-51602-0013.fits")
    fig = plots.spectra_gallery_figure(spec.wavelength, spec.flux[None], ["GALAXY"], ["QSO"], [0.6])
    assert fig.axes[0].get_ylabel() == plots.SDSS_FLUX_LABEL
