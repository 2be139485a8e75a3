"""An Unplanned failback forced past an Azure VM that cannot be reached (R-FO-1, R-FO-2).

The machine runs in Azure and is reprotected; it keeps writing, so the master target holds
several recovery points. Then the Azure VM stops answering: every request about it (its
instance view, a deallocation) fails, while its disks still replicate. An Unplanned run to
an *older* point in time:

1. without ``spec.failover.force`` it stops at the fence and says how to go on, and nothing
   moves on-premises (no rollback, no detach, no power-on), pass after pass;
2. with ``force`` and a ``forceReason`` it goes on: final sync skipped, the master target
   rolled back to the chosen point (past newer points it holds), the disks attached to the
   original VM, which runs; the force is audited in ``status.forced`` (run id, reason,
   time) and by one ``FenceForced`` Warning Event; the on-premises disks hold exactly the
   chosen point's bytes, not Azure's newer writes;
3. when Azure answers again, the operator deallocates the Azure VM, confirms it, and the
   run can be committed;
4. the run keeps one ``status.runId`` from the flip to the end (every write of the status
   is watched), and ``status.forced.runId`` and the one Event name that run.

What the never-both-running invariant becomes in a forced run: it cannot hold. Nobody can
stop a VM nobody can reach, and here the Azure VM really keeps running, so both sides' own
histories show an overlap. What the product guarantees instead, and this test proves from
those histories:

- the on-premises VM starts only after the force was given and recorded (no interval of it
  before ``status.forced.at``; it never ran while the run was merely blocked);
- the operator never starts the Azure VM, and it deallocates it as soon as Azure answers
  again (before commit): the overlap is exactly one, from the on-premises power-on to the
  Azure deallocation after the outage, and nothing else.

After a commit nothing deallocates a forgotten Azure VM any more: commit here waits
(Manual) until Azure answered, so that gap is outside what this test claims.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from typing import Any

import pytest
from kubernetes import client, watch

from failback.api.constants import GROUP, VERSION
from failback.domain.reprotect import group_name
from testbed.invariant import InvariantViolated, check_never_both_running
from testbed.scenario import MIB, Machine

from .conftest import WorldMaker
from .world import World, conditions

pytestmark = pytest.mark.testbed

VM = "db-01"
DISKS = (4 * MIB, 2 * MIB)
REASON = "INC-4711: Azure West Europe compute is down; the Azure VM is presumed dead"


# ---------------------------------------------------------------------- helpers


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _emulated_now(world: World) -> dt.datetime:
    """The Azure emulator's clock: the one recovery points' source times are read from."""
    return dt.datetime.fromtimestamp(float(world.sc.emulator.control.clock()["now"]), dt.UTC)


def _mt(world: World, path: str = "") -> Any:
    """The master target's own view of the VM's consistency group."""
    sc = world.sc
    assert sc.rig is not None
    status, body = sc.rig.mt.client.request(
        "GET", f"/v1/groups/{group_name(sc.namespace, VM)}{path}"
    )
    assert status == 200, body
    return body


def _points(world: World) -> list[dict[str, Any]]:
    return [p for p in _mt(world, "/points")["points"] if p["restorable"]]


def _write(world: World, rng: random.Random) -> dt.datetime:
    """The guest writes into every disk; the emulated time once they are all written."""
    for disk in world.sc.azure_disks(VM):
        world.sc.write_azure(disk, rng)
    return _emulated_now(world)


def _durable_after(world: World, after: dt.datetime) -> dict[str, Any]:
    """The newest point whose snapshots were all taken after ``after``, once one is durable
    at the master target. (A point's source time is its earliest disk snapshot's, and a
    snapshot copies the disk when it is taken.)"""
    found: list[dict[str, Any]] = []

    def durable() -> bool:
        found[:] = [p for p in _points(world) if _time(p["sourceTime"]) > after]
        return bool(found)

    world.wait(f"a recovery point newer than {after.isoformat()} is durable", durable, timeout=60)
    return max(found, key=lambda p: _time(p["sourceTime"]))


def _plan_events(world: World, reason: str) -> list[Any]:
    got = client.CoreV1Api(world.k8s).list_namespaced_event(world.sc.namespace)
    return [
        e
        for e in got.items
        if e.reason == reason
        and e.involved_object.kind == "FailbackPlan"
        and e.involved_object.name == world.sc.plan
    ]


def _plan_passes(world: World) -> int:
    """How many reconcile passes of the plan the operator finished (its kopf log)."""
    done = 0
    for log in world.logs:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (record.get("object") or {}).get("kind") == "FailbackPlan" and record.get(
                "message", ""
            ) in ("Timer 'recheck' succeeded.", "Handler 'reconcile' succeeded."):
                done += 1
    return done


class RunLog:
    """Every run id and every ``forced`` record the plan's status held, in order, from a
    watch on the plan (every write the API server kept, not samples); :meth:`stop` ends it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.run_ids: list[str] = []
        self.forced: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="plan-watch", daemon=True)
        self._thread.start()

    @staticmethod
    def _note(seen: list[Any], value: Any) -> None:
        if value and (not seen or seen[-1] != value):
            seen.append(value)

    def _follow(self) -> None:
        api = client.CustomObjectsApi(self.world.k8s)
        sc = self.world.sc
        version = ""
        try:
            while not self._stopped.is_set():
                # Short server-side timeouts, resumed where they ended: stop() is prompt.
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object, GROUP, VERSION, sc.namespace,
                    "failbackplans", field_selector=f"metadata.name={sc.plan}",
                    resource_version=version, timeout_seconds=1,
                ):  # fmt: skip
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    status = obj.get("status") or {}
                    self._note(self.run_ids, status.get("runId"))
                    self._note(self.forced, status.get("forced"))
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the plan watch did not stop"
        assert self.error is None, f"the plan watch failed: {self.error!r}"


