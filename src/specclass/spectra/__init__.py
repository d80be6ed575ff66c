"""Spectral pipeline steps: common grid, labels, ZWARNING bits, dataset files and splits."""
