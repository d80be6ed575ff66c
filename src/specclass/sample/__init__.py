"""The small real-data sample shipped inside specclass (see ``PROVENANCE.md`` here).

It lets ``specclass demo`` run the whole pipeline on a fresh clone, with no
network and without the project's shared data folder:

* :func:`gridded_path` - ``gridded.npz``: real SDSS spectra already on the
  default grid (a :class:`~specclass.spectra.dataset.SpectralDataset` file);
* :func:`spectra_dir` - ``spectra/``: a few raw files in the formats the reader
  supports (spec-lite FITS, BOSS, DR7 ``.fit.gz``, two-column text);
* :func:`text_labels_path` - labels for the text spectrum among them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _root() -> Path:
    return Path(str(resources.files("specclass.sample")))


def gridded_path() -> Path:
    """Path of ``gridded.npz`` (load it with :meth:`SpectralDataset.load`)."""
    return _root() / "gridded.npz"


def spectra_dir() -> Path:
    """Folder of the raw sample spectrum files."""
    return _root() / "spectra"


def text_labels_path() -> Path:
    """CSV (plate, mjd, fiberid, class, subclass) labelling the sample's text spectra."""
    return _root() / "text_labels.csv"


def load_gridded():
    """The gridded sample as a :class:`~specclass.spectra.dataset.SpectralDataset` (float32)."""
    from specclass.spectra.dataset import SpectralDataset

    return SpectralDataset.load(gridded_path())
