"""Good tokens: who the caller is, which audiences count as this API, and the 403 permission checks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import azure.functions as func
import pytest

from shared.auth import (
    Identity,
    InsufficientScope,
    TokenValidator,
    authenticate,
    clear_signing_key_caches,
    require_analytics_access,
    require_conversation_access,
    signing_keys_for,
)
from shared.errors import Forbidden, Unauthorized
from tests.auth_fixtures import (
    CLIENT_APP_ID,
    CLIENT_ID,
    GRAPH_APP_ID,
    OTHER_APP_ID,
    OTHER_TENANT_ID,
    TENANT_ID,
    THIRD_TENANT_ID,
    USER_OBJECT_ID,
    FakeClock,
    app_claims,
    auth_settings,
    bearer,
    claims,
    primary_key,
    problem,
    published_jwks,
    token,
)
from tests.jwks_server import JwksServer


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


async def test_user_token_with_scope_is_accepted(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)

    identity = await authenticate(bearer(token()), {}, settings)

    assert identity.tenant_id == TENANT_ID
    assert identity.object_id == USER_OBJECT_ID
    assert identity.client_app_id == CLIENT_APP_ID
    assert identity.is_app_only is False
    assert identity.scopes == frozenset({"Conversations.ReadWrite"})
    assert identity.roles == frozenset({"Analytics.Read"})
    assert identity.owner_key == f"{TENANT_ID}/user/{USER_OBJECT_ID}"
    require_conversation_access(identity, settings)
    require_analytics_access(identity, settings)


async def test_app_token_with_role_is_accepted(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    app_token = token(app_claims(roles=["Conversations.ReadWrite.All"]))

    identity = await authenticate(bearer(app_token), {}, settings)

    assert identity.is_app_only is True
    assert identity.client_app_id == CLIENT_APP_ID
    assert identity.scopes == frozenset()
    assert identity.roles == frozenset({"Conversations.ReadWrite.All"})
    assert identity.owner_key == f"{TENANT_ID}/app/{CLIENT_APP_ID}"
    require_conversation_access(identity, settings)
    with pytest.raises(InsufficientScope):
        require_analytics_access(identity, settings)


async def test_v1_token_accepted_when_enabled(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url, AUTH_ACCEPT_V1_TOKENS="true")
    v1_claims = claims(ver="1.0", iss=f"https://sts.windows.net/{TENANT_ID}/", aud=f"api://{CLIENT_ID}", drop=["azp"])
    v1_claims["appid"] = OTHER_APP_ID

    identity = await authenticate(bearer(token(v1_claims)), {}, settings)

    assert identity.client_app_id == OTHER_APP_ID
    assert identity.owner_key == f"{TENANT_ID}/user/{USER_OBJECT_ID}"


async def test_allowed_tenants_accept_listed_tenants_only(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url, AUTH_ALLOWED_TENANTS=f"{TENANT_ID}, {OTHER_TENANT_ID}")
    guest_claims = claims(tid=OTHER_TENANT_ID, iss=f"https://login.microsoftonline.com/{OTHER_TENANT_ID}/v2.0")
    third_claims = claims(tid=THIRD_TENANT_ID, iss=f"https://login.microsoftonline.com/{THIRD_TENANT_ID}/v2.0")

    home = await authenticate(bearer(token()), {}, settings)
    guest = await authenticate(bearer(token(guest_claims)), {}, settings)
    with pytest.raises(Unauthorized) as caught:
        await authenticate(bearer(token(third_claims)), {}, settings)

    assert home.owner_key == f"{TENANT_ID}/user/{USER_OBJECT_ID}"
    assert guest.owner_key == f"{OTHER_TENANT_ID}/user/{USER_OBJECT_ID}"
    assert "tenant" in caught.value.detail


@pytest.mark.parametrize(
    ("audience", "app_id_uri", "accepted"),
    [
        pytest.param(CLIENT_ID, "", True, id="client_id"),
        pytest.param(f"api://{CLIENT_ID}", "", True, id="default_app_id_uri"),
        pytest.param(
            "api://conversations.contoso.example", "api://conversations.contoso.example", True, id="custom_uri"
        ),
        pytest.param(CLIENT_ID, "api://conversations.contoso.example", True, id="client_id_with_custom_uri"),
        pytest.param(f"api://{CLIENT_ID}", "api://conversations.contoso.example", False, id="default_uri_replaced"),
        pytest.param(GRAPH_APP_ID, "", False, id="graph"),
        pytest.param("https://graph.microsoft.com", "", False, id="graph_url"),
        pytest.param(OTHER_APP_ID, "", False, id="other_app"),
        pytest.param([OTHER_APP_ID, CLIENT_ID], "", True, id="list_containing_client_id"),
    ],
)
async def test_audience_accepted_only_in_allowed_forms(
    server: JwksServer, audience: str | list[str], app_id_uri: str, accepted: bool
) -> None:
    environment = {"AUTH_APP_ID_URI": app_id_uri} if app_id_uri else {}
    settings = auth_settings(server.openid_config_url, **environment)
    request = bearer(token(claims(aud=audience)))

    if accepted:
        identity = await authenticate(request, {}, settings)
        assert identity.tenant_id == TENANT_ID
        return
    with pytest.raises(Unauthorized) as caught:
        await authenticate(request, {}, settings)
    status, body, headers = problem(caught.value)
    assert status == 401
    assert body["code"] == "invalid_token"
    assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_token_without_scope_or_role_gets_403(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    bare = token(claims(scp="", roles=[]))

    identity = await authenticate(bearer(bare), {}, settings)
    with pytest.raises(Forbidden) as conversations:
        require_conversation_access(identity, settings)
    with pytest.raises(Forbidden) as analytics:
        require_analytics_access(identity, settings)

    status, body, headers = problem(conversations.value)
    assert status == 403
    assert body["code"] == "insufficient_scope"
    assert "Conversations.ReadWrite" in body["detail"]
    assert headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope", error_description="')
    assert 'scope="Conversations.ReadWrite"' in headers["WWW-Authenticate"]
    status, body, headers = problem(analytics.value)
    assert status == 403
    assert "Analytics.Read" in body["detail"]
    assert headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


async def test_other_scopes_do_not_grant_conversations(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    other = token(claims(scp="User.Read Conversations.Read", roles=["Conversations.Read.All"]))

    identity = await authenticate(bearer(other), {}, settings)

    with pytest.raises(InsufficientScope):
        require_conversation_access(identity, settings)


async def test_conversation_role_grants_user_token(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    with_role = token(claims(scp="User.Read", roles=["Conversations.ReadWrite.All"]))

    identity = await authenticate(bearer(with_role), {}, settings)

    require_conversation_access(identity, settings)


async def test_configured_scope_and_roles_are_used(server: JwksServer) -> None:
    settings = auth_settings(
        server.openid_config_url,
        AUTH_CONVERSATION_SCOPE="Chat.Use",
        AUTH_CONVERSATION_ROLE="Chat.All",
        AUTH_ANALYTICS_ROLE="Reports.Read",
    )
    user = await authenticate(bearer(token(claims(scp="Chat.Use", roles=["Reports.Read"]))), {}, settings)
    default_user = await authenticate(bearer(token()), {}, settings)

    require_conversation_access(user, settings)
    require_analytics_access(user, settings)
    with pytest.raises(InsufficientScope):
        require_conversation_access(default_user, settings)
    with pytest.raises(InsufficientScope):
        require_analytics_access(default_user, settings)


async def test_http_request_headers_and_params_are_read(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    request = func.HttpRequest(
        "GET", "http://127.0.0.1/api/threads", headers={"authorization": f"bearer  {token()}"}, body=b""
    )
    with_query_token = func.HttpRequest(
        "GET", "http://127.0.0.1/api/threads", headers={}, params={"access_token": token()}, body=b""
    )

    identity = await authenticate(request.headers, request.params, settings)
    with pytest.raises(Unauthorized) as caught:
        await authenticate(with_query_token.headers, with_query_token.params, settings)

    assert identity.object_id == USER_OBJECT_ID
    assert "not in the URL" in caught.value.detail


async def test_uppercase_ids_are_normalized(server: JwksServer) -> None:
    settings = auth_settings(server.openid_config_url)
    upper = claims(oid=USER_OBJECT_ID.upper(), azp=CLIENT_APP_ID.upper())

    identity = await authenticate(bearer(token(upper)), {}, settings)

    assert identity.owner_key == f"{TENANT_ID}/user/{USER_OBJECT_ID}"
    assert identity.client_app_id == CLIENT_APP_ID


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        pytest.param("exp", -59, True, id="expired_within_leeway"),
        pytest.param("exp", -60, False, id="expired_at_leeway"),
        pytest.param("nbf", 60, True, id="nbf_at_leeway"),
        pytest.param("nbf", 61, False, id="nbf_beyond_leeway"),
        pytest.param("iat", 60, True, id="iat_at_leeway"),
        pytest.param("iat", 61, False, id="iat_beyond_leeway"),
    ],
)
async def test_token_times_allow_leeway(server: JwksServer, claim: str, offset: int, accepted: bool) -> None:
    clock = FakeClock(start=float(int(time.time())))
    settings = auth_settings(server.openid_config_url, AUTH_LEEWAY_SECONDS="60")
    now = int(clock.time())
    payload = claims(iat=now - 600, nbf=now - 600, exp=now + 600)
    payload[claim] = now + offset
    validator = TokenValidator(settings, signing_keys_for(settings), clock=clock)

    if accepted:
        identity = await validator.authenticate(bearer(token(payload)), {})
        assert identity.tenant_id == TENANT_ID
        return
    with pytest.raises(Unauthorized):
        await validator.authenticate(bearer(token(payload)), {})


async def test_token_valid_until_clock_passes_exp(server: JwksServer) -> None:
    clock = FakeClock()
    settings = auth_settings(server.openid_config_url, AUTH_LEEWAY_SECONDS="0")
    validator = TokenValidator(settings, signing_keys_for(settings), clock=clock)
    short_lived = token(claims(now=clock.time(), exp=int(clock.time()) + 120))

    await validator.authenticate(bearer(short_lived), {})
    clock.advance(119)
    await validator.authenticate(bearer(short_lived), {})
    clock.advance(2)
    with pytest.raises(Unauthorized) as caught:
        await validator.authenticate(bearer(short_lived), {})

    assert "expired" in caught.value.detail


def test_identity_needs_the_id_its_owner_key_uses() -> None:
    with pytest.raises(ValueError, match="object_id"):
        Identity(TENANT_ID, None, CLIENT_APP_ID, False, frozenset({"x"}), frozenset())
    with pytest.raises(ValueError, match="client_app_id"):
        Identity(TENANT_ID, USER_OBJECT_ID, None, True, frozenset(), frozenset())
