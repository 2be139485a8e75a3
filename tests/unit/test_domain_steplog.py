"""``domain.steplog``: the job log keeps each step's times and failures between passes."""

from __future__ import annotations

import datetime as dt

from failback.api.failbackplan import StepState
from failback.domain.failback import StepLine, StepName
from failback.domain.steplog import ended, first_failure, merge

T0 = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=5)
T2 = T0 + dt.timedelta(seconds=9)


def line(name: StepName, state: StepState, message: str = "") -> StepLine:
    return StepLine(name, state, "g1", "web", message)


def test_a_step_keeps_its_start_while_it_runs_and_ends_when_it_succeeds() -> None:
    first, changed = merge((), [line(StepName.FENCE, StepState.RUNNING, "stopping")], T0)
    assert (first[0].start_time, first[0].end_time) == (T0, None)
    assert [c.step.state for c in changed] == [StepState.RUNNING]
    again, changed = merge(first, [line(StepName.FENCE, StepState.RUNNING)], T1)
    assert again[0].start_time == T0
    assert again[0].message == "stopping", "an unchanged step keeps its message"
    assert changed == ()
    done, changed = merge(again, [line(StepName.FENCE, StepState.SUCCEEDED)], T2)
    assert (done[0].start_time, done[0].end_time) == (T0, T2)
    assert changed[0].before is StepState.RUNNING
    assert ended(done, StepName.FENCE, "web") == T2
    later, _ = merge(done, [line(StepName.FENCE, StepState.SUCCEEDED)], T2 + dt.timedelta(1))
    assert later[0].end_time == T2, "the end time is when it ended, not when it was seen"


def test_a_failure_sticks_until_the_log_is_reset() -> None:
    key = (str(StepName.ATTACH), "g1", "web")
    failed, changed = merge((), [line(StepName.ATTACH, StepState.RUNNING)], T0,
                            {key: "vCenter refused"})  # fmt: skip
    assert failed[0].state is StepState.FAILED
    assert failed[0].message == "vCenter refused"
    assert changed[0].step.state is StepState.FAILED
    kept, _ = merge(failed, [line(StepName.ATTACH, StepState.RUNNING)], T1)
    assert kept[0].state is StepState.FAILED
    assert first_failure(kept) is not None


def test_pending_steps_have_no_times_and_skipped_none_either() -> None:
    steps, _ = merge(
        (),
        [line(StepName.RESTORE, StepState.PENDING), line(StepName.FINAL_SYNC, StepState.SKIPPED)],
        T0,
    )
    assert [(s.start_time, s.end_time) for s in steps] == [(None, None), (None, None)]
