"""The backend's own CPU per lookup, this tree against another revision, alternating.

    python -m bench.lookup_cpu [--rev REV] [--rounds 7] [--lookups 1500] [--engine postgresql]

On a shared machine the whole-call A/B (bench/ab.py) moves by more than a lookup's thread
hop; this isolates it. Each round runs, for each arm, a fresh process that builds the
backend app (its lifespan, a real store: a SQLite file in a temporary directory, or a new
database on a local PostgreSQL started once, whose own CPU is not in the figure; the log
pipeline writing to /dev/null) around the unit tests' fake Transit (tests/support/fake_transit.py:
no Vault, so Vault's and the network's time are not in the figure), sends ``--lookups``
found lookups, each its own call with an Idempotency-Key, through ASGI in one event loop,
and reports its own CPU time (``time.process_time``) per lookup. Arm B is ``git archive
REV``'s service package. Medians, and each round's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARM_UP = 200


async def _child(lookups: int, store_url: str | None) -> float:
    import httpx

    from service.backend.app import create_backend_app
    from service.backend.enrolment import Enrolment, make_records
    from service.backend.keycheck import CANARY_INPUT
    from service.devtools.caller import new_call_sid
    from service.logs.config import configure_logging
    from service.settings import Secret, Settings
    from service.store.accounts import Store
    from tests.support.fake_transit import FakeTransit, fake_session

    configure_logging(fmt="json", level="INFO", stream=open(os.devnull, "w"), background=True)  # noqa: SIM115
    number, card, pin, caller = "31415926", "1234", "4321", "+15005550006"
    transit = FakeTransit()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            vault_role_id=Secret("role"),
            vault_secret_id=Secret("secret"),
            backend_token=Secret("bench-bearer"),
            store_path=str(Path(tmp) / "s.sqlite3"),
            store_url=Settings.from_environ({"STORE_URL": store_url}).store if store_url else None,
        )
        (canary,) = await transit.hmac([CANARY_INPUT])
        records = await make_records(
            transit,
            [Enrolment("AC12345678", "12.55", number, card, pin, (caller,))],
        )
        store = Store(settings.store)
        store.add_canary(canary, 0.0)
        store.add_accounts(records)
        store.close()
        app = create_backend_app(settings, transit_session=fake_session(transit))

        def body(sid: str) -> dict[str, str]:
            def seal(value: str, field: str) -> str:
                return transit.seal(value.encode(), f"{sid}:{field}".encode())

            return {
                "call_sid": sid,
                "card_last4": seal(card, "card_last4"),
                "pin": seal(pin, "pin"),
                "caller": seal(caller, "caller"),
                "account_number": seal(number, "account_number"),
                "issued": str(int(time.time())),
            }

        bodies = [body(new_call_sid()) for _ in range(WARM_UP + lookups)]
        headers = {"Authorization": "Bearer bench-bearer"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://backend"
            ) as client,
        ):
            started = 0.0
            for n, b in enumerate(bodies):
                if n == WARM_UP:
                    started = time.process_time()
                answer = await client.post(
                    "/v1/lookup", json=b, headers={**headers, "Idempotency-Key": f"k{n}"}
                )
                assert answer.status_code == 200, answer.text
            return (time.process_time() - started) * 1000 / lookups


def _source(rev: str) -> Path:
    from bench.ab import _source as archive

    return archive(rev, HERE / ".work" / "lookup-cpu" / "rev")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lookup_cpu")
    parser.add_argument("--rev", help="arm B's git revision")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=1500)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(args.lookups, args.store_url))))
        return 0
    with ExitStack() as exits:
        return _parent(args, exits)


def _parent(args: argparse.Namespace, exits: ExitStack) -> int:
    new_store: Callable[[], list[str]] = list
    if args.engine == "postgresql":
        from service.devtools.postgres import RUNTIME, LocalPostgres
        from service.settings import Settings
        from service.store.migrations import migrate_store

        server = LocalPostgres(HERE / ".work" / "lookup-cpu" / "postgres")
        server.start()
        exits.callback(server.stop)
        names = itertools.count(1)

        def new_store() -> list[str]:
            name = f"lookup_cpu_{os.getpid()}_{next(names)}"
            migrate_store(Settings.from_environ({"STORE_URL": server.new_database(name)}).store)
            return ["--store-url", server.url_for(name, RUNTIME)]

    arms: dict[str, dict[str, str]] = {"A: this tree": {}}
    if args.rev:
        src = _source(args.rev)
        # PYTHONSAFEPATH: this tree must not come before the revision's package; the
        # repository root after it, for tests.support.
        arms[f"B: {args.rev}"] = {
            "PYTHONPATH": f"{src}{os.pathsep}{HERE.parent}",
            "PYTHONSAFEPATH": "1",
        }
    figures: dict[str, list[float]] = {name: [] for name in arms}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, env in arms.items():
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.lookup_cpu",
                    "--child",
                    "--lookups",
                    str(args.lookups),
                ],
                env={**os.environ, **env},
                cwd=HERE.parent,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            figures[name].append(float(out.strip().splitlines()[-1]))
    load.append(os.getloadavg()[0])
    print(
        f"`python -m bench.lookup_cpu{f' --rev {args.rev}' if args.rev else ''}"
        f" --rounds {args.rounds} --lookups {args.lookups}"
        f"{' --engine postgresql' if args.engine == 'postgresql' else ''}`; 1-minute load average"
        f" {load[0]:.1f} before, {load[1]:.1f} after.\n"
    )
    print("| arm | backend CPU ms per lookup, median | each round |")
    print("|---|---|---|")
    for name, values in figures.items():
        rounds = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {statistics.median(values):.3f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
