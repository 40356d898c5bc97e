"""py-spy on both arms of a running ``python -m bench.ab``: one profile per arm of one role.

    python -m bench.profile_ab NAME [--role backend] [--seconds 60]

Started next to ``python -m bench.ab``: it waits for that run's two ``serve ROLE``
processes, records each with ``py-spy record --nonblocking`` (the process is never
paused, so the A/B's figures are not bent by it) for ``--seconds``, and writes
bench/profiles/NAME-{a,b}.svg (flame graphs) and NAME.md (each arm's top functions by
their own samples, and the command). The arms are told apart by where their output goes
(bench.ab's ab-a/ and ab-b/). py-spy leaves out samples of threads it sees idle; a thread
waiting inside uvloop's loop (C) is not seen idle, hence ``Runner.run``'s own share.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "profiles"
RUN = HERE / ".work" / "ab" / "run"  # bench.ab's


def _arms(role: str) -> dict[str, int]:
    """The pids of this run's two ``serve ROLE`` processes, by arm."""
    arms: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # bench.ab writes each arm's output under its work dir: .../ab/run/ab-{a,b}/
            output = (entry / "fd" / "1").resolve()
        except OSError:
            continue
        if argv[1:5] != [b"-m", b"service", b"serve", role.encode()]:
            continue
        if output.parent.parent != RUN or output.parent.name not in ("ab-a", "ab-b"):
            continue  # another worktree's bench, or the bench stack's own services
        arms[output.parent.name[-1]] = int(entry.name)
    return arms


def _top(raw: Path, limit: int = 15) -> list[tuple[str, float, float]]:
    """(function, own %, total %) from py-spy's raw (collapsed) stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return [(f, 100 * n / samples, 100 * total[f] / samples) for f, n in own.most_common(limit)]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ab")
    parser.add_argument("name")
    parser.add_argument("--role", default="backend")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--wait", type=float, default=300, help="for bench.ab's processes")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    deadline = time.monotonic() + args.wait
    while len(arms := _arms(args.role)) < 2:
        if time.monotonic() > deadline:
            print(f"profile_ab: no two {args.role} processes of bench.ab", file=sys.stderr)
            return 1
        time.sleep(1)
    time.sleep(20)  # past bench.ab's start-up and warm-up
    procs = {}
    for arm, pid in arms.items():
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            command = [
                str(Path(sys.executable).with_name("py-spy")),
                "record", "--nonblocking", "--rate", "100", "--duration", str(args.seconds),
                "--format", fmt, "--output", str(OUT / f"{args.name}-{arm}.{suffix}"),
                "--pid", str(pid),
            ]  # fmt: skip
            procs[(arm, suffix)] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for proc in procs.values():
        proc.wait()
    lines = [
        f"### py-spy: {args.name} ({args.role})",
        "",
        f"`python -m bench.profile_ab {args.name} --role {args.role} --seconds {args.seconds}`"
        f" next to `python -m bench.ab`: `py-spy record --nonblocking --rate 100` on each arm's"
        f" {args.role} for {args.seconds} s; flame graphs {args.name}-a.svg, {args.name}-b.svg.",
        "",
    ]
    for arm in sorted(arms):
        lines += [
            f"Arm {arm.upper()}, top functions by own samples:",
            "",
            "| function | own % | total % |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{f}` | {o:.1f} | {t:.1f} |" for f, o, t in _top(OUT / f"{args.name}-{arm}.txt")
        ]
        lines.append("")
    (OUT / f"{args.name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
