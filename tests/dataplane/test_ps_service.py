"""The whole forward data plane as real processes: the Azure emulator's managed disks →
`failback process-server` → `failback master-target` → flat files (the test bed's VMDKs).

Every check compares the target flat files with the emulator's disk bytes (read through its
control API, independently of the product) at each recovery point.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.leaks import LeakGuard, guard_logs
from testbed.pki import Pki

pytestmark = pytest.mark.testbed

MIB = 1 << 20


@pytest.fixture
def rig(azure_emulator: AzureEmulator, tmp_path: Path) -> Iterator[DataPlane]:
    fast_emulator(azure_emulator)
    plane = DataPlane(tmp_path / "dp", azure_emulator, ps_extra=("--snapshot-rate", "1000/1s"))
    guard = LeakGuard(secrets=[azure_emulator.client_secret])
    with guard_logs(guard, azure_emulator.log_file, plane.ps.log, plane.mt.log):
        yield plane
        codes = plane.stop()
    assert codes == {"process-server": 0, "master-target": 0}, (plane.ps.tail(), plane.mt.tail())
    azure_emulator.control.clear_faults()


def test_cycles_copy_every_disk_byte_exact_and_report_points(rig: DataPlane) -> None:
    rng = random.Random(7)
    rig.add_vm("web-01", {"web-01-os": 8 * MIB, "web-01-data0": 4 * MIB})
    for disk in rig.vms["web-01"].disks:
        rig.scribble(disk, rng, writes=10)
    rig.start()
    vm_id = (
        f"/subscriptions/{rig.emulator.subscription_id}/resourceGroups/{rig.resource_group}"
        "/providers/Microsoft.Compute/virtualMachines/web-01"
    )
    created = rig.start_session("web-01", vmId=vm_id)
    assert created["phase"] in ("Starting", "Checking", "Snapshotting", "Copying")

    first = rig.wait_point("web-01", after=0)
    rig.assert_converged("web-01")
    at_first = {disk: rig.source_bytes(disk) for disk in rig.vms["web-01"].disks}
    assert {d["mode"] for d in first["lastCycle"]["disks"]} == {"Initial"}

    for disk in rig.vms["web-01"].disks:
        rig.scribble(disk, rng)
    rig.cycle_now("web-01")
    second = rig.wait_point("web-01", after=1)
    rig.assert_converged("web-01")
    assert {d["mode"] for d in second["lastCycle"]["disks"]} == {"Incremental"}
    changed = sum(d["bytesChanged"] + d["bytesCleared"] for d in second["lastCycle"]["disks"])
    assert 0 < changed < 12 * MIB

    points = rig.points("web-01")
    assert [p["id"] for p in points] == [first["lastPoint"], second["lastPoint"]]
    assert second["rpoSeconds"] is not None  # the emulator's clock runs ahead: any sign

    health = rig.ps.client.ok("GET", "/v1/health")
    assert health["sessions"] == ["dr/web-01"]
    assert health["replication"][0]["session"] == "dr/web-01"
    # R-PRE-13: the VM counts as registered once the PS read its disks (first snapshot).
    assert [a["vmId"] for a in health["agents"]] == [vm_id]
    for name in ("cpuPercent", "memoryPercent", "cacheFreePercent"):
        assert 0 <= health[name] <= 100

    # The superseded snapshots of the first cycle are deleted (in the background, after the
    # point); the second's are the base.
    def deleted() -> int:
        events = rig.emulator.control.events(kind="snapshot.deleted")
        return len([e for e in events if "fb-web-01" in str(e)])

    deadline = time.monotonic() + 30
    while deleted() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert deleted() == 2

    # Failback to a chosen point: stop replicating, roll the group back to the first point.
    deleted = rig.ps.client.ok("DELETE", "/v1/sessions/dr/web-01")
    assert deleted["snapshotsLeft"] == []
    rig.mt.client.ok("POST", "/v1/groups/web-01/rollback", {"pointId": first["lastPoint"]})
    for disk, content in at_first.items():
        assert rig.target_bytes(disk) == content, f"{disk} is not the first point's bytes"


def test_a_restarted_process_server_resumes_its_sessions(rig: DataPlane) -> None:
    rng = random.Random(11)
    rig.add_vm("app-01", {"app-01-os": 4 * MIB})
    rig.scribble("app-01-os", rng)
    rig.start()
    rig.start_session("app-01")
    rig.wait_point("app-01", after=0)
    rig.ps.stop()
    rig.scribble("app-01-os", rng)
    rig.ps.start()
    rig.cycle_now("app-01")
    status = rig.wait_point("app-01", after=1)
    assert status["lastCycle"]["disks"][0]["mode"] == "Incremental"
    rig.assert_converged("app-01")


def test_bad_session_requests_are_refused_with_the_field_to_fix(rig: DataPlane) -> None:
    rig.add_vm("db-01", {"db-01-os": 1 * MIB})
    rig.start()
    client = rig.ps.client
    body = rig.session_body("db-01")
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/v1/sessions/dr/db-01", {**body, "subscriptionId": "x"}, 400, "subscriptionId"),
        ("/v1/sessions/dr/db-01", {**body, "disks": []}, 400, "disks"),
        (
            "/v1/sessions/dr/db-01",
            {**body, "masterTarget": {"endpoint": "http://x", "group": "db-01"}},
            400,
            "masterTarget.endpoint",
        ),
        ("/v1/sessions/dr/db-01", {**body, "intervalSeconds": "often"}, 400, "intervalSeconds"),
        ("/v1/sessions/DR/db-01", body, 400, "path"),
    ]
    for path, payload, status, field_name in cases:
        got, answer = client.request("PUT", path, payload)
        assert got == status, (path, payload, answer)
        assert answer["error"]["field"] == field_name
    assert client.request("GET", "/v1/sessions/dr/nope")[1]["error"]["code"] == "unknown_session"
    rig.start_session("db-01")
    other = {**body, "disks": [{**body["disks"][0], "name": "other-disk"}]}
    got, answer = client.request("PUT", "/v1/sessions/dr/db-01", other)
    assert (got, answer["error"]["code"]) == (409, "session_conflict")
    got, answer = client.request("PUT", "/v1/sessions/dr/db-02", body)
    assert (got, answer["error"]["code"]) == (409, "group_in_use")
    paused = client.ok("PUT", "/v1/sessions/dr/db-01", {**body, "paused": True})
    assert paused["spec"]["paused"] is True
    assert client.ok("DELETE", "/v1/sessions/dr/db-01")["deleted"] == "dr/db-01"
    assert client.ok("GET", "/v1/sessions")["sessions"] == []


def test_a_stalled_master_target_keeps_the_ps_queue_bounded_and_rpo_grows(
    rig: DataPlane,
) -> None:
    """Backpressure: the MT is SIGSTOPped mid-cycle (the slowest possible target disk). The
    PS stops reading once its queue is full, so its memory stays flat while the disk holds
    far more than the queue; health reports the queue and an RPO that keeps growing; after
    SIGCONT the cycle finishes byte-exact. The emulator runs at real time here, so source
    times and RPO are real."""
    control = rig.emulator.control
    control.set_time_scale(1.0)
    control.set_limits(durations=dict.fromkeys(control.limits()["durations"], 0.05))
    rig.ps_extra = ("--snapshot-rate", "1000/1s", "--batch-size", "1Mi", "--max-queue", "2Mi")
    size = 96 * MIB
    rig.add_vm("big-01", {"big-01-os": size})
    chunk = 4 * MIB
    rng = random.Random(3)
    for at in range(0, size, chunk):
        payload = base64.b64encode(rng.randbytes(chunk)).decode()
        control.guest_writes(
            rig.resource_group,
            "big-01-os",
            [{"offset": at, "data": payload}],
            require_running=False,
        )
    rig.start()
    rig.start_session("big-01")
    rig.wait_point("big-01", after=0, timeout=120)
    rss_idle = rig.ps.client.ok("GET", "/v1/health")["residentBytes"]

    for at in range(0, size, chunk):  # rewrite everything: the next cycle moves 96 MiB
        payload = base64.b64encode(rng.randbytes(chunk)).decode()
        control.guest_writes(
            rig.resource_group,
            "big-01-os",
            [{"offset": at, "data": payload}],
            require_running=False,
        )
    rig.cycle_now("big-01")
    deadline = time.monotonic() + 30
    while rig.session("big-01")["phase"] != "Copying" and time.monotonic() < deadline:
        time.sleep(0.02)
    rig.mt.pause()
    try:
        time.sleep(3)
        first = rig.ps.client.ok("GET", "/v1/health")
        sent_then = rig.session("big-01")["cycle"]["batchesSent"]
        time.sleep(3)
        second = rig.ps.client.ok("GET", "/v1/health")
        stalled = rig.session("big-01")
    finally:
        rig.mt.resume()
    assert stalled["phase"] == "Copying"
    assert stalled["cycle"]["batchesSent"] == sent_then, "batches went through a stopped MT"
    assert sent_then * MIB < size // 2, "the cycle was nearly done before the MT stopped"
    for health in (first, second):
        assert 0 < health["queueBytes"] <= 2 * MIB
    # Memory: far less than the 96 MiB the cycle has to move.
    assert second["residentBytes"] - rss_idle < 40 * MIB
    rpo = [h["replication"][0]["rpoSeconds"] for h in (first, second)]
    assert rpo[1] - rpo[0] >= 2.5
    rig.wait_point("big-01", after=1, timeout=120)
    rig.assert_converged("big-01")


def raw_request(
    port: int, context: ssl.SSLContext, method: str, path: str, body: bytes, content_type: str
) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_control_api_refuses_unauthenticated_clients_and_bad_bodies(rig: DataPlane) -> None:
    rig.add_vm("tls-01", {"tls-01-os": 1 * MIB})
    rig.start()
    port = rig.ps.client.port
    stranger = Pki(rig.root / "other-pki").client("intruder", "intruder")
    for pair in (None, stranger):
        context = ssl.create_default_context(cafile=str(rig.pki.ca_file))
        if pair is not None:
            context.load_cert_chain(pair.cert, pair.key)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # during the handshake
            raw_request(port, context, "GET", "/v1/health", b"", "application/json")

    context = ssl.create_default_context(cafile=str(rig.pki.ca_file))
    context.load_cert_chain(rig.operator_pair.cert, rig.operator_pair.key)
    for body, content_type, status, code in (
        (b"{not json", "application/json", 400, "bad_json"),
        (b"[1, 2]", "application/json", 400, "bad_json"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"x" * (70 << 10), "application/json", 413, "body_too_large"),
    ):
        got = raw_request(port, context, "PUT", "/v1/sessions/dr/tls-01", body, content_type)
        assert (got[0], got[1]["error"]["code"]) == (status, code), got
    assert rig.ps.client.ok("GET", "/v1/sessions")["sessions"] == []
    assert rig.ps.client.request("GET", "/v1/nothing")[0] == 404


async def test_the_operators_health_client_reads_the_real_service(rig: DataPlane) -> None:
    """The contract of docs/processserver-api.md, from both ends: the operator's own client
    (``adapters.processserver.HealthClient``) parses what the real service answers."""
    from failback.adapters.processserver.client import HealthClient
    from failback.ports.tls import TLSMaterial

    rig.ps_extra = (*rig.ps_extra, "--control-plane", f"127.0.0.1:{rig.mt.client.port}")
    rig.add_vm("api-01", {"api-01-os": 1 * MIB})
    rig.start()
    vm_id = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/API-01"
    rig.start_session("api-01", vmId=vm_id)
    rig.wait_point("api-01", after=0)
    tls = TLSMaterial(
        rig.operator_pair.cert.read_text(),
        rig.operator_pair.key.read_text(),
        rig.pki.ca_file.read_text(),
    )
    client = HealthClient(timeout=5)
    try:
        probe = await client.probe(f"https://127.0.0.1:{rig.ps.client.port}", tls)
    finally:
        await client.close()
    assert probe.failure is None, probe
    report = probe.report
    assert report is not None
    assert report.sessions == ("dr/api-01",)
    assert report.registered_agents == (vm_id.lower(),)
    assert report.control_plane_reachable is True
    assert report.control_plane_error is None
