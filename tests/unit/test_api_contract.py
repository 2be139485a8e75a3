"""The models in ``failback.api`` and the CRD YAML in ``crds/`` describe the same API.

The CRDs are the source of truth. For each kind: every spec and status property maps to
a model field and back (camelCase ↔ snake_case), types, enums, defaults and required
fields agree, a fully populated status validates against the CRD's status schema, and
every condition type and reason is one the API server accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from failback.api import (
    conditions,
    constants,
    failbackplan,
    mastertarget,
    processserver,
    protectedvm,
)
from failback.api._codec import decode
from failback.errors import SpecInvalid

CRDS = Path(__file__).resolve().parents[2] / "crds"

KINDS: dict[str, tuple[Any, type, type]] = {
    "ProtectedVM": (protectedvm, protectedvm.ProtectedVMSpec, protectedvm.ProtectedVMStatus),
    "FailbackPlan": (failbackplan, failbackplan.FailbackPlanSpec, failbackplan.FailbackPlanStatus),
    "MasterTarget": (mastertarget, mastertarget.MasterTargetSpec, mastertarget.MasterTargetStatus),
    "ProcessServer": (
        processserver,
        processserver.ProcessServerSpec,
        processserver.ProcessServerStatus,
    ),
}
RESOURCES = {r.kind: r for r in constants.RESOURCES}
NOW = dt.datetime(2026, 11, 21, 3, 0, 0, tzinfo=dt.UTC)


@cache
def crd(kind: str) -> dict[str, Any]:
    path = CRDS / f"failback.io_{RESOURCES[kind].plural}.yaml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def root_schema(kind: str) -> dict[str, Any]:
    (version,) = crd(kind)["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def snake(camel: str) -> str:
    """``instanceUUID`` → ``instance_uuid``; ``vcenterSecretRef`` → ``vcenter_secret_ref``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).lower()


# ------------------------------------------------------------------ the two walkers


@dataclasses.dataclass
class SchemaProp:
    node: dict[str, Any]
    required: bool


@dataclasses.dataclass
class ModelField:
    hint: Any
    """The field's type with ``| None`` removed."""
    optional: bool
    field: dataclasses.Field[Any]


def schema_props(node: dict[str, Any], path: str = "") -> dict[str, SchemaProp]:
    """Every property below ``node`` by snake_case path; items of object arrays add ``[]``."""
    out: dict[str, SchemaProp] = {}
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        here = f"{path}.{snake(name)}" if path else snake(name)
        out[here] = SchemaProp(child, name in required)
        items = child.get("items", {})
        if "properties" in child:
            out.update(schema_props(child, here))
        elif "properties" in items:
            out.update(schema_props(items, f"{here}[]"))
    return out


