"""Local RSA signing keys and access tokens shaped like Entra ID's, for development, demos and tests.

The app checks these tokens with the same code as real ones when ``AUTH_KEY_SOURCE=local`` and
``AUTH_LOCAL_JWKS_FILE`` points at the JWKS written here. Nothing here is deployed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TokenKind = Literal["user", "app"]
TokenVersion = Literal["1.0", "2.0"]

# Tenant and API ids of local.settings.json.example, so default tokens work with the example settings.
EXAMPLE_TENANT_ID = "11111111-1111-1111-1111-111111111111"
EXAMPLE_CLIENT_ID = "22222222-2222-2222-2222-222222222222"
DEFAULT_OBJECT_ID = "33333333-3333-3333-3333-333333333333"
DEFAULT_CLIENT_APP_ID = "44444444-4444-4444-4444-444444444444"
DEFAULT_USER_SCOPES = ("Conversations.ReadWrite",)
DEFAULT_USER_ROLES = ("Analytics.Read",)
DEFAULT_APP_ROLES = ("Conversations.ReadWrite.All", "Analytics.Read")
DEFAULT_LIFETIME_SECONDS = 3_600

DEFAULT_KEY_DIR = Path(__file__).resolve().parent.parent / ".local"
PRIVATE_KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"


@dataclass(frozen=True)
class SigningKey:
    """RSA key pair with its key id (``kid``), which is the RFC 7638 thumbprint of the public key."""

    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, str]:
        """Return the public half as a JWK, in the form Entra ID publishes its keys."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }


def generate_signing_key() -> SigningKey:
    """Create a new 2048-bit RSA key, the size Entra ID uses and the minimum the app accepts."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid=_thumbprint(private_key.public_key()), private_key=private_key)


def jwks_document(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """Return a JWKS document holding the public keys of ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


def load_or_create_signing_key(directory: Path = DEFAULT_KEY_DIR) -> tuple[SigningKey, bool]:
    """Return the local signing key from ``directory`` and whether it was just created.

    The private key lives in ``signing-key.pem`` (mode 0600) and its public JWK in ``jwks.json``.
    A missing key is generated; a JWKS that is missing or lacks the key's ``kid`` is rewritten.
    """
    private_path = directory / PRIVATE_KEY_FILE
    jwks_path = directory / JWKS_FILE

    created = not private_path.exists()
    if created:
        key = generate_signing_key()
        directory.mkdir(parents=True, exist_ok=True)
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
    else:
        loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{private_path} contains a {type(loaded).__name__}, expected an RSA private key")
        key = SigningKey(kid=_thumbprint(loaded.public_key()), private_key=loaded)

    if not _jwks_has_kid(jwks_path, key.kid):
        jwks_path.write_text(json.dumps(jwks_document([key]), indent=2) + "\n", encoding="utf-8")
    return key, created


def build_claims(
    *,
    kind: TokenKind = "user",
    tenant_id: str = EXAMPLE_TENANT_ID,
    client_id: str = EXAMPLE_CLIENT_ID,
    audience: str | None = None,
    scopes: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    object_id: str = DEFAULT_OBJECT_ID,
    client_app_id: str = DEFAULT_CLIENT_APP_ID,
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
    version: TokenVersion = "2.0",
    now: float | None = None,
) -> dict[str, Any]:
    """Return the claims of an access token for the API ``client_id``, as Entra ID would issue them.

    ``kind="user"`` gives a delegated token with ``scp`` and ``oid`` (by default the scope
    Conversations.ReadWrite and the role Analytics.Read). ``kind="app"`` gives an app-only token
    without ``scp`` (by default the roles Conversations.ReadWrite.All and Analytics.Read). The audience
    defaults to the client id for v2.0 and to ``api://<client id>`` for v1.0, as Entra ID sets it. A
    negative ``lifetime_seconds`` gives a token that expired that many seconds ago.
    """
    issued_at = int(time.time() if now is None else now)
    if lifetime_seconds <= 0:
        # An expired token still has iat and nbf an hour before its exp, as a real one would.
        issued_at += lifetime_seconds - DEFAULT_LIFETIME_SECONDS
        expires_at = issued_at + DEFAULT_LIFETIME_SECONDS
    else:
        expires_at = issued_at + lifetime_seconds

    if version == "2.0":
        issuer = f"https://login.microsoftonline.com/{tenant_id}/v2.0"
        default_audience = client_id
        client_claim = "azp"
    else:
        issuer = f"https://sts.windows.net/{tenant_id}/"
        default_audience = f"api://{client_id}"
        client_claim = "appid"

    claims: dict[str, Any] = {
        "aud": audience or default_audience,
        "iss": issuer,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        client_claim: client_app_id,
        "oid": object_id,
        "sub": object_id,
        "tid": tenant_id,
        "uti": uuid.uuid4().hex[:22],
        "ver": version,
    }
    if kind == "user":
        claims["scp"] = " ".join(DEFAULT_USER_SCOPES if scopes is None else scopes)
        role_list = list(DEFAULT_USER_ROLES if roles is None else roles)
    else:
        claims["idtyp"] = "app"
        role_list = list(DEFAULT_APP_ROLES if roles is None else roles)
    if role_list:
        claims["roles"] = role_list
    return claims


def sign_token(claims: Mapping[str, Any], key: SigningKey, *, headers: Mapping[str, Any] | None = None) -> str:
    """Return ``claims`` as a compact JWT signed with RS256 and carrying ``key``'s ``kid``."""
    header = {"typ": "JWT", "kid": key.kid, **(headers or {})}
    return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=header)


def _jwks_has_kid(path: Path, kid: str) -> bool:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = document.get("keys") if isinstance(document, dict) else None
    return isinstance(keys, list) and any(isinstance(k, dict) and k.get("kid") == kid for k in keys)


def _thumbprint(public_key: rsa.RSAPublicKey) -> str:
    # RFC 7638: SHA-256 over the required members, in lexicographic order, without whitespace.
    numbers = public_key.public_numbers()
    canonical = json.dumps({"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}, separators=(",", ":"))
    return _base64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _uint(value: int) -> str:
    return _base64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
