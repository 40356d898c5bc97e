"""The Dockerfile's build stage run for real (no Docker engine runs here): WORKDIR,
COPY, ENV and RUN, with /opt/venv mapped to a fresh virtualenv under a temp dir, so that the
very pip commands of the image install the pinned lock and the package, and the result starts
and validates. The Dockerfile's structure is checked in tests/unit/deploy/test_dockerfile.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.dockerfile import Stage, env_pairs, read_dockerfile
from tests.support.repo import ROOT


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return read_dockerfile()


def test_build_stage_installs_in_a_clean_venv_and_the_result_runs(
    dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    """About 30-45 s here (pip from its cache/index). The image's exact commands: if the
    lock is incomplete, `pip check` fails; if the package misses a module, the check fails."""
    build = dockerfile[1][0]
    venv = tmp_path / "opt-venv"
    workdir = tmp_path / "ctx"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    started = time.monotonic()
    for keyword, args in build.instructions:
        if keyword == "ENV":
            env.update(env_pairs(args))
        elif keyword == "WORKDIR":
            workdir = tmp_path / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = args.split()
            for source in sources:
                target = workdir / dest if not dest.startswith("/") else tmp_path / dest[1:]
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source,
                        target / Path(source).name
                        if dest.endswith("/") and dest != "./"
                        else target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"),
                    )
                else:
                    shutil.copy2(
                        ROOT / source,
                        target if not dest.endswith("/") else target / Path(source).name,
                    )
        elif keyword == "RUN":
            command = args.replace("/opt/venv", str(venv))
            # `python` in the image is the base image's 3.11; here, this interpreter.
            command = re.sub(r"^python\b", shlex.quote(sys.executable), command)
            result = subprocess.run(
                ["sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"
    elapsed = time.monotonic() - started
    check = subprocess.run(
        [str(venv / "bin" / "ivr-vault"), "serve", "backend", "--check"],
        env={
            "PATH": "/usr/bin:/bin",
            "VAULT_ROLE_ID": "r",
            "VAULT_SECRET_ID": "s",
            "BACKEND_TOKEN": "t",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    # The installed package is the one from the context, not this checkout via a path.
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import service.web.probe, service.cli.twilio; print(service.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert str(venv) in where.stdout, where.stderr
    print(f"build stage run in {elapsed:.0f}s")
