"""The operator's clients of the data plane's control APIs (``ports.processserver.
ReplicationSessions``, ``ports.mastertarget.RecoveryPoints``) against the REAL services:
the Azure emulator's disks → `failback process-server` → `failback master-target` → flat
files, driven only through ``adapters.processserver.sessions.SessionsClient`` and
``adapters.mastertarget.points.PointsClient`` on one shared ``MutualTLS``.

The contract checks that the real services cannot provoke (an answer outside the API
documents) run against a tiny mutual-TLS aiohttp server speaking whatever a test says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from failback.adapters.mastertarget.client import HealthClient as MasterTargetHealthClient
from failback.adapters.mastertarget.points import PointsClient
from failback.adapters.mtls import MutualTLS
from failback.adapters.processserver.client import HealthClient
from failback.adapters.processserver.sessions import SessionsClient
from failback.dataplane.ps.model import parse_spec
from failback.domain.outcome import Failure, Refused, Unanswered
from failback.domain.recoverypoints import (
    GroupState,
    GroupStatus,
    RecoveryPoint,
    Released,
    RolledBack,
)
from failback.domain.replication import (
    AzureToOnPremSpec,
    CycleMode,
    MasterTargetRef,
    OnPremToAzureSpec,
    ReplicaDisk,
    SessionPhase,
    SessionStatus,
    SourceDisk,
    VCenterVM,
)
from failback.ports.mastertarget import RecoveryPoints
from failback.ports.processserver import ReplicationSessions
from failback.ports.tls import TLSMaterial
from testbed.azure.process import AzureEmulator
from testbed.dataplane import DataPlane, fast_emulator
from testbed.leaks import LeakGuard, guard_logs
from testbed.pki import CertPair, Pki
from testbed.procs import free_port

pytestmark = pytest.mark.testbed

MIB = 1 << 20


def material(pair: CertPair, ca: Path) -> TLSMaterial:
    return TLSMaterial(pair.cert.read_text(), pair.key.read_text(), ca.read_text())


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


@dataclass
class Operator:
    """The operator's side: one transport, both clients typed as their ports."""

    sessions: ReplicationSessions
    points: RecoveryPoints
    tls: TLSMaterial
    ps: str
    mt: str


@pytest.fixture
async def operator(rig: DataPlane) -> AsyncIterator[Operator]:
    mtls = MutualTLS(timeout=15)
    yield Operator(
        sessions=SessionsClient(mtls),
        points=PointsClient(mtls),
        # The operator's client certificate: the PS and the MT trust the same CA.
        tls=material(rig.operator_pair, rig.pki.ca_file),
        ps=f"https://127.0.0.1:{rig.ps.client.port}",
        mt=f"https://127.0.0.1:{rig.mt.client.port}",
    )
    await mtls.close()


def forward_spec(rig: DataPlane, vm: str, **changes: Any) -> AzureToOnPremSpec:
    spec = AzureToOnPremSpec(
        subscription_id=rig.emulator.subscription_id,
        master_target=MasterTargetRef(f"https://127.0.0.1:{rig.mt.client.port}", vm),
        disks=tuple(
            SourceDisk(rig.resource_group, disk, rig.vms[vm].target_id(disk))
            for disk in rig.vms[vm].disks
        ),
        interval_seconds=3600,
        vm_id=(
            f"/subscriptions/{rig.emulator.subscription_id}/resourceGroups/"
            f"{rig.resource_group}/providers/Microsoft.Compute/virtualMachines/{vm}"
        ),
    )
    return dataclasses.replace(spec, **changes)


SETTLE_SECONDS = 60.0


async def settled(op: Operator, rig: DataPlane, vm: str, *, after: int) -> SessionStatus:
    """Poll ``session()`` until a cycle numbered above ``after`` settled."""
    deadline = time.monotonic() + SETTLE_SECONDS
    last: object = None
    while time.monotonic() < deadline:
        last = await op.sessions.session(op.ps, op.tls, "dr", vm)
        assert isinstance(last, SessionStatus), last
        if last.cycle_number > after and last.phase != SessionPhase.SETTLING:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"no cycle after {after} within {SETTLE_SECONDS:g}s: {last}\n{rig.ps.tail()}"
    )


