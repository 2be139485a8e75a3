"""The product's core safety invariant, proved from the two sites' own histories:
a VM's Azure instance and its on-premises twin never run at the same time.

Every end-to-end test ends with::

    report = check_never_both_running(azure_emulator.control, si, [(vm_id, instance_uuid)])

which reads the Azure emulator's event history and vCenter's event history (never the
operator's own view), turns each site's power events into the intervals in which the VM
*may* have been running, and raises ``InvariantViolated`` (an ``AssertionError``) naming
the pair and both intervals, with real wall-clock times, if an Azure interval and an
on-premises interval overlap. It returns the intervals per pair otherwise (a ``Report``),
so a test can also check that something ran. ``since_seq`` limits the judgement to the
time after one of the emulator's events (a test's own start).

Conservative intervals (the pure core: ``running_intervals``, ``overlaps``)
    A VM may be running from the moment a start is requested or begins until a stop,
    power-off, deallocation or suspension has *completed*: a requested stop changes
    nothing. A VM already running when its history begins runs from the beginning of
    time (``start`` is ``None``); one still running has no end (``end`` is ``None``).
    Intervals are half-open, ``[start, end)``: one ending at the very instant the other
    starts (equal timestamps, to the microsecond) does not overlap it.

What the Azure emulator records (``testbed.azure.store``, ``GET /_emulator/events``)
    ``vm.power`` with ``from``/``to`` for every power state change: ``to`` the transient
    ``starting``/``stopping``/``deallocating`` when an action is accepted (the real time of
    the request), ``running``/``stopped``/``deallocated`` when its operation completes; a
    VM's first ``vm.power`` has ``from: null`` (creation: ARM's ``starting``, or the control
    API's seeded state); ``vm.deleted`` when a delete completes (after ``deallocated``).
    Every event has ``wall_time``, the real UTC time, besides the emulated ``time``
    (which a test may speed up or jump ahead; see ``testbed.azure.clock``). Here
    ``starting`` opens an interval, ``running`` opens one if none is open (an out-of-band
    change by the control API), ``stopping``/``deallocating`` keep it open and
    ``stopped``/``deallocated``/``vm.deleted`` close it. The emulator keeps its whole
    history until a ``reset``.

What vcsim records (govmomi 0.46.3's ``simulator``, read and run on the test bed)
    ``PowerOnVM_Task``: ``VmStartingEvent`` then ``VmPoweredOnEvent``, both when the task
    runs (microseconds apart: vcsim powers on at once). No event marks the *request*: the
    task's queue time, tens of microseconds earlier, is not in the event history, so an
    on-premises interval starts at ``VmStartingEvent``. ``PowerOffVM_Task``:
    ``VmStoppingEvent`` then ``VmPoweredOffEvent``; ``SuspendVM_Task``:
    ``VmSuspendingEvent``, ``VmSuspendedEvent``; ``ShutdownGuest``: ``VmGuestShutdownEvent``
    then ``VmPoweredOffEvent``; ``ResetVM_Task``: a power-off and a power-on;
    ``Destroy_Task`` (refused while powered on): ``VmRemovedEvent``. ``CreateVM_Task``
    (always powered off) records ``VmBeingCreatedEvent``, ``VmInstanceUuidAssignedEvent``
    (with the instance UUID), ``VmUuidAssignedEvent``, ``VmCreatedEvent``; the inventory's
    VMs made powered on at start-up have the same four, then ``VmStartingEvent`` and
    ``VmPoweredOnEvent``. ``CloneVM_Task`` ignores ``powerOn`` (source only). Logins
    (``UserLoginSessionEvent``) and other objects' changes are events too. ``createdTime``
    is vcsim's own clock, the real time of the same host as the emulator's ``wall_time``.
    ``QueryEvents`` returns only the newest page (10 events unless ``maxCount``, at most
    1,000), newest first, so the history is read through an ``EventHistoryCollector``
    (oldest first; never rewound: vcsim's ``RewindCollector`` then skips the oldest), and
    vcsim keeps only the newest ~1,000 events of all kinds: when older ones are gone
    (the oldest kept has a key above 1) and a VM's creation is among them, its state
    before the oldest kept event is unknown and counts as running (see
    ``onprem_power_events``). Starting and resuming open an interval, powered on opens
    one if none is open; stopping, suspending and guest shutdown or standby keep it open;
    powered off, suspended, failed to power on and removed close it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from testbed.azure.control_client import EmulatorControl

# -- the pure core ---------------------------------------------------------------------


class Change(enum.Enum):
    """What a site's power event says about whether its VM may be running."""

    STARTING = "starting"
    """A start (power-on, resume) is requested or begins: may run from now on."""
    RUNNING = "running"
    """Seen running: may run from now on (if it was not already)."""
    STOPPING = "stopping"
    """A stop is requested or begins: may still be running."""
    STOPPED = "stopped"
    """A stop (power-off, deallocation, suspension, removal) completed: not running."""


