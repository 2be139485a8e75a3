"""The vSphere operations failback needs, each idempotent, each blocking (run them through
``Client.call``). An operation first reads the state it would change (fixed property
lists through the PropertyCollector) and does nothing when it is reached already; else it
starts one vSphere task and returns its moref at once, so the caller stores it in status
and a restart resumes waiting for *that* task instead of starting a second one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from failback.adapters.vsphere import faults, inventory
from failback.ports.vsphere import (
    ChangedArea,
    DiskChangeInfo,
    NewDisk,
    NewVM,
    NotFound,
    SnapshotDisk,
    SnapshotInfo,
    TaskState,
    VSphereFault,
)

# pyVmomi's stubs leave its data-object constructors untyped: the adapter handles its
# objects as dynamic data and types what it returns (the domain's dataclasses).
vim: Any = _vim
vmodl: Any = _vmodl

SCSI_UNITS = tuple(u for u in range(16) if u != 7)
"""Unit numbers a SCSI controller offers to disks (7 is the controller itself)."""
MAX_SCSI_CONTROLLERS = 4


def props(content: Any, obj: Any, paths: Sequence[str]) -> dict[str, Any]:
    """One object's properties ``paths``, in one PropertyCollector read."""
    rows = inventory.retrieve(content.propertyCollector, inventory.object_spec(obj, paths))
    return rows[0][1] if rows else {}


def find_vm(content: Any, instance_uuid: str) -> Any:
    """The VM with this instance UUID (never a name), or None."""
    return content.searchIndex.FindByUuid(
        datacenter=None, uuid=instance_uuid, vmSearch=True, instanceUuid=True
    )


def require_vm(content: Any, instance_uuid: str) -> Any:
    vm = find_vm(content, instance_uuid)
    if vm is None:
        raise NotFound(f"vCenter has no VM with instance UUID {instance_uuid}")
    return vm


def stub_of(content: Any) -> Any:
    """The SOAP stub of the session ``content`` belongs to."""
    return content.rootFolder._stub


def managed_entity(content: Any, moref: str) -> Any:
    """A managed entity by moref (``vm-42``, ``datacenter-2``...)."""
    prefixes = {
        "vm-": vim.VirtualMachine,
        "host-": vim.HostSystem,
        "datastore-": vim.Datastore,
        "datacenter-": vim.Datacenter,
        "domain-c": vim.ClusterComputeResource,
        "domain-s": vim.ComputeResource,
        "group-": vim.Folder,
        "network-": vim.Network,
        "dvportgroup-": vim.dvs.DistributedVirtualPortgroup,
        "resgroup-": vim.ResourcePool,
    }
    cls = next((t for p, t in prefixes.items() if moref.startswith(p)), vim.ManagedEntity)
    return cls(moref, stub_of(content))


def datastore_names(content: Any, datastores: Iterable[Any]) -> dict[str, str]:
    out = {}
    for ds in datastores:
        out[inventory.moid(ds) or ""] = props(content, ds, ("name",)).get("name") or ""
    return out


def _task(task: Any) -> TaskState:
    return TaskState(moref=task._moId, state="queued")


def task_state(content: Any, moref: str) -> TaskState:
    """A task's state now, in one read of ``info``."""
    info = props(content, vim.Task(moref, stub_of(content)), ("info",)).get("info")
    if info is None:
        raise NotFound(f"vCenter has no task {moref} (any more)")
    result = info.result
    return TaskState(
        moref=moref,
        state=str(info.state),
        error=faults.message_of(info.error) if info.error is not None else None,
        result=inventory.moid(result) if hasattr(result, "_moId") else None,
        progress=info.progress,
    )


# ------------------------------------------------------------------ power


def power(content: Any, instance_uuid: str, *, on: bool) -> TaskState | None:
    vm = require_vm(content, instance_uuid)
    wanted = "poweredOn" if on else "poweredOff"
    if props(content, vm, ("runtime.powerState",)).get("runtime.powerState") == wanted:
        return None
    try:
        return _task(vm.PowerOnVM_Task() if on else vm.PowerOffVM_Task())
    except vim.fault.InvalidPowerState as exc:
        if faults.already_in_state(exc, wanted):
            return None
        raise


# ------------------------------------------------------------------ names in a datacenter


