"""Keys, tokens, settings and a frozen clock for the auth tests.

Every key is generated in the test run (once per session) and every token is signed here or by
``devtools.local_tokens``; nothing reaches Entra ID.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.local_tokens import SigningKey, build_claims, generate_signing_key, jwks_document, sign_token
from shared.errors import AppError
from shared.http import error_response
from shared.settings import Settings, load_settings

TENANT_ID = "11111111-1111-1111-1111-111111111111"
CLIENT_ID = "22222222-2222-2222-2222-222222222222"
OTHER_TENANT_ID = "99999999-9999-9999-9999-999999999999"
THIRD_TENANT_ID = "88888888-8888-8888-8888-888888888888"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OTHER_APP_ID = "77777777-7777-7777-7777-777777777777"
USER_OBJECT_ID = "33333333-3333-3333-3333-333333333333"
CLIENT_APP_ID = "44444444-4444-4444-4444-444444444444"

CACHE_SECONDS = 3_600
COOLDOWN_SECONDS = 300


class FakeClock:
    """A clock that only moves when a test advances it; ``time`` and ``monotonic`` move together."""

    def __init__(self, start: float | None = None) -> None:
        # Starts at the real time, so tokens minted without a clock are valid until the test moves it.
        self._now = time.time() if start is None else start

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


@functools.cache
def primary_key() -> SigningKey:
    """The key the JWKS server publishes by default."""
    return generate_signing_key()


@functools.cache
def rotated_key() -> SigningKey:
    """A second key, published only when a test rotates keys."""
    return generate_signing_key()


@functools.cache
def stranger_key() -> SigningKey:
    """A key that is never published."""
    return generate_signing_key()


def published_jwks(*keys: SigningKey, without: Iterable[str] = ()) -> dict[str, Any]:
    """Return a JWKS of ``keys`` with the members in ``without`` (such as ``alg``) removed from each key."""
    document: dict[str, Any] = jwks_document(keys)
    for entry in document["keys"]:
        for member in without:
            entry.pop(member, None)
    return document


def auth_settings(openid_config_url: str, **overrides: str) -> Settings:
    """Settings for the test tenant and API, fetching keys from ``openid_config_url``.

    ``overrides`` are extra environment variables, such as ``AUTH_ACCEPT_V1_TOKENS="true"``.
    """
    environment = {
        "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
        "AUTH_TENANT_ID": TENANT_ID,
        "AUTH_CLIENT_ID": CLIENT_ID,
        "AUTH_OPENID_CONFIG_URL": openid_config_url,
        "AUTH_JWKS_CACHE_SECONDS": str(CACHE_SECONDS),
        "AUTH_JWKS_REFRESH_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
        **overrides,
    }
    return load_settings(environment)


def claims(*, now: float | None = None, drop: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
    """Return the claims of a valid v2.0 user token for the test API, changed by ``overrides`` and ``drop``."""
    result = build_claims(tenant_id=TENANT_ID, client_id=CLIENT_ID, now=now)
    result.update(overrides)
    for name in drop:
        result.pop(name, None)
    return result


def app_claims(*, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Return the claims of a valid v2.0 app-only token for the test API."""
    result = build_claims(kind="app", tenant_id=TENANT_ID, client_id=CLIENT_ID, now=now)
    result.update(overrides)
    return result


def token(
    payload: Mapping[str, Any] | None = None,
    *,
    key: SigningKey | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """Return an RS256 token of ``payload`` (default: valid user claims) signed by ``key`` (default: primary)."""
    return sign_token(claims() if payload is None else payload, key or primary_key(), headers=headers)


def unsigned_token(header: Mapping[str, Any], payload: Mapping[str, Any], signature: bytes = b"") -> str:
    """Return a compact JWS with the given header and payload and an arbitrary ``signature``."""
    signing_input = _segment(json.dumps(header).encode()) + "." + _segment(json.dumps(payload).encode())
    return signing_input + "." + _segment(signature)


def hs256_with_public_key_token(payload: Mapping[str, Any], key: SigningKey) -> str:
    """Return an HS256 token whose HMAC secret is ``key``'s public key PEM (the algorithm-confusion attack)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = _segment(json.dumps(header).encode()) + "." + _segment(json.dumps(payload).encode())
    secret = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _segment(signature)


def es256_token(payload: Mapping[str, Any], kid: str) -> str:
    """Return a token signed with a fresh P-256 key under ``kid``."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(dict(payload), private_key, algorithm="ES256", headers={"kid": kid})


def rs512_token(payload: Mapping[str, Any], key: SigningKey) -> str:
    """Return a token signed by ``key`` with RS512 instead of RS256."""
    return jwt.encode(dict(payload), key.private_key, algorithm="RS512", headers={"kid": key.kid})


def replace_payload(signed: str, payload: Mapping[str, Any]) -> str:
    """Return ``signed`` with its payload segment replaced and the original signature kept."""
    header, _, signature = signed.split(".")
    return header + "." + _segment(json.dumps(payload).encode()) + "." + signature


def bearer(value: str) -> dict[str, str]:
    """Return request headers that send ``value`` as a bearer token."""
    return {"Authorization": f"Bearer {value}"}


def problem(err: AppError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Return the status, JSON body and headers of the problem response the app sends for ``err``."""
    response = error_response(err)
    body = json.loads(response.get_body())
    return response.status_code, body, dict(response.headers)


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
