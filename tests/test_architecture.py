"""The rooms stay separate: walk every module's imports and check who may import what."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes under `if TYPE_CHECKING:` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def imports_of(path: Path, *, runtime_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree) if runtime_only else set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((SHARED / package).rglob("*.py")) if package else sorted(SHARED.glob("*.py"))


def test_only_entrypoints_import_azure_functions() -> None:
    for path in SHARED.rglob("*.py"):
        if "entrypoints" in path.parts:
            continue
        assert not any(n.startswith("azure.functions") for n in imports_of(path)), path


def test_only_adapters_import_azure_sdks() -> None:
    for path in SHARED.rglob("*.py"):
        if "adapters" in path.parts or "entrypoints" in path.parts:
            continue
        # The composition root may name adapter types for the type checker only.
        runtime_only = path.name == "bootstrap.py"
        sdk = [
            n
            for n in imports_of(path, runtime_only=runtime_only)
            if n.startswith(("azure.", "msal", "requests"))
        ]
        assert sdk == [], path
    for path in modules("entrypoints"):
        sdk = [
            n
            for n in imports_of(path)
            if n.startswith("azure.") and not n.startswith("azure.functions")
        ]
        assert sdk == [], path


def test_domain_imports_only_the_standard_library_and_itself() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in modules("domain"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in stdlib or name.startswith("shared.domain"), (path, name)


def test_no_grab_bag_module_names() -> None:
    banned = {"utils.py", "helpers.py", "common.py", "manager.py"}
    assert [p for p in SHARED.rglob("*.py") if p.name in banned] == []
