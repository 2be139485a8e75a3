"""The plain manifests install, and the operator's RBAC is least privilege: proven, not assumed.

The namespace, ServiceAccount, RBAC and peering object of manifests/ are applied to the
test bed's API server, which runs RBAC. Then `kubectl auth can-i --as=<the operator>`
checks what the operator may and may not do, and a SelfSubjectRulesReview made with the
operator's own token lists *everything* it may do: that list must equal the intended one
in its namespace, and be empty everywhere else. Nothing is cluster-wide: kopf's scanning
is disabled, so the operator neither lists namespaces nor watches CRDs.
The Deployment is only dry-run on the server (there is no image and no kubelet here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config

from failback.cli import build_parser
from testbed.rbac import Permission, can_i, effective_permissions, expand
from testbed.tools import Tool

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "failback-operator"
NAMESPACE = "failback-system"
ACCOUNT = "failback-operator"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
RBAC_KINDS = {"Role", "ClusterRole"}
CLUSTER_RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding"}

Obj = dict[str, Any]

KINDS = ("protectedvms", "failbackplans", "mastertargets", "processservers")
# What the operator needs in every watched namespace, and nothing more.
NAMESPACED: set[Permission] = (
    {("failback.io", kind, verb) for kind in KINDS for verb in ("get", "list", "watch", "patch")}
    | {("failback.io", f"{kind}/status", "patch") for kind in KINDS}
    | {(group, "events", verb) for group in ("", "events.k8s.io") for verb in ("create", "patch")}
    | {("", "secrets", "get")}
    | {("kopf.dev", "kopfpeerings", verb) for verb in ("get", "list", "watch", "patch")}
)
# Cluster-wide it needs nothing: no namespaces, no CRDs (see runtime.py: scanning disabled).


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def wildcards(objects: Iterable[Obj]) -> list[str]:
    found = []
    for obj in objects:
        if obj.get("kind") not in RBAC_KINDS:
            continue
        for i, rule in enumerate(obj.get("rules") or []):
            for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                if any("*" in value for value in rule.get(key) or []):
                    found.append(f"{obj['kind']}/{obj['metadata']['name']} rule {i}: {key}")
    return found


def manifest_objects() -> list[Obj]:
    return [obj for path in sorted(MANIFESTS.glob("*.yaml")) for obj in load(path)]


def rendered_chart(helm: Tool, *args: str) -> list[Obj]:
    out = helm.run("template", "fbo", str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


# --- without a server -------------------------------------------------------------------


def test_the_plain_rbac_is_exactly_the_intended_rules() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifest_objects()}
    role = objects[("Role", ACCOUNT)]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert expand(role["rules"]) == NAMESPACED
    kinds = sorted(kind for kind, _ in objects)
    assert kinds.count("Role") == 1
    assert kinds.count("RoleBinding") == 1
    binding = objects[("RoleBinding", ACCOUNT)]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": ACCOUNT,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}
    ]


def test_the_manifests_grant_nothing_cluster_wide() -> None:
    """No ClusterRole, no ClusterRoleBinding: the operator needs no cluster-wide right."""
    found = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in manifest_objects()
        if o["kind"] in CLUSTER_RBAC_KINDS
    ]
    assert not found, found


def test_no_rule_in_the_manifests_has_a_wildcard() -> None:
    assert not wildcards(manifest_objects())


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watchNamespaces={team-a,team-b}"], ["--set", "installCRDs=false"]],
    ids=["defaults", "two-namespaces", "no-crds"],
)
def test_no_rule_in_the_rendered_chart_has_a_wildcard(helm: Tool, values: list[str]) -> None:
    objects = rendered_chart(helm, *values)
    assert any(o["kind"] == "Role" for o in objects)
    assert not wildcards(objects)


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watchNamespaces={team-a,team-b}"], ["--set", "installCRDs=false"]],
    ids=["defaults", "two-namespaces", "no-crds"],
)
def test_the_rendered_chart_grants_nothing_cluster_wide(helm: Tool, values: list[str]) -> None:
    objects = rendered_chart(helm, "--include-crds", *values)
    assert not [o for o in objects if o["kind"] in CLUSTER_RBAC_KINDS]
    # The only cluster-scoped objects are the CRDs themselves.
    cluster_scoped = {o["kind"] for o in objects if "namespace" not in o["metadata"]}
    assert cluster_scoped <= {"CustomResourceDefinition"}, cluster_scoped


def test_the_deployment_runs_one_restricted_replica() -> None:
    (deployment,) = load(MANIFESTS / "deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == ACCOUNT
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "failback-operator:0.1.0"
    assert container["command"] == [
        *("failback", "operator", "--namespace", NAMESPACE),
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
    ]
    assert {"POD_ID", "POD_NAME", "POD_NAMESPACE"} <= {env["name"] for env in container["env"]}
    # The command is one the real CLI accepts (argparse exits on an unknown flag).
    assert container["command"][0] == "failback"
    args = build_parser().parse_args(container["command"][1:])
    assert args.namespaces == [NAMESPACE]
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics_port == 9090
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}


# --- on the test bed --------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(kubectl: Tool, crds_installed: list[str]) -> None:
    for name in ("namespace", "serviceaccount", "rbac", "peering"):
        kubectl.run("apply", "-f", str(MANIFESTS / f"{name}.yaml"))


def test_the_deployment_passes_a_server_side_dry_run_under_restricted(
    kubectl: Tool, installed: None
) -> None:
    result = kubectl.run("apply", "--dry-run=server", "-f", str(MANIFESTS / "deployment.yaml"))
    assert "deployment.apps/failback-operator" in result.stdout
    # The namespace warns on Pod Security "restricted" violations: there must be none.
    assert "Warning" not in result.stderr, result.stderr


def test_pod_security_would_warn_about_a_weaker_deployment(kubectl: Tool, installed: None) -> None:
    """The check above is live: the same Deployment, made privileged, gets warned about."""
    (deployment,) = load(MANIFESTS / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "allowPrivilegeEscalation"
    ] = True
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment))
    assert "would violate PodSecurity" in result.stderr, result.stderr


def test_the_peering_object_exists(kubectl: Tool, installed: None) -> None:
    out = kubectl.run("get", "kopfpeerings.kopf.dev", ACCOUNT, "-n", NAMESPACE, "-o", "name")
    assert out.stdout.strip() == f"kopfpeering.kopf.dev/{ACCOUNT}"


@pytest.mark.parametrize(
    ("verb", "resource", "args"),
    [
        ("get", "protectedvms.failback.io", ("-n", NAMESPACE)),
        ("watch", "failbackplans.failback.io", ("-n", NAMESPACE)),
        ("patch", "mastertargets.failback.io", ("-n", NAMESPACE)),
        ("patch", "protectedvms.failback.io", ("--subresource=status", "-n", NAMESPACE)),
        ("patch", "processservers.failback.io", ("--subresource=status", "-n", NAMESPACE)),
        ("get", "secrets", ("-n", NAMESPACE)),
        ("get", "secrets/vcenter-ams", ("-n", NAMESPACE)),
        ("create", "events", ("-n", NAMESPACE)),
        ("create", "events.events.k8s.io", ("-n", NAMESPACE)),
        ("patch", f"kopfpeerings.kopf.dev/{ACCOUNT}", ("-n", NAMESPACE)),
        ("watch", "kopfpeerings.kopf.dev", ("-n", NAMESPACE)),
    ],
)
def test_the_operator_can(
    kubectl: Tool, installed: None, verb: str, resource: str, args: tuple[str, ...]
) -> None:
    assert can_i(kubectl, OPERATOR, verb, resource, *args)


@pytest.mark.parametrize(
    ("verb", "resource", "args"),
    [
        ("list", "secrets", ("-n", NAMESPACE)),
        ("watch", "secrets", ("-n", NAMESPACE)),
        ("get", "secrets", ("-n", "default")),
        ("get", "secrets", ("-n", "kube-system")),
        ("get", "secrets", ("--all-namespaces",)),
        # Nothing cluster-wide: kopf's scanning is disabled, so not even reading CRDs.
        ("get", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("get", "customresourcedefinitions.apiextensions.k8s.io/protectedvms.failback.io", ()),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("create", "pods", ("-n", NAMESPACE)),
        ("delete", "protectedvms.failback.io", ("-n", NAMESPACE)),
        ("create", "protectedvms.failback.io", ("-n", NAMESPACE)),
        ("update", "protectedvms.failback.io", ("-n", NAMESPACE)),
        ("patch", "protectedvms.failback.io", ("-n", "default")),
        ("update", "protectedvms.failback.io", ("--subresource=status", "-n", NAMESPACE)),
        ("list", "namespaces", ()),
        ("watch", "namespaces", ()),
        ("get", f"namespaces/{NAMESPACE}", ()),
        ("create", "rolebindings.rbac.authorization.k8s.io", ("-n", NAMESPACE)),
        ("get", "configmaps", ("-n", "kube-system")),
        ("list", "pods", ("-n", "kube-system")),
        ("patch", "kopfpeerings.kopf.dev", ("-n", "kube-system")),
        ("impersonate", "serviceaccounts", ("-n", NAMESPACE)),
    ],
)
def test_the_operator_cannot(
    kubectl: Tool, installed: None, verb: str, resource: str, args: tuple[str, ...]
) -> None:
    assert not can_i(kubectl, OPERATOR, verb, resource, *args)


def test_everything_the_operator_may_do_is_the_intended_set(
    installed: None, service_account: Callable[[str, str], Path], namespace: str
) -> None:
    """With the operator's own token: its whole permission set, per namespace. The
    review includes cluster-wide rules, so "nothing elsewhere" proves there are none."""
    api = config.new_client_from_config(str(service_account(NAMESPACE, ACCOUNT)))  # type: ignore[no-untyped-call]
    assert effective_permissions(api, NAMESPACE) == NAMESPACED
    # Anywhere else, kube-system included: nothing at all.
    for elsewhere in ("kube-system", "default", namespace):
        assert effective_permissions(api, elsewhere) == set(), elsewhere
