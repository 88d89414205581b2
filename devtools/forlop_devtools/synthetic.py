"""Synthetic vendor events: realistic pathways in DIPS-like or eSP-like format.

Behind ``forlop generate --vendor dips|esp --pathways N --seed S``, the embedded run
and the benchmarks. Each pathway is first drawn as vendor-neutral facts, then written
in the vendor's format, so the same seed gives the same clinical history in both
formats (the tests use that to check that both mappings agree).

What the histories hold: all three pathway types (D11 PHV, D12 PHBU, D01 TSB),
outpatient and inpatient (with admission, discharge-ready and discharged, the admission
sometimes keyed in a day or more late, the discharge with or without where to; detox codes
in TSB), starts with and without a first-attendance deadline, clinical decisions incl.
extended assessment (U, then a second decision), evaluations (some changing the
treatment plan), ends right after first attendance and after K/A/I/S decisions,
no-shows and cancellations by patient or hospital that move the appointment, consent
given (sometimes only after a decision the same day), refused and withdrawn, late
registrations keyed in days later by office staff, corrected registrations (deleted
and registered again with another date; sometimes the deletion is delivered before
what it cancels), redeliveries (exact duplicates), deadline breaches, and pathways
still open at ``as_of``.

Only synthetic identities: national ids are Skatteetaten-style synthetic numbers
(month + 80); HPR numbers and HER-ids come from the 997xxxx-999xxxx range, which no real
register uses; names never occur in the formats. Deterministic for a seed. Fast
(pure Python, no per-event time-zone arithmetic) and memory-light: `iter_generate`
keeps only the events of pathways still running in a small heap.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TextIO

from forlop.clock import OSLO
from forlop.config import SYNTHETIC_SENDER_ORG_NUMBER as ORG_NUMBER  # the health trust messages are sent as
from services.ingest.public import synthetic_national_id

VENDORS = ("dips", "esp")
DEFAULT_SPAN_DAYS = 365

# (HER-id, name) per pathway type: two outpatient clinics and one inpatient unit
_UNITS = {
    "D11": [("9970101", "DPS Nordvest poliklinikk"), ("9970102", "DPS Sentrum allmennpoliklinikk")],
    "D12": [("9970201", "BUP Sentrum poliklinikk"), ("9970202", "BUP Vest poliklinikk")],
    "D01": [("9970301", "Rusbehandling Midt poliklinikk"), ("9970302", "ARA poliklinikk Øst")],
}
_INPATIENT_UNITS = {
    "D11": ("9970103", "DPS Nordvest døgnseksjon"),
    "D12": ("9970203", "BUP akuttpost døgn"),
    "D01": ("9970303", "Rusbehandling Midt avrusning og døgn"),
}
_MUNICIPALITIES = ["5001", "0301", "4601", "1103", "3301"]
_MUNICIPALITY_WEIGHTS = [30, 30, 20, 12, 8]
_GPS = [(f"9990{i:03d}", f"9980{i:03d}") for i in range(40)]  # (HPR, HER-id) of fastleger
_REFERRERS = [(f"9991{i:03d}", f"9981{i:03d}") for i in range(15)]
_CLINICIANS = [f"9992{i:03d}" for i in range(30)]
_FORMS = {
    "A": "PPR Start pakkeforløp",
    "F": "PPR Første fremmøte",
    "C": "PPR Klinisk beslutning",
    "E": "PPR Evaluering",
    "V": "PPR Avrusning fullført",
    "B": "PPR Behandlingsstart etter avrusning",
    "X": "PPR Avslutning",
}
_ESP_TIME_STATUS = {"no-show": "IKKE_MOTT", "cancelled-by-patient": "AVLYST_PASIENT",
                    "cancelled-by-hospital": "AVLYST_SYKEHUS"}
_PATIENT_REASONS = ["Pasienten er syk", "Pasienten ba om ny time", None]
_HOSPITAL_REASONS = ["Behandler syk", "Ferieavvikling", "Manglende kapasitet", None]
_DELETE_REASONS = ["feilregistrering", "feil dato"]
# Deadlines (DOMAIN §3) used to draw mostly-on-time waits: (outpatient, inpatient) days
_TO_DECISION = {"D11": (42, 42), "D12": (42, 42), "D01": (21, 7)}
_TO_FIRST_EVALUATION = {"D11": (42, 14), "D12": (42, 14), "D01": (7, 7)}
_BETWEEN_EVALUATIONS = {"D11": (84, 42), "D12": (84, 42), "D01": (56, 42)}


@dataclass(slots=True)
class _Pathway:
    """A pathway's vendor-neutral identity and context."""

    index: int
    ptype: str
    national_id: str
    municipality: str
    municipal_services: bool
    unit: tuple[str, str]
    gp: tuple[str, str] | None
    referrer: tuple[str, str] | None
    clinician: str
    stay: tuple[datetime, datetime] | None = None  # admitted, discharged (local)
    dips_id: str = ""
    esp_id: str = ""


