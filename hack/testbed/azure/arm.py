"""Azure Resource Manager: authentication, throttling and the routes of the compute subset.

Every request needs ``api-version`` (any value is accepted, as the SDK sends it) and a
bearer token from the identity endpoint for the ARM audience: missing, unknown,
expired or foreign tokens are 401 with ``WWW-Authenticate`` and an ARM error code
(``AuthenticationFailed``, ``InvalidAuthenticationToken``,
``InvalidAuthenticationTokenExpired``, ``InvalidAuthenticationTokenAudience``). Reads and
writes then take a token from the principal's bucket for the subscription; an empty
bucket is 429 ``SubscriptionRequestsThrottled`` with ``Retry-After``. Every answer
carries ``x-ms-ratelimit-remaining-subscription-reads`` or ``-writes``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from testbed.azure import disks, vms
from testbed.azure.armcore import ArmContext, ArmPath, operation_status, parse_path
from testbed.azure.clock import iso
from testbed.azure.errors import ArmError, EmulatedError
from testbed.azure.limits import retry_after
from testbed.azure.principal import ARM_AUDIENCES, SUBSCRIPTION_ID, TENANT_ID
from testbed.azure.state import EMULATOR, Emulator

Handler = Callable[[ArmContext], Awaitable[web.Response]]

# (collection, has a name, action or None, method) -> handler
ROUTES: dict[tuple[str, bool, str | None, str], Handler] = {
    ("virtualMachines", True, None, "GET"): vms.get,
    ("virtualMachines", True, None, "PUT"): vms.put,
    ("virtualMachines", True, None, "PATCH"): vms.patch,
    ("virtualMachines", True, None, "DELETE"): vms.delete,
    ("virtualMachines", False, None, "GET"): vms.list_group,
    ("virtualMachines", True, "instanceview", "GET"): vms.instance_view,
    ("virtualMachines", True, "poweroff", "POST"): vms.power_action,
    ("virtualMachines", True, "deallocate", "POST"): vms.power_action,
    ("virtualMachines", True, "start", "POST"): vms.power_action,
    ("virtualMachines", True, "restart", "POST"): vms.power_action,
    ("disks", True, None, "GET"): disks.get_disk,
    ("disks", True, None, "PUT"): disks.put_disk,
    ("disks", True, None, "DELETE"): disks.delete_disk,
    ("disks", False, None, "GET"): disks.list_disks,
    ("disks", True, "begingetaccess", "POST"): disks.grant_access,
    ("disks", True, "endgetaccess", "POST"): disks.revoke_access,
    ("snapshots", True, None, "GET"): disks.get_snapshot,
    ("snapshots", True, None, "PUT"): disks.put_snapshot,
    ("snapshots", True, None, "DELETE"): disks.delete_snapshot,
    ("snapshots", False, None, "GET"): disks.list_snapshots,
    ("snapshots", True, "begingetaccess", "POST"): disks.grant_access,
    ("snapshots", True, "endgetaccess", "POST"): disks.revoke_access,
    ("networkInterfaces", True, None, "GET"): vms.get_nic,
}
LIST_ALL: dict[str, Handler] = {
    "virtualMachines": vms.list_all,
    "disks": disks.list_all_disks,
    "snapshots": disks.list_all_snapshots,
}
_WRITE_NAMES = {"PUT": "createOrUpdate", "PATCH": "update", "DELETE": "delete"}
_ACTION_NAMES = {
    "poweroff": "powerOff",
    "deallocate": "deallocate",
    "start": "start",
    "restart": "restart",
    "begingetaccess": "beginGetAccess",
    "endgetaccess": "endGetAccess",
}


def classify(method: str, path: str) -> tuple[str, str | None]:
    """(route class, operation name for writes) of a request under /subscriptions."""
    parsed = parse_path(path)
    if method in {"GET", "HEAD"}:
        return ("arm_poll" if parsed and parsed.operation_id else "arm_read"), None
    if parsed is None or parsed.collection is None:
        return "arm_write", None
    if parsed.action:
        action = _ACTION_NAMES.get(parsed.action.lower(), parsed.action)
    else:
        action = _WRITE_NAMES.get(method, method)
    return "arm_write", f"{parsed.collection}/{action}"


def _unauthorized(emu: Emulator, code: str, message: str) -> ArmError:
    challenge = (
        f'Bearer authorization_uri="{emu.endpoint}/{TENANT_ID}", error="invalid_token", '
        f'error_description="{message}"'
    )
    return ArmError(401, code, message, headers={"WWW-Authenticate": challenge})


def authenticate(emu: Emulator, request: web.Request) -> str:
    """The client ID behind the request's bearer token."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise _unauthorized(
            emu,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise _unauthorized(
            emu,
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )
    token = emu.tokens.lookup(value.strip())
    if token is None:
        raise _unauthorized(emu, "InvalidAuthenticationToken", "The access token is invalid.")
    now = emu.clock.now()
    if now >= token.expires:
        raise _unauthorized(
            emu,
            "InvalidAuthenticationTokenExpired",
            f"The access token expiry UTC time '{iso(token.expires)}' is earlier than current "
            f"UTC time '{iso(now)}'.",
        )
    if token.audience not in ARM_AUDIENCES:
        raise _unauthorized(
            emu,
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource "
            f"'{token.audience}'. It should exactly match with one of the allowed audiences "
            f"'https://management.azure.com/'.",
        )
    return token.client_id


def _handler(path: ArmPath, method: str) -> Handler:
    if path.operation_id is not None:
        if method == "GET":
            return operation_status
    elif path.resource_group is None and path.collection is not None:
        if method == "GET":
            return LIST_ALL[path.collection]
    elif path.collection is not None:
        action = path.action.lower() if path.action else None
        handler = ROUTES.get((path.collection, path.name is not None, action, method))
        if handler is not None:
            return handler
    raise ArmError(
        405 if path.collection else 404,
        "NoRegisteredProviderFound" if not path.collection else "MethodNotAllowed",
        f"The emulator has no route for {method} on this path.",
    )


async def handle(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    path = parse_path(request.path)
    if path is None:
        raise ArmError(
            404,
            "InvalidResourceType",
            "The resource type could not be found; the emulator serves Microsoft.Compute "
            "virtualMachines, disks and snapshots.",
        )
    api_version = request.query.get("api-version")
    if not api_version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    client_id = authenticate(emu, request)
    if path.subscription.lower() != SUBSCRIPTION_ID:
        raise ArmError(
            404,
            "SubscriptionNotFound",
            f"The subscription '{path.subscription}' could not be found.",
        )
    write = request.method not in {"GET", "HEAD"}
    kind = "writes" if write else "reads"
    header = f"x-ms-ratelimit-remaining-subscription-{kind}"
    allowed, remaining, wait = emu.throttle.take(
        emu.limits, client_id, SUBSCRIPTION_ID, write, emu.clock.now()
    )
    if not allowed:
        seconds = retry_after(emu.clock.real_seconds(wait))
        raise ArmError(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{kind[:-1]}' requests for subscription '{SUBSCRIPTION_ID}' actor "
            f"'{client_id}' exceeded. Please try again after '{seconds}' seconds after "
            "additional tokens are available. Refer to https://aka.ms/arm-throttling",
            headers={"Retry-After": str(seconds), header: "0"},
        )
    fail = request.get("fail_operation")
    ctx = ArmContext(emu, request, path, api_version, client_id, fail)
    try:
        response = await _handler(path, request.method)(ctx)
    except EmulatedError as err:
        err.headers[header] = str(remaining)
        raise
    response.headers[header] = str(remaining)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/subscriptions/{tail:.*}", handle)
