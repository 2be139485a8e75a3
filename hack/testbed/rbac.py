"""Asking the real API server what an account may do: for the tests that prove RBAC minimal.

``can_i`` is ``kubectl auth can-i --as``; ``effective_permissions`` is a
SelfSubjectRulesReview made with the account's own credentials; ``expand`` flattens
RBAC rules into (apiGroup, resource, verb) triples so both can be compared with sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from testbed.tools import Tool

Permission = tuple[str, str, str]
"""(apiGroup, resource, verb): one permission."""


def expand(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    """Every (group, resource, verb) a list of RBAC rules grants; resourceNames refused."""
    granted: set[Permission] = set()
    for rule in rules:
        assert not rule.get("resourceNames"), f"unexpected resourceNames in {rule}"
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    granted.add((group, resource, verb))
    return granted


def can_i(kubectl: Tool, user: str, verb: str, resource: str, *args: str) -> bool:
    """``kubectl auth can-i VERB RESOURCE --as=USER ARGS``; a warning fails the check."""
    result = kubectl.run("auth", "can-i", verb, resource, f"--as={user}", *args, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, f"can-i {verb} {resource} {args}: {result.stderr}"
    # A warning means kubectl did not check what was meant (e.g. an unknown resource type);
    # the kubeconfig's default namespace on a cluster-scoped resource is harmless.
    warnings = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("Warning") and "is not namespace scoped" not in line
    ]
    assert not warnings, result.stderr
    return answer == "yes"


def effective_permissions(api_client: Any, namespace: str) -> set[Permission]:
    """Everything the client's user may do in ``namespace`` (SelfSubjectRulesReview),
    minus the self-reviews every authenticated user may create."""
    from kubernetes import client

    review = client.AuthorizationV1Api(api_client).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(
            spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)
        )
    )
    status = review.status
    assert status is not None
    assert not status.incomplete, status.evaluation_error
    rules = [
        {
            "apiGroups": rule.api_groups or [],
            "resources": rule.resources or [],
            "verbs": rule.verbs,
            "resourceNames": rule.resource_names,
        }
        for rule in status.resource_rules
    ]
    return {p for p in expand(rules) if not p[1].startswith("selfsubject")}