@dataclass(frozen=True)
class PowerEvent:
    """One normalized power event of one VM at one site."""

    at: dt.datetime
    """Real wall-clock time, timezone-aware."""
    change: Change
    label: str
    """What the site recorded, for the report (e.g. ``VmPoweredOnEvent #45``)."""


@dataclass(frozen=True)
class Interval:
    """A stretch of real time ``[start, end)`` in which a VM may have been running."""

    start: dt.datetime | None
    """``None``: running since before its history began."""
    end: dt.datetime | None
    """``None``: still running, or a stop has not completed."""
    start_label: str
    end_label: str | None = None

    def __str__(self) -> str:
        since = (
            "since before the history began" if self.start is None else f"from {stamp(self.start)}"
        )
        until = "until now (no completed stop)" if self.end is None else f"until {stamp(self.end)}"
        ended = f" ({self.end_label})" if self.end_label else ""
        return f"{since} ({self.start_label}) {until}{ended}"


@dataclass(frozen=True)
class Overlap:
    """An Azure interval and an on-premises interval that share ``[start, end)``."""

    azure: Interval
    onprem: Interval
    start: dt.datetime | None
    end: dt.datetime | None


def stamp(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def running_intervals(
    events: Iterable[PowerEvent], *, initially_running: bool | None = None
) -> list[Interval]:
    """The intervals in which a VM may have run, from its power events (any order: they
    are sorted by time, ties kept in the given order).

    ``initially_running`` is the state before the first event; ``None`` infers it: a VM
    whose first event is anything but a start was running before (a stop, or a power-on
    without a start, is of a VM whose history began after it started)."""
    ordered = sorted(events, key=lambda e: e.at)
    if initially_running is None:
        initially_running = bool(ordered) and ordered[0].change is not Change.STARTING
    intervals: list[Interval] = []
    start: dt.datetime | None = None
    start_label: str | None = "already running" if initially_running else None
    for event in ordered:
        if event.change in (Change.STARTING, Change.RUNNING):
            if start_label is None:
                start, start_label = event.at, event.label
        elif event.change is Change.STOPPED and start_label is not None:
            intervals.append(Interval(start, event.at, start_label, event.label))
            start, start_label = None, None
    if start_label is not None:
        intervals.append(Interval(start, None, start_label))
    return intervals


def _later(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The later of two starts (``None``: the beginning of time)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _earlier(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The earlier of two ends (``None``: not ended)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def overlaps(
    azure_intervals: Sequence[Interval],
    onprem_intervals: Sequence[Interval],
    *,
    since: dt.datetime | None = None,
) -> list[Overlap]:
    """Every pair of intervals, one per site, that share some time (after ``since``)."""
    found: list[Overlap] = []
    for azure in azure_intervals:
        for onprem in onprem_intervals:
            start = _later(_later(azure.start, onprem.start), since)
            end = _earlier(azure.end, onprem.end)
            if start is None or end is None or start < end:
                found.append(Overlap(azure, onprem, start, end))
    return found


# -- the Azure emulator's history ------------------------------------------------------

AzureVM = str | tuple[str, str]
"""An ARM VM id, or ``(resource group, name)``."""

_AZURE_CHANGES = {
    "starting": Change.STARTING,
    "running": Change.RUNNING,
    "stopping": Change.STOPPING,
    "deallocating": Change.STOPPING,
    "stopped": Change.STOPPED,
    "deallocated": Change.STOPPED,
}
_AZURE_MAY_RUN = frozenset({"starting", "running", "stopping", "deallocating"})


def _names_vm(resource_id: str, vm: AzureVM) -> bool:
    if isinstance(vm, str):
        return resource_id.lower() == vm.lower()
    group, name = vm
    suffix = f"/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/{name}"
    return resource_id.lower().endswith(suffix.lower())


def azure_power_events(
    history: Sequence[dict[str, Any]], vm: AzureVM
) -> tuple[str, list[PowerEvent], bool]:
    """The emulator's ARM id of ``vm``, its power events in ``history`` (the emulator's
    events, oldest first) and whether it ran before the first of them."""
    mine = [
        e
        for e in history
        if e["kind"] in ("vm.power", "vm.deleted") and _names_vm(e["resource_id"], vm)
    ]
    if not mine:
        raise LookupError(
            f"the Azure emulator's history has no power event of VM {vm} (a wrong id, or the "
            "emulator was reset after the VM was made?)"
        )
    events: list[PowerEvent] = []
    for e in mine:
        at = dt.datetime.fromisoformat(e["wall_time"])
        if e["kind"] == "vm.deleted":
            events.append(PowerEvent(at, Change.STOPPED, f"vm.deleted, seq {e['seq']}"))
            continue
        label = f"vm.power {e['from'] or 'new'}->{e['to']}, seq {e['seq']}"
        events.append(PowerEvent(at, _AZURE_CHANGES[e["to"]], label))
    first = next((e for e in mine if e["kind"] == "vm.power"), {})
    return mine[0]["resource_id"], events, first.get("from") in _AZURE_MAY_RUN


# -- vCenter's history -----------------------------------------------------------------

_VCENTER_CHANGES: tuple[tuple[type, Change], ...] = (
    (vim.event.VmStartingEvent, Change.STARTING),
    (vim.event.VmResumingEvent, Change.STARTING),
    (vim.event.VmPoweredOnEvent, Change.RUNNING),  # and DRS/HA power-ons, its subclasses
    (vim.event.VmStoppingEvent, Change.STOPPING),
    (vim.event.VmSuspendingEvent, Change.STOPPING),
    (vim.event.VmGuestShutdownEvent, Change.STOPPING),
    (vim.event.VmGuestStandbyEvent, Change.STOPPING),
    (vim.event.VmPoweredOffEvent, Change.STOPPED),
    (vim.event.VmSuspendedEvent, Change.STOPPED),
    (vim.event.VmFailedToPowerOnEvent, Change.STOPPED),
    (vim.event.VmRemovedEvent, Change.STOPPED),
)
_VCENTER_CREATED = (
    vim.event.VmBeingCreatedEvent,
    vim.event.VmCreatedEvent,
    vim.event.VmClonedEvent,
    vim.event.VmDeployedEvent,
    vim.event.VmRegisteredEvent,
)
_PAGE = 1000


@dataclass(frozen=True)
class VCenterHistory:
    """Every event vCenter still keeps, oldest first."""

    events: list[Any]

    @property
    def pruned(self) -> bool:
        """Whether older events are gone (vcsim keeps the newest ~1,000; keys start at 1)."""
        return not self.events or self.events[0].key > 1

    @property
    def begins(self) -> dt.datetime | None:
        return self.events[0].createdTime if self.events else None


def read_vcenter_history(si: Any) -> VCenterHistory:
    """All of vCenter's events, oldest first, through one history collector."""
    manager = si.content.eventManager
    everything = vim.event.EventFilterSpec()  # type: ignore[no-untyped-call]
    collector = manager.CreateCollectorForEvents(everything)
    try:
        events: list[Any] = []
        while page := collector.ReadNextEvents(_PAGE):
            events.extend(page)
    finally:
        collector.DestroyCollector()
    return VCenterHistory(events)


def _moref(event: Any) -> str | None:
    arg = event.vm
    return arg.vm._moId if arg is not None and arg.vm is not None else None


def _vcenter_power_event(event: Any) -> PowerEvent | None:
    change = next((c for kind, c in _VCENTER_CHANGES if isinstance(event, kind)), None)
    if change is None:
        return None
    name = type(event).__name__.rsplit(".", 1)[-1]
    return PowerEvent(event.createdTime, change, f"{name} #{event.key}")


def onprem_power_events(
    history: VCenterHistory, instance_uuid: str, vm: Any | None, power_state: str | None
) -> tuple[str, list[PowerEvent], bool]:
    """The moref of the VM with ``instance_uuid``, its power events and whether it ran
    before the first of them.

    ``vm`` is the live VM (``None`` once destroyed: its moref then comes from
    ``VmInstanceUuidAssignedEvent``) and ``power_state`` its ``runtime.powerState``, read
    *before* ``history``. If the VM's creation is no longer in the history, its state
    before the oldest kept event is unknown and counts as running; if it was off at that
    point (its first kept event is a start, or it has none and is not powered on), a
    completed stop at the oldest kept event ends that unknown stretch."""
    moref = vm._moId if vm is not None else None
    if moref is None:
        assigned = [
            e
            for e in history.events
            if isinstance(e, vim.event.VmInstanceUuidAssignedEvent)
            and str(e.instanceUuid).lower() == instance_uuid.lower()
        ]
        if not assigned:
            raise LookupError(
                f"no on-premises VM has instance UUID {instance_uuid}, and vCenter's history "
                "does not name it"
            )
        moref = _moref(assigned[-1])
        assert moref is not None
    mine = [e for e in history.events if _moref(e) == moref]
    events = [p for p in map(_vcenter_power_event, mine) if p is not None]
    if not history.pruned or any(isinstance(e, _VCENTER_CREATED) for e in mine):
        if not events and power_state == "poweredOn":
            return moref, events, True  # powered on without any record: since forever
        return moref, events, False
    begins = history.begins
    off_at_horizon = events[0].change is Change.STARTING if events else power_state != "poweredOn"
    if off_at_horizon and begins is not None:
        label = "oldest event vCenter kept: its state before is unknown"
        events.insert(0, PowerEvent(begins, Change.STOPPED, label))
    return moref, events, True


# -- the check -------------------------------------------------------------------------


@dataclass(frozen=True)
class PairReport:
    """The intervals in which each VM of a pair may have run."""

    azure_vm: str
    """The ARM id, as the emulator spells it."""
    onprem_vm: str
    """The instance UUID."""
    onprem_moref: str
    azure: list[Interval]
    onprem: list[Interval]
    overlaps: list[Overlap]

    def __str__(self) -> str:
        lines = [
            f"Azure VM {self.azure_vm} / on-premises VM {self.onprem_vm} ({self.onprem_moref})"
        ]
        lines += [f"  Azure    ran {i}" for i in self.azure] or ["  Azure    never ran"]
        lines += [f"  on-prem  ran {i}" for i in self.onprem] or ["  on-prem  never ran"]
        return "\n".join(lines)


@dataclass(frozen=True)
class Report:
    """What ``check_never_both_running`` proved: the intervals of every pair."""

    pairs: list[PairReport]
    since: dt.datetime | None
    """Only time after this was judged (the wall time of the emulator's ``since_seq``)."""

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.pairs)


class InvariantViolated(AssertionError):
    """Some pair ran on both sites at once; ``report`` has every pair's intervals and
    overlaps (the message describes the overlaps)."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


def _describe(pair: PairReport, since: dt.datetime | None) -> str:
    lines = [
        f"Azure VM {pair.azure_vm} and its on-premises twin {pair.onprem_vm} "
        f"({pair.onprem_moref}) were both possibly running:"
    ]
    for o in pair.overlaps:
        start = "the beginning of the history" if o.start is None else stamp(o.start)
        end = "now" if o.end is None else stamp(o.end)
        lines.append(f"  from {start} to {end}:")
        lines.append(f"    Azure    ran {o.azure}")
        lines.append(f"    on-prem  ran {o.onprem}")
    if since is not None:
        lines.append(f"  (judged after {stamp(since)})")
    return "\n".join(lines)


def check_never_both_running(
    control: EmulatorControl,
    si: Any,
    pairs: Sequence[tuple[AzureVM, str]],
    *,
    since_seq: int = 0,
) -> Report:
    """Prove from both sites' event histories that no pair ``(Azure VM, on-premises
    instance UUID)`` ever ran at the same time; raise ``InvariantViolated`` (an
    ``AssertionError``) describing every overlap otherwise.

    ``since_seq`` (an emulator event's ``seq``) judges only the time after that event's
    wall time: earlier events still tell each VM's state then."""
    history = control.events()
    since: dt.datetime | None = None
    if since_seq:
        at = [e for e in history if e["seq"] == since_seq]
        if not at:
            raise LookupError(f"the Azure emulator's history has no event {since_seq} (reset?)")
        since = dt.datetime.fromisoformat(at[0]["wall_time"])
    index = si.content.searchIndex
    live = {uuid: index.FindByUuid(None, uuid, True, True) for _, uuid in pairs}
    states = {
        uuid: (vm.runtime.powerState if vm is not None else None) for uuid, vm in live.items()
    }
    vcenter = read_vcenter_history(si)
    reports: list[PairReport] = []
    for azure_vm, uuid in pairs:
        arm_id, azure_events, azure_before = azure_power_events(history, azure_vm)
        moref, onprem_events, onprem_before = onprem_power_events(
            vcenter, uuid, live[uuid], states[uuid]
        )
        azure = running_intervals(azure_events, initially_running=azure_before)
        onprem = running_intervals(onprem_events, initially_running=onprem_before)
        found = overlaps(azure, onprem, since=since)
        reports.append(PairReport(arm_id, uuid, moref, azure, onprem, found))
    report = Report(reports, since)
    failed = [p for p in reports if p.overlaps]
    if failed:
        message = "a VM ran on both sites at once:\n" + "\n".join(
            _describe(p, since) for p in failed
        )
        raise InvariantViolated(message, report)
    return report
