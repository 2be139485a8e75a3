"""Typed models of the failback.io/v1alpha1 custom resources (spec and status).

One module per kind — :mod:`.protectedvm`, :mod:`.failbackplan`, :mod:`.mastertarget`,
:mod:`.processserver` — each with frozen spec and status dataclasses, ``parse(body)``,
``Status.to_dict()``, its ``CONDITION_TYPES`` and a ``derive_phase`` for the printer
column. :mod:`.conditions` holds the condition shape and the catalog of every condition
type and reason; :mod:`.crossobject` the rules the controllers enforce across objects;
:mod:`.constants` the API's names. Pure: no I/O, no clock.
"""

from failback.api import (
    conditions,
    constants,
    crossobject,
    failbackplan,
    mastertarget,
    processserver,
    protectedvm,
)
from failback.api._codec import (
    format_duration,
    format_time,
    merge_patch,
    parse_duration,
    parse_time,
)
from failback.api.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    seed_conditions,
    set_condition,
    summarize,
)
from failback.api.constants import API_VERSION, GROUP, VERSION

__all__ = [
    "API_VERSION",
    "FALSE",
    "GROUP",
    "TRUE",
    "UNKNOWN",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Reason",
    "conditions",
    "constants",
    "crossobject",
    "failbackplan",
    "find_condition",
    "format_duration",
    "format_time",
    "mastertarget",
    "merge_patch",
    "parse_duration",
    "parse_time",
    "processserver",
    "protectedvm",
    "seed_conditions",
    "set_condition",
    "summarize",
]
