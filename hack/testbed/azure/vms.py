"""Virtual machines: get, list, create or update, delete, instance view and power actions.

Power actions are long-running. The transient state (``stopping``, ``deallocating``,
``starting``) shows at once, the final one when the operation completes; every
change is an event. A new power action preempts a running one (which then fails with
``OperationPreempted``), as in Azure. ``powerOff`` of a stopped VM, ``deallocate`` of a
deallocated one and ``start`` of a running one succeed without a transition;
``powerOff``/``restart`` of a deallocated VM (and ``restart`` of a stopped one) are 409.

A new VM's OS disk comes ``FromImage`` or is an existing managed disk (``Attach``, e.g.
one made from a recovery point's snapshot); as in Azure, an attached OS disk allows
neither ``imageReference`` nor ``osProfile`` (400 ``InvalidParameter``).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from testbed.azure.armcore import ArmContext, accepted, ok
from testbed.azure.errors import ArmError, bad_request, not_allowed, not_found
from testbed.azure.resources import GIB, DataDisk, Disk, NetworkInterface, VirtualMachine
from testbed.azure.store import Store, key

DEFAULT_VM_SIZE = "Standard_D2s_v3"
DEFAULT_OS_DISK_GB = 30
_NOT_ECHOED = {"storageProfile", "hardwareProfile", "provisioningState", "instanceView", "vmId"}


def _echoed(props: dict[str, Any]) -> dict[str, Any]:
    """The properties a VM's answers repeat: as Azure, never ``osProfile.adminPassword``."""
    extra = {k: v for k, v in props.items() if k not in _NOT_ECHOED}
    profile = extra.get("osProfile")
    if isinstance(profile, dict):
        extra["osProfile"] = {k: v for k, v in profile.items() if k != "adminPassword"}
    return extra


def attach_check(disk: Disk, vm_name: str, now: float) -> None:
    if disk.attached_to is not None and disk.attached_to.name.lower() != vm_name.lower():
        raise not_allowed(f"Disk '{disk.name}' is already attached to VM '{disk.attached_to.id}'.")
    state = disk.state(now)
    if state in {"ActiveSAS", "ActiveUpload", "ReadyToUpload"}:
        raise not_allowed(f"Disk '{disk.name}' is in state '{state}' and cannot be attached.")
    if disk.provisioning_state != "Succeeded":
        raise not_allowed(f"Disk '{disk.name}' is still being provisioned.")


def attach(store: Store, vm: VirtualMachine, disk: Disk, at: float) -> None:
    disk.attached_to = vm
    store.record("disk.attached", at, disk.id, vm=vm.id)


def detach(store: Store, disk: Disk, at: float, delete: bool = False) -> None:
    vm = disk.attached_to
    disk.attached_to = None
    store.record("disk.detached", at, disk.id, vm=vm.id if vm else None)
    if delete:
        store.remove_disk(disk, at)


def _managed_disk(ctx: ArmContext, spec: dict[str, Any], what: str) -> Disk:
    disk_id = (spec.get("managedDisk") or {}).get("id")
    if not disk_id:
        raise bad_request(f"Required parameter '{what}.managedDisk.id' is missing (null).")
    found = ctx.store.by_id(disk_id)
    if not isinstance(found, Disk):
        raise ArmError(404, "NotFound", f"Disk '{disk_id}' was not found.")
    return found


def _size_gb(spec: dict[str, Any], what: str, default: int | None = None) -> int:
    size = spec.get("diskSizeGB", default)
    if not isinstance(size, int) or size <= 0:
        raise bad_request(f"Required parameter '{what}.diskSizeGB' is missing or not positive.")
    return size


class _Plan:
    """Disks a PUT will attach or create, checked before anything changes."""

    def __init__(self) -> None:
        self.attach: list[tuple[int | None, Disk, dict[str, Any]]] = []
        self.create: list[tuple[int | None, str, int, dict[str, Any]]] = []


