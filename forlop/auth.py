"""Bearer JWT (RS256) checked against a configured issuer and JWKS, HelseID style.

Production points FORLOP_JWT_JWKS_URL at the identity provider's JWKS. The embedded
default generates a local RSA key in the data directory, serves its JWKS from a
file, and `forlop token --scope ... [--org N]` mints development tokens with it. That key
exists in embedded mode only: production never makes or trusts it (a token carrying its key
id is refused, whatever JWKS is configured).

Tokens are shaped like HelseID client-credential tokens: `client_id`, `scope`, the legal
entity's organisation number (CLAIM_ORGNR_PARENT), optionally a sub-unit's (CLAIM_ORGNR_CHILD)
and, for a person, the HPR number (CLAIM_HPR_NUMBER).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forlop.config import ConfigError, Settings
from forlop.tenants import DEVELOPMENT_ORG_NUMBER

SCOPE_WRITE_EVENTS = "forlop/events.write"
SCOPE_READ = "forlop/fhir.read"
SCOPE_AUDIT_READ = "forlop/audit.read"  # the audit trail (/fhir/AuditEvent)
SCOPE_ADMIN = "forlop/admin"  # operators: /messages and dead letters
ALL_SCOPES = (SCOPE_WRITE_EVENTS, SCOPE_READ, SCOPE_ADMIN, SCOPE_AUDIT_READ)  # what plain `forlop token` grants
# HelseID client-credential claims: the legal entity (parent), optionally the sub-unit (child),
# and for a person acting through the client, their HPR number.
CLAIM_ORGNR_PARENT = "helseid://claims/client/claims/orgnr_parent"
CLAIM_ORGNR_CHILD = "helseid://claims/client/claims/orgnr_child"
CLAIM_HPR_NUMBER = "helseid://claims/hpr/hpr_number"
DEV_KID = "forlop-dev"
LEEWAY_S = 30  # clock skew allowed on exp and nbf
# A token whose signature and claims were checked is remembered by its exact text for at most this
# long (and never past its expiry, checked on every request): the RS256 check and PyJWT's parsing
# were a large share of a search request (docs/performance.md). Well inside the JWKS cache's 600 s,
# so a key the issuer withdraws stops being accepted no later than without it.
VERIFIED_MAX_AGE_S = 60.0
VERIFIED_MAX_TOKENS = 1024


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # OperationOutcome issue code: login | forbidden | expired? (FHIR: "login", "forbidden")


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    client_id: str | None
    org_parent: str | None = None  # CLAIM_ORGNR_PARENT
    org_child: str | None = None  # CLAIM_ORGNR_CHILD
    hpr_number: str | None = None  # CLAIM_HPR_NUMBER


def dev_key_paths(settings: Settings) -> tuple[Path, Path]:
    return settings.data_dir / "dev-jwt-key.pem", settings.data_dir / "dev-jwks.json"


def ensure_dev_key(settings: Settings) -> Path:
    """Create the embedded run's signing key and JWKS file once; return the JWKS path."""
    key_path, jwks_path = dev_key_paths(settings)
    if key_path.exists() and jwks_path.exists():
        return jwks_path
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": DEV_KID, "use": "sig", "alg": "RS256"})
    jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2))
    return jwks_path


def mint_dev_token(settings: Settings, scopes: list[str], *, subject: str = "dev-client", ttl_s: int = 3600,
                   now: float | None = None, org_parent: str | None = DEVELOPMENT_ORG_NUMBER,
                   org_child: str | None = None, hpr_number: str | None = None) -> str:
    """A token signed by the development key (embedded mode), for the organisation `org_parent`
    (default: the demo registry's development tenant, which reads everything)."""
    if settings.production:
        raise ConfigError("development tokens exist in embedded mode only; production tokens come from "
                          "the identity provider")
    key_path, _ = dev_key_paths(settings)
    ensure_dev_key(settings)
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "client_id": subject,
        "scope": scopes,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    for claim, value in ((CLAIM_ORGNR_PARENT, org_parent), (CLAIM_ORGNR_CHILD, org_child),
                         (CLAIM_HPR_NUMBER, hpr_number)):
        if value:
            claims[claim] = value
    return jwt.encode(claims, key_path.read_bytes(), algorithm="RS256", headers={"kid": DEV_KID})


