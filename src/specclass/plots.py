"""Figures for a run: training curves, confusion matrices, spectra and digit galleries.

Every function draws with matplotlib's object-oriented API on an Agg canvas
(:class:`matplotlib.figure.Figure`, no ``pyplot`` state, so it works headless and
does not touch a notebook's backend). The ``plot_*`` functions write a PNG
atomically (temp file in the same folder, then rename) and return the path
written; ``history_figure`` and ``spectra_gallery_figure`` return the
:class:`~matplotlib.figure.Figure` itself (to show in a notebook, or to inspect).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from specclass.atomic import write_atomic

#: History keys tried, in order, for the accuracy curve (Keras names its metric
#: after the string given to ``compile``).
ACCURACY_KEYS = ("accuracy", "sparse_categorical_accuracy", "acc", "categorical_accuracy")

#: Flux axis label of a spectrum in SDSS units (the spec-file ``flux`` column; SDSS
#: data model, ``spec`` files: 1e-17 erg/s/cm²/Å). Also right for MaStar and DESI.
SDSS_FLUX_LABEL = "flux [1e-17 erg/s/cm²/Å]"
#: Flux axis label of a flux-only text spectrum: the file gives no unit and no
#: calibration, so only the shape is known.
ARBITRARY_FLUX_LABEL = "flux (arbitrary units)"
#: Flux axis label of a :mod:`specclass.simulate` spectrum (modelled in SDSS units).
SIMULATED_FLUX_LABEL = "simulated flux, 1e-17 erg/s/cm²/Å"
#: Flux axis label of a LAMOST spectrum (the reader keeps LAMOST's own flux scale,
#: a relative calibration in DR1; see :mod:`specclass.io.fits`).
LAMOST_FLUX_LABEL = "flux (LAMOST units)"


def flux_axis_label(source: str = "", fmt: str = "") -> str:
    """The flux-axis label for a spectrum from its dataset metadata.

    Args:
        source: the spectrum's ``meta['source']`` in a
            :class:`~specclass.spectra.dataset.SpectralDataset` ('fits', 'text',
            'simulated', 'other-survey'; '' when unknown).
        fmt: its ``meta['format']`` (reader layout, e.g. 'spec-lite', 'text',
            'lamost-lrs', 'simulated'; '' when unknown).

    Returns:
        :data:`SIMULATED_FLUX_LABEL` for simulated rows, :data:`ARBITRARY_FLUX_LABEL`
        for flux-only text files (source or format 'text'), :data:`LAMOST_FLUX_LABEL`
        for LAMOST layouts, else :data:`SDSS_FLUX_LABEL`.

    Example:
        >>> flux_axis_label("text", "text")
        'flux (arbitrary units)'
    """
    source, fmt = str(source).strip().lower(), str(fmt).strip().lower()
    if "simulated" in (source, fmt):
        return SIMULATED_FLUX_LABEL
    if "text" in (source, fmt):
        return ARBITRARY_FLUX_LABEL
    if fmt.startswith("lamost"):
        return LAMOST_FLUX_LABEL
    return SDSS_FLUX_LABEL


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return ``path`` (a :class:`Path`)."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def plot_history(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    title: str | None = None,
    best_epoch: int | None = None,
) -> Path:
    """Write :func:`history_figure` (accuracy and loss per epoch) as a PNG; return ``path``.

    Same arguments and errors as :func:`history_figure`, plus ``path``, the PNG to write.
    """
    return save_figure(history_figure(history, title=title, best_epoch=best_epoch), path)


def history_figure(
    history: Mapping[str, Sequence[float]],
    title: str | None = None,
    best_epoch: int | None = None,
):
    """Accuracy and loss per epoch, training vs validation, side by side.

    Args:
        history: Keras ``History.history``-style dict: ``loss`` and optionally
            ``val_loss``, an accuracy key (one of :data:`ACCURACY_KEYS`) and its
            ``val_`` twin; each a list of per-epoch floats.
        title: optional figure title.
        best_epoch: the epoch whose weights the run kept (restored best epoch),
            **1-based** as Keras' progress log counts epochs (``Epoch 3/10``); both
            panels get a dashed vertical line there, labelled ``best epoch N`` in
            the legend. ``None``: no marker. A run's ``config.json`` may store it
            0-based (``specclass.training``): the caller adds 1.

    Returns:
        :class:`matplotlib.figure.Figure` with two axes (accuracy, loss); epochs on
        the x axis count from 1.

    Raises:
        ValueError: if ``history`` has neither a loss nor an accuracy series, or
            ``best_epoch`` is not an integer between 1 and the number of epochs
            recorded.
    """
    acc_key = next((k for k in ACCURACY_KEYS if k in history), None)
    if "loss" not in history and acc_key is None:
        raise ValueError(f"history has no 'loss' or accuracy series (keys: {sorted(history)})")
    if best_epoch is not None:
        n_epochs = max(len(v) for v in history.values())
        if isinstance(best_epoch, bool) or not isinstance(best_epoch, (int, np.integer)) or not 1 <= best_epoch <= n_epochs:
            raise ValueError(
                f"best_epoch={best_epoch!r}: expected a 1-based epoch number between 1 and {n_epochs} "
                f"(the epochs in the history)"
            )
        best_epoch = int(best_epoch)
    fig = _new_figure(10, 4)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], acc_key, "accuracy"), (axes[1], "loss", "loss")):
        if key is None or key not in history:
            ax.text(0.5, 0.5, f"no {label} recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        train = np.asarray(history[key], dtype=float)
        epochs = np.arange(1, train.size + 1)
        ax.plot(epochs, train, "o-", ms=3, label="training")
        if f"val_{key}" in history:
            val = np.asarray(history[f"val_{key}"], dtype=float)
            ax.plot(np.arange(1, val.size + 1), val, "s-", ms=3, label="validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.35", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(
    counts: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Confusion matrix in counts (left) and row-normalised (right).

    Args:
        counts: ``(C, C)`` integer counts; row = true class, column = predicted
            class, both in ``class_names`` order (the model's saved order; the axes
            are labelled in that order, never re-sorted).
        class_names: the ``C`` class names.
        path: the PNG to write.

    Raises:
        ValueError: if ``counts`` is not ``(C, C)``.
    """
    counts = np.asarray(counts)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"counts has shape {counts.shape}, expected ({n}, {n}) for classes {list(class_names)}")
    row = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(row > 0, counts / np.maximum(row, 1), np.nan)
    size = max(4.0, 0.45 * n + 2.5)
    fig = _new_figure(2 * size + 1, size)
    axes = fig.subplots(1, 2)
    annotate = n <= 20
    for ax, mat, label, fmt in ((axes[0], counts, "counts", "d"), (axes[1], norm, "normalised by true class", ".2f")):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=(1 if fmt != "d" else max(1, int(counts.max()))))
        ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(class_names))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.8)
        if annotate:
            top = np.nanmax(mat) if np.isfinite(mat).any() else 1
            for i in range(n):
                for j in range(n):
                    v = mat[i, j]
                    text = "-" if not np.isfinite(v) else format(int(v) if fmt == "d" else v, fmt)
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="white" if np.isfinite(v) and v > 0.6 * top else "black")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