def _plan_disks(ctx: ArmContext, vm_name: str, storage: dict[str, Any], with_os: bool) -> _Plan:
    plan = _Plan()
    now = ctx.now
    if with_os:
        os_spec = storage.get("osDisk")
        if not isinstance(os_spec, dict):
            raise bad_request("Required parameter 'osDisk' is missing (null).")
        option = str(os_spec.get("createOption", "")).lower()
        if option == "attach":
            # As Azure: an attached OS disk already holds its OS; no image, no OS profile.
            if storage.get("imageReference"):
                raise bad_request("Parameter 'imageReference' is not allowed.")
            disk = _managed_disk(ctx, os_spec, "osDisk")
            attach_check(disk, vm_name, now)
            plan.attach.append((None, disk, os_spec))
        elif option == "fromimage":
            name = os_spec.get("name") or f"{vm_name}_OsDisk_1_{uuid.uuid4().hex}"
            size = _size_gb(os_spec, "osDisk", DEFAULT_OS_DISK_GB)
            plan.create.append((None, name, size, os_spec))
        else:
            raise bad_request("osDisk.createOption must be 'Attach' or 'FromImage'.")
    seen: set[int] = set()
    for spec in storage.get("dataDisks") or []:
        lun = spec.get("lun")
        if not isinstance(lun, int) or lun < 0 or lun in seen:
            raise bad_request("Every data disk needs a distinct 'lun' >= 0.")
        seen.add(lun)
        option = str(spec.get("createOption", "")).lower()
        if option == "attach":
            disk = _managed_disk(ctx, spec, f"dataDisks[{lun}]")
            attach_check(disk, vm_name, now)
            plan.attach.append((lun, disk, spec))
        elif option == "empty":
            name = spec.get("name") or f"{vm_name}_DataDisk_{lun}"
            plan.create.append((lun, name, _size_gb(spec, f"dataDisks[{lun}]"), spec))
        else:
            raise bad_request(f"dataDisks[{lun}].createOption must be 'Attach' or 'Empty'.")
    for _, name, _, _ in plan.create:
        if key(ctx.resource_group, name) in ctx.store.disks:
            raise ArmError(409, "Conflict", f"Disk '{name}' already exists.")
    attached = [disk.id.lower() for _, disk, _ in plan.attach]
    if len(set(attached)) != len(attached):
        raise bad_request("A disk can be attached to a VM only once.")
    return plan


async def get(ctx: ArmContext) -> web.Response:
    vm = ctx.store.vm(ctx.resource_group, ctx.name)
    expand = ctx.request.query.get("$expand", "").lower() == "instanceview"
    return ok(vm.to_json(ctx.now, instance_view=expand))


async def get_nic(ctx: ArmContext) -> web.Response:
    ctx.store.resource_group(ctx.resource_group)
    nic = ctx.store.nics.get(key(ctx.resource_group, ctx.name))
    if nic is None:
        raise not_found("Microsoft.Network/networkInterfaces", ctx.name, ctx.resource_group)
    return ok(nic.to_json())


