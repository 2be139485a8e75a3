"""Live views of a failback, for a terminal or a log: one line per ProtectedVM, and a
FailbackPlan's phase, current step and step log.

The views are pure functions of the objects as the API server returns them (``vm_rows``,
``plan_rows``); ``LiveView`` shows rows. On a terminal it redraws its block in place; in a
log (CI, a pipe) it appends only the rows whose meaningful part changed, each after the
seconds elapsed, so a log stays short and readable::

    view = LiveView(sys.stdout)
    watch(view, fetch, vm_rows, everyone_protected, what="every VM Protected", timeout=120)
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from testbed.procs import TestbedError

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One line of a view."""

    key: str
    """What the line is about (a VM, a step): appended again only when ``change`` changes."""
    text: str
    change: str | None = None
    """The part that counts as a change in a log (``text`` when None): ticking durations
    and RPOs stay out of it."""


# ------------------------------------------------------------------ formatting


def seconds(value: float | None) -> str:
    """``4.2s``, ``3m04s``, ``1h02m``; ``-`` when unknown."""
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return f"{value:.1f}s" if value < 10 and not value.is_integer() else f"{value:.0f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status: Mapping[str, Any] = obj.get("status") or {}
    return status


# ------------------------------------------------------------------ ProtectedVMs

VM_HEADER = (
    f"{'VM':<12} {'PHASE':<14} {'REPLICATION':<30} {'%':>4} {'RPO':>6} {'POINTS':>6}  NOT READY"
)


def _not_ready(status: Mapping[str, Any]) -> str:
    """The Ready condition's reason when it is not True (why the VM waits or fails)."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") == "True":
        return ""
    return str(ready.get("reason") or ready.get("status"))


def vm_row(obj: Mapping[str, Any]) -> Row:
    """``web-01  Protected  AzureToOnPrem Replicating  100  4s  3``, and why it is not
    Ready if it is not."""
    name = obj["metadata"]["name"]
    status = _status(obj)
    replication = status.get("replication") or {}
    phase = status.get("phase") or "Pending"
    flow = " ".join(str(x) for x in (replication.get("direction"), replication.get("state")) if x)
    percent = replication.get("percent")
    rpo = status.get("rpoSeconds")
    points = (status.get("recoveryPoints") or {}).get("count") or 0
    why = _not_ready(status)
    text = (
        f"{name:<12} {phase:<14} {flow or '-':<30} "
        f"{'-' if percent is None else percent:>4} {seconds(rpo):>6} {points:>6}  {why}"
    ).rstrip()
    return Row(name, text, change=f"{phase} {flow} {percent} {points > 0} {why}")


def vm_rows(objs: Sequence[Mapping[str, Any]]) -> list[Row]:
    return [Row("#vms", VM_HEADER), *(vm_row(o) for o in objs)]


# ------------------------------------------------------------------ the plan

STEP_HEADER = f"  {'GROUP':<14} {'VM':<12} {'STEP':<12} {'STATE':<10} {'TOOK':>6}  MESSAGE"


def step_row(step: Mapping[str, Any], now: dt.datetime) -> Row:
    start, end = _time(step.get("startTime")), _time(step.get("endTime"))
    took: float | None = None
    if start is not None:
        took = ((end or now) - start).total_seconds()
    group, vm = step.get("group") or "-", step.get("vm") or "-"
    state, message = step.get("state", "?"), step.get("message") or ""
    text = f"  {group:<14} {vm:<12} {step['name']:<12} {state:<10} {seconds(took):>6}  {message}"
    return Row(f"step {group}/{vm}/{step['name']}", text, change=f"{state} {message}")


def _collapsed(group: str, vm: str, steps: Sequence[Mapping[str, Any]], now: dt.datetime) -> Row:
    """A VM's steps that are all Pending, or all done, as one row."""
    state = "Pending" if steps[0].get("state") == "Pending" else "Succeeded"
    took = sum(
        ((_time(s.get("endTime")) or now) - start).total_seconds()
        for s in steps
        if (start := _time(s.get("startTime"))) is not None
    )
    message = (
        next((s["message"] for s in steps if s.get("message")), "") if state == "Pending" else ""
    )
    what = f"{len(steps)} steps"
    text = f"  {group:<14} {vm:<12} {what:<12} {state:<10} {seconds(took or None):>6}  {message}"
    return Row(f"vm {group}/{vm}", text, change=f"{state} {message}")


