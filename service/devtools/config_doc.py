"""``docs/configuration.md``, generated from the declarations in :mod:`service.settings`.

``python -m service.devtools.config_doc`` prints it; ``--write`` writes it.
tests/unit/devtools/test_config_doc.py fails when the file and the declarations disagree, so a
new setting cannot go undocumented.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from service.settings import RETIRED, Settings, env_name, spec

PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

INTRO = """\
# Configuration

Both services and the `ivr-vault` CLI read their settings from the environment, once, at
start-up. A setting that is missing or invalid stops the program with one line that names
the setting and never echoes its value. Every secret may instead come from `NAME_FILE`: a
path whose content is the value (docker secrets, mounted volumes), which wins over `NAME`.
Nothing secret is ever read from the command line.

<!-- Generated from service/settings.py by `python -m service.devtools.config_doc --write`.
     Edit the declarations there, not this file. -->
"""


def _row(field: dataclasses.Field[object]) -> str:
    declared = spec(field)
    name = env_name(field)
    setting = f"`{name}`" + (f" or `{name}_FILE`" if declared.secret else "")
    default = ("—" if declared.default is None
               else "(empty)" if declared.default == "" else f"`{declared.default}`")
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
    lines = ["## Retired settings", "",
             "Set in the environment, these do nothing; a service that finds one says so "
             "once at start-up.", ""]
    lines += [f"- `{name}`: {why}." for name, why in RETIRED.items()]
    return "\n".join(lines)


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    return f"{INTRO}\n{render_table()}\n\n{render_retired()}\n"


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
