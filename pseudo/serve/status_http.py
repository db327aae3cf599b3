"""The node's counts over HTTP, on loopback only: ``GET /status`` answers the JSON of
``pseudo serve status --json`` (for a monitoring agent on the same host).

Standard library only (:mod:`http.server`), read-only, no identifying value (the counts are
numbers). It listens on ``127.0.0.1`` and nowhere else: the counts say how busy a project's
node is, which is no one else's business.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: The only address the endpoint listens on.
LOOPBACK = "127.0.0.1"
#: The paths that answer the counts.
PATHS = frozenset({"/status", "/status/"})


class StatusServer:
    """Serves ``counts()`` as JSON at ``http://127.0.0.1:PORT/status``."""

    def __init__(self, counts: Callable[[], dict[str, int]], port: int) -> None:
        handler = type("_Handler", (_Handler,), {"counts": staticmethod(counts)})
        self._server = ThreadingHTTPServer((LOOPBACK, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pseudo-status", daemon=True
        )

    def start(self) -> None:
        """Answer requests (in a thread of its own)."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and free the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    """``GET /status``: the counts; anything else: 404 (or 405 for another method)."""

    counts: Callable[[], dict[str, int]]

    def do_GET(self) -> None:
        """Answer the counts, or 404."""
        if self.path.split("?", 1)[0] not in PATHS:
            self._answer(404, {"error": "not found: GET /status"})
            return
        try:
            counts = self.counts()
        except Exception:  # the journal is closing (the node stops): say so, do not crash
            self._answer(503, {"error": "the node's journal cannot be read now"})
            return
        self._answer(200, counts)

    def _answer(self, code: int, body: Mapping[str, object]) -> None:
        data = json.dumps(body, indent=2).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged (a monitoring agent would fill the node's log)."""
