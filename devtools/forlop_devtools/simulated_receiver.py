"""A simulated e-message gateway and receiver, for tests and `forlop run`.

Takes messages from each transport adapter (Kafka topic `messages.outbound`, the outbox
directory, an HTTP endpoint it serves) and answers with an AppRec (topic `messages.apprec`,
the inbox directory, the HTTP response body) according to a policy:

- ``ok``: AppRec status 1;
- ``reject`` / ``reject:E21``: status 2 (avvist) with the error code;
- ``silent``: no answer at all (the sender must resend after its timeout).

It records every delivery per MsgId. A resend with a MsgId already seen takes effect once:
it is counted as a duplicate delivery and answered with the same AppRec again. It also keeps
the digest of each MsgId's content: a MsgId seen with two contents (`conflicting`) would be
two messages to a receiver that trusts the MsgId.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kafka import KafkaConsumer

from forlop.config import Settings, load_settings
from forlop.kafka import client_options, make_producer
from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.transport import directory_paths
from services.messaging.adapters.xmlsafe import UnsafeXml, parse_untrusted

log = logging.getLogger(__name__)
MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"

class SimulatedReceiver:
    def __init__(self, policy: str = "ok", record_file: Path | None = None) -> None:
        self.policy = policy
        self.record_file = record_file
        self.deliveries: Counter[str] = Counter()  # MsgId -> times delivered
        self.effects: dict[str, str] = {}  # MsgId -> message type, applied once
        self.answers: dict[str, bytes | None] = {}
        self.contents: dict[str, set[str]] = {}  # MsgId -> sha256 of each distinct content received
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: ThreadingHTTPServer | None = None

    # --- the receiver's logic -----------------------------------------------------------------
    def receive(self, xml: bytes) -> bytes | None:
        """Record one delivery; return the AppRec to send back, or None (silent, or not a MsgHead)."""
        try:
            root = parse_untrusted(xml)
        except UnsafeXml:
            return None
        msg_id = root.findtext(f"{{{MH}}}MsgInfo/{{{MH}}}MsgId")
        mtype = root.find(f"{{{MH}}}MsgInfo/{{{MH}}}Type")
        if not msg_id:
            return None
        digest = hashlib.sha256(xml).hexdigest()
        with self._lock:
            self.deliveries[msg_id] += 1
            self.contents.setdefault(msg_id, set()).add(digest)
            if msg_id in self.answers:  # a resend: no second effect, the same answer
                answer = self.answers[msg_id]
            else:
                self.effects[msg_id] = mtype.get("V", "") if mtype is not None else ""
                answer = self.answers[msg_id] = self._answer(msg_id, self.effects[msg_id])
            self._save()
        return answer

    def _answer(self, msg_id: str, mtype: str) -> bytes | None:
        policy = self.policy
        if policy == "silent":
            return None
        now = datetime.now(UTC)
        if policy.startswith("reject"):
            code = policy.partition(":")[2] or "E21"
            return build_apprec(msg_id, mtype, "rejected", now, str(uuid.uuid4()), [(code, "Avvist (simulert)")])
        return build_apprec(msg_id, mtype, "ok", now, str(uuid.uuid4()))

    @property
    def duplicates(self) -> int:
        return sum(self.deliveries.values()) - len(self.deliveries)

    @property
    def conflicting(self) -> list[str]:
        """MsgIds received with more than one content."""
        return sorted(m for m, digests in self.contents.items() if len(digests) > 1)

    def summary(self) -> dict[str, Any]:
        return {"distinct": len(self.deliveries), "deliveries": sum(self.deliveries.values()),
                "duplicates": self.duplicates, "conflicting": len(self.conflicting),
                "by_msg_id": dict(self.deliveries)}

    def _save(self) -> None:
        if self.record_file is not None:
            tmp = self.record_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.summary()))
            os.replace(tmp, self.record_file)

    # --- directory adapter --------------------------------------------------------------------
    def poll_directory(self, outbox: Path, inbox: Path) -> int:
        """Take each `<MsgId>.xml` from the outbox (moved to outbox/received/), answer into the inbox."""
        received = outbox / "received"
        received.mkdir(parents=True, exist_ok=True)
        inbox.mkdir(parents=True, exist_ok=True)
        n = 0
        for path in sorted(outbox.glob("*.xml")):
            xml = path.read_bytes()
            answer = self.receive(xml)
            os.replace(path, received / f"{path.stem}.{uuid.uuid4().hex[:8]}.xml")
            if answer is not None:
                tmp = inbox / f".tmp-{uuid.uuid4().hex}"
                tmp.write_bytes(answer)
                os.replace(tmp, inbox / f"apprec-{path.stem}-{uuid.uuid4().hex[:8]}.xml")
            n += 1
        return n

    def start_directory(self, outbox: Path, inbox: Path, interval: float = 0.2) -> SimulatedReceiver:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.poll_directory(outbox, inbox)
                except OSError:
                    log.exception("simulated receiver: directory poll failed")
                self._stop.wait(interval)

        return self._start(loop, "receiver-directory")

    # --- Kafka adapter ------------------------------------------------------------------------
    def start_kafka(self, settings: Any) -> SimulatedReceiver:
        consumer = KafkaConsumer(
            settings.topics.outbound, **client_options(settings), group_id=f"{settings.consumer_group}.sim-receiver",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        producer = make_producer(settings)

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    polled = consumer.poll(timeout_ms=200)
                    for records in polled.values():
                        for rec in records:
                            answer = self.receive(rec.value)
                            if answer is not None:
                                producer.send(settings.topics.apprec, key=rec.key, value=answer)
                    if polled:
                        producer.flush()
                        consumer.commit()
            finally:
                consumer.close(autocommit=False)
                producer.close()

        return self._start(loop, "receiver-kafka")

    # --- HTTP adapter -------------------------------------------------------------------------
    def start_http(self, host: str = "127.0.0.1", port: int = 0) -> SimulatedReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                answer = receiver.receive(self.rfile.read(min(length, 5 * 1024 * 1024)))
                self.send_response(200 if answer else 202)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(answer or b"")))
                self.end_headers()
                self.wfile.write(answer or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((host, port), Handler)
        return self._start(self._http.serve_forever, "receiver-http")

    @property
    def url(self) -> str:
        assert self._http is not None
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/messages"

    def _start(self, target: Any, name: str) -> SimulatedReceiver:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for t in self._threads:
            t.join(timeout=5)

def start_for_embedded(settings: Settings) -> SimulatedReceiver:
    """Start the receiver for the configured transport (policy from FORLOP_RECEIVER_POLICY, default ok)."""
    receiver = SimulatedReceiver(os.environ.get("FORLOP_RECEIVER_POLICY", "ok"))
    kind = settings.transport
    if kind == "directory":
        return receiver.start_directory(*directory_paths(settings))
    if kind == "http":
        url = urlparse(settings.transport_url or "http://127.0.0.1:8099/messages")
        return receiver.start_http(url.hostname or "127.0.0.1", url.port or 80)
    return receiver.start_kafka(settings)

def main() -> None:  # pragma: no cover - manual use: python -m forlop_devtools.simulated_receiver
    r = start_for_embedded(load_settings())
    try:
        while True:
            time.sleep(5)
            print(json.dumps({k: v for k, v in r.summary().items() if k != "by_msg_id"}))
    except KeyboardInterrupt:
        r.stop()

if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["SimulatedReceiver", "start_for_embedded"]
