"""Which recovery point each consistency group fails back to (``domain.pointchoice``)."""

from __future__ import annotations

import datetime as dt

import pytest

from failback.api.failbackplan import RecoveryPointType as Kind
from failback.domain.pointchoice import NoPoint, choose_points
from failback.domain.recoverypoints import RecoveryPoint

T0 = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)


def point(name: str, minutes: int, app: bool = False, restorable: bool = True) -> RecoveryPoint:
    return RecoveryPoint(name, T0 + dt.timedelta(minutes=minutes), app, minutes, ("d",), restorable)


WEB = [point("w00", 0, app=True), point("w05", 5), point("w10", 10, app=True), point("w15", 15)]
DB = [point("d02", 2), point("d07", 7, app=True), point("d12", 12)]


@pytest.mark.parametrize(
    ("kind", "time", "expected"),
    [
        (Kind.LATEST, None, "w15"),
        (Kind.LATEST_PROCESSED, None, "w15"),
        (Kind.LATEST_CRASH_CONSISTENT, None, "w15"),
        (Kind.LATEST_APP_CONSISTENT, None, "w10"),
        (Kind.POINT_IN_TIME, T0 + dt.timedelta(minutes=7), "w05"),
        (Kind.POINT_IN_TIME, T0 + dt.timedelta(minutes=10), "w10"),
    ],
)
def test_one_group_by_criterion(kind: Kind, time: dt.datetime | None, expected: str) -> None:
    chosen = choose_points({"web": WEB}, kind, time=time)
    assert not isinstance(chosen, NoPoint)
    assert chosen["web"].id == expected


def test_a_damaged_point_is_never_chosen() -> None:
    points = [*WEB[:-1], point("w15", 15, restorable=False)]
    chosen = choose_points({"web": points}, Kind.LATEST)
    assert not isinstance(chosen, NoPoint)
    assert chosen["web"].id == "w10"


def test_groups_are_aligned_on_the_newest_time_every_group_has() -> None:
    aligned = choose_points({"web": WEB, "db": DB}, Kind.LATEST)
    assert not isinstance(aligned, NoPoint)
    assert {k: p.id for k, p in aligned.items()} == {"web": "w10", "db": "d12"}
    independent = choose_points({"web": WEB, "db": DB}, Kind.LATEST, multi_vm_consistency=False)
    assert not isinstance(independent, NoPoint)
    assert {k: p.id for k, p in independent.items()} == {"web": "w15", "db": "d12"}
    app = choose_points({"web": WEB, "db": DB}, Kind.LATEST_APP_CONSISTENT)
    assert not isinstance(app, NoPoint)
    assert {k: p.id for k, p in app.items()} == {"web": "w00", "db": "d07"}


@pytest.mark.parametrize(
    ("groups", "kind", "time", "message"),
    [
        ({"web": []}, Kind.LATEST, None, "group web: no restorable point"),
        ({"web": [point("w", 1)]}, Kind.LATEST_APP_CONSISTENT, None, "app-consistent"),
        ({"web": WEB}, Kind.POINT_IN_TIME, T0 - dt.timedelta(minutes=1), "at or before"),
        ({"web": WEB}, Kind.POINT_IN_TIME, None, "(no time)"),
        ({"web": [point("w30", 30)], "db": DB}, Kind.LATEST, None, "cannot align them"),
    ],
)
def test_no_acceptable_point_names_the_group_and_the_criterion(
    groups: dict[str, list[RecoveryPoint]], kind: Kind, time: dt.datetime | None, message: str
) -> None:
    problem = choose_points(groups, kind, time=time)
    assert isinstance(problem, NoPoint)
    assert message in problem.message
