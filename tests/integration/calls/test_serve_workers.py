"""``ivr-vault serve`` with WEB_CONCURRENCY: several uvicorn workers, each building its own
app (Vault login, coalescers) in its own lifespan, each with the log pipeline installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from service.devtools.caller import Caller
from tests.support.demo import FOUND
from tests.support.stack import Stacks


def test_two_workers_serve_whole_calls(new_stack: Stacks) -> None:
    stack = new_stack("workers", webhook_env={"WEB_CONCURRENCY": "2"})
    heard: list[str] = []
    with httpx.Client(timeout=10) as client:
        caller = Caller(stack.webhook.url, stack.twilio_token, client, say=heard.append)
        for _ in range(4):  # new connections: the kernel spreads them over the workers
            assert caller.play(["1234", "4321"]).completed
    assert sum(FOUND in h for h in heard) == 4
    stack.stop()  # its output whole
    lines = stack.webhook.stderr_path.read_text().splitlines()
    started = [json.loads(x) for x in lines if "Started server process" in x]
    assert len(started) == 2  # two workers, both through our JSON log pipeline
    access = [json.loads(x) for x in lines if '"ivr.access"' in x]
    assert any(a.get("route") == "/voice/pin" for a in access)
    # Every line came through our JSON pipeline (with its scrubber), none from uvicorn's
    # own handlers, which a worker would install if it skipped configure_logging.
    assert all(json.loads(x) for x in lines if x.strip())


def test_bad_web_concurrency_is_a_configuration_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "webhook"],
        env={
            "WEB_CONCURRENCY": "many",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "VAULT_TOKEN": "x",
            "TWILIO_AUTH_TOKEN": "t",
            "BACKEND_TOKEN": "b",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "WEB_CONCURRENCY" in result.stderr
