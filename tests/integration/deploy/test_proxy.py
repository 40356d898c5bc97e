"""The webhook behind a real Caddy (proxy/Caddyfile) with an internal TLS certificate.

Twilio signs the https URL it called; the webhook sees plain http from the proxy and must
rebuild that URL from X-Forwarded-* (only from TRUSTED_PROXIES) or from PUBLIC_BASE_URL.
Each test signs a request as Twilio would, then changes one thing and expects 403.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.devtools.caller import Caller
from service.devtools.devstack import DevVault, free_port
from service.vault.bootstrap import RoleCredentials
from tests.support.attack import base_params, gather_action, signed_post, spoken, twiml
from tests.support.caddy import Proxied, proxied_stack
from tests.support.demo import FOUND
from tests.support.tools import require


@pytest.fixture(autouse=True, scope="module")
def _caddy_installed() -> None:
    require("caddy")


@pytest.fixture(scope="module")
def forwarded(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxied]:
    """No PUBLIC_BASE_URL: the URL comes from Caddy's X-Forwarded-*; Caddy is trusted."""
    yield from proxied_stack(
        dev_vault,
        credentials,
        tmp_path_factory.mktemp("proxy-fwd"),
        {"PUBLIC_BASE_URL": "", "TRUSTED_PROXIES": "127.0.0.1/32"},
        free_port(),
    )


@pytest.fixture(scope="module")
def fixed(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxied]:
    """A fixed PUBLIC_BASE_URL and no trusted proxy at all."""
    port = free_port()
    yield from proxied_stack(
        dev_vault,
        credentials,
        tmp_path_factory.mktemp("proxy-fixed"),
        {"PUBLIC_BASE_URL": f"https://localhost:{port}", "TRUSTED_PROXIES": ""},
        port,
    )


@pytest.mark.parametrize("setup", ["forwarded", "fixed"])
def test_a_whole_call_through_the_proxy(setup: str, request: pytest.FixtureRequest) -> None:
    proxied: Proxied = request.getfixturevalue(setup)
    with proxied.caddy.client() as client:
        heard: list[str] = []
        result = Caller(
            proxied.caddy.url, proxied.stack.twilio_token, client, say=heard.append
        ).play(["1234", "4321"])
    assert result.completed and set(result.statuses) == {200}
    assert heard[-1] == FOUND


def _card_step(proxied: Proxied, client: httpx.Client) -> tuple[str, list[tuple[str, str]]]:
    """Play up to the PIN prompt; return the signed-for URL of the PIN step and params."""
    params = base_params()
    url = f"{proxied.caddy.url}/voice/card?registered=1"
    token = proxied.stack.twilio_token
    root = twiml(signed_post(client, token, url, [*params, ("Digits", "1234")]))
    action = gather_action(root)
    assert action is not None and action.startswith("/voice/pin?card=vault%3Av")
    return proxied.caddy.url + action, params


@pytest.mark.parametrize("setup", ["forwarded", "fixed"])
def test_any_change_to_a_signed_request_is_refused(
    setup: str, request: pytest.FixtureRequest
) -> None:
    proxied: Proxied = request.getfixturevalue(setup)
    token = proxied.stack.twilio_token
    with proxied.caddy.client() as client:
        pin_url, params = _card_step(proxied, client)
        good = [*params, ("Digits", "4321")]
        other_host = pin_url.replace("https://localhost:", "https://127.0.0.1:")
        attempts = {
            "parameter": dict(url=pin_url, pairs=[*params, ("Digits", "4322")], sign_pairs=good),
            "added parameter": dict(url=pin_url, pairs=[*good, ("Extra", "1")], sign_pairs=good),
            "query string": dict(
                url=pin_url.replace("card=vault%3Av", "card=vault%3Aw"),
                pairs=good,
                sign_url=pin_url,
            ),
            "path": dict(
                url=pin_url.replace("/voice/pin", "/voice/card"), pairs=good, sign_url=pin_url
            ),
            "host": dict(url=other_host, pairs=good, sign_url=pin_url),
            "scheme": dict(
                url=pin_url, pairs=good, sign_url=pin_url.replace("https://", "http://")
            ),
        }
        if setup == "fixed":
            # A fixed PUBLIC_BASE_URL is the only URL signatures are checked against, so
            # the Host a request arrived with is not part of the check (nor is it trusted).
            del attempts["host"]
        for name, attempt in attempts.items():
            response = signed_post(client, token, **attempt)  # type: ignore[arg-type]
            assert response.status_code == 403, name
            assert response.content == b"", name
        # The untouched request still works afterwards: nothing above was half-accepted.
        assert spoken(twiml(signed_post(client, token, pin_url, good))) == FOUND


