"""Imports point one way, down the house: the rule written once, as data, and checked over
every real import in service/ (read with ``ast``, so a function-level import or one under
``TYPE_CHECKING`` counts too).

A subpackage may import the subpackages of the floors below its own, never a sibling on
its floor or anything above. The ground floor is every single module directly in
service/ (``settings``, ``errors``, ``formats``, and any small shared helper added beside
them): they import only each other, never a subpackage, so anything may use them.

Development tooling (service/devtools/) ships in the image but is imported only by the
commands that start it: ``ivr-vault dev``, ``call`` and ``backup``/``restore --dev``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.repo import ROOT

SERVICE = ROOT / "service"

# Top floor first. The ground floor (service/*.py) is below the last.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"cli"}),
    frozenset({"doctor", "devtools"}),
    frozenset({"backend", "webhook", "keys", "backup"}),
    frozenset({"vault", "store"}),
    frozenset({"web", "logs"}),
)
DEVTOOLS_USERS = frozenset({"service.cli.dev", "service.cli.call", "service.cli.backup"})


def floor_of(unit: str) -> int:
    """0 is the top; the ground floor (a single module in service/) is below every floor."""
    for i, units in enumerate(FLOORS):
        if unit in units:
            return i
    if (SERVICE / f"{unit}.py").is_file():
        return len(FLOORS)
    raise AssertionError(f"service/{unit} is on no floor: add it to FLOORS")


def may_import(importer: str, imported: str) -> bool:
    if importer == imported:
        return True
    ground = len(FLOORS)
    below = floor_of(imported) > floor_of(importer)
    return below or floor_of(importer) == floor_of(imported) == ground


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def service_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import of a service module, ``from service import x``
    read as ``service.x``; relative imports resolved against the importing package."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            if module == "service":
                found += [(node.lineno, f"service.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, name) for line, name in found if name.split(".")[0] == "service"]


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations() -> list[str]:
    bad = []
    for path in sorted(SERVICE.rglob("*.py")):
        importer = module_name(path)
        source = unit_of(importer)
        if source is None:  # service/__init__.py
            assert service_imports(path) == [], "service/__init__.py imports nothing of its own"
            continue
        for line, imported in service_imports(path):
            target = unit_of(imported)
            if target is not None and not may_import(source, target):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {source} -> {target}")
    return bad


def test_every_subpackage_and_module_is_on_a_floor() -> None:
    units = {
        p.stem if p.is_file() else p.name
        for p in SERVICE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"
    }
    units -= {"__init__"}
    on_floors = set().union(*FLOORS)
    assert {u for u in units if not (SERVICE / f"{u}.py").is_file()} <= on_floors
    assert on_floors - {"__main__"} <= units, "FLOORS names a subpackage that is gone"
    for unit in units:
        floor_of(unit)


def test_the_rule_itself() -> None:
    assert may_import("cli", "devtools") and may_import("backend", "store")
    assert may_import("backup", "vault") and may_import("backup", "store")
    assert may_import("store", "formats") and may_import("settings", "errors")
    assert may_import("vault", "web")
    assert not may_import("store", "backup"), "backup is above the store"
    assert not may_import("vault", "backup"), "and above Vault"
    assert not may_import("store", "vault"), "siblings on a floor"
    assert not may_import("errors", "logs"), "the ground floor imports no subpackage"
    assert not may_import("webhook", "backend")


def test_the_scan_reads_real_imports() -> None:
    archive = {name for _, name in service_imports(SERVICE / "backup" / "archive.py")}
    assert {"service.backup.transfer", "service.vault.client"} <= archive
    assert {name for _, name in service_imports(SERVICE / "cli" / "dev.py")} >= {
        "service.devtools.ha",
        "service.devtools.launcher",
    }


def test_imports_point_down_the_house() -> None:
    assert violations() == []


def test_only_the_dev_commands_import_devtools() -> None:
    users = set()
    for path in sorted(SERVICE.rglob("*.py")):
        importer = module_name(path)
        if unit_of(importer) == "devtools":
            continue
        if any(unit_of(name) == "devtools" for _, name in service_imports(path)):
            users.add(importer)
    assert users == DEVTOOLS_USERS
