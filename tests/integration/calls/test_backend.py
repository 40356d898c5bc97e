"""The backend API: bearer token (401), a schema enforced with precise 422s that never
echo a value, an OpenAPI document at /openapi.json, and schemathesis fuzzing that
document against the running backend (session stack, real Vault): no 5xx, no crash,
every answer as documented.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.devtools.caller import new_call_sid
from tests.support.stack import Stack

MARKER = "s3cr3tMARKER"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.backend.url,
        timeout=10,
        headers={"Authorization": f"Bearer {stack.backend_token}"},
    ) as client:
        yield client


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{stack.backend.url}/openapi.json")
    schema.config.update(base_url=stack.backend.url)
    return schema


# schemathesis' own pytest plugin (``from_fixture``) does not run under pytest 9, so the
# operation's Hypothesis strategy drives a plain @given loop: same generation, same checks.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_the_openapi_document(
    api_schema: schemathesis.BaseSchema, stack: Stack, mode: GenerationMode
) -> None:
    operation = api_schema["/v1/lookup"]["POST"]
    auth = {"Authorization": f"Bearer {stack.backend_token}"}
    seen: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def fuzz(case: schemathesis.Case[Any]) -> None:
        if mode == GenerationMode.POSITIVE and isinstance(case.body, dict):
            # A random issue time is a stale step (410) before anything else is looked
            # at: now, so that the fuzzing reaches the decryption and the decision.
            case.body["issued"] = str(int(time.time()))
        response = case.call_and_validate(
            headers=auth,
            timeout=10,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )
        seen.add(response.status_code)

    fuzz()
    # Every answer was a documented 4xx (or a 200 for a lucky valid pair): never a 5xx.
    assert seen and max(seen) < 500, seen
    assert seen <= {200, 401, 404, 410, 413, 415, 422, 423}, seen


def test_the_backend_survived_the_fuzzing(stack: Stack, api: httpx.Client) -> None:
    assert stack.backend.process is not None and stack.backend.process.poll() is None
    assert "Traceback" not in stack.backend.stderr_path.read_text(errors="replace")
    assert api.get("/healthz").status_code == 200


def test_openapi_document(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    lookup = document["paths"]["/v1/lookup"]["post"]
    assert {"200", "401", "404", "422", "423", "503"} <= set(lookup["responses"])
    assert document["security"] == [{"bearer": []}]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer wrong-token",
        "Token {token}",
        "Bearer {token}x",
        "Bearer {short}",
        "bearer{token}",
    ],
)
def test_bearer_token_required(stack: Stack, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            token=stack.backend_token, short=stack.backend_token[:-1]
        )
    response = httpx.post(
        f"{stack.backend.url}/v1/lookup", headers=headers, timeout=10, content=b"{}"
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content == b""


def test_auth_is_checked_before_the_body(stack: Stack) -> None:
    """An unauthenticated caller learns nothing about the schema."""
    response = httpx.post(
        f"{stack.backend.url}/v1/lookup",
        content=b"not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (b"not json", [{"loc": "body", "msg": "not valid JSON"}]),
        (b"[]", [{"loc": "body", "msg": "expected a JSON object"}]),
        (b"\xff\xfe", [{"loc": "body", "msg": "not valid JSON"}]),
        # Past ~1,000 levels json's decoder raises RecursionError: that was a 500.
        (b"[" * 8000 + b"]" * 8000, [{"loc": "body", "msg": "nested too deeply"}]),
        (b'{"a":' * 2500 + b"1" + b"}" * 2500, [{"loc": "body", "msg": "nested too deeply"}]),
    ],
)
def test_malformed_bodies(api: httpx.Client, body: bytes, problems: list[dict[str, str]]) -> None:
    response = api.post("/v1/lookup", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"detail": problems}


def test_422_names_fields_and_never_echoes_values(api: httpx.Client) -> None:
    body = {
        "call_sid": f"CA{MARKER}",
        "card_last4": f"vault:v1:{MARKER}!",
        "pin": 1234,
        MARKER: MARKER,
    }
    response = api.post("/v1/lookup", json=body)
    assert response.status_code == 422
    assert MARKER not in response.text and "1234" not in response.text
    by_loc = {p["loc"]: p["msg"] for p in response.json()["detail"]}
    assert set(by_loc) == {
        "body",
        "body.call_sid",
        "body.card_last4",
        "body.pin",
        "body.caller",
        "body.issued",
    }
    assert by_loc["body"] == (
        "unexpected field; allowed: call_sid, card_last4, pin, caller, "
        "issued, account_number, stir_verstat, registered"
    )
    assert by_loc["body.pin"] == "must be a string"
    assert by_loc["body.call_sid"].startswith("must match ")


def test_missing_fields(api: httpx.Client) -> None:
    response = api.post("/v1/lookup", json={})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": f"body.{name}", "msg": "required"}
        for name in ("call_sid", "card_last4", "pin", "caller", "issued")
    ]


def test_wrong_content_type(api: httpx.Client) -> None:
    response = api.post("/v1/lookup", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_well_formed_but_undecryptable(api: httpx.Client) -> None:
    body = {
        "call_sid": new_call_sid(),
        "card_last4": "vault:v1:" + "A" * 40,
        "pin": "vault:v1:" + "B" * 40,
        "caller": "vault:v1:" + "C" * 40,
        "issued": str(int(time.time())),
    }
    response = api.post("/v1/lookup", json=body)
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "ciphertext could not be decrypted for this call"},
    )
    assert "A" * 40 not in response.text


def test_body_limit(api: httpx.Client) -> None:
    response = api.post(
        "/v1/lookup",
        content=b"{" + b" " * 20_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    assert api.get("/v1/lookup").status_code == 405
    assert api.post("/v1/other", json={}).status_code == 404
    assert json.loads(api.get("/healthz").text) == {"status": "ok"}
