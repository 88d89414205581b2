"""The canonical pathway event: the one language every service speaks after ingest.

Both vendor formats (DIPS-like documents, eSP-like flat records) normalise into
`PathwayEvent`. The same clinical fact from either vendor becomes the same event,
apart from the identifiers that say where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    PATHWAY_CODE = "pathway-code"  # a national pathway code was registered (forløpskode)
    REGISTRATION_WITHDRAWN = "registration-withdrawn"  # feilregistrering: as if it never happened
    APPOINTMENT_CHANGED = "appointment-changed"  # missed or moved appointment (time)
    ADMISSION_STARTED = "admission-started"  # innleggelse
    DISCHARGE_READY = "discharge-ready"  # utskrivningsklar
    DISCHARGED = "discharged"  # utskrevet
    CONSENT_CHANGED = "consent-changed"  # samtykke til å involvere kommunen


class Setting(StrEnum):
    OUTPATIENT = "outpatient"  # poliklinikk
    INPATIENT = "inpatient"  # døgnenhet


class AppointmentChange(StrEnum):
    NO_SHOW = "no-show"  # ikke møtt: patient-caused
    CANCELLED_BY_PATIENT = "cancelled-by-patient"  # patient-caused
    CANCELLED_BY_HOSPITAL = "cancelled-by-hospital"  # service-caused


class DischargeDestination(StrEnum):
    """Where an inpatient goes when discharged (utskrevet til), when the EHR says so.

    Vendor-neutral; each maps to a code of the PLO place code list in
    ``profiles/codes/discharge-destinations.json``. Absent means "not stated", never "home".
    """

    HOME = "home"  # bosted/arbeidssted
    NURSING_HOME = "nursing-home"  # sykehjem
    MUNICIPAL_ACUTE_UNIT = "municipal-acute-unit"  # kommunal akutt døgnenhet (KAD)
    OTHER_SPECIALIST_INSTITUTION = "other-specialist-institution"  # annen institusjon i spesialisthelsetjenesten
    OWN_INSTITUTION_SOMATIC = "own-institution-somatic"  # somatisk enhet ved egen helseinstitusjon
    OWN_INSTITUTION_OTHER = "own-institution-other"  # annen enhet (ikke somatikk) ved egen helseinstitusjon
    INSTITUTION_ABROAD = "institution-abroad"  # institusjon i utlandet
    OTHER = "other"  # annet


class Source(StrEnum):
    DIPS = "dips"
    ESP = "esp"


@dataclass(frozen=True, slots=True)
class Patient:
    national_id: str  # fødselsnummer or D-nummer
    municipality: str  # kommunenummer of residence
    receives_municipal_services: bool | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """The treating unit (behandlingsenhet), addressed by its HER-id."""

    her_id: str
    name: str
    setting: Setting
    org_number: str | None = None  # the health trust's organisation number, when the vendor sends it


@dataclass(frozen=True, slots=True)
class HealthProfessional:
    hpr: str | None = None
    her_id: str | None = None


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    original_time: datetime
    change: AppointmentChange
    new_time: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PathwayEvent:
    """One registration in a pathway's history, vendor-neutral."""

    event_id: str  # "<source>:<vendor event id>": the idempotency key
    source: Source
    kind: EventKind
    occurred_at: datetime  # when it happened clinically (hendelsestidspunkt), timezone-aware
    occurred_on: date  # the local (Europe/Oslo) date of the event, as registered
    recorded_at: datetime  # when it was keyed into the EHR
    pathway_id: str  # the source system's id of the pathway, stable for its life
    pathway_type: str  # national pathway code, kodeverk 9321: D11, D12, D01, ...
    patient: Patient
    unit: Unit
    source_system: str | None = None
    gp: HealthProfessional | None = None  # fastlege
    referrer: HealthProfessional | None = None  # henviser, when not the GP
    registration_id: str | None = None  # the vendor's id of the registration (document / registrering)
    code: str | None = None  # national event code, e.g. D11CU
    first_attendance_deadline: date | None = None  # frist for start helsehjelp, on the start code
    treatment_plan_changed: bool | None = None  # evaluations: larger change to the treatment plan
    author_hpr: str | None = None
    recorded_by: str | None = None  # "clinician" or "office" when known
    withdraws: str | None = None  # registration_id this withdrawal cancels
    reason: str | None = None  # free text reason (withdrawal)
    appointment: Appointment | None = None
    stay_id: str | None = None  # the inpatient stay (opphold) an admission event belongs to
    consent_municipality: bool | None = None
    discharge_destination: DischargeDestination | None = None  # discharges only; None: not stated
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The dict `from_dict` read this event from, when it had every field: `to_dict` gives it back
    # instead of building it again (events go dict -> event -> dict on every hop: ~7 % of a replay).
    # Not an init field, so `with_`/`replace` never carries it over to a changed event.
    _as_dict: dict[str, Any] | None = field(default=None, init=False, compare=False, hash=False, repr=False)

    @property
    def pathway_key(self) -> str:
        """Globally unique pathway key: the source plus the source system's pathway id."""
        return pathway_key(self.source, self.pathway_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values; shared with `from_dict`'s input when read from one, so never mutate it."""
        return self._as_dict if self._as_dict is not None else plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PathwayEvent:
        d = dict(data)
        d["source"] = Source(d["source"])
        d["kind"] = EventKind(d["kind"])
        d["occurred_at"] = datetime.fromisoformat(d["occurred_at"])
        d["occurred_on"] = date.fromisoformat(d["occurred_on"])
        d["recorded_at"] = datetime.fromisoformat(d["recorded_at"])
        p = d["patient"]
        d["patient"] = Patient(**p)
        u = dict(d["unit"])
        u["setting"] = Setting(u["setting"])
        d["unit"] = Unit(**u)
        for k in ("gp", "referrer"):
            if d.get(k) is not None:
                d[k] = HealthProfessional(**d[k])
        if d.get("first_attendance_deadline"):
            d["first_attendance_deadline"] = date.fromisoformat(d["first_attendance_deadline"])
        if d.get("appointment"):
            a = dict(d["appointment"])
            a["original_time"] = datetime.fromisoformat(a["original_time"])
            a["new_time"] = datetime.fromisoformat(a["new_time"]) if a.get("new_time") else None
            a["change"] = AppointmentChange(a["change"])
            d["appointment"] = Appointment(**a)
        if d.get("discharge_destination"):
            d["discharge_destination"] = DischargeDestination(d["discharge_destination"])
        complete = len(d) == _EVENT_FIELDS
        d.setdefault("extra", {})
        event = cls(**d)
        if complete:
            object.__setattr__(event, "_as_dict", data)
        return event

    def with_(self, **changes: Any) -> PathwayEvent:
        return replace(self, **changes)


_EVENT_FIELDS = sum(1 for f in fields(PathwayEvent) if f.init)


def pathway_key(source: str, pathway_id: str) -> str:
    return f"{source}:{pathway_id}"


def plain(value: Any) -> Any:
    """A dataclass tree as JSON-ready values (ISO dates, enum values), without asdict's deep copies (hot path)."""
    kind = type(value)
    if kind is str or value is None or kind is bool or kind is int or kind is float:
        return value
    names = _FIELD_NAMES.get(kind, _UNKNOWN)
    if names is _UNKNOWN:
        names = _FIELD_NAMES[kind] = (
            tuple(f.name for f in fields(kind) if not f.name.startswith("_")) if is_dataclass(kind) else None
        )
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value


_UNKNOWN: Any = object()
_FIELD_NAMES: dict[type, Any] = {}
