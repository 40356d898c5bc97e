"""Delay packets in the kernel, for hosts whose kernel has no ``netem``: a process that
holds every packet iptables hands to its NFQUEUE for ``--delay`` seconds, then lets it go
on (the verdict ACCEPT), in order. Run inside a host's network namespace (netns.py,
:meth:`Network.delay`), it makes that host's link to another slow both ways: the rules
send what the host sends to the other (OUTPUT) and what it receives from it (INPUT) to
the queue.

Why this and not a relay in the test: the packets are the processes' own, on their own
TCP connections, delayed in the kernel's path between the two hosts (a SYN, a retransmit
and an ACK alike), which is what ``tc qdisc add … netem delay`` does. This kernel
(6.18, no modules) has ``CONFIG_NETFILTER_NETLINK_QUEUE=y`` and the ``NFQUEUE`` target,
and ``# CONFIG_NET_SCH_NETEM is not set``.

The nfnetlink_queue protocol spoken with the standard library only (linux/netfilter/
nfnetlink_queue.h): bind the queue, ask for packet metadata only (no payload), and answer
with batch verdicts: "accept every packet up to id N", N the newest one held long
enough. One delay for all, so the order is kept and one verdict frees a burst; a message
the socket had no room for (ENOBUFS) leaves its packet queued, and the next batch verdict
frees it. Packets the process never answers are dropped when it exits (the kernel
flushes the queue), so the caller lifts the rules first, waits one delay, then stops it.

Usage: ``python nfdelay.py QUEUE SECONDS``; prints ``bound`` once it holds the queue.
"""

from __future__ import annotations

import collections
import errno
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
QUEUE_LENGTH = 8192  # packets held at once; 100 ms of this drill's traffic is far fewer


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _message(kind: int, queue: int, attrs: bytes, flags: int, seq: int) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + attrs
    return (
        HEADER.pack(HEADER.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body
    )


def _request(sock: socket.socket, queue: int, attrs: bytes, seq: int) -> None:
    """A config message, and the kernel's acknowledgement (an error: SystemExit)."""
    sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
    answer = sock.recv(65536)
    _, kind, _, _, _ = HEADER.unpack_from(answer)
    if kind == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", answer, HEADER.size)
        if code != 0:
            raise SystemExit(f"nfdelay: queue {queue}: {errno.errorcode.get(-code, code)}")


def _packet_ids(data: bytes) -> list[int]:
    """The ids of the queued packets in one read (several netlink messages)."""
    ids = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, _, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            at = offset + HEADER.size + 4  # past nfgenmsg
            while at + 4 <= offset + length:
                size, attr = struct.unpack_from("=HH", data, at)
                if size < 4:
                    break
                if attr & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, at + 4)[0])
                at += size + (-size % 4)
        offset += length + (-length % 4)
    return ids


def run(queue: int, delay: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    _request(sock, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)), 1)
    _request(sock, queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)), 2)
    _request(sock, queue, _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_LENGTH)), 3)
    print("bound", flush=True)
    held: collections.deque[tuple[float, int]] = collections.deque()
    seq = 3
    while True:
        wait = max(0.0, held[0][0] - time.monotonic()) if held else None
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            try:
                data = sock.recv(1 << 20)
            except OSError as exc:  # ENOBUFS: the next batch verdict frees what was missed
                if exc.errno != errno.ENOBUFS:
                    raise
                continue
            due = time.monotonic() + delay
            held.extend((due, packet) for packet in _packet_ids(data))
        now, last = time.monotonic(), None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            seq += 1
            verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))
            sock.send(_message(NFQNL_MSG_VERDICT_BATCH, queue, verdict, NLM_F_REQUEST, seq))


if __name__ == "__main__":
    run(int(sys.argv[1]), float(sys.argv[2]))