@dataclass(slots=True)
class _Fact:
    """One thing that happened, before it is written in a vendor's format.

    Times are naive Europe/Oslo local times, always between 06:00 and midnight, so the
    UTC offset is that of the day (nothing falls near a daylight-saving switch hour).
    """

    kind: str  # code | delete | appointment | admission.started | ... | consent
    occurred: datetime  # clinical moment; for codes a time on the registered date
    recorded: datetime
    uid: int  # 128 random bits: the vendor's event id
    office: bool = False  # keyed in by office staff (eSP registrertAv=kontor)
    inpatient: bool = False
    code: str | None = None
    number: int = 0  # per-pathway number behind registration/appointment/stay ids
    deadline: date | None = None
    plan_changed: bool | None = None
    withdraws: int = 0
    reason: str | None = None
    status: str | None = None
    new_time: datetime | None = None
    consent: bool | None = None
    delay: timedelta = field(default_factory=timedelta)  # delivery after recording


class _Offsets(dict[date, str]):
    """Europe/Oslo UTC offset text of a day (at noon), cached."""

    def __missing__(self, day: date) -> str:
        offset = datetime(day.year, day.month, day.day, 12, tzinfo=OSLO).strftime("%z")
        self[day] = text = f"{offset[:3]}:{offset[3:]}"
        return text


