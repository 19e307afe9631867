"""Typed application settings, read from the environment and validated on first use.

Importing this module reads nothing. ``get_settings()`` parses every setting the app reads and
raises ``SettingsError`` naming the first bad one, so a misconfigured worker still imports (an
import error would hide every function in Azure) and answers ``503`` problems that say what to fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared.errors import SettingsError

logger = logging.getLogger(__name__)

ModelProvider = Literal["offline", "openai", "azure_openai"]
KeySource = Literal["entra", "local"]
DatabaseAuth = Literal["password", "entra"]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class ModelPrice:
    """Price of one model in US dollars per million tokens."""

    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class Settings:
    # Database
    database_url: str
    database_auth: DatabaseAuth = "password"
    database_pool_max_size: int = 10
    database_pool_timeout_seconds: float = 5.0
    database_statement_timeout_ms: int = 15_000
    database_connection_max_lifetime_seconds: int = 1_800
    database_prepared_statements: bool = True

    # Models
    model_provider: ModelProvider = "offline"
    offline_model_delay_ms: int = 0
    openai_base_url: str = ""
    openai_api_key: str = ""
    openai_model: str = ""
    azure_openai_endpoint: str = ""
    azure_openai_deployment: str = ""
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_api_key: str = ""
    model_timeout_seconds: float = 60.0
    model_prices: Mapping[str, ModelPrice] = field(default_factory=dict)

    # Runs
    run_timeout_seconds: float = 200.0
    run_lease_seconds: int = 30

    # Authentication
    auth_tenant_id: str = ""
    auth_client_id: str = ""
    auth_app_id_uri: str = ""
    auth_allowed_tenants: tuple[str, ...] = ()
    auth_accept_v1_tokens: bool = False
    auth_leeway_seconds: int = 60
    auth_conversation_scope: str = "Conversations.ReadWrite"
    auth_conversation_role: str = "Conversations.ReadWrite.All"
    auth_analytics_role: str = "Analytics.Read"
    auth_key_source: KeySource = "entra"
    auth_local_jwks_file: str = ""
    auth_openid_config_url: str = ""
    auth_jwks_cache_seconds: int = 86_400
    auth_jwks_refresh_cooldown_seconds: int = 300

    # Input limits
    max_request_bytes: int = 65_536
    max_message_chars: int = 16_000

    # Analytics
    analytics_write_timeout_ms: int = 2_000

    # Nightly maintenance
    analytics_daily_retention_days: int = 90
    analytics_monthly_retention_months: int = 36
    thread_compact_after_days: int = 7
    thread_delete_after_days: int = 90

    @property
    def model_name(self) -> str:
        """Name of the configured model, as used for prices and in analytics."""
        if self.model_provider == "openai":
            return self.openai_model
        if self.model_provider == "azure_openai":
            return self.azure_openai_deployment
        return "offline"


def running_in_azure(env: Mapping[str, str] | None = None) -> bool:
    """Tell whether this process runs on the Azure Functions platform.

    App Service and every Functions plan set WEBSITE_SITE_NAME and WEBSITE_INSTANCE_ID on their
    workers; CONTAINER_NAME alone is not enough, since many container hosts set it.
    """
    source = os.environ if env is None else env
    return bool(source.get("WEBSITE_SITE_NAME") or source.get("WEBSITE_INSTANCE_ID"))


class _Reader:
    """Parse settings from a mapping, raising ``SettingsError`` that names the setting."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str = "") -> str:
        return self._env.get(name, default).strip()

    def required(self, name: str, example: str) -> str:
        value = self.text(name)
        if not value:
            raise SettingsError(name, f"setting {name} is missing; set it to a value like '{example}'")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise SettingsError(name, f"setting {name} must be an integer from {low} to {high}, got '{raw}'")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise SettingsError(name, f"setting {name} must be a number from {low:g} to {high:g}, got '{raw}'")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name).lower()
        if not raw:
            return default
        if raw in ("true", "1", "yes"):
            return True
        if raw in ("false", "0", "no"):
            return False
        raise SettingsError(name, f"setting {name} must be 'true' or 'false', got '{raw}'")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name) or default
        if value not in allowed:
            raise SettingsError(name, f"setting {name} must be one of {', '.join(allowed)}, got '{value}'")
        return value

    def guid(self, name: str) -> str:
        value = self.required(name, "00000000-0000-0000-0000-000000000000")
        if not _GUID.match(value):
            raise SettingsError(
                name, f"setting {name} must be a GUID like '00000000-0000-0000-0000-000000000000', got '{value}'"
            )
        return value.lower()

    def url(self, name: str, example: str, *, required: bool) -> str:
        value = self.text(name)
        if not value:
            if required:
                raise SettingsError(name, f"setting {name} is missing; set it to a URL like '{example}'")
            return ""
        if not re.match(r"^https?://[^\s/]+", value):
            raise SettingsError(name, f"setting {name} must be an http(s) URL like '{example}', got '{value}'")
        return value


