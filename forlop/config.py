"""Settings from environment variables, checked at start.

Every setting has a sane default for the embedded run; a bad value fails at start
with a message that names the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

# The sending organisation until FORLOP_SENDER_* name the real one: the synthetic health trust of the
# development package's generator, and a HER-id from the 997xxxx range, which no real party has.
SYNTHETIC_SENDER_ORG_NUMBER = "983974899"
SYNTHETIC_SENDER_HER_ID = "9970001"
SYNTHETIC_SENDER_ORG_NAME = "Helseforetak (syntetisk)"


# The embedded run's token issuer and audience (its development key's); production must name its own.
DEV_JWT_ISSUER = "http://localhost/forlop-dev"
DEV_JWT_AUDIENCE = "forlop"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def shipped_xsd_dir() -> str:
    """The official e-message schemas shipped in `profiles/xsd` (their README names each file's source)."""
    return str(Path(str(resources.files("profiles") / "xsd")))


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "forlop"


@dataclass(frozen=True)
class Topics:
    dips: str = "ehr.dips.pathway-events"
    esp: str = "ehr.esp.hendelser"
    events: str = "pathway.events"  # canonical events, ingest -> pathway and messaging
    status_changed: str = "pathway.status-changed"
    alerts: str = "pathway.alerts"
    dead_letter: str = "forlop.dead-letter"
    outbound: str = "messages.outbound"
    apprec: str = "messages.apprec"


@dataclass(frozen=True)
class Settings:
    mode: str = "embedded"  # "embedded" (developer default) or "production"
    database_url: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    consumer_group: str = "forlop"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 6
    max_poll_interval_ms: int = 300_000
    # How long a fetch of the vendor topics may wait at the broker for more records (up to 64 KiB),
    # so the ingest consumer's transaction, offset commit and relay pass carry tens of events, not
    # a few: less CPU per event under load, a little more latency below capacity (the figures:
    # docs/performance.md). 0: return as soon as any record is there (lowest latency below
    # capacity, most work per event).
    ingest_batch_wait_ms: int = 20
    # The longest wait between retries while the database or broker is unavailable (consumers and
    # outbox relays back off from 0.5 s, doubling up to this).
    retry_backoff_max_s: int = 30
    # The largest request the producers send (kafka-python's max_request_size): a larger outbox
    # record is parked, not sent. Raise it with the broker's message.max.bytes, then replay the
    # parked records' relay dead letters (`forlop dlq replay`).
    kafka_max_request_bytes: int = 1024 * 1024
    clock: datetime | None = None  # frozen "now" for tests and replays
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    # API server processes on FORLOP_HTTP_PORT (`forlop serve api`): one Python process serves ~1 core of
    # requests (one GIL); N processes each accept on their own SO_REUSEPORT socket of the same port, each
    # a whole API (its own connection pool and metrics), under one supervising parent. 1 in Kubernetes,
    # where replicas scale the API (app.serve.ApiWorkers).
    http_workers: int = 1
    # Request threads per API process (waitress): two, and why, in forlop.wsgi (HTTP_THREADS).
    http_threads: int = 2
    # What one HTTP request may ask of a process; past each it gets a 4xx OperationOutcome naming the
    # limit (services.api.app; the server's own in forlop.wsgi). A vendor record's own bounds are in
    # its JSON Schema (x-forlop-bounds).
    http_max_body_bytes: int = 10 * 1024 * 1024  # 413
    http_max_records: int = 1000  # events per POST /ingest request: 413
    http_max_url_bytes: int = 8192  # path and query: 414
    http_max_header_bytes: int = 65536  # header fields together: 431
    http_max_problems: int = 100  # listed in a 422; the rest are counted
    # Open connections per process (waitress; its default is 100, which idle clients could fill) and
    # how long one may stay idle before it is closed.
    http_connection_limit: int = 1000
    http_channel_timeout_s: int = 30
    # PostgreSQL: the longest any statement of an API request may run (503 past it); 0: no limit.
    api_statement_timeout_ms: int = 30_000
    # FHIR search: values of one search parameter (over its repetitions, commas included), repetitions
    # of one parameter, and the deepest _offset (past it: follow the next link's _cursor). 400 past each.
    api_max_search_values: int = 100
    api_max_search_repeats: int = 10
    api_max_offset: int = 10_000
    # Audit trail (forlop.audit): records older than this many days are removed by the retention pass,
    # which leaves a checkpoint so the rest of the chain still verifies; 0 keeps every record.
    audit_retention_days: int = 0
    # The purpose of use an audit record names when the request gives none (X-Purpose-Of-Use header):
    # a code of HL7 v3 ActReason (TREAT: treatment, HOPERAT: operations, HQUALIMP: quality improvement).
    audit_default_purpose: str = "TREAT"
    # PostgreSQL: whether a read's audit record waits for the WAL flush at commit (forlop.audit.append).
    # Off: committed and visible before the answer, but a crash of the database server within its WAL
    # writer's delay can lose the newest read records; on: one more disk flush per request.
    audit_synchronous_commit: bool = False
    # Requests per second each client (the token's client_id) may make of one API process, and the
    # burst it may save up; past it: 429 with Retry-After. 0: no limit.
    rate_limit_per_s: int = 0
    rate_limit_burst: int = 0
    # The scheme clients reach the API by (the ingress terminates TLS, so the process itself sees http):
    # "https" adds Strict-Transport-Security to every answer.
    public_scheme: str = "http"
    # The address clients reach the service at (scheme, host, optional port and path prefix, without
    # "/fhir"): every link, fullUrl, the CapabilityStatement's implementation.url and the export are
    # built from it, never from a request's Host header. Empty: http://localhost:<FORLOP_HTTP_PORT>,
    # or what a trusted proxy forwards (below).
    public_base_url: str = ""
    # Networks (CIDRs) of the reverse proxies whose X-Forwarded-Proto/-Host/-Prefix and Forwarded
    # headers are believed, when FORLOP_PUBLIC_BASE_URL is not set; from any other peer they are ignored.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    jwt_issuer: str = "http://localhost/forlop-dev"  # DEV_JWT_ISSUER
    jwt_audience: str = "forlop"  # DEV_JWT_AUDIENCE
    jwt_jwks_url: str | None = None  # HelseID-style JWKS endpoint
    jwt_jwks_file: str | None = None  # or a local JWKS file
    # The tenant registry (YAML or JSON): which organisation may do what (forlop.tenants). Unset: the
    # demo registry in embedded mode; production refuses to start the API without one.
    tenants_file: str | None = None
    xsd_dir: str = field(default_factory=shipped_xsd_dir)  # official e-message schemas; FORLOP_XSD_DIR overrides
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: str = "INFO"
    log_format: str = "json"
    log_mask_key: str | None = field(default=None, repr=False)  # pseudonymises national ids in logs
    patient_id_key: str | None = field(default=None, repr=False)  # keys Patient resource ids
    due_soon_days: int | None = None  # overrides the rule set's "due soon" horizon
    transport: str = "kafka"  # messaging transport: kafka | directory | http
    transport_dir: str | None = None
    transport_url: str | None = None
    apprec_timeout_s: int = 3600
    max_send_attempts: int = 5
    apprec_inbox_batch: int = 50  # AppRec files of the directory transport's inbox read per relay pass
    municipal_directory: str | None = None  # file or http(s) URL: kommunenummer -> receiving HER-id
    gp_directory: str | None = None  # file or http(s) URL: patient -> GP (fastlege) when events lack it
    sender_org_number: str = SYNTHETIC_SENDER_ORG_NUMBER
    sender_her_id: str = SYNTHETIC_SENDER_HER_ID
    sender_org_name: str = SYNTHETIC_SENDER_ORG_NAME
    scan_interval_s: float = 60.0
    # Validate every mapped FHIR resource against its fhir.resources model in the pathway service's hot
    # path. Off by default (it costs as much as the rest of the mapping; the mapping is pure and the
    # test suite validates every resource it produces); FORLOP_FHIR_VALIDATE=1 turns it on.
    fhir_validate: bool = False

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def fhir_base_url(self) -> str:
        """The FHIR base every link is built on when no trusted proxy says otherwise."""
        return f"{self.public_base_url or f'http://localhost:{self.http_port}'}/fhir"


def _public_base_url(env: Mapping[str, str]) -> str:
    raw = (env.get("FORLOP_PUBLIC_BASE_URL") or "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise ConfigError(f"FORLOP_PUBLIC_BASE_URL={raw!r} must be an http(s) URL: scheme, host, optional port "
                          "and path, no query, fragment or credentials")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise ConfigError(f"FORLOP_PUBLIC_BASE_URL={raw!r} has a bad port") from None
    return raw.rstrip("/")


def _networks(env: Mapping[str, str], name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    out = []
    for item in (env.get(name) or "").split(","):
        if not item.strip():
            continue
        try:
            out.append(ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item.strip()!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _digits(env: Mapping[str, str], name: str, default: str, length: int | None) -> str:
    value = env.get(name) or default
    # ASCII digits only: str.isdigit() is true of "²" and of other scripts' digits
    if not re.fullmatch(r"[0-9]+", value) or (length is not None and len(value) != length):
        raise ConfigError(f"{name}={value!r} must be {length or 'only'} digits")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,18}", raw.strip()):  # int() would take "٣" and "1_000"
        raise ConfigError(f"{name}={raw!r} is not a whole number")
    value = int(raw)
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


PURPOSE_CODE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")  # an HL7 v3 ActReason code's shape


def _purpose(env: Mapping[str, str]) -> str:
    value = env.get("FORLOP_AUDIT_DEFAULT_PURPOSE") or Settings.audit_default_purpose
    if not PURPOSE_CODE.fullmatch(value):
        raise ConfigError(f"FORLOP_AUDIT_DEFAULT_PURPOSE={value[:40]!r} must be a purpose-of-use code such as TREAT")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and check all settings; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("FORLOP_DATA_DIR") or default_data_dir())
    mode = _choice(env, "FORLOP_MODE", "embedded", ("embedded", "production"))

    database_url = env.get("FORLOP_DATABASE_URL") or f"sqlite:///{data_dir / 'forlop.db'}"
    try:
        url = make_url(database_url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a generic text
        raise ConfigError(f"FORLOP_DATABASE_URL is not a database URL: {exc}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"FORLOP_DATABASE_URL uses {url.get_backend_name()!r}; supported: sqlite, postgresql"
        )

    bootstrap = env.get("FORLOP_KAFKA_BOOTSTRAP") or "127.0.0.1:9092"
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not re.fullmatch(r"[0-9]{1,5}", port):
            raise ConfigError(f"FORLOP_KAFKA_BOOTSTRAP={bootstrap!r}: expected host:port[,host:port]")

    clock_raw = env.get("FORLOP_CLOCK")
    clock = None
    if clock_raw:
        try:
            clock = datetime.fromisoformat(clock_raw)
        except ValueError:
            raise ConfigError(f"FORLOP_CLOCK={clock_raw!r} is not an ISO 8601 date-time") from None
        if clock.tzinfo is None:
            raise ConfigError(f"FORLOP_CLOCK={clock_raw!r} needs a UTC offset, e.g. +01:00")

    topic_defaults = Topics()
    topics = Topics(
        **{
            name: env.get(f"FORLOP_TOPIC_{name.upper()}") or getattr(topic_defaults, name)
            for name in topic_defaults.__dataclass_fields__
        }
    )

    protocol = _choice(
        env, "FORLOP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    )
    sasl_mechanism = env.get("FORLOP_KAFKA_SASL_MECHANISM") or None
    if protocol.startswith("SASL") and sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigError(
            "FORLOP_KAFKA_SASL_MECHANISM must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 "
            f"when FORLOP_KAFKA_SECURITY_PROTOCOL={protocol}"
        )

    xsd_dir = env.get("FORLOP_XSD_DIR") or shipped_xsd_dir()
    if not Path(xsd_dir, "MsgHead-v1_2.xsd").is_file():
        raise ConfigError(f"FORLOP_XSD_DIR={xsd_dir!r} holds no MsgHead-v1_2.xsd: not a set of the official schemas")

    due_soon = env.get("FORLOP_DUE_SOON_DAYS")
    transport = _choice(env, "FORLOP_TRANSPORT", "kafka", ("kafka", "directory", "http"))
    if transport == "http" and not env.get("FORLOP_TRANSPORT_URL"):
        raise ConfigError("FORLOP_TRANSPORT_URL is required when FORLOP_TRANSPORT=http")

    return Settings(
        mode=mode,
        database_url=database_url,
        kafka_bootstrap=bootstrap,
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=sasl_mechanism,
        kafka_sasl_username=env.get("FORLOP_KAFKA_SASL_USERNAME") or None,
        kafka_sasl_password=env.get("FORLOP_KAFKA_SASL_PASSWORD") or None,
        kafka_ssl_cafile=env.get("FORLOP_KAFKA_SSL_CAFILE") or None,
        consumer_group=env.get("FORLOP_CONSUMER_GROUP") or "forlop",
        topics=topics,
        partitions=_int(env, "FORLOP_TOPIC_PARTITIONS", 6, minimum=1),
        max_poll_interval_ms=_int(env, "FORLOP_MAX_POLL_INTERVAL_MS", 300_000, minimum=1000),
        ingest_batch_wait_ms=_int(env, "FORLOP_INGEST_BATCH_WAIT_MS", 20, minimum=0),
        retry_backoff_max_s=_int(env, "FORLOP_RETRY_BACKOFF_MAX_S", Settings.retry_backoff_max_s, minimum=1),
        kafka_max_request_bytes=_int(env, "FORLOP_KAFKA_MAX_REQUEST_BYTES", Settings.kafka_max_request_bytes,
                                     minimum=1024),
        clock=clock,
        http_host=env.get("FORLOP_HTTP_HOST") or "0.0.0.0",
        http_port=_int(env, "FORLOP_HTTP_PORT", 8080, minimum=0),
        http_workers=_int(env, "FORLOP_HTTP_WORKERS", 1, minimum=1),
        http_threads=_int(env, "FORLOP_HTTP_THREADS", Settings.http_threads, minimum=1),
        http_max_body_bytes=_int(env, "FORLOP_HTTP_MAX_BODY_BYTES", Settings.http_max_body_bytes, minimum=1024),
        http_max_records=_int(env, "FORLOP_HTTP_MAX_RECORDS", Settings.http_max_records, minimum=1),
        http_max_url_bytes=_int(env, "FORLOP_HTTP_MAX_URL_BYTES", Settings.http_max_url_bytes, minimum=256),
        http_max_header_bytes=_int(env, "FORLOP_HTTP_MAX_HEADER_BYTES", Settings.http_max_header_bytes,
                                   minimum=4096),
        http_max_problems=_int(env, "FORLOP_HTTP_MAX_PROBLEMS", Settings.http_max_problems, minimum=1),
        http_connection_limit=_int(env, "FORLOP_HTTP_CONNECTION_LIMIT", Settings.http_connection_limit, minimum=1),
        http_channel_timeout_s=_int(env, "FORLOP_HTTP_CHANNEL_TIMEOUT_S", Settings.http_channel_timeout_s,
                                    minimum=1),
        api_statement_timeout_ms=_int(env, "FORLOP_API_STATEMENT_TIMEOUT_MS", Settings.api_statement_timeout_ms),
        api_max_search_values=_int(env, "FORLOP_API_MAX_SEARCH_VALUES", Settings.api_max_search_values, minimum=1),
        api_max_search_repeats=_int(env, "FORLOP_API_MAX_SEARCH_REPEATS", Settings.api_max_search_repeats,
                                    minimum=1),
        api_max_offset=_int(env, "FORLOP_API_MAX_OFFSET", Settings.api_max_offset),
        audit_retention_days=_int(env, "FORLOP_AUDIT_RETENTION_DAYS", Settings.audit_retention_days),
        audit_default_purpose=_purpose(env),
        audit_synchronous_commit=_choice(env, "FORLOP_AUDIT_SYNCHRONOUS_COMMIT", "off", ("on", "off")) == "on",
        rate_limit_per_s=_int(env, "FORLOP_RATE_LIMIT_PER_S", Settings.rate_limit_per_s),
        rate_limit_burst=_int(env, "FORLOP_RATE_LIMIT_BURST", Settings.rate_limit_burst),
        public_scheme=_choice(env, "FORLOP_PUBLIC_SCHEME", Settings.public_scheme, ("http", "https")),
        public_base_url=_public_base_url(env),
        trusted_proxies=_networks(env, "FORLOP_TRUSTED_PROXIES"),
        # Production has no defaults here: an unset issuer or audience refuses the start (check_production).
        jwt_issuer=env.get("FORLOP_JWT_ISSUER") or ("" if mode == "production" else DEV_JWT_ISSUER),
        jwt_audience=env.get("FORLOP_JWT_AUDIENCE") or ("" if mode == "production" else DEV_JWT_AUDIENCE),
        jwt_jwks_url=env.get("FORLOP_JWT_JWKS_URL") or None,
        jwt_jwks_file=env.get("FORLOP_JWT_JWKS_FILE") or None,
        tenants_file=env.get("FORLOP_TENANTS") or None,
        xsd_dir=xsd_dir,
        data_dir=data_dir,
        log_level=_choice(env, "FORLOP_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        log_format=_choice(env, "FORLOP_LOG_FORMAT", "json", ("json", "text")),
        log_mask_key=env.get("FORLOP_LOG_MASK_KEY") or None,
        patient_id_key=env.get("FORLOP_PATIENT_ID_KEY") or None,
        due_soon_days=_int(env, "FORLOP_DUE_SOON_DAYS", 0) if due_soon else None,
        transport=transport,
        transport_dir=env.get("FORLOP_TRANSPORT_DIR") or None,
        transport_url=env.get("FORLOP_TRANSPORT_URL") or None,
        apprec_timeout_s=_int(env, "FORLOP_APPREC_TIMEOUT_S", 3600, minimum=1),
        max_send_attempts=_int(env, "FORLOP_MAX_SEND_ATTEMPTS", 5, minimum=1),
        apprec_inbox_batch=_int(env, "FORLOP_APPREC_INBOX_BATCH", 50, minimum=1),
        municipal_directory=env.get("FORLOP_MUNICIPAL_DIRECTORY") or None,
        gp_directory=env.get("FORLOP_GP_DIRECTORY") or None,
        sender_org_number=_digits(env, "FORLOP_SENDER_ORG_NUMBER", SYNTHETIC_SENDER_ORG_NUMBER, 9),
        sender_her_id=_digits(env, "FORLOP_SENDER_HER_ID", SYNTHETIC_SENDER_HER_ID, None),
        sender_org_name=env.get("FORLOP_SENDER_ORG_NAME") or SYNTHETIC_SENDER_ORG_NAME,
        scan_interval_s=float(_int(env, "FORLOP_SCAN_INTERVAL_S", 60, minimum=1)),
        fhir_validate=_choice(env, "FORLOP_FHIR_VALIDATE", "0", ("0", "1")) == "1",
    )


def production_gaps(settings: Settings, service: str) -> list[str]:
    """What FORLOP_MODE=production lacks to run `service` (`api`, `ingest`, ...): each a variable and why.

    Every process keys Patient ids and masks logs; the API also checks tokens against the identity
    provider (never the development key) and decides access by the tenant registry.
    """
    if not settings.production:
        return []
    gaps = []
    if not settings.patient_id_key:
        gaps.append("FORLOP_PATIENT_ID_KEY (the secret that keys Patient ids; without it they can be "
                    "reversed to fødselsnummer)")
    if not settings.log_mask_key:
        gaps.append("FORLOP_LOG_MASK_KEY (the secret that pseudonymises national ids in logs, the same in "
                    "every replica)")
    if service == "api":
        if not settings.jwt_issuer:
            gaps.append("FORLOP_JWT_ISSUER (the identity provider's issuer, e.g. HelseID's)")
        if not settings.jwt_audience:
            gaps.append("FORLOP_JWT_AUDIENCE (the audience forlop's tokens are issued for)")
        if not (settings.jwt_jwks_url or settings.jwt_jwks_file):
            gaps.append("FORLOP_JWT_JWKS_URL or FORLOP_JWT_JWKS_FILE (the identity provider's signing keys; "
                        "the development key exists only in embedded mode)")
        if not settings.tenants_file:
            gaps.append("FORLOP_TENANTS (the tenant registry: which organisation may read and write what)")
    return gaps


def check_production(settings: Settings, service: str) -> None:
    """Refuse to start `service` in production without its trust settings, naming every missing one."""
    gaps = production_gaps(settings, service)
    if gaps:
        raise ConfigError(f"FORLOP_MODE=production refuses to start {service} without: " + "; ".join(gaps))