def _uuid(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _esp_date(d: date) -> str:
    return f"{d.day:02d}.{d.month:02d}.{d.year}"


def _esp_time(t: datetime) -> str:
    return f"{t.day:02d}.{t.month:02d}.{t.year} {t.hour:02d}:{t.minute:02d}"


class _Scenario:
    """Draws one pathway's facts. All randomness lives here, none in the writers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def at(self, day: date, earliest: int = 8, latest: int = 15) -> datetime:
        """A clinic time on ``day``, quarter-hour steps."""
        r = self.rng
        return datetime(day.year, day.month, day.day, r.randint(earliest, latest), r.choice((0, 15, 30, 45)))

    def within(self, limit: int, on_time: float = 0.9) -> int:
        """Days until the next milestone: mostly within ``limit``, sometimes a breach."""
        r = self.rng
        if r.random() < on_time:
            return r.randint(max(1, limit // 4), limit)
        return r.randint(limit + 1, limit + 21)

    def pathway(self, index: int, start: datetime) -> tuple[_Pathway, list[_Fact]]:
        r = self.rng
        ptype = r.choices(("D11", "D12", "D01"), (50, 25, 25))[0]
        inpatient = r.random() < {"D11": 0.15, "D12": 0.08, "D01": 0.4}[ptype]
        age = r.randint(6, 17) if ptype == "D12" else r.randint(18, 80 if ptype == "D11" else 70)
        born = start.date() - timedelta(days=age * 365 + r.randint(0, 364))
        p = _Pathway(
            index=index,
            ptype=ptype,
            national_id=synthetic_national_id(r, born, d_number=r.random() < 0.05),
            municipality=r.choices(_MUNICIPALITIES, _MUNICIPALITY_WEIGHTS)[0],
            municipal_services=r.random() < 0.3,
            unit=_INPATIENT_UNITS[ptype] if inpatient else r.choice(_UNITS[ptype]),
            gp=r.choice(_GPS) if r.random() < 0.95 else None,
            referrer=r.choice(_REFERRERS) if r.random() < 0.4 else None,
            clinician=r.choice(_CLINICIANS),
        )
        facts: list[_Fact] = []
        numbers = iter(range(1_000))

        def code(letter: str, when: datetime, **kw: Any) -> _Fact:
            fact = self.fact("code", when, code=f"{ptype}{letter}", number=next(numbers), **kw)
            facts.append(fact)
            return fact

        # Start, perhaps with the legal deadline for first attendance
        deadline_days = r.choice((14, 21, 28, 42) if ptype == "D12" else (14, 28, 42, 56, 65))
        deadline = start.date() + timedelta(days=deadline_days) if r.random() < 0.7 else None
        code("A", start, deadline=deadline)

        consent_mode = r.random()
        if consent_mode < 0.5:
            facts.append(self.fact("consent", start + timedelta(minutes=r.randint(15, 240)), consent=True))
        elif consent_mode < 0.58:
            facts.append(self.fact("consent", start + timedelta(minutes=r.randint(15, 240)), consent=False))

        # First attendance, perhaps after a missed or moved appointment
        wait = self.within(deadline_days, 0.88) if deadline else r.randint(5, 50)
        planned = self.at(start.date() + timedelta(days=wait))
        first = planned
        change = r.random()
        if change < 0.26:
            status = "no-show" if change < 0.12 else "cancelled-by-patient" if change < 0.2 else "cancelled-by-hospital"
            first = planned + timedelta(days=r.randint(3, 21))
            called = max(start + timedelta(hours=1), planned - timedelta(days=r.randint(1, 6)))
            reasons = _HOSPITAL_REASONS if status == "cancelled-by-hospital" else _PATIENT_REASONS
            facts.append(self.fact(
                "appointment", planned, number=next(numbers), status=status,
                recorded=planned + timedelta(minutes=r.randint(20, 300)) if status == "no-show" else called,
                new_time=None if status != "no-show" and r.random() < 0.1 else first,
                reason=None if status == "no-show" else r.choice(reasons),
            ))
        if inpatient:
            admitted = first - timedelta(minutes=r.choice((30, 60, 90)))
            self.stay(p, facts, admitted, next(numbers))
        code("F", first)

        if r.random() < 0.06:  # ends by agreement right after first attendance
            code("X", self.at(first.date() + timedelta(days=r.randint(1, 10))))
            return self.finish(p, facts)

        day = first.date()
        setting = 1 if inpatient else 0
        if ptype == "D01" and inpatient and r.random() < 0.6:  # detox, then other treatment
            detox = day + timedelta(days=r.randint(3, 10))
            code("V", self.at(detox))
            day = detox + timedelta(days=r.randint(0, 4))
            code("B", self.at(day))

        day += timedelta(days=self.within(_TO_DECISION[ptype][setting]))
        decision = self.at(day)
        outcome = self.outcome(ptype, extended_possible=True)
        code("C" + outcome, decision)
        if outcome == "U":
            day += timedelta(days=self.within(42))
            decision = self.at(day)
            outcome = self.outcome(ptype, extended_possible=False)
            code("C" + outcome, decision)
        if 0.58 <= consent_mode < 0.7:  # consent only after the decision, the same day
            facts.append(self.fact("consent", decision + timedelta(minutes=r.randint(60, 240)), consent=True))

        if outcome in "SKAI":
            code("X", self.at(day + timedelta(days=r.randint(1, 14))))
            return self.finish(p, facts)

        day += timedelta(days=self.within(_TO_FIRST_EVALUATION[ptype][setting]))
        evaluations = r.randint(1, 5)
        for n in range(evaluations):
            code("E", self.at(day), plan_changed=r.random() < 0.3)
            if n == 0 and consent_mode < 0.5 and r.random() < 0.15:  # consent withdrawn during treatment
                withdrawn = self.at(day + timedelta(days=r.randint(1, 20)), 10, 14)
                facts.append(self.fact("consent", withdrawn, consent=False))
            if n < evaluations - 1:
                day += timedelta(days=self.within(_BETWEEN_EVALUATIONS[ptype][setting]))
        if r.random() < 0.85:  # the rest are still in treatment, however long ago they started
            code("X", self.at(day + timedelta(days=r.randint(1, 30))))
        return self.finish(p, facts)

    def outcome(self, ptype: str, extended_possible: bool) -> str:
        r = self.rng.random()
        if extended_possible and ptype != "D01" and r < 0.2:
            return "U"
        if r < 0.72:
            return "T" if ptype == "D01" else "P"
        return self.rng.choice("SKKAAI")

    def stay(self, p: _Pathway, facts: list[_Fact], admitted: datetime, number: int) -> None:
        r = self.rng
        ready = self.at(admitted.date() + timedelta(days=r.randint(10, 45)), 9, 14)
        discharged = self.at(ready.date() + timedelta(days=r.randint(0, 5)), 9, 15)
        if discharged <= ready:
            discharged = ready + timedelta(hours=2)
        p.stay = (admitted, discharged)
        for kind, when in (("admission.started", admitted), ("admission.discharge-ready", ready),
                           ("admission.ended", discharged)):
            fact = self.fact(kind, when, number=number)
            if kind == "admission.started" and fact.uid % 10 == 0:  # keyed in a day or more late: a late notice
                fact.recorded = when + timedelta(hours=25 + fact.uid % 48)  # from the uid: the stream stays the same
            facts.append(fact)

    def fact(self, kind: str, occurred: datetime, recorded: datetime | None = None, **kw: Any) -> _Fact:
        r = self.rng
        office = False
        if recorded is None:
            if kind == "code" and r.random() < 0.15:  # paper form keyed in days later
                recorded = self.at(occurred.date() + timedelta(days=r.randint(2, 20)), 8, 15)
                office = True
            else:
                recorded = occurred + timedelta(minutes=r.randint(10, 240))
        if not office:
            office = r.random() < 0.25
        delay = timedelta(seconds=r.randint(1, 120))
        if r.random() < 0.04:  # a retry at the vendor: delivered well after recording
            delay = timedelta(hours=r.randint(1, 30))
        return _Fact(kind, occurred, recorded, r.getrandbits(128), office=office, delay=delay, **kw)

    def finish(self, p: _Pathway, facts: list[_Fact]) -> tuple[_Pathway, list[_Fact]]:
        """Corrections (a registration deleted and registered again with another date)."""
        r = self.rng
        out = []
        for fact in facts:
            if fact.kind == "code" and r.random() < 0.05:
                wrong = fact.occurred - timedelta(days=r.randint(1, 5))
                original = _Fact("code", wrong, fact.recorded, r.getrandbits(128), office=fact.office,
                                 code=fact.code, number=fact.number + 500, deadline=fact.deadline,
                                 plan_changed=fact.plan_changed, delay=fact.delay)
                noticed = self.at(fact.recorded.date() + timedelta(days=r.randint(1, 10)), 8, 15)
                delete = _Fact("delete", noticed, noticed, r.getrandbits(128), office=True,
                               withdraws=original.number, reason=r.choice(_DELETE_REASONS),
                               delay=timedelta(seconds=30))
                fact.recorded = noticed + timedelta(minutes=5)  # office staff fix it, days later
                fact.office = True
                if r.random() < 0.35:  # the deletion overtakes the registration it cancels
                    original.delay = noticed - original.recorded + timedelta(hours=r.randint(1, 48))
                out += (original, delete)
            out.append(fact)
        if p.stay:
            admitted, discharged = p.stay
            for fact in out:
                fact.inpatient = admitted <= fact.occurred < discharged
        return p, out


def _dips(p: _Pathway, f: _Fact, offsets: _Offsets) -> dict[str, Any]:
    def iso(t: datetime) -> str:
        return f"{t.isoformat()}{offsets[t.date()]}"

    pid = p.dips_id
    ev: dict[str, Any] = {
        "eventId": _uuid(f.uid),
        "eventTime": iso(f.occurred),
        "recordedTime": iso(f.recorded),
        "source": {"system": "DIPS Arena", "organisation": {"orgNumber": ORG_NUMBER}},
        "patient": {"nationalId": p.national_id, "municipality": p.municipality,
                    "receivesMunicipalServices": p.municipal_services},
        "pathway": {"id": pid, "type": p.ptype},
        "unit": {"herId": p.unit[0], "name": p.unit[1], "setting": "inpatient" if f.inpatient else "outpatient"},
    }
    if p.gp:
        ev["gp"] = {"hpr": p.gp[0], "herId": p.gp[1]}
    if p.referrer:
        ev["referrer"] = {"hpr": p.referrer[0], "herId": p.referrer[1]}
    kind = f.kind
    if kind == "code" and f.code:
        doc: dict[str, Any] = {
            "id": f"DOC-{pid}-{f.number}",
            "form": _FORMS[f.code[3]],
            "code": f.code,
            "date": f.occurred.date().isoformat(),
            "treatmentPlanChanged": bool(f.plan_changed),
            "author": {"hpr": p.clinician},
        }
        if f.deadline:
            doc["firstAttendanceDeadline"] = f.deadline.isoformat()
        ev["eventType"] = "ppr.document.approved"
        ev["document"] = doc
    elif kind == "delete":
        ev["eventType"] = "ppr.document.deleted"
        ev["document"] = {"id": f"DOC-{pid}-{f.withdraws}", "reason": f.reason}
    elif kind == "appointment":
        ev["eventTime"] = iso(f.recorded)  # when the no-show or cancellation was noted
        app: dict[str, Any] = {"id": f"APP-{pid}-{f.number}", "originalTime": iso(f.occurred)}
        if f.new_time:
            app["newTime"] = iso(f.new_time)
        app["status"] = f.status
        if f.reason:
            app["reason"] = f.reason
        ev["eventType"] = "appointment.changed"
        ev["appointment"] = app
    elif kind == "consent":
        ev["eventType"] = "consent.changed"
        ev["consent"] = {"municipality": f.consent}
    else:
        ev["eventType"] = kind
        ev["admission"] = {"id": f"ADM-{pid}-{f.number}", "time": iso(f.occurred)}
        if kind == "admission.ended" and _destination(f):
            ev["admission"]["dischargeDestination"] = _destination(f)
    return ev


# Where discharged patients go: drawn from the fact's uid (no draw from the stream), the same in both
# formats; None: the EHR does not say.
_DESTINATIONS = ("home", "home", "home", "home", "nursing-home", "municipal-acute-unit",
                 "other-specialist-institution", "own-institution-other", None, None)
_ESP_DESTINATIONS = {"home": "HJEM", "nursing-home": "SYKEHJEM", "municipal-acute-unit": "KAD",
                     "other-specialist-institution": "ANNEN_SPESIALISTHELSETJENESTE",
                     "own-institution-other": "EGEN_INSTITUSJON_ANNEN"}


def _destination(f: _Fact) -> str | None:
    return _DESTINATIONS[(f.uid >> 8) % len(_DESTINATIONS)]


_ESP_STAY = {"admission.started": "INNLEGGELSE", "admission.discharge-ready": "UTSKRIVNINGSKLAR",
             "admission.ended": "UTSKREVET"}


def _esp(p: _Pathway, f: _Fact, offsets: _Offsets) -> dict[str, Any]:
    pid = p.esp_id
    ev: dict[str, Any] = {
        "meldingsId": _uuid(f.uid ^ 0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A),  # not the DIPS id of the same fact
        "registrertTid": _esp_time(f.recorded),
        "fodselsnummer": p.national_id,
        "bostedskommune": p.municipality,
        "forlopsId": pid,
        "forlopstype": p.ptype,
        "enhetHerId": p.unit[0],
        "enhetNavn": p.unit[1],
        "omsorgsniva": "D" if f.inpatient else "P",
        "kommunaleTjenester": "J" if p.municipal_services else "N",
        "registrertAv": "kontor" if f.office else "behandler",
    }
    if p.gp:
        ev["fastlegeHpr"], ev["fastlegeHerId"] = p.gp
    if p.referrer:
        ev["henviserHerId"] = p.referrer[1]
    kind = f.kind
    if kind == "code" and f.code:
        ev.update(meldingstype="FORLOPSKODE", kode=f.code, hendelsesdato=_esp_date(f.occurred.date()),
                  registreringsId=f"REG-{pid}-{f.number}")
        if f.code[3] == "E":
            ev["endretBehandlingsplan"] = "J" if f.plan_changed else "N"
        if f.deadline:
            ev["fristForsteSamtale"] = _esp_date(f.deadline)
    elif kind == "delete":
        ev.update(meldingstype="FORLOPSKODE_SLETTET", registreringsId=f"REG-{pid}-{f.withdraws}", arsak=f.reason)
    elif kind == "appointment":
        ev.update(meldingstype="TIME", timeId=f"T-{pid}-{f.number}", opprinneligTid=_esp_time(f.occurred))
        if f.new_time:
            ev["nyTid"] = _esp_time(f.new_time)
        ev["timestatus"] = _ESP_TIME_STATUS[f.status or ""]
        if f.reason:
            ev["arsak"] = f.reason
    elif kind == "consent":
        ev.update(meldingstype="SAMTYKKE", samtykkeKommune="J" if f.consent else "N", tidspunkt=_esp_time(f.occurred))
    else:
        ev.update(meldingstype=_ESP_STAY[kind], oppholdId=f"OPP-{pid}-{f.number}", tidspunkt=_esp_time(f.occurred))
        if kind == "admission.ended" and _destination(f):
            ev["utskrevetTil"] = _ESP_DESTINATIONS[_destination(f) or ""]
    return ev


def _local(as_of: datetime) -> datetime:
    """``as_of`` as naive Europe/Oslo local time (naive input is taken as local already)."""
    return as_of.astimezone(OSLO).replace(tzinfo=None) if as_of.tzinfo else as_of


def iter_generate(
    vendor: str, pathways: int, seed: int, start: date | None = None, as_of: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Vendor-format events of ``pathways`` synthetic pathways, in delivery order.

    Pathways start evenly spread from ``start`` (default: a year before ``as_of``) to the
    day before ``as_of`` (default: now); nothing in them happens or is recorded after
    ``as_of``. Every event validates; a duplicate is an exact redelivery.
    """
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}")
    if pathways < 0:
        raise ValueError("pathways must not be negative")
    limit = _local(as_of or datetime.now(OSLO))
    first_day = start or limit.date() - timedelta(days=DEFAULT_SPAN_DAYS)
    span = (limit.date() - first_day).days
    if span < 1:
        raise ValueError(f"start {first_day} must be before as_of {limit.date()}")
    rng = random.Random(seed)
    scenario = _Scenario(rng)
    write = _dips if vendor == "dips" else _esp
    offsets = _Offsets()
    tag = 100 + seed % 900  # keeps pathway ids of different seeds apart
    # (delivery time, sequence, pathway, fact): sequence makes the order total and stable
    pending: list[tuple[datetime, int, _Pathway, _Fact]] = []
    seq = 0
    for index in range(pathways):
        start_day = first_day + timedelta(days=index * span // pathways)
        # This and every later pathway starts on start_day or later, and nothing of a
        # pathway is delivered before it starts: what is due before that day can go.
        horizon = datetime(start_day.year, start_day.month, start_day.day)
        while pending and pending[0][0] < horizon:
            _, _, p, f = heapq.heappop(pending)
            yield write(p, f, offsets)
        p, facts = scenario.pathway(index, scenario.at(start_day))
        p.dips_id, p.esp_id = f"PPR-{tag}{index:07d}", f"eSP-{tag}{index:07d}"
        for f in facts:
            if f.occurred > limit or f.recorded > limit:
                continue  # not yet happened, or not yet keyed in
            delivered = f.recorded + f.delay
            heapq.heappush(pending, (delivered, seq, p, f))
            seq += 1
            if rng.random() < 0.03:  # at-least-once delivery: the same event again, later
                heapq.heappush(pending, (delivered + timedelta(minutes=rng.randint(1, 4000)), seq, p, f))
                seq += 1
    while pending:
        _, _, p, f = heapq.heappop(pending)
        yield write(p, f, offsets)


def generate(
    vendor: str, pathways: int, seed: int, start: date | None = None, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    """`iter_generate` as a list."""
    return list(iter_generate(vendor, pathways, seed, start=start, as_of=as_of))


def write_ndjson(events: Iterable[dict[str, Any]], fp: TextIO) -> int:
    """Write events as NDJSON (one compact JSON object per line); return how many."""
    n = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for event in events:
        fp.write(dumps(event))
        fp.write("\n")
        n += 1
    return n
