"""``docs/api.md`` documents the API that exists, all of it.

Every reason it names is in the catalog of ``failback.api.conditions`` and every reason and
condition type of the catalog is in it; every spec and status field of the CRDs is
listed; every CRD validation message is quoted word for word; every cross-object rule is
listed with its condition, reason and exact message.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from failback.api import ConditionType, Reason, constants, crossobject

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"

Row = dict[str, str]


@cache
def text() -> str:
    return DOC.read_text()


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace(r"\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


@cache
def tables() -> list[list[Row]]:
    """Every Markdown table of the page, as rows keyed by the header's cells."""
    found: list[list[Row]] = []
    lines = text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _cells(lines[i])
            rows: list[Row] = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[i]), strict=True)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def named_in(column: str) -> set[str]:
    return {name for rows in tables() for row in rows for name in ticked(row.get(column, ""))}


def test_every_reason_named_in_the_docs_is_in_the_catalog() -> None:
    named = named_in("Reason")
    assert named, "no Reason column found"
    assert sorted(named - {r.value for r in Reason}) == []


def test_every_reason_of_the_catalog_is_documented() -> None:
    assert sorted({r.value for r in Reason} - named_in("Reason")) == []


def test_every_condition_type_is_documented_and_exists() -> None:
    named = named_in("Condition")
    assert named == {t.value for t in ConditionType}


# ------------------------------------------------------------------ the CRDs


def _crd_schema(plural: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "crds" / f"failback.io_{plural}.yaml").read_text())
    schema: dict[str, Any] = loaded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _paths(node: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        here = f"{path}.{name}"
        out.append(here)
        if "properties" in child:
            out += _paths(child, here)
        elif "properties" in child.get("items", {}):
            out += _paths(child["items"], f"{here}[]")
    return out


def _messages(node: Any) -> list[str]:
    if isinstance(node, list):
        return [m for item in node for m in _messages(item)]
    if not isinstance(node, dict):
        return []
    own = [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return own + [m for value in node.values() for m in _messages(value)]


def test_every_spec_and_status_field_is_documented() -> None:
    missing = [
        path
        for resource in constants.RESOURCES
        for part in ("spec", "status")
        for path in _paths(_crd_schema(resource.plural)["properties"][part], part)
        if f"`{path}`" not in text()
    ]
    assert missing == []


def test_every_crd_validation_message_is_quoted() -> None:
    missing = [
        message
        for resource in constants.RESOURCES
        for message in _messages(_crd_schema(resource.plural))
        if message not in text()
    ]
    assert missing == []


# ------------------------------------------------------------------ cross-object rules


def test_every_cross_object_rule_is_listed_with_its_exact_message() -> None:
    (rows,) = [rows for rows in tables() if rows and "Rule" in rows[0]]
    assert len(rows) == len(crossobject.RULES)
    for rule, row in zip(crossobject.RULES, rows, strict=True):
        message = rule.message(**{name: f"<{name}>" for name in rule.fields})
        assert row["Rule"] == rule.title
        assert ticked(row["Condition"]) == [rule.condition_type.value]
        assert ticked(row["Reason"]) == [rule.reason.value]
        assert f"`{message}`" in row["Message"], rule.title
