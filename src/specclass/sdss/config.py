"""Network settings for talking to SDSS, in one object (like ``astroquery.sdss.conf``).

Every function in :mod:`specclass.sdss.skyserver`, :mod:`specclass.sdss.download` and
:mod:`specclass.sdss.fetch` takes an optional :class:`SDSSConfig`; without one it uses
the module-level :data:`conf`. Tests and mirrors point the code at another server by
passing ``SDSSConfig(skyserver_url=..., sas_url=...)``; the CLI builds one from its
``--base-url``/``--sas-url``/``--timeout``/``--retries``/``--backoff``/``--workers`` options.

Defaults follow astroquery's ``astroquery.sdss.conf`` (``skyserver_baseurl``
``https://skyserver.sdss.org``, ``sas_baseurl`` ``https://data.sdss.org/sas``,
60 s timeout, data release 17).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from specclass import __version__

#: Data releases whose SkyServer SQL and SAS layout this package knows.
SUPPORTED_RELEASES: tuple[int, ...] = tuple(range(8, 18))


def parse_release(value: int | str) -> int:
    """Return the data release number from ``17``, ``'17'``, ``'dr17'`` or ``'DR17'``.

    Raises:
        ValueError: if the value is not one of :data:`SUPPORTED_RELEASES` (the message
            names the value and the allowed range).
    """
    text = str(value).strip().lower()
    if text.startswith("dr"):
        text = text[2:]
    if not text.isdigit() or int(text) not in SUPPORTED_RELEASES:
        raise ValueError(
            f"data release {value!r} is not supported; use one of "
            f"DR{SUPPORTED_RELEASES[0]}..DR{SUPPORTED_RELEASES[-1]} (e.g. 'dr17' or 17)"
        )
    return int(text)


@dataclass(frozen=True)
class SDSSConfig:
    """Base URLs, timeouts, retry policy and concurrency for SDSS requests.

    Attributes:
        skyserver_url: SkyServer root, without the ``/drNN/...`` part.
        sas_url: Science Archive Server root that holds ``drNN/...`` (e.g.
            ``https://data.sdss.org/sas``).
        data_release: default data release (8..17).
        timeout: seconds to wait for a connection and between bytes of an answer
            (``requests``' connect/read timeout). A body that stalls longer fails.
        retries: how many times a failed attempt (HTTP 5xx/429, timeout, connection
            error, body cut short) is retried; 0 = try once.
        backoff: base delay in seconds; attempt ``k`` (0-based) waits
            ``min(backoff * 2**k, backoff_max)`` before the next try. A ``Retry-After``
            header is honoured up to ``backoff_max``.
        backoff_max: upper bound of one wait, seconds.
        workers: parallel downloads; the default 4 is polite to the SAS.
        chunk_size: bytes read per chunk while streaming a file.
        user_agent: ``User-Agent`` header sent with every request.
    """

    skyserver_url: str = "https://skyserver.sdss.org"
    sas_url: str = "https://data.sdss.org/sas"
    data_release: int = 17
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 2.0
    backoff_max: float = 60.0
    workers: int = 4
    chunk_size: int = 64 * 1024
    user_agent: str = f"specclass/{__version__} (+https://github.com/specclass)"

    def __post_init__(self) -> None:
        for name in ("skyserver_url", "sas_url"):
            url = getattr(self, name)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"SDSSConfig.{name} must be an http(s) URL, got {url!r}")
            object.__setattr__(self, name, url.rstrip("/"))
        object.__setattr__(self, "data_release", parse_release(self.data_release))
        if not self.timeout > 0:
            raise ValueError(f"SDSSConfig.timeout must be > 0 seconds, got {self.timeout!r}")
        if int(self.retries) != self.retries or self.retries < 0:
            raise ValueError(f"SDSSConfig.retries must be an integer >= 0, got {self.retries!r}")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("SDSSConfig.backoff and backoff_max must be >= 0 seconds")
        if int(self.workers) != self.workers or not 1 <= self.workers <= 64:
            raise ValueError(f"SDSSConfig.workers must be an integer in 1..64, got {self.workers!r}")
        if self.chunk_size < 1024:
            raise ValueError(f"SDSSConfig.chunk_size must be >= 1024 bytes, got {self.chunk_size!r}")

    def replace(self, **changes: object) -> "SDSSConfig":
        """Return a copy with ``changes`` applied; ``None`` values are ignored.

        Lets a CLI pass its optional flags straight through.
        """
        kept = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **kept)

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        delay = self.backoff * (2**attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return float(min(delay, self.backoff_max))

    @classmethod
    def from_env(cls) -> "SDSSConfig":
        """Defaults overridden by ``SPECCLASS_SKYSERVER_URL``, ``SPECCLASS_SAS_URL``,
        ``SPECCLASS_SDSS_TIMEOUT`` and ``SPECCLASS_SDSS_WORKERS`` when set (for mirrors)."""
        env = os.environ
        changes: dict[str, object] = {}
        if env.get("SPECCLASS_SKYSERVER_URL"):
            changes["skyserver_url"] = env["SPECCLASS_SKYSERVER_URL"]
        if env.get("SPECCLASS_SAS_URL"):
            changes["sas_url"] = env["SPECCLASS_SAS_URL"]
        if env.get("SPECCLASS_SDSS_TIMEOUT"):
            changes["timeout"] = float(env["SPECCLASS_SDSS_TIMEOUT"])
        if env.get("SPECCLASS_SDSS_WORKERS"):
            changes["workers"] = int(env["SPECCLASS_SDSS_WORKERS"])
        return cls(**changes)  # type: ignore[arg-type]


#: The default configuration (environment overrides applied at import).
conf: SDSSConfig = SDSSConfig.from_env()