def _named(content: Any, root: Any, kind: type, name: str) -> Any:
    """The object of ``kind`` called ``name`` under ``root`` (one view, one read)."""
    view = content.viewManager.CreateContainerView(root, [kind], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            name="view", type=vim.view.ContainerView, path="view", skip=False
                        )
                    ],
                )
            ],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=["name"])],
        )
        for obj, values in inventory.retrieve(content.propertyCollector, spec):
            if values.get("name") == name:
                return obj
    finally:
        view.DestroyView()
    raise NotFound(f"no {kind.__name__.split('.')[-1]} named {name}")


def _datacenter(content: Any, name: str) -> Any:
    dc = content.searchIndex.FindByInventoryPath(name)
    if not isinstance(dc, vim.Datacenter):
        raise NotFound(f"vCenter has no datacenter {name}")
    return dc


def _folder(content: Any, dc_name: str, dc: Any, path: str | None) -> Any:
    if not path:
        return props(content, dc, ("vmFolder",))["vmFolder"]
    folder = content.searchIndex.FindByInventoryPath(f"{dc_name}/vm/{path.strip('/')}")
    if not isinstance(folder, vim.Folder):
        raise NotFound(f"datacenter {dc_name} has no VM folder {path}")
    return folder


def _nic(content: Any, network: Any, key: int) -> Any:
    nic = vim.vm.device.VirtualVmxnet3(key=key)
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        values = props(content, network, ("key", "config.distributedVirtualSwitch"))
        switch = values["config.distributedVirtualSwitch"]
        uuid = props(content, switch, ("uuid",))["uuid"]
        nic.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey=values["key"], switchUuid=uuid)
        )
    else:
        name = props(content, network, ("name",))["name"]
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=name, network=network
        )
    nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True)
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)


def _disk_spec(
    file_name: str, controller: int, unit: int, new: NewDisk | None, size: int | None = None
) -> Any:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=file_name, diskMode="persistent"
    )
    disk = vim.vm.device.VirtualDisk(
        key=-(1000 + controller * 16 + unit),
        backing=backing,
        controllerKey=controller,
        unitNumber=unit,
    )
    spec = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
    if new is not None:
        backing.thinProvisioned = new.thin
        disk.capacityInKB = -(-new.capacity_bytes // 1024)
        disk.capacityInBytes = new.capacity_bytes
        spec.fileOperation = "create"
    elif size:
        # An existing disk: vSphere reads its size from the descriptor and ignores these;
        # vcsim, which writes no descriptor, keeps them (else it reports 0 bytes).
        disk.capacityInKB = -(-size // 1024)
        disk.capacityInBytes = size
    return spec


def _slots(devices: Sequence[Any], wanted: int) -> tuple[list[Any], list[tuple[int, int]]]:
    """New LSI Logic SAS controllers to add (if needed) and ``wanted`` (controller key,
    unit) slots for disks, first on existing non-IDE controllers."""
    scsi = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    used = {(d.controllerKey, d.unitNumber) for d in devices if hasattr(d, "controllerKey")}
    slots = [
        (c.key, u)
        for c in sorted(scsi, key=lambda c: c.busNumber)
        for u in SCSI_UNITS
        if (c.key, u) not in used
    ]
    new_controllers: list[Any] = []
    buses = {c.busNumber for c in scsi}
    while len(slots) < wanted:
        bus = next((b for b in range(MAX_SCSI_CONTROLLERS) if b not in buses), None)
        if bus is None:
            raise VSphereFault(f"no free SCSI slot for {wanted} more disks (60 at most)")
        buses.add(bus)
        key = -(100 + bus)
        controller = vim.vm.device.VirtualLsiLogicSASController(
            key=key, busNumber=bus, sharedBus="noSharing"
        )
        new_controllers.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=controller))
        slots.extend((key, u) for u in SCSI_UNITS)
    return new_controllers, slots[:wanted]


# ------------------------------------------------------------------ create a VM