def _parse_prices(reader: _Reader) -> dict[str, ModelPrice]:
    name = "MODEL_PRICES"
    raw = reader.text(name)
    if not raw:
        return {}
    example = '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise SettingsError(name, f"setting {name} must be a JSON object like '{example}' (USD per million tokens)")
    prices: dict[str, ModelPrice] = {}
    for model, price in data.items():
        valid = isinstance(price, dict) and all(
            isinstance(price.get(k), (int, float)) and price[k] >= 0 for k in ("input", "output")
        )
        if not valid:
            raise SettingsError(
                name, f"setting {name} has an invalid price for model '{model}'; use a JSON object like '{example}'"
            )
        prices[model] = ModelPrice(float(price["input"]), float(price["output"]))
    return prices


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse and validate every setting in ``env``; raise ``SettingsError`` for the first bad one."""
    r = _Reader(env)

    database_url = r.required("DATABASE_URL", "postgresql://user@host:5432/dbname")
    if not database_url.startswith(("postgresql://", "postgres://")) and "=" not in database_url:
        raise SettingsError(
            "DATABASE_URL",
            "setting DATABASE_URL must be a PostgreSQL URL like 'postgresql://user@host:5432/dbname'",
        )

    provider = r.choice("MODEL_PROVIDER", "offline", ("offline", "openai", "azure_openai"))
    openai_base_url = r.url("OPENAI_BASE_URL", "https://api.openai.com/v1", required=provider == "openai")
    openai_model = r.required("OPENAI_MODEL", "gpt-4o-mini") if provider == "openai" else r.text("OPENAI_MODEL")
    azure_endpoint = r.url(
        "AZURE_OPENAI_ENDPOINT", "https://my-resource.openai.azure.com", required=provider == "azure_openai"
    )
    azure_deployment = (
        r.required("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
        if provider == "azure_openai"
        else r.text("AZURE_OPENAI_DEPLOYMENT")
    )

    key_source = r.choice("AUTH_KEY_SOURCE", "entra", ("entra", "local"))
    if key_source == "local" and running_in_azure(env):
        raise SettingsError(
            "AUTH_KEY_SOURCE",
            "setting AUTH_KEY_SOURCE is 'local', which is for development only; set it to 'entra' in Azure",
        )
    local_jwks = r.required("AUTH_LOCAL_JWKS_FILE", ".local/jwks.json") if key_source == "local" else ""
    tenant = r.guid("AUTH_TENANT_ID")
    client_id = r.guid("AUTH_CLIENT_ID")
    allowed = tuple(t.strip().lower() for t in r.text("AUTH_ALLOWED_TENANTS").split(",") if t.strip())
    for extra in allowed:
        if not _GUID.match(extra):
            raise SettingsError(
                "AUTH_ALLOWED_TENANTS",
                f"setting AUTH_ALLOWED_TENANTS must be a comma-separated list of tenant GUIDs, got '{extra}'",
            )

    # The maxima of the run, model and statement timeouts keep each one below functionTimeout in
    # host.json (600 s), so a slow dependency gets the app's own 504 or 503 before the platform
    # kills the worker.
    run_timeout = r.number("RUN_TIMEOUT_SECONDS", 200.0, 1.0, 540.0)
    # A live run renews its lease every third of its length, so the lease only bounds how long the
    # thread of a worker that died stays locked.
    lease = r.integer("RUN_LEASE_SECONDS", 30, 5, 600)

    compact_days = r.integer("THREAD_COMPACT_AFTER_DAYS", 7, 0, 36_500)
    delete_days = r.integer("THREAD_DELETE_AFTER_DAYS", 90, 0, 36_500)

    return Settings(
        database_url=database_url,
        database_auth=r.choice("DATABASE_AUTH", "password", ("password", "entra")),  # type: ignore[arg-type]
        database_pool_max_size=r.integer("DATABASE_POOL_MAX_SIZE", 10, 1, 200),
        database_pool_timeout_seconds=r.number("DATABASE_POOL_TIMEOUT_SECONDS", 5.0, 0.1, 120.0),
        database_statement_timeout_ms=r.integer("DATABASE_STATEMENT_TIMEOUT_MS", 15_000, 100, 300_000),
        database_connection_max_lifetime_seconds=r.integer(
            "DATABASE_CONNECTION_MAX_LIFETIME_SECONDS", 1_800, 60, 86_400
        ),
        database_prepared_statements=r.boolean("DATABASE_PREPARED_STATEMENTS", True),
        model_provider=provider,  # type: ignore[arg-type]
        offline_model_delay_ms=r.integer("OFFLINE_MODEL_DELAY_MS", 0, 0, 600_000),
        openai_base_url=openai_base_url,
        openai_api_key=r.text("OPENAI_API_KEY"),
        openai_model=openai_model,
        azure_openai_endpoint=azure_endpoint,
        azure_openai_deployment=azure_deployment,
        azure_openai_api_version=r.text("AZURE_OPENAI_API_VERSION", "2024-10-21") or "2024-10-21",
        azure_openai_api_key=r.text("AZURE_OPENAI_API_KEY"),
        # Two attempts (max_retries=1) of at most 240 s each still end before functionTimeout.
        model_timeout_seconds=r.number("MODEL_TIMEOUT_SECONDS", 60.0, 1.0, 240.0),
        model_prices=_parse_prices(r),
        run_timeout_seconds=run_timeout,
        run_lease_seconds=lease,
        auth_tenant_id=tenant,
        auth_client_id=client_id,
        auth_app_id_uri=r.text("AUTH_APP_ID_URI") or f"api://{client_id}",
        auth_allowed_tenants=allowed or (tenant,),
        auth_accept_v1_tokens=r.boolean("AUTH_ACCEPT_V1_TOKENS", False),
        auth_leeway_seconds=r.integer("AUTH_LEEWAY_SECONDS", 60, 0, 600),
        auth_conversation_scope=r.text("AUTH_CONVERSATION_SCOPE") or "Conversations.ReadWrite",
        auth_conversation_role=r.text("AUTH_CONVERSATION_ROLE") or "Conversations.ReadWrite.All",
        auth_analytics_role=r.text("AUTH_ANALYTICS_ROLE") or "Analytics.Read",
        auth_key_source=key_source,  # type: ignore[arg-type]
        auth_local_jwks_file=local_jwks,
        auth_openid_config_url=r.url(
            "AUTH_OPENID_CONFIG_URL",
            "https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration",
            required=False,
        )
        or f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration",
        auth_jwks_cache_seconds=r.integer("AUTH_JWKS_CACHE_SECONDS", 86_400, 60, 604_800),
        auth_jwks_refresh_cooldown_seconds=r.integer("AUTH_JWKS_REFRESH_COOLDOWN_SECONDS", 300, 1, 86_400),
        max_request_bytes=r.integer("MAX_REQUEST_BYTES", 65_536, 1_024, 10_485_760),
        max_message_chars=r.integer("MAX_MESSAGE_CHARS", 16_000, 1, 1_000_000),
        analytics_write_timeout_ms=r.integer("ANALYTICS_WRITE_TIMEOUT_MS", 2_000, 50, 60_000),
        analytics_daily_retention_days=r.integer("ANALYTICS_DAILY_RETENTION_DAYS", 90, 1, 36_500),
        analytics_monthly_retention_months=r.integer("ANALYTICS_MONTHLY_RETENTION_MONTHS", 36, 1, 1_200),
        thread_compact_after_days=compact_days,
        thread_delete_after_days=delete_days,
    )


_lock = threading.Lock()
_cached: Settings | None = None


def get_settings() -> Settings:
    """Return the worker's settings, parsing the environment on the first successful call.

    A failure is not cached, so a fixed setting is picked up by the next request; each failure
    is logged at ERROR with the same message the client gets.
    """
    global _cached
    if _cached is not None:
        return _cached
    with _lock:
        if _cached is None:
            try:
                _cached = load_settings(os.environ)
            except SettingsError as err:
                logger.error("configuration error: %s", err.detail)
                raise
        return _cached


def reset_settings_cache() -> None:
    """Forget the parsed settings so the next call reads the environment again (tests use this)."""
    global _cached
    with _lock:
        _cached = None
