"""Read infra/ Bicep with pycep: parsed files, resources by type, and expressions as text.

pycep turns a Bicep file into nested dicts; `render` turns an expression back into compact Bicep
text ("appIdentity.properties.clientId", "guid(storage.id, appPrincipalId, role)") so that a
test can assert what a value refers to without walking pycep's tree by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

Node = Any  # pycep's JSON: dict | list | str | int | bool | None


@cache
def parse(relative: str) -> dict[str, Any]:
    """The parsed Bicep file at infra/<relative> (parsed once per test session)."""
    return cast(dict[str, Any], BicepParser().parse(file_path=INFRA / relative))


def bicep_files() -> list[str]:
    """Every .bicep file under infra/, relative to infra/."""
    return sorted(str(path.relative_to(INFRA)) for path in INFRA.rglob("*.bicep"))


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, unwrapping a `[for ...]` loop or an `if (...)`."""
    config: dict[str, Any] = entry["config"]
    if "loop_type" in config or set(config) == {"condition", "config"}:  # [for ...] or if (...)
        inner: dict[str, Any] = config["config"]
        return inner
    return config


def loop_source(entry: dict[str, Any]) -> str | None:
    """What a `[for x in SOURCE: ...]` resource or module loops over, or None."""
    config = entry["config"]
    if "loop_type" not in config:
        return None
    detail = config["loop_type"]["detail"]
    return render(detail.get("array_name", detail.get("object_name")))


def loop_item(entry: dict[str, Any]) -> str:
    """The item variable of a looped resource or module."""
    item: str = entry["config"]["loop_type"]["detail"]["item_name"]
    return item


def resources(relative: str, type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type (e.g. 'Microsoft.Web/sites') in a file, by symbolic name."""
    found = parse(relative).get("resources", {})
    return {name: r for name, r in found.items() if r["type"] == type_}


def resource(relative: str, name: str) -> dict[str, Any]:
    """One resource by symbolic name."""
    found: dict[str, Any] = parse(relative)["resources"][name]
    return found


def module(relative: str, name: str) -> dict[str, Any]:
    """One module by symbolic name."""
    found: dict[str, Any] = parse(relative)["modules"][name]
    return found


def variable(relative: str, name: str) -> Node:
    """The value of a `var`."""
    return parse(relative)["variables"][name]["value"]


def param(relative: str, name: str) -> dict[str, Any]:
    """A `param`: its type, default and decorators."""
    found: dict[str, Any] = parse(relative)["parameters"][name]
    return found


def decorator(relative: str, param_name: str, kind: str) -> Node:
    """The argument of a parameter's decorator (kind: 'min_value', 'max_value', ...), or None."""
    for deco in param(relative, param_name)["decorators"]:
        if deco["type"] == kind:
            return deco["argument"]
    return None


def strings(node: Node) -> Iterator[str]:
    """Every string in a parsed value, dict keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def render(node: Node) -> str:
    """A parsed expression as compact Bicep-like text (pycep's function names)."""
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return "null"
    if node == "":
        return "''"
    if isinstance(node, int | str):
        return str(node)
    if isinstance(node, list):
        return "[" + ", ".join(render(item) for item in node) + "]"
    if isinstance(node, dict) and "function" in node:
        function = node["function"]
        parameters = dict(function.get("parameters", {}))
        if function["type"] == "resource_group":  # pycep stores the arguments reversed
            parameters = dict(reversed(parameters.items()))
        values = list(parameters.values())
        while values and values[-1] is None:  # optional arguments left out
            values.pop()
        args = ", ".join(render(value) for value in values)
        text = f"{function['type']}({args})"
        if "property_name" in function:  # pycep 0.5: environment().x
            text += "." + function["property_name"]
        return f"{text}[{function['index']}]" if "index" in function else text
    if isinstance(node, dict) and "operator" in node:
        return _render_operator(node["operator"])
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k}: {render(v)}" for k, v in node.items()) + "}"
    return json.dumps(node)


def _render_operator(operator: dict[str, Any]) -> str:
    kind = operator["type"]
    ops = operator["operands"]
    if kind == "property_accessor":
        return f"{render(ops['operand_1'])}.{render(ops['operand_2'])}"
    if kind == "index_accessor":
        return f"{render(ops['operand_1'])}[{render(ops['operand_2'])}]"
    if kind == "conditional":
        cond, yes, no = (render(ops[k]) for k in ("condition", "true_value", "false_value"))
        return f"{cond} ? {yes} : {no}"
    if kind == "not":
        return "!" + render(ops["bool_value"])
    return f"{kind}(" + ", ".join(render(v) for v in ops.values()) + ")"
