"""pytest fixtures starting the local SDSS servers (import them into a test module).

``sas_server`` / ``sky_server`` are module-scoped running servers; ``sas`` / ``sky`` are
the same servers with faults and request logs cleared before and after each test.
``net_config`` is an :class:`~specclass.sdss.config.SDSSConfig` pointing at both, with
short timeouts and tiny backoff so failure tests stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from servers.sas import SASServer
from servers.skyserver import SkyServerSQL


@pytest.fixture(scope="module")
def sas_server(sdss_dir: Path) -> Iterator[SASServer]:
    with SASServer(sdss_dir) as server:
        yield server


@pytest.fixture(scope="module")
def sky_server(sdss_dir: Path) -> Iterator[SkyServerSQL]:
    with SkyServerSQL(sdss_dir) as server:
        yield server


def _reset_sas(server: SASServer) -> None:
    server.faults.clear()
    server.requests.clear()
    server._counts.clear()


@pytest.fixture
def sas(sas_server: SASServer) -> Iterator[SASServer]:
    _reset_sas(sas_server)
    yield sas_server
    _reset_sas(sas_server)


@pytest.fixture
def sky(sky_server: SkyServerSQL) -> Iterator[SkyServerSQL]:
    sky_server.fault = None
    sky_server.requests.clear()
    yield sky_server
    sky_server.fault = None
    sky_server.requests.clear()


@pytest.fixture
def net_config(sas: SASServer, sky: SkyServerSQL):
    from specclass.sdss.config import SDSSConfig

    return SDSSConfig(
        skyserver_url=sky.url, sas_url=sas.url, timeout=1.0, retries=2, backoff=0.01, backoff_max=0.05, workers=4
    )
