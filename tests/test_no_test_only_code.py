"""Every public function, class and method in shared/ is used by something other than tests.

A name counts as used when it appears as a Python name (not in a string or comment) in
production code — shared/, function_app.py — or in the sandbox and benchmarks, outside its own
definition. Code the Functions runtime or the Azure SDK calls by convention is listed below.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
USERS = [
    *sorted(SHARED.rglob("*.py")),
    ROOT / "function_app.py",
    *sorted((ROOT / "sandbox").rglob("*.py")),
    *sorted((ROOT / "benchmarks").rglob("*.py")),
]

# Methods the libraries call by convention, never our code: azure-core's pipeline policy hooks
# and RetryPolicy overrides, azure-core's TokenCredential protocol, and requests' HTTPAdapter
# and Session overrides.
CALLED_BY_THE_SDK = {
    "send",
    "is_retry",
    "increment",
    "on_request",
    "on_response",
    "on_exception",
    "get_token",
    "build_connection_pool_key_attributes",
    "cert_verify",
    "prepare_request",
    "merge_environment_settings",
}


@dataclass(frozen=True)
class Definition:
    path: Path
    qualified: str
    name: str
    first_line: int
    last_line: int


def _names(path: Path, skip: tuple[int, int] | None = None) -> Counter[str]:
    """How often each name is used in `path` (f-strings included), outside the `skip` lines."""
    counts: Counter[str] = Counter()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name):
            used = [node.id]
        elif isinstance(node, ast.Attribute):
            used = [node.attr]
        elif isinstance(node, ast.alias):
            used = [*node.name.split("."), *([node.asname] if node.asname else [])]
        else:
            continue
        line = getattr(node, "lineno", None)
        if skip and line is not None and skip[0] <= line <= skip[1]:
            continue
        counts.update(used)
    return counts


def _is_entry_point(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    # A function a Blueprint decorator registers is called by the Functions runtime.
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) for d in node.decorator_list
    )


def _public_definitions() -> list[Definition]:
    found: list[Definition] = []
    for path in sorted(SHARED.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("_"):
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_entry_point(node):
                continue
            found.append(
                Definition(path, node.name, node.name, node.lineno, node.end_lineno or node.lineno)
            )
            if not isinstance(node, ast.ClassDef):
                continue
            for member in node.body:
                if not isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if member.name.startswith("_") or member.name in CALLED_BY_THE_SDK:
                    continue
                found.append(
                    Definition(
                        path,
                        f"{node.name}.{member.name}",
                        member.name,
                        member.lineno,
                        member.end_lineno or member.lineno,
                    )
                )
    return found


def test_no_public_function_class_or_method_in_shared_is_used_only_by_tests() -> None:
    everywhere: dict[Path, Counter[str]] = {path: _names(path) for path in USERS}
    unused: list[str] = []
    definitions = _public_definitions()
    assert len(definitions) > 100  # the walk found the package
    for definition in definitions:
        own_file = _names(definition.path, skip=(definition.first_line, definition.last_line))
        uses = own_file[definition.name] + sum(
            counts[definition.name]
            for path, counts in everywhere.items()
            if path != definition.path
        )
        if uses == 0:
            unused.append(f"{definition.path.relative_to(ROOT)}: {definition.qualified}")
    assert unused == [], "used only by tests (or by nothing): delete them\n" + "\n".join(unused)


def test_the_check_finds_a_name_only_its_definition_mentions(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "def lonely() -> int:\n    return lonely_helper()\n\n\ndef used() -> int:\n"
        "    return 1\n\n\nVALUE = used()\n"
    )
    definitions = {"lonely": (1, 2), "used": (5, 6)}
    mentions = {name: _names(module, skip=lines)[name] for name, lines in definitions.items()}
    assert mentions == {"lonely": 0, "used": 1}
