"""The identity platform: OpenID metadata and the client-credentials token endpoint.

``azure.identity.ClientSecretCredential(..., authority=<emulator>,
disable_instance_discovery=True)`` works unchanged: the sync credential (MSAL) reads
``/{tenant}/v2.0/.well-known/openid-configuration`` and posts to the ``token_endpoint``
it names; the async one posts to ``/{tenant}/oauth2/v2.0/token`` directly.

Besides the client secret, the principal signs in with a client assertion (a certificate
credential, or a federated token for workload identity) signed by a key registered
through the control API (see ``assertions``).

Access tokens are opaque (see ``tokens``); ARM checks them on every request.
"""

from __future__ import annotations

import hmac
import math

from aiohttp import web

from testbed.azure.assertions import JWT_BEARER, AssertionRefused, check_assertion
from testbed.azure.errors import AadError
from testbed.azure.principal import CLIENT_ID, TENANT_ID
from testbed.azure.state import EMULATOR


def _tenant(request: web.Request) -> str:
    tenant = request.match_info["tenant"]
    if tenant.lower() not in {TENANT_ID, "organizations"}:
        raise AadError(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )
    return TENANT_ID


async def openid_configuration(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    tenant = _tenant(request)
    base = f"{emu.endpoint}/{tenant}"
    return web.json_response(
        {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }
    )


async def token(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    _tenant(request)
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    client_id = str(form.get("client_id", ""))
    secret = str(form.get("client_secret", ""))
    assertion = str(form.get("client_assertion", ""))
    assertion_type = str(form.get("client_assertion_type", ""))
    scope = str(form.get("scope", ""))
    if grant_type != "client_credentials":
        raise AadError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'; "
            "the emulator supports client_credentials only.",
        )
    if client_id != CLIENT_ID:
        raise AadError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{TENANT_ID}'.",
        )
    if assertion or assertion_type:
        if assertion_type != JWT_BEARER:
            raise AadError(
                400,
                "invalid_request",
                90014,
                f"The client_assertion_type must be '{JWT_BEARER}'.",
            )
        token_url = f"{emu.endpoint}/{request.match_info['tenant']}/oauth2/v2.0/token"
        try:
            check_assertion(assertion, client_id, token_url, emu.credentials)
        except AssertionRefused as err:
            raise AadError(
                401, "invalid_client", 700027, f"Client assertion failed: {err}."
            ) from None
    elif not hmac.compare_digest(secret.encode(), emu.client_secret.encode()):
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            f"the client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    scopes = scope.split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise AadError(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier.",
        )
    audience = scopes[0].removesuffix("/.default").rstrip("/")
    now = emu.clock.now()
    lifetime = emu.limits.token_lifetime_seconds
    access_token = emu.tokens.issue(client_id, audience, now + lifetime, now)
    # The client caches the token for ``expires_in`` *real* seconds.
    expires_in = max(1, math.floor(emu.clock.real_seconds(lifetime)))
    return web.json_response(
        {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        },
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
