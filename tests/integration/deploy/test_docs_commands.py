"""Every shell block of README.md and docs/*.md runs, as written, against a real ``make run``
(tests/support/docblocks.py: the convention, and why a block may be marked not to run).

A reader's terminal: the block's lines run with ``bash -e -o pipefail`` in the directory
``make run`` runs in (a copy of the checkout made of links to it, with ``.venv`` the real
one), with the virtualenv's ``bin/`` first on PATH, as where ``ivr-vault`` and ``bao`` are
installed, and the variables of the terminal that started ``make run`` on its moved ports
(``WEBHOOK_PORT``, ``BACKEND_PORT``, ``BACKEND_URL``, ``PUBLIC_BASE_URL``). Blocks marked
``env=keyadmin`` get ``VAULT_ADDR`` and a key-admin ``VAULT_TOKEN``, as docs/keys.md tells
an operator to set them. Each block must exit 0; the blocks run in document order, so one
may rely on what an earlier one did (a rotation before a retirement).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hvac

from tests.support.devrun import READY_LINE, DevRun, base_env, vault_env
from tests.support.docblocks import Block, all_blocks
from tests.support.repo import ROOT

VENV = Path(sys.executable).parents[1]
NOT_LINKED = {".git", ".dev", ".venv", "backups"}


def checkout_copy(directory: Path) -> None:
    """``directory`` as the checkout a reader runs ``make run`` in: a link to each of the
    repository's top-level entries (the docs name monitoring/, tests/ ...), its own .dev/."""
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED:
            (directory / entry.name).symlink_to(entry)
    (directory / ".venv").symlink_to(VENV)


def keyadmin_token(run: DevRun, addr: str) -> str:
    role = run.state / "ivr-keyadmin"
    client = hvac.Client(url=addr, timeout=10)
    auth = client.auth.approle.login(
        role_id=(role / "role_id").read_text().strip(),
        secret_id=(role / "secret_id").read_text().strip(),
        use_token=False,
    )["auth"]
    return str(auth["client_token"])


def run_block(block: Block, run: DevRun, env: dict[str, str]) -> str | None:
    """None when the block exits 0, else what went wrong, in a few lines."""
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=run.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode == 0:
        return None
    tail = "\n    ".join((done.stdout + done.stderr).strip().splitlines()[-8:])
    return f"{block.where}: exit {done.returncode}\n    {tail}"


def test_every_runnable_shell_block_of_the_docs_runs(
    tmp_path: Path, start_dev: Callable[..., DevRun]
) -> None:
    checkout_copy(tmp_path)
    run = start_dev()
    run.wait_for(READY_LINE)
    addr = vault_env(run)["VAULT_ADDR"]
    backend = f"http://127.0.0.1:{run.env['BACKEND_PORT']}"
    terminal = base_env(
        run.cwd,
        PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        WEBHOOK_PORT=run.env["WEBHOOK_PORT"],
        BACKEND_PORT=run.env["BACKEND_PORT"],
        BACKEND_URL=backend,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{run.webhook_port}",
    )
    keyadmin = {"VAULT_ADDR": addr, "VAULT_TOKEN": keyadmin_token(run, addr)}

    runnable = [block for block in all_blocks() if block.no_run is None]
    failures = [
        failure
        for block in runnable
        if (
            failure := run_block(
                block, run, {**terminal, **(keyadmin if block.env == "keyadmin" else {})}
            )
        )
    ]
    print(f"docs: {len(runnable)} shell blocks run")  # the figure for the report
    assert len(runnable) >= 8
    assert failures == [], "\n".join(failures)
