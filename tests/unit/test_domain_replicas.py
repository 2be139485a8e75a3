"""The points of a VM's Azure replicas, read back from their snapshots' tags, and the
names a failover to Azure gives the disks it copies."""

from __future__ import annotations

import datetime as dt

from failback.domain.replicas import (
    RECOVERY_POINT,
    ROLE,
    TAG_APP_CONSISTENT,
    TAG_POINT,
    TAG_REPLICA,
    TAG_SEQ,
    TAG_SOURCE_TIME,
    PointSnapshot,
    failover_disk_name,
    points_of,
    replica_name,
)

T0 = dt.datetime(2026, 11, 24, 4, 0, tzinfo=dt.UTC)
REPLICAS = ("web-os-reprotect", "web-data0-reprotect")


def snap(
    replica: str, point: str, minutes: int, *, done: bool = True, **tags: str
) -> PointSnapshot:
    base = {
        ROLE: RECOVERY_POINT,
        TAG_REPLICA: replica,
        TAG_POINT: point,
        TAG_SOURCE_TIME: (T0 + dt.timedelta(minutes=minutes)).isoformat(),
        TAG_SEQ: "7",
    }
    return PointSnapshot(f"s-{replica}-{point}", {**base, **tags}, done)


def test_a_point_is_one_snapshot_of_every_replica_oldest_first() -> None:
    found = points_of(
        [
            snap(REPLICAS[0], "c-2", 10),
            snap(REPLICAS[1], "c-2", 11),
            snap(REPLICAS[0], "c-1", 5),
            snap(REPLICAS[1], "c-1", 5),
        ],
        REPLICAS,
    )
    assert [p.point.id for p in found] == ["c-1", "c-2"]
    newest = found[-1]
    # The cut's time is its oldest snapshot's (what every disk holds at least).
    assert newest.point.source_time == T0 + dt.timedelta(minutes=10)
    assert newest.snapshots == ("s-web-os-reprotect-c-2", "s-web-data0-reprotect-c-2")
    assert newest.point.last_seq == 7
    assert newest.point.disks == REPLICAS


def test_half_a_point_an_unfinished_snapshot_or_another_vms_is_no_point() -> None:
    found = points_of(
        [
            snap(REPLICAS[0], "c-3", 15),  # the data disk's snapshot is missing
            snap(REPLICAS[0], "c-4", 20),
            snap(REPLICAS[1], "c-4", 20, done=False),  # still being taken
            snap("other-os-reprotect", "c-5", 25),
            snap(REPLICAS[1], "c-5", 25),
            PointSnapshot("untagged", {}, True),
            snap(REPLICAS[0], "c-6", 30, **{TAG_SOURCE_TIME: "yesterday"}),
            snap(REPLICAS[1], "c-6", 30),
        ],
        REPLICAS,
    )
    assert found == ()


def test_app_consistency_needs_every_disk() -> None:
    both = points_of(
        [
            snap(REPLICAS[0], "c-1", 5, **{TAG_APP_CONSISTENT: "true"}),
            snap(REPLICAS[1], "c-1", 5, **{TAG_APP_CONSISTENT: "true"}),
            snap(REPLICAS[0], "c-2", 9, **{TAG_APP_CONSISTENT: "true"}),
            snap(REPLICAS[1], "c-2", 9),
        ],
        REPLICAS,
    )
    assert [(p.point.id, p.point.app_consistent) for p in both] == [("c-1", True), ("c-2", False)]


def test_names_are_deterministic_bounded_and_per_point() -> None:
    name = failover_disk_name("web-01", 0, "9f3a61c2-000000042")
    assert name == failover_disk_name("web-01", 0, "9f3a61c2-000000042")
    assert name != failover_disk_name("web-01", 0, "9f3a61c2-000000043")
    assert name != failover_disk_name("web-01", 1, "9f3a61c2-000000042")
    assert name.startswith("web-01-fo0-")
    assert len(failover_disk_name("v" * 200, 3, "p")) <= 80
    assert replica_name("web-01-os") == "web-01-os-reprotect"
    assert len(replica_name("d" * 100)) == 80
