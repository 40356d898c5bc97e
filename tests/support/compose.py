"""docker-compose.yml loaded as compose loads it: YAML, then variable interpolation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from tests.support.repo import ROOT

Compose = dict[str, Any]

# The Compose Specification's JSON schema, vendored with its licence and upstream commit.
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"


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

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}", substitute,
                  value)


def load(env: Mapping[str, str]) -> Compose:
    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return interpolate(node, env)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        return node

    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return walk(raw)  # type: ignore[no-any-return]
