"""The backend's request schema, enforced by hand, and its OpenAPI document.

Error messages name the field and the rule; they never echo a submitted value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from service.errors import SchemaError
from service.formats import CALL_SID_PATTERN, CIPHERTEXT_PATTERN
from service.step_time import ISSUED_PATTERN

_MAX_CIPHERTEXT = 512

# ``caller``: Twilio's ``From``, as the webhook encrypted it (context ``CallSid:caller``).
# ``issued``: the PIN step's signed issue time, Unix seconds (service/step_time.py).
FIELDS: dict[str, str] = {
    "call_sid": CALL_SID_PATTERN,
    "card_last4": CIPHERTEXT_PATTERN,
    "pin": CIPHERTEXT_PATTERN,
    "caller": CIPHERTEXT_PATTERN,
    "issued": ISSUED_PATTERN,
}
# Identification (docs/security.md, identification), at most one of the first two: the typed
# account number,
# encrypted (context ``CallSid:account_number``), or ``registered``: the caller pressed the
# registered-phone key. Neither: the card-only lookup of migrated accounts.
# ``stir_verstat``: Twilio's signed ``StirVerstat`` (CALLER_ID_REQUIRES_ATTESTATION).
STIR_VERSTAT_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
OPTIONAL: dict[str, str] = {
    "account_number": CIPHERTEXT_PATTERN,
    "stir_verstat": STIR_VERSTAT_PATTERN,
}
ALLOWED = (*FIELDS, *OPTIONAL, "registered")


@dataclass(frozen=True)
class LookupRequest:
    call_sid: str
    card_last4: str
    pin: str
    caller: str
    issued: str
    account_number: str | None = None
    registered: bool = False
    stir_verstat: str | None = None


def _check(name: str, value: object, pattern: str) -> list[dict[str, str]]:
    if not isinstance(value, str):
        return [{"loc": f"body.{name}", "msg": "must be a string"}]
    if len(value) > _MAX_CIPHERTEXT or not re.fullmatch(pattern, value):
        return [{"loc": f"body.{name}", "msg": f"must match {pattern}"}]
    return []


def parse_lookup(body: bytes) -> LookupRequest:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SchemaError([{"loc": "body", "msg": "not valid JSON"}]) from None
    except RecursionError:
        # json's C decoder raises this past ~1,000 nested arrays or objects (a 16 KB body
        # holds 16,000): the request is malformed, not the server broken.
        raise SchemaError([{"loc": "body", "msg": "nested too deeply"}]) from None
    if not isinstance(data, dict):
        raise SchemaError([{"loc": "body", "msg": "expected a JSON object"}])
    # An unknown field's name is caller data too (it could be digits): not echoed.
    problems = (
        [{"loc": "body", "msg": f"unexpected field; allowed: {', '.join(ALLOWED)}"}]
        if any(name not in ALLOWED for name in data)
        else []
    )
    for name, pattern in FIELDS.items():
        value = data.get(name)
        if value is None:
            problems.append({"loc": f"body.{name}", "msg": "required"})
        else:
            problems += _check(name, value, pattern)
    for name, pattern in OPTIONAL.items():
        if data.get(name) is not None:
            problems += _check(name, data[name], pattern)
    registered = data.get("registered", False)
    if not isinstance(registered, bool):
        problems.append({"loc": "body.registered", "msg": "must be a boolean"})
    elif registered and data.get("account_number") is not None:
        problems.append(
            {
                "loc": "body.registered",
                "msg": "not with account_number: one identification per lookup",
            }
        )
    if problems:
        raise SchemaError(problems)
    return LookupRequest(
        data["call_sid"],
        data["card_last4"],
        data["pin"],
        data["caller"],
        data["issued"],
        data.get("account_number"),
        registered,
        data.get("stir_verstat"),
    )


_ERROR = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "ivr-vault backend", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "LookupRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": list(FIELDS),
                "properties": {
                    **{
                        name: {"type": "string", "pattern": pattern, "maxLength": _MAX_CIPHERTEXT}
                        for name, pattern in (FIELDS | OPTIONAL).items()
                    },
                    "registered": {"type": "boolean", "default": False},
                },
            },
            "Account": {
                "type": "object",
                "required": ["account", "balance"],
                "properties": {"account": {"type": "string"}, "balance": {"type": "string"}},
            },
            "Error": _ERROR,
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/lookup": {
            "post": {
                "summary": "Find the account for a call's identification, card and PIN ciphertexts",
                "description": "One lookup per call: a retry with the same Idempotency-Key "
                "gets the first answer again; another key is refused (409).",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/LookupRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "found",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Account"}}
                        },
                    },
                    **{
                        code: {
                            "description": text,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}
                                }
                            },
                        }
                        for code, text in (
                            ("404", "no such account, wrong card or wrong PIN"),
                            ("409", "this call already had its lookup"),
                            ("410", "the PIN step is older than CALL_MAX_AGE (`issued`)"),
                            ("415", "not JSON"),
                            ("422", "malformed or undecryptable"),
                            ("423", "locked after repeated wrong entries"),
                            ("429", "too many failed lookups from this caller number"),
                            ("503", "Vault unavailable"),
                        )
                    },
                    "401": {"description": "missing or wrong bearer token"},
                    "413": {"description": "body too large"},
                },
            }
        }
    },
}
