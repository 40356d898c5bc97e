"""The services join the log lines made on their event loop into one write per loop
iteration (service.logs.config ``background=True``). No line may be lost for it: lines
written just before a normal exit, an uncaught exception, or SIGTERM to a running service
are all in the output, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from tests.support.repo import ROOT
from tests.support.stack import make_stack

LINES = 2000

SCRIPT = (
    textwrap.dedent("""
    import asyncio, os, signal, sys, structlog
    from service.logs.config import configure_logging
    configure_logging(fmt=sys.argv[1], background=True)
    log = structlog.get_logger("ivr.test")

    async def main():
        for i in range(%d):
            log.info("line", n=str(i).translate(str.maketrans("0123456789", "abcdefghij")))
            if i %% 300 == 0:
                await asyncio.sleep(0)  # some lines go out; the last ones are still pending
        if sys.argv[2] == "raise":
            raise RuntimeError("boom")
        if sys.argv[2] == "exit":
            sys.exit(3)
        if sys.argv[2] == "sigterm":  # the default action: no atexit, no loop shutdown
            os.kill(os.getpid(), signal.SIGTERM)

    # Not asyncio.run: its shutdown would run the loop once more and write what is
    # pending; here the process ends with the last lines still waiting for the loop.
    asyncio.new_event_loop().run_until_complete(main())
""")
    % LINES
)


def _run(fmt: str, end: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, end],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def _numbers(stderr: str) -> list[str]:
    return [
        json.loads(line)["n"]
        for line in stderr.splitlines()
        if line.startswith("{") and '"line"' in line
    ]


def _letters(i: int) -> str:
    return str(i).translate(str.maketrans("0123456789", "abcdefghij"))


def test_every_line_written_before_a_normal_exit_is_in_the_output() -> None:
    done = _run("json", "return")
    assert done.returncode == 0
    assert _numbers(done.stderr) == [_letters(i) for i in range(LINES)]


def test_every_line_before_sys_exit_and_an_uncaught_exception_is_in_the_output() -> None:
    done = _run("json", "exit")
    assert done.returncode == 3
    assert _numbers(done.stderr) == [_letters(i) for i in range(LINES)]
    crashed = _run("json", "raise")
    assert crashed.returncode == 1
    assert _numbers(crashed.stderr) == [_letters(i) for i in range(LINES)]
    last = json.loads(crashed.stderr.splitlines()[-1])
    assert last["event"] == "uncaught exception" and "RuntimeError: boom" in last["exception"]


def test_every_line_before_sigterm_is_in_the_output() -> None:
    killed = _run("json", "sigterm")
    assert killed.returncode == -signal.SIGTERM  # still dies of it, after writing
    assert _numbers(killed.stderr) == [_letters(i) for i in range(LINES)]


def test_console_lines_too() -> None:
    done = _run("console", "raise")
    lines = [ln for ln in done.stderr.splitlines() if "] line " in ln]
    assert len(lines) == LINES
    assert "uncaught exception" in done.stderr


def test_sigterm_to_a_busy_service_loses_no_access_line(
    dev_vault: DevVault, credentials: dict[str, RoleCredentials], tmp_path: Path
) -> None:
    """A real webhook, SIGTERMed while requests are still arriving: every request it
    answered has its access line in the output when it has exited."""
    stack = make_stack(dev_vault, credentials, tmp_path, start=False)
    stack.webhook.start()
    try:
        url = stack.webhook.url + "/voice"

        def hammer(_: int) -> int:
            answered = 0
            with httpx.Client(timeout=5) as client:
                for _ in range(150):
                    try:
                        if (
                            client.post(
                                url,
                                content=b"x=1",
                                headers={
                                    "Content-Type": "application/x-www-form-urlencoded",
                                },
                            ).status_code
                            == 403
                        ):
                            answered += 1  # unsigned: refused, and logged
                    except httpx.HTTPError:
                        break  # the server is shutting down
            return answered

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(hammer, i) for i in range(4)]
            while (
                sum(
                    1
                    for ln in stack.webhook.stderr_path.read_text().splitlines()
                    if '"request"' in ln
                )
                < 50
            ):
                pass  # some requests answered and flushed: now stop it mid-stream
            assert stack.webhook.process is not None
            stack.webhook.process.send_signal(signal.SIGTERM)
            answered = sum(f.result() for f in futures)
        # uvicorn shuts down gracefully, then re-raises SIGTERM to die of it.
        assert stack.webhook.process.wait(timeout=20) == -signal.SIGTERM
    finally:
        stack.webhook.stop()
    lines = [
        json.loads(ln)
        for ln in stack.webhook.stderr_path.read_text().splitlines()
        if ln.startswith("{")
    ]
    refused = [
        a
        for a in lines
        if a["event"] == "request" and a["status_code"] == 403 and a["path"] == "/voice"
    ]
    assert answered >= 50
    assert len(refused) == answered
    # Even uvicorn's very last line, logged after the app shut down, was written.
    assert lines[-1]["event"].startswith("Finished server process")
