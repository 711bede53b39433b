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


def shared_modules_imported_by(path: Path) -> set[str]:
    """The shared.* modules `path` imports (see shared_imports)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return shared_imports(path.read_text(), package)


def shared_imports(source: str, package: str) -> set[str]:
    """The shared.* modules a module of `package` imports, anywhere in it (in functions and under
    TYPE_CHECKING too); for `from shared.x import y` both `shared.x` and, when y is a module,
    `shared.x.y`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "shared")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] != "shared":
                continue
            found.add(module)
            for alias in node.names:
                candidate = ROOT.joinpath(*module.split("."), alias.name)
                if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
                    found.add(f"{module}.{alias.name}")
    return found


def _room(module: str) -> str:
    """The layer a shared.* module belongs to: domain, services, adapters, entrypoints, or the
    top-level module itself (shared.config, shared.bootstrap)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shared"


ALLOWED_ROOMS = {
    # The pure core: nothing but itself (and the standard library, checked above).
    "domain": {"domain"},
    # Use cases: the domain and each other, through their ports; never an adapter, an entry
    # point, the settings or the composition root.
    "services": {"domain", "services"},
    # Azure at the edge: the domain's types and the settings they are built from.
    "adapters": {"domain", "adapters", "config"},
    # Triggers: use cases and the domain; adapters only ever through the composition root.
    "entrypoints": {"domain", "services", "entrypoints", "config", "bootstrap", "shared"},
    # The settings: the domain's types, and the catalogue of every setting (which imports
    # nothing of the app).
    "config": {"domain", "settings_catalogue"},
    "settings_catalogue": set(),
    "bootstrap": {"domain", "services", "adapters", "config"},
}


def test_each_room_imports_only_the_rooms_inside_it() -> None:
    wrong: list[str] = []
    for path in sorted(SHARED.rglob("*.py")):
        relative = path.relative_to(SHARED).parts
        room = relative[0] if len(relative) > 1 else path.stem
        if room == "__init__":
            continue
        for module in shared_modules_imported_by(path):
            if module == "shared" or _room(module) in ALLOWED_ROOMS[room]:
                continue
            wrong.append(f"{path.relative_to(ROOT)} ({room}) imports {module}")
    assert wrong == []


def test_services_and_domain_never_import_azure_even_for_type_checking() -> None:
    for package in ("domain", "services"):
        for path in modules(package):
            azure = [n for n in imports_of(path) if n.split(".")[0] in ("azure", "msal")]
            assert azure == [], path


def test_function_app_registers_entry_points_only() -> None:
    imported = shared_modules_imported_by(ROOT / "function_app.py")
    assert imported and all(m.startswith("shared.entrypoints") for m in imported), imported


def test_the_import_walk_sees_a_forbidden_import_wherever_it_hides() -> None:
    # The rule above is only as good as the walk: a service importing an adapter is seen, under
    # TYPE_CHECKING, inside a function, and written relative.
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from shared.adapters import table_ledger\n"
        "def later() -> None:\n"
        "    from shared import bootstrap\n"
        "    from ..entrypoints import events\n"
    )
    seen = shared_imports(source, "shared.services")
    assert {
        "shared.adapters.table_ledger",
        "shared.bootstrap",
        "shared.entrypoints.events",
    } <= seen
    assert {_room(m) for m in seen} - ALLOWED_ROOMS["services"] == {
        "adapters",
        "bootstrap",
        "entrypoints",
        "shared",
    }


def test_no_grab_bag_module_names() -> None:
    banned = {"utils.py", "helpers.py", "common.py", "manager.py"}
    assert [p for p in SHARED.rglob("*.py") if p.name in banned] == []
