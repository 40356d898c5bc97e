"""``docs/configuration.md``, generated from the declarations in :mod:`service.settings`,
and the variables only the compose files read (found in those files; their meaning here).

``python -m service.devtools.config_doc`` prints it; ``--write`` (or ``make docs``) writes it.
tests/unit/devtools/test_config_doc.py fails when the file and the declarations disagree, or
when a compose file reads a variable this table does not explain, so a new setting cannot go
undocumented.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from service.settings import RETIRED, Settings, env_name, spec

ROOT = Path(__file__).resolve().parents[2]
PATH = ROOT / "docs" / "configuration.md"
# What the compose files (and the audit rotation script they run) read that the services do
# not: set in the shell that runs ``docker compose``, or in the service's environment there.
COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.prod.yml",
    "docker-compose.ha.yml",
    "vault/audit-rotate.sh",
)
COMPOSE_ONLY = {
    "SITE_ADDRESS": "The name Caddy serves and gets a certificate for.",
    "CADDY_TLS": "Caddy's `tls` directive: `internal` (its own CA), or an e-mail address for "
    "a public certificate (ACME).",
    "HTTPS_PORT": "The host port Caddy's HTTPS is published on.",
    "IVR_INTERNAL_SUBNET": "The internal network of the production compose file; the "
    "services' AppRoles accept logins from it only.",
    "AUDIT_LOG": "The audit log the rotation script watches.",
    "AUDIT_MAX_BYTES": "Size at which the audit log is renamed and reopened.",
    "AUDIT_KEEP": "How many renamed audit logs are kept.",
    "AUDIT_CHECK_SECONDS": "How often the rotation script looks at the audit log's size.",
    "OPENBAO_IMAGE": "The OpenBao image.",
    "CADDY_IMAGE": "The Caddy image.",
    "POSTGRES_IMAGE": "The PostgreSQL image.",
}
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?-([^}]*))?\}")

INTRO = """\
# Configuration

Both services and the `ivr-vault` CLI read their settings from the environment, once, at
start-up. A setting that is missing or invalid stops the program with one line that names
the setting and never echoes its value. Every secret may instead come from `NAME_FILE`: a
path whose content is the value (docker secrets, mounted volumes), which wins over `NAME`.
Nothing secret is ever read from the command line.

<!-- Generated from service/settings.py and the compose files by `make docs`
     (`python -m service.devtools.config_doc --write`). Edit the declarations there, not
     this file. -->
"""


def _row(field: dataclasses.Field[object]) -> str:
    declared = spec(field)
    name = env_name(field)
    setting = f"`{name}`" + (f" or `{name}_FILE`" if declared.secret else "")
    default = (
        "—"
        if declared.default is None
        else "(empty)"
        if declared.default == ""
        else f"`{declared.default}`"
    )
    notes = [declared.meaning]
    if declared.secret:
        notes.append("Secret.")
    if declared.required_by:
        when = ""
        if declared.required_when:
            other, value = declared.required_when
            when = f" when {other.upper()}={value}"
        notes.append(f"Required by: {', '.join(declared.required_by)}{when}.")
    cells = [setting, default, declared.parse.accepts, " ".join(notes)]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_table() -> str:
    lines = ["| setting | default | accepts | meaning |", "|---|---|---|---|"]
    lines += [_row(field) for field in dataclasses.fields(Settings)]
    return "\n".join(lines)


def render_retired() -> str:
    lines = [
        "## Retired settings",
        "",
        "Set in the environment, these do nothing; a service that finds one says so "
        "once at start-up.",
        "",
    ]
    lines += [f"- `{name}`: {why}." for name, why in RETIRED.items()]
    return "\n".join(lines)


def compose_variables(root: Path = ROOT) -> dict[str, tuple[str | None, list[str]]]:
    """Each variable the compose files interpolate (``${NAME:-default}``): its default
    and the files that read it."""
    found: dict[str, tuple[str | None, list[str]]] = {}
    for name in COMPOSE_FILES:
        for match in _INTERPOLATION.finditer((root / name).read_text(encoding="utf-8")):
            default, files = found.get(match[1], (None, []))
            if name not in files:
                files.append(name)
            found[match[1]] = (default if default is not None else match[2], files)
    return found


def render_compose_only() -> str:
    found = compose_variables()
    lines = [
        "## Compose-only variables",
        "",
        "Read by the compose files (and the audit rotation script they run), not by the services.",
        "",
        "| variable | default | read by | meaning |",
        "|---|---|---|---|",
    ]
    for name, meaning in COMPOSE_ONLY.items():
        default, files = found.get(name, (None, []))
        shown = "—" if default is None else f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {', '.join(f'`{f}`' for f in files)} | {meaning} |")
    return "\n".join(lines)


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    return f"{INTRO}\n{render_table()}\n\n{render_compose_only()}\n\n{render_retired()}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write"]:
        PATH.parent.mkdir(parents=True, exist_ok=True)
        PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {PATH}")
        return 0
    if args:
        print("usage: python -m service.devtools.config_doc [--write]", file=sys.stderr)
        return 2
    print(render(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