async def test_a_failback_driven_only_through_the_operators_clients(
    rig: DataPlane, operator: Operator
) -> None:
    """put_session → session() until the first point → run_cycle → the MT lists both points
    → delete_session → rollback to the first point (byte-exact) → release (twice)."""
    op, rng = operator, random.Random(5)
    rig.add_vm("web-01", {"web-01-os": 4 * MIB, "web-01-data0": 2 * MIB})
    for disk in rig.vms["web-01"].disks:
        rig.scribble(disk, rng, writes=8)
    rig.start()
    spec = forward_spec(rig, "web-01")
    target_ids = {rig.vms["web-01"].target_id(d) for d in rig.vms["web-01"].disks}

    created = await op.sessions.put_session(op.ps, op.tls, "dr", "web-01", spec)
    assert isinstance(created, SessionStatus), created
    assert (created.key, created.cycle_number, created.last_point) == ("dr/web-01", 0, None)
    again = await op.sessions.put_session(op.ps, op.tls, "dr", "web-01", spec)
    assert isinstance(again, SessionStatus), again  # the same spec again: idempotent

    first = await settled(op, rig, "web-01", after=0)
    assert first.last_point is not None
    assert first.rpo_source_time is not None
    assert first.rpo_seconds is not None
    assert first.last_error is None
    assert first.last_cycle is not None
    assert {d.mode for d in first.last_cycle.disks} == {CycleMode.INITIAL}
    assert {d.name for d in first.last_cycle.disks} == set(rig.vms["web-01"].disks)
    assert first.last_cycle.batches_sent >= 1
    rig.assert_converged("web-01")
    at_first = {disk: rig.source_bytes(disk) for disk in rig.vms["web-01"].disks}

    for disk in rig.vms["web-01"].disks:
        rig.scribble(disk, rng)
    hurried = await op.sessions.run_cycle(op.ps, op.tls, "dr", "web-01")
    assert isinstance(hurried, SessionStatus), hurried
    second = await settled(op, rig, "web-01", after=first.cycle_number)
    assert second.last_cycle is not None
    assert {d.mode for d in second.last_cycle.disks} == {CycleMode.INCREMENTAL}
    assert second.last_point not in (None, first.last_point)
    rig.assert_converged("web-01")

    listed = await op.sessions.sessions(op.ps, op.tls)
    assert isinstance(listed, tuple), listed
    assert [s.key for s in listed] == ["dr/web-01"]

    points = await op.points.points(op.mt, op.tls, "web-01")
    assert isinstance(points, tuple), points
    assert [p.id for p in points] == [first.last_point, second.last_point]
    for point in points:
        assert isinstance(point, RecoveryPoint)
        assert set(point.disks) == target_ids
        assert point.restorable
        assert not point.app_consistent  # Azure incremental snapshots: crash-consistent
    assert points[0].last_seq < points[1].last_seq
    group = await op.points.group(op.mt, op.tls, "web-01")
    assert isinstance(group, GroupStatus), group
    assert group.state == GroupState.ACTIVE
    assert (group.point_count, group.cycle_open) == (2, False)
    assert group.newest_point == points[1]
    assert group.oldest_point == points[0]
    assert group.last_durable_seq == points[1].last_seq
    assert group.rpo_source_time == points[1].source_time

    left = await op.sessions.delete_session(op.ps, op.tls, "dr", "web-01")
    assert left == ()
    gone = await op.sessions.session(op.ps, op.tls, "dr", "web-01")
    assert isinstance(gone, Refused), gone
    assert (gone.status, gone.code) == (404, "unknown_session")

    rolled = await op.points.rollback(op.mt, op.tls, "web-01", points[0].id)
    assert isinstance(rolled, RolledBack), rolled
    assert (rolled.group, rolled.point, rolled.last_durable_seq) == (
        "web-01",
        points[0],
        points[0].last_seq,
    )
    for disk, content in at_first.items():
        assert rig.target_bytes(disk) == content, f"{disk} is not the first point's bytes"
    after_rollback = await op.points.points(op.mt, op.tls, "web-01")
    assert after_rollback == (points[0],)

    released = await op.points.release(op.mt, op.tls, "web-01")
    assert released == Released("web-01", points[0])
    assert await op.points.release(op.mt, op.tls, "web-01") == released  # idempotent
    group = await op.points.group(op.mt, op.tls, "web-01")
    assert isinstance(group, GroupStatus), group
    assert group.state == GroupState.RELEASED
    refused = await op.points.rollback(op.mt, op.tls, "web-01", points[0].id)
    assert isinstance(refused, Refused), refused
    assert (refused.status, refused.code) == (409, "group_released")


