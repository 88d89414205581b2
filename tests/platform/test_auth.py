"""Bearer JWT checks: signature against the JWKS, issuer, audience, expiry, scopes."""

from __future__ import annotations

import time
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, AuthError, TokenVerifier, mint_dev_token
from forlop.config import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings({"FORLOP_DATA_DIR": str(tmp_path)})


def test_dev_token_is_accepted_with_its_scopes(settings):
    token = mint_dev_token(settings, [SCOPE_READ])
    principal = TokenVerifier(settings).require(f"Bearer {token}", SCOPE_READ)
    assert principal.scopes == {SCOPE_READ}


def test_missing_token_is_401(settings):
    with pytest.raises(AuthError) as exc:
        TokenVerifier(settings).require(None, SCOPE_READ)
    assert exc.value.status == 401


def test_wrong_scope_is_403(settings):
    token = mint_dev_token(settings, [SCOPE_READ])
    with pytest.raises(AuthError) as exc:
        TokenVerifier(settings).require(f"Bearer {token}", SCOPE_WRITE_EVENTS)
    assert exc.value.status == 403 and SCOPE_WRITE_EVENTS in str(exc.value)


def test_expired_token_is_401(settings):
    token = mint_dev_token(settings, [SCOPE_READ], ttl_s=60, now=time.time() - 3600)
    with pytest.raises(AuthError) as exc:
        TokenVerifier(settings).require(f"Bearer {token}", SCOPE_READ)
    assert exc.value.status == 401 and "expired" in str(exc.value)


def test_token_from_another_key_or_issuer_is_401(settings):
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "exp": int(time.time()) + 60, "scope": [SCOPE_READ]},
        foreign,
        algorithm="RS256",
        headers={"kid": "forlop-dev"},
    )
    with pytest.raises(AuthError) as exc:
        TokenVerifier(settings).require(f"Bearer {forged}", SCOPE_READ)
    assert exc.value.status == 401
    token = mint_dev_token(settings, [SCOPE_READ])
    other_issuer = replace(settings, jwt_issuer="https://helseid.example/other")
    with pytest.raises(AuthError):
        TokenVerifier(other_issuer).require(f"Bearer {token}", SCOPE_READ)


def test_hs256_token_is_refused(settings):
    token = jwt.encode(
        {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "exp": int(time.time()) + 60, "scope": SCOPE_READ},
        "secret-secret-secret-secret-secret!",
        algorithm="HS256",
    )
    with pytest.raises(AuthError):
        TokenVerifier(settings).require(f"Bearer {token}", SCOPE_READ)
