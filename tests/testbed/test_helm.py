"""Helm is the real binary: it lints, renders and installs charts into the test bed's API server."""

from __future__ import annotations

from pathlib import Path

import yaml

from testbed.tools import Tool

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: smoke\nversion: 0.1.0\ndescription: smoke chart\n",
    "values.yaml": "greeting: hello\n",
    "templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-smoke\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


def write_chart(root: Path) -> Path:
    for name, text in CHART.items():
        path = root / "smoke" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "smoke"


def test_lint_template_install_uninstall(
    helm: Tool, kubectl: Tool, namespace: str, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path)

    helm.run("lint", "--strict", str(chart))
    rendered = list(yaml.safe_load_all(helm.run("template", "r1", str(chart)).stdout))
    assert rendered[0]["data"] == {"greeting": "hello"}

    helm.run("install", "r1", str(chart), "--namespace", namespace, "--set", "greeting=hi")
    got = yaml.safe_load(
        kubectl.run("get", "configmap", "r1-smoke", "-n", namespace, "-o", "yaml").stdout
    )
    assert got["data"] == {"greeting": "hi"}
    assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    helm.run("uninstall", "r1", "--namespace", namespace)
    gone = kubectl.run("get", "configmap", "r1-smoke", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def test_lint_reports_a_broken_chart(helm: Tool, tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    (chart / "templates" / "broken.yaml").write_text("kind: {{ .Values.missing.field }}\n")
    result = helm.run("lint", "--strict", str(chart), check=False)
    assert result.returncode != 0
    assert "nil pointer" in result.stdout + result.stderr
