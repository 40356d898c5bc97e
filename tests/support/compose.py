"""docker-compose.yml (and overrides) loaded as compose loads them: YAML, the files merged
in order, then variable interpolation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import yaml

from tests.support.repo import ROOT

Compose = dict[str, Any]

# The Compose Specification's JSON schema, vendored with its licence and upstream commit.
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"

DEV = ("docker-compose.yml",)
PROD = ("docker-compose.yml", "docker-compose.prod.yml")
HA = ("docker-compose.yml", "docker-compose.ha.yml")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?message}`` and ``$$`` for a literal ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        if op == ":-" and not value:
            return arg
        if op == "-" and value is None:
            return arg
        if op in (":?", "?") and not value:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}", substitute, value)


def _target(volume: str) -> str:
    return volume.split(":")[1] if ":" in volume else volume


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Compose's merge rules, for what these files use: mappings merge key by key (an
    override's ``environment`` value replaces the base's); ``command``, ``entrypoint``
    and ``healthcheck.test`` are replaced whole; a service's ``volumes`` merge by mount
    target (the override's mount wins); other sequences append what is new; scalars are
    replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, (*path, key)) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if path[-1:] in (("command",), ("entrypoint",)) or path[-2:] == ("healthcheck", "test"):
            return override
        if len(path) == 3 and path[0] == "services" and path[2] == "volumes":
            replaced = {_target(v) for v in override}
            return [v for v in base if _target(v) not in replaced] + override
        return base + [item for item in override if item not in base]
    return override


def raw(files: Sequence[str] = DEV) -> Compose:
    """The files merged, before interpolation."""
    merged: Compose = {}
    for name in files:
        merged = merge(merged, yaml.safe_load((ROOT / name).read_text(encoding="utf-8")))
    return merged


def load(env: Mapping[str, str], files: Sequence[str] = DEV) -> Compose:
    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, env)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    return walk(raw(files))  # type: ignore[no-any-return]


def schema_errors(document: object) -> list[str]:
    """Where ``document`` breaks the Compose Specification's schema (none: valid)."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]