async def test_the_services_refusals_come_back_as_refused(
    rig: DataPlane, operator: Operator
) -> None:
    op = operator
    rig.add_vm("db-01", {"db-01-os": 1 * MIB})
    rig.add_vm("db-02", {"db-02-os": 1 * MIB})
    rig.start()
    spec = forward_spec(rig, "db-01")
    bad_disk = dataclasses.replace(spec.disks[0], target_disk_id="not a disk id!")
    cases: list[tuple[str, AzureToOnPremSpec, str]] = [
        ("db-01", dataclasses.replace(spec, subscription_id="x"), "subscriptionId"),
        ("db-01", dataclasses.replace(spec, disks=()), "disks"),
        ("db-01", dataclasses.replace(spec, disks=(bad_disk,)), "disks[0].targetDiskId"),
        (
            "db-01",
            dataclasses.replace(spec, master_target=MasterTargetRef("http://x", "db-01")),
            "masterTarget.endpoint",
        ),
        ("db-01", dataclasses.replace(spec, interval_seconds=0), "intervalSeconds"),
        ("DB-01", spec, "path"),
    ]
    for name, bad, field_name in cases:
        refused = await op.sessions.put_session(op.ps, op.tls, "dr", name, bad)
        assert isinstance(refused, Refused), (bad, refused)
        assert (refused.status, refused.code, refused.field) == (400, "invalid_field", field_name)
        assert refused.extra["field"] == field_name
        assert refused.message

    for call in (op.sessions.session, op.sessions.run_cycle, op.sessions.resync):
        unknown = await call(op.ps, op.tls, "dr", "nope")
        assert isinstance(unknown, Refused), unknown
        assert (unknown.status, unknown.code) == (404, "unknown_session")
    deleted = await op.sessions.delete_session(op.ps, op.tls, "dr", "nope")
    assert isinstance(deleted, Refused)
    assert (deleted.status, deleted.code) == (404, "unknown_session")

    created = await op.sessions.put_session(op.ps, op.tls, "dr", "db-01", spec)
    assert isinstance(created, SessionStatus), created
    conflict = dataclasses.replace(spec, disks=(dataclasses.replace(spec.disks[0], name="x"),))
    refused = await op.sessions.put_session(op.ps, op.tls, "dr", "db-01", conflict)
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code) == (409, "session_conflict")
    paused = await op.sessions.put_session(
        op.ps, op.tls, "dr", "db-01", dataclasses.replace(spec, paused=True)
    )
    assert isinstance(paused, SessionStatus), paused
    resynced = await op.sessions.resync(op.ps, op.tls, "dr", "db-01")
    assert isinstance(resynced, SessionStatus), resynced

    unknown_point = await op.points.rollback(op.mt, op.tls, "db-01", "no-such-point")
    assert isinstance(unknown_point, Refused), unknown_point
    assert (unknown_point.status, unknown_point.code) == (404, "unknown_point")
    unknown_group = await op.points.points(op.mt, op.tls, "nope")
    assert isinstance(unknown_group, Refused), unknown_group
    assert (unknown_group.status, unknown_group.code) == (404, "unknown_group")
    assert "db-01" in unknown_group.message  # the message lists the groups

    # A group that never had a point: released without one, twice.
    empty = await op.points.points(op.mt, op.tls, "db-02")
    assert empty == ()
    first = await op.points.release(op.mt, op.tls, "db-02")
    assert first == Released("db-02", None)
    assert await op.points.release(op.mt, op.tls, "db-02") == first
    assert isinstance(await op.sessions.delete_session(op.ps, op.tls, "dr", "db-01"), tuple)


async def test_the_health_clients_share_the_transport(rig: DataPlane, operator: Operator) -> None:
    """One MutualTLS for the health probes and the control clients: one aiohttp session."""
    rig.add_vm("api-01", {"api-01-os": 1 * MIB})
    rig.start()
    mtls = MutualTLS(timeout=5)
    ps_health, mt_health = HealthClient(mtls=mtls), MasterTargetHealthClient(mtls=mtls)
    points = PointsClient(ps_health.mtls)
    try:
        probe = await ps_health.probe(operator.ps, operator.tls)
        service = await mt_health.health(operator.mt, operator.tls)
        listed = await points.points(operator.mt, operator.tls, "api-01")
    finally:
        await mtls.close()
    assert probe.failure is None, probe
    assert service.failure is None, service
    assert listed == ()


# ------------------------------------------------------------------ without the services


