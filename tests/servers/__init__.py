"""Real HTTP servers on 127.0.0.1 for the SDSS tests (stdlib ``http.server`` in a thread).

* :class:`servers.sas.SASServer` serves the real spec files of ``../shared/data/sdss``
  under DR17 SAS paths, with switchable failure modes per file.
* :class:`servers.skyserver.SkyServerSQL` answers SkyServer ``SqlSearch`` requests from a
  sqlite ``SpecObj`` table built from ``../shared/data/sdss/catalog.csv``.

Both listen on port 0 (the OS picks a free port) and record every request.
"""
