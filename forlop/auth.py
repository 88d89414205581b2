"""Bearer JWT (RS256) checked against a configured issuer and JWKS, HelseID style.

Production points FORLOP_JWT_JWKS_URL at the identity provider's JWKS. The embedded
default generates a local RSA key in the data directory, serves its JWKS from a
file, and `forlop token --scope ...` mints development tokens with it.
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

from forlop.config import Settings

SCOPE_WRITE_EVENTS = "forlop/events.write"
SCOPE_READ = "forlop/fhir.read"
SCOPE_AUDIT_READ = "forlop/audit.read"
ALL_SCOPES = (SCOPE_WRITE_EVENTS, SCOPE_READ, SCOPE_AUDIT_READ)
CLAIM_ORG_PARENT = "helseid://claims/client/claims/orgnr_parent"
CLAIM_ORG_CHILD = "helseid://claims/client/claims/orgnr_child"
CLAIM_HPR_NUMBER = "helseid://claims/hpr/hpr_number"
DEV_KID = "forlop-dev"
LEEWAY_S = 30  # clock skew allowed on exp and nbf
# A token whose signature and claims were checked is remembered by its exact text for at most this
# long (and never past its expiry, checked on every request): the RS256 check and PyJWT's parsing
# were a quarter of a search request. Well inside the JWKS cache's 600 s, so a key the issuer
# withdraws stops being accepted no later than without it.
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
    org_parent: str | None = None
    org_child: str | None = None
    hpr_number: str | None = None


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
                   now: float | None = None) -> str:
    key_path, _ = dev_key_paths(settings)
    ensure_dev_key(settings)
    issued = int(now if now is not None else time.time())
    claims = {
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
        if settings.jwt_jwks_url:
            self._jwks_client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=600)
        else:
            path = Path(settings.jwt_jwks_file) if settings.jwt_jwks_file else ensure_dev_key(settings)
            jwks = jwt.PyJWKSet.from_json(path.read_text())
            self._file_keys = {k.key_id or "": k for k in jwks.keys}

    def _key_for(self, token: str) -> Any:
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
        principal = Principal(str(claims.get("sub")), scopes, claims.get("client_id"),
                              _claim(claims, CLAIM_ORG_PARENT), _claim(claims, CLAIM_ORG_CHILD),
                              _claim(claims, CLAIM_HPR_NUMBER))
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


def _claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return str(value) if value not in (None, "") else None
