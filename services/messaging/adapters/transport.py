"""Transport port and its three adapters: Kafka topic, directory pair, HTTP POST.

`send` returns only once the message is durably handed over (Kafka ack, file renamed, HTTP 2xx);
it may return an AppRec that came back synchronously (HTTP response body).
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import stat
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kafka import KafkaProducer

from forlop.config import Settings
from forlop.kafka import make_producer
from forlop.logging import ctx
from services.messaging.adapters.xmlsafe import MAX_BYTES

log = logging.getLogger(__name__)

INBOX_BATCH = 50  # AppRec files a relay pass reads at most (FORLOP_APPREC_INBOX_BATCH)


class TransportError(RuntimeError):
    """The message was not handed over; it stays due and is tried again."""


class Transport(Protocol):
    def send(self, msg_id: str, xml: bytes) -> bytes | None: ...


class KafkaTransport:
    """Topic `messages.outbound`, key = MsgId, value = the XML; waits for the broker's ack."""

    def __init__(self, settings: Settings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.outbound
        self.producer = producer  # made on first send: building messaging must not need a broker

    def send(self, msg_id: str, xml: bytes) -> bytes | None:
        try:
            if self.producer is None:
                self.producer = make_producer(self.settings)
            self.producer.send(self.topic, key=msg_id.encode(), value=xml).get(timeout=30)
        except Exception as exc:
            raise TransportError(f"Kafka send failed: {type(exc).__name__}: {exc}") from exc
        return None

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()


class DirectoryTransport:
    """Outbox: one `<MsgId>.xml` per message, written atomically. Inbox: AppRec files, moved to processed/.

    The inbox is read as untrusted: a symbolic link is never followed, a file's size is checked on
    the opened file before a byte is read, and a pass reads at most `batch` files. What is not a
    regular file within `max_bytes` is moved to refused/ with a `<name>.reason` beside it.
    """

    def __init__(self, outbox: Path, inbox: Path, *, batch: int = INBOX_BATCH, max_bytes: int = MAX_BYTES) -> None:
        self.outbox, self.inbox = Path(outbox), Path(inbox)
        self.processed = self.inbox / "processed"
        self.refused = self.inbox / "refused"
        self.batch = batch
        self.max_bytes = max_bytes
        for d in (self.outbox, self.inbox, self.processed, self.refused):
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

    def receipts(self) -> Iterator[tuple[Path, bytes]]:
        """The next AppRec files (up to `batch`, by name), each read when its turn comes."""
        with os.scandir(self.inbox) as entries:
            names = heapq.nsmallest(self.batch, (
                e.name for e in entries
                if not e.name.startswith(".") and e.name not in (self.processed.name, self.refused.name)))
        for name in names:
            path = self.inbox / name
            try:
                raw = self._read(path)
            except _Refused as exc:
                self.refuse(path, str(exc))
                continue
            except FileNotFoundError:
                continue  # taken by another relay meanwhile
            yield path, raw

    def _read(self, path: Path) -> bytes:
        try:
            # O_NOFOLLOW: a symbolic link fails to open (ELOOP); O_NONBLOCK: a FIFO does not hang the relay
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Refused("a symbolic link: not followed") from None
            if isinstance(exc, FileNotFoundError):
                raise
            raise _Refused(f"cannot be opened: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Refused("not a regular file")
            if st.st_size > self.max_bytes:
                raise _Refused(f"{st.st_size} bytes: larger than {self.max_bytes}")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as fp:
            raw = fp.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            raise _Refused(f"grew beyond {self.max_bytes} bytes while read")
        return raw

    def refuse(self, path: Path, reason: str) -> None:
        """Move an inbox entry aside (the link itself, not its target) with a note of why."""
        target = self.refused / path.name
        if os.path.lexists(target):
            target = self.refused / f"{path.name}.{uuid.uuid4().hex[:8]}"
        os.replace(path, target)
        Path(f"{target}.reason").write_text(reason + "\n", encoding="utf-8")
        log.warning("AppRec inbox entry refused", extra=ctx(file=target.name, reason=reason))

    def done(self, path: Path) -> None:
        os.replace(path, self.processed / path.name)


class _Refused(Exception):
    """An inbox entry that is not read: why."""


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


def directory_paths(settings: Settings) -> tuple[Path, Path]:
    """(outbox, inbox) of the directory transport: under FORLOP_TRANSPORT_DIR, else `<data dir>/messages`."""
    base = Path(settings.transport_dir) if settings.transport_dir else Path(settings.data_dir) / "messages"
    return base / "outbox", base / "inbox"


def make_transport(settings: Settings) -> KafkaTransport | DirectoryTransport | HttpTransport:
    if settings.transport == "directory":
        return DirectoryTransport(*directory_paths(settings), batch=settings.apprec_inbox_batch)
    if settings.transport == "http":
        if not settings.transport_url:
            raise ValueError("FORLOP_TRANSPORT_URL is required when FORLOP_TRANSPORT=http")
        return HttpTransport(settings.transport_url)
    return KafkaTransport(settings)
