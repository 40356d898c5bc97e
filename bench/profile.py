"""Where the webhook's time goes under the card step's load: py-spy samples the webhook
while wrk replays pre-signed card steps (c=32), as the bench and bench.ab do.

    python -m bench.profile NAME [--seconds 20] [--rate 200]

Needs py-spy (``pip install py-spy`` into the venv; root, or ptrace allowed). Writes
bench/profiles/NAME.svg (py-spy's flame graph) and bench/profiles/NAME.md: the share of
samples in which each function is on the stack (inclusive) and on top (self), py-spy
top's columns, for the busiest thread (the event loop's) and the functions that matter.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from bench import load, stack

HERE = Path(__file__).resolve().parent
OUT = HERE / "profiles"
TOP = 45
# The parts of a card step issue #21 names: frames (their names' beginnings) on the stack.
PARTS = {
    "access line (AccessLogMiddleware._emit)": ("AccessLogMiddleware._emit",),
    "verified_form (parse, URL, signature, request key)": ("verified_form (",),
    "  of which the signature check and the request key": (
        "is_valid_signature (",
        "request_key (",
        "signed_request_key (",
    ),
    "  of which the request key alone": ("request_key (", "_request_key ("),
    "TwiML (webhook/twiml.py)": (
        "gather (",
        "say_and_hang_up (",
        "account_found (",
        "menu (",
        "action_url (",
    ),
    "the response's socket writes (uvicorn send)": ("RequestResponseCycle.send (",),
    "Transit request (service/vault/, aiohttp)": (
        "Coalescer.",
        "Transit.",
        "AsyncVault.",
        "ClientSession.",
        "ClientRequest.",
        "StreamWriter.",
        "ResponseHandler.",
    ),
}


def _py_spy() -> str:
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if found is None:
        raise SystemExit("bench.profile: needs py-spy: .venv/bin/pip install py-spy")
    return found


def _record(pid: int, out: Path, fmt: str, seconds: int, rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--duration",
         str(seconds), "--format", fmt, "--output", str(out), "--nonblocking", "--threads"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frame(frame: str) -> str:
    # py-spy's raw frames: "function (path/to/module.py:line)"; keep the function and the
    # module's last two path parts, not the line, so that one function is one row.
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def table(raw: Path, title: str, command: str) -> str:
    """py-spy top's columns from collapsed stacks: % of samples with the function on the
    stack (inclusive) and on top (self), for the thread with the most samples."""
    per_thread: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    raw_stacks: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for line in raw.read_text().splitlines():
        stack_text, _, samples = line.rpartition(" ")
        frames = stack_text.split(";")
        per_thread[frames[0]].append(([_frame(f) for f in frames[1:]], int(samples)))
        raw_stacks[frames[0]].append((stack_text, int(samples)))
    thread, stacks = max(per_thread.items(), key=lambda kv: sum(c for _, c in kv[1]))
    total = sum(c for _, c in stacks)
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    rows = [
        f"### {title}",
        "",
        f"`{command}`; thread {thread}: {total} samples "
        f"(of {sum(c for s in per_thread.values() for _, c in s)} in all threads).",
        "",
        "| %total | %own | function |",
        "|---:|---:|---|",
    ]
    for name, on_stack in inclusive.most_common(TOP):
        rows.append(f"| {100 * on_stack / total:.1f} | {100 * own[name] / total:.1f} | `{name}` |")
    rows += ["", "The parts of a card step:", "", "| %total | part |", "|---:|---|"]
    for part, needles in PARTS.items():
        on = sum(c for frames, c in raw_stacks[thread] if any(f";{n}" in frames for n in needles))
        rows.append(f"| {100 * on / total:.1f} | {part} |")
    rows += ["", "Most samples on top:", "", "| %own | function |", "|---:|---|"]
    for name, on_top in own.most_common(20):
        rows.append(f"| {100 * on_top / total:.1f} | `{name}` |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("name")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args()
    command = f"python -m bench.profile {args.name} --seconds {args.seconds} --rate {args.rate}"
    work = HERE / ".work" / "profile"
    OUT.mkdir(exist_ok=True)
    raw, svg = work / f"{args.name}.raw", OUT / f"{args.name}.svg"
    with ExitStack() as exits:
        bench = stack.start(work / "run", exits)
        url = bench.webhook.url
        assert bench.webhook.process is not None
        pid = bench.webhook.process.pid

        def card_file(seconds: int) -> Path:
            return load.write_requests(
                work / "card.txt",
                load.card_requests(6000 * seconds + 1000),
                base_url=url,
                auth_token=bench.twilio_token,
            )

        load.run_wrk(url, card_file(2), connections=8, seconds=2)  # warm up
        requests_file = card_file(2 * args.seconds + 4)
        loadavg = os.getloadavg()[0]
        # Two recordings of the same run: the flame graph and the collapsed stacks.
        spies = [
            _record(pid, svg, "flamegraph", args.seconds, args.rate),
            _record(pid, raw, "raw", args.seconds, args.rate),
        ]
        time.sleep(1)
        result = load.run_wrk(url, requests_file, connections=32, seconds=args.seconds)
        for spy in spies:
            spy.wait(timeout=60)
    text = table(raw, args.name, command)
    text += (
        f"\nwrk card step c=32 during the recording: {result.rps:.0f} req/s, p99 "
        f"{result.p99_ms:.1f} ms, {result.bad + result.errors} bad answers; 1-minute load "
        f"average {loadavg:.1f} before, {os.getloadavg()[0]:.1f} after. Flame graph: "
        f"{svg.name}.\n"
    )
    (OUT / f"{args.name}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
