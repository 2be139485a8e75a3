"""The compute operations, on azure-mgmt-compute's ``aio`` client (implements ``ports.azure``).

Every write starts a long-running operation and returns its continuation token at once
(:class:`~failback.ports.azure.OperationHandle`); :meth:`Compute.poll` resumes the poller
from the token alone and checks it once (one read), so a restarted operator never writes
twice. Every call is translated by ``faults.translate``; a bearer token ARM refuses
(expired, revoked) makes the client sign in again, once.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.core.polling import AsyncLROPoller
from azure.core.polling.base_polling import BadResponse, BadStatus, OperationFailed
from azure.core.rest import HttpRequest
from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling

from failback.adapters.azure.faults import retry_after, token_refused, translate
from failback.ports.azure import (
    AzureIdentity,
    DiskRef,
    ManagedDisk,
    OperationHandle,
    OperationKind,
    OperationStatus,
    PowerState,
    Snapshot,
    VirtualMachine,
    VMDeployment,
)

if TYPE_CHECKING:
    from azure.mgmt.compute.aio import ComputeManagementClient

    from failback.adapters.azure.clients import AzureClientsAdapter

T = TypeVar("T")
NETWORK_API_VERSION = "2024-05-01"
JSON = dict[str, Any]


def _json(model: Any) -> JSON:
    if model is None:
        return {}
    if hasattr(model, "as_dict"):
        out: JSON = model.as_dict()
        return out
    return dict(model)


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def resource_group_of(resource_id: str) -> str:
    parts = resource_id.split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1]


def vm_from_json(data: JSON) -> VirtualMachine:
    """A port VM from ARM's JSON (with or without the instance view)."""
    props = data.get("properties") or {}
    storage = props.get("storageProfile") or {}
    os_disk = storage.get("osDisk") or {}

    def ref(spec: JSON, lun: int | None) -> DiskRef:
        managed = spec.get("managedDisk") or {}
        return DiskRef(
            name=str(spec.get("name") or ""),
            id=managed.get("id"),
            lun=lun,
            vhd_uri=(spec.get("vhd") or {}).get("uri"),
        )

    statuses = (props.get("instanceView") or {}).get("statuses") or []
    power, since = PowerState.UNKNOWN, None
    for status in statuses:
        code = str(status.get("code") or "")
        if code.startswith("PowerState/"):
            value = code.split("/", 1)[1].lower()
            power = PowerState(value) if value in set(PowerState) else PowerState.UNKNOWN
        elif code.startswith("ProvisioningState/"):
            # When the last operation (a start, a create) ended: Azure's PowerState
            # status carries no time of its own.
            since = _time(status.get("time"))
    os_type = os_disk.get("osType")
    nics = (props.get("networkProfile") or {}).get("networkInterfaces") or []
    nics = sorted(nics, key=lambda n: not (n.get("properties") or {}).get("primary", False))
    return VirtualMachine(
        id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        resource_group=resource_group_of(str(data.get("id") or "/resourceGroups/?")),
        location=str(data.get("location") or ""),
        vm_size=str((props.get("hardwareProfile") or {}).get("vmSize") or ""),
        os_type=str(os_type) if os_type else None,
        os_disk=ref(os_disk, None),
        data_disks=tuple(ref(d, int(d.get("lun", 0))) for d in (storage.get("dataDisks") or [])),
        provisioning_state=str(props.get("provisioningState") or ""),
        power_state=power,
        power_since=since,
        tags=dict(data.get("tags") or {}),
        nic_ids=tuple(str(n["id"]) for n in nics if n.get("id")),
    )


def disk_from_json(data: JSON) -> ManagedDisk:
    props = data.get("properties") or {}
    return ManagedDisk(
        id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        location=str(data.get("location") or ""),
        size_bytes=int(props.get("diskSizeBytes") or (props.get("diskSizeGB") or 0) << 30),
        disk_state=str(props.get("diskState") or ""),
        managed_by=data.get("managedBy"),
        os_type=props.get("osType"),
        provisioning_state=str(props.get("provisioningState") or ""),
        tags=dict(data.get("tags") or {}),
    )


