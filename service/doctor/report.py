"""What ``ivr-vault doctor`` found: one row per check, ✓ or ✗, a one-line fix for each ✗,
and reminder rows that never fail. Rendered as a table for a person or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "fail", "reminder"]
MARKS: dict[Status, str] = {"pass": "✓", "fail": "✗", "reminder": "!"}


@dataclass(frozen=True)
class Check:
    """One row. ``detail`` says what was found, in one line; ``fix`` what to do about a
    failure, in one line (every ✗ has one)."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status == "fail" and not self.fix:
            raise ValueError(f"{self.name}: a failed check needs its fix")

    @classmethod
    def passed(cls, name: str, detail: str) -> Check:
        return cls(name, "pass", detail)

    @classmethod
    def failed(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, "fail", detail, fix)

    @classmethod
    def reminder(cls, name: str, detail: str) -> Check:
        return cls(name, "reminder", detail)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = []
        for check in self.checks:
            lines.append(f"{MARKS[check.status]} {check.name:<{width}}  {check.detail}")
            if check.fix:
                lines.append(f"  {'':<{width}}  fix: {check.fix}")
        failed = len(self.failed)
        lines.append(
            "all checks passed"
            if not failed
            else f"{failed} of {sum(c.status != 'reminder' for c in self.checks)} checks failed"
        )
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "checks": [
                    {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix}
                    for c in self.checks
                ],
            },
            indent=2,
            ensure_ascii=False,
        )


def report(checks: Sequence[Check]) -> Report:
    return Report(tuple(checks))
