"""The Dockerfile, checked without a Docker engine (none runs here).

It is parsed (multi-stage, slim base, non-root USER, HEALTHCHECK, read-only-rootfs
friendly), and its build stage is replayed for real: WORKDIR, COPY, ENV and RUN, with
/opt/venv mapped to a fresh virtualenv under a temp dir, so that the very pip commands of
the image install the pinned lock and the package, and the result starts and validates.

Also ``python -m tests.integration.test_dockerfile --write-lock`` regenerates requirements.lock.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
UID = "10001"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages; continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            stages.append(Stage(match[1], match[2] or str(len(stages))))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def test_multi_stage_on_a_slim_python_base(dockerfile: tuple[dict[str, str], list[Stage]],
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
        dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    runtime = dockerfile[1][-1]
    users = runtime.all("USER")
    assert users == [f"{UID}:{UID}"]
    keywords = [kw for kw, _ in runtime.instructions]
    # Nothing runs as root after the switch.
    assert "RUN" not in keywords[keywords.index("USER"):]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert '["python", "-m", "service.web.probe"]' in healthcheck
    assert re.search(r"--timeout=\d+s", healthcheck) and re.search(r"--interval=\d+s",
                                                                    healthcheck)
    entrypoint = shlex.split(runtime.all("ENTRYPOINT")[0].strip("[]").replace(",", " "))
    command = shlex.split(runtime.all("CMD")[0].strip("[]").replace(",", " "))
    assert entrypoint == ["ivr-vault"]
    args = build_parser().parse_args(command)
    assert (args.command, args.role) == ("serve", "webhook")


def test_friendly_to_a_read_only_root_filesystem(
        dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
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
        if (fnmatch.fnmatch(path, body) or fnmatch.fnmatch(Path(path).name, body)
                or fnmatch.fnmatch(path, body.replace("/**", "/*"))):
            ignored = not negate
    return ignored


def test_build_context_carries_the_sources_and_no_local_state(
        dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                files = [source] if (ROOT / source).is_file() else [
                    str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")
                    if "__pycache__" not in p.parts] or [
                    str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.hcl")]
                assert files, source
                for name in files:
                    assert not _ignored(name, patterns), name
    for private in (".dev/vault.env", ".venv/bin/python", ".git/config", "secrets/token",
                    "tests/conftest.py", "service/__pycache__/cli.cpython-311.pyc"):
        assert _ignored(private, patterns), private


# -- the lock -------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, str]:
    """name -> installed version, for every package the installed ivr-vault needs at run
    time on this platform (extras followed, markers evaluated)."""
    environment = default_environment()
    seen: dict[str, set[str]] = {}
    versions: dict[str, str] = {}

    def walk(text: str, extras: tuple[str, ...]) -> None:
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({**environment, "extra": e})
                                  for e in extras):
            return
        name = _canonical(req.name)
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
            pins[_canonical(name)] = version
    return pins


def test_lock_pins_every_runtime_dependency_within_pyproject_ranges() -> None:
    pins = read_lock()
    missing = set(runtime_closure()) - set(pins)
    assert not missing, f"requirements.lock lacks {sorted(missing)}: regenerate it"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        req = Requirement(text)
        assert Version(pins[_canonical(req.name)]) in req.specifier, text


# -- the build stage, replayed --------------------------------------------------------------


def test_build_stage_installs_in_a_clean_venv_and_the_result_runs(
        dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path) -> None:
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
                    shutil.copytree(ROOT / source, target / Path(source).name
                                    if dest.endswith("/") and dest != "./" else target,
                                    dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(ROOT / source, target if not dest.endswith("/")
                                 else target / Path(source).name)
        elif keyword == "RUN":
            command = args.replace("/opt/venv", str(venv))
            # `python` in the image is the base image's 3.11; here, this interpreter.
            command = re.sub(r"^python\b", shlex.quote(sys.executable), command)
            result = subprocess.run(["sh", "-c", command], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=240)
            assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"
    elapsed = time.monotonic() - started
    check = subprocess.run(
        [str(venv / "bin" / "ivr-vault"), "serve", "backend", "--check"],
        env={"PATH": "/usr/bin:/bin", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s",
             "BACKEND_TOKEN": "t", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    # The installed package is the one from the context, not this checkout via a path.
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import service.web.probe, service.cli.twilio;"
                            " print(service.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert str(venv) in where.stdout, where.stderr
    print(f"build stage replayed in {elapsed:.0f}s")


def _write_lock() -> None:
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    pins = [f"{name}=={version}" for name, version in sorted(runtime_closure().items())]
    LOCK.write_text("\n".join(header + pins) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-lock"]:
        _write_lock()
    else:
        sys.exit("usage: python -m tests.integration.test_dockerfile --write-lock")