def test_the_specs_are_what_the_process_server_parses() -> None:
    """Both directions' ``to_json`` through the PS's own parser, and back."""
    forward = AzureToOnPremSpec(
        subscription_id="00000000-0000-0000-0000-000000000000",
        master_target=MasterTargetRef("https://10.0.0.5:9443", "web-01"),
        disks=(
            SourceDisk("rg-dr", "web-01-os", "6000C29a-1b2c-3d4e-5f60-718293a4b5c6"),
            SourceDisk("rg-dr", "web-01-data0", "6000C29b-1b2c-3d4e-5f60-718293a4b5c6"),
        ),
        interval_seconds=300,
        vm_id="/subscriptions/x/resourceGroups/rg-dr/providers/Microsoft.Compute/virtualMachines/w",
    )
    reverse = OnPremToAzureSpec(
        subscription_id="00000000-0000-0000-0000-000000000000",
        vcenter=VCenterVM("vcenter.example.com", "5012a3b4-c5d6-e7f8-9012-a3b4c5d6e7f8"),
        replicas=(ReplicaDisk("6000C29a-1b2c-3d4e-5f60-718293a4b5c6", "rg-dr", "web-01-os-r"),),
        location="westeurope",
        retention_seconds=86_400,
        interval_seconds=600,
        paused=True,
    )
    for spec in (forward, reverse):
        body = spec.to_json()
        parsed = parse_spec("dr", "web-01", body)
        assert parsed.direction == spec.direction
        assert parsed.to_dict() == {"vmId": None, **body}
    assert "direction" not in forward.to_json()  # the default direction
    assert reverse.to_json()["direction"] == "OnPremToAzure"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


