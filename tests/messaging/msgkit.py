"""Helpers shared by the messaging tests (importable as `msgkit`; conftest holds the fixtures)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from forlop.clock import OSLO
from forlop.events import PathwayEvent
from forlop.status import EpisodeStatus, PathwayStatus
from services.ingest.domain.normalise import parse_vendor_event

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def id_factory(prefix: int = 0) -> Callable[[], str]:
    counter = iter(range(1, 10**9))
    return lambda: str(uuid.UUID(int=(prefix << 64) + next(counter)))


def load_examples(contracts: Path, source: str) -> dict[str, list[PathwayEvent]]:
    by_pathway: dict[str, list[PathwayEvent]] = {}
    path = contracts / f"{source}-examples.ndjson"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ev = parse_vendor_event(source, json.loads(line))
            by_pathway.setdefault(ev.pathway_id, []).append(ev)
    return by_pathway


def raw_examples(contracts: Path, source: str) -> dict[str, list[dict[str, Any]]]:
    """The contracts' vendor records (not yet parsed), per pathway id."""
    by_pathway: dict[str, list[dict[str, Any]]] = {}
    for line in (contracts / f"{source}-examples.ndjson").read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            by_pathway.setdefault(raw["pathway"]["id"] if source == "dips" else raw["forlopsId"], []).append(raw)
    return by_pathway


class VendorRecords:
    """New records of one example pathway in its vendor's own format, written like the EHR would
    (envelope copied from the pathway's first record), to go through `parse_vendor_event`."""

    _DIPS_STAY = {"admission": "admission.started", "discharge-ready": "admission.discharge-ready",
                  "discharged": "admission.ended"}
    _ESP_STAY = {"admission": "INNLEGGELSE", "discharge-ready": "UTSKRIVNINGSKLAR", "discharged": "UTSKREVET"}
    _ESP_DESTINATION = {"home": "HJEM", "nursing-home": "SYKEHJEM", "municipal-acute-unit": "KAD",
                        "other-specialist-institution": "ANNEN_SPESIALISTHELSETJENESTE",
                        "own-institution-somatic": "EGEN_INSTITUSJON_SOMATIKK",
                        "own-institution-other": "EGEN_INSTITUSJON_ANNEN",
                        "institution-abroad": "INSTITUSJON_UTLAND", "other": "ANNET"}

    INPATIENT_UNIT = ("8140713", "DPS Nordvest døgnseksjon")

    def __init__(self, source: str, like: dict[str, Any]) -> None:
        self.source = source
        self.like = like

    def _new(self, what: str, at: datetime, recorded: datetime | None, services: bool | None,
             inpatient: bool) -> dict[str, Any]:
        raw = json.loads(json.dumps(self.like))
        recorded = recorded or at + timedelta(minutes=20)
        pathway = raw["pathway"]["id"] if self.source == "dips" else raw["forlopsId"]
        # the same record written twice gets the same id (a redelivery), another record another id
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{pathway}/{what}/{at.isoformat()}/{recorded.isoformat()}"))
        if self.source == "dips":
            raw.pop("document", None)
            raw["eventId"] = event_id
            raw["eventTime"], raw["recordedTime"] = _iso(at), _iso(recorded)
            if inpatient:
                raw["unit"].update(herId=self.INPATIENT_UNIT[0], name=self.INPATIENT_UNIT[1], setting="inpatient")
            if services is not None:
                raw["patient"]["receivesMunicipalServices"] = services
        else:
            for k in ("kode", "hendelsesdato", "registreringsId", "endretBehandlingsplan", "fristForsteSamtale"):
                raw.pop(k, None)
            raw["meldingsId"] = event_id
            raw["registrertTid"] = _esp(recorded)
            if inpatient:
                raw.update(enhetHerId=self.INPATIENT_UNIT[0], enhetNavn=self.INPATIENT_UNIT[1], omsorgsniva="D")
            if services is not None:
                raw["kommunaleTjenester"] = "J" if services else "N"
        return raw

    def stay(self, kind: str, stay_id: str, at: datetime, *, recorded: datetime | None = None,
             services: bool | None = True, destination: str | None = None) -> dict[str, Any]:
        """kind: admission | discharge-ready | discharged; destination: a canonical value (discharges)."""
        raw = self._new(f"{kind}/{stay_id}", at, recorded, services, inpatient=True)
        if self.source == "dips":
            raw["eventType"] = self._DIPS_STAY[kind]
            raw["admission"] = {"id": stay_id, "time": _iso(at)}
            if destination:
                raw["admission"]["dischargeDestination"] = destination
        else:
            raw.update(meldingstype=self._ESP_STAY[kind], oppholdId=stay_id, tidspunkt=_esp(at))
            if destination:
                raw["utskrevetTil"] = self._ESP_DESTINATION[destination]
        return raw

    def consent(self, at: datetime, given: bool) -> dict[str, Any]:
        raw = self._new(f"consent/{given}", at, None, None, inpatient=False)
        if self.source == "dips":
            raw.update(eventType="consent.changed", consent={"municipality": given})
        else:
            raw.update(meldingstype="SAMTYKKE", samtykkeKommune="J" if given else "N", tidspunkt=_esp(at))
        return raw

    def withdrawal(self, target: str, at: datetime) -> dict[str, Any]:
        """The withdrawal (feilregistrering) of a registration or of a whole stay, named by its id."""
        raw = self._new(f"withdrawal/{target}", at, at, None, inpatient=False)
        if self.source == "dips":
            raw.update(eventType="ppr.document.deleted", document={"id": target, "reason": "feilregistrering"})
        else:
            raw.update(meldingstype="FORLOPSKODE_SLETTET", registreringsId=target, arsak="feilregistrering")
        return raw


