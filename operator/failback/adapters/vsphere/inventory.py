"""Reading vCenter through the PropertyCollector, with one fixed property list per type.

A pass reads the whole inventory in *one* ``RetrievePropertiesEx`` over a container view
(plus continuation pages for very large inventories), never attribute by attribute: no
lazy pyVmomi property access happens on managed objects here (each would be a round trip).
The results become the plain facts of :mod:`failback.domain.vsphere`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from failback.domain import vsphere as vs

# pyVmomi's stubs leave its data-object constructors untyped: the adapter handles its
# objects as dynamic data and types what it returns (the domain's dataclasses).
vim: Any = _vim
vmodl: Any = _vmodl

VM_PROPERTIES: Final = (
    "name",
    "parent",
    "config.instanceUuid",
    "config.uuid",
    "config.template",
    "config.guestId",
    "config.extraConfig",
    "config.hardware.device",
    "runtime.powerState",
    "runtime.host",
    "guest.guestFamily",
    "guest.guestFullName",
    "guest.toolsRunningStatus",
    "guest.toolsVersionStatus2",
    "snapshot",
    "datastore",
)
HOST_PROPERTIES: Final = (
    "name",
    "parent",
    "summary.config.product",
    "datastore",
    "runtime.connectionState",
)
DATASTORE_PROPERTIES: Final = ("name", "summary", "host")
DATACENTER_PROPERTIES: Final = ("name", "vmFolder", "hostFolder")
FOLDER_PROPERTIES: Final = ("name", "parent")
COMPUTE_PROPERTIES: Final = ("name", "host", "resourcePool")
NETWORK_PROPERTIES: Final = ("name",)

PROPERTIES: Final[Mapping[type, tuple[str, ...]]] = {
    vim.VirtualMachine: VM_PROPERTIES,
    vim.HostSystem: HOST_PROPERTIES,
    vim.Datastore: DATASTORE_PROPERTIES,
    vim.Datacenter: DATACENTER_PROPERTIES,
    vim.Folder: FOLDER_PROPERTIES,
    vim.ComputeResource: COMPUTE_PROPERTIES,
    vim.Network: NETWORK_PROPERTIES,
}
"""What one pass reads of each type, and nothing else."""

REQUIRED_PRIVILEGES: Final = (
    "System.View",
    "Datastore.Browse",
    "Datastore.AllocateSpace",
    "Datastore.FileManagement",
    "Network.Assign",
    "Resource.AssignVMToPool",
    "VirtualMachine.Config.AddExistingDisk",
    "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.RemoveDisk",
    "VirtualMachine.Config.AdvancedConfig",
    "VirtualMachine.Interact.PowerOn",
    "VirtualMachine.Interact.PowerOff",
    "VirtualMachine.Inventory.Create",
    "VirtualMachine.Inventory.Register",
)
"""What the vCenter account needs on each datacenter to discover datastores and fail VMs
back (R-PRE-1): a read-only account lacks most of them."""


def moid(ref: Any) -> str | None:
    return getattr(ref, "_moId", None) if ref is not None else None


def view_spec(view: Any) -> Any:
    """One filter: every object of the container view, each type with its fixed list."""
    traverse = vmodl.query.PropertyCollector.TraversalSpec(
        name="view", type=vim.view.ContainerView, path="view", skip=False
    )
    return vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
        ],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(type=t, all=False, pathSet=list(paths))
            for t, paths in PROPERTIES.items()
        ],
    )


def object_spec(obj: Any, paths: Sequence[str]) -> Any:
    """One filter for one object and its fixed property list."""
    return vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=type(obj), all=False, pathSet=list(paths)
            )
        ],
    )


def retrieve(collector: Any, spec: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(object, {path: value}) for every object ``spec`` selects, following continuation
    pages."""
    options = vmodl.query.PropertyCollector.RetrieveOptions()
    result = collector.RetrievePropertiesEx(specSet=[spec], options=options)
    out: list[tuple[Any, dict[str, Any]]] = []
    while result is not None:
        for content in result.objects or ():
            out.append((content.obj, {p.name: p.val for p in content.propSet or ()}))
        token = result.token
        result = collector.ContinueRetrievePropertiesEx(token=token) if token else None
    return out


