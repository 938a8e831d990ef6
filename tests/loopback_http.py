"""Scriptable HTTP server on 127.0.0.1, so download tests exercise real sockets without a network.

Usage::

    with serve({"/a.csv": [Reply(500), Reply(body=b"x\\n1\\n")]}) as base:
        download(f"{base}/a.csv")
        assert base.hits["/a.csv"] == 2

A route maps a path (query string ignored) to a behaviour, chosen per request:

* a ``Reply``: the same response on every hit;
* a sequence of ``Reply``: the n-th hit gets the n-th reply, the last one repeats;
* a callable ``(hit_index) -> Reply``: anything else (hit_index counts from 0).

Unknown paths get a plain-text 404. Every request is counted in ``base.hits`` (a Counter).
``serve(routes, basic_auth=("user", "password"))`` answers 401 to any request without those
HTTP basic-auth credentials (counted in ``base.hits`` like any other request).
"""

from __future__ import annotations

import base64
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Self
from urllib.parse import urlsplit


def _csv_headers() -> Mapping[str, str]:
    """Default headers: a CSV body, which is what most tests serve."""
    return MappingProxyType({"Content-Type": "text/csv"})


@dataclass(frozen=True)
class Reply:
    """One scripted response, so a test states what the server does instead of writing a handler.

    status/body/headers: what is sent. content_length: the declared Content-Length (default
    len(body)); declare more than you send to simulate a truncated body (the connection closes
    after the body, HTTP/1.0 style). omit_length: send no Content-Length, the body ends at close.
    delay_s: wait before sending anything (a server that never answers).
    stall_after/stall_s: send that many body bytes, then wait stall_s before the rest (a server
    that stalls mid-body). drop: close the connection without any response.
    Waits end early when the server shuts down, so stalls never outlive a test.
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=_csv_headers)
    content_length: int | None = None
    omit_length: bool = False
    delay_s: float = 0.0
    stall_after: int | None = None
    stall_s: float = 0.0
    drop: bool = False


Behaviour = Reply | Sequence[Reply] | Callable[[int], Reply]

_NOT_FOUND = Reply(404, b"not found\n", {"Content-Type": "text/plain"})
_UNAUTHORIZED = Reply(
    401,
    b"credentials required\n",
    {"Content-Type": "text/plain", "WWW-Authenticate": 'Basic realm="foldflow-test"'},
)


class BaseURL(str):
    """The server's base URL (``http://127.0.0.1:PORT``), carrying the live per-path hit counter."""

    hits: Counter[str]

    def __new__(cls, url: str, hits: Counter[str]) -> Self:
        """Build the str and attach the counter, so tests can use it as a plain URL prefix."""
        obj = super().__new__(cls, url)
        obj.hits = hits
        return obj


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the routes, hit counter and a stop event for its handlers."""

    daemon_threads = True

    def __init__(
        self, routes: Mapping[str, Behaviour], basic_auth: tuple[str, str] | None = None
    ) -> None:
        """Bind 127.0.0.1 on a free port: tests must never listen on a public interface."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = dict(routes)
        self.authorization = (
            None
            if basic_auth is None
            else "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode("ascii")
        )
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore clients that hang up mid-response: timeouts and truncation tests do that."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def reply_for(self, path: str) -> Reply:
        """Count the hit and pick this request's scripted reply."""
        with self.lock:
            index = self.hits[path]
            self.hits[path] += 1
        behaviour = self.routes.get(path)
        if behaviour is None:
            return _NOT_FOUND
        if isinstance(behaviour, Reply):
            return behaviour
        if callable(behaviour):
            return behaviour(index)
        return behaviour[min(index, len(behaviour) - 1)]


class _Handler(BaseHTTPRequestHandler):
    """Plays back the scripted Reply for each GET."""

    server: _Server

    def do_GET(self) -> None:
        """Send the scripted reply, honouring delays, stalls, drops and false Content-Length."""
        reply = self.server.reply_for(urlsplit(self.path).path)
        wanted = self.server.authorization
        if wanted is not None and self.headers.get("Authorization") != wanted:
            reply = _UNAUTHORIZED
        stopping = self.server.stopping
        if reply.delay_s and stopping.wait(reply.delay_s):
            return
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if not reply.omit_length:
            declared = len(reply.body) if reply.content_length is None else reply.content_length
            self.send_header("Content-Length", str(declared))
        self.send_header("Connection", "close")
        self.end_headers()
        body = reply.body
        if reply.stall_after is not None:
            self.wfile.write(body[: reply.stall_after])
            self.wfile.flush()
            if stopping.wait(reply.stall_s):
                return
            body = body[reply.stall_after :]
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@contextmanager
def serve(
    routes: Mapping[str, Behaviour], basic_auth: tuple[str, str] | None = None
) -> Iterator[BaseURL]:
    """Run a loopback server for the duration of the block and always shut it down."""
    server = _Server(routes, basic_auth)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        yield BaseURL(f"http://127.0.0.1:{port}", server.hits)
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
