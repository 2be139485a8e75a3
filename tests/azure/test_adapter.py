"""The Azure adapter against the emulator, through the real ``aio`` SDK clients.

Long-running operations return a continuation token at once; a new adapter (a
restarted operator) finishes them from the token alone, and the emulator's request
counts prove that no second write was sent.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from failback.adapters.azure.clients import AzureClientsAdapter
from failback.adapters.azure.compute import Compute
from failback.ports.azure import (
    AzureAuthenticationFailed,
    AzureNotFound,
    AzureOperationFailed,
    AzureThrottled,
    AzureUnavailable,
    OperationHandle,
    OperationStatus,
    PowerState,
    VMDeployment,
)
from testbed.azure.process import AzureEmulator
from testbed.leaks import LeakGuard

from .conftest import RG, identity, options

MIB = 1 << 20
SUBNET = (
    "/subscriptions/{sub}/resourceGroups/rg-net/providers/Microsoft.Network"
    "/virtualNetworks/vnet/subnets/snet"
)


async def compute(clients: AzureClientsAdapter, emu: AzureEmulator) -> Compute:
    return await clients.compute(identity(emu), emu.subscription_id)


async def until_done(az: Compute, handle: OperationHandle, within: float = 20.0) -> OperationStatus:
    """Poll (one read each) until the operation ends."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = await az.poll(handle)
        if status.done:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.kind} did not finish within {within} s")


def deployment(emu: AzureEmulator, name: str, tags: dict[str, str]) -> VMDeployment:
    return VMDeployment(
        resource_group=RG,
        name=name,
        location="westeurope",
        vm_size="Standard_D4s_v5",
        subnet_id=SUBNET.format(sub=emu.subscription_id),
        image_publisher="Canonical",
        image_offer="ubuntu-24_04-lts",
        image_sku="server",
        image_version="latest",
        admin_username="failback",
        tags=tags,
    )