# ---------------------------------------------------------------------- the test


def test_unplanned_failback_is_forced_past_an_unreachable_azure_vm_to_an_older_point(
    make_world: WorldMaker,
) -> None:
    world = make_world(
        [Machine(VM, disks=DISKS)], commit={"mode": "Manual"}, reprotectAfterCommit=False
    )
    sc = world.sc
    control = sc.emulator.control
    since = control.events()[-1]["seq"]
    rng = random.Random(23)
    world.wait(f"{VM} is Protected", lambda: world.protected(VM))
    original = sc.originals[VM]
    on_mt = sc.disk_files(sc.mt_vm)
    assert on_mt, "the original VM's disks are on the master target"

    # The guest writes A; a point holding A (and nothing later) becomes durable: the point
    # this failback will choose. Then it writes B, which is replicated too: the master
    # target's newest point is past the chosen one, so the restore must roll back.
    written_a = _write(world, rng)
    chosen_bytes = sc.azure_bytes(VM)
    chosen = _durable_after(world, written_a)
    written_b = _write(world, rng)
    b_bytes = sc.azure_bytes(VM)
    assert b_bytes != chosen_bytes
    newer = _durable_after(world, written_b)
    assert _time(newer["sourceTime"]) > _time(chosen["sourceTime"])
    assert len(_points(world)) >= 3, "several recovery points to choose from"

    runs = RunLog(world)
    try:
        forced_at, fault = _blocked_then_forced(world, runs, chosen, chosen_bytes, b_bytes, rng)
        _azure_answers_again(world, fault, forced_at, since)
        status = world.plan_status()
        world.set_plan(commit={"mode": "Manual", "approvedRunId": status["runId"]})
        world.wait_phase("Completed", timeout=60)
    finally:
        runs.stop()

    # One run, one id, one audit record of it: what an auditor reads afterwards names the
    # run that was forced.
    status = world.plan_status()
    assert status["phase"] == "Completed", status
    assert sc.onprem_bytes(original, DISKS) == chosen_bytes
    events = _plan_events(world, "FenceForced")
    problems = []
    if runs.run_ids != [status["runId"]]:
        problems.append(f"status.runId changed while the run went on: {runs.run_ids} in turn")
    if [f.get("runId") for f in runs.forced] != [status["runId"]]:
        problems.append(f"status.forced was {runs.forced} in turn; the run is {status['runId']}")
    if len(events) != 1 or (events[0].count or 1) != 1:
        problems.append(f"{len(events)} FenceForced Events, counts {[e.count for e in events]}")
    assert not problems, "\n".join(problems)


