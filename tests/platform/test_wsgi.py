"""forlop.wsgi: waitress on a thread, its I/O thread not spinning while task threads send."""

from __future__ import annotations

import http.client
import socket
import threading
import time

from forlop.wsgi import HttpServer, listen_socket


def body_app(size: int):
    body = bytes(range(256)) * (size // 256)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]

    return app, body


def serving(app, **kw) -> tuple[HttpServer, threading.Thread]:
    server = HttpServer("127.0.0.1", 0, app, threads=4, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_a_response_larger_than_the_socket_buffers_reaches_a_late_reader_whole_and_at_once():
    """What a task thread cannot send at once (the socket buffers are full) the I/O thread sends
    after the task lets go of the channel: no wait for the I/O loop's 1 s timeout."""
    app, body = body_app(8 * 1024 * 1024)
    server, thread = serving(app)
    try:
        sock = socket.create_connection(("127.0.0.1", int(server.server_port)))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # the task sends what the buffers take, and ends, while nobody reads
        sock.settimeout(10)
        started, received = time.monotonic(), bytearray()
        while len(received) < len(body) or b"\r\n\r\n" not in received[:4096]:
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed early"
            received += chunk
            head, _, got = bytes(received).partition(b"\r\n\r\n")
            if len(got) >= len(body):
                break
        assert time.monotonic() - started < 0.9
        assert head.startswith(b"HTTP/1.1 200") and got == body
        sock.close()
    finally:
        server.shutdown()
        thread.join(10)


def test_keep_alive_clients_in_parallel_get_every_response():
    app, body = body_app(40_000)  # more than one send's worth on a fresh connection
    server, thread = serving(app)
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.server_port), timeout=10)
        for _ in range(25):
            conn.request("GET", "/")
            resp = conn.getresponse()
            if resp.status != 200 or resp.read() != body:
                errors.append("bad response")
        conn.close()

    try:
        clients = [threading.Thread(target=client) for _ in range(12)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(30)
        assert not errors and not any(c.is_alive() for c in clients)
    finally:
        server.shutdown()
        thread.join(10)


def test_reuse_port_sockets_share_a_port_and_a_plain_bind_is_refused():
    first = listen_socket("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    second = listen_socket("127.0.0.1", port, reuse_port=True)
    try:
        try:
            listen_socket("127.0.0.1", port).close()
            raise AssertionError("a socket without SO_REUSEPORT took the port")
        except OSError:
            pass
        app, body = body_app(1024)
        server, thread = serving(app, sock=second)
        try:
            assert int(server.server_port) == port
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            assert conn.getresponse().read() == body  # `first` only holds the port: it never listens
        finally:
            server.shutdown()
            thread.join(10)
    finally:
        first.close()
