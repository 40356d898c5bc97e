"""The digit scrubber: the last processor before any log line is rendered.

Everything a log record carries is rewritten so that no character a human could read as a
digit survives, except under a short allow-list of keys whose values are validated first.
The scrubber fails closed: if anything goes wrong the record is replaced by a fixed event.

Why ``\\d`` is not enough: Python's ``re`` ``\\d`` matches only the Unicode category Nd
(decimal digits). A caller's digits can also arrive, or be echoed back by a library, as
characters outside Nd that still read as digits: circled ``⓵``/``①``, dingbat ``❶``,
Ethiopic ``፩``, superscript ``²``, parenthesised ``⑴``, vulgar fractions ``½`` (its NFKC form
is ``1``, FRACTION SLASH, ``2``).
We therefore mask a character when it is a digit, decimal or numeric itself, or when its NFKC
form contains one. ``isnumeric`` also catches CJK and Roman numerals; masking them is the price
of failing closed.
"""

from __future__ import annotations

import base64
import collections
import errno
import functools
import hashlib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, MutableMapping
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from structlog.typing import WrappedLogger

from service.formats import CALL_SID, transit_version

# Shapes only: this module stays pure functions and constants, importing no service code
# that does anything.
from service.logs.templates import KNOWN_TEMPLATES, SPEC, Arg, TemplateEvent

__all__ = [
    "ALLOWED_FIELDS",
    "FAILURE_EVENT",
    "KNOWN_ROUTES",
    "MASK",
    "MASK_ON_MISMATCH",
    "REDACTED",
    "SENSITIVE_STEMS",
    "TRANSIT_KEY_TYPES",
    "TRUNCATED",
    "TYPED_FIELDS",
    "EventDict",
    "Scrubbed",
    "Scrubber",
    "Validator",
    "ciphertext_fields",
    "fingerprint",
    "is_digit_like",
    "is_sensitive_key",
    "mask_digits",
    "normalise_key",
]

EventDict: TypeAlias = MutableMapping[str, Any]
"""structlog's event dictionary, as processors receive and return it."""

Validator: TypeAlias = Callable[[object], bool]
"""Decides whether a value under an allow-listed key may be logged verbatim."""

Scrubbed: TypeAlias = "str | int | float | bool | dict[str, Scrubbed] | list[Scrubbed] | None"
"""What the scrubber returns: only JSON-native types, so renderers never call ``repr``."""

MASK: Final = "*"
REDACTED: Final = "*REDACTED*"
TRUNCATED: Final = "*TRUNCATED*"
_CONTROL: Final = "?"

FAILURE_EVENT: Final[Mapping[str, str]] = MappingProxyType(
    {"event": "log scrubber failure", "level": "error"}
)

# Matched as substrings of the normalised key, so ``card_last4``, ``cardLast4`` and
# ``X-Twilio-Signature`` are all caught. This also redacts innocent keys such as ``format``
# or ``mapping``; a redacted harmless value costs nothing, a missed PIN costs everything.
# ``input``/``payload``: Transit bodies carry digits as base64 (``batch_input``), which has no
# digit left for the masker to find.
SENSITIVE_STEMS: Final[frozenset[str]] = frozenset(
    {
        "digit", "pin", "card", "last4", "cvv", "cvc", "speech", "plaintext",
        "body", "form", "query", "token", "secret", "auth", "password", "passwd",
        "credential", "cookie", "header", "signature", "apikey", "privatekey",
        "input", "payload",
    }
)  # fmt: skip

# The exact shape TimeStamper(fmt="iso", utc=True) produces; nothing else passes.
_TIMESTAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z"
)
_LOGGER_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_CT_FP: Final = re.compile(r"[a-p]{10}")
_LEVELS: Final = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception"})
_FP_ALPHABET: Final = "abcdefghijklmnop"


def _is_http_status(value: object) -> bool:
    return type(value) is int and 100 <= value <= 599


# The route templates this service serves (webhook and backend). An access line's ``path`` or
# ``route`` that equals one is logged verbatim, so ``/v1/lookup`` stays readable; anything else
# (scanners, typos, a digit typed into a URL) is digit-masked like any other value.
# tests/integration/calls/test_log_leaks.py checks that every route of both apps is listed here.
KNOWN_ROUTES: Final[frozenset[str]] = frozenset(
    {
        "/voice", "/voice/language", "/voice/account", "/voice/card", "/voice/pin",
        "/v1/lookup", "/openapi.json",
        "/healthz", "/readyz", "/metrics",
    }
)  # fmt: skip


