"""The Azure emulator, driven only through the real Azure SDK clients.

Each test starts from a reset emulator whose clock runs 60 times faster than real
time (one real second is one emulated minute), with short long-running operations.
The control API (``azure_emulator.control``) seeds VMs and disks, plays the guest
writing to its disks, injects faults and reports what reached "Azure". (Against a
live test bed, ``FAILBACK_TESTBED_STATE``, these tests reset its emulator.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
)
from azure.identity import ClientSecretCredential
from azure.identity.aio import ClientSecretCredential as AioClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.aio import ComputeManagementClient as AioComputeManagementClient
from azure.storage.blob import BlobClient, LinearRetry
from azure.storage.blob.aio import BlobClient as AioBlobClient

from testbed.azure.process import AzureEmulator

RG = "rg-emulator-tests"
PAGE = 512
MIB = 1 << 20
SCALE = 60.0
READ = {"access": "Read", "durationInSeconds": 3600}


@pytest.fixture
def emulator(azure_emulator: AzureEmulator) -> Iterator[AzureEmulator]:
    control = azure_emulator.control
    control.reset()
    control.set_time_scale(SCALE)
    durations = dict.fromkeys(control.limits()["durations"], 6.0)  # 0.1 s of real time
    # Retry-After 0 makes the SDK poll at the client's own (short) polling_interval.
    control.set_limits(durations=durations, poll_retry_after=0)
    control.create_resource_group(RG)
    yield azure_emulator
    control.clear_faults()


def credential(emu: AzureEmulator, secret: str | None = None) -> ClientSecretCredential:
    return ClientSecretCredential(
        emu.tenant_id, emu.client_id, secret or emu.client_secret, **emu.credential_kwargs()
    )


def compute(emu: AzureEmulator, cred: Any = None, **kwargs: Any) -> ComputeManagementClient:
    return ComputeManagementClient(
        cred or credential(emu),
        emu.subscription_id,
        polling_interval=0.05,
        **emu.arm_client_kwargs(),
        **kwargs,
    )


def blob(emu: AzureEmulator, url: str, **kwargs: Any) -> BlobClient:
    return BlobClient.from_blob_url(url, connection_verify=str(emu.ca_file), **kwargs)


def snapshot_of(client: ComputeManagementClient, disk_name: str, name: str) -> Any:
    disk = client.disks.get(RG, disk_name)
    body = {
        "location": disk.location,
        "properties": {
            "incremental": True,
            "creationData": {"createOption": "Copy", "sourceResourceId": disk.id},
        },
    }
    return client.snapshots.begin_create_or_update(RG, name, body).result()


def power_state(view: Any) -> str:
    codes = [s.code for s in view.statuses if s.code.startswith("PowerState/")]
    assert len(codes) == 1, view.statuses
    return str(codes[0])


def write_pages(emu: AzureEmulator, disk: str, pages: list[int], fill: int = 0xAB) -> None:
    emu.control.guest_writes(
        RG, disk, [{"offset": p * PAGE, "length": PAGE, "fill": fill} for p in pages]
    )


def diff_pages(
    client: BlobClient, previous_url: str, **kwargs: Any
) -> tuple[list[dict[str, int]], list[dict[str, int]], list[str | None]]:
    """Every range of a managed-disk diff, following ``NextMarker``.

    ``get_page_range_diff_for_managed_disk`` sends one request and drops the marker,
    so the marker is read from the deserialized answer through the ``cls`` hook.
    """
    filled: list[dict[str, int]] = []
    cleared: list[dict[str, int]] = []
    markers: list[str | None] = []

    def keep(response: Any, deserialized: Any, headers: Any) -> Any:
        markers.append(deserialized.next_marker or None)
        return deserialized

    marker = None
    while True:
        more_filled, more_cleared = client.get_page_range_diff_for_managed_disk(
            previous_url, marker=marker, cls=keep, **kwargs
        )
        filled += more_filled
        cleared += more_cleared
        marker = markers[-1]
        if marker is None:
            return filled, cleared, markers


def test_the_handle_survives_a_state_file(emulator: AzureEmulator, tmp_path: Path) -> None:
    state = tmp_path / "azure.json"
    emulator.save(state)
    assert emulator.client_secret not in state.read_text()
    again = AzureEmulator.load(state)
    assert again == emulator
    assert again.control.health()["status"] == "ok"


# -- virtual machines and long-running operations -------------------------------------


def test_power_off_is_a_long_running_operation_seen_in_the_instance_view(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    # The real Retry-After here: the time the operation has left (1 s at least).
    control.set_limits(poll_retry_after=None, durations={"virtualMachines/powerOff": 60})
    control.create_vm(RG, "vm1", data_disk_sizes=(MIB,))
    with compute(emulator) as client:
        vm = client.virtual_machines.get(RG, "vm1")
        assert vm.storage_profile.os_disk.managed_disk.id.endswith("/disks/vm1-os")
        assert [d.lun for d in vm.storage_profile.data_disks] == [0]
        assert power_state(client.virtual_machines.instance_view(RG, "vm1")) == "PowerState/running"

        poller = client.virtual_machines.begin_power_off(RG, "vm1")
        during = client.virtual_machines.instance_view(RG, "vm1")
        assert power_state(during) == "PowerState/stopping"
        assert "ProvisioningState/updating" in [s.code for s in during.statuses]
        poller.result()
        assert poller.status() == "Succeeded"
        after = client.virtual_machines.instance_view(RG, "vm1")
        assert power_state(after) == "PowerState/stopped"
        assert "ProvisioningState/succeeded" in [s.code for s in after.statuses]
        disk = client.disks.get(RG, "vm1-data0")
        assert disk.disk_state == "Attached"
        assert disk.managed_by == vm.id

    transitions = [(e["from"], e["to"]) for e in control.events(kind="vm.power")]
    assert transitions == [(None, "running"), ("running", "stopping"), ("stopping", "stopped")]
    stamps = [e["timestamp"] for e in control.events(kind="vm.power")]
    assert stamps == sorted(stamps)
    # The operation's 60 emulated seconds passed between stopping and stopped.
    assert stamps[2] - stamps[1] >= 60


async def test_power_actions_with_the_aio_clients(emulator: AzureEmulator) -> None:
    emulator.control.set_limits(durations={"virtualMachines/powerOff": 60})
    emulator.control.create_vm(RG, "vm2")
    async with (
        AioClientSecretCredential(
            emulator.tenant_id,
            emulator.client_id,
            emulator.client_secret,
            **emulator.credential_kwargs(),
        ) as cred,
        AioComputeManagementClient(
            cred, emulator.subscription_id, polling_interval=0.05, **emulator.arm_client_kwargs()
        ) as client,
    ):
        poller = await client.virtual_machines.begin_power_off(RG, "vm2")
        assert power_state(await client.virtual_machines.instance_view(RG, "vm2")) == (
            "PowerState/stopping"
        )
        await poller.result()
        assert power_state(await client.virtual_machines.instance_view(RG, "vm2")) == (
            "PowerState/stopped"
        )
        await (await client.virtual_machines.begin_deallocate(RG, "vm2")).result()
        vm = await client.virtual_machines.get(RG, "vm2", expand="instanceView")
        assert power_state(vm.instance_view) == "PowerState/deallocated"
        assert (await client.disks.get(RG, "vm2-os")).disk_state == "Reserved"
        await (await client.virtual_machines.begin_start(RG, "vm2")).result()
        assert power_state(await client.virtual_machines.instance_view(RG, "vm2")) == (
            "PowerState/running"
        )
        names = [vm.name async for vm in client.virtual_machines.list(RG)]
        assert names == ["vm2"]


def test_a_continuation_token_resumes_the_operation_without_a_second_write(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.set_limits(durations={"virtualMachines/deallocate": 120})  # 2 real seconds
    control.create_vm(RG, "vm3")
    control.reset_stats()
    with compute(emulator) as first:
        token = first.virtual_machines.begin_deallocate(RG, "vm3").continuation_token()
    # A restarted operator: new credential, new client, only the stored token.
    with compute(emulator, credential(emulator)) as second:
        resumed = second.virtual_machines.begin_deallocate(RG, "vm3", continuation_token=token)
        resumed.result()
        view = second.virtual_machines.instance_view(RG, "vm3")
    assert power_state(view) == "PowerState/deallocated"
    stats = control.stats()
    assert stats["requests"]["arm_write"] == 1, stats
    assert stats["arm_writes_by_operation"] == {"virtualMachines/deallocate": 1}
    assert stats["operations"] == {"started": 1, "succeeded": 1, "failed": 0}


def test_a_newer_power_action_preempts_the_running_one(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.set_limits(durations={"virtualMachines/powerOff": 600})
    control.create_vm(RG, "vm4")
    with compute(emulator) as client:
        power_off = client.virtual_machines.begin_power_off(RG, "vm4")
        client.virtual_machines.begin_deallocate(RG, "vm4").result()
        with pytest.raises(HttpResponseError) as failed:
            power_off.result()
        assert "OperationPreempted" in str(failed.value)
        assert power_state(client.virtual_machines.instance_view(RG, "vm4")) == (
            "PowerState/deallocated"
        )


def test_an_injected_operation_failure_leaves_the_vm_as_it_was(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm5")
    control.add_fault(
        "fail_operation", path="/powerOff$", code="AllocationFailed", message="no capacity"
    )
    with compute(emulator) as client:
        with pytest.raises(HttpResponseError) as failed:
            client.virtual_machines.begin_power_off(RG, "vm5").result()
        assert "AllocationFailed" in str(failed.value)
        assert power_state(client.virtual_machines.instance_view(RG, "vm5")) == "PowerState/running"
    assert control.stats()["operations"]["failed"] == 1


def test_attached_disks_cannot_be_deleted_and_missing_ones_are_404(
    emulator: AzureEmulator,
) -> None:
    emulator.control.create_vm(RG, "vm6")
    with compute(emulator) as client:
        with pytest.raises(ResourceExistsError) as conflict:
            client.disks.begin_delete(RG, "vm6-os").result()
        assert conflict.value.status_code == 409
        assert conflict.value.error.code == "OperationNotAllowed"
        with pytest.raises(HttpResponseError) as missing:
            client.disks.get(RG, "no-such-disk")
        assert missing.value.status_code == 404
        assert missing.value.error.code == "ResourceNotFound"
        client.disks.begin_delete(RG, "no-such-disk").result()  # 204, as ARM answers


# -- disks, SAS and the page blob API -------------------------------------------------


def test_grant_access_gives_a_sas_for_ranged_reads(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm7", data_disk_sizes=(MIB,))
    data = bytes(range(256)) * 8
    control.guest_write(RG, "vm7-data0", 4096, data)
    cred = credential(emulator)
    token = cred.get_token(emulator.arm_scope).token
    with compute(emulator, cred) as client:
        with pytest.raises(ResourceExistsError) as attached:
            client.disks.begin_grant_access(RG, "vm7-data0", READ).result()
        assert "deallocate" in attached.value.error.message
        client.virtual_machines.begin_deallocate(RG, "vm7").result()
        access = client.disks.begin_grant_access(RG, "vm7-data0", READ).result()
        assert client.disks.get(RG, "vm7-data0").disk_state == "ActiveSAS"
    url = access.access_sas
    assert url.startswith(f"{emulator.endpoint}/md-")
    assert "sig=" in url
    with blob(emulator, url) as disk:
        props = disk.get_blob_properties()
        assert props.size == MIB
        assert props.blob_type == "PageBlob"
        assert disk.download_blob(offset=4096 + 100, length=1000).readall() == data[100:1100]
        assert disk.download_blob(offset=0, length=4096).readall() == bytes(4096)
    # Neither the SAS signature, nor the token, nor the secret ever reaches the log.
    log = emulator.log_file.read_text()
    signature = re.search(r"sig=([^&]+)", url)
    assert signature is not None
    assert unquote(signature.group(1)) not in log
    assert signature.group(1) not in log
    assert "sig=" not in log
    assert token not in log
    assert emulator.client_secret not in log


def test_incremental_snapshot_diff_reports_written_and_cleared_ranges(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.create_vm(RG, "vm8", data_disk_sizes=(MIB,))
    write_pages(emulator, "vm8-data0", [0, 1, 2, 3, 10, 11])
    with compute(emulator) as client:
        first = snapshot_of(client, "vm8-data0", "snap1")
        assert first.incremental
        assert first.provisioning_state == "Succeeded"
        # Rewriting the same bytes still counts as written, as in Azure.
        write_pages(emulator, "vm8-data0", [2, 20, 21])
        control.guest_clear(RG, "vm8-data0", 10 * PAGE, 2 * PAGE)
        second = snapshot_of(client, "vm8-data0", "snap2")
        assert second.incremental_snapshot_family_id == first.incremental_snapshot_family_id
        write_pages(emulator, "vm8-data0", [30], fill=0x11)  # after the snapshot: not in it
        url1 = client.snapshots.begin_grant_access(RG, "snap1", READ).result().access_sas
        url2 = client.snapshots.begin_grant_access(RG, "snap2", READ).result().access_sas
    with blob(emulator, url2) as snap2:
        filled, cleared = snap2.get_page_range_diff_for_managed_disk(url1)
        assert filled == [
            {"start": 2 * PAGE, "end": 3 * PAGE - 1},
            {"start": 20 * PAGE, "end": 22 * PAGE - 1},
        ]
        assert cleared == [{"start": 10 * PAGE, "end": 12 * PAGE - 1}]
        assert snap2.download_blob(offset=30 * PAGE, length=PAGE).readall() == bytes(PAGE)
        assert snap2.download_blob(offset=20 * PAGE, length=PAGE).readall() == b"\xab" * PAGE
    with blob(emulator, url1) as snap1:
        # list_page_ranges follows NextMarker itself: one range per answer here.
        valid = [(r.start, r.end, r.cleared) for r in snap1.list_page_ranges(results_per_page=1)]
        assert valid == [(0, 4 * PAGE - 1, False), (10 * PAGE, 12 * PAGE - 1, False)]
    assert control.read_snapshot(RG, "snap2", 20 * PAGE, PAGE) == b"\xab" * PAGE


async def test_the_aio_blob_client_reads_the_same_diff(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm9", data_disk_sizes=(MIB,))
    write_pages(emulator, "vm9-data0", [5])
    with compute(emulator) as client:
        snapshot_of(client, "vm9-data0", "a")
        write_pages(emulator, "vm9-data0", [6, 7])
        snapshot_of(client, "vm9-data0", "b")
        url_a = client.snapshots.begin_grant_access(RG, "a", READ).result().access_sas
        url_b = client.snapshots.begin_grant_access(RG, "b", READ).result().access_sas
    async with AioBlobClient.from_blob_url(url_b, connection_verify=str(emulator.ca_file)) as b:
        filled, cleared = await b.get_page_range_diff_for_managed_disk(url_a)
        assert filled == [{"start": 6 * PAGE, "end": 8 * PAGE - 1}]
        assert cleared == []
        stream = await b.download_blob(offset=5 * PAGE, length=3 * PAGE)
        assert await stream.readall() == b"\xab" * (3 * PAGE)


def test_a_diff_of_more_ranges_than_one_answer_holds_is_paged(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm10", data_disk_sizes=(16 * MIB,))
    with compute(emulator) as client:
        snapshot_of(client, "vm10-data0", "before")
        write_pages(emulator, "vm10-data0", [2 * i for i in range(10_001)])  # 10,001 ranges
        snapshot_of(client, "vm10-data0", "after")
        before = client.snapshots.begin_grant_access(RG, "before", READ).result().access_sas
        after = client.snapshots.begin_grant_access(RG, "after", READ).result().access_sas
    with blob(emulator, after) as snap:
        # One call of the SDK returns the first answer only: at most 10,000 ranges.
        first_page, _ = snap.get_page_range_diff_for_managed_disk(before)
        assert len(first_page) == 10_000
        filled, cleared, markers = diff_pages(snap, before)
        assert len(markers) == 2
        assert markers[-1] is None
        assert filled == [
            {"start": 2 * i * PAGE, "end": (2 * i + 1) * PAGE - 1} for i in range(10_001)
        ]
        assert cleared == []
        # Smaller answers through the SDK's maxresults; the ranges come out the same.
        small, _, small_markers = diff_pages(
            snap, before, maxresults=4_000, length=8 * MIB, offset=0
        )
        assert len(small_markers) == 3
        assert small == filled[:8192]


def test_an_upload_through_a_write_sas_and_a_read_sas_that_cannot_write(
    emulator: AzureEmulator,
) -> None:
    upload = {
        "location": "westeurope",
        "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": MIB}},
    }
    with compute(emulator) as client:
        disk = client.disks.begin_create_or_update(RG, "uploaded", upload).result()
        assert disk.disk_state == "ReadyToUpload"
        write = client.disks.begin_grant_access(
            RG, "uploaded", {"access": "Write", "durationInSeconds": 3600}
        ).result()
        assert client.disks.get(RG, "uploaded").disk_state == "ActiveUpload"
        with blob(emulator, write.access_sas) as target:
            target.upload_page(b"\x5a" * 8192, offset=0, length=8192)
            target.clear_page(offset=4096, length=4096)
        client.disks.begin_revoke_access(RG, "uploaded").result()
        assert client.disks.get(RG, "uploaded").disk_state == "Unattached"
        read = client.disks.begin_grant_access(RG, "uploaded", READ).result()
    with blob(emulator, read.access_sas) as source:
        assert source.download_blob(offset=0, length=8192).readall() == (
            b"\x5a" * 4096 + bytes(4096)
        )
        with pytest.raises(HttpResponseError) as refused:
            source.upload_page(b"\x00" * PAGE, offset=0, length=PAGE)
        assert refused.value.status_code == 403
        assert refused.value.error_code == "AuthorizationPermissionMismatch"
    assert emulator.control.read_disk(RG, "uploaded", 0, 4096) == b"\x5a" * 4096


def test_a_revoked_or_expired_sas_is_refused(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm11", power_state="deallocated")
    with compute(emulator) as client:
        url = client.disks.begin_grant_access(RG, "vm11-os", READ).result().access_sas
        with blob(emulator, url) as disk:
            assert disk.get_blob_properties().size == 4 * MIB
            client.disks.begin_revoke_access(RG, "vm11-os").result()
            with pytest.raises(ClientAuthenticationError) as revoked:
                disk.get_blob_properties()
            assert revoked.value.status_code == 403
        short = {"access": "Read", "durationInSeconds": 60}
        url = client.disks.begin_grant_access(RG, "vm11-os", short).result().access_sas
        control.advance(120)
        with blob(emulator, url) as disk, pytest.raises(ClientAuthenticationError) as expired:
            disk.download_blob(offset=0, length=PAGE).readall()
        assert expired.value.error_code == "AuthenticationFailed"
        tampered = url.replace("sp=r", "sp=rw")
        with blob(emulator, tampered) as disk, pytest.raises(ClientAuthenticationError):
            disk.get_blob_properties()


def test_a_diff_across_snapshot_families_is_refused(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm12", data_disk_sizes=(MIB, MIB))
    with compute(emulator) as client:
        snapshot_of(client, "vm12-data0", "x")
        snapshot_of(client, "vm12-data1", "y")
        url_x = client.snapshots.begin_grant_access(RG, "x", READ).result().access_sas
        url_y = client.snapshots.begin_grant_access(RG, "y", READ).result().access_sas
    with blob(emulator, url_y) as y, pytest.raises(HttpResponseError) as refused:
        y.get_page_range_diff_for_managed_disk(url_x)
    assert refused.value.status_code == 409
    assert refused.value.error_code == "PreviousSnapshotOperationNotSupported"


# -- faults and throttling -------------------------------------------------------------


def test_a_429_storm_is_retried_after_retry_after(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_disk(RG, "d1", MIB)
    control.add_fault("error", route="arm_read", status=429, retry_after=1, times=2)
    control.reset_stats()
    with compute(emulator) as client:
        assert client.disks.get(RG, "d1").disk_size_bytes == MIB
    stats = control.stats()
    assert stats["throttled"] == 2
    assert stats["responses_by_route"]["arm_read"] == {"200": 1, "429": 2}
    assert stats["faults_injected"] == 2


def test_5xx_and_dropped_connections_are_retried(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm13", power_state="deallocated")
    control.add_fault("error", route="arm_read", status=503, times=1)
    control.add_fault("close", route="arm_read", times=1)
    control.add_fault("hang", route="arm_read", seconds=3, times=1)
    control.reset_stats()
    with compute(emulator, retry_backoff_factor=0.05) as client:
        assert client.disks.get(RG, "vm13-os", read_timeout=1).name == "vm13-os"
        url = client.disks.begin_grant_access(RG, "vm13-os", READ).result().access_sas
    control.add_fault("error", route="blob_read", status=500, times=1)
    retry = LinearRetry(backoff=0.05, random_jitter_range=0)
    with blob(emulator, url, retry_policy=retry) as disk:
        assert disk.download_blob(offset=0, length=PAGE).readall() == bytes(PAGE)
    stats = control.stats()
    assert stats["faults_injected"] == 4
    assert stats["responses_by_route"]["arm_read"]["503"] == 1
    assert stats["responses_by_route"]["blob_read"]["500"] == 1


def test_an_expired_token_is_401_with_the_arm_error_code(emulator: AzureEmulator) -> None:
    control = emulator.control
    # At real speed the token lives an hour, so the client keeps using its cached one.
    control.set_time_scale(1)
    control.create_disk(RG, "d2", MIB)
    cred = credential(emulator)
    with compute(emulator, cred) as client:
        client.disks.get(RG, "d2")
        assert control.expire_tokens() >= 1
        with pytest.raises(ClientAuthenticationError) as expired:
            client.disks.get(RG, "d2")
        assert expired.value.status_code == 401
        assert expired.value.error.code == "InvalidAuthenticationTokenExpired"
    with compute(emulator) as fresh:  # a new token works again
        assert fresh.disks.get(RG, "d2").name == "d2"


def test_a_wrong_client_secret_is_a_clear_authentication_error(emulator: AzureEmulator) -> None:
    with (
        compute(emulator, credential(emulator, secret="not-the-secret")) as client,
        pytest.raises(ClientAuthenticationError) as refused,
    ):
        client.disks.get(RG, "anything")
    assert "AADSTS7000215" in str(refused.value)
    assert "Invalid client secret" in str(refused.value)


async def test_a_wrong_client_secret_with_the_aio_credential(emulator: AzureEmulator) -> None:
    async with AioClientSecretCredential(
        emulator.tenant_id, emulator.client_id, "nope", **emulator.credential_kwargs()
    ) as cred:
        with pytest.raises(ClientAuthenticationError) as refused:
            await cred.get_token(emulator.arm_scope)
    assert "AADSTS7000215" in str(refused.value)


def test_the_snapshot_rate_and_count_limits(emulator: AzureEmulator) -> None:
    control = emulator.control
    # Real time, so the five-minute window cannot pass while the test runs.
    control.set_time_scale(1)
    control.set_limits(durations={"snapshots/create": 0, "snapshots/delete": 0})
    control.create_vm(RG, "vm14", data_disk_sizes=(MIB,))
    with compute(emulator, retry_total=0) as client:
        for i in range(7):
            snapshot_of(client, "vm14-data0", f"s{i}")
        with pytest.raises(HttpResponseError) as throttled:
            snapshot_of(client, "vm14-data0", "s7")
        assert throttled.value.status_code == 429
        assert throttled.value.error.code == "SnapshotOperationRateExceeded"
        assert int(throttled.value.response.headers["Retry-After"]) >= 1
        control.advance(300)  # the five-minute window passes
        snapshot_of(client, "vm14-data0", "s7")
        control.set_limits(snapshots_per_disk=8)
        with pytest.raises(ResourceExistsError) as full:
            snapshot_of(client, "vm14-data0", "s8")
        assert full.value.error.code == "SnapshotCountExceeded"
        client.snapshots.begin_delete(RG, "s0").result()
        snapshot_of(client, "vm14-data0", "s8")


def test_at_most_five_sas_exports_per_snapshot_family(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_vm(RG, "vm15", data_disk_sizes=(MIB,))
    with compute(emulator) as client:
        for i in range(6):
            snapshot_of(client, "vm15-data0", f"e{i}")
        for i in range(5):
            client.snapshots.begin_grant_access(RG, f"e{i}", READ).result()
        with pytest.raises(ResourceExistsError) as refused:
            client.snapshots.begin_grant_access(RG, "e5", READ).result()
        assert refused.value.error.code == "OperationNotAllowed"
        assert "At most 5" in refused.value.error.message
        client.snapshots.begin_revoke_access(RG, "e0").result()
        client.snapshots.begin_grant_access(RG, "e5", READ).result()


def test_the_write_bucket_throttles_when_time_is_compressed(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_disk(RG, "d3", MIB)
    # One write an hour, three at once: at time scale 60 an hour is a real minute.
    control.set_limits(arm_writes_per_hour=1, arm_write_burst=3)
    remaining: list[int] = []

    def count(response: Any) -> None:
        remaining.append(
            int(response.http_response.headers["x-ms-ratelimit-remaining-subscription-writes"])
        )

    with compute(emulator, retry_total=0) as client:
        for _ in range(3):
            client.disks.begin_revoke_access(RG, "d3", polling=False, raw_response_hook=count)
        assert remaining == [2, 1, 0]
        with pytest.raises(HttpResponseError) as throttled:
            client.disks.begin_revoke_access(RG, "d3", polling=False)
        assert throttled.value.status_code == 429
        assert throttled.value.error.code == "SubscriptionRequestsThrottled"
        assert int(throttled.value.response.headers["Retry-After"]) >= 1
        client.disks.get(RG, "d3")  # reads have their own bucket
        control.advance(3600)  # an emulated hour later there is a token again
        client.disks.begin_revoke_access(RG, "d3").result()
    assert control.stats()["throttled"] == 1


# ------------------------------------------------------------------ the replica disk (sink)

WRITE = {"access": "Write", "durationInSeconds": 3600}


def test_an_unattached_replica_disk_takes_a_write_sas_again_and_its_snapshots_keep_tags(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.create_disk(RG, "replica", 8 * MIB)
    control.create_vm(RG, "vm-busy", data_disk_sizes=(MIB,))
    with compute(emulator) as client:
        for fill in (b"\x11", b"\x22"):  # two cycles: the disk is Unattached in between
            write = client.disks.begin_grant_access(RG, "replica", WRITE).result()
            with blob(emulator, write.access_sas) as target:
                target.upload_page(fill * 8192, offset=0, length=8192)
                # Azure allows a clear of any length (an update holds at most 4 MiB).
                target.clear_page(offset=2 * MIB, length=6 * MIB)
                # A snapshot while the Write SAS is live is refused.
                disk = client.disks.get(RG, "replica")
                body = {
                    "location": disk.location,
                    "tags": {"failback.io/point": fill.hex()},
                    "properties": {
                        "incremental": True,
                        "creationData": {"createOption": "Copy", "sourceResourceId": disk.id},
                    },
                }
                with pytest.raises(HttpResponseError) as busy:
                    client.snapshots.begin_create_or_update(RG, f"p-{fill.hex()}", body)
                assert busy.value.error.code == "OperationNotAllowed"
            client.disks.begin_revoke_access(RG, "replica").result()
            assert client.disks.get(RG, "replica").disk_state == "Unattached"
            client.snapshots.begin_create_or_update(RG, f"p-{fill.hex()}", body).result()
        listed = {s.name: s.tags for s in client.snapshots.list_by_resource_group(RG)}
        assert listed == {"p-11": {"failback.io/point": "11"}, "p-22": {"failback.io/point": "22"}}
        # An attached disk (its VM running) never takes a Write SAS.
        with pytest.raises(HttpResponseError) as attached:
            client.disks.begin_grant_access(RG, "vm-busy-data0", WRITE)
        assert attached.value.error.code == "OperationNotAllowed"
    assert control.read_snapshot(RG, "p-11", 0, 8192) == b"\x11" * 8192
    assert control.read_disk(RG, "replica", 0, 8192) == b"\x22" * 8192


def test_a_corrupt_fault_stores_a_page_write_with_a_flipped_byte(emulator: AzureEmulator) -> None:
    control = emulator.control
    control.create_disk(RG, "replica", MIB)
    control.add_fault("corrupt", times=1)
    with compute(emulator) as client:
        write = client.disks.begin_grant_access(RG, "replica", WRITE).result()
        with blob(emulator, write.access_sas) as target:
            target.upload_page(b"\x01" * PAGE, offset=0, length=PAGE)  # answered 201
            target.upload_page(b"\x01" * PAGE, offset=PAGE, length=PAGE)
        client.disks.begin_revoke_access(RG, "replica").result()
    assert control.read_disk(RG, "replica", 0, 2 * PAGE) == (
        b"\xfe" + b"\x01" * (PAGE - 1) + b"\x01" * PAGE
    )


def test_a_vm_boots_from_an_attached_os_disk_without_image_or_os_profile(
    emulator: AzureEmulator,
) -> None:
    control = emulator.control
    control.create_disk(RG, "restored-os", 4 * MIB, os_type="Linux")
    control.create_disk(RG, "restored-data", 2 * MIB)
    with compute(emulator) as client:
        os_id = client.disks.get(RG, "restored-os").id
        data_id = client.disks.get(RG, "restored-data").id
        body: dict[str, Any] = {
            "location": "westeurope",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                "storageProfile": {
                    "osDisk": {
                        "createOption": "Attach",
                        "osType": "Linux",
                        "managedDisk": {"id": os_id},
                    },
                    "dataDisks": [
                        {"lun": 0, "createOption": "Attach", "managedDisk": {"id": data_id}}
                    ],
                },
            },
        }
        with_profile = {
            **body,
            "properties": {
                **body["properties"],
                "osProfile": {"computerName": "x", "adminUsername": "a"},
            },
        }
        with pytest.raises(HttpResponseError) as refused:
            client.virtual_machines.begin_create_or_update(RG, "failed-over", with_profile)
        assert refused.value.status_code == 400
        vm = client.virtual_machines.begin_create_or_update(RG, "failed-over", body).result()
        assert vm.storage_profile.os_disk.create_option == "Attach"
        assert vm.storage_profile.os_disk.managed_disk.id.lower() == os_id.lower()
        assert vm.storage_profile.data_disks[0].managed_disk.id.lower() == data_id.lower()
        view = client.virtual_machines.instance_view(RG, "failed-over")
        assert any(s.code == "PowerState/running" for s in view.statuses)
        assert client.disks.get(RG, "restored-os").disk_state == "Attached"