# ------------------------------------------------------------------ conversion

_CONTROLLERS: Final[tuple[tuple[type, vs.ControllerKind], ...]] = (
    (vim.vm.device.ParaVirtualSCSIController, vs.ControllerKind.PARAVIRTUAL),
    (vim.vm.device.VirtualLsiLogicSASController, vs.ControllerKind.LSI_LOGIC_SAS),
    (vim.vm.device.VirtualLsiLogicController, vs.ControllerKind.LSI_LOGIC),
    (vim.vm.device.VirtualBusLogicController, vs.ControllerKind.BUS_LOGIC),
)


def _controller(dev: Any) -> vs.Controller | None:
    if not isinstance(dev, vim.vm.device.VirtualController):
        return None
    if isinstance(dev, vim.vm.device.VirtualPCIController | vim.vm.device.VirtualPS2Controller):
        return None
    if isinstance(dev, vim.vm.device.VirtualSIOController):
        return None
    kind = next((k for t, k in _CONTROLLERS if isinstance(dev, t)), vs.ControllerKind.OTHER)
    label = dev.deviceInfo.label if dev.deviceInfo else f"controller {dev.key}"
    return vs.Controller(key=dev.key, kind=kind, bus_number=dev.busNumber, label=label)


def _disk(dev: Any, datastore_names: Mapping[str, str]) -> vs.Disk | None:
    if not isinstance(dev, vim.vm.device.VirtualDisk):
        return None
    backing = dev.backing
    file_name = getattr(backing, "fileName", "") or ""
    ds = datastore_names.get(moid(getattr(backing, "datastore", None)) or "")
    if ds is None and file_name.startswith("["):
        ds = file_name[1 : file_name.index("]")]
    capacity = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
    return vs.Disk(
        key=dev.key,
        label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
        file_name=file_name,
        datastore=ds,
        uuid=getattr(backing, "uuid", None),
        capacity_bytes=capacity,
        controller_key=dev.controllerKey,
        unit_number=dev.unitNumber,
    )


def _snapshot_names(info: Any) -> tuple[str, ...]:
    names: list[str] = []

    def walk(trees: Iterable[Any]) -> None:
        for tree in trees:
            names.append(tree.name)
            walk(tree.childSnapshotList or ())

    if info is not None:
        walk(info.rootSnapshotList or ())
    return tuple(names)


def to_vm(obj: Any, props: Mapping[str, Any], datastore_names: Mapping[str, str]) -> vs.VM | None:
    """A VM's facts; None for a VM that has no configuration yet (being created)."""
    uuid = props.get("config.instanceUuid")
    if not uuid:
        return None
    devices = props.get("config.hardware.device") or ()
    controllers = tuple(c for c in (_controller(d) for d in devices) if c)
    disks = tuple(d for d in (_disk(x, datastore_names) for x in devices) if d)
    power = props.get("runtime.powerState")
    return vs.VM(
        moref=moid(obj) or "",
        name=props.get("name") or "",
        instance_uuid=uuid,
        bios_uuid=props.get("config.uuid"),
        template=bool(props.get("config.template")),
        power_state=vs.PowerState(power) if power else vs.PowerState.OFF,
        host=moid(props.get("runtime.host")),
        guest_id=props.get("config.guestId"),
        guest_family=props.get("guest.guestFamily"),
        guest_full_name=props.get("guest.guestFullName"),
        tools_running=props.get("guest.toolsRunningStatus"),
        tools_version_status=props.get("guest.toolsVersionStatus2"),
        snapshots=_snapshot_names(props.get("snapshot")),
        extra_config=tuple(
            (o.key, str(o.value)) for o in props.get("config.extraConfig") or () if o.key
        ),
        controllers=controllers,
        disks=disks,
        datastores=tuple(m for m in (moid(d) for d in props.get("datastore") or ()) if m),
        folder=moid(props.get("parent")),
    )


