"""Transport port and its three adapters: Kafka topic, directory pair, HTTP POST.

`send` returns only once the message is durably handed over (Kafka ack, file renamed, HTTP 2xx);
it may return an AppRec that came back synchronously (HTTP response body).
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class TransportError(RuntimeError):
    """The message was not handed over; it stays due and is tried again."""


class Transport(Protocol):
    def send(self, msg_id: str, xml: bytes) -> bytes | None: ...


class KafkaTransport:
    """Topic `messages.outbound`, key = MsgId, value = the XML; waits for the broker's ack."""

    def __init__(self, settings: Any, producer: Any | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.outbound
        self.producer = producer  # made on first send: building messaging must not need a broker

    def send(self, msg_id: str, xml: bytes) -> bytes | None:
        try:
            if self.producer is None:
                from forlop.kafka import make_producer

                self.producer = make_producer(self.settings)
            self.producer.send(self.topic, key=msg_id.encode(), value=xml).get(timeout=30)
        except Exception as exc:
            raise TransportError(f"Kafka send failed: {type(exc).__name__}: {exc}") from exc
        return None

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()


class DirectoryTransport:
    """Outbox: one `<MsgId>.xml` per message, written atomically. Inbox: AppRec files, moved to processed/."""

    def __init__(self, outbox: Path, inbox: Path) -> None:
        self.outbox, self.inbox = Path(outbox), Path(inbox)
        self.processed = self.inbox / "processed"
        for d in (self.outbox, self.inbox, self.processed):
            d.mkdir(parents=True, exist_ok=True)

    def send(self, msg_id: str, xml: bytes) -> bytes | None:
        if not msg_id.replace("-", "").isalnum():
            raise TransportError(f"refusing MsgId {msg_id!r} as a file name")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".xml", dir=self.outbox)
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(xml)
                fp.flush()
                os.fsync(fp.fileno())
            os.replace(tmp, self.outbox / f"{msg_id}.xml")  # a reader never sees half a message
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TransportError(f"could not write to {self.outbox}: {exc}") from exc
        return None

    def receipts(self, limit: int = 500) -> Iterator[tuple[Path, bytes]]:
        files = sorted(p for p in self.inbox.iterdir() if p.is_file() and not p.name.startswith("."))
        for path in files[:limit]:
            yield path, path.read_bytes()

    def done(self, path: Path) -> None:
        os.replace(path, self.processed / path.name)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 after a POST as a GET without the body, and call it a success."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]  # noqa: ANN001
        return None  # the 3xx surfaces as an HTTPError: not handed over, tried again


class HttpTransport:
    """POST the XML to the configured endpoint; a 2xx body holding an AppRec is handed back.

    Anything else (3xx, 4xx, 5xx, refused, timed out) raises TransportError: the message stays due
    and the relay tries it again later with the same MsgId.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, msg_id: str, xml: bytes) -> bytes | None:
        req = urllib.request.Request(
            self.url, data=xml, method="POST",
            headers={"Content-Type": "application/xml; charset=utf-8", "X-Msg-Id": msg_id},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                body = resp.read(5 * 1024 * 1024 + 1)
        except OSError as exc:
            raise TransportError(f"HTTP send failed: {type(exc).__name__}: {exc}") from exc
        return body if b"AppRec" in body else None


def directory_paths(settings: Any) -> tuple[Path, Path]:
    """(outbox, inbox): explicit settings if present, else under FORLOP_TRANSPORT_DIR or the data dir."""
    base = Path(getattr(settings, "transport_dir", None) or Path(settings.data_dir) / "messages")
    outbox = getattr(settings, "transport_outbox_dir", None) or os.environ.get("FORLOP_TRANSPORT_OUTBOX_DIR")
    inbox = getattr(settings, "transport_inbox_dir", None) or os.environ.get("FORLOP_TRANSPORT_INBOX_DIR")
    return Path(outbox) if outbox else base / "outbox", Path(inbox) if inbox else base / "inbox"


def make_transport(settings: Any) -> KafkaTransport | DirectoryTransport | HttpTransport:
    kind = getattr(settings, "transport", "kafka")
    if kind == "directory":
        return DirectoryTransport(*directory_paths(settings))
    if kind == "http":
        if not settings.transport_url:
            raise ValueError("FORLOP_TRANSPORT_URL is required when FORLOP_TRANSPORT=http")
        return HttpTransport(settings.transport_url)
    return KafkaTransport(settings)
