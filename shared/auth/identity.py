"""The caller's identity taken from a validated token, and the permission checks on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.auth.errors import InsufficientScope
from shared.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Caller of a request, built only from the claims of a token whose signature and claims were checked.

    A delegated (user) token has an ``scp`` claim and an ``oid``. An app-only token has no ``scp`` and is
    identified by its client application id (``azp`` in v2.0 tokens, ``appid`` in v1.0 tokens).
    """

    tenant_id: str
    object_id: str | None
    client_app_id: str | None
    is_app_only: bool
    scopes: frozenset[str]
    roles: frozenset[str]

    def __post_init__(self) -> None:
        if self.is_app_only and not self.client_app_id:
            raise ValueError("an app-only Identity needs client_app_id")
        if not self.is_app_only and not self.object_id:
            raise ValueError("a user Identity needs object_id")

    @property
    def owner_key(self) -> str:
        """Stable owner of the caller's data: ``<tid>/user/<oid>`` or ``<tid>/app/<client app id>``."""
        if self.is_app_only:
            return f"{self.tenant_id}/app/{self.client_app_id}"
        return f"{self.tenant_id}/user/{self.object_id}"


def require_conversation_access(identity: Identity, settings: Settings) -> None:
    """Raise ``InsufficientScope`` (403) unless the token has the conversation scope or app role."""
    scope = settings.auth_conversation_scope
    role = settings.auth_conversation_role
    if scope in identity.scopes or role in identity.roles:
        return

    _log_denied(identity, f"scope {scope!r} or role {role!r}")
    raise InsufficientScope(
        f"token needs the delegated scope '{scope}' or the app role '{role}' to use conversations",
        scope=scope,
    )


def require_analytics_access(identity: Identity, settings: Settings) -> None:
    """Raise ``InsufficientScope`` (403) unless the token has the analytics app role."""
    role = settings.auth_analytics_role
    if role in identity.roles:
        return

    _log_denied(identity, f"role {role!r}")
    raise InsufficientScope(f"token needs the app role '{role}' to read analytics", scope="")


def _log_denied(identity: Identity, needed: str) -> None:
    logger.warning(
        "denied access: token lacks %s (tid=%s oid=%s app=%s)",
        needed,
        identity.tenant_id,
        identity.object_id,
        identity.client_app_id,
    )
