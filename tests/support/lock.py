"""requirements.lock (the image's exact pins) against what the dev venv installed.

``make lock`` regenerates it (ivr-vault alone in a clean venv); ``make test`` installs it.
"""

from __future__ import annotations

import importlib.metadata as md
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.support.repo import ROOT

LOCK = ROOT / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, str]:
    """name -> installed version, for every package the installed ivr-vault needs at run
    time on this platform (extras followed, markers evaluated)."""
    environment = {k: str(v) for k, v in default_environment().items()}  # all str already
    seen: dict[str, set[str]] = {}
    versions: dict[str, str] = {}

    def walk(text: str, extras: tuple[str, ...]) -> None:
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({**environment, "extra": e}) for e in extras):
            return
        name = canonical(req.name)
        if name in seen and set(req.extras) <= seen[name]:
            return
        seen.setdefault(name, set()).update(req.extras)
        dist = md.distribution(req.name)
        versions[name] = dist.version
        for sub in dist.requires or []:
            walk(sub, ("", *seen[name]))

    for requirement in md.distribution("ivr-vault").requires or []:
        walk(requirement, ("",))
    return versions


def read_lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"not an exact pin: {line}"
            pins[canonical(name)] = version
    return pins
