"""The HTTP server of every service process: waitress, run on a thread and stopped from another.

Production and the embedded run serve the same way (werkzeug's server is a development server: a
thread per connection, no bound on concurrency). waitress is pure Python: one I/O thread (the
caller of `serve_forever`) accepts connections and reads requests, a fixed pool of worker threads
runs the WSGI app, so a burst of clients queues instead of each getting a thread that competes for
the GIL, the database pool and the CPU. It lives in a thread of the service process beside the
Kafka consumers and periodic workers, so `shutdown()` has to stop it cleanly from another thread.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server
from waitress.task import ErrorTask
from waitress.utilities import BadRequest, RequestHeaderFieldsTooLarge

from forlop.config import Settings

# Worker threads per process (the API's: FORLOP_HTTP_THREADS, `Settings.http_threads`). The work per
# request is CPU in Python (one GIL): more threads than a few only add switching and an unfair
# hand-over of the GIL (a longer tail at the same median), while a request waiting on the database
# lets another run. Two, not four: a shorter tail under load at the same throughput; one thread was
# as good but lets one slow request (a large unit's worklist) hold up every other (the measurements:
# docs/performance.md).
# The store's connection pool holds at least this many, so no request opens a connection.
HTTP_THREADS = Settings.http_threads

# "Task queue depth is N" on every request that waits for a worker thread: with a fixed pool that
# is how a burst is absorbed, not a fault (the latency histogram shows it), and under load it
# would be most of the log.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What waitress itself allows a connection and a request (the settings' FORLOP_HTTP_*).

    `max_head_bytes` (request line and header fields) is the app's URL and header limits together
    plus a little, so a request within both reaches the app, which names the one it breaks
    (services.api.limits); past it, and past `max_body_bytes`, waitress answers itself, as an
    OperationOutcome too (`_OutcomeErrorTask`). `connection_limit`: open connections, idle or not,
    beyond which new ones wait in the listen backlog (waitress's default, 100, let a hundred idle
    clients keep every probe out); `channel_timeout_s`: how long a connection may sit idle.
    """

    connection_limit: int = Settings.http_connection_limit
    channel_timeout_s: int = Settings.http_channel_timeout_s
    max_url_bytes: int = Settings.http_max_url_bytes
    max_header_bytes: int = Settings.http_max_header_bytes
    max_body_bytes: int = Settings.http_max_body_bytes

    @property
    def max_head_bytes(self) -> int:
        return self.max_url_bytes + self.max_header_bytes + 1024

    @staticmethod
    def of(settings: Settings) -> ServerLimits:
        return ServerLimits(settings.http_connection_limit, settings.http_channel_timeout_s,
                            settings.http_max_url_bytes, settings.http_max_header_bytes, settings.http_max_body_bytes)


class UriTooLong(BadRequest):
    code = 414
    reason = "URI Too Long"


class _RequestParser(HTTPRequestParser):
    """waitress's parser, telling a request line too long (414) from header fields too large (431)."""

    def received(self, data: bytes) -> int:
        before = self.header_plus
        consumed = super().received(data)
        if type(self.error) is RequestHeaderFieldsTooLarge and b"\n" not in (before + data).lstrip():
            self.error = UriTooLong(self.error.body)
        return consumed


_ISSUE_CODES = {413: "too-costly", 414: "too-costly", 431: "too-costly", 500: "exception", 501: "not-supported"}


