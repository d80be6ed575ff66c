"""The one exception every spectrum reader raises for a file it cannot use."""

from __future__ import annotations

import os


class SpectrumReadError(ValueError):
    """A spectrum file could not be read; the message names the file and the reason.

    Subclass of :class:`ValueError`, so callers that already catch bad values
    keep working.

    Attributes:
        path: the file, as given to the reader (``str``).
        reason: a short human-readable reason, without the file name.

    Example:
        >>> err = SpectrumReadError("spec-0266-51602-0013.fits", "HDU 2 (SPECOBJ) is missing")
        >>> str(err)
        'spec-0266-51602-0013.fits: HDU 2 (SPECOBJ) is missing'
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep pickling (multiprocessing) working with two args
        return (type(self), (self.path, self.reason))
