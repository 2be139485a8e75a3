"""The Kubernetes of the test bed is a real API server: schemas, CRDs and RBAC are enforced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from testbed.tools import Tool

GROUP = "smoke.failback.io"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "name": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self == oldSelf",
                                                "message": "name is immutable",
                                            }
                                        ],
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widget_crd(kubectl: Tool) -> str:
    kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump(CRD))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/widgets.{GROUP}")
    return "widgets"


def widget(name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, "name": name},
    }


def test_custom_resource_round_trip(k8s_client: Any, widget_crd: str, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_client)
    api.create_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, widget("w1", 3))

    got = api.get_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, "w1")

    assert got["spec"] == {"size": 3, "name": "w1"}
    assert got["metadata"]["uid"]
    assert got["metadata"]["generation"] == 1
    assert got["metadata"]["resourceVersion"]


def test_schema_and_cel_rules_are_enforced(
    k8s_client: Any, widget_crd: str, namespace: str
) -> None:
    api = client.CustomObjectsApi(k8s_client)
    with pytest.raises(ApiException) as too_big:
        api.create_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, widget("w2", 11))
    assert too_big.value.status == 422
    assert "spec.size" in too_big.value.body

    api.create_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, widget("w3", 1))
    with pytest.raises(ApiException) as immutable:
        api.patch_namespaced_custom_object(
            GROUP, "v1", namespace, widget_crd, "w3", {"spec": {"name": "renamed"}}
        )
    assert immutable.value.status == 422
    assert "name is immutable" in immutable.value.body


def test_restricted_service_account_is_forbidden(
    k8s_client: Any,
    widget_crd: str,
    namespace: str,
    service_account: Callable[[str, str], Path],
) -> None:
    kubeconfig = service_account(namespace, "restricted")
    as_sa = config.new_client_from_config(str(kubeconfig))

    with pytest.raises(ApiException) as forbidden:
        client.CoreV1Api(as_sa).list_namespaced_secret(namespace)
    assert forbidden.value.status == 403
    assert f"system:serviceaccount:{namespace}:restricted" in forbidden.value.body

    # RBAC is what decides: grant one verb on one resource and exactly that works.
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-widgets"),
            rules=[client.V1PolicyRule(api_groups=[GROUP], resources=["widgets"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-widgets"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-widgets"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="restricted", namespace=namespace)
            ],
        ),
    )
    widgets = client.CustomObjectsApi(as_sa)
    assert widgets.list_namespaced_custom_object(GROUP, "v1", namespace, widget_crd)["items"] == []
    with pytest.raises(ApiException) as still_forbidden:
        widgets.create_namespaced_custom_object(GROUP, "v1", namespace, widget_crd, widget("w", 1))
    assert still_forbidden.value.status == 403


def test_kubectl_talks_to_the_api_server(kubectl: Tool) -> None:
    version = yaml.safe_load(kubectl.run("version", "-o", "yaml").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    whoami = kubectl.run("auth", "whoami", "-o", "yaml").stdout
    assert "system:masters" in whoami