def plan_rows(
    plan: Mapping[str, Any], now: dt.datetime | None = None, *, compact: bool = True
) -> list[Row]:
    """The plan's phase, where its VMs run and its current step, then the step log.

    ``compact``: a VM whose steps are all Pending, or all Succeeded or Skipped, is one row
    (so the log of a five-VM plan fits a terminal); ``failback plan status`` has them all."""
    now = now or dt.datetime.now(dt.UTC)
    meta, status = plan["metadata"], _status(plan)
    phase = status.get("phase") or "Pending"
    current = status.get("currentStep") or "-"
    head = (
        f"FailbackPlan {meta['namespace']}/{meta['name']}: {phase}, "
        f"VMs on {status.get('activeSite') or '?'}, step {current}"
    )
    steps = status.get("steps") or []
    rows = [Row("#plan", head, change=f"{phase} {current}")]
    if steps:
        rows.append(Row("#steps", STEP_HEADER))
    by_vm: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in steps:
        by_vm.setdefault((s.get("group") or "-", s.get("vm") or "-"), []).append(s)
    for (group, vm), mine in by_vm.items():
        states = {s.get("state") for s in mine}
        if (
            compact
            and vm != "-"
            and len(mine) > 1
            and (states == {"Pending"} or states <= {"Succeeded", "Skipped"})
        ):
            rows.append(_collapsed(group, vm, mine, now))
        else:
            rows += [step_row(s, now) for s in mine]
    return rows


# ------------------------------------------------------------------ showing rows


class LiveView:
    """Rows shown in place on a terminal (``tty``), appended when they change otherwise."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._drawn = 0
        self._seen: dict[str, str] = {}
        self._start = time.monotonic()

    def done(self) -> None:
        """The block shown so far stays as it is: the next ``show`` starts below it (on a
        terminal); in a log, rows are still appended only when they change."""
        self._drawn = 0

    def show(self, rows: Sequence[Row]) -> None:
        if self.tty:
            self._redraw(rows)
        else:
            self._append(rows)
        self.out.flush()

    def _redraw(self, rows: Sequence[Row]) -> None:
        size = shutil.get_terminal_size()
        width, height = max(20, size.columns - 1), max(5, size.lines - 1)
        if len(rows) > height:  # a frame taller than the terminal cannot be redrawn
            hidden = len(rows) - height + 1
            rows = [*rows[:2], Row("#hidden", f"  ... {hidden} more rows"), *rows[2 + hidden :]]
        parts = [f"\x1b[{self._drawn}A\r"] if self._drawn else []
        parts += [f"\x1b[2K{r.text[:width]}\n" for r in rows]
        left = self._drawn - len(rows)  # lines of the previous frame below this one
        if left > 0:
            parts += ["\x1b[2K\n"] * left + [f"\x1b[{left}A"]
        self._drawn = len(rows)
        self.out.write("".join(parts))

    def _append(self, rows: Sequence[Row]) -> None:
        stamp = f"[{time.monotonic() - self._start:6.1f}s] "
        for r in rows:
            change = r.text if r.change is None else r.change
            if self._seen.get(r.key) != change:
                self._seen[r.key] = change
                self.out.write(f"{stamp}{r.text}\n")


def watch(
    view: LiveView,
    fetch: Callable[[], T],
    rows: Callable[[T], Sequence[Row]],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.5,
) -> T:
    """Show ``rows(fetch())`` every ``interval`` until ``done``; the last fetch. Raises
    ``TestbedError`` saying ``what`` did not happen, with the last view, on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state = fetch()
        shown = rows(state)
        view.show(shown)
        if done(state):
            return state
        if time.monotonic() > deadline:
            last = "\n".join(r.text for r in shown)
            raise TestbedError(f"{what} within {timeout:g}s; last seen:\n{last}")
        time.sleep(interval)
