"""Shared fixtures: where the real data beside the project lives.

Tests read real files from ``../shared/data`` (relative to the repository root),
or from ``$SPECCLASS_SHARED_DATA`` when set. Tests that need it are skipped,
with the reason, when it is absent (a user's clone without the shared folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("SPECCLASS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``Path`` to the read-only real data folder (``../shared/data``)."""
    if not (SHARED_DATA / "sdss").is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA} (set SPECCLASS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sdss_dir(shared_data: Path) -> Path:
    """``Path`` to ``../shared/data/sdss``."""
    return shared_data / "sdss"


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Clear Keras' global state after every test that used it (as keras' own tests do).

    Without it, graphs and layer-name counters of hundreds of models pile up in one
    pytest process; TensorFlow then crashed late in the full suite (a segfault in
    a train step that passes on its own).
    """
    yield
    import gc
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