def create_vm(content: Any, spec: NewVM) -> TaskState | str:
    """Start creating the VM; its moref when one with ``spec.instance_uuid`` exists."""
    existing = find_vm(content, spec.instance_uuid)
    if existing is not None:
        return str(existing._moId)
    place = spec.placement
    dc = _datacenter(content, place.datacenter)
    dc_props = props(content, dc, ("hostFolder", "datastoreFolder", "networkFolder"))
    folder = _folder(content, place.datacenter, dc, place.folder)
    host = None
    if place.cluster:
        compute = _named(content, dc_props["hostFolder"], vim.ClusterComputeResource, place.cluster)
        pool = props(content, compute, ("resourcePool",))["resourcePool"]
        if place.host:
            host = _named(content, compute, vim.HostSystem, place.host)
    elif place.host:
        host = _named(content, dc_props["hostFolder"], vim.HostSystem, place.host)
        parent = props(content, host, ("parent",))["parent"]
        pool = props(content, parent, ("resourcePool",))["resourcePool"]
    else:
        raise VSphereFault("the placement names neither a host nor a cluster")
    _named(content, dc_props["datastoreFolder"], vim.Datastore, place.datastore)
    devices: list[Any] = []
    controller = vim.vm.device.VirtualLsiLogicSASController(
        key=-100, busNumber=0, sharedBus="noSharing"
    )
    devices.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=controller))
    disks: list[tuple[str, NewDisk | None]] = [(f, None) for f in spec.disk_files]
    disks += [(d.file_name, d) for d in spec.new_disks]
    fake = [controller]
    extra_controllers, slots = _slots(fake, len(disks))
    devices += extra_controllers
    sizes = dict(spec.disk_sizes or {})
    for (file_name, new), (key, unit) in zip(disks, slots, strict=True):
        devices.append(_disk_spec(file_name, key, unit, new, sizes.get(file_name)))
    for i, name in enumerate(place.networks):
        network = _named(content, dc_props["networkFolder"], vim.Network, name)
        devices.append(_nic(content, network, -200 - i))
    config = vim.vm.ConfigSpec(
        name=spec.name,
        guestId=spec.guest_id,
        numCPUs=spec.cpus,
        memoryMB=spec.memory_mib,
        files=vim.vm.FileInfo(vmPathName=f"[{place.datastore}]"),
        deviceChange=devices,
        extraConfig=[
            vim.option.OptionValue(key=k, value=v) for k, v in (spec.extra_config or {}).items()
        ],
    )
    config.instanceUuid = spec.instance_uuid
    return _task(folder.CreateVM_Task(config=config, pool=pool, host=host))


# ------------------------------------------------------------------ disks


def _devices(content: Any, vm: Any) -> list[Any]:
    return list(props(content, vm, ("config.hardware.device",)).get("config.hardware.device") or ())


def _attached(devices: Sequence[Any]) -> Mapping[str, Any]:
    return {
        d.backing.fileName: d
        for d in devices
        if isinstance(d, vim.vm.device.VirtualDisk) and getattr(d.backing, "fileName", None)
    }


def attach_disks(
    content: Any,
    instance_uuid: str,
    files: Sequence[str],
    new: Sequence[NewDisk] = (),
    sizes: Mapping[str, int] | None = None,
) -> TaskState | None:
    """Hot-add existing VMDKs and create new ones on the VM (the master target or a target
    VM); None when every one of them is attached already."""
    vm = require_vm(content, instance_uuid)
    devices = _devices(content, vm)
    attached = _attached(devices)
    wanted: list[tuple[str, NewDisk | None]] = [(f, None) for f in files if f not in attached]
    wanted += [(d.file_name, d) for d in new if d.file_name not in attached]
    if not wanted:
        return None
    controllers, slots = _slots(devices, len(wanted))
    known = dict(sizes or {})
    changes = controllers + [
        _disk_spec(name, key, unit, disk, known.get(name))
        for (name, disk), (key, unit) in zip(wanted, slots, strict=True)
    ]
    return _task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)))


def detach_disks(content: Any, instance_uuid: str, files: Sequence[str]) -> TaskState | None:
    """Remove the VMDKs from the VM, keeping the files; None when none is attached."""
    vm = require_vm(content, instance_uuid)
    attached = _attached(_devices(content, vm))
    changes = [
        vim.vm.device.VirtualDeviceSpec(operation="remove", device=attached[f])
        for f in files
        if f in attached
    ]
    if not changes:
        return None
    return _task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)))


def make_directory(content: Any, datacenter: str, path: str) -> None:
    """Create ``[datastore] folder/sub`` and its parents in ``datacenter``; nothing when it
    exists (new disks need their folder: vSphere does not create it)."""
    dc = _datacenter(content, datacenter)
    try:
        content.fileManager.MakeDirectory(name=path, datacenter=dc, createParentDirectories=True)
    except vim.fault.FileAlreadyExists:
        return