def to_host(obj: Any, props: Mapping[str, Any], license: vs.License | None) -> vs.Host:
    product = props.get("summary.config.product")
    return vs.Host(
        moref=moid(obj) or "",
        name=props.get("name") or "",
        product=getattr(product, "fullName", None),
        version=getattr(product, "version", None),
        license=license,
        datastores=tuple(m for m in (moid(d) for d in props.get("datastore") or ()) if m),
        connection_state=props.get("runtime.connectionState"),
        parent=moid(props.get("parent")),
    )


def to_datastore(obj: Any, props: Mapping[str, Any]) -> vs.Datastore:
    summary = props.get("summary")
    mounts = tuple(
        vs.Mount(
            host=moid(m.key) or "",
            access_mode=getattr(m.mountInfo, "accessMode", None),
            mounted=getattr(m.mountInfo, "mounted", None),
            accessible=getattr(m.mountInfo, "accessible", None),
        )
        for m in props.get("host") or ()
    )
    return vs.Datastore(
        moref=moid(obj) or "",
        name=props.get("name") or "",
        type=getattr(summary, "type", None) or "",
        capacity_bytes=int(getattr(summary, "capacity", 0) or 0),
        free_bytes=int(getattr(summary, "freeSpace", 0) or 0),
        accessible=bool(getattr(summary, "accessible", False)),
        mounts=mounts,
        maintenance_mode=getattr(summary, "maintenanceMode", None),
    )


def build(
    server: str,
    rows: Sequence[tuple[Any, dict[str, Any]]],
    licenses: Mapping[str, vs.License],
    missing: Mapping[str, tuple[str, ...]],
) -> vs.Inventory:
    """The inventory from one PropertyCollector read, the licence assignments (by entity
    moref) and the privileges the session lacks (by entity moref)."""
    datastores = [to_datastore(o, p) for o, p in rows if isinstance(o, vim.Datastore)]
    names = {d.moref: d.name for d in datastores}
    vms = [to_vm(o, p, names) for o, p in rows if isinstance(o, vim.VirtualMachine)]
    return vs.Inventory(
        vms=tuple(v for v in vms if v),
        hosts=tuple(
            to_host(o, p, licenses.get(moid(o) or ""))
            for o, p in rows
            if isinstance(o, vim.HostSystem)
        ),
        datastores=tuple(datastores),
        datacenters=tuple(
            vs.Datacenter(
                moref=moid(o) or "",
                name=p.get("name") or "",
                vm_folder=moid(p.get("vmFolder")),
                host_folder=moid(p.get("hostFolder")),
            )
            for o, p in rows
            if isinstance(o, vim.Datacenter)
        ),
        compute=tuple(
            vs.ComputeResource(
                moref=moid(o) or "",
                name=p.get("name") or "",
                cluster=isinstance(o, vim.ClusterComputeResource),
                hosts=tuple(m for m in (moid(h) for h in p.get("host") or ()) if m),
                resource_pool=moid(p.get("resourcePool")),
            )
            for o, p in rows
            if isinstance(o, vim.ComputeResource)
        ),
        folders=tuple(
            vs.Folder(moref=moid(o) or "", name=p.get("name") or "", parent=moid(p.get("parent")))
            for o, p in rows
            if isinstance(o, vim.Folder)
        ),
        networks=tuple(
            vs.Network(moref=moid(o) or "", name=p.get("name") or "")
            for o, p in rows
            if isinstance(o, vim.Network)
        ),
        missing_privileges=tuple(sorted(missing.items())),
        server=server,
    )
