"""Rules that span objects, which no CRD schema can check: the controllers enforce them.

Each rule is reported as a False condition with a fixed type and reason and a message
built from one template, so what users read is the same everywhere and is quoted in
``docs/api.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass
from typing import Final

from failback.api.conditions import FALSE, Condition, ConditionType, Reason
from failback.api.constants import FAILBACK_PLAN, MASTER_TARGET, PROCESS_SERVER, PROTECTED_VM


@dataclass(frozen=True)
class CrossObjectRule:
    """One rule: where it is reported, and the message users read when it is broken."""

    title: str
    reported_on: tuple[str, ...]
    """The kinds whose status carries the condition."""
    condition_type: ConditionType
    reason: Reason
    template: str
    """A ``str.format`` template; :attr:`fields` lists its placeholders."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The names :meth:`message` needs."""
        parsed = string.Formatter().parse(self.template)
        return tuple(dict.fromkeys(name for _, name, _, _ in parsed if name))

    def message(self, **values: object) -> str:
        """The message for this occurrence; ``values`` fill every placeholder."""
        return self.template.format(**values)

    def condition(self, generation: int | None, now: dt.datetime, **values: object) -> Condition:
        """The False condition reporting this occurrence."""
        message = self.message(**values)
        return Condition(self.condition_type, FALSE, self.reason, message, generation, now)


VM_IN_TWO_PLANS: Final = CrossObjectRule(
    "A VM listed in two FailbackPlans",
    (FAILBACK_PLAN.kind,),
    ConditionType.MEMBERS_EXCLUSIVE,
    Reason.VM_IN_ANOTHER_PLAN,
    "ProtectedVM {vm} already belongs to FailbackPlan {plan}: a VM may be in one plan "
    "only; remove it from one of the two",
)
GROUP_MASTER_TARGET_MISMATCH: Final = CrossObjectRule(
    "Members of a replication group use different master targets (R-GRP-1)",
    (PROTECTED_VM.kind, FAILBACK_PLAN.kind),
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    Reason.REPLICATION_GROUP_MASTER_TARGET_MISMATCH,
    "The members of replication group {group} use different master targets "
    "({master_targets}): give every member the same spec.masterTargetRef, or no common "
    "recovery point can exist (R-GRP-1)",
)
GROUP_OUTSIDE_PLAN: Final = CrossObjectRule(
    "A replication group reprotected outside a plan (R-GRP-1)",
    (PROTECTED_VM.kind,),
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    Reason.REPLICATION_GROUP_NEEDS_PLAN,
    "ProtectedVM {vm} is in replication group {group}, which is reprotected only through "
    "a FailbackPlan: list every member of {group} in one FailbackPlan (R-GRP-1)",
)
GROUP_SPLIT: Final = CrossObjectRule(
    "A replication group only partly in the plan (R-GRP-1)",
    (FAILBACK_PLAN.kind,),
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    Reason.REPLICATION_GROUP_SPLIT,
    "Replication group {group} has members outside this plan ({missing}): add them, "
    "a replication group fails back as a whole (R-GRP-1)",
)
GROUP_ACROSS_PLAN_GROUPS: Final = CrossObjectRule(
    "A replication group split across the plan's groups (R-GRP-1)",
    (FAILBACK_PLAN.kind,),
    ConditionType.REPLICATION_GROUP_CONSISTENT,
    Reason.REPLICATION_GROUP_SPLIT,
    "Replication group {group} is split across groups {groups} of this plan: put its "
    "members in one group, a replication group fails back at one point (R-GRP-1)",
)
OS_MISMATCH: Final = CrossObjectRule(
    "A Linux VM on a Windows master target, or a Windows VM on a Linux one (R-PRE-10)",
    (PROTECTED_VM.kind,),
    ConditionType.OS_MATCHES_MASTER_TARGET,
    Reason.OS_MISMATCH,
    "This {os_type} VM cannot use {master_target_os_type} MasterTarget {master_target}: "
    "a {os_type} VM needs a {os_type} master target; point spec.masterTargetRef at one "
    "(R-PRE-10)",
)
MASTER_TARGET_NOT_FOUND: Final = CrossObjectRule(
    "A reference to a missing MasterTarget",
    (PROTECTED_VM.kind,),
    ConditionType.REFERENCES_RESOLVED,
    Reason.MASTER_TARGET_NOT_FOUND,
    "MasterTarget {name} (spec.masterTargetRef) does not exist in namespace {namespace}: "
    "create it or correct the name",
)
PROCESS_SERVER_NOT_FOUND: Final = CrossObjectRule(
    "A reference to a missing ProcessServer",
    (PROTECTED_VM.kind,),
    ConditionType.REFERENCES_RESOLVED,
    Reason.PROCESS_SERVER_NOT_FOUND,
    "ProcessServer {name} (spec.processServerRef) does not exist in namespace {namespace}: "
    "create it or correct the name",
)
SECRET_NOT_FOUND: Final = CrossObjectRule(
    "A reference to a missing Secret",
    (PROTECTED_VM.kind, MASTER_TARGET.kind, PROCESS_SERVER.kind),
    ConditionType.REFERENCES_RESOLVED,
    Reason.SECRET_NOT_FOUND,
    "Secret {name} ({field}) does not exist in namespace {namespace}: create it or "
    "correct the name",
)
SECRET_KEY_MISSING: Final = CrossObjectRule(
    "A Secret missing a key",
    (PROTECTED_VM.kind, MASTER_TARGET.kind, PROCESS_SERVER.kind),
    ConditionType.REFERENCES_RESOLVED,
    Reason.SECRET_KEY_MISSING,
    "Secret {name} ({field}) has no key {key}: add it (this Secret needs {keys})",
)
MEMBER_NOT_FOUND: Final = CrossObjectRule(
    "A plan member that does not exist (R-PRE-11)",
    (FAILBACK_PLAN.kind,),
    ConditionType.MEMBERS_FOUND,
    Reason.MEMBER_NOT_FOUND,
    "ProtectedVM {vm} (group {group}) does not exist in namespace {namespace}: create it "
    "or remove it from spec.groups (R-PRE-11)",
)
RETENTION_VOLUME_NOT_ON_MASTER_TARGET: Final = CrossObjectRule(
    "A retention volume that is not on the master target",
    (PROTECTED_VM.kind,),
    ConditionType.RETENTION_VOLUME_AVAILABLE,
    Reason.RETENTION_VOLUME_NOT_ON_MASTER_TARGET,
    "Retention volume {volume} (spec.retentionVolume) is not on MasterTarget "
    "{master_target}, whose retention volume is {available}: use that one or leave "
    "spec.retentionVolume unset",
)

RULES: Final = (
    VM_IN_TWO_PLANS,
    GROUP_MASTER_TARGET_MISMATCH,
    GROUP_OUTSIDE_PLAN,
    GROUP_SPLIT,
    GROUP_ACROSS_PLAN_GROUPS,
    OS_MISMATCH,
    MASTER_TARGET_NOT_FOUND,
    PROCESS_SERVER_NOT_FOUND,
    SECRET_NOT_FOUND,
    SECRET_KEY_MISSING,
    MEMBER_NOT_FOUND,
    RETENTION_VOLUME_NOT_ON_MASTER_TARGET,
)
"""Every cross-object rule, in the order ``docs/api.md`` lists them."""
