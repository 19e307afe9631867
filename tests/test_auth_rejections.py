"""Bad requests and bad tokens: every one gets 401 with the right challenge, and none leaks into logs."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest

from shared.auth import authenticate, clear_signing_key_caches
from shared.errors import Unauthorized
from tests.auth_fixtures import (
    CLIENT_ID,
    GRAPH_APP_ID,
    OTHER_APP_ID,
    OTHER_TENANT_ID,
    TENANT_ID,
    app_claims,
    auth_settings,
    bearer,
    claims,
    es256_token,
    hs256_with_public_key_token,
    primary_key,
    problem,
    published_jwks,
    replace_payload,
    rs512_token,
    stranger_key,
    token,
    unsigned_token,
)
from tests.jwks_server import JwksServer

Request = tuple[dict[str, str], dict[str, str]]


@dataclass(frozen=True)
class BadRequest:
    """A request with a bad or missing token, and the 401 detail it must get."""

    name: str
    build: Callable[[], Request]
    detail: str
    invalid_token: bool = True
    """True: challenge has error="invalid_token". False: no token was sent, so the challenge is bare."""
    before_keys: bool = False
    """True: rejected before any key lookup, so the key server receives no request."""
    environment: dict[str, str] = field(default_factory=dict)


def early(name: str, build: Callable[[], Request], detail: str) -> BadRequest:
    """A bad token that must be rejected before any key lookup."""
    return BadRequest(name, build, detail, before_keys=True)


def no_token(name: str, build: Callable[[], Request], detail: str) -> BadRequest:
    """A request without bearer credentials, which gets a challenge without an error code."""
    return BadRequest(name, build, detail, invalid_token=False, before_keys=True)


def header_only(value: str) -> Callable[[], Request]:
    return lambda: ({"Authorization": value}, {})


def with_token(make: Callable[[], str]) -> Callable[[], Request]:
    return lambda: (bearer(make()), {})


def _now() -> int:
    return int(time.time())


def _kid() -> str:
    return primary_key().kid


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _huge_token() -> str:
    return token(claims(padding="x" * 20_000))


def _non_base64_token() -> str:
    header, payload, signature = token().split(".")
    return f"{header}.{payload[:10]}!*{payload[12:]}.{signature}"


def _padded_token() -> str:
    header, payload, signature = token().split(".")
    return f"{header}==.{payload}.{signature}"


def _truncated_signature(characters: int) -> Callable[[], str]:
    # A 256-byte signature is 342 base64url characters. Dropping 2 leaves whole 4-character groups, so it
    # decodes to a wrong signature; dropping 1 leaves a length no base64 text can have.
    return lambda: token()[:-characters]


def _altered_payload() -> str:
    signed = token(claims(roles=[]))
    return replace_payload(signed, claims(roles=["Analytics.Read", "Conversations.ReadWrite.All"]))


def _header_token(header: dict[str, Any]) -> str:
    return unsigned_token(header, claims(), signature=b"signature-bytes")


def _not_json_payload() -> str:
    return jwt.api_jws.encode(b"not json", primary_key().private_key, algorithm="RS256", headers={"kid": _kid()})


BAD_REQUESTS = [
    # Nothing or something else than one bearer token in the Authorization header.
    no_token("no_authorization_header", lambda: ({}, {}), "needs a bearer token"),
    no_token("blank_authorization_header", header_only("   "), "Bearer scheme"),
    no_token("basic_scheme", header_only("Basic dXNlcjpwYXNzd29yZA=="), "Bearer scheme"),
    early("bearer_missing", lambda: ({"Authorization": token()}, {}), "without the 'Bearer' scheme"),
    early("bearer_doubled", lambda: ({"Authorization": f"Bearer Bearer {token()}"}, {}), "exactly one"),
    early("empty_token", header_only("Bearer "), "no token after"),
    early("two_tokens", lambda: ({"Authorization": f"Bearer {token()}, Bearer {token()}"}, {}), "exactly one"),
    early("token_in_query", lambda: ({}, {"access_token": token()}), "not in the URL"),
    early("token_in_query_and_header", lambda: (bearer(token()), {"access_token": token()}), "not in the URL"),
    # Not a compact JWS, or too large.
    early("extra_segments", with_token(lambda: token() + ".e30"), "three base64url segments"),
    early("signature_segment_dropped", with_token(lambda: token().rsplit(".", 1)[0]), "three base64url segments"),
    early("non_base64_segment", with_token(_non_base64_token), "three base64url segments"),
    early("padded_segment", with_token(_padded_token), "three base64url segments"),
    early("huge_token", with_token(_huge_token), "at most 16384 bytes"),
    # JOSE header names another algorithm than RS256, has no kid, or uses unsupported parameters.
    early(
        "alg_none_empty_signature",
        with_token(lambda: unsigned_token({"alg": "none", "kid": _kid()}, claims())),
        "three base64url segments",
    ),
    early("alg_none", with_token(lambda: _header_token({"alg": "none", "typ": "JWT", "kid": _kid()})), "got 'none'"),
    early("alg_missing", with_token(lambda: _header_token({"typ": "JWT", "kid": _kid()})), "no 'alg'"),
    early("alg_lowercase", with_token(lambda: _header_token({"alg": "rs256", "kid": _kid()})), "got 'rs256'"),
    early(
        "hs256_with_public_key", with_token(lambda: hs256_with_public_key_token(claims(), primary_key())), "got 'HS256'"
    ),
    early("rs512", with_token(lambda: rs512_token(claims(), primary_key())), "got 'RS512'"),
    early("es256", with_token(lambda: es256_token(claims(), _kid())), "got 'ES256'"),
    early("kid_missing", with_token(lambda: _header_token({"alg": "RS256", "typ": "JWT"})), "'kid'"),
    early("kid_not_string", with_token(lambda: _header_token({"alg": "RS256", "kid": 7})), "'kid'"),
    early("header_not_json", with_token(lambda: _segment(b"hello") + "." + _segment(b"{}") + ".c2ln"), "header is not"),
    early("header_array", with_token(lambda: _segment(b"[1]") + "." + _segment(b"{}") + ".c2ln"), "header is not"),
    early("crit_header", with_token(lambda: token(headers={"crit": ["exp"], "exp": 1})), "'crit'"),
    early("jku_header", with_token(lambda: token(headers={"jku": "https://keys.example.com/"})), "'jku'"),
    early("typ_not_jwt", with_token(lambda: token(headers={"typ": "JWE"})), "type must be JWT"),
    # Key lookup and signature.
    BadRequest("unknown_kid", with_token(lambda: token(key=stranger_key())), "unknown key"),
    BadRequest(
        "signed_by_other_key_with_known_kid",
        with_token(lambda: token(key=stranger_key(), headers={"kid": _kid()})),
        "signature is invalid",
    ),
    BadRequest("payload_altered_after_signing", with_token(_altered_payload), "signature is invalid"),
    BadRequest("signature_truncated", with_token(_truncated_signature(2)), "signature is invalid"),
    BadRequest("signature_truncated_to_bad_length", with_token(_truncated_signature(1)), "do not decode"),
    BadRequest("payload_not_json", with_token(_not_json_payload), "do not decode"),
    # Times.
    BadRequest("expired", with_token(lambda: token(claims(now=_now() - 7_200))), "has expired"),
    BadRequest("not_yet_valid", with_token(lambda: token(claims(nbf=_now() + 3_600))), "not valid yet"),
    BadRequest("issued_in_future", with_token(lambda: token(claims(iat=_now() + 3_600))), "issued in the future"),
    BadRequest("exp_missing", with_token(lambda: token(claims(drop=["exp"]))), "missing the 'exp' claim"),
    BadRequest("exp_not_number", with_token(lambda: token(claims(exp=str(_now() + 3_600)))), "'exp' must be a number"),
    # Audience.
    BadRequest("wrong_audience", with_token(lambda: token(claims(aud="api://some-other-api"))), "audience must be"),
    BadRequest("graph_audience_id", with_token(lambda: token(claims(aud=GRAPH_APP_ID))), "audience must be"),
    BadRequest(
        "graph_audience_url", with_token(lambda: token(claims(aud="https://graph.microsoft.com"))), "audience must be"
    ),
    BadRequest("other_app_audience", with_token(lambda: token(claims(aud=OTHER_APP_ID))), "audience must be"),
    BadRequest(
        "other_app_uri_audience", with_token(lambda: token(claims(aud=f"api://{OTHER_APP_ID}"))), "audience must be"
    ),
    BadRequest(
        "audience_case_changed", with_token(lambda: token(claims(aud=f"API://{CLIENT_ID}"))), "audience must be"
    ),
    BadRequest("audience_missing", with_token(lambda: token(claims(drop=["aud"]))), "missing the 'aud' claim"),
    # Issuer, tenant and version.
    BadRequest(
        "issuer_of_other_tenant",
        with_token(lambda: token(claims(iss=f"https://login.microsoftonline.com/{OTHER_TENANT_ID}/v2.0"))),
        "issuer must be",
    ),
    BadRequest(
        "issuer_other_host",
        with_token(lambda: token(claims(iss=f"https://login.example.com/{TENANT_ID}/v2.0"))),
        "issuer must be",
    ),
    BadRequest(
        "issuer_v1_form_in_v2_token",
        with_token(lambda: token(claims(iss=f"https://sts.windows.net/{TENANT_ID}/"))),
        "issuer must be",
    ),
    BadRequest(
        "other_tenant",
        with_token(
            lambda: token(claims(tid=OTHER_TENANT_ID, iss=f"https://login.microsoftonline.com/{OTHER_TENANT_ID}/v2.0"))
        ),
        "tenant this API does not accept",
    ),
    BadRequest("tid_missing", with_token(lambda: token(claims(drop=["tid"]))), "missing the 'tid' claim"),
    BadRequest("tid_not_guid", with_token(lambda: token(claims(tid="common"))), "'tid' must be a GUID"),
    BadRequest(
        "v1_token_when_v1_off",
        with_token(
            lambda: token(claims(ver="1.0", iss=f"https://sts.windows.net/{TENANT_ID}/", aud=f"api://{CLIENT_ID}"))
        ),
        "v1.0 token",
    ),
    BadRequest("ver_unknown", with_token(lambda: token(claims(ver="3.0"))), "'ver' must be '2.0'"),
    BadRequest("ver_missing", with_token(lambda: token(claims(drop=["ver"]))), "missing the 'ver' claim"),
    # Who the caller is.
    BadRequest(
        "user_token_without_oid_and_azp",
        with_token(lambda: token(claims(drop=["oid", "azp"]))),
        "missing the 'oid' claim",
    ),
    BadRequest("app_token_without_azp", with_token(lambda: token(app_claims(azp=None))), "neither 'scp' nor 'azp'"),
    BadRequest("oid_not_guid", with_token(lambda: token(claims(oid="someone@example.com"))), "'oid' must be a GUID"),
    BadRequest("scp_not_string", with_token(lambda: token(claims(scp=["Conversations.ReadWrite"]))), "'scp' must be"),
    BadRequest("roles_not_array", with_token(lambda: token(claims(roles="Analytics.Read"))), "'roles' must be"),
]


@pytest.fixture(autouse=True)
def fresh_key_caches() -> Iterator[None]:
    clear_signing_key_caches()
    yield
    clear_signing_key_caches()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer(TENANT_ID) as running:
        running.publish(published_jwks(primary_key()))
        yield running


def test_matrix_has_enough_cases() -> None:
    assert len(BAD_REQUESTS) >= 25
    assert len({case.name for case in BAD_REQUESTS}) == len(BAD_REQUESTS)


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda case: case.name)
async def test_bad_request_gets_401(case: BadRequest, server: JwksServer, caplog: pytest.LogCaptureFixture) -> None:
    settings = auth_settings(server.openid_config_url, **case.environment)
    headers, query = case.build()
    caplog.set_level(logging.DEBUG, logger="shared.auth")

    with pytest.raises(Unauthorized) as caught:
        await authenticate(headers, query, settings)
    status, body, response_headers = problem(caught.value)

    assert status == 401
    assert body["code"] == ("invalid_token" if case.invalid_token else "missing_token")
    assert case.detail in body["detail"]
    challenge = response_headers["WWW-Authenticate"]
    if case.invalid_token:
        assert challenge.startswith('Bearer error="invalid_token", error_description="')
        assert "error_description" in challenge
    else:
        assert challenge == "Bearer"
    if case.before_keys:
        assert server.config_requests == 0
        assert server.jwks_requests == 0

    sent_values = [*headers.values(), *query.values()]
    secrets = [part for value in sent_values for part in value.replace(",", " ").split() if len(part) > 40]
    for secret in secrets:
        assert secret not in body["detail"]
        assert secret not in challenge
        assert secret not in caplog.text
    if case.invalid_token:
        assert any(
            record.levelno == logging.WARNING and "rejected bearer token" in record.getMessage()
            for record in caplog.records
        )


async def test_v1_token_accepted_only_when_enabled(server: JwksServer) -> None:
    v1 = token(
        claims(ver="1.0", iss=f"https://sts.windows.net/{TENANT_ID}/", aud=f"api://{CLIENT_ID}", appid=CLIENT_ID)
    )
    v1_disabled = auth_settings(server.openid_config_url)
    v1_enabled = auth_settings(server.openid_config_url, AUTH_ACCEPT_V1_TOKENS="true")

    with pytest.raises(Unauthorized):
        await authenticate(bearer(v1), {}, v1_disabled)
    identity = await authenticate(bearer(v1), {}, v1_enabled)

    assert identity.tenant_id == TENANT_ID


async def test_v2_token_with_v1_issuer_rejected(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url, AUTH_ACCEPT_V1_TOKENS="true")
    mixed = token(claims(iss=f"https://sts.windows.net/{TENANT_ID}/"))

    with pytest.raises(Unauthorized) as caught:
        await authenticate(bearer(mixed), {}, settings)

    assert "issuer must be" in caught.value.detail


async def test_rejection_log_names_reason_and_verified_ids(
    server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = auth_settings(server.openid_config_url)
    expired = token(claims(now=_now() - 7_200))
    caplog.set_level(logging.WARNING, logger="shared.auth")

    with pytest.raises(Unauthorized):
        await authenticate(bearer(expired), {}, settings)

    messages = [record.getMessage() for record in caplog.records]
    assert any("(expired)" in message for message in messages)
    assert any(f"tid={TENANT_ID}" in message for message in messages)
    assert expired not in caplog.text
    assert expired.split(".")[1] not in caplog.text
    assert json.dumps(claims()) not in caplog.text
