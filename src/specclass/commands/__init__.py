"""Sub-command groups of the ``specclass`` CLI (see :mod:`specclass.cli`)."""
