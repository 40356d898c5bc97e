"""The Dockerfile, read as text (no Docker engine runs here): multi-stage, slim base,
non-root USER, HEALTHCHECK, read-only-rootfs friendly, a build context without local state,
and a lock that pins every runtime dependency. tests/integration/deploy/test_docker_build.py
runs its build stage for real.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from service.cli import build_parser
from tests.support.dockerfile import Stage, env_pairs, read_dockerfile
from tests.support.lock import canonical, read_lock, runtime_closure
from tests.support.repo import ROOT

UID = "10001"


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return read_dockerfile()


def test_multi_stage_on_a_slim_python_base(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    args, stages = dockerfile
    assert len(stages) >= 2
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], stage.base)
        assert re.fullmatch(r"python:3\.1[1-9](\.\d+)?-slim(-\w+)?", base), base
    runtime = stages[-1]
    # The final stage takes only the built venv from the build stage: no compiler, no cache.
    copies_from = [c for c in runtime.all("COPY") if c.startswith("--from=")]
    assert copies_from == [f"--from={stages[0].name} /opt/venv /opt/venv"]
    assert not any("pip install" in r for r in runtime.all("RUN"))


def test_runs_as_a_fixed_non_root_user_with_a_healthcheck(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    runtime = dockerfile[1][-1]
    users = runtime.all("USER")
    assert users == [f"{UID}:{UID}"]
    keywords = [kw for kw, _ in runtime.instructions]
    # Nothing runs as root after the switch.
    assert "RUN" not in keywords[keywords.index("USER") :]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert '["python", "-m", "service.web.probe"]' in healthcheck
    assert re.search(r"--timeout=\d+s", healthcheck) and re.search(r"--interval=\d+s", healthcheck)
    entrypoint = shlex.split(runtime.all("ENTRYPOINT")[0].strip("[]").replace(",", " "))
    command = shlex.split(runtime.all("CMD")[0].strip("[]").replace(",", " "))
    assert entrypoint == ["ivr-vault"]
    args = build_parser().parse_args(command)
    assert (args.command, args.role) == ("serve", "webhook")


def test_friendly_to_a_read_only_root_filesystem(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    build, runtime = dockerfile[1][0], dockerfile[1][-1]
    env: dict[str, str] = {}
    for args in runtime.all("ENV"):
        env.update(env_pairs(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # no .pyc writes at run time...
    assert any("compileall" in r for r in build.all("RUN"))  # ...because they are built in
    assert env["HOME"] == "/tmp" and runtime.all("WORKDIR") == ["/tmp"]
    # Everything the services write lives in /tmp or in directories made for volumes,
    # owned by the service user so that a fresh named volume inherits that owner.
    (setup,) = [r for r in runtime.all("RUN") if "install -d" in r]
    assert f"-o {UID} -g {UID}" in setup
    volume_dirs = set(re.findall(r"\s(/\S+)", setup.split("install -d", 1)[1]))
    assert str(Path(env["STORE_PATH"]).parent) in volume_dirs
    assert {"/creds/webhook", "/creds/backend"} <= volume_dirs
    # Bootstrap finds its layout and policies in the image, not in site-packages.
    assert env["IVR_LAYOUT_DIR"] == "/app"
    copied = {c.split()[-1] for c in runtime.all("COPY")}
    assert {"/app/vault/layout.json", "/app/policies"} <= copied


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins, ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.removeprefix("**/")
        if (
            fnmatch.fnmatch(path, body)
            or fnmatch.fnmatch(Path(path).name, body)
            or fnmatch.fnmatch(path, body.replace("/**", "/*"))
        ):
            ignored = not negate
    return ignored


def test_build_context_carries_the_sources_and_no_local_state(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                files = (
                    [source]
                    if (ROOT / source).is_file()
                    else [
                        str(p.relative_to(ROOT))
                        for p in (ROOT / source).rglob("*.py")
                        if "__pycache__" not in p.parts
                    ]
                    or [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.hcl")]
                )
                assert files, source
                for name in files:
                    assert not _ignored(name, patterns), name
    for private in (
        ".dev/vault.env",
        ".venv/bin/python",
        ".git/config",
        "secrets/token",
        "tests/conftest.py",
        "service/__pycache__/cli.cpython-311.pyc",
    ):
        assert _ignored(private, patterns), private


# -- the lock -------------------------------------------------------------------------------


def test_lock_pins_every_runtime_dependency_within_pyproject_ranges() -> None:
    pins = read_lock()
    missing = set(runtime_closure()) - set(pins)
    assert not missing, f"requirements.lock lacks {sorted(missing)}: regenerate it"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        req = Requirement(text)
        assert Version(pins[canonical(req.name)]) in req.specifier, text


def test_the_tests_run_exactly_what_the_image_ships() -> None:
    """docs/security.md, "smaller items": the lock pinned cryptography 50.0.2, httpx, idna and
    uvicorn at other
    versions than the tests installed. `make test` installs with `-c requirements.lock`
    now, and `make lock` regenerates it: every runtime package here is the pinned one."""
    pins = read_lock()
    differ = {
        name: (version, pins.get(name))
        for name, version in runtime_closure().items()
        if pins.get(name) != version
    }
    assert not differ, f"installed vs requirements.lock: {differ}; run make lock"
