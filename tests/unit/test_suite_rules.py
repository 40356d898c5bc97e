"""The test tree's own rules, read from the source with ``ast`` so they cannot regress:
shared helpers live in tests/support, no module imports a test module or a conftest, a
conftest holds fixtures and hooks only, and every integration test lives in one of the areas
below (as Warehouse groups its functional tests)."""

from __future__ import annotations

import ast

from tests.support.repo import ROOT

TESTS = ROOT / "tests"
MODULES = sorted(p for p in TESTS.rglob("*.py") if "data" not in p.relative_to(TESTS).parts)

# tests/integration/<area>/: what each area proves on real parts.
AREAS = {
    "vault": "the Vault client, Transit, bootstrap, policies, the audit device",
    "store": "the account store on both engines, PostgreSQL, persistence, backups",
    "calls": "whole calls through the webhook and the backend, hostile input, logs",
    "keys": "key rotation, rewrap, retirement, the tutorial key import",
    "deploy": "make run, the CLI an operator meets, compose, the image, the proxy, monitoring",
    "ha": "replicas, outages and the failure drills past one machine",
}


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of every import; a relative import keeps its leading dots."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [
                (node.lineno, base + alias.name if node.module is None else base)
                for alias in node.names
            ]
    return names


def forbidden(name: str) -> bool:
    if name.startswith("."):
        return True  # relative: always a sibling test module or conftest
    parts = name.split(".")
    if "conftest" in parts:
        return True
    return parts[0] == "tests" and len(parts) > 1 and parts[1] != "support"


def test_the_rule_itself() -> None:
    for bad in (
        "tests.conftest",
        "conftest",
        "tests.unit.logs.test_scrubbing",
        "tests.integration.test_dockerfile",
        "tests.integration",
        ".test_scrubbing",
        "..conftest",
    ):
        assert forbidden(bad), bad
    for good in (
        "tests.support.stack",
        "tests.support",
        "tests",
        "service.logs.scrubbing",
        "pytest",
        "contest",
    ):
        assert not forbidden(good), good
    tree = ast.parse(
        "from tests.unit.logs.test_scrubbing import GOOD_SID\n"
        "from . import conftest\nimport tests.support.digits\n"
    )
    assert [name for _, name in imported(tree) if forbidden(name)] == [
        "tests.unit.logs.test_scrubbing",
        ".conftest",
    ]


def test_the_tree_is_scanned() -> None:
    names = {p.relative_to(TESTS).as_posix() for p in MODULES}
    assert {
        "conftest.py",
        "integration/conftest.py",
        "support/stack.py",
        "unit/test_suite_rules.py",
    } <= names
    assert any(n.startswith("integration/vault/test_") for n in names)


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    bad = {}
    for path in MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = [f"line {line}: {name}" for line, name in imported(tree) if forbidden(name)]
        if found:
            bad[path.relative_to(TESTS).as_posix()] = found
    assert bad == {}, "shared helpers belong in tests/support/"


def test_a_conftest_holds_only_fixtures_and_hooks() -> None:
    helpers = []
    for path in (p for p in MODULES if p.name == "conftest.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                helpers.append(f"{path.relative_to(TESTS)}: class {node.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                fixture = any(
                    ast.unparse(d).startswith("pytest.fixture") for d in node.decorator_list
                )
                if not (fixture or node.name.startswith("pytest_")):
                    helpers.append(f"{path.relative_to(TESTS)}: def {node.name}")
    assert helpers == [], "helpers belong in tests/support/"


def test_every_integration_test_is_in_an_area() -> None:
    integration = TESTS / "integration"
    outside = [
        p.relative_to(TESTS).as_posix()
        for p in integration.rglob("test_*.py")
        if p.parent.parent != integration or p.parent.name not in AREAS
    ]
    assert outside == [], f"move each into one of tests/integration/{{{','.join(AREAS)}}}/"
    assert {p.name for p in integration.iterdir() if p.is_dir() and p.name in AREAS} == set(AREAS)