#: Main emission (``em``) and absorption (``abs``) lines marked on spectra at their redshift:
#: (name, rest vacuum wavelength in Å, kind). Wavelengths from the SDSS spectroscopic line
#: list (https://classic.sdss.org/dr6/algorithms/linestable.html, vacuum); doublets that
#: SDSS does not resolve well at this scale are drawn once ([O II] 3727/3730 as 3728.5).
SPECTRAL_LINES: tuple[tuple[str, float, str], ...] = (
    ("Lyα", 1215.67, "em"), ("C IV", 1549.48, "em"), ("C III]", 1908.73, "em"), ("Mg II", 2799.12, "em"),
    ("[O II]", 3728.48, "em"), ("K", 3934.78, "abs"), ("H", 3969.59, "abs"), ("Hδ", 4102.89, "em"),
    ("G", 4305.61, "abs"), ("Hγ", 4341.68, "em"), ("Hβ", 4862.68, "em"), ("[O III]", 5008.24, "em"),
    ("Mg b", 5176.7, "abs"), ("Na D", 5895.6, "abs"), ("Hα", 6564.61, "em"), ("[S II]", 6718.29, "em"),
)


def mark_lines(ax, z: float, wave_min: float, wave_max: float) -> int:
    """Draw :data:`SPECTRAL_LINES` at redshift ``z`` (observed ``λ = λ_rest (1 + z)``) on ``ax``.

    Emission lines are blue dashed, absorption lines red dotted, each labelled at the
    top of the panel; lines outside ``[wave_min, wave_max]`` (Å) are skipped, and
    nothing is drawn for a NaN or negative ``z``.

    Returns:
        The number of lines drawn.
    """
    if not np.isfinite(z) or z < -0.01:
        return 0
    n = 0
    for name, rest, kind in SPECTRAL_LINES:
        obs = rest * (1.0 + z)
        if not wave_min <= obs <= wave_max:
            continue
        color, style = ("tab:blue", "--") if kind == "em" else ("tab:red", ":")
        ax.axvline(obs, color=color, ls=style, lw=0.6, alpha=0.7)
        ax.text(obs, 0.98, name, transform=ax.get_xaxis_transform(), rotation=90, ha="right", va="top",
                fontsize=5, color=color)
        n += 1
    return n