# ------------------------------------------------------------------ snapshots and CBT


def enable_change_tracking(content: Any, instance_uuid: str) -> TaskState | None:
    """Turn changed block tracking on; None when ``config.changeTrackingEnabled`` is set."""
    vm = require_vm(content, instance_uuid)
    if props(content, vm, ("config.changeTrackingEnabled",)).get("config.changeTrackingEnabled"):
        return None
    return _task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))


def _walk(trees: Iterable[Any], parent: str | None = None) -> Iterator[SnapshotInfo]:
    for tree in trees:
        created = tree.createTime
        moref = str(tree.snapshot._moId)
        yield SnapshotInfo(
            moref=moref,
            name=str(tree.name or ""),
            description=str(tree.description or ""),
            created=created.astimezone(dt.UTC) if created is not None else None,
            quiesced=bool(tree.quiesced),
            parent=parent,
        )
        yield from _walk(tree.childSnapshotList or (), moref)


def vm_snapshots(content: Any, vm: Any) -> tuple[SnapshotInfo, ...]:
    info = props(content, vm, ("snapshot",)).get("snapshot")
    return tuple(_walk(info.rootSnapshotList or ())) if info is not None else ()


def snapshots(content: Any, instance_uuid: str) -> tuple[SnapshotInfo, ...]:
    """The VM's snapshot tree, parents first (one read of ``snapshot``)."""
    return vm_snapshots(content, require_vm(content, instance_uuid))


def create_snapshot(
    content: Any, instance_uuid: str, name: str, description: str, quiesce: bool
) -> TaskState | str:
    """Start a snapshot without memory; the moref of one with this name and description
    when the VM has it already."""
    vm = require_vm(content, instance_uuid)
    for snap in vm_snapshots(content, vm):
        if snap.name == name and snap.description == description:
            return snap.moref
    return _task(
        vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=quiesce)
    )


def _snapshot(content: Any, moref: str) -> Any:
    return vim.vm.Snapshot(moref, stub_of(content))


def remove_snapshot(content: Any, moref: str) -> TaskState | None:
    """Start removing one snapshot (children kept); None when vCenter has it no more."""
    try:
        return _task(_snapshot(content, moref).RemoveSnapshot_Task(removeChildren=False))
    except vmodl.fault.ManagedObjectNotFound as exc:
        if getattr(exc.obj, "_moId", moref) != moref:
            raise
        return None


def snapshot_disks(content: Any, moref: str) -> tuple[SnapshotDisk, ...]:
    """The virtual disks as the snapshot froze them (one read of its ``config``)."""
    config = props(content, _snapshot(content, moref), ("config",)).get("config")
    if config is None:
        raise NotFound(f"snapshot {moref} reports no configuration")
    disks = []
    for dev in config.hardware.device or ():
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        capacity = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
        disks.append(
            SnapshotDisk(
                device_key=int(dev.key),
                file_name=str(getattr(backing, "fileName", "") or ""),
                uuid=getattr(backing, "uuid", None) or None,
                capacity_bytes=int(capacity),
                change_id=getattr(backing, "changeId", None) or None,
            )
        )
    return tuple(disks)


def query_changed_areas(
    content: Any,
    instance_uuid: str,
    snapshot: str,
    device_key: int,
    start_offset: int,
    change_id: str,
    server: str = "vCenter",
) -> DiskChangeInfo:
    """One ``QueryChangedDiskAreas`` answer for the disk ``device_key`` of ``snapshot``."""
    vm = require_vm(content, instance_uuid)
    try:
        info = vm.QueryChangedDiskAreas(
            snapshot=_snapshot(content, snapshot),
            deviceKey=device_key,
            startOffset=start_offset,
            changeId=change_id,
        )
    except vmodl.MethodFault as exc:
        what = f"disk {device_key} of snapshot {snapshot} since changeId {change_id!r}"
        error = faults.changed_areas_fault(exc, server, what)
        if error is None:
            raise
        raise error from exc
    return DiskChangeInfo(
        start_offset=int(info.startOffset),
        length=int(info.length),
        areas=tuple(ChangedArea(int(a.start), int(a.length)) for a in info.changedArea or ()),
    )
