"""Managed disks and snapshots: get, list, create or update, delete, grant and revoke access.

Disks are created ``Empty`` (``diskSizeGB``), ``Upload`` (``uploadSizeBytes``; the disk
is ``ReadyToUpload`` until a Write grant is revoked) or ``Copy`` (of a disk or
snapshot). Write access is granted to a disk awaiting its upload and, unlike Azure, to
any unattached disk (the replica disk of reverse replication; see docs/sink-azure.md);
a disk with a live Write SAS cannot be snapshotted or copied (revoke first). Snapshots
are ``Copy`` of a disk or snapshot (``incremental`` or full) or ``CopyStart`` of an
incremental snapshot (its ``completionPercent`` grows over the
``snapshots/copyStart`` duration). An incremental snapshot is an immutable copy of
its disk taken when the PUT is accepted and belongs to the disk's snapshot family.

Limits: 7 incremental snapshots per disk per 5 minutes (429
``SnapshotOperationRateExceeded`` with ``Retry-After``), 500 per disk (409
``SnapshotCountExceeded``), 5 live SAS per snapshot family (409
``OperationNotAllowed``). Granting access to a disk attached to a VM that is not
deallocated, deleting an attached or exported disk are 409 ``OperationNotAllowed``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from testbed.azure.armcore import ArmContext, accepted, ok
from testbed.azure.errors import ArmError, bad_request, not_allowed
from testbed.azure.limits import retry_after
from testbed.azure.pages import PAGE
from testbed.azure.resources import GIB, AccessGrant, Disk, Snapshot
from testbed.azure.store import Store, key

SNAPSHOT_RATE_POLICY = "Microsoft.Compute/IncrementalSnapshotCreate5Min"


def _no_effect(at: float) -> None:
    """The completion of an operation whose effect took place when it was accepted."""


def _location(body: dict[str, Any]) -> str:
    location = body.get("location")
    if not location:
        raise bad_request("The 'location' property is required.", code="LocationRequired")
    return str(location)


def _creation(body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    props = body.get("properties") or {}
    creation = props.get("creationData")
    if not isinstance(creation, dict) or not creation.get("createOption"):
        raise bad_request("Required parameter 'creationData.createOption' is missing (null).")
    return str(creation["createOption"]).lower(), creation, props


def _source(store: Store, creation: dict[str, Any]) -> Disk | Snapshot:
    source_id = creation.get("sourceResourceId")
    if not source_id:
        raise bad_request("Required parameter 'creationData.sourceResourceId' is missing (null).")
    source = store.by_id(str(source_id))
    if source is None:
        raise ArmError(404, "NotFound", f"Resource '{source_id}' was not found.")
    if source.provisioning_state != "Succeeded":
        raise not_allowed(f"The source '{source.name}' is still being provisioned.")
    if isinstance(source, Disk) and source.awaiting_upload:
        raise not_allowed(f"The source disk '{source.name}' is waiting for its upload.")
    grant = source.grant if isinstance(source, Disk) else None
    if grant is not None and grant.write and grant.live(store.clock.now()):
        raise not_allowed(
            f"The source disk '{source.name}' is being written through a SAS "
            "(ActiveUpload); revoke access (endGetAccess) first."
        )
    return source


def _finish_create(
    ctx: ArmContext, resource: Disk | Snapshot, kind: str, remove: Callable[[float], None]
) -> web.Response:
    store = ctx.store

    def complete(at: float) -> None:
        resource.provisioning_state = "Succeeded"

    op = store.start_operation(
        f"{kind}/create",
        location=resource.location,
        resource_id=resource.id,
        duration=ctx.duration(f"{kind}/create"),
        complete=complete,
        abort=remove,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)


def _update(ctx: ArmContext, resource: Disk | Snapshot, body: dict[str, Any]) -> web.Response:
    if resource.provisioning_state != "Succeeded":
        raise ArmError(
            409, "Conflict", f"'{resource.name}' is {resource.provisioning_state.lower()}."
        )
    props = body.get("properties") or {}
    size_gb = props.get("diskSizeGB")
    if isinstance(resource, Disk) and isinstance(size_gb, int):
        size = size_gb * GIB
        if size < resource.content.size:
            raise not_allowed("Disk size can only be increased.")
        vm = resource.attached_to
        if size > resource.content.size and vm is not None and vm.power != "deallocated":
            raise not_allowed("Resizing an attached disk requires its VM to be deallocated.")
        resource.content.size = size
    if "tags" in body:
        resource.tags = dict(body.get("tags") or {})
    kind = resource.kind

    op = ctx.store.start_operation(
        f"{kind}/update",
        location=resource.location,
        resource_id=resource.id,
        duration=ctx.duration(f"{kind}/update"),
        complete=_no_effect,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)


# -- disks ------------------------------------------------------------------------------


async def get_disk(ctx: ArmContext) -> web.Response:
    return ok(ctx.store.disk(ctx.resource_group, ctx.name).to_json(ctx.now))


async def list_disks(ctx: ArmContext) -> web.Response:
    group = ctx.store.resource_group(ctx.resource_group).name.lower()
    now = ctx.now
    return ok({"value": [d.to_json(now) for k, d in ctx.store.disks.items() if k[0] == group]})


async def list_all_disks(ctx: ArmContext) -> web.Response:
    now = ctx.now
    return ok({"value": [d.to_json(now) for d in ctx.store.disks.values()]})


async def put_disk(ctx: ArmContext) -> web.Response:
    store = ctx.store
    group = store.resource_group(ctx.resource_group)
    body = await ctx.body()
    existing = store.disks.get(key(ctx.resource_group, ctx.name))
    if existing is not None:
        return _update(ctx, existing, body)
    location = _location(body)
    option, creation, props = _creation(body)
    sku = (body.get("sku") or {}).get("name") or "Premium_LRS"
    size_gb = props.get("diskSizeGB")
    os_type = props.get("osType")
    source: Disk | Snapshot | None = None
    upload: int | None = None
    if option == "empty":
        if not isinstance(size_gb, int) or size_gb <= 0:
            raise bad_request("Required parameter 'diskSizeGB' is missing (null).")
        size = size_gb * GIB
    elif option == "upload":
        upload = creation.get("uploadSizeBytes")
        if not isinstance(upload, int) or upload <= 0 or upload % PAGE:
            raise bad_request("'uploadSizeBytes' must be a positive multiple of 512.")
        size = upload
    elif option == "copy":
        source = _source(store, creation)
        if isinstance(source, Snapshot) and source.completion_percent(ctx.now) < 100:
            raise not_allowed(f"Snapshot '{source.name}' is still being copied (CopyStart).")
        size = max(source.content.size, size_gb * GIB if isinstance(size_gb, int) else 0)
        os_type = os_type or source.os_type
    else:
        raise bad_request(
            f"createOption '{creation['createOption']}' is not emulated; use Empty, Upload or Copy."
        )
    content = None
    if source is not None:
        content = source.content.copy()
        content.size = size
    disk = store.new_disk(
        group.name,
        ctx.name,
        location=location,
        size=size,
        sku=sku,
        create_option=str(creation["createOption"]),
        os_type=os_type,
        content=content,
        source=source,
    )
    disk.provisioning_state = "Creating"
    disk.tags = dict(body.get("tags") or {})
    if upload is not None:
        disk.upload_size = upload
        disk.awaiting_upload = True

    def remove(at: float) -> None:
        store.remove_disk(disk, at)

    return _finish_create(ctx, disk, "disks", remove)


async def delete_disk(ctx: ArmContext) -> web.Response:
    store = ctx.store
    store.resource_group(ctx.resource_group)
    disk = store.disks.get(key(ctx.resource_group, ctx.name))
    if disk is None:
        return web.Response(status=204)
    now = ctx.now
    if disk.attached_to is not None:
        raise not_allowed(f"Disk {disk.name} is attached to VM {disk.attached_to.id}.")
    if disk.grant is not None and disk.grant.live(now):
        raise not_allowed(
            f"Disk {disk.name} is in state {disk.state(now)}; revoke access (endGetAccess) first."
        )
    if disk.provisioning_state != "Succeeded":
        raise ArmError(409, "Conflict", f"Disk '{disk.name}' is {disk.provisioning_state.lower()}.")
    disk.provisioning_state = "Deleting"

    def complete(at: float) -> None:
        store.remove_disk(disk, at)

    def abort(at: float) -> None:
        disk.provisioning_state = "Succeeded"

    op = store.start_operation(
        "disks/delete",
        location=disk.location,
        resource_id=disk.id,
        duration=ctx.duration("disks/delete"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)


# -- snapshots --------------------------------------------------------------------------


async def get_snapshot(ctx: ArmContext) -> web.Response:
    return ok(ctx.store.snapshot(ctx.resource_group, ctx.name).to_json(ctx.now))


async def list_snapshots(ctx: ArmContext) -> web.Response:
    group = ctx.store.resource_group(ctx.resource_group).name.lower()
    now = ctx.now
    found = [s.to_json(now) for k, s in ctx.store.snapshots.items() if k[0] == group]
    return ok({"value": found})


async def list_all_snapshots(ctx: ArmContext) -> web.Response:
    now = ctx.now
    return ok({"value": [s.to_json(now) for s in ctx.store.snapshots.values()]})


def _check_snapshot_limits(ctx: ArmContext, disk: Disk) -> None:
    limits = ctx.emu.limits
    now = ctx.now
    window = limits.snapshot_window_seconds
    times = [t for t in ctx.store.snapshot_times.get(disk.unique_id, []) if t > now - window]
    ctx.store.snapshot_times[disk.unique_id] = times
    if len(times) >= limits.snapshots_per_window:
        wait = times[len(times) - limits.snapshots_per_window] + window - now
        seconds = retry_after(ctx.emu.clock.real_seconds(wait))
        raise ArmError(
            429,
            "SnapshotOperationRateExceeded",
            f"Disk '{disk.name}' already had {len(times)} incremental snapshots in the last "
            f"{window:g} seconds; at most {limits.snapshots_per_window} are allowed per "
            f"{window:g} seconds. Retry after {seconds} seconds.",
            headers={
                "Retry-After": str(seconds),
                "x-ms-ratelimit-remaining-resource": f"{SNAPSHOT_RATE_POLICY};0",
            },
        )
    existing = sum(
        1
        for s in ctx.store.snapshots.values()
        if s.incremental and s.source_unique_id == disk.unique_id
    )
    if existing >= limits.snapshots_per_disk:
        raise ArmError(
            409,
            "SnapshotCountExceeded",
            f"Disk '{disk.name}' has {existing} incremental snapshots, the most allowed "
            f"({limits.snapshots_per_disk}); delete older snapshots first.",
        )


async def put_snapshot(ctx: ArmContext) -> web.Response:
    store = ctx.store
    group = store.resource_group(ctx.resource_group)
    body = await ctx.body()
    existing = store.snapshots.get(key(ctx.resource_group, ctx.name))
    if existing is not None:
        return _update(ctx, existing, body)
    location = _location(body)
    option, creation, props = _creation(body)
    incremental = bool(props.get("incremental", False))
    source = _source(store, creation)
    now = ctx.now
    copy_started: float | None = None
    if option == "copy":
        if isinstance(source, Disk) and incremental:
            _check_snapshot_limits(ctx, source)
        if isinstance(source, Snapshot) and source.completion_percent(now) < 100:
            raise not_allowed(f"Snapshot '{source.name}' is still being copied (CopyStart).")
        same_family = incremental and (isinstance(source, Disk) or source.incremental)
    elif option == "copystart":
        if not isinstance(source, Snapshot) or not source.incremental:
            raise bad_request("CopyStart copies an incremental snapshot.")
        same_family = True
        copy_started = now
    else:
        raise bad_request(
            f"createOption '{creation['createOption']}' is not emulated; use Copy or CopyStart."
        )
    snapshot = Snapshot(
        resource_group=group.name,
        name=ctx.name,
        location=location,
        sku=(body.get("sku") or {}).get("name") or "Standard_LRS",
        content=source.content.copy(),
        unique_id=str(uuid.uuid4()),
        family_id=source.family_id if same_family else str(uuid.uuid4()),
        created=now,
        seq=store.next_seq(),
        incremental=incremental,
        create_option=str(creation["createOption"]),
        source_id=source.id,
        source_unique_id=source.unique_id if isinstance(source, Disk) else source.source_unique_id,
        os_type=props.get("osType") or source.os_type,
        provisioning_state="Creating",
        copy_started=copy_started,
        copy_seconds=ctx.duration("snapshots/copyStart") if copy_started is not None else 0.0,
        tags=dict(body.get("tags") or {}),
    )
    store.snapshots[key(group.name, ctx.name)] = snapshot
    if isinstance(source, Disk) and incremental:
        store.snapshot_times.setdefault(source.unique_id, []).append(now)
    store.record("snapshot.created", now, snapshot.id, source=source.id, incremental=incremental)

    def remove(at: float) -> None:
        if store.snapshots.get(key(snapshot.resource_group, snapshot.name)) is snapshot:
            del store.snapshots[key(snapshot.resource_group, snapshot.name)]
            store.record("snapshot.deleted", at, snapshot.id)

    return _finish_create(ctx, snapshot, "snapshots", remove)


async def delete_snapshot(ctx: ArmContext) -> web.Response:
    store = ctx.store
    store.resource_group(ctx.resource_group)
    snapshot = store.snapshots.get(key(ctx.resource_group, ctx.name))
    if snapshot is None:
        return web.Response(status=204)
    now = ctx.now
    if snapshot.grant is not None and snapshot.grant.live(now):
        raise not_allowed(
            f"Snapshot {snapshot.name} has an active SAS; revoke access (endGetAccess) first."
        )
    if snapshot.provisioning_state != "Succeeded":
        raise ArmError(
            409, "Conflict", f"Snapshot '{snapshot.name}' is {snapshot.provisioning_state.lower()}."
        )
    snapshot.provisioning_state = "Deleting"

    def complete(at: float) -> None:
        if store.snapshots.get(key(snapshot.resource_group, snapshot.name)) is snapshot:
            del store.snapshots[key(snapshot.resource_group, snapshot.name)]
            store.record("snapshot.deleted", at, snapshot.id)

    def abort(at: float) -> None:
        snapshot.provisioning_state = "Succeeded"

    op = store.start_operation(
        "snapshots/delete",
        location=snapshot.location,
        resource_id=snapshot.id,
        duration=ctx.duration("snapshots/delete"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)


# -- access (SAS export and upload) -----------------------------------------------------


def _target(ctx: ArmContext) -> Disk | Snapshot:
    assert ctx.path.collection in {"disks", "snapshots"}
    if ctx.path.collection == "disks":
        return ctx.store.disk(ctx.resource_group, ctx.name)
    return ctx.store.snapshot(ctx.resource_group, ctx.name)


def _check_grant(ctx: ArmContext, target: Disk | Snapshot, write: bool) -> None:
    now = ctx.now
    if target.provisioning_state != "Succeeded":
        raise not_allowed(f"'{target.name}' is {target.provisioning_state.lower()}.")
    if isinstance(target, Snapshot):
        if write:
            raise not_allowed("Snapshots can only be exported for reading.")
        if target.completion_percent(now) < 100:
            raise not_allowed(f"Snapshot '{target.name}' is still being copied (CopyStart).")
        live = [
            s
            for s in ctx.store.snapshots.values()
            if s.family_id == target.family_id
            and s is not target
            and s.grant is not None
            and s.grant.live(now)
        ]
        limit = ctx.emu.limits.sas_exports_per_family
        if len(live) >= limit:
            raise not_allowed(
                f"At most {limit} snapshots of one incremental snapshot family may have an "
                f"active SAS at once; {len(live)} do ({', '.join(s.name for s in live)}). "
                "Revoke access to one of them first."
            )
        return
    if write and not target.awaiting_upload and target.attached_to is not None:
        # Azure grants Write only to disks in ReadyToUpload state; the emulator also grants
        # it to an unattached disk (the replica disk of reverse replication, DESIGN.md §3:
        # "a disk created for upload, or the existing replica disk"). docs/sink-azure.md
        # says how the product meets the real rule.
        raise not_allowed(
            f"Write access is only granted to disks in ReadyToUpload state or unattached "
            f"disks; '{target.name}' is {target.state(now)}."
        )
    if not write and target.awaiting_upload:
        raise not_allowed(f"Disk '{target.name}' is waiting for its upload; grant Write access.")
    vm = target.attached_to
    if vm is not None and vm.power != "deallocated":
        raise not_allowed(
            f"Disk '{target.name}' is attached to VM '{vm.id}', which is {vm.power}; "
            "deallocate the VM or detach the disk to export it."
        )


async def grant_access(ctx: ArmContext) -> web.Response:
    target = _target(ctx)
    body = await ctx.body()
    access = str(body.get("access", "")).lower()
    if access not in {"read", "write"}:
        raise bad_request("'access' must be 'Read' or 'Write'.")
    duration = body.get("durationInSeconds")
    if not isinstance(duration, int) or duration <= 0:
        raise bad_request("Required parameter 'durationInSeconds' is missing or not positive.")
    write = access == "write"
    _check_grant(ctx, target, write)
    store = ctx.store
    now = ctx.now
    grant = target.grant
    if grant is None or not grant.live(now) or grant.write != write:
        if grant is not None:
            grant.revoked = True
        account = "md-" + hashlib.sha256(target.unique_id.encode()).hexdigest()[:12]
        grant = AccessGrant(
            id=uuid.uuid4().hex,
            account=account,
            container=secrets.token_hex(6),
            target=target,
            write=write,
            expires=now + duration,
        )
        store.grants[grant.container] = grant
        target.grant = grant
    else:
        grant.expires = max(grant.expires, now + duration)
    url = ctx.emu.sas.url(ctx.emu.endpoint, grant)
    this = grant

    def complete(at: float) -> dict[str, Any]:
        if this.active_from is None:
            this.active_from = at
            store.record("access.granted", at, target.id, access="Write" if write else "Read")
        return {"accessSAS": url}

    def abort(at: float) -> None:
        if this.active_from is None:
            this.revoked = True

    op = store.start_operation(
        f"{target.kind}/beginGetAccess",
        location=target.location,
        resource_id=target.id,
        duration=ctx.duration(f"{target.kind}/beginGetAccess"),
        complete=complete,
        abort=abort,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)


async def revoke_access(ctx: ArmContext) -> web.Response:
    target = _target(ctx)
    store = ctx.store
    now = ctx.now
    grant = target.grant
    if grant is not None:
        # A revoked SAS stops working at once; the operation only reports it.
        grant.revoked = True
        target.grant = None
        if isinstance(target, Disk) and grant.write and target.awaiting_upload:
            target.awaiting_upload = False
        store.record("access.revoked", now, target.id)

    op = store.start_operation(
        f"{target.kind}/endGetAccess",
        location=target.location,
        resource_id=target.id,
        duration=ctx.duration(f"{target.kind}/endGetAccess"),
        complete=_no_effect,
        fail_with=ctx.fail_with,
    )
    return accepted(ctx, op)