class TokenVerifier:
    def __init__(self, settings: Settings, now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._now = now
        # token -> (principal, exp, when verified); only tokens that passed every check
        self._verified: dict[str, tuple[Principal, float, float]] = {}
        self._verified_lock = threading.Lock()
        self._jwks_client: jwt.PyJWKClient | None = None
        self._file_keys: dict[str, Any] | None = None
        # Only the embedded run makes (and trusts) the development key.
        self._dev_key_trusted = not settings.production and not (settings.jwt_jwks_url or settings.jwt_jwks_file)
        if settings.jwt_jwks_url:
            self._jwks_client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=600)
        elif settings.jwt_jwks_file:
            path = Path(settings.jwt_jwks_file)
            if settings.production and path.resolve() == dev_key_paths(settings)[1].resolve():
                raise ConfigError(f"FORLOP_JWT_JWKS_FILE={settings.jwt_jwks_file!r} is the development key's "
                                  "JWKS, which production never trusts")
            jwks = jwt.PyJWKSet.from_json(path.read_text())
            self._file_keys = {k.key_id or "": k for k in jwks.keys}
        elif settings.production:
            raise ConfigError("FORLOP_MODE=production needs FORLOP_JWT_JWKS_URL or FORLOP_JWT_JWKS_FILE; "
                              "the development key exists in embedded mode only")
        else:
            path = ensure_dev_key(settings)
            jwks = jwt.PyJWKSet.from_json(path.read_text())
            self._file_keys = {k.key_id or "": k for k in jwks.keys}

    def _key_for(self, token: str) -> Any:
        if not self._dev_key_trusted and jwt.get_unverified_header(token).get("kid") == DEV_KID:
            raise AuthError(401, "login", "token signed with the development key, which only the embedded "
                                          "run trusts")
        if self._jwks_client is not None:
            return self._jwks_client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid") or ""
        assert self._file_keys is not None
        key = self._file_keys.get(kid) or (next(iter(self._file_keys.values())) if len(self._file_keys) == 1 else None)
        if key is None:
            raise AuthError(401, "login", f"token signed with unknown key id {kid!r}")
        return key.key

    def verify(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, "login", "missing bearer token (Authorization: Bearer <JWT>)")
        token = authorization.split(None, 1)[1].strip()
        now = self._now()
        known = self._verified.get(token)
        if known is not None and now - known[2] <= VERIFIED_MAX_AGE_S:
            if now >= known[1] + LEEWAY_S:  # what jwt.decode would say now
                raise AuthError(401, "expired", "the bearer token has expired")
            return known[0]
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=["RS256"],
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                options={"require": ["exp", "iss", "aud"]},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "expired", "the bearer token has expired") from None
        except AuthError:
            raise
        except jwt.PyJWTError as exc:
            raise AuthError(401, "login", f"invalid bearer token: {exc}") from None
        raw = claims.get("scope", [])
        scopes = frozenset(raw.split() if isinstance(raw, str) else raw)
        principal = Principal(
            str(claims.get("sub")), scopes, claims.get("client_id"),
            org_parent=_claim_str(claims, CLAIM_ORGNR_PARENT),
            org_child=_claim_str(claims, CLAIM_ORGNR_CHILD),
            hpr_number=_claim_str(claims, CLAIM_HPR_NUMBER),
        )
        self._remember(token, principal, float(claims["exp"]), now)
        return principal

    def _remember(self, token: str, principal: Principal, exp: float, now: float) -> None:
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_MAX_TOKENS:
                for stale in [t for t, (_, e, at) in self._verified.items()
                              if now - at > VERIFIED_MAX_AGE_S or now >= e + LEEWAY_S]:
                    del self._verified[stale]
                while len(self._verified) >= VERIFIED_MAX_TOKENS:  # the oldest first
                    del self._verified[next(iter(self._verified))]
            self._verified[token] = (principal, exp, now)

    def require(self, authorization: str | None, scope: str) -> Principal:
        principal = self.verify(authorization)
        if scope not in principal.scopes:
            raise AuthError(403, "forbidden", f"the token lacks the scope {scope!r}")
        return principal


def _claim_str(claims: dict[str, Any], name: str) -> str | None:
    """A HelseID claim as text; numbers are accepted because some issuers send them unquoted."""
    value = claims.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise AuthError(401, "login", f"invalid bearer token: claim {name!r} is not a string")
