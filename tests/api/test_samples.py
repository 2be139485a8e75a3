"""The samples of manifests/samples/ are valid, consistent, and apply to a real API server.

First without a server: every failback.io object validates against its CRD's schema
(jsonschema, with the Kubernetes extensions stripped) and the objects refer to each
other consistently. Then on the test bed: a server-side dry run (schemas, CEL rules,
defaults), a real `kubectl apply -f manifests/samples/`, and what `kubectl get` shows.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from testbed.tools import Tool

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
CRDS = ROOT / "crds"
NAMESPACE = "failback-system"
GROUP = "failback.io"

Obj = dict[str, Any]


def load_samples() -> list[tuple[str, Obj]]:
    files = sorted(SAMPLES.glob("*.yaml"))
    assert files, f"no samples in {SAMPLES}"
    return [
        (path.name, doc)
        for path in files
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


SAMPLE_OBJECTS = load_samples()


def strip_kubernetes_extensions(schema: Any) -> Any:
    """The schema without the x-kubernetes-* keys, which jsonschema does not know."""
    if isinstance(schema, dict):
        return {
            key: strip_kubernetes_extensions(value)
            for key, value in schema.items()
            if not key.startswith("x-kubernetes-")
        }
    if isinstance(schema, list):
        return [strip_kubernetes_extensions(item) for item in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strip_kubernetes_extensions(version["schema"]["openAPIV3Schema"])
    return schemas


def ident(entry: tuple[str, Obj]) -> str:
    file, obj = entry
    return f"{file}:{obj['kind']}/{obj['metadata']['name']}"


def by_kind(kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for _, obj in SAMPLE_OBJECTS if obj["kind"] == kind}


# --- without a server -------------------------------------------------------------------


def test_the_samples_cover_a_realistic_setup() -> None:
    kinds = Counter(obj["kind"] for _, obj in SAMPLE_OBJECTS)
    assert kinds == {
        "Secret": 3,
        "MasterTarget": 2,
        "ProcessServer": 1,
        "ProtectedVM": 5,
        "FailbackPlan": 1,
    }
    for file, obj in SAMPLE_OBJECTS:
        assert obj["metadata"].get("namespace") == NAMESPACE, (
            f"{file}: {obj['kind']}/{obj['metadata']['name']} must be in {NAMESPACE}"
        )
    assert {mt["spec"]["osType"] for mt in by_kind("MasterTarget").values()} == {"Linux", "Windows"}
    ps = next(iter(by_kind("ProcessServer").values()))["spec"]
    assert (ps["location"], ps["connectivity"], ps["deploy"]) == ("Azure", "S2SVPN", True)
    assert "azure" in ps

    vms = by_kind("ProtectedVM")
    on_prem = {name: vm["spec"]["onPrem"] for name, vm in vms.items()}
    assert any(
        p.get("failbackLocation") == "Original" and "originalVM" in p for p in on_prem.values()
    )
    assert any(
        vm["spec"]["osType"] == "Windows"
        and vm["spec"]["onPrem"].get("failbackLocation") == "Alternate"
        for vm in vms.values()
    )
    physical = [vm for vm in vms.values() if vm["spec"].get("sourceType") == "Physical"]
    assert len(physical) == 1
    assert "alternatePlacement" in physical[0]["spec"]["onPrem"]
    erp_names = [n for n, vm in vms.items() if vm["spec"].get("replicationGroup") == "erp"]
    assert len(erp_names) == 2

    plan = next(iter(by_kind("FailbackPlan").values()))
    assert len(plan["spec"]["groups"]) == 4
    # A replication group fails back whole, at one point: its members share one group.
    (erp_group,) = [g for g in plan["spec"]["groups"] if set(g["members"]) & set(erp_names)]
    assert set(erp_group["members"]) == set(erp_names)


def test_file_names_are_numbered_so_kubectl_applies_them_in_order() -> None:
    names = [path.name for path in sorted(SAMPLES.glob("*.yaml"))]
    assert all(re.match(r"^\d\d-[a-z0-9-]+\.yaml$", name) for name in names), names
    first = {obj["kind"]: file for file, obj in reversed(SAMPLE_OBJECTS)}
    # Secrets before what refers to them; what a ProtectedVM refers to before it.
    assert first["Secret"] < first["MasterTarget"] < first["ProtectedVM"] < first["FailbackPlan"]
    assert first["ProcessServer"] < first["ProtectedVM"]


@pytest.mark.parametrize(
    "entry",
    [entry for entry in SAMPLE_OBJECTS if entry[1]["apiVersion"].startswith(f"{GROUP}/")],
    ids=ident,
)
def test_each_object_validates_against_its_crd_schema(entry: tuple[str, Obj]) -> None:
    file, obj = entry
    schemas = crd_schemas()
    key = (obj["apiVersion"], obj["kind"])
    assert key in schemas, f"{file}: no CRD in {CRDS} serves {key[0]} {key[1]}"
    validator = jsonschema.Draft7Validator(
        schemas[key], format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
    assert not errors, f"{ident(entry)} does not match its CRD:\n" + "\n".join(errors)


def test_the_objects_refer_to_each_other_consistently() -> None:
    secrets = by_kind("Secret")
    masters = by_kind("MasterTarget")
    servers = by_kind("ProcessServer")
    vms = by_kind("ProtectedVM")

    def secret_has(name: str, *keys: str) -> None:
        assert name in secrets, f"Secret {name} is referred to but not in the samples"
        data = {**secrets[name].get("data", {}), **secrets[name].get("stringData", {})}
        missing = [key for key in keys if key not in data]
        assert not missing, f"Secret {name} lacks {missing}"

    for mt in masters.values():
        secret_has(mt["spec"]["vcenterSecretRef"]["name"], "server", "username", "password")
        secret_has(mt["spec"]["tlsSecretRef"]["name"], "tls.crt", "tls.key", "ca.crt")
    for ps in servers.values():
        secret_has(ps["spec"]["tlsSecretRef"]["name"], "tls.crt", "tls.key", "ca.crt")
        secret_has(
            ps["spec"]["azure"]["credentialsSecretRef"]["name"],
            "tenantId",
            "clientId",
            "clientSecret",
        )
    for name, vm in vms.items():
        spec = vm["spec"]
        secret_has(spec["onPrem"]["vcenterSecretRef"]["name"], "server", "username", "password")
        secret_has(
            spec["azure"]["credentialsSecretRef"]["name"], "tenantId", "clientId", "clientSecret"
        )
        assert spec["processServerRef"]["name"] in servers, name
        master = masters.get(spec["masterTargetRef"]["name"])
        assert master is not None, f"{name}: no MasterTarget {spec['masterTargetRef']['name']}"
        assert master["spec"]["osType"] == spec["osType"], (
            f"{name}: OS differs from its MT (R-PRE-10)"
        )
        assert spec["azure"]["vmId"].endswith(f"/virtualMachines/{name}")

    groups: dict[str, set[str]] = {}
    for vm in vms.values():
        if "replicationGroup" in vm["spec"]:
            groups.setdefault(vm["spec"]["replicationGroup"], set()).add(
                vm["spec"]["masterTargetRef"]["name"]
            )
    assert all(len(mts) == 1 for mts in groups.values()), (
        f"a replication group spans master targets (R-GRP-1): {groups}"
    )

    uuids = [u["spec"]["vm"]["instanceUUID"] for u in masters.values()] + [
        vm["spec"]["onPrem"]["originalVM"]["instanceUUID"]
        for vm in vms.values()
        if "originalVM" in vm["spec"]["onPrem"]
    ]
    assert len(uuids) == len(set(uuids)), "instance UUIDs must be unique"

    (plan,) = by_kind("FailbackPlan").values()
    members = [m for group in plan["spec"]["groups"] for m in group["members"]]
    assert sorted(members) == sorted(vms), "the plan should hold every sample ProtectedVM once"
    assert plan["spec"]["activeSite"] == "Azure", "applying the samples must not start a failback"


def test_placeholders_are_obviously_fake() -> None:
    for name, secret in by_kind("Secret").items():
        # Readable placeholders a user edits in place, not base64.
        assert "data" not in secret, f"Secret {name}: use stringData"
        for key in ("password", "clientSecret", "tls.key"):
            value = secret["stringData"].get(key)
            assert value is None or "REPLACE-ME" in value, f"Secret {name}: {key}"


# --- on the test bed --------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples_namespace(kubectl: Tool, crds_installed: list[str]) -> str:
    kubectl.run("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    return NAMESPACE


def test_server_side_dry_run_accepts_every_sample(kubectl: Tool, samples_namespace: str) -> None:
    out = kubectl.run("apply", "--dry-run=server", "-f", str(SAMPLES)).stdout
    for entry in SAMPLE_OBJECTS:
        _, obj = entry
        assert f"/{obj['metadata']['name']} " in out, f"{ident(entry)} not in:\n{out}"


def test_apply_samples_and_get_failback(kubectl: Tool, samples_namespace: str) -> None:
    kubectl.run("apply", "-f", str(SAMPLES))

    table = kubectl.run("get", "failback", "-n", samples_namespace).stdout
    for header in ("NAME", "PHASE", "READY", "ACTIVE SITE", "RPO", "AGE"):
        assert re.search(rf"(^|\s){header}(\s|$)", table, re.MULTILINE), f"{header!r}:\n{table}"
    # The category lists all four kinds, each as its own table.
    for kind, plural in (
        ("ProtectedVM", "protectedvm"),
        ("FailbackPlan", "failbackplan"),
        ("MasterTarget", "mastertarget"),
        ("ProcessServer", "processserver"),
    ):
        for name in by_kind(kind):
            assert f"{plural}.{GROUP}/{name}" in table, f"{kind} {name} missing:\n{table}"
    # Each kind's own columns.
    for header in ("OS", "DISKS", "LOCATION", "HEALTHY", "HEARTBEAT"):
        assert header in table, f"{header!r}:\n{table}"


def test_wide_output_shows_the_detail_columns(kubectl: Tool, samples_namespace: str) -> None:
    kubectl.run("apply", "-f", str(SAMPLES))
    pvms = kubectl.run("get", "pvm", "-n", samples_namespace, "-o", "wide").stdout
    for header in ("DIRECTION", "PROGRESS", "LOCATION", "PLAN", "REASON"):
        assert header in pvms, f"{header!r}:\n{pvms}"
    plans = kubectl.run("get", "fbp", "-n", samples_namespace, "-o", "wide").stdout
    for header in ("DESIRED SITE", "VMS", "RUN", "STEP"):
        assert header in plans, f"{header!r}:\n{plans}"
    assert re.search(r"^return-to-amsterdam\s.*\bAzure\b", plans, re.MULTILINE), plans


def test_short_names_work(kubectl: Tool, samples_namespace: str) -> None:
    kubectl.run("apply", "-f", str(SAMPLES))
    out = kubectl.run("get", "pvm,fbp,mt,ps", "-n", samples_namespace, "-o", "name").stdout
    expected = {
        f"{kind.lower()}.{GROUP}/{name}"
        for kind in ("ProtectedVM", "FailbackPlan", "MasterTarget", "ProcessServer")
        for name in by_kind(kind)
    }
    assert expected <= set(out.split()), out


def test_the_api_server_applied_the_defaults(kubectl: Tool, samples_namespace: str) -> None:
    kubectl.run("apply", "-f", str(SAMPLES))
    web = yaml.safe_load(
        kubectl.run("get", "pvm", "web-01", "-n", samples_namespace, "-o", "yaml").stdout
    )
    assert web["spec"]["policy"] == {
        "rpoThreshold": "15m",
        "recoveryPointRetention": "24h",
        "appConsistentFrequency": "60m",
    }
    assert web["spec"]["sourceType"] == "VMware"
    erp = yaml.safe_load(
        kubectl.run("get", "pvm", "erp-db-01", "-n", samples_namespace, "-o", "yaml").stdout
    )
    assert erp["spec"]["onPrem"]["failbackLocation"] == "Auto"
    plan = yaml.safe_load(
        kubectl.run(
            "get", "fbp", "return-to-amsterdam", "-n", samples_namespace, "-o", "yaml"
        ).stdout
    )
    assert plan["spec"]["failover"]["force"] is False
    assert plan["spec"]["dryRun"] is False
