"""``.dev/cluster.json``: the processes of the stack ``make run`` or ``make run-ha`` runs in
this directory, each with its role, name, pid and URL; ``doctor`` and ``call`` read it
(service/cli/devenv.py ``read_cluster``) to find that stack rather than probe the default
ports, which may be another stack's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.files import write_private

CLUSTER_JSON = "cluster.json"


def cluster_member(role: str, name: str, process: Any, url: str) -> dict[str, Any]:
    """One process in ``.dev/cluster.json``: what ``doctor`` and ``call`` read to find the
    stack running in this directory (service/cli/devenv.py ``read_cluster``)."""
    return {"role": role, "name": name, "pid": process.pid if process else None, "url": url}


def write_cluster_json(state_dir: Path, members: list[dict[str, Any]]) -> None:
    write_private(state_dir / CLUSTER_JSON, json.dumps({"processes": members}, indent=2) + "\n")


def forget_cluster_json(state_dir: Path) -> None:
    """Once stopped, nothing in it is true any more."""
    (state_dir / CLUSTER_JSON).unlink(missing_ok=True)