def unwrap(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner, True
    return hint, False


def element(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint


def model_fields(cls: type, path: str = "") -> dict[str, ModelField]:
    """Every field below the model ``cls``, by the same paths as :func:`schema_props`."""
    out: dict[str, ModelField] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, optional = unwrap(hints[f.name])
        here = f"{path}.{f.name}" if path else f.name
        out[here] = ModelField(hint, optional, f)
        if dataclasses.is_dataclass(hint):
            out.update(model_fields(typing.cast(type, hint), here))
        elif dataclasses.is_dataclass(element(hint)) and element(hint) is not hint:
            out.update(model_fields(element(hint), f"{here}[]"))
    return out


def pairs(kind: str, part: str) -> list[tuple[str, SchemaProp, ModelField]]:
    _, spec_cls, status_cls = KINDS[kind]
    props = schema_props(root_schema(kind)["properties"][part])
    fields = model_fields(spec_cls if part == "spec" else status_cls)
    return [(path, props[path], fields[path]) for path in sorted(props) if path in fields]


CASES = [(kind, part) for kind in KINDS for part in ("spec", "status")]


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("kind", KINDS)
def test_names_match_the_crd(kind: str) -> None:
    resource = RESOURCES[kind]
    definition = crd(kind)
    names = definition["spec"]["names"]
    assert definition["metadata"]["name"] == resource.crd_name
    assert definition["spec"]["group"] == constants.GROUP
    assert [v["name"] for v in definition["spec"]["versions"]] == [constants.VERSION]
    assert (names["kind"], names["plural"], names["singular"]) == (
        resource.kind,
        resource.plural,
        resource.singular,
    )
    assert names["shortNames"] == [resource.short_name]
    assert names["categories"] == [constants.CATEGORY]
    module = KINDS[kind][0]
    assert resource.kind == module.KIND
    assert resource.plural == module.PLURAL
    assert resource.short_name == module.SHORT_NAME


def test_every_crd_file_is_a_known_kind() -> None:
    files = {p.name for p in CRDS.glob("failback.io_*.yaml")}
    assert files == {f"failback.io_{r.plural}.yaml" for r in constants.RESOURCES}


# ------------------------------------------------------------------ fields


@pytest.mark.parametrize(("kind", "part"), CASES)
def test_every_property_is_a_field_and_back(kind: str, part: str) -> None:
    _, spec_cls, status_cls = KINDS[kind]
    props = set(schema_props(root_schema(kind)["properties"][part]))
    fields = set(model_fields(spec_cls if part == "spec" else status_cls))
    assert sorted(props - fields) == [], "in the CRD, missing from the model"
    assert sorted(fields - props) == [], "in the model, missing from the CRD"


def expected_types(prop: dict[str, Any]) -> tuple[type, ...]:
    rules = " ".join(r["rule"] for r in prop.get("x-kubernetes-validations", []))
    match prop.get("type"):
        case "string" if prop.get("format") == "date-time":
            return (dt.datetime,)
        case "string" if "duration(self)" in rules:
            return (dt.timedelta,)
        case "string" if "enum" in prop:
            return (enum.StrEnum,)
        case "string":
            return (str,)
        case "integer":
            return (int,)
        case "boolean":
            return (bool,)
        case "array":
            return (tuple,)
        case "object":
            return (object,)
    raise AssertionError(f"unexpected schema type {prop.get('type')}")


@pytest.mark.parametrize(("kind", "part"), CASES)
def test_field_types_match(kind: str, part: str) -> None:
    for path, prop, field in pairs(kind, part):
        hint = field.hint
        if prop.node["type"] == "array":
            assert typing.get_origin(hint) is tuple, path
            item_types = expected_types(prop.node["items"])
            hint = element(hint)
            if prop.node["items"]["type"] == "object":
                assert dataclasses.is_dataclass(hint), path
                continue
            assert issubclass(hint, item_types), path
        elif prop.node["type"] == "object":
            assert dataclasses.is_dataclass(hint), path
        else:
            assert isinstance(hint, type), path
            assert issubclass(hint, expected_types(prop.node)), path
            if hint is str:
                assert not issubclass(hint, enum.Enum), path


@pytest.mark.parametrize(("kind", "part"), CASES)
def test_enums_match(kind: str, part: str) -> None:
    for path, prop, field in pairs(kind, part):
        values = prop.node.get("enum") or prop.node.get("items", {}).get("enum")
        hint = element(field.hint)
        is_enum = isinstance(hint, type) and issubclass(hint, enum.StrEnum)
        assert is_enum == (values is not None), path
        if values is not None:
            assert [m.value for m in hint] == values, path


@pytest.mark.parametrize(("kind", "part"), CASES)
def test_required_and_defaults_match(kind: str, part: str) -> None:
    for path, prop, field in pairs(kind, part):
        f = field.field
        has_default = f.default is not dataclasses.MISSING or (
            f.default_factory is not dataclasses.MISSING
        )
        assert prop.required == (not has_default and not field.optional), path
        if not has_default:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if "default" in prop.node:
            assert default == decode(field.hint, prop.node["default"], path), path
        else:
            assert default in (None, ()), path


def test_policy_bounds_say_what_the_crd_says() -> None:
    policy = root_schema("ProtectedVM")["properties"]["spec"]["properties"]["policy"]
    messages = {
        name: prop["x-kubernetes-validations"][0]["message"]
        for name, prop in policy["properties"].items()
    }
    messages["appConsistentFrequency>retention"] = policy["x-kubernetes-validations"][0]["message"]
    cases = {
        "rpoThreshold": {"rpoThreshold": "30s"},
        "recoveryPointRetention": {"recoveryPointRetention": "100h"},
        "appConsistentFrequency": {"appConsistentFrequency": "5m"},
        "appConsistentFrequency>retention": {
            "recoveryPointRetention": "2h",
            "appConsistentFrequency": "3h",
        },
    }
    assert set(cases) == set(messages)
    for name, bad in cases.items():
        body = copy.deepcopy(VALID["ProtectedVM"])
        body["spec"]["policy"] = bad
        with pytest.raises(SpecInvalid) as caught:
            protectedvm.parse(body)
        assert str(caught.value).replace(": ", " ", 1) == messages[name]


# ------------------------------------------------------------------ status against the schema


def sample(hint: Any) -> Any:
    """A value of type ``hint`` with every optional part set."""
    hint, _ = unwrap(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(hint)})
    if typing.get_origin(hint) is tuple:
        return (sample(element(hint)),)
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return next(iter(hint))
    scalars: dict[Any, Any] = {
        bool: True,
        int: 1,
        str: "x",
        dt.datetime: NOW,
        dt.timedelta: dt.timedelta(hours=1),
    }
    return scalars[hint]


def structural(node: Any) -> Any:
    """The schema for jsonschema: no ``x-kubernetes-*`` keys, no unknown properties allowed."""
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in out:
        out["additionalProperties"] = False
    return out


def json_paths(value: Any, path: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            here = f"{path}.{snake(key)}" if path else snake(key)
            out.add(here)
            out |= json_paths(child, here)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out |= json_paths(value[0], f"{path}[]")
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_full_status_validates_against_the_crd(kind: str) -> None:
    _, _, status_cls = KINDS[kind]
    status = sample(status_cls)
    written = status.to_dict()
    schema = structural(root_schema(kind)["properties"]["status"])
    jsonschema.Draft202012Validator(schema).validate(written)
    assert json_paths(written) == set(schema_props(root_schema(kind)["properties"]["status"]))
    assert decode(status_cls, written, "status") == status


@pytest.mark.parametrize("kind", KINDS)
def test_valid_objects_parse(kind: str) -> None:
    module = KINDS[kind][0]
    parsed = module.parse(VALID[kind])
    assert parsed.meta.name == VALID[kind]["metadata"]["name"]


# ------------------------------------------------------------------ conditions


@pytest.mark.parametrize("kind", KINDS)
def test_condition_schema_is_the_one_the_catalog_assumes(kind: str) -> None:
    status = root_schema(kind)["properties"]["status"]["properties"]
    item = status["conditions"]["items"]["properties"]
    assert item["type"]["pattern"] == conditions.TYPE_PATTERN.pattern
    assert item["reason"]["pattern"] == conditions.REASON_PATTERN.pattern
    assert item["message"]["maxLength"] == conditions.MESSAGE_MAX
    assert item["status"]["enum"] == [s.value for s in conditions.ConditionStatus]


@pytest.mark.parametrize("kind", KINDS)
def test_condition_types_are_valid_and_catalogued(kind: str) -> None:
    module = KINDS[kind][0]
    item = root_schema(kind)["properties"]["status"]["properties"]["conditions"]
    types_ = module.CONDITION_TYPES
    assert len(set(types_)) == len(types_)
    assert len(types_) <= item["maxItems"]
    assert conditions.ConditionType.READY in types_
    for t in types_:
        assert t in set(conditions.ConditionType)
        assert re.fullmatch(item["items"]["properties"]["type"]["pattern"], t)
        assert len(t) <= item["items"]["properties"]["type"]["maxLength"]


def test_every_condition_type_is_reported_by_some_kind() -> None:
    reported = {t for module, _, _ in KINDS.values() for t in module.CONDITION_TYPES}
    assert reported == set(conditions.ConditionType)


def test_every_reason_is_valid_and_documented() -> None:
    pattern = root_schema("ProtectedVM")["properties"]["status"]["properties"]["conditions"]
    reason = pattern["items"]["properties"]["reason"]
    for r in conditions.Reason:
        assert re.fullmatch(reason["pattern"], r.value), r
        assert reason["minLength"] <= len(r.value) <= reason["maxLength"], r
        assert r.doc.strip(), r
    for t in conditions.ConditionType:
        assert t.doc.strip(), t
    assert not set(conditions.Reason) & set(conditions.ConditionType), "a reason named as a type"


# ------------------------------------------------------------------ valid objects

SUB = "0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c"
UUID = "42154fd2-3c5e-8a1b-6f9d-0e2c4b6a8d10"


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "dr", "uid": "7d1c", "generation": 3}


VALID: dict[str, dict[str, Any]] = {
    "ProtectedVM": {
        "metadata": _meta("web-01"),
        "spec": {
            "azure": {
                "vmId": f"/subscriptions/{SUB}/resourceGroups/dr-rg/providers/"
                "Microsoft.Compute/virtualMachines/web-01",
                "credentialsSecretRef": {"name": "azure-credentials"},
            },
            "onPrem": {
                "vcenterSecretRef": {"name": "vcenter"},
                "originalVM": {"instanceUUID": UUID},
            },
            "osType": "Linux",
            "masterTargetRef": {"name": "mt-linux"},
            "processServerRef": {"name": "ps-azure"},
        },
    },
    "FailbackPlan": {
        "metadata": _meta("home"),
        "spec": {"activeSite": "Azure", "groups": [{"name": "db", "members": ["db-01"]}]},
    },
    "MasterTarget": {
        "metadata": _meta("mt-linux"),
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": UUID},
            "osType": "Linux",
            "endpoint": "https://mt-linux.corp.example:9443",
            "tlsSecretRef": {"name": "mt-linux-tls"},
        },
    },
    "ProcessServer": {
        "metadata": _meta("ps-azure"),
        "spec": {
            "location": "Azure",
            "connectivity": "S2SVPN",
            "endpoint": "https://10.20.0.4:9443",
            "tlsSecretRef": {"name": "ps-tls"},
        },
    },
}