def _blocked_then_forced(
    world: World,
    runs: RunLog,
    chosen: dict[str, Any],
    chosen_bytes: list[bytes],
    b_bytes: list[bytes],
    rng: random.Random,
) -> tuple[dt.datetime, str]:
    """Azure stops answering about the VM; the Unplanned run blocks at the fence, then is
    forced. The time the force was recorded, and the fault (Azure still unreachable)."""
    sc = world.sc
    control = sc.emulator.control
    original = sc.originals[VM]
    on_mt = sc.disk_files(sc.mt_vm)
    newest_before = _mt(world)["newestPoint"]
    # No read of the VM's power state, no deallocation: every request about the VM fails.
    # The VM keeps running (and writing); its disks still replicate.
    fault = control.add_fault(
        "error", path=rf"/virtualMachines/{VM}(/[^/]+)?$", status=503, times=10_000_000
    )
    world.set_plan(
        activeSite="OnPrem",
        failover={
            "type": "Unplanned",
            "recoveryPoint": {"type": "PointInTime", "time": chosen["sourceTime"]},
        },
    )
    world.wait(
        "the Unplanned run stops at the fence and names spec.failover.force",
        lambda: "spec.failover.force" in world.step("fence", VM).get("message", ""),
        timeout=60,
    )
    _write(world, rng)  # Azure's latest writes: never part of this failback
    # The same decision, pass after pass: two more complete passes, then look again.
    passes = _plan_passes(world)
    world.wait("two more passes of the plan", lambda: _plan_passes(world) >= passes + 2, 30)
    status = world.plan_status()
    assert status["phase"] == "FailingOver", status
    fence = world.step("fence", VM)
    assert fence["state"] == "Pending", fence
    assert "spec.failover.force" in fence["message"], fence
    assert "reason" in fence["message"], fence
    progressing = conditions(world.plan())["Progressing"]
    assert "spec.failover.force" in progressing[2], progressing
    assert world.step("final-sync", VM)["state"] == "Skipped"
    for step in ("restore", "attach", "power-on", "guest-ready"):
        assert world.step(step, VM)["state"] == "Pending", world.step(step, VM)
    assert "forced" not in status, status
    assert not _plan_events(world, "FenceForced")
    # Nothing moved on-premises: the group is neither rolled back nor released, its disks
    # are still the master target's, and the original VM is off.
    group = _mt(world)
    assert group["state"] == "active", group
    assert _time(group["newestPoint"]["sourceTime"]) >= _time(newest_before["sourceTime"])
    assert sc.disk_files(sc.mt_vm) == on_mt, "nothing was detached"
    assert sc.disk_files(original) == []
    assert sc.power(original) == "poweredOff"

    # The user forces the fence, with a reason: the run goes on, without a final sync.
    world.set_plan(failover={"force": True, "forceReason": REASON})
    world.wait_phase("FailedOver", timeout=90)
    status = world.plan_status()
    assert sc.power(original) == "poweredOn"
    assert sc.disk_files(original) == on_mt
    assert sc.disk_files(sc.mt_vm) == []
    got = sc.onprem_bytes(original, DISKS)
    assert got == chosen_bytes, "the disks hold the chosen point"
    assert got != b_bytes, "rolled back past the newer point the master target held"
    assert got != sc.azure_bytes(VM), "Azure's latest writes are not in it"
    by_step = {s["name"]: s for s in status["steps"] if s.get("vm") == VM}
    assert by_step["final-sync"]["state"] == "Skipped", by_step
    assert "no final sync" in by_step["preflight"]["message"], by_step
    for step in ("fence", "restore", "attach", "power-on", "guest-ready"):
        assert by_step[step]["state"] == "Succeeded", by_step[step]
    forced = status["forced"]
    assert forced["reason"] == REASON, forced
    assert forced["runId"], forced
    # When the force was first recorded (a later record would be the run-id bug below).
    world.wait("the plan watch saw status.forced", lambda: bool(runs.forced), timeout=30)
    forced_at = _time(runs.forced[0]["at"])
    restore = by_step["restore"]
    assert forced_at <= _time(restore["startTime"]), (runs.forced, restore, runs.run_ids)
    world.wait("the FenceForced Event is posted", lambda: bool(_plan_events(world, "FenceForced")))
    event = _plan_events(world, "FenceForced")[0]
    assert event.type == "Warning", event
    assert REASON in event.message, event
    # Nobody could touch the Azure VM: it never changed state, and still runs.
    assert sc.azure_power(VM) == "running"
    return forced_at, fault


def _azure_answers_again(world: World, fault: str, forced_at: dt.datetime, since: int) -> None:
    """Azure answers again before commit: the operator deallocates the Azure VM. The two
    sites' histories show the one overlap a forced run allows, and no other."""
    sc = world.sc
    control = sc.emulator.control
    original = sc.originals[VM]
    control.remove_fault(fault)
    world.wait(
        "the operator deallocated the Azure VM once Azure answered",
        lambda: sc.azure_power(VM) == "deallocated",
        timeout=60,
    )
    world.wait_phase("FailedOver", timeout=60)
    assert sc.power(original) == "poweredOn"
    changes = [
        e["to"]
        for e in control.events(since=since, kind="vm.power")
        if e["resource_id"].lower().endswith(f"/virtualmachines/{VM}")
    ]
    # Only the late fence touched it: never started, only deallocated.
    assert set(changes) == {"deallocating", "deallocated"}, changes
    assert changes[-1] == "deallocated", changes
    with pytest.raises(InvariantViolated) as violated:
        check_never_both_running(
            control, sc.si, [((sc.resource_group, VM), original)], since_seq=since
        )
    (pair,) = violated.value.report.pairs
    (onprem,) = pair.onprem
    assert onprem.start is not None, pair
    assert onprem.start >= forced_at, f"the on-premises VM started before the force: {pair}"
    assert onprem.end is None, pair
    (overlap,) = pair.overlaps
    assert overlap.start == onprem.start, violated.value
    assert overlap.end == overlap.azure.end, violated.value
    assert "deallocated" in str(overlap.azure.end_label), violated.value
