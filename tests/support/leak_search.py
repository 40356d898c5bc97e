"""Searching captured output for a caller's digits (used by
tests/integration/calls/test_log_leaks.py).

Three kinds of output, three levels of structure:

- our services' lines are JSON objects, so they are checked structurally: a digit may appear
  only under an allow-listed key whose value passes its validator, or as the checked argument
  of a known template (uvicorn's PID and port) that is one of the test's own processes'; then
  the digit strings the test typed, and their base64 forms, are searched for as well;
- the Vault audit log is JSON whose request/response strings Vault HMACs: bodies are walked
  after parsing (raw text also holds UUIDs and ports whose digits are not ours);
- the Vault server log is free text: digit strings are searched only as whole tokens, bounded
  by non-alphanumerics, so hex lease ids and ports cannot match by accident.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from service.logs.scrubbing import ALLOWED_FIELDS, is_digit_like
from tests.support.templates import PROCESS_KINDS, shown_with_kinds

# Digits the keypad never sends but a hostile client can: the webhook must refuse them, and
# they must not be logged either.
SCRIPTS = {
    name: "".join(chr(zero + i) for i in range(10))
    for name, zero in (
        ("arabic-indic", 0x0660),
        ("extended-arabic-indic", 0x06F0),
        ("fullwidth", 0xFF10),
        ("devanagari", 0x0966),
    )
}

# Validated fields whose digits are the clock's, not a caller's: left out of the token search
# (a 1234.5 ms request is not a leak of "1234"), but still checked by their validators.
CLOCK_FIELDS = frozenset({"timestamp", "duration_ms"})

HMAC_PREFIX = "hmac-sha256:"


def in_script(digits: str, script: str) -> str:
    return digits.translate(str.maketrans("0123456789", SCRIPTS[script]))


def base64_needles(plaintext: bytes) -> set[str]:
    """Every base64 text that *plaintext* produces, wherever it sits in a larger plaintext.

    A string embedded at byte offset 0, 1 or 2 of a base64 group encodes differently; for each
    offset keep only the characters determined by *plaintext* alone. Standard and URL-safe
    alphabets, padded and unpadded whole encodings.
    """
    needles: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(plaintext).decode()
        needles |= {whole, whole.rstrip("=")}
        for offset in range(3):
            text = encode(b"\0" * offset + plaintext).decode()
            start = -(-8 * offset // 6)  # ceil: first character free of the prefix bits
            end = (8 * (offset + len(plaintext))) // 6  # last character complete in plaintext
            needles.add(text[start:end])
    return {n for n in needles if len(n) >= 4}


@dataclass
class LeakDetector:
    """Knows every digit string the test typed; reports where one turns up."""

    digit_strings: list[str]
    plaintexts: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        ascii_ones = sorted({d for d in self.digit_strings if d.isascii()})
        others = sorted({d for d in self.digit_strings if not d.isascii()})
        whole_tokens = "|".join(map(re.escape, ascii_ones))
        self._token = re.compile(rf"(?<![0-9A-Za-z])(?:{whole_tokens})(?![0-9A-Za-z])")
        sources = [*self.plaintexts, *(d.encode() for d in self.digit_strings)]
        needles = set().union(*(base64_needles(p) for p in sources)) if sources else set()
        self._substrings = sorted(set(others) | needles, key=len, reverse=True)

    def find(self, text: str) -> list[str]:
        """The typed digit strings (whole tokens) and base64 forms present in *text*."""
        hits = [m.group(0) for m in self._token.finditer(text)]
        return hits + [s for s in self._substrings if s in text]

    def find_base64(self, text: str) -> list[str]:
        return [s for s in self._substrings if s in text and not s.isdigit()]


def json_lines(text: str) -> Iterator[tuple[int, str, object]]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, line, json.loads(line)
            except ValueError:
                yield number, line, None


def digit_problems(value: object, where: str = "") -> Iterator[str]:
    """Digits outside a validated allow-listed field, or anything that is not JSON-native."""
    if isinstance(value, dict):
        for key, item in value.items():
            if any(map(is_digit_like, key)):
                yield f"{where}: digit in key {key!r}"
            if key in ALLOWED_FIELDS and ALLOWED_FIELDS[key](item):
                continue
            yield from digit_problems(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from digit_problems(item, f"{where}[{index}]")
    elif isinstance(value, str):
        if any(map(is_digit_like, value)):
            yield f"{where}: digit in {value!r}"
    elif not (value is None or isinstance(value, bool)):
        yield f"{where}: bare number {value!r}"


def template_findings(
    parsed: dict[str, object], where: str, known: Collection[str]
) -> tuple[dict[str, object], list[str]]:
    """A known template's line (uvicorn's PID and listener lines) may show its checked
    arguments; each must also be one this test knows to be a port, PID or listen address
    of a process it started. Returns the line with those arguments taken out of its event
    (provably not a caller's digits), and the problems found."""
    try:
        shown = shown_with_kinds(parsed.get("logger"), parsed.get("event"), known)
    except AssertionError as exc:
        return parsed, [f"{where}: template argument fails its check: {exc}"]
    if shown is None:
        return parsed, []
    problems = [
        f"{where}: {value!r} is no port, PID or address of this test's processes"
        for value, kind in shown
        if kind in PROCESS_KINDS and value not in known
    ]
    event = str(parsed["event"])
    for value, _ in shown:
        event = event.replace(value, "", 1)
    return {**parsed, "event": event}, problems


def service_log_findings(
    name: str, text: str, detector: LeakDetector, known: Collection[str] = ()
) -> list[str]:
    """Structural problems and typed digit strings in one of our services' outputs.
    ``known``: the ports, PIDs and listen addresses of the processes the test started,
    which uvicorn's start lines may show."""
    findings: list[str] = []
    for number, line, parsed in json_lines(text):
        where = f"{name}:{number}"
        if not isinstance(parsed, dict):
            findings.append(f"{where}: not a JSON object line: {line[:120]!r}")
            findings += [f"{where}: {hit!r}" for hit in detector.find(line)]
            continue
        parsed, problems = template_findings(parsed, where, known)
        findings += problems
        if "\\u" in line:  # an escape would hide a character from the raw-text search
            findings.append(f"{where}: JSON escape in line")
        findings += list(digit_problems(parsed, where))
        searchable = {k: v for k, v in parsed.items() if k not in CLOCK_FIELDS}
        findings += [
            f"{where}: {hit!r}" for hit in detector.find(json.dumps(searchable, ensure_ascii=False))
        ]
    return findings


def strings_in(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


def audit_findings(name: str, text: str, detector: LeakDetector) -> list[str]:
    """Typed digits in audit request/response bodies, errors and paths; base64 anywhere."""
    findings: list[str] = []
    for number, line, entry in json_lines(text):
        where = f"{name}:{number}"
        if not isinstance(entry, dict):
            findings.append(f"{where}: not a JSON audit entry")
            findings += [f"{where}: {hit!r}" for hit in detector.find(line)]
            continue
        findings += [f"{where}: base64 {hit!r}" for hit in detector.find_base64(line)]
        request, response = entry.get("request") or {}, entry.get("response") or {}
        bodies = [
            request.get("data"),
            response.get("data"),
            entry.get("error"),
            request.get("path"),
        ]
        for text_value in strings_in(bodies):
            if not text_value.startswith(HMAC_PREFIX):
                findings += [f"{where}: {hit!r}" for hit in detector.find(text_value)]
    return findings


# Vault's audit device HMACs every string of a body but leaves time.Time values as they
# are (sdk's hashstructure skips them): an asymmetric key's (ivr-backup-sign's) versions
# carry their creation_time so, in clear. A time of day is no caller's entry; only that
# key's RFC 3339 value is let through, anything else under the name is still flagged.
UNHASHED_TIMES: Final = frozenset({"creation_time"})
RFC3339: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def unhashed_transit_strings(text: str) -> list[str]:
    """Strings in transit request/response bodies that Vault did not HMAC."""
    bad: list[str] = []
    for _, _, entry in json_lines(text):
        if not isinstance(entry, dict):
            continue
        request = entry.get("request") or {}
        if not str(request.get("path", "")).startswith("transit/"):
            continue
        response = entry.get("response") or {}
        for value in (request.get("data"), response.get("data")):
            bad += [
                s
                for name, s in _leaf_strings(value)
                if not s.startswith(HMAC_PREFIX)
                and not (name in UNHASHED_TIMES and RFC3339.fullmatch(s))
            ]
    return bad


def _leaf_strings(value: object, name: str = "") -> Iterable[tuple[str, str]]:
    """Each string leaf of ``value`` with the name of the field that holds it."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_strings(item, str(key))
    elif isinstance(value, list):
        for item in value:
            yield from _leaf_strings(item, name)
    elif isinstance(value, str):
        yield name, value
