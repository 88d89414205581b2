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
import threading
from typing import Any

from waitress.server import create_server

# Worker threads per process. The work per request is CPU in Python (one GIL): more threads than
# a few only add switching, while a request waiting on the database lets another run. The store's
# connection pool holds at least this many (`forlop.runtime`), so no request opens a connection.
HTTP_THREADS = 8

# "Task queue depth is N" on every request that waits for a worker thread: with a fixed pool that
# is how a burst is absorbed, not a fault (the latency histogram shows it), and under load it
# would be most of the log.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class HttpServer:
    """The same surface the services use of werkzeug's `BaseWSGIServer`: server_port, serve_forever, shutdown."""

    def __init__(self, host: str, port: int, app: Any, threads: int = HTTP_THREADS) -> None:
        self._server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="forlop",
            asyncore_use_poll=True,  # select() stops at file descriptor 1024
        )
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
        from waitress import wasyncore

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


def make_http_server(host: str, port: int, app: Any, threads: int = HTTP_THREADS) -> HttpServer:
    return HttpServer(host, port, app, threads)
