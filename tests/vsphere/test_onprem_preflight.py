"""The on-premises preflight of ProtectedVMs on vcsim: each condition in both states, and
the location decision (original with delta sync, alternate with full sync)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from failback.adapters.kubernetes import KubeReads
from failback.adapters.mastertarget.client import HealthClient
from failback.adapters.vsphere import Sessions
from failback.api import protectedvm
from failback.api.conditions import ConditionType as CT
from failback.services import mastertarget as mt_service
from failback.services.onprem_preflight import OnPremPreflight, onprem_preflight
from testbed.pki import Pki
from testbed.vcsim import VCenter

from .conftest import VMMaker, put_secret, vcenter_secret, vm_of, wait_task
from .test_mastertarget import NOW, TLS, master_target

AZURE_ID = (
    "/subscriptions/0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c/resourceGroups/dr"
    "/providers/Microsoft.Compute/virtualMachines/web-01"
)
PLACEMENT = {"datacenter": "DC0", "host": "DC0_H0", "datastore": "FB_VMFS_0"}


def protected_vm(namespace: str, on_prem: dict[str, Any], **spec: Any) -> protectedvm.ProtectedVM:
    body = {
        "metadata": {"name": "web-01", "namespace": namespace, "uid": "u", "generation": 2},
        "spec": {
            "azure": {"vmId": AZURE_ID, "credentialsSecretRef": {"name": "azure"}},
            "onPrem": {"vcenterSecretRef": {"name": "vcenter"}, **on_prem},
            "osType": "Linux",
            "masterTargetRef": {"name": "mt"},
            "processServerRef": {"name": "ps"},
            **spec,
        },
    }
    return protectedvm.parse(body)


@pytest.fixture
def ns(k8s_client: Any, namespace: str, vcenter: VCenter) -> str:
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", TLS)
    return namespace


def conds(result: OnPremPreflight) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in result.conditions}


async def check(
    vm: protectedvm.ProtectedVM,
    mt_uuid: str | None,
    secrets: KubeReads,
    sessions: Sessions,
    mt_os: str = "Linux",
    source_os: str | None = None,
) -> OnPremPreflight:
    mt = master_target(vm.meta.namespace, mt_uuid, osType=mt_os) if mt_uuid else None
    if mt is not None and mt_os == "Windows":
        mt = master_target(vm.meta.namespace, mt_uuid, osType="Windows", retentionVolume="R:")
    return await onprem_preflight(vm, mt, secrets, sessions, NOW, source_os=source_os)


async def test_original_vm_with_delta_sync_and_its_snapshots(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker, si: Any
) -> None:
    mt = await make_vm()
    original = await make_vm()
    vm = protected_vm(
        ns, {"originalVM": {"instanceUUID": original}, "alternatePlacement": PLACEMENT}
    )
    result = await check(vm, mt, secrets, sessions)
    c = conds(result)
    assert set(c) == {
        CT.OS_MATCHES_MASTER_TARGET,
        CT.VCENTER_DISCOVERED,
        CT.LOCATION_RESOLVED,
        CT.VCENTER_PERMISSIONS,
        CT.ORIGINAL_VM_NO_SNAPSHOTS,
        CT.DISK_UUIDS_UNIQUE,
        CT.LICENSE_ALLOWS_FAILBACK,
    }
    assert {t: v for t, v in c.items() if v[0] != "True"} == {}
    assert c[CT.LOCATION_RESOLVED][1] == "OriginalLocation"
    assert result.location == protectedvm.Location(
        protectedvm.LocationTarget.ORIGINAL,
        protectedvm.SyncMode.DELTA,
        result.location.reason if result.location else None,
    )
    assert all(x.observed_generation == 2 for x in result.conditions)

    wait_task(vm_of(si, original).CreateSnapshot_Task("pre-failback", "", False, False))
    status, reason, message = conds(await check(vm, mt, secrets, sessions))[
        CT.ORIGINAL_VM_NO_SNAPSHOTS
    ]
    assert (status, reason) == ("False", "OriginalVMHasSnapshots")
    assert "pre-failback" in message
    assert "delete them" in message


async def test_original_vm_gone_goes_to_the_alternate_placement_with_full_sync(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    mt = await make_vm()
    gone = str(uuid.uuid4())
    vm = protected_vm(ns, {"originalVM": {"instanceUUID": gone}, "alternatePlacement": PLACEMENT})
    result = await check(vm, mt, secrets, sessions)
    c = conds(result)
    assert c[CT.LOCATION_RESOLVED][:2] == ("True", "AlternateLocation")
    assert result.location is not None
    assert result.location.target == protectedvm.LocationTarget.ALTERNATE
    assert result.location.sync == protectedvm.SyncMode.FULL
    assert gone in (result.location.reason or "")
    assert c[CT.ORIGINAL_VM_NO_SNAPSHOTS][0] == "True"

    forced = protected_vm(
        ns, {"originalVM": {"instanceUUID": gone}, "failbackLocation": "Original"}
    )
    result = await check(forced, mt, secrets, sessions)
    status, reason, message = conds(result)[CT.LOCATION_RESOLVED]
    assert (status, reason) == ("False", "OriginalVMNotFound")
    assert gone in message
    assert result.location is None


async def test_the_master_targets_host_must_reach_the_original_datastores(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    # FB_VMFS_0 is mounted on DC0_H0 only: an MT in the cluster cannot write there.
    mt = await make_vm(host="DC0_C0_H0", datastore="LocalDS_0")
    original = await make_vm()
    vm = protected_vm(ns, {"originalVM": {"instanceUUID": original}})
    status, reason, message = conds(await check(vm, mt, secrets, sessions))[CT.LOCATION_RESOLVED]
    assert (status, reason) == ("False", "DatastoreNotAccessible")
    assert "DC0_C0_H0" in message
    assert "FB_VMFS_0" in message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"datastore": "NoSuchDS"}, "datastore NoSuchDS does not exist"),
        ({"host": "esx-99"}, "host esx-99 does not exist"),
        ({"folder": "dr/restored"}, "VM folder dr/restored does not exist"),
        ({"networks": [{"portGroup": "PG-404"}]}, "port group PG-404 does not exist"),
        ({"datacenter": "DC9"}, "datacenter DC9 does not exist"),
    ],
)
async def test_an_alternate_placement_that_does_not_resolve(
    ns: str,
    secrets: KubeReads,
    sessions: Sessions,
    make_vm: VMMaker,
    change: dict[str, Any],
    words: str,
) -> None:
    mt = await make_vm()
    vm = protected_vm(
        ns, {"failbackLocation": "Alternate", "alternatePlacement": {**PLACEMENT, **change}}
    )
    status, reason, message = conds(await check(vm, mt, secrets, sessions))[CT.LOCATION_RESOLVED]
    assert (status, reason) == ("False", "PlacementNotFound")
    assert words in message


async def test_a_good_alternate_placement_with_folder_and_network(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    mt = await make_vm()
    place = {**PLACEMENT, "folder": "/", "networks": [{"portGroup": "VM Network"}]}
    vm = protected_vm(ns, {"alternatePlacement": place})
    result = await check(vm, mt, secrets, sessions)
    assert conds(result)[CT.LOCATION_RESOLVED][:2] == ("True", "AlternateLocation")


async def test_physical_servers_come_back_as_new_vms_and_their_os_is_checked(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    mt = await make_vm()
    vm = protected_vm(
        ns, {"alternatePlacement": PLACEMENT}, sourceType="Physical", osType="Windows"
    )
    result = await check(
        vm, mt, secrets, sessions, mt_os="Windows", source_os="Windows Server 2008 R2 SP1"
    )
    c = conds(result)
    assert result.location is not None
    assert result.location.target == protectedvm.LocationTarget.ALTERNATE
    assert "R-LOC-3" in (result.location.reason or "")
    assert c[CT.SOURCE_OS_SUPPORTED][:2] == ("False", "UnsupportedSourceOS")
    ok = await check(vm, mt, secrets, sessions, mt_os="Windows", source_os="Windows Server 2019")
    assert conds(ok)[CT.SOURCE_OS_SUPPORTED][:2] == ("True", "CheckPassed")


async def test_os_mismatch_and_master_target_in_another_vcenter(
    ns: str, secrets: KubeReads, sessions: Sessions, make_vm: VMMaker
) -> None:
    mt = await make_vm()
    vm = protected_vm(ns, {"alternatePlacement": PLACEMENT})
    c = conds(await check(vm, mt, secrets, sessions, mt_os="Windows"))
    assert c[CT.OS_MATCHES_MASTER_TARGET] == (
        "False",
        "OSMismatch",
        "This Linux VM cannot use Windows MasterTarget mt: a Linux VM needs a Linux master "
        "target; point spec.masterTargetRef at one (R-PRE-10)",
    )
    elsewhere = str(uuid.uuid4())
    status, reason, message = conds(await check(vm, elsewhere, secrets, sessions))[
        CT.VCENTER_DISCOVERED
    ]
    assert (status, reason) == ("False", "VCenterNotDiscovered")
    assert elsewhere in message


async def test_secret_and_vcenter_problems(
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    secrets: KubeReads,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    vm = protected_vm(namespace, {"alternatePlacement": PLACEMENT})
    result = await check(vm, None, secrets, sessions)
    c = conds(result)
    assert c[CT.REFERENCES_RESOLVED][:2] == ("False", "SecretNotFound")
    assert "spec.onPrem.vcenterSecretRef" in c[CT.REFERENCES_RESOLVED][2]
    assert c[CT.LOCATION_RESOLVED][:2] == ("Unknown", "SecretNotFound")
    assert c[CT.LOCATION_RESOLVED][2].startswith("Not checked: Secret vcenter")
    wrong_ca = Pki(tmp_path / "other").ca_file.read_text()
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter, caBundle=wrong_ca))
    c = conds(await check(vm, None, secrets, sessions))
    for t in (CT.VCENTER_PERMISSIONS, CT.VCENTER_DISCOVERED, CT.LOCATION_RESOLVED):
        assert c[t][:2] == ("False", "TLSVerificationFailed"), t


async def test_many_objects_on_one_vcenter_share_one_session_and_one_read_per_pass(
    ns: str, secrets: KubeReads, make_vm: VMMaker, vcenter: VCenter
) -> None:
    mts = [await make_vm() for _ in range(2)]
    originals = [await make_vm() for _ in range(3)]
    vms = [
        protected_vm(ns, {"originalVM": {"instanceUUID": o}, "alternatePlacement": PLACEMENT})
        for o in originals
    ] * 5  # 15 ProtectedVMs
    cache = Sessions(inventory_max_age=30.0)
    try:
        for _ in range(3):  # three passes
            await asyncio.gather(
                *(check(v, mts[i % 2], secrets, cache) for i, v in enumerate(vms)),
                *(
                    mt_service.reconcile(master_target(ns, m), secrets, cache, HealthClient(), NOW)
                    for m in mts
                ),
            )
            cache.clients()[0].invalidate()
        [client] = cache.clients()
        calls = client.wire_calls()
        assert calls["Login"] == 1
        assert calls["RetrievePropertiesEx"] == 3, calls
        assert calls["Fetch"] <= 1, calls
        per_pass = (sum(calls.values()) - 4) / 3  # minus the login's own requests
        assert per_pass <= 3, calls
    finally:
        await cache.close()
