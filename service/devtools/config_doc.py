"""The README's settings table, generated from :data:`service.settings.SPECS`.

``python -m service.devtools.config_doc`` prints it; ``--write README.md`` replaces the part
between the ``settings-table`` markers. tests/test_config.py fails when the README and
SPECS disagree, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from service.settings import SPECS, SettingSpec

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


def _row(spec: SettingSpec) -> str:
    name = f"`{spec.name}`" + (f" or `{spec.name}_FILE`" if spec.secret else "")
    default = "—" if spec.default is None else ("(empty)" if spec.default == ""
                                                else f"`{spec.default}`")
    meaning = spec.meaning.replace("|", "\\|")
    return f"| {name} | {default} | {meaning}{' Secret.' if spec.secret else ''} |"


def render() -> str:
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    lines += [_row(spec) for spec in SPECS]
    return "\n".join(lines)


def replace_table(text: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"markers {START} ... {END} not found")
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--write"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
