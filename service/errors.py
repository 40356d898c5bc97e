"""The service's exceptions, and nothing else.

Foreign exceptions (hvac, requests, httpx, sqlite3, psycopg, twilio) are translated into these
at the boundary where they arise, so callers handle one tree::

    IvrVaultError
    ├── ConfigError                  a setting is missing or invalid (names it, never its value)
    ├── BadInput                     an operator's input (a prompt, stdin, a flag) is not acceptable
    ├── VaultError                   anything that went wrong talking to Vault
    │   ├── VaultUnavailable         refused, reset, sealed, 5xx
    │   │   ├── VaultTimeout         no answer within the timeout
    │   │   └── VaultSealed          sealed or uninitialised, and the keys at hand do not open it
    │   ├── VaultAuthError           AppRole login refused, no credentials, re-login failed
    │   ├── VaultPermissionDenied    403: the policy does not allow it (fail closed, no retry)
    │   ├── VaultNotFound            404: no such key, mount or role
    │   └── VaultRequestError        400: Vault refused the request (or an item of a batch)
    ├── LookupKeyMismatch            the store's ivr-lookup canary: this Vault cannot reproduce it
    ├── StoreError                   the account store failed (named without its password)
    │   ├── StoreUnavailable         PostgreSQL refused, unreachable, the connection lost
    │   ├── StoreConflict            a write would break a unique key (an account with this card)
    │   └── StoreSchemaMismatch      the schema is not this release's: run `ivr-vault store migrate`
    ├── BackendUnavailable           the webhook got no answer from the backend (refused, timed out)
    ├── ServiceNotReady              a process make run started will not become ready (PID, port)
    ├── ItemFailed                   Transit refused one item of a batch encrypt
    ├── DecryptionError              one opaque error for every failed decryption
    ├── CoalescerError               the batching machinery broke its contract
    │   └── CoalescerClosed          work submitted after shutdown began
    ├── WebhookRefused               not a genuine Twilio webhook (answered 4xx, empty body)
    ├── SchemaError                  a backend request body that does not fit the schema
    ├── EnrolmentRefused             `accounts add` refuses a weak PIN (names the rule only)
    ├── RetireRefused                retiring a key version would break a call or stored data
    ├── LegacyFormatError            the tutorial's key or ciphertext is malformed
    ├── LegacyImportError            the tutorial key cannot be imported (name taken)
    └── TwilioApiError               Twilio's REST API refused or could not be reached

No message in this tree quotes a caller's input, a key or a secret: each says what was
wrong with which field, setting or operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class IvrVaultError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(IvrVaultError):
    """A setting is missing or invalid. The message names the setting, never its value."""


class BadInput(IvrVaultError):
    """What an operator typed or piped in is not acceptable (``ivr-vault: bad input: …``,
    exit status 2). The message says what was expected, never what was given."""


class VaultError(IvrVaultError):
    """Talking to Vault failed. ``kind`` is a short label safe for logs and metrics.
    ``addr`` (the node asked) and ``status`` (its HTTP status, when it answered) are the
    facts an operator needs first; the message ends with them: ``rotate key: permission
    denied (HTTP 403 from http://127.0.0.1:8200)``, ``token lookup: cannot reach Vault
    (http://127.0.0.1:8200)``."""

    kind = "vault"

    def __init__(self, message: str, *, addr: str | None = None, status: int | None = None) -> None:
        self.addr, self.status = addr, status
        where = " from " if status is not None and addr else ""
        fact = (f"HTTP {status}" if status is not None else "") + where + (addr or "")
        super().__init__(f"{message} ({fact})" if fact else message)


class VaultUnavailable(VaultError):
    kind = "unavailable"


class VaultTimeout(VaultUnavailable):
    kind = "timeout"


class VaultSealed(VaultUnavailable):
    kind = "sealed"


class VaultAuthError(VaultError):
    kind = "auth"


class VaultPermissionDenied(VaultError):
    kind = "forbidden"


class VaultNotFound(VaultError):
    kind = "not_found"


class VaultRequestError(VaultError):
    """Vault answered 400. ``response_json`` is its body when it had one: a batch call
    that failed because one item failed still carries every item's result there."""

    kind = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        response_json: Mapping[str, Any] | None = None,
        addr: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, addr=addr, status=status)
        self.response_json = response_json


class LookupKeyMismatch(IvrVaultError):
    """The connected Vault cannot reproduce the account store's canary under an
    ``ivr-lookup`` version the store's verifiers use: it is not the Vault (or not the
    data) that made them, and every lookup would answer "not found". The message says
    which versions, and the way out; it holds no key material."""


class StoreError(IvrVaultError):
    """The account store failed. Messages name the store by its display URL (no password,
    no query) and the operation, never a row's values: a unique-key error from the
    database quotes the key, here it does not."""


class StoreUnavailable(StoreError):
    """The store could not be reached or the connection was lost: nothing was decided, or
    what was decided did not commit (a lookup answers 503, like an unavailable Vault)."""


class StoreConflict(StoreError):
    """A write would break a unique key (an account whose card verifier another account
    already has)."""


class StoreSchemaMismatch(StoreError):
    """The store's schema version is not the one this release runs on: behind (run
    ``ivr-vault store migrate``) or ahead (a newer release migrated it)."""


class BackendUnavailable(IvrVaultError):
    """The webhook's call to the backend got no answer: refused, reset or timed out. The
    message names the operation and the exception type, nothing sent or received."""


class ServiceNotReady(IvrVaultError):
    """A process that ``make run``, ``make run-ha`` or the tests started will not become
    ready by waiting (its ``ivr-lookup`` check failed, it exited, it never answered). The
    message names it (its PID, its URL and so its port) and its log file."""


class ItemFailed(IvrVaultError):
    """One batch item was refused by Transit (bad ciphertext, wrong context...)."""


class DecryptionError(IvrVaultError):
    """A ciphertext could not be decrypted: tampered, truncated, wrong context, retired
    version or not a ciphertext at all. Deliberately says nothing about which."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class CoalescerError(IvrVaultError):
    """The coalescer itself failed (e.g. the batch sender broke its contract)."""


class CoalescerClosed(CoalescerError):
    """``submit`` was called after ``aclose``."""


class WebhookRefused(IvrVaultError):
    """The request is not a genuine Twilio webhook; answer ``status`` with an empty body.
    ``reason`` is a short fixed phrase (``signature``, ``content type``), never input."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SchemaError(IvrVaultError):
    """A lookup request that does not fit the schema. ``problems`` name each field and
    rule (``{"loc": "body.pin", "msg": "required"}``) and never echo a submitted value."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("invalid request")
        self.problems = problems


class EnrolmentRefused(IvrVaultError):
    """An account cannot be enrolled as given (a weak PIN). The message names the rule that
    refused it, never the digits."""


class RetireRefused(IvrVaultError):
    """Retiring would break a live call or stored data. The message says which and why."""


class LegacyFormatError(IvrVaultError):
    """Input in the tutorial's formats (or the wrapping key) is not acceptable.

    The message gives a reason that does not depend on the input; it never quotes it.
    """


class LegacyImportError(IvrVaultError):
    """The import cannot go ahead (e.g. a Transit key of that name already exists)."""


class TwilioApiError(IvrVaultError):
    """Twilio's REST API refused a request or could not be reached (operator CLI)."""
