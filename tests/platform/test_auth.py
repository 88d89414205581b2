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


def test_a_remembered_token_still_expires_and_is_checked_again_after_a_minute(settings, monkeypatch):
    """Verified tokens are remembered by their text, but expiry is checked on every request."""
    from forlop import auth

    clock = [time.time()]
    verifier = TokenVerifier(settings, now=lambda: clock[0])
    token = mint_dev_token(settings, [SCOPE_READ], ttl_s=120)
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **kw: decoded.append(1) or real_decode(*a, **kw))

    assert verifier.require(f"Bearer {token}", SCOPE_READ).scopes == {SCOPE_READ}
    assert verifier.require(f"Bearer {token}", SCOPE_READ).scopes == {SCOPE_READ}
    assert len(decoded) == 1  # the second request was answered from memory
    with pytest.raises(AuthError) as exc:  # remembered, but a scope it lacks is still refused
        verifier.require(f"Bearer {token}", SCOPE_WRITE_EVENTS)
    assert exc.value.status == 403

    clock[0] += auth.VERIFIED_MAX_AGE_S + 1  # older than the memory keeps: verified again
    verifier.require(f"Bearer {token}", SCOPE_READ)
    assert len(decoded) == 2

    clock[0] = time.time()
    soon = mint_dev_token(settings, [SCOPE_READ], ttl_s=120, now=clock[0] - 100)  # valid 20 s more (+ leeway)
    verifier.require(f"Bearer {soon}", SCOPE_READ)
    clock[0] += 20 + auth.LEEWAY_S  # past exp (+ leeway), within the minute of its check
    with pytest.raises(AuthError) as exc:
        verifier.require(f"Bearer {soon}", SCOPE_READ)
    assert exc.value.status == 401 and "expired" in str(exc.value) and len(decoded) == 3

    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")  # another text: checked, refused
    with pytest.raises(AuthError):
        verifier.require(f"Bearer {tampered}", SCOPE_READ)


def test_remembered_tokens_are_bounded(settings, monkeypatch):
    from forlop import auth

    monkeypatch.setattr(auth, "VERIFIED_MAX_TOKENS", 3)
    verifier = TokenVerifier(settings)
    for _ in range(5):
        verifier.require(f"Bearer {mint_dev_token(settings, [SCOPE_READ])}", SCOPE_READ)
    assert len(verifier._verified) == 3
