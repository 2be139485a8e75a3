"""``controllers.routing.one_at_a_time``: one reconcile per object at a time, no lock kept."""

from __future__ import annotations

import asyncio
from typing import Any

from failback.controllers.routing import one_at_a_time


async def test_passes_of_one_object_run_one_at_a_time_and_others_in_parallel() -> None:
    running: dict[str, int] = {}
    most: dict[str, int] = {}

    async def reconcile(body: dict[str, Any], **_: Any) -> str:
        uid = body["metadata"]["uid"]
        running[uid] = running.get(uid, 0) + 1
        most[uid] = max(most.get(uid, 0), running[uid])
        await asyncio.sleep(0.01)
        running[uid] -= 1
        return uid

    serialized = one_at_a_time(reconcile)
    bodies = [{"metadata": {"uid": uid}} for uid in ("a", "a", "a", "b", "b")]
    done = await asyncio.gather(*(serialized(body=b) for b in bodies))
    assert done == ["a", "a", "a", "b", "b"]
    assert most == {"a": 1, "b": 1}
    assert not serialized.__closure__ or all(  # the lock table is empty again
        not cell.cell_contents
        for cell in serialized.__closure__
        if isinstance(cell.cell_contents, dict)
    )