def test_forwarded_headers_from_a_client_are_replaced_by_caddy(forwarded: Proxied) -> None:
    token = forwarded.stack.twilio_token
    evil = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    with forwarded.caddy.client() as client:
        url = f"{forwarded.caddy.url}/voice"
        # Signed for the real URL: Caddy overwrote the forged headers, so it passes.
        assert twiml(signed_post(client, token, url, base_params(), headers=evil))
        # Signed for the URL the forged headers name: refused.
        forged = signed_post(
            client, token, url, base_params(), headers=evil, sign_url="http://evil.example/voice"
        )
        assert forged.status_code == 403


def test_forwarded_headers_are_honoured_only_from_trusted_proxies(forwarded: Proxied) -> None:
    """127.0.0.1 (Caddy) is trusted; 127.0.0.2 is any other host that can reach the
    webhook port. Same request, same headers: only the source address differs."""
    token = forwarded.stack.twilio_token
    direct = forwarded.stack.webhook.url
    public = f"{forwarded.caddy.url}/voice"
    claims = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": f"localhost:{forwarded.caddy.port}"}
    trusted = httpx.Client(timeout=5)
    stranger = httpx.Client(timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with trusted, stranger:
        assert twiml(
            signed_post(
                trusted, token, f"{direct}/voice", base_params(), sign_url=public, headers=claims
            )
        )
        refused = signed_post(
            stranger, token, f"{direct}/voice", base_params(), sign_url=public, headers=claims
        )
        assert refused.status_code == 403
        # From the stranger, only the URL it really called (its Host header) counts.
        assert twiml(
            signed_post(
                stranger,
                token,
                f"{direct}/voice",
                base_params(),
                headers=claims,
                sign_url=f"{direct}/voice",
            )
        )


def test_fixed_public_base_url_ignores_everything_else(fixed: Proxied) -> None:
    token = fixed.stack.twilio_token
    direct = f"{fixed.stack.webhook.url}/voice"
    with httpx.Client(timeout=5) as client:
        # Signed for the address it was really sent to, but that is not the public URL.
        assert signed_post(client, token, direct, base_params()).status_code == 403
        # Signed for the public URL and sent straight to the webhook: still valid, the
        # signature covers the public URL whichever way the request came.
        assert twiml(
            signed_post(client, token, direct, base_params(), sign_url=f"{fixed.caddy.url}/voice")
        )


def test_only_voice_routes_are_proxied(forwarded: Proxied) -> None:
    with forwarded.caddy.client() as client:
        for path in ("/metrics", "/readyz", "/healthz", "/", "/voicemail", "/openapi.json"):
            response = client.get(forwarded.caddy.url + path)
            assert response.status_code == 404, path
            assert b"ivr_" not in response.content, path
        # The webhook itself does serve them on its internal port.
        assert httpx.get(f"{forwarded.stack.webhook.url}/metrics").status_code == 200


def test_security_headers_and_no_server_banner(forwarded: Proxied) -> None:
    with forwarded.caddy.client() as client:
        response = signed_post(
            client, forwarded.stack.twilio_token, f"{forwarded.caddy.url}/voice", base_params()
        )
    assert response.status_code == 200
    headers = response.headers
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "server" not in headers


def test_proxy_refuses_big_bodies(forwarded: Proxied) -> None:
    token = forwarded.stack.twilio_token
    url = f"{forwarded.caddy.url}/voice"
    big = [*base_params(), ("Padding", "x" * 20_000)]
    with forwarded.caddy.client() as client:
        assert signed_post(client, token, url, big).status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b"x" * 1024

        # Chunked, no Content-Length: cut off once it passes the limit.
        streamed = client.post(
            url,
            content=chunks(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "x",
            },
        )
        assert streamed.status_code == 413
        # And the proxy keeps serving.
        assert twiml(signed_post(client, token, url, base_params()))