def _is_known_route(value: object) -> bool:
    return type(value) is str and value in KNOWN_ROUTES


def _is_attempt(value: object) -> bool:
    # Retry counters are one or two digits (the webhook refuses longer ones); never PIN-shaped.
    return type(value) is int and 0 < value < 100


def _is_key_version(value: object) -> bool:
    # Below 1000 (monthly rotation lasts 80 years): a four-digit "version" is shaped like a PIN.
    return type(value) is int and 0 < value < 1_000


def _is_duration(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0  # type: ignore[arg-type,operator]


def _matches(pattern: re.Pattern[str], *, max_len: int = 128) -> Validator:
    # ``type(...) is str`` rather than isinstance: a str subclass can override __str__/__iter__.
    def check(value: object) -> bool:
        return type(value) is str and len(value) <= max_len and pattern.fullmatch(value) is not None

    return check


def _whole(low: int, high: int) -> Validator:
    """An ``int`` (exactly: not a bool, not a str) from ``low`` to ``high``."""

    def check(value: object) -> bool:
        return type(value) is int and low <= value <= high

    return check


def _real(low: float, high: float) -> Validator:
    """An ``int`` or ``float`` (not a bool, not a str, not a Decimal), finite, in range."""

    def check(value: object) -> bool:
        return (
            type(value) in (int, float)
            and math.isfinite(value)  # type: ignore[arg-type]
            and low <= value <= high  # type: ignore[operator]
        )

    return check


def _one_of(values: frozenset[str]) -> Validator:
    def check(value: object) -> bool:
        return type(value) is str and value in values

    return check


# Transit's key types (OpenBao 2.x, transit/keys/:name "type"): a closed set.
TRANSIT_KEY_TYPES: Final[frozenset[str]] = frozenset({
    "aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305", "ed25519",
    "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "hmac",
    "aes128-cmac", "aes256-cmac", "managed_key",
})  # fmt: skip

# Linux's PID_MAX_LIMIT on 64-bit (2^22): no process ID is larger.
PID_MAX: Final = 4_194_304
_is_port = _whole(1, 65_535)
_is_pid = _whole(1, PID_MAX)

# Our own numeric and enumerated fields. Why none of them can carry a caller's digits: the
# webhook takes a caller's entry as a ``str`` (4 ASCII digits, checked as text) and never
# converts it to a number, and from there on only its ciphertext moves; every field below
# is filled by our code from something else (Vault's answer, len(), os.getpid(), a
# configured port), and only an ``int``/``float`` of exactly that type passes (a ``str``
# holding the same digits, a bool, a Decimal does not: it is masked, like any value of an
# unlisted key). The bounds keep each field to what it can mean:
TYPED_FIELDS: Final[Mapping[str, Validator]] = MappingProxyType({
    # A token's TTL in seconds, from Vault's login answer: 0 (never expires) to a year
    # (Vault's own ceiling, max_lease_ttl, defaults to 32 days).
    "ttl_s": _real(0, 366 * 86_400),
    # How long something of ours took, in seconds (Vault's init: about 2 s): under a day.
    "seconds": _real(0, 86_400),
    # Counts of our own objects (keys and AppRoles bootstrapped, secret-ids destroyed at
    # one start: a handful). Below 1000, like key_version: a four-digit count would be
    # shaped like a PIN, and none of these gets near it.
    "keys": _whole(0, 999),
    "roles": _whole(0, 999),
    "destroyed": _whole(0, 999),
    # Sizes of files we wrote (a backup's parts), from len(): up to 1 TiB.
    "snapshot_bytes": _whole(0, 1 << 40),
    "store_bytes": _whole(0, 1 << 40),
    # A listener's port (from our settings) and a process ID (os.getpid()); a four-digit
    # value is possible, so the type is the guarantee: both are ints from our code.
    "port": _is_port,
    "pid": _is_pid,
    # More spellings of a Transit key version; the same bound as key_version.
    "card_version": _is_key_version,
    "latest_version": _is_key_version,
    "min_decryption_version": _is_key_version,
    # A Transit key's type: one of a closed set of names.
    "type": _one_of(TRANSIT_KEY_TYPES),
})  # fmt: skip

# Read-only: widening the allow-list must be a code change, not a runtime assignment.
ALLOWED_FIELDS: Final[Mapping[str, Validator]] = MappingProxyType(
    {
        "call_sid": _matches(CALL_SID),
        "status_code": _is_http_status,
        "status": _is_http_status,
        "backend_status": _is_http_status,
        "attempt": _is_attempt,
        "route": _is_known_route,
        "path": _is_known_route,
        "key_version": _is_key_version,
        "duration_ms": _is_duration,
        "ct_fp": _matches(_CT_FP),
        "timestamp": _matches(_TIMESTAMP),
        "level": lambda v: type(v) is str and v in _LEVELS,
        "logger": _matches(_LOGGER_NAME),
        **TYPED_FIELDS,
    }
)

# Allow-listed keys whose non-matching values are digit-masked rather than redacted: an unknown
# path is still worth reading ("/nowhere/**"), and masking is what an unlisted key gets anyway.
# The typed fields too: their names are common words (``type``, ``keys``), and a value that
# is not the number or name expected (a "4321" string) is treated as if the key were unlisted.
MASK_ON_MISMATCH: Final[frozenset[str]] = frozenset({"route", "path", *TYPED_FIELDS})

# Digits become MASK; C0 controls (except tab and newline) and DEL become "?" so that neither a
# terminal nor a JSON escape (``\u001b``) puts characters into the raw line that we did not choose.
_ASCII_TABLE: Final[Mapping[int, str]] = {
    **{c: _CONTROL for c in range(32) if chr(c) not in "\t\n"},
    127: _CONTROL,
    **{ord(d): MASK for d in "0123456789"},
}


@functools.lru_cache(maxsize=8192)
def is_digit_like(ch: str) -> bool:
    """True if *ch* (one character) reads as a digit, itself or after NFKC."""
    if ch.isdigit() or ch.isdecimal() or ch.isnumeric():
        return True
    return any(c.isdigit() or c.isnumeric() for c in unicodedata.normalize("NFKC", ch))


def _mask_char(ch: str) -> str:
    if is_digit_like(ch):
        return MASK
    # Lone surrogates (Cs) cannot be encoded to UTF-8 and would make the handler fail.
    if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n":
        return _CONTROL
    return ch


# Defence in depth (docs/security.md, "smaller items"; no path emits them today): a digit run
# spelled in base64
# (``MTIzNA==`` is ``1234``, ``NDMyMQ`` unpadded or URL-safe) has no digit left for the
# masker to find, so a whole base64-looking token of up to 28 characters (19 digits) that
# decodes to 2 or more ASCII digits is masked whole. Hex needs nothing: each ASCII digit is
# ``30``-``39``, all digits, masked as they are. A digit byte's top six bits make the
# token's first character M, N or O: text without one is skipped. (Measured on seven
# typical access-line strings, the best of 7 runs: the pass on every string cost 67 µs
# against 40 without; with this skip 8.6 µs against 10.4, within this machine's noise.)
_BASE64_TOKEN: Final = re.compile(
    r"(?<![A-Za-z0-9+/_-])[MNO][A-Za-z0-9+/_-]{2,27}={0,2}"
    r"(?![A-Za-z0-9+/_=-])"
)


def _masked_if_digits(match: re.Match[str]) -> str:
    token = match[0]
    body = token.rstrip("=").replace("-", "+").replace("_", "/")
    if len(body) % 4 == 1:
        return token
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except ValueError:  # binascii.Error is one
        return token
    return MASK * len(token) if len(raw) >= 2 and raw.isdigit() else token


def mask_digits(text: str) -> str:
    """Replace every digit-like character in *text* with ``*`` (and control chars with ``?``),
    and every base64 spelling of a short digit run with as many ``*``."""
    if "M" in text or "N" in text or "O" in text:
        text = _BASE64_TOKEN.sub(_masked_if_digits, text)
    if text.isascii():
        return text.translate(_ASCII_TABLE)
    return "".join(_mask_char(ch) for ch in text)


def normalise_key(key: str) -> str:
    """NFKC, case-fold and drop non-alphanumerics: ``Card-Last4`` -> ``cardlast4``."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", key).casefold() if ch.isalnum())


def is_sensitive_key(key: str, stems: frozenset[str] = SENSITIVE_STEMS) -> bool:
    """True if the normalised *key* contains any of *stems*."""
    return _is_sensitive_key(str.__str__(key), stems)


# Keys are a small vocabulary (field names), looked up on every line: normalising each one
# afresh was a third of the scrubber's time on an access line. Same answer, remembered.
@functools.lru_cache(maxsize=4096)
def _is_sensitive_key(key: str, stems: frozenset[str]) -> bool:
    norm = normalise_key(key)
    return any(stem in norm for stem in stems)


_HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "LIST"})
# A Vault API path as our code builds it: /v1/ and names (mounts, keys, roles). Digits only
# in runs of at most three ("v1", a key version below 1000, like key_version's bound): a
# run of four could be shaped like a PIN, and is masked with the rest of the path.
_API_PATH: Final = re.compile(r"/v1(/[A-Za-z0-9_.\-]+)*/?")
_FOUR_DIGITS: Final = re.compile(r"[0-9]{4}")


def _is_api_path(path: str) -> bool:
    return _API_PATH.fullmatch(path) is not None and _FOUR_DIGITS.search(path) is None


def fingerprint(ciphertext: str) -> str:
    """A short, digit-free, non-reversible fingerprint of a ciphertext (10 letters a-p).

    Hex would contain digits, which the scrubber masks; letters survive and are validated by
    the ``ct_fp`` allow-list entry instead.
    """
    digest = hashlib.sha256(ciphertext.encode("utf-8", "surrogatepass")).digest()
    return "".join(_FP_ALPHABET[b >> 4] + _FP_ALPHABET[b & 0x0F] for b in digest[:5])


def ciphertext_fields(ciphertext: str) -> dict[str, object]:
    """Log fields describing a Transit ciphertext: ``ct_fp`` and, if parseable, ``key_version``."""
    fields: dict[str, object] = {"ct_fp": fingerprint(ciphertext)}
    version = transit_version(ciphertext)
    if _is_key_version(version):  # a version the scrubber would redact is left out
        fields["key_version"] = version
    return fields


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _number_text(value: int | float | complex | Decimal | Fraction) -> str:
    try:
        return str(value)
    except ValueError:  # int too large for str() (sys.int_info.str_digits_check_threshold)
        return TRUNCATED


class Scrubber:
    """structlog processor that rewrites an event dict so that no caller digit survives.

    Place it after every processor that renders (``format_exc_info``, ``StackInfoRenderer``,
    ``PositionalArgumentsFormatter``) and immediately before the final renderer.
    """

    def __init__(
        self,
        *,
        allowed: Mapping[str, Validator] = ALLOWED_FIELDS,
        sensitive_stems: frozenset[str] = SENSITIVE_STEMS,
        templates: Mapping[tuple[str, str], tuple[Arg, ...]] = KNOWN_TEMPLATES,
        listen_hosts: frozenset[str] = frozenset(),
        max_depth: int = 8,
        max_items: int = 256,
        max_chars: int = 16_384,
    ) -> None:
        self._allowed = dict(allowed)
        self._stems = frozenset(sensitive_stems)
        self._templates = dict(templates)
        # Only IP literals: a name is shown masked like any other text (it rarely has a
        # digit), and a literal always has a dot or a colon, which no keypad entry has.
        self._listen_hosts = frozenset(h for h in listen_hosts if _is_ip_literal(h))
        self._max_depth = max_depth
        self._max_items = max_items
        self._max_chars = max_chars
        # Per key: its validator, whether it is sensitive, and the key as written. Keys are
        # a small vocabulary (field names); masking each key afresh on every line was half
        # of scrub_mapping's time on an access line (cProfile, 16 keys). Same answer,
        # remembered; bounded like _is_sensitive_key's cache.
        self._keys: dict[str, tuple[Validator | None, bool, str]] = {}

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        try:
            if not isinstance(event_dict, Mapping):
                raise TypeError("scrubber needs an event dict; is a renderer placed before it?")
            return self.scrub_mapping(event_dict, 0)
        except Exception:
            # Fail closed: never fall back to the unscrubbed record, nor to its exception.
            return dict(FAILURE_EVENT)

    def scrub_text(self, text: str) -> str:
        """Mask *text*, cutting it to ``max_chars`` (masking is per character, so order is moot)."""
        text = str.__str__(text)
        if len(text) > self._max_chars:
            return mask_digits(text[: self._max_chars]) + TRUNCATED
        return mask_digits(text)

    def scrub_mapping(self, mapping: Mapping[Any, Any], depth: int) -> dict[str, Scrubbed]:
        """Scrub keys and values of *mapping*; allow-listed keys keep a value that validates."""
        out: dict[str, Scrubbed] = {}
        for index, (key, value) in enumerate(mapping.items()):
            if index >= self._max_items:
                out[TRUNCATED] = TRUNCATED
                break
            raw_key = str.__str__(key) if isinstance(key, str) else repr(key)
            validator, sensitive, new_key = self._key(raw_key)
            if validator is not None:
                if validator(value):
                    new_value: Scrubbed = value
                elif raw_key in MASK_ON_MISMATCH:
                    new_value = self.scrub_value(value, depth + 1)
                else:
                    new_value = REDACTED
            elif sensitive:
                new_value = REDACTED
            else:
                new_value = self.scrub_value(value, depth + 1)
            # Masking can merge keys ("a1", "a2" -> "a*"); keep both values rather than lose one.
            while new_key in out:
                new_key += "_"
            out[new_key] = new_value
        return out

    def _key(self, raw_key: str) -> tuple[Validator | None, bool, str]:
        known = self._keys.get(raw_key)
        if known is None:
            known = (
                self._allowed.get(raw_key),
                is_sensitive_key(raw_key, self._stems),
                self.scrub_text(raw_key),
            )
            if len(self._keys) < 4096:
                self._keys[raw_key] = known
        return known

    def scrub_value(self, value: object, depth: int = 0) -> Scrubbed:
        """Return a JSON-native, digit-free rendering of any *value*."""
        if depth > self._max_depth:
            return TRUNCATED
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value[: self._max_chars * 4])
            return self.scrub_text(raw.decode("utf-8", errors="replace"))
        if isinstance(value, int | float | complex | Decimal | Fraction):
            return mask_digits(_number_text(value))
        if isinstance(value, BaseException):
            return self.scrub_text(f"{type(value).__name__}: {value}")
        if type(value) is TemplateEvent:
            return self.render_template(value)
        if isinstance(value, Mapping):
            return self.scrub_mapping(value, depth)
        if isinstance(value, list | tuple | collections.deque):
            return self._scrub_items(value, depth)
        if isinstance(value, set | frozenset):
            return sorted(self._scrub_items(value, depth), key=repr)
        return self.scrub_text(repr(value))

    def render_template(self, event: TemplateEvent) -> str:
        """A foreign record's message, rendered one conversion at a time: an argument is
        shown as formatted when ``(logger, msg)`` is a known template and the argument
        passes the check of what the template says it is; everything else is masked. A
        conversion that cannot format its argument raises (the scrubber fails closed)."""
        kinds = self._templates.get((event.logger, event.msg))
        if kinds is None or len(kinds) != len(event.args):
            return self.scrub_text(event.msg % event.args)
        pieces: list[str] = []
        args = iter(zip(event.args, kinds, strict=True))
        position = 0
        for spec in SPEC.finditer(event.msg):
            pieces.append(mask_digits(event.msg[position : spec.start()]))
            position = spec.end()
            if spec.group() == "%%":
                pieces.append("%")
                continue
            arg, kind = next(args)
            text = spec.group() % (arg,)
            if kind is Arg.REQUEST_PATH and type(arg) is str:
                path, mark, query = text.partition("?")
                pieces.append(
                    (path if _is_api_path(path) else mask_digits(path)) + mask_digits(mark + query)
                )
                continue
            pieces.append(text if self._shows(kind, arg) else mask_digits(text))
        pieces.append(mask_digits(event.msg[position:]))
        if next(args, None) is not None:
            raise TypeError("not all arguments converted")
        text = "".join(pieces)
        return text if len(text) <= self._max_chars else text[: self._max_chars] + TRUNCATED

    def _shows(self, kind: Arg, value: object) -> bool:
        if kind is Arg.PORT:
            return _is_port(value)
        if kind is Arg.PID:
            return _is_pid(value)
        if kind is Arg.SCHEME:
            return type(value) is str and value in ("http", "https")
        if kind is Arg.LISTEN_HOST:
            return type(value) is str and value in self._listen_hosts
        if kind is Arg.ERRNO:
            return type(value) is int and value in errno.errorcode
        if kind is Arg.METHOD:
            return type(value) is str and value in _HTTP_METHODS
        if kind is Arg.HTTP_VERSION:
            return type(value) is str and value in ("HTTP/1.0", "HTTP/1.1", "HTTP/2")
        if kind is Arg.STATUS:
            return _is_http_status(value)
        return False

    def _scrub_items(self, items: Any, depth: int) -> list[Scrubbed]:
        out: list[Scrubbed] = []
        for index, item in enumerate(items):
            if index >= self._max_items:
                out.append(TRUNCATED)
                break
            out.append(self.scrub_value(item, depth + 1))
        return out
