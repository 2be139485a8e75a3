"""SIGKILL the master target service mid-batch, restart it, resume like a process server.

A sender thread streams batches (about 1 MiB each) over mutual TLS and commits a point every
three batches; the test kills the service at a random moment, restarts it, and checks:

- the last durable sequence it reports is the last acknowledged batch or the one in flight,
  so the sender resends at most one batch;
- every acknowledged point is still listed (a commit in flight may be listed too);
- the disks equal the model of batches 1..lastDurableSeq, byte for byte (resume mode);
- at the end, rolling back to the oldest point gives that point's bytes exactly.

Every batch's content depends only on its sequence number, so the model is exact whatever
was resent.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from failback.dataplane.journal import Extent

from .test_mt_service import T0, MasterTarget, Model, disk_digests, random_extents, running

KILLS = 12
POINT_EVERY = 3
DISKS = ("os", "data", "other")


def batch(seq: int) -> list[Extent]:
    return random_extents(random.Random(1_000 + seq), count=8, max_sectors=256)


@dataclass
class Sender:
    """Sends batches from ``next_seq`` on until the connection breaks or it is told to stop."""

    mt: MasterTarget
    next_seq: int
    acked_seq: int
    acked_points: list[str]
    sent: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        client = self.mt.client()
        try:
            while not self.stop.is_set():
                seq = self.next_seq
                self.sent.add(seq)
                status, answer = client.batch("vm1", seq, batch(seq))
                assert status == 200, answer
                self.acked_seq = answer["lastDurableSeq"]
                self.next_seq = self.acked_seq + 1
                if seq % POINT_EVERY == 0:
                    point_id = f"p-{seq}"
                    status, answer = client.point("vm1", point_id, T0 + dt.timedelta(minutes=seq))
                    assert status in (200, 201), answer
                    self.acked_points.append(point_id)
        except OSError:
            return  # the service was killed under us
        except BaseException as exc:  # an assertion: report it to the test
            self.error = exc


class Expected:
    """The model advanced batch by batch; the disks' digests remembered at every sequence."""

    def __init__(self, mt: MasterTarget) -> None:
        self.model = Model(mt)
        self.seq = 0
        self.at: dict[int, dict[str, str]] = {0: self.model.digests(DISKS)}

    def digests(self, seq: int) -> dict[str, str]:
        while self.seq < seq:
            self.seq += 1
            self.model.apply(batch(self.seq))
            self.at[self.seq] = self.model.digests(DISKS)
        return self.at[seq]


def test_sigkill_mid_batch_resends_at_most_one_batch_and_loses_no_point(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    rng = random.Random(2026)
    with running(tmp_path, groups=("vm1=os,data,other",)) as mt:
        expected = Expected(mt)
        client = mt.client()
        # The initial copy (direct to the disks) and its point, before any kill.
        assert client.batch("vm1", 1, batch(1))[0] == 200
        assert client.point("vm1", "p-1", T0 + dt.timedelta(minutes=1))[0] == 201
        acked_seq, acked_points = 1, ["p-1"]
        mid_batch = 0  # kills that landed while a batch was sent and not yet acknowledged
        for kill in range(KILLS):
            sender = Sender(mt, acked_seq + 1, acked_seq, list(acked_points))
            thread = threading.Thread(target=sender.run, daemon=True)
            thread.start()
            time.sleep(rng.uniform(0.05, 0.35))
            mt.kill()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert sender.error is None, sender.error
            in_flight = max(sender.sent) if sender.sent else acked_seq
            mt.start()

            state = client.request("GET", "/v1/groups/vm1")[1]
            durable = state["lastDurableSeq"]
            assert sender.acked_seq <= durable <= sender.acked_seq + 1, (kill, state)
            assert durable <= in_flight
            resend = in_flight - durable  # batches the sender had sent that it must send again
            assert resend <= 1, (kill, durable, in_flight)
            mid_batch += int(in_flight > sender.acked_seq)

            listed = [p["id"] for p in client.request("GET", "/v1/groups/vm1/points")[1]["points"]]
            assert listed[: len(sender.acked_points)] == sender.acked_points, (kill, listed)
            assert len(listed) <= len(sender.acked_points) + 1
            assert disk_digests(mt, DISKS) == expected.digests(durable), (
                f"kill {kill}: disks differ from batches 1..{durable}"
            )
            acked_seq, acked_points = durable, listed

        # Resume once more, commit, and roll back to the oldest point.
        seq = acked_seq + 1
        assert client.batch("vm1", seq, batch(seq))[0] == 200
        assert client.point("vm1", "final", T0 + dt.timedelta(minutes=seq))[0] == 201
        assert disk_digests(mt, DISKS) == expected.digests(seq)
        points = client.request("GET", "/v1/groups/vm1/points")[1]["points"]
        middle = points[len(points) // 2]
        for target in (middle, points[0]):
            status, answer = client.request(
                "POST", "/v1/groups/vm1/rollback", {"pointId": target["id"]}
            )
            assert status == 200, answer
            assert disk_digests(mt, DISKS) == expected.digests(target["lastSeq"]), target
        assert mt.starts == KILLS + 1
    assert acked_seq > KILLS, "the sender made progress between kills"
    # The sender is nearly always inside a batch request; a few kills hit a commit.
    assert mid_batch >= KILLS // 4, f"only {mid_batch} of {KILLS} kills landed mid-batch"
    assert time.monotonic() - started < 600