async def test_a_vm_is_read_with_its_instance_view_and_power_cycled(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm1", data_disk_sizes=(MIB, 2 * MIB), os_type="Windows")
    az = await compute(clients, emulator)
    vm = await az.get_vm(RG, "vm1")
    assert vm is not None
    assert (vm.name, vm.resource_group, vm.location) == ("vm1", RG, "westeurope")
    assert vm.os_type == "Windows"
    assert vm.power_state == PowerState.RUNNING
    assert vm.power_since is not None
    assert [d.lun for d in vm.data_disks] == [0, 1]
    assert all(d.id and d.id.endswith(f"/disks/{d.name}") for d in vm.disks)
    assert await az.get_vm(RG, "nope") is None

    for begin, state in (
        (az.begin_power_off, PowerState.STOPPED),
        (az.begin_deallocate, PowerState.DEALLOCATED),
        (az.begin_start, PowerState.RUNNING),
    ):
        handle = await begin(RG, "vm1")
        assert (handle.resource_group, handle.name) == (RG, "vm1")
        await until_done(az, handle)
        after = await az.get_vm(RG, "vm1")
        assert after is not None
        assert after.power_state == state
    transitions = [e["to"] for e in emulator.control.events(kind="vm.power")]
    assert transitions == [
        "running", "stopping", "stopped", "deallocating", "deallocated", "starting", "running",
    ]  # fmt: skip


async def test_a_restart_mid_operation_resumes_it_without_a_second_write(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.set_limits(durations={"virtualMachines/deallocate": 120})  # 2 real seconds
    control.create_vm(RG, "vm2")
    control.reset_stats()
    first = AzureClientsAdapter(options(emulator))
    handle = await (await compute(first, emulator)).begin_deallocate(RG, "vm2")
    assert handle.retry_after == 2  # the operation's time left, in real seconds
    await first.close()  # the operator dies; only the token survives, in status
    stored = OperationHandle(handle.kind, handle.resource_group, handle.name, handle.token)
    assert len(stored.token) <= 8192, "status.operations[].id holds at most 8192 characters"

    second = AzureClientsAdapter(options(emulator))
    try:
        az = await compute(second, emulator)
        status = await az.poll(stored)
        assert not status.done
        await until_done(az, stored)
        vm = await az.get_vm(RG, "vm2")
        assert vm is not None
        assert vm.power_state == PowerState.DEALLOCATED
    finally:
        await second.close()
    stats = control.stats()
    assert stats["requests"]["arm_write"] == 1, stats
    assert stats["arm_writes_by_operation"] == {"virtualMachines/deallocate": 1}
    assert stats["operations"] == {"started": 1, "succeeded": 1, "failed": 0}


async def test_a_vm_is_created_found_by_its_tag_and_deleted(
    emulator: AzureEmulator, clients: AzureClientsAdapter, leak_guard: LeakGuard
) -> None:
    az = await compute(clients, emulator)
    tags = {"failback.io/process-server": "ns/ps-1", "failback.io/uid": "1234"}
    handle = await az.begin_vm_create(deployment(emulator, "ps-1-vm", tags))
    assert len(handle.token) <= 8192
    await until_done(az, handle)
    found = await az.find_vms_by_tag(RG, "failback.io/uid", "1234")
    assert [vm.name for vm in found] == ["ps-1-vm"]
    assert found[0].power_state == PowerState.RUNNING
    assert found[0].vm_size == "Standard_D4s_v5"
    # Its NIC was made in the subnet, with the emulator's first (loopback) address.
    assert len(found[0].nic_ids) == 1
    nic = found[0].nic_ids[0]
    assert "/providers/Microsoft.Network/networkInterfaces/" in nic
    assert await az.private_ip(nic) == "127.0.0.4"
    assert await az.find_vms_by_tag(RG, "failback.io/uid", "other") == []
    assert await az.find_vms_by_tag("rg-that-does-not-exist", "failback.io/uid", "1234") == []

    await until_done(az, await az.begin_vm_delete(RG, "ps-1-vm"))
    assert await az.get_vm(RG, "ps-1-vm") is None
    # The OS disk and the NIC go with the VM (deleteOption Delete).
    assert await az.get_disk(RG, "ps-1-vm-os") is None
    assert await az.private_ip(nic) is None
    deleted = [e["kind"] for e in emulator.control.events() if "ps-1-vm" in e["resource_id"]]
    assert "vm.deleted" in deleted
    assert "disk.deleted" in deleted


async def test_disks_snapshots_and_access(
    emulator: AzureEmulator, clients: AzureClientsAdapter, leak_guard: LeakGuard
) -> None:
    emulator.control.create_vm(RG, "vm3", data_disk_sizes=(MIB,), power_state="deallocated")
    az = await compute(clients, emulator)
    disks = {d.name: d for d in await az.list_disks(RG)}
    assert set(disks) == {"vm3-os", "vm3-data0"}
    data = disks["vm3-data0"]
    assert data.size_bytes == MIB
    assert data.disk_state == "Reserved"
    assert data.managed_by is not None
    assert data.managed_by.endswith("/virtualMachines/vm3")

    await until_done(az, await az.begin_snapshot_create(RG, "snap-1", data, {"cycle": "1"}))
    snap = await az.get_snapshot(RG, "snap-1")
    assert snap is not None
    assert snap.incremental
    assert snap.source_id == data.id
    assert snap.tags == {"cycle": "1"}

    granted = await until_done(
        az, await az.begin_grant_access(RG, "snap-1", snapshot=True, write=False, seconds=3600)
    )
    assert granted.result is not None
    assert "sig=" in granted.result
    leak_guard.secrets.append(granted.result)
    await until_done(az, await az.begin_revoke_access(RG, "snap-1", snapshot=True))
    await until_done(az, await az.begin_snapshot_delete(RG, "snap-1"))
    assert await az.get_snapshot(RG, "snap-1") is None

    handle = await az.begin_disk_create_for_upload(
        RG, "upload-1", "westeurope", 4 * MIB, {"for": "failover"}, os_type="Linux"
    )
    await until_done(az, handle)
    upload = await az.get_disk(RG, "upload-1")
    assert upload is not None
    assert upload.disk_state == "ReadyToUpload"
    writable = await until_done(
        az, await az.begin_grant_access(RG, "upload-1", snapshot=False, write=True, seconds=600)
    )
    assert writable.result is not None
    assert "sig=" in writable.result
    leak_guard.secrets.append(writable.result)
    await until_done(az, await az.begin_revoke_access(RG, "upload-1", snapshot=False))
    await until_done(az, await az.begin_disk_delete(RG, "upload-1"))
    assert await az.get_disk(RG, "upload-1") is None
    kinds = [e["kind"] for e in emulator.control.events()]
    assert kinds.count("access.granted") == 2
    assert kinds.count("access.revoked") == 2


async def test_an_operation_that_fails_in_azure_says_why(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm4")
    emulator.control.add_fault(
        "fail_operation", path="/powerOff$", code="AllocationFailed", message="no capacity"
    )
    az = await compute(clients, emulator)
    handle = await az.begin_power_off(RG, "vm4")
    with pytest.raises(AzureOperationFailed) as failed:
        await until_done(az, handle)
    assert "AllocationFailed" in str(failed.value) or failed.value.code == "AllocationFailed"
    with pytest.raises(AzureNotFound):
        await az.begin_power_off(RG, "no-such-vm")


# ------------------------------------------------------------------ faults


async def test_a_short_429_storm_is_ridden_out_honouring_retry_after(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm5")
    emulator.control.reset_stats()
    emulator.control.add_fault("error", route="arm_read", status=429, retry_after=1, times=2)
    az = await compute(clients, emulator)
    started = time.monotonic()
    vm = await az.get_vm(RG, "vm5")
    assert vm is not None
    assert time.monotonic() - started >= 1.0, "Retry-After was not honoured"
    stats = emulator.control.stats()
    assert stats["requests"]["arm_read"] == 3
    assert stats["faults_injected"] == 2


async def test_a_long_retry_after_ends_the_call_with_that_delay_instead_of_sleeping(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm6")
    emulator.control.add_fault("error", route="arm_write", status=429, retry_after=120, times=5)
    az = await compute(clients, emulator)
    started = time.monotonic()
    with pytest.raises(AzureThrottled) as throttled:
        await az.begin_deallocate(RG, "vm6")
    assert time.monotonic() - started < 5
    assert throttled.value.delay == 120
    assert throttled.value.reason == "AzureThrottled"
    # The principal's bucket now holds writes back for that long: no write goes out.
    emulator.control.clear_faults()
    emulator.control.reset_stats()
    with pytest.raises(AzureThrottled) as paced:
        await az.begin_deallocate(RG, "vm6")
    assert paced.value.code == "ClientSideThrottled"
    assert paced.value.delay > 100
    assert emulator.control.stats()["requests"].get("arm_write", 0) == 0
    # Reads are paced separately and still go.
    assert await az.get_vm(RG, "vm6") is not None


async def test_5xx_is_retried_and_then_reported_as_unavailable(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm7")
    az = await compute(clients, emulator)
    emulator.control.add_fault("error", route="arm_read", status=503, retry_after=1, times=1)
    emulator.control.add_fault("error", route="arm_read", status=500, times=1)
    assert await az.get_vm(RG, "vm7") is not None
    emulator.control.add_fault("error", route="arm_read", status=500, for_seconds=3600)
    with pytest.raises(AzureUnavailable) as unavailable:
        await az.get_vm(RG, "vm7")
    assert "InternalServerError" in str(unavailable.value) or unavailable.value.code
    assert unavailable.value.reason == "ConnectionFailed"


async def test_a_timeout_is_retried_and_then_reported(emulator: AzureEmulator) -> None:
    emulator.control.create_vm(RG, "vm8")
    adapter = AzureClientsAdapter(options(emulator, read_timeout=0.5, retries=1))
    try:
        az = await compute(adapter, emulator)
        assert await az.get_vm(RG, "vm8") is not None  # signed in, connection open
        emulator.control.add_fault("hang", route="arm_read", seconds=2, times=1)
        assert await az.get_vm(RG, "vm8") is not None
        emulator.control.add_fault("hang", route="arm_read", seconds=2, times=5)
        with pytest.raises(AzureUnavailable):
            await az.get_vm(RG, "vm8")
    finally:
        await adapter.close()


async def test_an_expired_token_is_replaced_by_signing_in_again(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.create_vm(RG, "vm9")
    az = await compute(clients, emulator)
    assert await az.get_vm(RG, "vm9") is not None
    emulator.control.reset_stats()
    assert emulator.control.expire_tokens() >= 1
    assert await az.get_vm(RG, "vm9") is not None
    stats = emulator.control.stats()
    assert stats["requests"]["token"] == 1, stats
    assert stats["responses_by_route"]["arm_read"].get("401") == 1, stats


async def test_a_wrong_secret_is_an_authentication_failure_that_does_not_quote_it(
    emulator: AzureEmulator, leak_guard: LeakGuard
) -> None:
    wrong = "definitely-not-the-secret-0123456789"
    leak_guard.secrets.append(wrong)
    adapter = AzureClientsAdapter(options(emulator))
    try:
        az = await adapter.compute(identity(emulator, wrong), emulator.subscription_id)
        with pytest.raises(AzureAuthenticationFailed) as refused:
            await az.get_vm(RG, "vm")
    finally:
        await adapter.close()
    assert "7000215" in str(refused.value)
    assert wrong not in str(refused.value)
    assert refused.value.reason == "AzureAuthenticationFailed"


async def test_the_client_side_bucket_keeps_writes_under_the_pace(emulator: AzureEmulator) -> None:
    emulator.control.create_vm(RG, "vm10")
    adapter = AzureClientsAdapter(
        options(emulator, writes_per_hour=3600.0, write_burst=2, max_inline_wait=0.2)
    )
    emulator.control.reset_stats()
    try:
        az = await compute(adapter, emulator)
        await az.begin_power_off(RG, "vm10")
        await az.begin_power_off(RG, "vm10")
        with pytest.raises(AzureThrottled) as paced:
            await az.begin_power_off(RG, "vm10")
        assert paced.value.code == "ClientSideThrottled"
        assert 0.2 < paced.value.delay <= 1.0
        await asyncio.sleep(paced.value.delay)
        await az.begin_power_off(RG, "vm10")
    finally:
        await adapter.close()
    stats = emulator.control.stats()
    assert stats["requests"]["arm_write"] == 3
    assert stats["throttled"] == 0


async def test_the_sdk_logs_are_captured_and_hold_no_secret(
    emulator: AzureEmulator, clients: AzureClientsAdapter, leak_guard: LeakGuard
) -> None:
    emulator.control.create_vm(RG, "vm11", power_state="deallocated")
    az = await compute(clients, emulator)
    granted = await until_done(
        az, await az.begin_grant_access(RG, "vm11-os", snapshot=False, write=False, seconds=60)
    )
    assert granted.result is not None
    leak_guard.secrets.append(granted.result)
    leak_guard.secrets.append(granted.result.split("sig=", 1)[1].split("&", 1)[0])
    assert any("Request URL" in line for line in leak_guard.lines), "the SDK's logs were not seen"


async def test_a_poll_that_fails_is_a_fault_and_a_forgotten_operation_is_not_found(
    emulator: AzureEmulator, clients: AzureClientsAdapter
) -> None:
    emulator.control.set_limits(durations={"virtualMachines/powerOff": 600})
    emulator.control.create_vm(RG, "vm12")
    az = await compute(clients, emulator)
    handle = await az.begin_power_off(RG, "vm12")
    emulator.control.add_fault("error", route="arm_poll", status=503, for_seconds=3600)
    with pytest.raises(AzureUnavailable):
        await az.poll(handle)
    emulator.control.clear_faults()
    assert not (await az.poll(handle)).done
    emulator.control.reset()  # Azure forgets the operation (and everything else)
    with pytest.raises(AzureNotFound):
        await az.poll(handle)


async def test_the_bucket_follows_what_arm_says_is_left_for_the_principal(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm13")
    # ARM allows 4 more writes in a burst, refilled at one per emulated minute (a real second).
    control.set_limits(arm_write_burst=4, arm_writes_per_hour=60)
    adapter = AzureClientsAdapter(
        options(emulator, writes_per_hour=1800.0, write_burst=100, max_inline_wait=0.5)
    )
    control.reset_stats()
    try:
        az = await compute(adapter, emulator)
        await az.begin_power_off(RG, "vm13")  # ARM: 3 left
        await az.begin_power_off(RG, "vm13")  # 2 left
        await az.begin_power_off(RG, "vm13")  # 1 left
        await az.begin_power_off(RG, "vm13")  # 0 left: the bucket now holds nothing
        with pytest.raises(AzureThrottled) as paced:
            await az.begin_power_off(RG, "vm13")
        assert paced.value.code == "ClientSideThrottled"
    finally:
        await adapter.close()
    stats = control.stats()
    assert stats["requests"]["arm_write"] == 4
    assert stats["throttled"] == 0