def plot_spectra_gallery(
    wavelength: np.ndarray,
    flux: np.ndarray,
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    probabilities: Sequence[float],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    ivar: np.ndarray | None = None,
    ncols: int = 3,
    sources: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    redshifts: Sequence[float] | None = None,
) -> Path:
    """Write :func:`spectra_gallery_figure` as a PNG to ``path`` and return ``path``.

    Same arguments and errors as :func:`spectra_gallery_figure`, plus ``path``, the PNG to write.
    """
    return save_figure(
        spectra_gallery_figure(wavelength, flux, true_labels, predicted_labels, probabilities, titles=titles,
                               ivar=ivar, ncols=ncols, sources=sources, formats=formats, redshifts=redshifts),
        path,
    )


def spectra_gallery_figure(
    wavelength: np.ndarray,
    flux: np.ndarray,
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    probabilities: Sequence[float],
    titles: Sequence[str] | None = None,
    ivar: np.ndarray | None = None,
    ncols: int = 3,
    sources: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    redshifts: Sequence[float] | None = None,
):
    """A grid of spectra (e.g. the misclassified ones) with true / predicted labels.

    Each panel's flux axis says what its flux is (:func:`flux_axis_label`): SDSS
    units (1e-17 erg/s/cm²/Å) for FITS spectra, "flux (arbitrary units)" for
    flux-only text files, which carry no calibration, "simulated flux, ..." for
    simulated rows. A dataset's rows give it as ``meta['source']`` /
    ``meta['format']`` (:class:`~specclass.spectra.dataset.SpectralDataset`).

    Args:
        wavelength: ``(L,)`` vacuum wavelength in Å (shared grid), or ``(K, L)`` one per
            spectrum.
        flux: ``(K, L)`` flux, in the units the panel's source implies (see above).
        true_labels, predicted_labels: ``K`` class names each.
        probabilities: ``K`` predicted-class probabilities.
        titles: optional ``K`` panel titles (e.g. 'PLATE-MJD-FIBERID').
        ivar: optional ``(K, L)`` inverse variance; pixels with ``ivar == 0`` are
            not drawn (no data there).
        ncols: panels per row.
        sources: optional ``K`` values of ``meta['source']`` ('fits', 'text',
            'simulated', 'other-survey'). Without ``sources`` and ``formats`` every
            panel is labelled in SDSS units.
        formats: optional ``K`` values of ``meta['format']`` (reader layout).
        redshifts: optional ``K`` pipeline redshifts (``meta['z']``); the main emission
            and absorption lines are marked there (:func:`mark_lines`; none for NaN).

    Returns:
        :class:`matplotlib.figure.Figure`, one axes per panel (row-major; unused
        cells switched off).

    Raises:
        ValueError: if the lengths disagree or ``K == 0``.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    k = flux.shape[0]
    if k == 0:
        raise ValueError("no spectra to plot")
    if not (len(true_labels) == len(predicted_labels) == len(probabilities) == k):
        raise ValueError(
            f"{k} spectra but {len(true_labels)} true labels, {len(predicted_labels)} predicted labels "
            f"and {len(probabilities)} probabilities"
        )
    for name, values in (("sources", sources), ("formats", formats), ("redshifts", redshifts)):
        if values is not None and len(values) != k:
            raise ValueError(f"{k} spectra but {len(values)} {name}")
    wavelength = np.asarray(wavelength, dtype=float)
    waves = np.broadcast_to(wavelength, flux.shape)
    ncols = max(1, min(ncols, k))
    nrows = int(np.ceil(k / ncols))
    fig = _new_figure(4.2 * ncols, 2.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= k:
            ax.set_axis_off()
            continue
        f = flux[i].copy()
        if ivar is not None:
            f[np.asarray(ivar[i]) <= 0] = np.nan
        ax.plot(waves[i], f, lw=0.5, color="k")
        head = f"{titles[i]}\n" if titles is not None else ""
        at_z = ""
        if redshifts is not None and np.isfinite(float(redshifts[i])):
            mark_lines(ax, float(redshifts[i]), float(np.nanmin(waves[i])), float(np.nanmax(waves[i])))
            at_z = f", z={float(redshifts[i]):.3f}"
        ax.set_title(f"{head}true {true_labels[i]} → predicted {predicted_labels[i]} "
                     f"(p={probabilities[i]:.2f}{at_z})", fontsize=8)
        ax.set_xlabel("wavelength [Å]", fontsize=8)
        ax.set_ylabel(flux_axis_label("" if sources is None else sources[i], "" if formats is None else formats[i]),
                      fontsize=7)
        ax.tick_params(labelsize=7)
    return fig


def plot_digits(
    images: np.ndarray,
    predicted: Sequence[int],
    path: str | os.PathLike,
    true: Sequence[int] | None = None,
    ncols: int = 8,
) -> Path:
    """A grid of MNIST digits with predicted labels (red title when wrong).

    Args:
        images: ``(K, 28, 28)`` (or ``(K, H, W)`` / ``(K, H, W, 1)``) pixel arrays,
            any scale (each image is shown with its own grey scale).
        predicted: ``K`` predicted labels.
        path: the PNG to write.
        true: optional ``K`` true labels; shown as 'pred 3 (true 5)' when they differ.

    Raises:
        ValueError: if the lengths disagree or ``K == 0``.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    k = images.shape[0] if images.ndim == 3 else 0
    if k == 0 or len(predicted) != k or (true is not None and len(true) != k):
        raise ValueError(
            f"need (K, H, W) images with K > 0 and K labels; got images {images.shape}, "
            f"{len(predicted)} predicted, {None if true is None else len(true)} true"
        )
    ncols = max(1, min(ncols, k))
    nrows = int(np.ceil(k / ncols))
    fig = _new_figure(1.3 * ncols, 1.5 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= k:
            continue
        ax.imshow(images[i], cmap="gray_r")
        wrong = true is not None and int(true[i]) != int(predicted[i])
        text = f"pred {int(predicted[i])}" + (f" (true {int(true[i])})" if wrong else "")
        ax.set_title(text, fontsize=8, color="red" if wrong else "black")
    return save_figure(fig, path)
