"""Spectrum readers: one call returns a :class:`specclass.spectrum.Spectrum` for any supported file."""
