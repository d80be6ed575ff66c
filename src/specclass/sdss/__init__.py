"""Talking to SDSS: SkyServer SQL queries, SAS URLs and downloads."""