def snapshot_from_json(data: JSON) -> Snapshot:
    props = data.get("properties") or {}
    return Snapshot(
        id=str(data.get("id") or ""),
        name=str(data.get("name") or ""),
        location=str(data.get("location") or ""),
        incremental=bool(props.get("incremental")),
        source_id=(props.get("creationData") or {}).get("sourceResourceId"),
        time_created=_time(props.get("timeCreated")),
        provisioning_state=str(props.get("provisioningState") or ""),
        tags=dict(data.get("tags") or {}),
        size_bytes=int(props.get("diskSizeBytes") or (props.get("diskSizeGB") or 0) << 30),
    )


def _network_profile(vm: VMDeployment) -> JSON:
    return {
        "networkApiVersion": "2020-11-01",
        "networkInterfaceConfigurations": [
            {
                "name": f"{vm.name}-nic",
                "properties": {
                    "primary": True,
                    "deleteOption": "Delete",
                    "ipConfigurations": [
                        {
                            "name": "ipconfig1",
                            "properties": {"subnet": {"id": vm.subnet_id}},
                        }
                    ],
                },
            }
        ],
    }


def _attached_vm_body(vm: VMDeployment) -> JSON:
    """A VM booting from existing managed disks: ``Attach``, no image, no OS profile (Azure
    refuses both with an attached OS disk); the disks stay when the VM is deleted."""
    return {
        "location": vm.location,
        "tags": dict(vm.tags),
        "properties": {
            "hardwareProfile": {"vmSize": vm.vm_size},
            "storageProfile": {
                "osDisk": {
                    "createOption": "Attach",
                    "deleteOption": "Detach",
                    "osType": vm.os_type,
                    "managedDisk": {"id": vm.os_disk_id},
                },
                "dataDisks": [
                    {
                        "lun": lun,
                        "createOption": "Attach",
                        "deleteOption": "Detach",
                        "managedDisk": {"id": disk_id},
                    }
                    for lun, disk_id in enumerate(vm.data_disk_ids)
                ],
            },
            "networkProfile": _network_profile(vm),
        },
    }


def vm_body(vm: VMDeployment) -> JSON:
    """The ARM body creating ``vm``: managed OS disk from a marketplace image, one NIC in
    the subnet created with the VM and deleted with it, no public IP. With ``os_disk_id``
    the VM boots from existing disks instead (``_attached_vm_body``)."""
    if vm.os_disk_id:
        return _attached_vm_body(vm)
    return {
        "location": vm.location,
        "tags": dict(vm.tags),
        "properties": {
            "hardwareProfile": {"vmSize": vm.vm_size},
            "storageProfile": {
                "imageReference": {
                    "publisher": vm.image_publisher,
                    "offer": vm.image_offer,
                    "sku": vm.image_sku,
                    "version": vm.image_version,
                },
                "osDisk": {
                    "name": f"{vm.name}-os",
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "diskSizeGB": vm.os_disk_size_gb,
                    "osType": "Linux",
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                },
            },
            "osProfile": {
                "computerName": vm.name[:64],
                "adminUsername": vm.admin_username,
                # Random, never stored, never logged: nobody signs in with it.
                "adminPassword": secrets.token_urlsafe(24) + "aA1!",
            },
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{vm.name}-nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig1",
                                    "properties": {"subnet": {"id": vm.subnet_id}},
                                }
                            ],
                        },
                    }
                ],
            },
        },
    }