class _OutcomeErrorTask(ErrorTask):
    """waitress's own answers (a request too large for it, a malformed one) as a FHIR OperationOutcome,
    as every error of the API is, instead of plain text."""

    def execute(self) -> None:
        error = self.request.error
        limits: ServerLimits = getattr(self.channel.server, "forlop_limits", ServerLimits())
        detail = {413: f"the request body is larger than {limits.max_body_bytes} bytes; split the batch",
                  414: f"the URL is longer than this server takes; at most {limits.max_url_bytes} bytes",
                  431: f"the header fields are larger than this server takes; at most {limits.max_header_bytes} "
                       "bytes",
                  }.get(error.code, f"{error.reason}: {error.body}")
        body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": _ISSUE_CODES.get(error.code, "structure"), "diagnostics": detail}]})
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/fhir+json"),
                                      ("Content-Length", str(len(body))), ("Connection", "close")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """waitress's HTTP channel, less a busy loop of its I/O thread.

    A task thread sends what the app writes itself (holding the channel's output lock, while the
    bytes wait in the output buffer). Meanwhile waitress's `writable()` said yes, so the I/O thread
    polled for POLLOUT, got it at once, found the lock taken and polled again: ~9 such passes per
    request, each over every connection's readable()/writable() (the I/O loop was ~45 % of an API
    process's GIL time under load; ~0.5 passes per request now). Here a channel whose task thread
    holds the lock is not writable: what that thread leaves unsent is sent by the I/O thread after
    the thread lets the lock go (the task's end always wakes the I/O thread, and so does a thread
    that waits for the buffer to drain). Pinned to waitress 3.0.x (tests/platform/test_wsgi.py).
    """

    parser_class = _RequestParser
    error_task_class = _OutcomeErrorTask

    def writable(self) -> bool:
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        if self.requests:  # a task runs on this channel: is its thread sending right now?
            if not self.outbuf_lock.acquire(False):
                return False
            self.outbuf_lock.release()
        return True


class HttpServer:
    """The same surface the services use of werkzeug's `BaseWSGIServer`: server_port, serve_forever, shutdown."""

    def __init__(self, host: str, port: int, app: Any, threads: int = HTTP_THREADS,
                 sock: socket.socket | None = None, limits: ServerLimits | None = None) -> None:
        """`sock`: a socket bound already (`listen_socket`), which the server listens on instead of host:port."""
        where: dict[str, Any] = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
        limits = limits or ServerLimits()
        self._server = create_server(
            app,
            **where,
            threads=threads,
            ident="forlop",
            asyncore_use_poll=True,  # select() stops at file descriptor 1024
            connection_limit=limits.connection_limit,
            channel_timeout=limits.channel_timeout_s,
            cleanup_interval=min(30, limits.channel_timeout_s),  # how often idle connections are looked for
            max_request_header_size=limits.max_head_bytes,
            max_request_body_size=limits.max_body_bytes,
        )
        self._server.channel_class = _Channel
        self._server.forlop_limits = limits  # what _OutcomeErrorTask names
        self.server_port: int = self._server.effective_port
        self._running = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        self._running.set()
        try:
            self._server.run()
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, then let the worker threads finish."""
        mapping = self._server._map
        pulled = False
        if self._running.is_set() and not self._stopped.is_set():
            # The sockets belong to the I/O thread: it closes them itself, which ends its loop.
            try:
                self._server.trigger.pull_trigger(lambda: wasyncore.close_all(mapping))
                pulled = True
            except OSError:
                pass  # the loop is ending already (its trigger is closed): close what is left here
        if pulled:
            self._stopped.wait(timeout)
        else:
            wasyncore.close_all(mapping)
        self._server.task_dispatcher.shutdown(timeout=timeout)


def make_http_server(host: str, port: int, app: Any, threads: int = HTTP_THREADS,
                     sock: socket.socket | None = None, limits: ServerLimits | None = None) -> HttpServer:
    return HttpServer(host, port, app, threads, sock, limits)


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), not yet listening.

    `reuse_port`: SO_REUSEPORT, so that several processes each bind and listen on the same port
    and the kernel spreads the incoming connections over their sockets (by a hash of the
    client's address and port). Every socket of the group needs it: a process that binds the
    port without it is refused, as before.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEPORT alone: SO_REUSEADDR as well would let a program bind the port (with SO_REUSEADDR)
        # whenever no socket of the group listens, e.g. while its one worker is started again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT if reuse_port else socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
