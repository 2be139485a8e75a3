"""The job log of a FailbackPlan run (``status.steps``, R-POST-3), carried from one pass to
the next. Pure.

:func:`failback.domain.failback.decide` says what state each step is in *now*; this module
keeps when each step started and ended (a step keeps its times while its state does not
change), keeps a failed step failed until the spec changes, and tells which steps changed
state in this pass (for Events).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from failback.api.failbackplan import Step, StepState
from failback.domain.failback import StepLine

Key = tuple[str, str | None, str | None]
"""A step's identity: (name, group, vm)."""

FINISHED = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED})


def key(step: Step | StepLine) -> Key:
    return (str(step.name), step.group, step.vm)


@dataclass(frozen=True)
class Transition:
    step: Step
    before: StepState | None


def merge(
    old: Sequence[Step],
    lines: Iterable[StepLine],
    now: dt.datetime,
    failures: Mapping[Key, str] | None = None,
) -> tuple[tuple[Step, ...], tuple[Transition, ...]]:
    """The new log from this pass's ``lines``, and the steps whose state changed.

    ``failures`` marks steps failed in this pass (the message says why); a step failed in
    ``old`` stays failed (the run stops there until the spec changes)."""
    previous = {key(s): s for s in old}
    failed = dict(failures or {})
    out: list[Step] = []
    changed: list[Transition] = []
    for line in lines:
        k = key(line)
        prev = previous.get(k)
        state, message = line.state, line.message
        if k in failed:
            state, message = StepState.FAILED, failed[k]
        elif prev is not None and prev.state is StepState.FAILED:
            state, message = StepState.FAILED, prev.message or ""
        same = prev is not None and prev.state is state
        start = prev.start_time if prev is not None else None
        end = prev.end_time if same and prev is not None else None
        if state is StepState.RUNNING or (state in FINISHED and state is not StepState.SKIPPED):
            start = start or now
        if state in FINISHED and state is not StepState.SKIPPED:
            end = end or now
        if state is StepState.PENDING:
            start = end = None
        if not message and same and prev is not None:
            message = prev.message or ""
        step = Step(str(line.name), state, line.group, line.vm, start, end, message or None)
        out.append(step)
        if not same:
            changed.append(Transition(step, prev.state if prev is not None else None))
    return tuple(out), tuple(changed)


def ended(steps: Sequence[Step], name: str, vm: str | None) -> dt.datetime | None:
    """When step ``name`` of ``vm`` succeeded, if it did."""
    for step in steps:
        if step.name == name and step.vm == vm and step.state is StepState.SUCCEEDED:
            return step.end_time
    return None


def state_of(steps: Sequence[Step], name: str, vm: str | None = None) -> StepState | None:
    for step in steps:
        if step.name == name and step.vm == vm:
            return step.state
    return None


def first_failure(steps: Sequence[Step]) -> Step | None:
    return next((s for s in steps if s.state is StepState.FAILED), None)