class Compute:
    """Compute operations as one identity in one subscription (``ports.azure.AzureCompute``)."""

    def __init__(
        self, clients: AzureClientsAdapter, identity: AzureIdentity, subscription_id: str
    ) -> None:
        self._clients = clients
        self._identity = identity
        self.subscription_id = subscription_id

    async def _call(self, what: str, fn: Callable[[ComputeManagementClient], Awaitable[T]]) -> T:
        """``fn(client)``, its faults translated; one new sign-in if ARM refused the token."""
        for attempt in (1, 2):
            client = self._clients.client(self._identity, self.subscription_id)
            try:
                return await fn(client)
            except AzureError as exc:
                if attempt == 1 and token_refused(exc):
                    await self._clients.forget(self._identity)
                    continue
                raise translate(exc, what) from None
        raise AssertionError("unreachable")

    # -- virtual machines ---------------------------------------------------------------

    async def get_vm(self, resource_group: str, name: str) -> VirtualMachine | None:
        async def get(client: ComputeManagementClient) -> JSON | None:
            try:
                vm = await client.virtual_machines.get(resource_group, name, expand="instanceView")
            except ResourceNotFoundError:
                return None
            return _json(vm)

        data = await self._call(f"get VM {resource_group}/{name}", get)
        return None if data is None else vm_from_json(data)

    async def find_vms_by_tag(
        self, resource_group: str, key: str, value: str
    ) -> list[VirtualMachine]:
        async def find(client: ComputeManagementClient) -> list[str]:
            try:
                return [
                    str(vm.name)
                    async for vm in client.virtual_machines.list(resource_group)
                    if (vm.tags or {}).get(key) == value
                ]
            except ResourceNotFoundError:
                return []

        # A list has no instance views: read each match (there is one, or a few).
        names = await self._call(f"list VMs of {resource_group}", find)
        found = [await self.get_vm(resource_group, name) for name in names]
        return [vm for vm in found if vm is not None]

    async def private_ip(self, nic_id: str) -> str | None:
        """One GET of the NIC (Microsoft.Network, through the compute client's pipeline:
        same credential, retries and pacing)."""

        async def get(client: ComputeManagementClient) -> JSON | None:
            request = HttpRequest("GET", f"{nic_id}?api-version={NETWORK_API_VERSION}")
            response = await client.send_request(request)
            if response.status_code == 404:
                return None
            response.raise_for_status()
            data: JSON = response.json()
            return data

        data = await self._call(f"get network interface {nic_id.rsplit('/', 1)[-1]}", get)
        if data is None:
            return None
        configs = (data.get("properties") or {}).get("ipConfigurations") or []
        configs = sorted(configs, key=lambda c: not (c.get("properties") or {}).get("primary"))
        for config in configs:
            address = (config.get("properties") or {}).get("privateIPAddress")
            if address:
                return str(address)
        return None

    async def begin_vm_create(self, vm: VMDeployment) -> OperationHandle:
        body = vm_body(vm)
        return await self._begin(
            OperationKind.VM_CREATE,
            vm.resource_group,
            vm.name,
            lambda c, **kw: c.virtual_machines.begin_create_or_update(
                vm.resource_group, vm.name, cast(Any, body), **kw
            ),
        )

    async def begin_vm_delete(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.VM_DELETE, resource_group, name)

    async def begin_power_off(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.VM_POWER_OFF, resource_group, name)

    async def begin_deallocate(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.VM_DEALLOCATE, resource_group, name)

    async def begin_start(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.VM_START, resource_group, name)

    async def begin_vm_set_disks(
        self,
        resource_group: str,
        name: str,
        os_disk_id: str,
        data_disks: Sequence[tuple[int, str]],
    ) -> OperationHandle:
        body = {
            "properties": {
                "storageProfile": {
                    "osDisk": {"managedDisk": {"id": os_disk_id}},
                    "dataDisks": [
                        {"lun": lun, "createOption": "Attach", "managedDisk": {"id": disk_id}}
                        for lun, disk_id in sorted(data_disks)
                    ],
                }
            }
        }
        return await self._begin(
            OperationKind.VM_UPDATE,
            resource_group,
            name,
            lambda c, **kw: c.virtual_machines.begin_update(
                resource_group, name, cast(Any, body), **kw
            ),
        )

    # -- disks and snapshots ------------------------------------------------------------

    async def list_disks(self, resource_group: str) -> list[ManagedDisk]:
        async def list_(client: ComputeManagementClient) -> list[JSON]:
            return [_json(d) async for d in client.disks.list_by_resource_group(resource_group)]

        return [
            disk_from_json(d) for d in await self._call(f"list disks of {resource_group}", list_)
        ]

    async def get_disk(self, resource_group: str, name: str) -> ManagedDisk | None:
        async def get(client: ComputeManagementClient) -> JSON | None:
            try:
                return _json(await client.disks.get(resource_group, name))
            except ResourceNotFoundError:
                return None

        data = await self._call(f"get disk {resource_group}/{name}", get)
        return None if data is None else disk_from_json(data)

    async def begin_disk_create_for_upload(
        self,
        resource_group: str,
        name: str,
        location: str,
        size_bytes: int,
        tags: Mapping[str, str],
        os_type: str | None = None,
    ) -> OperationHandle:
        props: JSON = {"creationData": {"createOption": "Upload", "uploadSizeBytes": size_bytes}}
        if os_type:
            props["osType"] = os_type
        body = {"location": location, "tags": dict(tags), "properties": props}
        return await self._begin(
            OperationKind.DISK_CREATE,
            resource_group,
            name,
            lambda c, **kw: c.disks.begin_create_or_update(
                resource_group, name, cast(Any, body), **kw
            ),
        )

    async def begin_disk_create_from_snapshot(
        self,
        resource_group: str,
        name: str,
        snapshot: Snapshot,
        tags: Mapping[str, str],
        os_type: str | None = None,
    ) -> OperationHandle:
        props: JSON = {"creationData": {"createOption": "Copy", "sourceResourceId": snapshot.id}}
        if os_type:
            props["osType"] = os_type
        body = {"location": snapshot.location, "tags": dict(tags), "properties": props}
        return await self._begin(
            OperationKind.DISK_CREATE,
            resource_group,
            name,
            lambda c, **kw: c.disks.begin_create_or_update(
                resource_group, name, cast(Any, body), **kw
            ),
        )

    async def begin_disk_delete(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.DISK_DELETE, resource_group, name)

    async def begin_snapshot_create(
        self, resource_group: str, name: str, disk: ManagedDisk, tags: Mapping[str, str]
    ) -> OperationHandle:
        body = {
            "location": disk.location,
            "tags": dict(tags),
            "properties": {
                "incremental": True,
                "creationData": {"createOption": "Copy", "sourceResourceId": disk.id},
            },
        }
        return await self._begin(
            OperationKind.SNAPSHOT_CREATE,
            resource_group,
            name,
            lambda c, **kw: c.snapshots.begin_create_or_update(
                resource_group, name, cast(Any, body), **kw
            ),
        )

    async def begin_snapshot_delete(self, resource_group: str, name: str) -> OperationHandle:
        return await self._begin(OperationKind.SNAPSHOT_DELETE, resource_group, name)

    async def get_snapshot(self, resource_group: str, name: str) -> Snapshot | None:
        async def get(client: ComputeManagementClient) -> JSON | None:
            try:
                return _json(await client.snapshots.get(resource_group, name))
            except ResourceNotFoundError:
                return None

        data = await self._call(f"get snapshot {resource_group}/{name}", get)
        return None if data is None else snapshot_from_json(data)

    async def list_snapshots(
        self, resource_group: str, tags: Mapping[str, str] | None = None
    ) -> list[Snapshot]:
        """One listing of the group (paged by the SDK), filtered here: ARM's snapshot list
        takes no ``$filter`` by tag."""
        wanted = dict(tags or {})

        async def list_(client: ComputeManagementClient) -> list[JSON]:
            try:
                return [
                    _json(s) async for s in client.snapshots.list_by_resource_group(resource_group)
                ]
            except ResourceNotFoundError:
                return []

        found = [
            snapshot_from_json(s)
            for s in await self._call(f"list snapshots of {resource_group}", list_)
        ]
        return [s for s in found if all(s.tags.get(k) == v for k, v in wanted.items())]

    async def begin_grant_access(
        self, resource_group: str, name: str, *, snapshot: bool, write: bool, seconds: int
    ) -> OperationHandle:
        body = {"access": "Write" if write else "Read", "durationInSeconds": seconds}
        kind = OperationKind.SNAPSHOT_GRANT if snapshot else OperationKind.DISK_GRANT

        def start(c: ComputeManagementClient, **kw: Any) -> Awaitable[AsyncLROPoller[Any]]:
            ops: Any = c.snapshots if snapshot else c.disks
            return cast(
                Awaitable[AsyncLROPoller[Any]],
                ops.begin_grant_access(resource_group, name, body, **kw),
            )

        return await self._begin(kind, resource_group, name, start)

    async def begin_revoke_access(
        self, resource_group: str, name: str, *, snapshot: bool
    ) -> OperationHandle:
        kind = OperationKind.SNAPSHOT_REVOKE if snapshot else OperationKind.DISK_REVOKE
        return await self._begin(kind, resource_group, name)

    # -- long-running operations --------------------------------------------------------

    def _starter(
        self, handle_kind: OperationKind, resource_group: str, name: str
    ) -> Callable[..., Awaitable[AsyncLROPoller[Any]]]:
        """The SDK's ``begin_*`` for ``handle_kind``; with ``continuation_token`` it resumes."""
        placeholder: Any = {}

        def start(c: ComputeManagementClient, **kw: Any) -> Awaitable[AsyncLROPoller[Any]]:
            vms, disks, snaps = c.virtual_machines, c.disks, c.snapshots
            table: dict[OperationKind, Callable[[], Awaitable[AsyncLROPoller[Any]]]] = {
                OperationKind.VM_CREATE: lambda: vms.begin_create_or_update(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.VM_DELETE: lambda: vms.begin_delete(resource_group, name, **kw),
                OperationKind.VM_POWER_OFF: lambda: vms.begin_power_off(resource_group, name, **kw),
                OperationKind.VM_DEALLOCATE: lambda: vms.begin_deallocate(
                    resource_group, name, **kw
                ),
                OperationKind.VM_START: lambda: vms.begin_start(resource_group, name, **kw),
                OperationKind.VM_UPDATE: lambda: vms.begin_update(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.DISK_CREATE: lambda: disks.begin_create_or_update(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.DISK_DELETE: lambda: disks.begin_delete(resource_group, name, **kw),
                OperationKind.DISK_GRANT: lambda: disks.begin_grant_access(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.DISK_REVOKE: lambda: disks.begin_revoke_access(
                    resource_group, name, **kw
                ),
                OperationKind.SNAPSHOT_CREATE: lambda: snaps.begin_create_or_update(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.SNAPSHOT_DELETE: lambda: snaps.begin_delete(
                    resource_group, name, **kw
                ),
                OperationKind.SNAPSHOT_GRANT: lambda: snaps.begin_grant_access(
                    resource_group, name, placeholder, **kw
                ),
                OperationKind.SNAPSHOT_REVOKE: lambda: snaps.begin_revoke_access(
                    resource_group, name, **kw
                ),
            }
            return table[handle_kind]()

        return start

    async def _begin(
        self,
        kind: OperationKind,
        resource_group: str,
        name: str,
        start: Callable[..., Awaitable[AsyncLROPoller[Any]]] | None = None,
    ) -> OperationHandle:
        """Start the operation (one write) and return its token without waiting."""
        begin = start or self._starter(kind, resource_group, name)
        seen: list[float | None] = []

        def hook(response: Any) -> None:
            seen.append(retry_after(response.http_response))

        async def call(client: ComputeManagementClient) -> str:
            seen.clear()
            poller = await begin(client, raw_response_hook=hook)
            return str(poller.continuation_token())

        token = await self._call(f"{kind} {resource_group}/{name}", call)
        return OperationHandle(kind, resource_group, name, token, seen[-1] if seen else None)

    async def _resume(
        self, client: ComputeManagementClient, handle: OperationHandle
    ) -> AsyncLROPoller[Any]:
        start = self._starter(handle.kind, handle.resource_group, handle.name)
        return await start(client, continuation_token=handle.token)

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        """Resume from the token and ask once (one read; a second one only to fetch the SAS
        URL of a finished grant), never a write."""

        async def check(client: ComputeManagementClient) -> OperationStatus:
            poller = await self._resume(client, handle)
            method = poller.polling_method()
            if isinstance(method, AsyncARMPolling) and not method.finished():
                try:
                    await method.update_status()
                except (BadStatus, BadResponse, OperationFailed):
                    # A refused or odd answer: the poller's own loop asks again and raises
                    # it as azure-core's HttpResponseError (with status and body).
                    return _outcome(await poller.result())
                if not method.finished():
                    return OperationStatus(done=False)
                succeeded = str(method.status()).lower() == "succeeded"
                if succeeded and handle.kind not in _RESULT_KINDS:
                    # The operation's own status says it is done: the final GET of the
                    # resource would be one more read for nothing.
                    return OperationStatus(done=True)
            return _outcome(await poller.result())

        return await self._call(f"{handle.kind} {handle.resource_group}/{handle.name}", check)

    async def wait(self, handle: OperationHandle) -> OperationStatus:
        """Resume from the token and wait until the operation ends (reads only)."""

        async def finish(client: ComputeManagementClient) -> OperationStatus:
            poller = await self._resume(client, handle)
            return _outcome(await poller.result())

        return await self._call(f"{handle.kind} {handle.resource_group}/{handle.name}", finish)


_RESULT_KINDS = frozenset({OperationKind.DISK_GRANT, OperationKind.SNAPSHOT_GRANT})
"""Operations whose result (the SAS URL) comes from the final GET."""


def _outcome(result: Any) -> OperationStatus:
    if result is None:
        return OperationStatus(done=True)
    data = _json(result) if not isinstance(result, dict) else result
    sas = data.get("accessSAS") or data.get("accessSas")
    return OperationStatus(done=True, result=str(sas) if sas else None)