def _iso(at: datetime) -> str:
    return at.astimezone(OSLO).isoformat()


def _esp(at: datetime) -> str:
    return at.astimezone(OSLO).strftime("%d.%m.%Y %H:%M")


def local(text: str) -> datetime:
    """A local Norwegian time, "2025-12-01 10:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=OSLO)


def parse(source: str, raws: Iterable[dict[str, Any]]) -> list[PathwayEvent]:
    return [parse_vendor_event(source, raw) for raw in raws]


def payload(events: Iterable[PathwayEvent], status: dict[str, Any] | None = None) -> dict[str, Any]:
    evs = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    first = evs[0]
    return {
        "pathway_key": first.pathway_key,
        "pathway_id": first.pathway_id,
        "source": first.source.value,
        "status": status or PathwayStatus(first.pathway_key, first.pathway_id, first.source.value,
                                          first.pathway_type, EpisodeStatus.ACTIVE, "treatment", ()).to_dict(),
        "events": [e.to_dict() for e in evs],
        "changed_at": NOW.isoformat(),
    }


class LocalHttpServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port) in a thread; `handle` answers each request.

    handle(method, path, body) -> (status, content-type, body). Every request is recorded.
    """

    def __init__(self, handle: Callable[[str, str, bytes], tuple[int, str, bytes]]) -> None:
        server = self
        self.handle = handle
        self.requests: list[tuple[str, str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.command, self.path, body))
                status, ctype, out = server.handle(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _any  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


class AddressRegister:
    """A local stand-in for the national address register: GET /municipalities/{nr}, POST /gp-lookup.

    `municipalities` and `gps` (national id -> entry) may be changed while it runs; `down` answers 503.
    """

    def __init__(self) -> None:
        self.municipalities: dict[str, dict[str, Any]] = {}
        self.gps: dict[str, dict[str, Any]] = {}
        self.down = False
        self.server = LocalHttpServer(self._answer)

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.down:
            return 503, "text/plain", b"unavailable"
        found: dict[str, Any] | None = None
        if method == "GET" and path.startswith("/municipalities/"):
            found = self.municipalities.get(path.rsplit("/", 1)[1])
        elif method == "POST" and path == "/gp-lookup":
            found = self.gps.get(json.loads(body or b"{}").get("nationalId", ""))
        if found is None:
            return 404, "application/json", b'{"error": "not found"}'
        return 200, "application/json", json.dumps(found).encode()

    @property
    def url(self) -> str:
        return self.server.base

    def stop(self) -> None:
        self.server.stop()
