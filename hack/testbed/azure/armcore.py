"""ARM plumbing the resource handlers share: paths, the request context, JSON bodies,
and long-running operations as ARM answers and polls them.

A write that starts an operation answers 201/202 with ``Azure-AsyncOperation`` (the
status monitor), ``Location`` (the same with ``monitor=true``: 202 until done, then the
final result, e.g. the ``AccessUri`` of beginGetAccess) and ``Retry-After``. The
status monitor answers ``{"status": "InProgress"}`` until the operation's emulated
duration has passed, then ``Succeeded`` or ``Failed`` with its ``error``. The SDK's
continuation token holds these URLs, so a new client resumes the same operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from testbed.azure.errors import ArmError
from testbed.azure.limits import retry_after
from testbed.azure.principal import SUBSCRIPTION_ID
from testbed.azure.resources import NETWORK_PROVIDER, PROVIDER, Operation
from testbed.azure.state import Emulator
from testbed.azure.store import Store

COLLECTIONS = {"virtualmachines": "virtualMachines", "disks": "disks", "snapshots": "snapshots"}
NETWORK_COLLECTIONS = {"networkinterfaces": "networkInterfaces"}
"""Microsoft.Network: only the NICs the emulator creates with VMs (read-only)."""
OPERATION_FAMILIES = {"operations": "operations", "diskoperations": "DiskOperations"}


@dataclass(frozen=True)
class ArmPath:
    """What an ARM URL path names; segments are matched case-insensitively."""

    subscription: str
    resource_group: str | None = None
    collection: str | None = None
    name: str | None = None
    action: str | None = None
    location: str | None = None
    operation_id: str | None = None


def parse_path(path: str) -> ArmPath | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0].lower() != "subscriptions":
        return None
    subscription, rest = parts[1], parts[2:]
    low = [p.lower() for p in rest]
    if low[0] == "providers" and len(rest) >= 3 and low[1] == PROVIDER.lower():
        if len(rest) == 3 and low[2] in COLLECTIONS:
            return ArmPath(subscription, collection=COLLECTIONS[low[2]])
        if len(rest) == 6 and low[2] == "locations" and low[4] in OPERATION_FAMILIES:
            return ArmPath(subscription, location=rest[3], operation_id=rest[5])
        return None
    if low[0] != "resourcegroups" or len(rest) < 5:
        return None
    if low[2] != "providers":
        return None
    if low[3] == PROVIDER.lower() and low[4] in COLLECTIONS:
        collection = COLLECTIONS[low[4]]
    elif low[3] == NETWORK_PROVIDER.lower() and low[4] in NETWORK_COLLECTIONS:
        collection = NETWORK_COLLECTIONS[low[4]]
    else:
        return None
    if len(rest) > 7:
        return None
    return ArmPath(
        subscription,
        resource_group=rest[1],
        collection=collection,
        name=rest[5] if len(rest) > 5 else None,
        action=rest[6] if len(rest) > 6 else None,
    )


@dataclass
class ArmContext:
    emu: Emulator
    request: web.Request
    path: ArmPath
    api_version: str
    client_id: str
    fail_with: tuple[str, str] | None

    @property
    def store(self) -> Store:
        return self.emu.store

    @property
    def now(self) -> float:
        return self.emu.clock.now()

    @property
    def resource_group(self) -> str:
        assert self.path.resource_group is not None
        return self.path.resource_group

    @property
    def name(self) -> str:
        assert self.path.name is not None
        return self.path.name

    def duration(self, kind: str) -> float:
        return self.emu.limits.durations[kind]

    async def body(self) -> dict[str, Any]:
        raw = await self.request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized.",
            ) from None
        if not isinstance(body, dict):
            raise ArmError(
                400, "InvalidRequestContent", "The request content must be a JSON object."
            )
        return body


def ok(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def poll_delay(emu: Emulator, op: Operation) -> int:
    """``Retry-After`` for an operation still running (real seconds)."""
    if emu.limits.poll_retry_after is not None:
        return emu.limits.poll_retry_after
    return retry_after(emu.clock.real_seconds(max(0.0, op.end - emu.clock.now())))


def _monitor_url(ctx: ArmContext, op: Operation) -> str:
    return (
        f"{ctx.emu.endpoint}/subscriptions/{SUBSCRIPTION_ID}/providers/{PROVIDER}"
        f"/locations/{op.location}/{op.family}/{op.id}"
    )


def accepted(
    ctx: ArmContext,
    op: Operation,
    *,
    status: int = 202,
    body: dict[str, Any] | None = None,
    location: bool = True,
) -> web.Response:
    """The first answer of a long-running operation."""
    url = _monitor_url(ctx, op)
    headers = {
        "Azure-AsyncOperation": f"{url}?api-version={ctx.api_version}",
        "Retry-After": str(poll_delay(ctx.emu, op)),
    }
    if location:
        headers["Location"] = f"{url}?monitor=true&api-version={ctx.api_version}"
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(body, status=status, headers=headers)


_FAILURE_STATUS = {"OperationPreempted": 409, "OperationNotAllowed": 409, "Conflict": 409}


async def operation_status(ctx: ArmContext) -> web.Response:
    """GET of an ``Azure-AsyncOperation`` or (with ``monitor=true``) ``Location`` URL."""
    assert ctx.path.operation_id is not None
    op = ctx.store.operations.get(ctx.path.operation_id)
    if op is None:
        raise ArmError(404, "NotFound", f"The operation '{ctx.path.operation_id}' was not found.")
    running = op.status == "InProgress"
    headers = {"Retry-After": str(poll_delay(ctx.emu, op))} if running else {}
    if ctx.request.query.get("monitor", "").lower() != "true":
        return web.json_response(op.to_json(), headers=headers)
    if running:
        headers["Location"] = str(ctx.request.url)
        return web.Response(status=202, headers=headers)
    if op.status == "Failed":
        assert op.error is not None
        code = op.error["code"]
        raise ArmError(_FAILURE_STATUS.get(code, 500), code, op.error["message"])
    if op.output is None:
        return web.Response(status=200)
    return web.json_response(op.output)
