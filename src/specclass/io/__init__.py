"""Spectrum readers: one call returns a :class:`specclass.spectrum.Spectrum` for any supported file.

Public API:

* :func:`read_spectrum` - one spectrum from one file (SDSS/BOSS spec lite/full,
  DR7 spSpec, LAMOST LRS, one-table layouts, IRAF 1-D, two-column text; gzip by content);
* :func:`read_spectra` - every spectrum in a file (multi-row tables such as MaStar);
* :func:`iter_spectra` - many files or directories, yielding ``(path, spectrum | None, reason | None)``
  and never stopping at a bad file;
* :func:`load_text_labels` - ``{'PLATE-MJD-FIBER': (CLASS, SUBCLASS)}`` from a label CSV;
* :class:`SpectrumReadError` - the error every reader raises (message names the file and the reason).
"""

from specclass.io.errors import SpectrumReadError
from specclass.io.read import find_spectrum_files, iter_spectra, read_spectra, read_spectrum
from specclass.io.text import load_text_labels

__all__ = [
    "SpectrumReadError",
    "find_spectrum_files",
    "iter_spectra",
    "load_text_labels",
    "read_spectra",
    "read_spectrum",
]
