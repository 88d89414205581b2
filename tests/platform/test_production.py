"""Production refuses to start without real trust settings; the development key is the embedded run's alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app import cli
from app.bootstrap import Runtime
from app.serve import serve_forever
from forlop.auth import SCOPE_READ, AuthError, TokenVerifier, dev_key_paths, mint_dev_token
from forlop.config import ConfigError, check_production, load_settings, production_gaps
from forlop.storage import Store

REGISTRY = {"tenants": [{"orgNumber": "910000001", "kind": "hospital", "units": ["8140712"]}]}


def _jwks(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp-key", "use": "sig", "alg": "RS256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


def _complete(tmp_path: Path) -> dict[str, str]:
    """A production environment with every trust setting."""
    (tmp_path / "tenants.json").write_text(json.dumps(REGISTRY))
    return {
        "FORLOP_MODE": "production",
        "FORLOP_DATA_DIR": str(tmp_path),
        "FORLOP_DATABASE_URL": f"sqlite:///{tmp_path / 'forlop.db'}",
        "FORLOP_JWT_ISSUER": "https://helseid.test",
        "FORLOP_JWT_AUDIENCE": "forlop",
        "FORLOP_JWT_JWKS_FILE": str(_jwks(tmp_path)),
        "FORLOP_PATIENT_ID_KEY": "patient-id-secret",
        "FORLOP_LOG_MASK_KEY": "log-mask-secret",
        "FORLOP_TENANTS": str(tmp_path / "tenants.json"),
    }


def test_a_complete_production_environment_passes(tmp_path):
    assert production_gaps(load_settings(_complete(tmp_path)), "api") == []


@pytest.mark.parametrize("missing", ["FORLOP_JWT_ISSUER", "FORLOP_JWT_AUDIENCE", "FORLOP_JWT_JWKS_FILE",
                                     "FORLOP_PATIENT_ID_KEY", "FORLOP_LOG_MASK_KEY", "FORLOP_TENANTS"])
def test_serve_api_refuses_to_start_naming_what_is_missing(tmp_path, monkeypatch, capsys, root_logging, missing):
    """`forlop serve api` as an operator starts it: exit 2, the one missing variable named, nothing served."""
    env = _complete(tmp_path)
    del env[missing]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "api"]) == 2
    err = capsys.readouterr().err
    shown = "FORLOP_JWT_JWKS_URL or FORLOP_JWT_JWKS_FILE" if missing == "FORLOP_JWT_JWKS_FILE" else missing
    assert "refuses to start api" in err and shown in err, err
    others = {"FORLOP_JWT_ISSUER", "FORLOP_JWT_AUDIENCE", "FORLOP_PATIENT_ID_KEY", "FORLOP_LOG_MASK_KEY",
              "FORLOP_TENANTS"} - {missing}
    assert not [name for name in others if name in err], err
    assert not dev_key_paths(load_settings(env))[0].exists()  # no development key was made


def test_every_gap_is_named_at_once_and_consumers_need_the_keys_only(tmp_path):
    settings = load_settings({"FORLOP_MODE": "production", "FORLOP_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as err:
        check_production(settings, "api")
    for name in ("FORLOP_JWT_ISSUER", "FORLOP_JWT_AUDIENCE", "FORLOP_JWT_JWKS_URL", "FORLOP_PATIENT_ID_KEY",
                 "FORLOP_LOG_MASK_KEY", "FORLOP_TENANTS"):
        assert name in str(err.value)
    consumer = production_gaps(settings, "pathway")
    assert [g.split()[0] for g in consumer] == ["FORLOP_PATIENT_ID_KEY", "FORLOP_LOG_MASK_KEY"]


def test_serve_forever_checks_before_it_touches_the_store(tmp_path):
    env = _complete(tmp_path)
    del env["FORLOP_LOG_MASK_KEY"]
    settings = load_settings(env)
    runtime = Runtime(settings, Store("postgresql://postgres@127.0.0.1:1/unreachable"))
    with pytest.raises(ConfigError, match="FORLOP_LOG_MASK_KEY"):
        serve_forever(runtime, "ingest", ensure_topics=False)


def test_production_never_makes_or_trusts_the_development_key(tmp_path):
    env = _complete(tmp_path)
    del env["FORLOP_JWT_JWKS_FILE"]
    with pytest.raises(ConfigError, match="embedded mode only"):
        TokenVerifier(load_settings(env))
    assert not dev_key_paths(load_settings(env))[1].exists()
    with pytest.raises(ConfigError):
        mint_dev_token(load_settings(_complete(tmp_path)), [SCOPE_READ])
    # the development key's JWKS named as production's: refused
    dev = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    mint_dev_token(dev, [SCOPE_READ])
    with pytest.raises(ConfigError, match="development key"):
        TokenVerifier(load_settings({**_complete(tmp_path), "FORLOP_JWT_JWKS_FILE": str(dev_key_paths(dev)[1])}))


@pytest.mark.parametrize("mode", ["production", "embedded"])
def test_a_development_token_is_refused_by_any_other_configuration(tmp_path, mode):
    """Minted by the embedded run on this data directory, then served with the identity provider's
    JWKS on the same directory (production, or embedded pointed at a JWKS): 401."""
    embedded = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    token = mint_dev_token(embedded, [SCOPE_READ], org_parent="910000001")
    assert TokenVerifier(embedded).require(f"Bearer {token}", SCOPE_READ).org_parent == "910000001"
    env = _complete(tmp_path) | {"FORLOP_MODE": mode, "FORLOP_JWT_ISSUER": embedded.jwt_issuer,
                                 "FORLOP_JWT_AUDIENCE": embedded.jwt_audience}
    with pytest.raises(AuthError) as err:
        TokenVerifier(load_settings(env)).verify(f"Bearer {token}")
    assert err.value.status == 401 and "development key" in str(err.value)


def test_a_helseid_shaped_token_carries_the_org_numbers_and_hpr(tmp_path):
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    token = mint_dev_token(settings, [SCOPE_READ], org_parent="983974899", org_child="974749025",
                           hpr_number="9144900")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["helseid://claims/client/claims/orgnr_parent"] == "983974899"
    assert claims["client_id"] and claims["scope"] == [SCOPE_READ]
    principal = TokenVerifier(settings).require(f"Bearer {token}", SCOPE_READ)
    assert (principal.org_parent, principal.org_child, principal.hpr_number) == ("983974899", "974749025", "9144900")
    # a claim that is not text or a number is refused
    key_path, _ = dev_key_paths(settings)
    bad = jwt.encode({"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "exp": int(time.time()) + 60,
                      "scope": SCOPE_READ, "helseid://claims/client/claims/orgnr_parent": ["983974899"]},
                     key_path.read_bytes(), algorithm="RS256", headers={"kid": "forlop-dev"})
    with pytest.raises(AuthError):
        TokenVerifier(settings).verify(f"Bearer {bad}")
