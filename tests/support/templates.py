"""Recognising a foreign log line rendered from a known template (service/logs/templates.py)
in logged output, independently of the scrubber's own rendering: the tests that search
output for digits accept digits in such a line only where the template shows a checked
argument (a port, a PID, a configured listen address), and nowhere else."""

from __future__ import annotations

import errno
import ipaddress
import re
from collections.abc import Collection, Iterator

from service.logs.scrubbing import PID_MAX
from service.logs.templates import KNOWN_TEMPLATES, SPEC, Arg

_GROUP = {"%d": r"([0-9*]+)", "%s": r"(.*?)"}


def _pattern(msg: str) -> re.Pattern[str]:
    parts, position = [], 0
    for spec in SPEC.finditer(msg):
        parts.append(re.escape(msg[position : spec.start()]))
        parts.append(_GROUP[spec.group()])
        position = spec.end()
    parts.append(re.escape(msg[position:]))
    return re.compile("".join(parts), re.DOTALL)


_PATTERNS = {key: _pattern(key[1]) for key in KNOWN_TEMPLATES}


def _has_digit(text: str) -> bool:
    return any(c.isdigit() or c.isnumeric() for c in text)


# Kinds whose value names one of the test's own processes (a leak test checks it is one
# it started); the others (an HTTP status, a Vault API path) are proven by their check
# alone: three digits, or digit runs under four, cannot be a typed four-digit entry.
PROCESS_KINDS = frozenset({Arg.PORT, Arg.PID, Arg.LISTEN_HOST})


def shown_arguments(
    logger: object, event: object, listen_hosts: Collection[str] = ()
) -> list[str] | None:
    """The arguments a known template shows verbatim in ``event``, each checked as the
    template's kind demands (raises AssertionError when one is not); None when the line
    is not one of the templates (its digits must then all be masked)."""
    shown = shown_with_kinds(logger, event, listen_hosts)
    return None if shown is None else [value for value, _ in shown]


def shown_with_kinds(
    logger: object,
    event: object,
    listen_hosts: Collection[str] = (),
) -> list[tuple[str, Arg]] | None:
    """:func:`shown_arguments`, each with the kind the template says it is."""
    if not isinstance(logger, str) or not isinstance(event, str):
        return None
    for (name, msg), pattern in _PATTERNS.items():
        match = pattern.fullmatch(event) if name == logger else None
        if match is None:
            continue
        return list(_checked(match.groups(), KNOWN_TEMPLATES[(name, msg)], listen_hosts))
    return None


def _checked(
    values: tuple[str, ...], kinds: tuple[Arg, ...], listen_hosts: Collection[str]
) -> Iterator[tuple[str, Arg]]:
    for value, kind in zip(values, kinds, strict=True):
        if not _has_digit(value):
            continue
        if kind in (Arg.PORT, Arg.PID):
            assert value.isascii() and value.isdigit(), value
            assert 1 <= int(value) <= (65_535 if kind is Arg.PORT else PID_MAX), value
        elif kind is Arg.LISTEN_HOST:
            assert value in listen_hosts, value
            ipaddress.ip_address(value)
        elif kind is Arg.ERRNO:
            assert value.isascii() and value.isdigit() and int(value) in errno.errorcode, value
        elif kind is Arg.STATUS:
            assert value.isascii() and value.isdigit() and 100 <= int(value) <= 599, value
        elif kind is Arg.HTTP_VERSION:
            assert value in ("HTTP/1.0", "HTTP/1.1", "HTTP/2"), value
        elif kind is Arg.REQUEST_PATH:
            # A Vault API path, digits only in runs under four; nothing after a "?".
            path, _, query = value.partition("?")
            assert path.startswith("/v1") and not _has_digit(query), value
            assert max(map(len, re.findall(r"[0-9]+", path))) < 4, value
        else:
            raise AssertionError(f"a digit in a {kind.value} argument: {value!r}")
        yield value, kind
