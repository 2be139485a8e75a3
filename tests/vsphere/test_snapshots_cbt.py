"""Snapshots and changed block tracking through the adapter, on vcsim (what it supports)."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim, vmodl

from failback.adapters.vsphere import faults
from failback.dataplane.mt.resolver import vcsim_disk_uuid
from failback.ports.vsphere import (
    REPLICATION_SNAPSHOT,
    ChangedBlockTrackingUnavailable,
    ChangeIdRejected,
)

from .conftest import VMMaker, vm_of


async def test_enable_change_tracking_is_idempotent(vc: Any, make_vm: VMMaker, si: Any) -> None:
    uuid = await make_vm()
    started = await vc.enable_change_tracking(uuid)
    assert started is not None
    assert (await vc.wait(started.moref, 30)).state == "success"
    assert vm_of(si, uuid).config.changeTrackingEnabled is True
    assert await vc.enable_change_tracking(uuid) is None, "already on: nothing to do"


async def test_snapshot_taken_listed_read_and_removed(vc: Any, make_vm: VMMaker, si: Any) -> None:
    uuid = await make_vm(disks=2)
    assert await vc.snapshots(uuid) == ()
    started = await vc.create_snapshot(
        uuid, REPLICATION_SNAPSHOT, description="cycle 1", quiesce=True
    )
    assert not isinstance(started, str)
    done = await vc.wait(started.moref, 30)
    assert done.state == "success", done
    moref = done.result
    assert moref is not None
    assert moref.startswith("snapshot-")
    # A retry after a lost task finds the snapshot instead of taking a second one.
    assert await vc.create_snapshot(uuid, REPLICATION_SNAPSHOT, description="cycle 1") == moref

    (snap,) = await vc.snapshots(uuid)
    assert (snap.moref, snap.name, snap.description) == (moref, REPLICATION_SNAPSHOT, "cycle 1")
    assert snap.quiesced is True
    assert snap.created is not None
    assert snap.created.utcoffset() is not None
    assert snap.parent is None

    disks = await vc.snapshot_disks(moref)
    vm = await vc.vm(uuid)
    assert [d.file_name for d in disks] == [d.file_name for d in vm.disks]
    dc = si.content.rootFolder.childEntity[0]._moId
    for disk in disks:
        assert disk.capacity_bytes == 1 << 30
        assert disk.device_key > 0
        assert disk.uuid == vcsim_disk_uuid(dc, disk.file_name)
        assert disk.change_id is None, "vcsim keeps no changeId"

    removed = await vc.remove_snapshot(moref)
    assert removed is not None
    assert (await vc.wait(removed.moref, 30)).state == "success"
    assert await vc.snapshots(uuid) == ()
    assert await vc.remove_snapshot(moref) is None, "gone already: nothing to do"


async def test_snapshot_tree_names_parents(vc: Any, make_vm: VMMaker, si: Any) -> None:
    uuid = await make_vm()
    vm = vm_of(si, uuid)
    for name in ("user-a", "user-b"):
        task = vm.CreateSnapshot_Task(name=name, description="", memory=False, quiesce=False)
        assert (await vc.wait(task._moId, 30)).state == "success"
    first, second = await vc.snapshots(uuid)
    assert (first.name, second.name) == ("user-a", "user-b")
    assert second.parent == first.moref


async def test_query_changed_disk_areas_is_not_on_vcsim(vc: Any, make_vm: VMMaker) -> None:
    uuid = await make_vm()
    done = await vc.wait((await vc.enable_change_tracking(uuid)).moref, 30)
    assert done.state == "success"
    started = await vc.create_snapshot(uuid, REPLICATION_SNAPSHOT)
    moref = (await vc.wait(started.moref, 30)).result
    try:
        (disk,) = await vc.snapshot_disks(moref)
        with pytest.raises(ChangedBlockTrackingUnavailable, match="QueryChangedDiskAreas"):
            await vc.query_changed_areas(uuid, moref, disk.device_key, 0, "*")
    finally:
        await vc.wait((await vc.remove_snapshot(moref)).moref, 30)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (vmodl.fault.MethodNotFound(msg="no"), ChangedBlockTrackingUnavailable),
        (vmodl.fault.NotSupported(msg="cbt off"), ChangedBlockTrackingUnavailable),
        (vmodl.fault.InvalidArgument(invalidProperty="changeId"), ChangeIdRejected),
        (vim.fault.FileFault(file="[ds] x.vmdk"), ChangeIdRejected),
        (vim.fault.InvalidState(), type(None)),
    ],
)
def test_changed_areas_faults(fault: Any, expected: type) -> None:
    error = faults.changed_areas_fault(fault, "vc.example", "disk 2000")
    assert isinstance(error, expected)
    if error is not None:
        assert "vc.example" in str(error)
        assert "disk 2000" in str(error)
