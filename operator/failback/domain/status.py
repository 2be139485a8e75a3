"""The status every kind starts from: each applicable condition listed, none hidden.

A condition the operator has not judged yet is ``Unknown``/``Initializing`` rather than
absent, so ``kubectl get -o yaml`` shows from the first second what will be checked.
Pure: the generation and the time come in as arguments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from failback.api.conditions import (
    UNKNOWN,
    Condition,
    ConditionType,
    Reason,
    seed_conditions,
    set_condition,
    summarize,
)


def _not_checked(condition: Condition) -> bool:
    return condition.status == UNKNOWN and condition.reason == Reason.INITIALIZING


def refresh_conditions(
    existing: Sequence[Condition],
    applicable: Sequence[str],
    ready_inputs: Sequence[str],
    generation: int,
    now: dt.datetime,
) -> list[Condition]:
    """The conditions of an object at ``generation``.

    - a condition that no longer applies (the spec changed) is dropped;
    - a missing one is added as Unknown/Initializing;
    - one still waiting for its first check is restamped with ``generation`` (it is still
      true that it was not checked, for the new spec too);
    - ``Ready`` summarizes ``ready_inputs``; while none of them was checked it says so
      in one short line instead of repeating the same message per input.
    """
    kept = [c for c in existing if c.type in applicable and c.type != ConditionType.READY]
    kept = [
        dataclasses.replace(c, observed_generation=generation) if _not_checked(c) else c
        for c in kept
    ]
    checks_applicable = [t for t in applicable if t != ConditionType.READY]
    seeded = seed_conditions(kept, checks_applicable, generation, now)
    checks = [c for c in seeded if c.type in ready_inputs]
    if checks and all(_not_checked(c) for c in checks):
        waiting = "Waiting for the first checks: " + ", ".join(c.type for c in checks) + "."
        ready = Condition(
            ConditionType.READY, UNKNOWN, Reason.INITIALIZING, waiting, generation, now
        )
    else:
        ready = summarize(seeded, ready_inputs, generation, now)
    if ConditionType.READY not in applicable:
        return seeded
    previous = [c for c in existing if c.type == ConditionType.READY]
    return set_condition(previous, ready) + seeded
