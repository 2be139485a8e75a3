"""The emulator's state: resources, long-running operations, SAS grants and the history.

Operations complete lazily and deterministically: ``settle`` (called before every
request and by a background ticker) completes every operation whose emulated end time
has passed, in end-time order, stamping effects with that end time.

Every history event carries its emulated ``time``/``timestamp`` and ``wall_time``: the real
wall-clock time (UTC) at which the emulated clock showed ``time``, comparable with other
processes' clocks (vCenter's events, see ``testbed.invariant``). An event whose emulated
time was skipped by ``clock/advance`` (an operation that ended inside the jump) gets the
real time of the jump, never an earlier one: it cannot have happened before the previous
``settle``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from testbed.azure.clock import Clock, iso
from testbed.azure.errors import ArmError, not_found
from testbed.azure.pages import PageStore
from testbed.azure.principal import DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP
from testbed.azure.resources import (
    AccessGrant,
    Disk,
    NetworkInterface,
    Operation,
    ResourceGroup,
    Snapshot,
    VirtualMachine,
)
from testbed.azure.stats import Stats

log = logging.getLogger("testbed.azure")
Key = tuple[str, str]


def key(resource_group: str, name: str) -> Key:
    return resource_group.lower(), name.lower()


class Store:
    def __init__(self, clock: Clock, stats: Stats) -> None:
        self.clock = clock
        self.stats = stats
        self.resource_groups: dict[str, ResourceGroup] = {}
        self.disks: dict[Key, Disk] = {}
        self.snapshots: dict[Key, Snapshot] = {}
        self.vms: dict[Key, VirtualMachine] = {}
        self.operations: dict[str, Operation] = {}
        self.pending: list[Operation] = []
        self.grants: dict[str, AccessGrant] = {}
        self.events: list[dict[str, Any]] = []
        self.snapshot_times: dict[str, list[float]] = {}
        self.nics: dict[Key, NetworkInterface] = {}
        self._addresses = 0
        self._seq = 0
        self._wall_floor = 0.0
        """The real time at which the last ``settle`` read the clock: every event recorded
        later happened at or after it (``settle`` runs before every clock change)."""
        self.add_resource_group(DEFAULT_RESOURCE_GROUP, DEFAULT_LOCATION)

    def next_address(self) -> str:
        """The next private address: 127.0.0.4, .5, ... (Azure keeps .0-.3 of a subnet)."""
        n = self._addresses
        self._addresses += 1
        return f"127.0.{n // 250}.{4 + n % 250}"

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- history ---------------------------------------------------------------------

    def record(self, kind: str, at: float, resource_id: str, **details: Any) -> None:
        event = {
            "seq": len(self.events) + 1,
            "time": iso(at),
            "timestamp": at,
            "wall_time": iso(max(self.clock.wall_time(at), self._wall_floor)),
            "kind": kind,
            "resource_id": resource_id,
            **details,
        }
        self.events.append(event)
        log.info("event %s %s %s", kind, resource_id, details or "")

    def set_power(self, vm: VirtualMachine, state: str, at: float, operation: str | None) -> None:
        if vm.power == state:
            return
        self.record("vm.power", at, vm.id, **{"from": vm.power, "to": state}, operation=operation)
        vm.power = state
        vm.state_changed = at

    # -- lookups -----------------------------------------------------------------------

    def add_resource_group(self, name: str, location: str) -> ResourceGroup:
        group = self.resource_groups.get(name.lower())
        if group is None:
            group = self.resource_groups[name.lower()] = ResourceGroup(name, location)
        return group

    def resource_group(self, name: str) -> ResourceGroup:
        group = self.resource_groups.get(name.lower())
        if group is None:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
            )
        return group

    def disk(self, resource_group: str, name: str) -> Disk:
        self.resource_group(resource_group)
        found = self.disks.get(key(resource_group, name))
        if found is None:
            raise not_found("Microsoft.Compute/disks", name, resource_group)
        return found

    def snapshot(self, resource_group: str, name: str) -> Snapshot:
        self.resource_group(resource_group)
        found = self.snapshots.get(key(resource_group, name))
        if found is None:
            raise not_found("Microsoft.Compute/snapshots", name, resource_group)
        return found

    def vm(self, resource_group: str, name: str) -> VirtualMachine:
        self.resource_group(resource_group)
        found = self.vms.get(key(resource_group, name))
        if found is None:
            raise not_found("Microsoft.Compute/virtualMachines", name, resource_group)
        return found

    def by_id(self, resource_id: str) -> Disk | Snapshot | None:
        """The disk or snapshot an ARM ID names (case-insensitive), if it exists."""
        parts = resource_id.strip("/").split("/")
        if len(parts) != 8 or parts[0].lower() != "subscriptions":
            return None
        group, kind, name = parts[3], parts[6].lower(), parts[7]
        if kind == "disks":
            return self.disks.get(key(group, name))
        if kind == "snapshots":
            return self.snapshots.get(key(group, name))
        return None

    # -- creation shared by ARM and the control API -------------------------------------

    def new_disk(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        size: int,
        sku: str = "Premium_LRS",
        create_option: str = "Empty",
        os_type: str | None = None,
        content: PageStore | None = None,
        source: Disk | Snapshot | None = None,
    ) -> Disk:
        now = self.clock.now()
        disk = Disk(
            resource_group=self.resource_group(resource_group).name,
            name=name,
            location=location,
            sku=sku,
            content=content if content is not None else PageStore(size),
            unique_id=str(uuid.uuid4()),
            created=now,
            seq=self.next_seq(),
            create_option=create_option,
            os_type=os_type,
            source_id=source.id if source else None,
            source_unique_id=source.unique_id if source else None,
        )
        self.disks[key(resource_group, name)] = disk
        self.record("disk.created", now, disk.id, size_bytes=disk.content.size)
        return disk

    def remove_disk(self, disk: Disk, at: float) -> None:
        if self.disks.get(key(disk.resource_group, disk.name)) is disk:
            del self.disks[key(disk.resource_group, disk.name)]
            self.record("disk.deleted", at, disk.id)

    # -- long-running operations -------------------------------------------------------

    def start_operation(
        self,
        name: str,
        *,
        location: str,
        resource_id: str,
        duration: float,
        complete: Callable[[float], dict[str, Any] | None],
        abort: Callable[[float], None] | None = None,
        fail_with: tuple[str, str] | None = None,
    ) -> Operation:
        now = self.clock.now()
        family = "operations" if name.startswith("virtualMachines") else "DiskOperations"
        op = Operation(
            id=str(uuid.uuid4()),
            name=name,
            location=location,
            resource_id=resource_id,
            family=family,
            start=now,
            end=now + duration,
            complete=complete,
            abort=abort,
            fail_with=fail_with,
        )
        self.operations[op.id] = op
        self.pending.append(op)
        self.stats.operations["started"] += 1
        return op

    def fail(self, op: Operation, at: float, code: str, message: str) -> None:
        op.status = "Failed"
        op.finished = at
        op.error = {"code": code, "message": message}
        self.stats.operations["failed"] += 1
        log.info("operation %s %s failed: %s", op.name, op.id, code)

    def settle(self) -> None:
        now = self.clock.now()
        self.pending = [op for op in self.pending if op.status == "InProgress"]
        due = sorted((op for op in self.pending if op.end <= now), key=lambda op: op.end)
        for op in due:
            if op.status != "InProgress":
                continue
            if op.fail_with is not None:
                if op.abort is not None:
                    op.abort(op.end)
                self.fail(op, op.end, *op.fail_with)
                continue
            try:
                output = op.complete(op.end)
            except ArmError as err:
                if op.abort is not None:
                    op.abort(op.end)
                self.fail(op, op.end, err.code, err.message)
                continue
            op.status = "Succeeded"
            op.finished = op.end
            op.output = output
            self.stats.operations["succeeded"] += 1
        self._wall_floor = self.clock.wall_time(now)
