"""Recognise what a spectrum file holds from its first bytes, never from its suffix.

The magic numbers used:

* gzip: ``1f 8b`` (RFC 1952, section 2.3.1);
* FITS: the first card is ``SIMPLE  =`` (FITS Standard 4.0, section 4.4.1.1);
* HTML/XML error pages: ``<!doctype``, ``<html``, ``<?xml`` after optional
  white space / byte-order mark (what a web server sends instead of a file);
* anything else that decodes as text is treated as a candidate column text file.
"""

from __future__ import annotations

import gzip
import zlib

GZIP_MAGIC = b"\x1f\x8b"
FITS_MAGIC = b"SIMPLE  ="

#: Kinds returned by :func:`sniff_kind`.
KINDS = ("gzip", "fits", "html", "text", "empty", "binary")


def sniff_kind(head: bytes) -> str:
    """Classify a file from its first bytes.

    Args:
        head: the first bytes of the file (at least 512 are recommended).

    Returns:
        One of ``'gzip'``, ``'fits'``, ``'html'``, ``'text'``, ``'empty'``,
        ``'binary'`` (see the module docstring for the rules).
    """
    if not head:
        return "empty"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:9] == FITS_MAGIC:
        return "fits"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "html"
    sample = head[:4096]
    if b"\x00" in sample:
        return "binary"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sample is still text
        if exc.start < len(sample) - 4:
            return "binary"
    return "text"


def gunzip(data: bytes, path: str) -> bytes:
    """Decompress gzip ``data`` (all members), raising :class:`SpectrumReadError` if damaged."""
    from specclass.io.errors import SpectrumReadError

    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SpectrumReadError(path, f"gzip data is damaged or truncated ({exc})") from None
