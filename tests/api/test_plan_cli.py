"""`failback plan` against the test bed's API server: every verb changes only the spec field
it names, reads what the status says, and refuses with a reason (exit 1, nothing changed)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from failback import cli
from failback.api.constants import GROUP, VERSION
from testbed.kube import Kube

pytestmark = pytest.mark.testbed

PLURAL = "failbackplans"


@pytest.fixture
def custom(k8s_client: Any, crds_installed: list[str]) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_client)


def make_plan(custom: client.CustomObjectsApi, namespace: str, manual: bool = True) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FailbackPlan",
        "metadata": {"name": "home"},
        "spec": {
            "activeSite": "Azure",
            "groups": [{"name": "databases", "members": ["db-01"]}],
            "commit": {"mode": "Manual" if manual else "Automatic"},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return "home"


def run(kube: Kube, namespace: str, *args: str) -> int:
    return cli.main(["plan", *args, "-n", namespace, "--kubeconfig", str(kube.kubeconfig)])


def spec(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "home"
    )["spec"]
    return found


def set_status(custom: client.CustomObjectsApi, namespace: str, **status: Any) -> None:
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "home", {"status": status}
    )


def test_start_dry_run_approve_and_cancel_change_only_their_field(
    kube: Kube, namespace: str, custom: client.CustomObjectsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    make_plan(custom, namespace)
    assert run(kube, namespace, "dry-run", "home") == 0
    assert spec(custom, namespace)["dryRun"] is True
    assert run(kube, namespace, "dry-run", "home", "--off") == 0
    assert spec(custom, namespace)["dryRun"] is False

    assert run(kube, namespace, "start", "home") == 0
    assert spec(custom, namespace)["activeSite"] == "OnPrem"
    assert "the failback starts" in capsys.readouterr().out
    assert run(kube, namespace, "start", "home") == 0
    assert "already" in capsys.readouterr().out

    assert run(kube, namespace, "approve", "home") == 1
    assert "no run to approve yet" in capsys.readouterr().err
    set_status(
        custom,
        namespace,
        phase="FailedOver",
        runId="run-7",
        steps=[
            {"name": "power-on", "state": "Succeeded", "group": "databases", "vm": "db-01"},
            {"name": "commit", "state": "Pending", "message": "awaiting approval"},
        ],
    )
    assert run(kube, namespace, "status", "home") == 0
    shown = capsys.readouterr().out
    assert "phase:        FailedOver" in shown
    assert "run:          run-7" in shown
    assert "databases/db-01" in shown
    assert "awaiting approval" in shown
    assert run(kube, namespace, "approve", "home") == 0
    assert spec(custom, namespace)["commit"] == {"mode": "Manual", "approvedRunId": "run-7"}

    assert run(kube, namespace, "cancel", "home") == 0
    assert spec(custom, namespace)["activeSite"] == "Azure"
    set_status(custom, namespace, phase="Committed")
    assert run(kube, namespace, "start", "home") == 0
    assert run(kube, namespace, "cancel", "home") == 1
    assert "cannot be cancelled" in capsys.readouterr().err
    assert spec(custom, namespace)["activeSite"] == "OnPrem"

    # After the commit the VMs are settled on-premises: a failover takes them to Azure,
    # and a cancel before its commit brings them back on-premises.
    assert run(kube, namespace, "failover", "home") == 1
    assert "settled in Azure" in capsys.readouterr().err
    set_status(custom, namespace, phase="Completed", committedSite="OnPrem", runTarget="OnPrem")
    assert run(kube, namespace, "failover", "home") == 0
    assert spec(custom, namespace)["activeSite"] == "Azure"
    assert "the failover to Azure starts" in capsys.readouterr().out
    set_status(custom, namespace, phase="FailingOver", runTarget="Azure", runId="run-8")
    assert run(kube, namespace, "status", "home") == 0
    assert "settled at:   OnPrem   run moves to: Azure" in capsys.readouterr().out
    assert run(kube, namespace, "cancel", "home") == 0
    assert spec(custom, namespace)["activeSite"] == "OnPrem"
    assert "set back to OnPrem" in capsys.readouterr().out


def test_refusals_name_the_reason(
    kube: Kube, namespace: str, custom: client.CustomObjectsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(kube, namespace, "status", "nope") == 1
    assert f"failbackplan {namespace}/nope not found" in capsys.readouterr().err
    make_plan(custom, namespace, manual=False)
    set_status(custom, namespace, runId="run-1")
    assert run(kube, namespace, "approve", "home") == 1
    assert "commits automatically" in capsys.readouterr().err
    assert "approvedRunId" not in spec(custom, namespace).get("commit", {})
