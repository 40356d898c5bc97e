"""The service's exceptions, and nothing else.

Foreign exceptions (hvac, requests, httpx, sqlite3) are translated into these at the
boundary where they arise, so callers handle one tree::

    IvrVaultError
    ├── ConfigError                  a setting is missing or invalid (names it, never its value)
    ├── VaultError                   anything that went wrong talking to Vault
    │   ├── VaultUnavailable         refused, reset, sealed, 5xx
    │   │   └── VaultTimeout         no answer within the timeout
    │   ├── VaultAuthError           AppRole login refused, token expired and re-login failed
    │   ├── VaultPermissionDenied    403: the policy does not allow it (fail closed, no retry)
    │   ├── VaultNotFound            404: no such key, mount or role
    │   └── VaultRequestError        400: Vault refused the request itself
    ├── DecryptionError              one opaque error for every failed decryption
    ├── InputError                   caller or client input that cannot be accepted
    └── BackendError                 the account backend could not answer
        ├── BackendUnavailable       refused, timed out, 5xx
        └── BackendRejected          401/422 etc.: a bug or misconfiguration, not the caller's fault
"""

from __future__ import annotations


class IvrVaultError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(IvrVaultError):
    """A setting is missing or invalid. The message names the setting, never its value."""


class VaultError(IvrVaultError):
    """Talking to Vault failed. ``kind`` is a short label safe for logs and metrics."""

    kind = "vault"


class VaultUnavailable(VaultError):
    kind = "unavailable"


class VaultTimeout(VaultUnavailable):
    kind = "timeout"


class VaultAuthError(VaultError):
    kind = "auth"


class VaultPermissionDenied(VaultError):
    kind = "forbidden"


class VaultNotFound(VaultError):
    kind = "not_found"


class VaultRequestError(VaultError):
    kind = "bad_request"


class DecryptionError(IvrVaultError):
    """A ciphertext could not be decrypted: tampered, truncated, wrong context, retired
    version or not a ciphertext at all. Deliberately says nothing about which."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class InputError(IvrVaultError):
    """Input that cannot be accepted. The message describes the field, never the value."""


class TwilioApiError(IvrVaultError):
    """Twilio's REST API refused a request or could not be reached (operator CLI)."""


class BackendError(IvrVaultError):
    kind = "backend"


class BackendUnavailable(BackendError):
    kind = "backend_unavailable"


class BackendRejected(BackendError):
    kind = "backend_rejected"