def _plan_nics(ctx: ArmContext, vm_name: str, props: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(name, subnet ID, delete with the VM) of each NIC a new VM's network profile asks
    for (``networkInterfaceConfigurations``); checked before anything changes."""
    configs = (props.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []
    planned: list[tuple[str, str, bool]] = []
    for config in configs:
        name = config.get("name")
        ip_configs = (config.get("properties") or {}).get("ipConfigurations") or []
        subnet = (
            ((ip_configs[0].get("properties") or {}).get("subnet") or {}).get("id")
            if (ip_configs)
            else None
        )
        if not name or not subnet:
            raise bad_request(
                "Each networkInterfaceConfiguration needs a name and an ipConfiguration "
                "with a subnet id."
            )
        if key(ctx.resource_group, name) in ctx.store.nics:
            raise ArmError(409, "Conflict", f"Network interface '{name}' already exists.")
        delete = str((config.get("properties") or {}).get("deleteOption", "Detach")) == "Delete"
        planned.append((name, subnet, delete))
    return planned


async def instance_view(ctx: ArmContext) -> web.Response:
    return ok(ctx.store.vm(ctx.resource_group, ctx.name).instance_view(ctx.now))


async def list_group(ctx: ArmContext) -> web.Response:
    group = ctx.store.resource_group(ctx.resource_group).name.lower()
    now = ctx.now
    vms = [vm.to_json(now) for k, vm in ctx.store.vms.items() if k[0] == group]
    return ok({"value": vms})


async def list_all(ctx: ArmContext) -> web.Response:
    now = ctx.now
    return ok({"value": [vm.to_json(now) for vm in ctx.store.vms.values()]})


async def put(ctx: ArmContext) -> web.Response:
    group = ctx.store.resource_group(ctx.resource_group)
    body = await ctx.body()
    existing = ctx.store.vms.get(key(ctx.resource_group, ctx.name))
    if existing is not None:
        return await _update(ctx, existing, body)
    location = body.get("location")
    if not location:
        raise bad_request("The 'location' property is required.", code="LocationRequired")
    props = body.get("properties") or {}
    storage = props.get("storageProfile")
    if not isinstance(storage, dict):
        raise bad_request("Required parameter 'storageProfile' is missing (null).")
    plan = _plan_disks(ctx, ctx.name, storage, with_os=True)
    os_option = str((storage.get("osDisk") or {}).get("createOption", "")).lower()
    if os_option == "attach" and props.get("osProfile"):
        raise bad_request("Parameter 'osProfile' is not allowed.")
    nic_plan = _plan_nics(ctx, ctx.name, props)
    now = ctx.now
    store = ctx.store
    disks: dict[int | None, tuple[Disk, dict[str, Any]]] = {}
    for lun, disk, spec in plan.attach:
        disks[lun] = (disk, spec)
    for lun, name, size_gb, spec in plan.create:
        os_type = (spec.get("osType") or "Linux") if lun is None else None
        disk = store.new_disk(
            group.name,
            name,
            location=location,
            size=size_gb * GIB,
            sku=(spec.get("managedDisk") or {}).get("storageAccountType") or "Premium_LRS",
            create_option="FromImage" if lun is None else "Empty",
            os_type=os_type,
        )
        disks[lun] = (disk, spec)
    os_disk, os_spec = disks.pop(None)
    if os_disk.os_type is None:
        os_disk.os_type = os_spec.get("osType") or "Linux"
    vm = VirtualMachine(
        resource_group=group.name,
        name=ctx.name,
        location=location,
        vm_size=(props.get("hardwareProfile") or {}).get("vmSize") or DEFAULT_VM_SIZE,
        vm_id=str(uuid.uuid4()),
        os_disk=os_disk,
        created=now,
        power="starting",
        os_disk_create_option=os_spec.get("createOption", "Attach"),
        os_disk_delete_option=os_spec.get("deleteOption", "Detach"),
        data_disks=[
            DataDisk(
                lun=lun,
                disk=disk,
                create_option=spec.get("createOption", "Attach"),
                caching=spec.get("caching", "None"),
                delete_option=spec.get("deleteOption", "Detach"),
            )
            for lun, (disk, spec) in sorted(disks.items(), key=lambda item: item[0] or 0)
            if lun is not None
        ],
        provisioning_state="Creating",
        extra=_echoed(props),
        tags=dict(body.get("tags") or {}),
    )
    for name, subnet, delete in nic_plan:
        nic = NetworkInterface(
            group.name, name, location, subnet, store.next_address(), vm.id, delete
        )
        store.nics[key(group.name, name)] = nic
        vm.nics.append(nic)
    store.vms[key(group.name, ctx.name)] = vm
    store.record("vm.created", now, vm.id)
    for disk in vm.disks():
        attach(store, vm, disk, now)

    def complete(at: float) -> None:
        vm.provisioning_state = "Succeeded"
        if vm.power_operation == op.id:
            vm.power_operation = None
            store.set_power(vm, "running", at, op.id)

    def abort(at: float) -> None:
        vm.provisioning_state = "Failed"
        if vm.power_operation == op.id:
            vm.power_operation = None
            store.set_power(vm, "stopped", at, op.id)

    op = store.start_operation(
        "virtualMachines/create",
        location=location,
        resource_id=vm.id,
        duration=ctx.duration("virtualMachines/create"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    vm.power_operation = op.id
    store.record("vm.power", now, vm.id, **{"from": None, "to": "starting"}, operation=op.id)
    return accepted(ctx, op, status=201, body=vm.to_json(now), location=False)


async def patch(ctx: ArmContext) -> web.Response:
    """``virtualMachines/update``: as a PUT of an existing VM, on the fields given."""
    existing = ctx.store.vms.get(key(ctx.resource_group, ctx.name))
    if existing is None:
        raise not_found("Microsoft.Compute/virtualMachines", ctx.name, ctx.resource_group)
    return await _update(ctx, existing, await ctx.body())


async def _update(ctx: ArmContext, vm: VirtualMachine, body: dict[str, Any]) -> web.Response:
    if vm.provisioning_state in {"Creating", "Deleting"}:
        raise ArmError(409, "Conflict", f"VM '{vm.name}' is {vm.provisioning_state.lower()}.")
    store = ctx.store
    now = ctx.now
    props = body.get("properties") or {}
    storage = props.get("storageProfile")
    attach_now: list[tuple[int, Disk, dict[str, Any]]] = []
    detach_now: list[DataDisk] = []
    swap: Disk | None = None
    create: list[tuple[int, str, int, dict[str, Any]]] = []
    if isinstance(storage, dict):
        os_id = ((storage.get("osDisk") or {}).get("managedDisk") or {}).get("id")
        if os_id and os_id.lower() != vm.os_disk.id.lower():
            if vm.power != "deallocated":
                raise not_allowed("Swapping the OS disk requires the VM to be deallocated.")
            swap = _managed_disk(ctx, storage["osDisk"], "osDisk")
            attach_check(swap, vm.name, now)
        if "dataDisks" in storage:
            current = {d.lun: d for d in vm.data_disks}
            wanted = {spec.get("lun"): spec for spec in storage.get("dataDisks") or []}
            new_specs = {"dataDisks": [s for lun, s in wanted.items() if lun not in current]}
            plan = _plan_disks(ctx, vm.name, new_specs, with_os=False)
            for lun, data in current.items():
                spec = wanted.get(lun)
                if spec is None or spec.get("toBeDetached"):
                    detach_now.append(data)
                    continue
                disk_id = (spec.get("managedDisk") or {}).get("id")
                if disk_id and disk_id.lower() != data.disk.id.lower():
                    raise not_allowed(f"Lun {lun} already holds disk '{data.disk.name}'.")
            attach_now = [(lun, d, s) for lun, d, s in plan.attach if lun is not None]
            create = [(lun, n, g, s) for lun, n, g, s in plan.create if lun is not None]
    for data in detach_now:
        vm.data_disks.remove(data)
        detach(store, data.disk, now)
    for lun, name, size_gb, spec in create:
        disk = store.new_disk(vm.resource_group, name, location=vm.location, size=size_gb * GIB)
        attach_now.append((lun, disk, spec))
    for lun, disk, spec in attach_now:
        vm.data_disks.append(
            DataDisk(lun, disk, spec.get("createOption", "Attach"), spec.get("caching", "None"))
        )
        attach(store, vm, disk, now)
    if swap is not None:
        detach(store, vm.os_disk, now)
        vm.os_disk = swap
        attach(store, vm, swap, now)
    size = (props.get("hardwareProfile") or {}).get("vmSize")
    if size:
        vm.vm_size = size
    if "tags" in body:
        vm.tags = dict(body.get("tags") or {})
    vm.provisioning_state = "Updating"

    def complete(at: float) -> None:
        vm.provisioning_state = "Succeeded"

    op = store.start_operation(
        "virtualMachines/update",
        location=vm.location,
        resource_id=vm.id,
        duration=ctx.duration("virtualMachines/update"),
        complete=complete,
        abort=complete,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op, status=200, body=vm.to_json(now), location=False)


def _preempt(store: Store, vm: VirtualMachine, now: float) -> None:
    if vm.power_operation is None:
        return
    old = store.operations.get(vm.power_operation)
    if old is not None and old.status == "InProgress":
        store.fail(
            old,
            now,
            "OperationPreempted",
            "Operation execution has been preempted by a more recent operation.",
        )
    vm.power_operation = None


async def delete(ctx: ArmContext) -> web.Response:
    store = ctx.store
    store.resource_group(ctx.resource_group)
    vm = store.vms.get(key(ctx.resource_group, ctx.name))
    if vm is None:
        return web.Response(status=204)
    if vm.provisioning_state == "Deleting":
        raise ArmError(409, "Conflict", f"VM '{vm.name}' is already being deleted.")
    now = ctx.now
    _preempt(store, vm, now)
    vm.provisioning_state = "Deleting"

    def complete(at: float) -> None:
        store.set_power(vm, "deallocated", at, op.id)
        if store.vms.get(key(vm.resource_group, vm.name)) is vm:
            del store.vms[key(vm.resource_group, vm.name)]
        detach(store, vm.os_disk, at, delete=vm.os_disk_delete_option.lower() == "delete")
        for data in vm.data_disks:
            detach(store, data.disk, at, delete=data.delete_option.lower() == "delete")
        for nic in vm.nics:
            if nic.delete_with_vm and store.nics.get(key(nic.resource_group, nic.name)) is nic:
                del store.nics[key(nic.resource_group, nic.name)]
        store.record("vm.deleted", at, vm.id)

    def abort(at: float) -> None:
        vm.provisioning_state = "Failed"

    op = store.start_operation(
        "virtualMachines/delete",
        location=vm.location,
        resource_id=vm.id,
        duration=ctx.duration("virtualMachines/delete"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    vm.power_operation = op.id
    if vm.power != "deallocated":
        store.set_power(vm, "deallocating", now, op.id)
    return accepted(ctx, op)


_ACTIONS: dict[str, tuple[str, str, frozenset[str], frozenset[str]]] = {
    # action: (transient, final, refused from, no-op from)
    "poweroff": (
        "stopping",
        "stopped",
        frozenset({"deallocated", "deallocating"}),
        frozenset({"stopped"}),
    ),
    "deallocate": ("deallocating", "deallocated", frozenset(), frozenset({"deallocated"})),
    "start": ("starting", "running", frozenset(), frozenset({"running"})),
    "restart": (
        "starting",
        "running",
        frozenset({"deallocated", "deallocating", "stopped"}),
        frozenset(),
    ),
}
ACTION_NAMES = {
    "poweroff": "powerOff",
    "deallocate": "deallocate",
    "start": "start",
    "restart": "restart",
}


async def power_action(ctx: ArmContext) -> web.Response:
    assert ctx.path.action is not None
    action = ctx.path.action.lower()
    transient, final, refused, noop_from = _ACTIONS[action]
    name = ACTION_NAMES[action]
    store = ctx.store
    vm = store.vm(ctx.resource_group, ctx.name)
    if vm.provisioning_state in {"Creating", "Deleting"}:
        raise ArmError(
            409,
            "Conflict",
            f"Operation '{name}' is not allowed while the VM is {vm.provisioning_state.lower()}.",
        )
    if vm.power in refused:
        raise not_allowed(
            f"Operation '{name}' is not allowed on VM '{vm.name}' since the VM is {vm.power}."
        )
    now = ctx.now
    _preempt(store, vm, now)
    before = vm.power
    noop = before in noop_from
    vm.provisioning_state = "Updating"

    def complete(at: float) -> None:
        vm.provisioning_state = "Succeeded"
        if vm.power_operation == op.id:
            vm.power_operation = None
            store.set_power(vm, final, at, op.id)

    def abort(at: float) -> None:
        vm.provisioning_state = "Succeeded"
        if vm.power_operation == op.id:
            vm.power_operation = None
            store.set_power(vm, before, at, op.id)

    op = store.start_operation(
        f"virtualMachines/{name}",
        location=vm.location,
        resource_id=vm.id,
        duration=0.0 if noop else ctx.duration(f"virtualMachines/{name}"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    vm.power_operation = op.id
    if not noop:
        store.set_power(vm, transient, now, op.id)
    return accepted(ctx, op)


def seed_vm(
    store: Store,
    resource_group: str,
    name: str,
    *,
    location: str,
    power: str,
    os_disk: Disk,
    data_disks: list[Disk],
    vm_size: str = DEFAULT_VM_SIZE,
) -> VirtualMachine:
    """A VM that exists already, in ``power`` state (for the control API)."""
    now = store.clock.now()
    vm = VirtualMachine(
        resource_group=store.resource_group(resource_group).name,
        name=name,
        location=location,
        vm_size=vm_size,
        vm_id=str(uuid.uuid4()),
        os_disk=os_disk,
        created=now,
        power=power,
        data_disks=[DataDisk(lun, disk) for lun, disk in enumerate(data_disks)],
    )
    for disk in vm.disks():
        attach_check(disk, name, now)
    store.vms[key(resource_group, name)] = vm
    store.record("vm.created", now, vm.id, source="control")
    store.record("vm.power", now, vm.id, **{"from": None, "to": power}, source="control")
    for disk in vm.disks():
        attach(store, vm, disk, now)
    return vm
