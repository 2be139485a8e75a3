"""The status every kind starts from: which conditions are listed, and how they move."""

from __future__ import annotations

import dataclasses
import datetime as dt

from failback.api.conditions import FALSE, TRUE, UNKNOWN, Condition, ConditionType, Reason
from failback.domain.status import refresh_conditions

T0 = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
READY = ConditionType.READY
A, B, C = "ReferencesResolved", "VCenterPermissions", "ReplicationHealthy"


def by_type(conditions: list[Condition]) -> dict[str, Condition]:
    assert len({c.type for c in conditions}) == len(conditions), "a type listed twice"
    return {c.type: c for c in conditions}


def test_a_new_object_lists_every_applicable_condition_as_unknown() -> None:
    got = by_type(refresh_conditions([], [READY, A, B, C], [A, B], 1, T0))
    assert list(got) == [READY, A, B, C]
    assert all(c.status == UNKNOWN and c.reason == Reason.INITIALIZING for c in got.values())
    assert all(c.observed_generation == 1 and c.last_transition_time == T0 for c in got.values())
    assert got[READY].message == f"Waiting for the first checks: {A}, {B}."


def test_refresh_is_idempotent() -> None:
    first = refresh_conditions([], [READY, A, B], [A, B], 1, T0)
    assert refresh_conditions(first, [READY, A, B], [A, B], 1, T1) == first


def test_a_new_generation_restamps_unchecked_conditions_only() -> None:
    checked = Condition(A, TRUE, Reason.CHECK_PASSED, "ok", 1, T0)
    first = refresh_conditions([checked], [READY, A, B], [A, B], 1, T0)
    got = by_type(refresh_conditions(first, [READY, A, B], [A, B], 2, T1))
    assert got[A] == checked, "a judged condition keeps the generation it was judged at"
    assert got[B].observed_generation == 2
    assert got[B].last_transition_time == T0
    assert got[READY].observed_generation == 2
    assert got[READY].last_transition_time == T0, "Ready stayed Unknown: no transition"


def test_conditions_that_no_longer_apply_are_dropped() -> None:
    first = refresh_conditions([], [READY, A, B, C], [A, B], 1, T0)
    got = by_type(refresh_conditions(first, [READY, A, C], [A], 2, T1))
    assert list(got) == [READY, A, C]


def test_ready_summarizes_once_a_check_is_judged() -> None:
    failed = Condition(B, FALSE, "PermissionDenied", "grant Datastore.Browse", 1, T0)
    got = by_type(refresh_conditions([failed], [READY, A, B], [A, B], 1, T1))
    assert got[READY].status == FALSE
    assert got[READY].reason == "PermissionDenied"
    assert "grant Datastore.Browse" in got[READY].message

    passed = [
        dataclasses.replace(failed, status=TRUE, reason=Reason.CHECK_PASSED),
        Condition(A, TRUE, Reason.CHECK_PASSED, "ok", 1, T0),
    ]
    ready = by_type(refresh_conditions(passed, [READY, A, B], [A, B], 1, T1))[READY]
    assert (ready.status, ready.reason) == (TRUE, Reason.ALL_CHECKS_PASSED)


def test_a_kind_without_ready_gets_none() -> None:
    got = refresh_conditions([], [A, B], [A, B], 1, T0)
    assert [c.type for c in got] == [A, B]
