"""The Helm chart: lints, renders what the plain manifests say, installs, upgrades, and grants
exactly the intended permissions in exactly the watched namespaces, and nothing cluster-wide
(kopf's scanning is disabled: the operator neither lists namespaces nor watches CRDs).

The chart's CRDs are copies of crds/ (Helm does not follow symlinks when it packages a
chart); a test keeps them byte-identical. The failback.io CRDs are rendered as templates so
`helm upgrade` upgrades them; kopf's KopfPeering CRD, which never changes, is in the
chart's crds/ folder so Helm installs it before the KopfPeering objects.

The test bed has no kubelet: the operator pod never runs, which is fine here: what is
checked is what the API server stores and what RBAC allows.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config

from failback.cli import build_parser
from testbed.rbac import can_i, effective_permissions, expand
from testbed.tools import Tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "failback-operator"
CRDS = ROOT / "crds"
MANIFESTS = ROOT / "manifests"
IMAGE = ("registry.example.com/platform/failback-operator", "0.1.0")
KEEP = "helm.sh/resource-policy"

Obj = dict[str, Any]


def load_all(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def render(helm: Tool, *args: str, namespace: str = "failback-system") -> list[Obj]:
    return load_all(helm.run("template", "fbo", str(CHART), "--namespace", namespace, *args).stdout)


def only(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def plain(kind: str) -> Obj:
    (found,) = (
        obj
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for obj in load_all(path.read_text())
        if obj["kind"] == kind
    )
    return found


def _client(kubeconfig: Path) -> Any:
    return config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]


NAMESPACED = expand(plain("Role")["rules"])
CLUSTER_RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding"}


# --- the chart's files ------------------------------------------------------------------


def test_the_chart_crds_are_byte_identical_copies_of_crds() -> None:
    templated = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    folder = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    source = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    fix = f"run: cp crds/failback.io_*.yaml {CHART.relative_to(ROOT)}/files/crds/"
    assert not (set(templated) & set(folder)), "a CRD is both templated and in crds/"
    assert {**templated, **folder}.keys() == source.keys(), fix
    for name, text in {**templated, **folder}.items():
        assert text == source[name], f"{name} differs from crds/{name}; {fix}"
    # kopf's CRD in crds/ (installed first, never changes), ours upgradable as templates.
    assert set(folder) == {"kopf.dev_kopfpeerings.yaml"}


def walk(schema: Any, path: str = "#") -> Iterator[tuple[str, Obj]]:
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from walk(value, f"{path}/{i}")


def test_the_values_schema_refuses_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    # Kubernetes' own types passed through to the pod spec (the API server validates
    # them) and Helm's `global`, which a parent chart may set.
    pass_through = {"#/definitions/kubernetesObject", "#/properties/global"}
    loose = [
        path
        for path, node in walk(schema)
        if node.get("type") == "object"
        and path not in pass_through
        and (
            # A record: its keys are listed and no other is allowed.
            ("properties" in node and node.get("additionalProperties") is not False)
            # A map (labels, annotations, node selector): the values are typed.
            or ("properties" not in node and not isinstance(node.get("additionalProperties"), dict))
        )
    ]
    assert not loose, f"objects that accept unknown keys: {loose}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert set(schema["required"]) <= set(values)


# --- lint and template ------------------------------------------------------------------


def test_lint_strict(helm: Tool) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_rendered_rbac_equals_the_plain_manifests(helm: Tool) -> None:
    objects = render(helm)
    (role,) = only(objects, "Role")
    assert role["metadata"]["namespace"] == "failback-system"
    assert role["rules"] == plain("Role")["rules"]
    (account,) = only(objects, "ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": "failback-system",
    }
    (binding,) = only(objects, "RoleBinding")
    assert binding["subjects"] == [subject]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={team-a,team-b}"],
        ["--set", "installCRDs=false"],
        ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"],
    ],
    ids=["defaults", "two-namespaces", "no-crds", "existing-account"],
)
def test_the_chart_renders_nothing_cluster_wide_but_crds(helm: Tool, values: list[str]) -> None:
    objects = render(helm, "--include-crds", *values)
    assert not [o for o in objects if o["kind"] in CLUSTER_RBAC_KINDS]
    cluster_scoped = {o["kind"] for o in objects if "namespace" not in o["metadata"]}
    assert cluster_scoped <= {"CustomResourceDefinition"}, cluster_scoped


def test_a_new_chart_version_rolls_the_deployment(helm: Tool, tmp_path: Path) -> None:
    """The operator sees CRD changes only when it restarts: an upgrade to a new chart
    version (which is how new CRDs arrive) must change the pod template, so the Deployment
    is rolled out again. The same version and values render the same pod template."""
    chart = tmp_path / "failback-operator"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = f"{meta['version']}-next"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))

    def pod_template(path: Path) -> Obj:
        out = helm.run("template", "fbo", str(path), "--namespace", "failback-system").stdout
        (deployment,) = only(load_all(out), "Deployment")
        template: Obj = deployment["spec"]["template"]
        return template

    before = pod_template(CHART)
    assert pod_template(CHART) == before
    after = pod_template(chart)
    assert after != before
    assert after["metadata"]["labels"]["helm.sh/chart"] == f"failback-operator-{meta['version']}"


def test_rendered_deployment_matches_the_plain_one(helm: Tool) -> None:
    (deployment,) = only(render(helm), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    plain_pod = plain("Deployment")["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "volumes"):
        assert pod[key] == plain_pod[key], key
    (container,) = pod["containers"]
    (plain_container,) = plain_pod["containers"]
    for key in ("securityContext", "resources", "livenessProbe", "ports", "env", "volumeMounts"):
        assert container[key] == plain_container[key], key
    assert container["image"] == "failback-operator:0.1.0"
    assert container["command"] == plain_container["command"]
    (debug,) = only(render(helm, "--set", "logLevel=debug"), "Deployment")
    debug_command = debug["spec"]["template"]["spec"]["containers"][0]["command"]
    assert debug_command == [*plain_container["command"], "--verbose"]
    # A command the real CLI accepts (argparse exits on an unknown flag).
    assert build_parser().parse_args(debug_command[1:]).verbose is True


def test_rendered_crds_are_the_repository_crds_kept_on_uninstall(helm: Tool) -> None:
    rendered = {c["metadata"]["name"]: c for c in only(render(helm), "CustomResourceDefinition")}
    expected = {}
    for path in sorted(CRDS.glob("failback.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crd["metadata"]["annotations"] = {KEEP: "keep"}
        expected[crd["metadata"]["name"]] = crd
    assert rendered == expected
    assert not only(render(helm, "--set", "installCRDs=false"), "CustomResourceDefinition")
    with_folder = only(render(helm, "--include-crds"), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in with_folder} == {*expected, "kopfpeerings.kopf.dev"}


def test_two_watched_namespaces_render_a_role_and_a_peering_in_each(helm: Tool) -> None:
    objects = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    for kind in ("Role", "RoleBinding", "KopfPeering"):
        assert sorted(o["metadata"]["namespace"] for o in only(objects, kind)) == [
            "team-a",
            "team-b",
        ], kind
    (deployment,) = only(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == "failback-system"
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert build_parser().parse_args(command[1:]).namespaces == ["team-a", "team-b"]
    assert command == [
        *("failback", "operator", "--namespace", "team-a", "--namespace", "team-b"),
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
    ]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("bogus=1", "bogus"),
        ("image.bogus=1", "bogus"),
        ("resources.requests.gpu=1", "gpu"),
        ("securityContext.runAsRoot=true", "runAsRoot"),
        ("serviceAccount.annotation=x", "annotation"),
    ],
)
def test_the_values_schema_rejects_an_unknown_key(helm: Tool, setting: str, complaint: str) -> None:
    result = helm.run("template", "fbo", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    # Helm 3.19 (jsonschema/v6) words `additionalProperties: false` like this.
    assert f"additional properties '{complaint}' not allowed" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "setting",
    ["logLevel=trace", "watchNamespaces={Not_A_Namespace}", "image.pullPolicy=Sometimes"],
)
def test_the_values_schema_rejects_a_bad_value(helm: Tool, setting: str) -> None:
    result = helm.run("template", "fbo", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


# --- on the test bed --------------------------------------------------------------------


def adopt_crds(kubectl: Tool, release: str, namespace: str) -> None:
    """Let the release take over CRDs that exist already (installed with kubectl, or by
    another release): Helm adopts an object that carries its ownership metadata."""
    for path in sorted(CRDS.glob("failback.io_*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        if kubectl.run("get", "crd", name, check=False).returncode != 0:
            continue
        kubectl.run("label", "crd", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl.run(
            "annotate",
            "crd",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
            "--overwrite",
        )


def install(helm: Tool, release: str, namespace: str, *args: str) -> None:
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"image.repository={IMAGE[0]}",
        "--set",
        f"image.tag={IMAGE[1]}",
        *args,
    )


def get(kubectl: Tool, *args: str) -> Obj:
    result: Obj = yaml.safe_load(kubectl.run("get", *args, "-o", "yaml").stdout)
    return result


def every_value(watch: list[str]) -> Obj:
    """A value for every key of values.yaml, as an SRE might set them."""
    return {
        "image": {"repository": IMAGE[0], "tag": "0.1.0-rc.1", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "nameOverride": "dr",
        "fullnameOverride": "",
        "watchNamespaces": watch,
        "installCRDs": False,
        "logLevel": "debug",
        "serviceAccount": {
            "create": True,
            "name": "dr-operator",
            "annotations": {"azure.workload.identity/client-id": str(uuid.uuid4())},
        },
        "podAnnotations": {"example.com/owner": "platform-team"},
        "podLabels": {"azure.workload.identity/use": "true"},
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "requests": {"cpu": "200m", "memory": "384Mi"},
            "limits": {"cpu": 2, "memory": "1Gi"},
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "node-role.kubernetes.io/infra", "operator": "Exists"}
                            ]
                        }
                    ]
                }
            }
        },
    }


def test_every_value_renders_objects_the_api_server_accepts(
    helm: Tool, kubectl: Tool, namespace: str, tmp_path: Path
) -> None:
    values = every_value([f"t-{uuid.uuid4().hex[:10]}" for _ in range(2)])
    assert set(values) == set(yaml.safe_load((CHART / "values.yaml").read_text()))
    for watched in values["watchNamespaces"]:
        kubectl.run("create", "namespace", watched)
    # Warn on anything Pod Security "restricted" forbids.
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    objects = render(helm, "-f", str(tmp_path / "values.yaml"), namespace=namespace)
    # The KopfPeering objects need their CRD; the install test covers them.
    objects = [o for o in objects if o["kind"] != "KopfPeering"]
    assert not only(objects, "CustomResourceDefinition")
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects))
    assert "deployment.apps/fbo-dr created (server dry run)" in result.stdout, result.stdout
    assert "Warning" not in result.stderr, result.stderr
    (deployment,) = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dr-operator"
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == (
        "true"
    )


def test_install_upgrade_uninstall(
    helm: Tool,
    kubectl: Tool,
    namespace: str,
    service_account: Callable[[str, str], Path],
) -> None:
    release = "fbo"
    adopt_crds(kubectl, release, namespace)
    install(helm, release, namespace)

    deployment = get(kubectl, "deployment", "fbo-failback-operator", "-n", namespace)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE[0]}:{IMAGE[1]}"
    assert container["command"] == [
        *("failback", "operator", "--namespace", namespace),
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
    ]

    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        if name.endswith(".failback.io"):
            annotations = get(kubectl, "crd", name)["metadata"]["annotations"]
            assert annotations[KEEP] == "keep"
            assert annotations["meta.helm.sh/release-name"] == release
            assert annotations["meta.helm.sh/release-namespace"] == namespace
    get(kubectl, "kopfpeerings.kopf.dev", "failback-operator", "-n", namespace)

    user = f"system:serviceaccount:{namespace}:fbo-failback-operator"
    assert can_i(kubectl, user, "patch", "protectedvms.failback.io", "-n", namespace)
    assert can_i(kubectl, user, "get", "secrets", "-n", namespace)
    assert can_i(kubectl, user, "create", "events", "-n", namespace)
    assert can_i(kubectl, user, "patch", "kopfpeerings.kopf.dev", "-n", namespace)
    assert not can_i(kubectl, user, "list", "secrets", "-n", namespace)
    assert not can_i(kubectl, user, "get", "secrets", "-n", "default")
    assert not can_i(kubectl, user, "delete", "customresourcedefinitions")
    for verb in ("get", "list", "watch"):
        assert not can_i(kubectl, user, verb, "customresourcedefinitions"), verb
        assert not can_i(kubectl, user, verb, "namespaces"), verb
    assert not can_i(kubectl, user, "create", "pods", "-n", namespace)
    assert not can_i(kubectl, user, "delete", "protectedvms.failback.io", "-n", namespace)
    assert not can_i(kubectl, user, "get", "secrets", "-n", "kube-system")
    kubeconfig = service_account(namespace, "fbo-failback-operator")
    assert effective_permissions(_client(kubeconfig), namespace) == NAMESPACED
    assert effective_permissions(_client(kubeconfig), "kube-system") == set()
    # What the release installed: nothing cluster-scoped but the CRDs.
    installed = load_all(helm.run("get", "manifest", release, "-n", namespace).stdout)
    assert not [o for o in installed if o["kind"] in CLUSTER_RBAC_KINDS]

    # Upgrade: new values reach the Deployment, and the CRDs are re-applied from the chart.
    kubectl.run(
        "label",
        "crd",
        "protectedvms.failback.io",
        "app.kubernetes.io/part-of=drifted",
        "--overwrite",
    )
    helm.run(
        "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
        "--set", "logLevel=debug",
    )  # fmt: skip
    status = json.loads(helm.run("status", release, "-n", namespace, "-o", "json").stdout)
    assert (status["version"], status["info"]["status"]) == (2, "deployed")
    deployment = get(kubectl, "deployment", "fbo-failback-operator", "-n", namespace)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "--verbose"
    labels = get(kubectl, "crd", "protectedvms.failback.io")["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "failback-operator"

    # Uninstall removes the operator and keeps the CRDs (and so every custom resource).
    helm.run("uninstall", release, "--namespace", namespace)
    gone = kubectl.run("get", "deployment", "fbo-failback-operator", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr
    for path in sorted(CRDS.glob("*.yaml")):
        kubectl.run("get", "crd", yaml.safe_load(path.read_text())["metadata"]["name"])


def test_watch_namespaces_grant_exactly_those_namespaces(
    helm: Tool,
    kubectl: Tool,
    namespace: str,
    service_account: Callable[[str, str], Path],
) -> None:
    team_a, team_b, other = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(3))
    for name in (team_a, team_b, other):
        kubectl.run("create", "namespace", name)
    release = "fbw"
    adopt_crds(kubectl, release, namespace)
    install(helm, release, namespace, "--set", f"watchNamespaces={{{team_a},{team_b}}}")

    user = f"system:serviceaccount:{namespace}:fbw-failback-operator"
    for watched in (team_a, team_b):
        assert can_i(kubectl, user, "get", "secrets", "-n", watched), watched
        assert can_i(kubectl, user, "patch", "failbackplans.failback.io", "-n", watched), watched
        assert not can_i(kubectl, user, "list", "secrets", "-n", watched), watched
        get(kubectl, "kopfpeerings.kopf.dev", "failback-operator", "-n", watched)
    for unwatched in (other, namespace):
        assert not can_i(kubectl, user, "get", "secrets", "-n", unwatched), unwatched
        assert not can_i(kubectl, user, "watch", "protectedvms.failback.io", "-n", unwatched), (
            unwatched
        )

    kubeconfig = service_account(namespace, "fbw-failback-operator")
    assert effective_permissions(_client(kubeconfig), team_a) == NAMESPACED
    assert effective_permissions(_client(kubeconfig), team_b) == NAMESPACED
    assert effective_permissions(_client(kubeconfig), other) == set()
    assert effective_permissions(_client(kubeconfig), namespace) == set()

    deployment = get(kubectl, "deployment", "fbw-failback-operator", "-n", namespace)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[2:6] == ["--namespace", team_a, "--namespace", team_b]

    helm.run("uninstall", release, "--namespace", namespace)
