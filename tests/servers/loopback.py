"""The part every test server shares: a threaded stdlib HTTP server on 127.0.0.1, port 0."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """Start/stop a :class:`ThreadingHTTPServer` whose GET requests go to ``self._handle(request)``.

    Subclasses implement ``_handle(handler)`` and set :attr:`path_prefix` (appended to
    the base URL). Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    path_prefix = ""
    _httpd: ThreadingHTTPServer | None = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                try:
                    server._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.path_prefix}"
