"""The control API under ``/_emulator``: JSON, loopback only, no auth, never faulted,
never counted. See the package docstring for the routes."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from testbed.azure.assertions import parse_credential
from testbed.azure.faults import parse_rule
from testbed.azure.pages import PAGE, PageStore
from testbed.azure.principal import DEFAULT_LOCATION
from testbed.azure.resources import GIB, POWER_DISPLAY, Disk
from testbed.azure.state import EMULATOR, Emulator
from testbed.azure.store import key
from testbed.azure.vms import seed_vm

routes = web.RouteTableDef()


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status)


def _emu(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ControlError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(400, f"'{name}' must be an integer")
    return value


def _size(spec: dict[str, Any]) -> int:
    if "size_bytes" in spec:
        size = _int(spec, "size_bytes")
    elif "size_gb" in spec:
        size = _int(spec, "size_gb") * GIB
    else:
        raise ControlError(400, "a disk needs 'size_bytes' or 'size_gb'")
    if size <= 0 or size % PAGE:
        raise ControlError(400, "a disk's size must be a positive multiple of 512 bytes")
    return size


@routes.get("/_emulator/health")
async def health(request: web.Request) -> web.Response:
    emu = _emu(request)
    return web.json_response(
        {
            "status": "ok",
            "time_scale": emu.clock.scale,
            "now": emu.clock.now(),
            "endpoint": emu.endpoint,
        }
    )


@routes.post("/_emulator/reset")
async def reset(request: web.Request) -> web.Response:
    _emu(request).reset()
    return web.json_response({"status": "reset"})


@routes.get("/_emulator/clock")
async def clock(request: web.Request) -> web.Response:
    emu = _emu(request)
    return web.json_response({"time_scale": emu.clock.scale, "now": emu.clock.now()})


@routes.patch("/_emulator/clock")
async def set_clock(request: web.Request) -> web.Response:
    emu = _emu(request)
    body = await _body(request)
    scale = body.get("time_scale")
    if not isinstance(scale, int | float) or scale <= 0:
        raise ControlError(400, "'time_scale' must be a positive number")
    emu.settle()
    emu.clock.set_scale(float(scale))
    return web.json_response({"time_scale": emu.clock.scale, "now": emu.clock.now()})


@routes.post("/_emulator/clock/advance")
async def advance(request: web.Request) -> web.Response:
    emu = _emu(request)
    seconds = (await _body(request)).get("seconds")
    if not isinstance(seconds, int | float) or seconds < 0:
        raise ControlError(400, "'seconds' must be a number >= 0")
    emu.settle()
    emu.clock.advance(float(seconds))
    emu.settle()
    return web.json_response({"time_scale": emu.clock.scale, "now": emu.clock.now()})


@routes.get("/_emulator/limits")
async def limits(request: web.Request) -> web.Response:
    return web.json_response(_emu(request).limits.to_json())


@routes.patch("/_emulator/limits")
async def set_limits(request: web.Request) -> web.Response:
    emu = _emu(request)
    try:
        emu.limits.update(await _body(request))
    except ValueError as err:
        raise ControlError(400, str(err)) from None
    return web.json_response(emu.limits.to_json())


@routes.get("/_emulator/stats")
async def stats(request: web.Request) -> web.Response:
    return web.json_response(_emu(request).stats.to_json())


@routes.post("/_emulator/stats/reset")
async def reset_stats(request: web.Request) -> web.Response:
    emu = _emu(request)
    emu.stats.reset()
    return web.json_response(emu.stats.to_json())


@routes.get("/_emulator/events")
async def events(request: web.Request) -> web.Response:
    emu = _emu(request)
    emu.settle()
    since = int(request.query.get("since", "0"))
    kind = request.query.get("kind", "")
    found = [e for e in emu.store.events if e["seq"] > since and e["kind"].startswith(kind)]
    return web.json_response({"events": found})


@routes.get("/_emulator/operations")
async def operations(request: web.Request) -> web.Response:
    emu = _emu(request)
    emu.settle()
    return web.json_response(
        {
            "operations": [
                {**op.to_json(), "operation": op.name, "resource_id": op.resource_id, "end": op.end}
                for op in emu.store.operations.values()
            ]
        }
    )


@routes.get("/_emulator/faults")
async def faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [r.to_json() for r in _emu(request).faults.rules]})


@routes.post("/_emulator/faults")
async def add_fault(request: web.Request) -> web.Response:
    emu = _emu(request)
    try:
        rule = parse_rule(await _body(request), emu.clock.now())
    except (ValueError, TypeError) as err:
        raise ControlError(400, str(err)) from None
    emu.faults.add(rule)
    return web.json_response(rule.to_json(), status=201)


@routes.delete("/_emulator/faults")
async def clear_faults(request: web.Request) -> web.Response:
    _emu(request).faults.clear()
    return web.json_response({"faults": []})


@routes.delete("/_emulator/faults/{id}")
async def remove_fault(request: web.Request) -> web.Response:
    if not _emu(request).faults.remove(request.match_info["id"]):
        raise ControlError(404, "no such fault rule")
    return web.json_response({"removed": request.match_info["id"]})


@routes.post("/_emulator/tokens/expire")
async def expire_tokens(request: web.Request) -> web.Response:
    emu = _emu(request)
    return web.json_response({"expired": emu.tokens.expire_all(emu.clock.now())})


@routes.post("/_emulator/principal/credentials")
async def add_credential(request: web.Request) -> web.Response:
    """Trust a certificate or a federated credential for the principal (client assertions)."""
    try:
        credential = parse_credential(await _body(request))
    except ValueError as err:
        raise ControlError(400, str(err)) from None
    _emu(request).credentials.append(credential)
    return web.json_response(credential.to_json(), status=201)


@routes.post("/_emulator/resource-groups")
async def add_resource_group(request: web.Request) -> web.Response:
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError(400, "'name' is required")
    group = _emu(request).store.add_resource_group(name, body.get("location", DEFAULT_LOCATION))
    return web.json_response({"name": group.name, "location": group.location}, status=201)


def _seed_disk(emu: Emulator, group: str, spec: dict[str, Any], location: str) -> Disk:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError(400, "a disk needs a 'name'")
    if key(group, name) in emu.store.disks:
        raise ControlError(409, f"disk {name} exists already")
    return emu.store.new_disk(
        group,
        name,
        location=spec.get("location", location),
        size=_size(spec),
        sku=spec.get("sku", "Premium_LRS"),
        os_type=spec.get("os_type"),
    )


@routes.post("/_emulator/disks")
async def seed_disk(request: web.Request) -> web.Response:
    emu = _emu(request)
    body = await _body(request)
    group = body.get("resource_group")
    if not isinstance(group, str):
        raise ControlError(400, "'resource_group' is required")
    location = body.get("location", DEFAULT_LOCATION)
    emu.store.add_resource_group(group, location)
    disk = _seed_disk(emu, group, body, location)
    return web.json_response(disk.to_json(emu.clock.now()), status=201)


@routes.post("/_emulator/vms")
async def seed(request: web.Request) -> web.Response:
    emu = _emu(request)
    body = await _body(request)
    group, name = body.get("resource_group"), body.get("name")
    if not isinstance(group, str) or not isinstance(name, str):
        raise ControlError(400, "'resource_group' and 'name' are required")
    if key(group, name) in emu.store.vms:
        raise ControlError(409, f"VM {name} exists already")
    power = body.get("power_state", "running")
    if power not in {"running", "stopped", "deallocated"}:
        raise ControlError(400, "'power_state' must be running, stopped or deallocated")
    location = body.get("location", DEFAULT_LOCATION)
    emu.store.add_resource_group(group, location)
    os_spec = {
        "name": f"{name}-os",
        "size_bytes": 4 << 20,
        "os_type": "Linux",
        **body.get("os_disk", {}),
    }
    specs = [os_spec, *body.get("data_disks", [])]
    for spec in specs:
        if key(group, str(spec.get("name"))) in emu.store.disks:
            raise ControlError(409, f"disk {spec.get('name')} exists already")
        _size(spec)
    disks = [_seed_disk(emu, group, spec, location) for spec in specs]
    vm = seed_vm(
        emu.store,
        group,
        name,
        location=location,
        power=power,
        os_disk=disks[0],
        data_disks=disks[1:],
        vm_size=body.get("vm_size", "Standard_D2s_v3"),
    )
    return web.json_response(vm.to_json(emu.clock.now()), status=201)


@routes.get("/_emulator/vms/{group}/{name}")
async def get_vm(request: web.Request) -> web.Response:
    """A VM as ARM shows it, for tests (no throttling, no authentication)."""
    emu = _emu(request)
    emu.settle()
    vm = emu.store.vm(request.match_info["group"], request.match_info["name"])
    return web.json_response(vm.to_json(emu.clock.now()))


@routes.post("/_emulator/vms/{group}/{name}/power")
async def set_power(request: web.Request) -> web.Response:
    emu = _emu(request)
    emu.settle()
    vm = emu.store.vm(request.match_info["group"], request.match_info["name"])
    state = (await _body(request)).get("state")
    if state not in POWER_DISPLAY:
        raise ControlError(400, f"'state' must be one of {', '.join(POWER_DISPLAY)}")
    now = emu.clock.now()
    if vm.power != state:
        emu.store.record(
            "vm.power", now, vm.id, **{"from": vm.power, "to": state}, source="control"
        )
        vm.power = state
        vm.state_changed = now
    return web.json_response(vm.instance_view(now))


@routes.post("/_emulator/disks/{group}/{name}/writes")
async def guest_writes(request: web.Request) -> web.Response:
    """Writes by the guest of the VM the disk is attached to (or, with
    ``require_running: false``, by anyone)."""
    emu = _emu(request)
    emu.settle()
    disk = emu.store.disk(request.match_info["group"], request.match_info["name"])
    body = await _body(request)
    if body.get("require_running", True):
        vm = disk.attached_to
        if vm is None or vm.power != "running":
            state = vm.power if vm is not None else "not attached"
            raise ControlError(409, f"disk {disk.name} has no running VM to write it ({state})")
    writes = body.get("writes")
    if not isinstance(writes, list) or not writes:
        raise ControlError(400, "'writes' must be a non-empty list")
    try:
        for spec in writes:
            offset = _int(spec, "offset")
            if "data" in spec:
                disk.content.write(offset, base64.b64decode(spec["data"], validate=True))
            elif spec.get("clear"):
                disk.content.clear(offset, _int(spec, "length"))
            elif "fill" in spec:
                disk.content.write(offset, bytes([_int(spec, "fill")]) * _int(spec, "length"))
            else:
                raise ControlError(400, "each write needs 'data', 'fill' or 'clear'")
    except (ValueError, TypeError) as err:
        raise ControlError(400, str(err)) from None
    disk.content.modified = emu.clock.now()
    return web.json_response({"pages": len(disk.content.pages), "version": disk.content.version})


def _content(request: web.Request, store: PageStore) -> web.Response:
    offset = int(request.query.get("offset", "0"))
    length = int(request.query.get("length", str(store.size - offset)))
    try:
        data = store.read(offset, length)
    except ValueError as err:
        raise ControlError(400, str(err)) from None
    return web.Response(body=data, content_type="application/octet-stream")


@routes.get("/_emulator/disks/{group}/{name}/content")
async def disk_content(request: web.Request) -> web.Response:
    emu = _emu(request)
    disk = emu.store.disk(request.match_info["group"], request.match_info["name"])
    return _content(request, disk.content)


@routes.get("/_emulator/snapshots/{group}/{name}/content")
async def snapshot_content(request: web.Request) -> web.Response:
    emu = _emu(request)
    snapshot = emu.store.snapshot(request.match_info["group"], request.match_info["name"])
    return _content(request, snapshot.content)


def add_routes(app: web.Application) -> None:
    app.router.add_routes(routes)
