"""Sessions: one per vCenter and user, checked alive, logged in again when vCenter ends
them, logged out at shutdown; TLS verified against the CA or a pinned thumbprint, never
insecure; faults mapped to the port's errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from failback.adapters.mastertarget.client import HealthClient
from failback.adapters.vsphere import Sessions
from failback.api.conditions import ConditionType as CT
from failback.ports.vsphere import TLSVerificationFailed, VCenterLoginFailed, VCenterUnreachable
from failback.services import mastertarget as service
from testbed.pki import Pki
from testbed.procs import free_port
from testbed.vcsim import VCenter

from .conftest import VMMaker, credentials, put_secret, vcenter_secret
from .test_mastertarget import NOW, TLS, master_target


def sessions_of(si: Any, key: str | None = None) -> set[str]:
    return {s.key for s in si.content.sessionManager.sessionList}


def der_of(vc: VCenter) -> bytes:
    pem = ssl.get_server_certificate((vc.host, vc.port))
    return ssl.PEM_cert_to_DER_cert(pem)


async def test_one_session_per_vcenter_and_user_and_logout_on_close(
    vcenter: VCenter, si: Any
) -> None:
    before = sessions_of(si)
    cache = Sessions()
    clients = await asyncio.gather(*(cache.connect(credentials(vcenter)) for _ in range(10)))
    assert len({id(c) for c in clients}) == 1
    opened = sessions_of(si) - before
    assert opened == {clients[0].session_key}
    await cache.close()
    assert clients[0].session_key not in sessions_of(si), "logged out: no lingering session"


async def test_a_session_vcenter_ended_is_replaced_by_a_new_login(
    vcenter: VCenter, si: Any
) -> None:
    cache = Sessions(check_interval=3600)
    try:
        client = await cache.connect(credentials(vcenter))
        first = client.session_key
        si.content.sessionManager.TerminateSession([first])
        # The next call meets NotAuthenticated, logs in again and succeeds.
        inventory = await client.inventory(max_age=0)
        assert inventory.vms
        assert client.logins == 2
        assert client.session_key not in (None, first)
    finally:
        await cache.close()


async def test_an_idle_session_is_checked_before_reuse(vcenter: VCenter, si: Any) -> None:
    cache = Sessions(check_interval=0.0)
    try:
        client = await cache.connect(credentials(vcenter))
        first = client.session_key
        si.content.sessionManager.TerminateSession([first])
        again = await cache.connect(credentials(vcenter))
        assert again is client
        assert client.logins == 2
        assert client.session_key != first
        assert client.wire_calls()["RetrievePropertiesEx"] >= 1, "liveness read currentSession"
    finally:
        await cache.close()


async def test_a_rotated_secret_gets_a_new_session_and_the_old_one_is_logged_out(
    vcenter: VCenter, si: Any
) -> None:
    cache = Sessions(idle_logout=0.0)
    try:
        a = await cache.connect(credentials(vcenter))
        key = a.session_key
        pinned = hashlib.sha256(der_of(vcenter)).hexdigest()
        b = await cache.connect(credentials(vcenter, thumbprint=pinned, ca_bundle=None))
        assert b is not a
        assert key not in sessions_of(si), "the unused old session was logged out"
        assert cache.clients() == [b]
    finally:
        await cache.close()


async def test_two_secrets_for_one_account_do_not_log_each_other_out(
    vcenter: VCenter, si: Any
) -> None:
    """One Secret with a CA bundle, one with a thumbprint, and one with an old password,
    all for the same user, used in turns by different objects."""
    cache = Sessions()
    try:
        pinned = hashlib.sha256(der_of(vcenter)).hexdigest()
        variants = [
            credentials(vcenter),
            credentials(vcenter, thumbprint=pinned, ca_bundle=None),
            credentials(vcenter, password="outdated"),
        ]
        for _ in range(5):
            for creds in variants:
                with contextlib.suppress(VCenterLoginFailed):
                    await cache.connect(creds)
        logins = [c.wire_calls()["Login"] for c in cache.clients()]
        assert logins == [1, 1, 1], "one login each, not one per turn"
    finally:
        await cache.close()


@pytest.mark.parametrize("algorithm", [hashlib.sha256, hashlib.sha1])
async def test_a_pinned_thumbprint_is_trusted(vcenter: VCenter, algorithm: Any) -> None:
    digest = algorithm(der_of(vcenter)).hexdigest().upper()
    pinned = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    from failback.domain.vsphere import normalize_thumbprint

    cache = Sessions()
    try:
        creds = credentials(vcenter, ca_bundle=None, thumbprint=normalize_thumbprint(pinned))
        client = await cache.connect(creds)
        assert (await client.inventory(max_age=0)).hosts
    finally:
        await cache.close()


async def test_an_untrusted_certificate_is_refused(vcenter: VCenter, tmp_path: Path) -> None:
    other_ca = Pki(tmp_path / "other").ca_file.read_text()
    cache = Sessions()
    try:
        with pytest.raises(TLSVerificationFailed, match="did not verify"):
            await cache.connect(credentials(vcenter, ca_bundle=other_ca))
        wrong = hashlib.sha256(b"another certificate").hexdigest()
        with pytest.raises(TLSVerificationFailed, match="not the pinned"):
            await cache.connect(credentials(vcenter, ca_bundle=None, thumbprint=wrong))
    finally:
        await cache.close()


async def test_a_refused_login_is_not_retried_by_every_object(vcenter: VCenter) -> None:
    """Fifty objects naming a Secret with a wrong password make one login attempt per
    check interval, not fifty (vCenter would lock the account out)."""
    cache = Sessions(check_interval=3600)
    try:
        wrong = credentials(vcenter, password="wrong")
        results = await asyncio.gather(
            *(cache.connect(wrong) for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, VCenterLoginFailed) for r in results)
        [client] = cache.clients()
        assert client.wire_calls()["Login"] == 1
        # A corrected Secret is a new client: it logs in at once.
        assert (await cache.connect(credentials(vcenter))).session_key
    finally:
        await cache.close()


async def test_login_refused_and_vcenter_unreachable(vcenter: VCenter) -> None:
    cache = Sessions(timeout=5)
    try:
        with pytest.raises(VCenterLoginFailed, match="refused the username and password"):
            await cache.connect(credentials(vcenter, password="wrong"))
        with pytest.raises(VCenterUnreachable, match="did not answer"):
            await cache.connect(credentials(vcenter, server=f"127.0.0.1:{free_port()}"))
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ("ca", "False", "TLSVerificationFailed"),
        ("password", "False", "VCenterLoginFailed"),
        ("port", "Unknown", "VCenterUnreachable"),
    ],
)
async def test_vcenter_errors_become_conditions(
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    tmp_path: Path,
    secrets: Any,
    change: str,
    status: str,
    reason: str,
) -> None:
    changes = {
        "ca": {"caBundle": Pki(tmp_path / "x").ca_file.read_text()},
        "password": {"password": "wrong"},
        "port": {"server": f"127.0.0.1:{free_port()}"},
    }[change]
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter, **changes))
    put_secret(k8s_client, namespace, "mt-tls", TLS)
    cache = Sessions(timeout=5)
    try:
        result = await service.reconcile(
            master_target(namespace, str(uuid.uuid4())), secrets, cache, HealthClient(), NOW
        )
    finally:
        await cache.close()
    c = {x.type: x for x in result.conditions}
    assert c[CT.REFERENCES_RESOLVED].status == "True"
    for t in (CT.DISK_UUID_ENABLED, CT.NO_SNAPSHOTS, CT.LICENSE_ALLOWS_FAILBACK):
        assert (c[t].status, c[t].reason) == (status, reason), t
    # Ready takes the first False check; an Unknown vCenter leaves it to ServiceReachable
    # (the TLS Secret here holds no usable PEM).
    expected = reason if status == "False" else "TLSVerificationFailed"
    assert c[CT.READY].reason == expected


async def test_n_master_targets_share_one_session_and_one_read_per_pass(
    k8s_client: Any,
    namespace: str,
    vcenter: VCenter,
    secrets: Any,
    make_vm: VMMaker,
    si: Any,
) -> None:
    """Counted on the wire: every SOAP request the adapter sends, by method."""
    put_secret(k8s_client, namespace, "vcenter", vcenter_secret(vcenter))
    put_secret(k8s_client, namespace, "mt-tls", TLS)
    uuids = [await make_vm() for _ in range(3)]
    targets = [master_target(namespace, u) for u in uuids] * 4  # 12 MasterTargets
    before = sessions_of(si)
    cache = Sessions(inventory_max_age=30.0)
    try:
        for _ in range(2):  # two passes
            results = await asyncio.gather(
                *(service.reconcile(mt, secrets, cache, HealthClient(), NOW) for mt in targets)
            )
            assert all(r.disks_in_use == 1 for r in results)
            cache.clients()[0].invalidate()  # the next pass reads afresh
        [client] = cache.clients()
        assert len(sessions_of(si) - before) == 1, "one vCenter session for all of them"
        calls = client.wire_calls()
        assert calls["Login"] == 1
        assert calls["RetrievePropertiesEx"] == 2, calls  # one inventory read per pass
        assert calls["QueryAssignedLicenses"] == 2, calls
        assert calls["HasPrivilegeOnEntities"] == 2, calls
        assert calls["Fetch"] <= 1, f"no lazy per-attribute reads: {calls}"
        assert sum(calls.values()) <= 12, calls
    finally:
        await cache.close()


async def test_calls_run_off_the_event_loop_within_the_per_vcenter_cap(vcenter: VCenter) -> None:
    cache = Sessions(max_concurrency=3, threads=16)
    lock = threading.Lock()
    running, peak = 0, 0
    loop_thread = threading.get_ident()

    def blocking(content: Any) -> int:
        nonlocal running, peak
        assert threading.get_ident() != loop_thread, "pyVmomi must not run on the event loop"
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)  # a slow vCenter
        with lock:
            running -= 1
        return 1

    try:
        client = await cache.connect(credentials(vcenter))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1

        results, _ = await asyncio.gather(
            asyncio.gather(*(client.call(blocking) for _ in range(12))), ticker()
        )
        assert sum(results) == 12
        assert peak == 3, "at most max_concurrency calls in flight per vCenter"
        assert ticks == 20, "the event loop kept running meanwhile"
    finally:
        await cache.close()