class Impostor:
    """A mutual-TLS HTTPS server answering ``routes[(method, path)] = (status, body)``:
    ``body`` is JSON, or ``bytes`` as is."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.port = free_port()
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.bodies: list[Any] = []
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.can_read_body:
            self.bodies.append(await request.json())
        status, body = self.routes.get((request.method, request.path), (404, b"nothing here"))
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, content_type="text/plain")
        return web.json_response(body, status=status)

    async def start(self) -> None:
        pair = self.pki.serving("impostor")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(pair.cert, pair.key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def impostor(pki: Pki) -> AsyncIterator[Impostor]:
    server = Impostor(pki)
    await server.start()
    yield server
    await server.stop()


def good_session() -> dict[str, Any]:
    return {
        "namespace": "dr",
        "name": "web-01",
        "spec": {},
        "phase": "Copying",
        "cyclesCompleted": 1,
        "cycleNumber": 1,
        "lastPoint": "9f3a61c2-000000001",
        "rpoSourceTime": "2026-11-23T12:00:00Z",
        "rpoSeconds": -1.5,
        "resyncPending": None,
        "cycle": {
            "number": 2,
            "firstSeq": 7,
            "batchesSent": 3,
            "batchesSkipped": 1,
            "bytesSent": 3 * MIB,
            "wireBytes": MIB,
            "modes": {"web-01-os": "Incremental"},
        },
        "lastCycle": {
            "number": 1,
            "disks": [
                {
                    "name": "web-01-os",
                    "snapshot": "fb-web-01-os-1",
                    "mode": "Initial",
                    "reason": None,
                    "bytesChanged": 4096,
                    "bytesCleared": 0,
                    "bytesRead": 4096,
                }
            ],
            "batchesSent": 6,
            "batchesSkipped": 0,
            "wireBytes": 2048,
            "seconds": 0.25,
        },
        "queueBytes": 0,
        "bytesSent": 4096,
        "wireBytes": 2048,
        "throughputBytesPerSecond": 10,
        "lastError": {"code": "AzureThrottled", "message": "429", "time": "2026-11-23T12:00:01Z"},
        "nextCycleAt": None,
        "someFutureField": [1, 2],
    }


def without(data: dict[str, Any], path: str, value: Any = ...) -> dict[str, Any]:
    """``data`` with the dotted ``path`` removed (or set to ``value``)."""
    import copy

    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


async def test_answers_outside_the_contract_are_contract_failures_naming_the_field(
    impostor: Impostor, pki: Pki
) -> None:
    tls = material(pki.client("operator", "failback-operator"), pki.ca_file)
    mtls = MutualTLS(timeout=5)
    sessions = SessionsClient(mtls)
    path = "/v1/sessions/dr/web-01"
    try:
        impostor.routes[("GET", path)] = (200, good_session())
        status = await sessions.session(impostor.endpoint, tls, "dr", "web-01")
        assert isinstance(status, SessionStatus), status
        assert status.phase == SessionPhase.COPYING
        assert status.cycle is not None
        assert status.cycle.modes == {"web-01-os": CycleMode.INCREMENTAL}
        assert status.rpo_seconds == -1.5
        assert status.last_error is not None
        assert status.last_error.code == "AzureThrottled"

        for broken, field_name in [
            (without(good_session(), "cycleNumber"), "cycleNumber"),
            (without(good_session(), "phase", "Dancing"), "phase"),
            (without(good_session(), "cycle.batchesSent", -1), "cycle.batchesSent"),
            (without(good_session(), "cycle.modes.web-01-os", "Sideways"), "cycle.modes.web-01-os"),
            (without(good_session(), "lastCycle.disks.0.mode"), "lastCycle.disks[0].mode"),
            (without(good_session(), "lastError.time", "yesterday"), "lastError.time"),
            (without(good_session(), "rpoSourceTime", 12), "rpoSourceTime"),
            (without(good_session(), "lastCycle", []), "lastCycle"),
        ]:
            impostor.routes[("GET", path)] = (200, broken)
            answer = await sessions.session(impostor.endpoint, tls, "dr", "web-01")
            assert isinstance(answer, Unanswered), (field_name, answer)
            assert answer.kind == Failure.CONTRACT
            assert answer.kind.answered
            assert f"outside its contract: {field_name} must be" in answer.message, answer

        impostor.routes[("GET", "/v1/groups/g/points")] = (
            200,
            {"group": "g", "points": [{"id": "p", "sourceTime": "yesterday"}]},
        )
        points = await PointsClient(mtls).points(impostor.endpoint, tls, "g")
        assert isinstance(points, Unanswered)
        assert "points[0].sourceTime must be an RFC 3339 time" in points.message

        # A refusal carries every member of the error object; a body without one is not.
        impostor.routes[("POST", "/v1/groups/g/release")] = (
            409,
            {"error": {"code": "cycle_open", "message": "roll back first", "lastDurableSeq": 9}},
        )
        refused = await PointsClient(mtls).release(impostor.endpoint, tls, "g")
        assert refused == Refused(409, "cycle_open", "roll back first", {"lastDurableSeq": 9})
        for status_code, body, kind in [
            (500, {"error": "injected"}, Failure.HTTP_STATUS),
            (503, b"upstream down", Failure.HTTP_STATUS),
            (200, b"<html>", Failure.NOT_JSON),
        ]:
            impostor.routes[("POST", "/v1/groups/g/release")] = (status_code, body)
            failed = await PointsClient(mtls).release(impostor.endpoint, tls, "g")
            assert isinstance(failed, Unanswered), failed
            assert failed.kind == kind, failed

        # The body goes out as JSON.
        impostor.routes[("POST", "/v1/groups/g/rollback")] = (404, {"error": {
            "code": "unknown_point", "message": "no point p"}})  # fmt: skip
        rolled = await PointsClient(mtls).rollback(impostor.endpoint, tls, "g", "p")
        assert rolled == Refused(404, "unknown_point", "no point p")
        assert impostor.bodies[-1] == {"pointId": "p"}

        # The health probe's GET: a refusal is a way of not answering (HTTP_STATUS).
        impostor.routes[("GET", "/v1/health")] = (
            503,
            {"error": {"code": "starting", "message": "journal recovery"}},
        )
        probe = await HealthClient(mtls=mtls).probe(impostor.endpoint, tls)
        assert probe.report is None
        assert "answered HTTP 503 on /v1/health: starting: journal recovery" in probe.message
    finally:
        await mtls.close()


async def test_no_answer_is_a_failure_kind_never_an_exception(pki: Pki) -> None:
    tls = material(pki.client("operator", "failback-operator"), pki.ca_file)
    mtls = MutualTLS(timeout=2)
    spec = AzureToOnPremSpec(
        "00000000-0000-0000-0000-000000000000",
        MasterTargetRef("https://127.0.0.1:1", "g"),
        (SourceDisk("rg", "d", "t"),),
    )
    nobody = f"https://127.0.0.1:{free_port()}"
    try:
        ps, mt = SessionsClient(mtls), PointsClient(mtls)
        for answer in (
            await ps.put_session(nobody, tls, "dr", "web-01", spec),
            await ps.delete_session(nobody, tls, "dr", "web-01"),
            await mt.rollback(nobody, tls, "g", "p"),
            await mt.release(nobody, tls, "g"),
        ):
            assert isinstance(answer, Unanswered), answer
            assert answer.kind == Failure.REFUSED, answer
            assert not answer.kind.answered
        broken = dataclasses.replace(tls, key="not a key")
        unusable = await PointsClient(mtls).points(nobody, broken, "g")
        assert isinstance(unusable, Unanswered)
        assert unusable.kind == Failure.TLS_MATERIAL
    finally:
        await mtls.close()
