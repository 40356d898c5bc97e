"""``ivr-vault twilio configure-number``: point a Twilio number's voice URL at this service.

Goes through twilio-python's REST client. Credentials come from the environment only
(``TWILIO_ACCOUNT_SID`` with ``TWILIO_API_KEY``/``TWILIO_API_SECRET``, or with
``TWILIO_AUTH_TOKEN``; each secret also as ``*_FILE``), never from argv, where any user
of the machine could read them in the process list.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from service.errors import BadInput, ConfigError, TwilioApiError
from service.formats import caller_bucket
from service.settings import Settings

TWILIO_API = "https://api.twilio.com"

# Twilio keeps the digits a caller types at a <Gather> in its own call logs and debugger
# unless Voice PCI Mode is on: our encryption starts only once they reach the webhook.
PCI_REMINDER = (
    "ivr-vault: reminder: turn on Voice PCI Mode for this Twilio account (Console: Voice > "
    "Settings > General) so that Twilio redacts the digits callers type from its call logs "
    "and debugger. It cannot be turned off again for that account: give this service a "
    "subaccount of its own. See docs/deployment.md."
)


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # untyped base
    """Sends what twilio-python builds for api.twilio.com to another base URL (an egress
    proxy, or the tests' local recorder). Only the scheme and host change."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._base_url != TWILIO_API and url.startswith(TWILIO_API + "/"):
            url = self._base_url + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


def twilio_client(settings: Settings, *, timeout: float = 15.0) -> Client:
    account_sid = settings.twilio_account_sid
    if not account_sid or not account_sid.startswith("AC"):
        raise ConfigError("TWILIO_ACCOUNT_SID: not set, or not an account SID (AC...)")
    api_key, api_secret = settings.twilio_api_key, settings.twilio_api_secret
    if api_key and api_secret:
        username, password = api_key, api_secret.reveal()
    elif api_key:
        raise ConfigError(
            "TWILIO_API_SECRET: not set (nor TWILIO_API_SECRET_FILE), but TWILIO_API_KEY is"
        )
    elif settings.twilio_auth_token is not None:
        username, password = account_sid, settings.twilio_auth_token.reveal()
    else:
        raise ConfigError(
            "TWILIO_AUTH_TOKEN: not set (nor TWILIO_AUTH_TOKEN_FILE, nor "
            "TWILIO_API_KEY/TWILIO_API_SECRET)"
        )
    return Client(
        username,
        password,
        account_sid,
        http_client=_RebasedHttpClient(settings.twilio_api_base_url, timeout),
    )


def configure_number(client: Client, number: str, voice_url: str, api_url: str = TWILIO_API) -> str:
    """Set the number's voice URL (POST); returns the number's SID. ``api_url`` is where
    the requests go (TWILIO_API_BASE_URL), named when it cannot be reached."""
    try:
        matches = client.incoming_phone_numbers.list(phone_number=number, limit=2)
        if not matches:
            raise TwilioApiError(f"{number}: no such number in this Twilio account")
        sid = str(matches[0].sid)
        client.incoming_phone_numbers(sid).update(voice_url=voice_url, voice_method="POST")
    except TwilioRestException as exc:
        # Twilio's message names the problem (bad credentials, bad URL); it echoes no secret.
        raise TwilioApiError(
            f"Twilio refused the request (HTTP {exc.status}, code {exc.code}): {exc.msg}"
        ) from None
    except TwilioException as exc:
        # A refused page fetch is a bare TwilioException carrying the response.
        status = next(
            (getattr(a, "status_code", None) for a in exc.args if hasattr(a, "status_code")), None
        )
        if status is None:
            raise TwilioApiError(f"Twilio's API failed ({type(exc).__name__})") from None
        raise TwilioApiError(f"Twilio refused the request (HTTP {status})") from None
    except requests.RequestException as exc:
        raise TwilioApiError(
            f"cannot reach Twilio's API at {api_url} ({type(exc).__name__})"
        ) from None
    return sid


def _voice_url(args: argparse.Namespace, settings: Settings) -> str:
    url = args.url or (f"{settings.public_base_url}/voice" if settings.public_base_url else "")
    if not url.startswith("https://"):
        raise ConfigError(
            "--url: Twilio must call the service over https (set --url or "
            "PUBLIC_BASE_URL to the proxy's https address)"
        )
    return url


def _configure_number(args: argparse.Namespace, settings: Settings) -> int:
    # twilio-python logs every request and response header at INFO; an operator wants the
    # one result line.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    if not args.number.startswith("+") or caller_bucket(args.number) != args.number:
        raise BadInput(
            "--number: expected E.164, a + then the country code and number, "
            "at most 15 digits (+15551234567)"
        )
    client = twilio_client(settings)
    url = _voice_url(args, settings)
    sid = configure_number(client, args.number, url, settings.twilio_api_base_url)
    print(f"ivr-vault: {args.number} ({sid}) now sends calls to POST {url}")
    print(PCI_REMINDER)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("twilio", help="Twilio account set-up").add_subparsers(
        dest="twilio_command", required=True
    )
    p = group.add_parser(
        "configure-number",
        help="set a number's voice URL to this service's /voice; credentials from the environment",
    )
    p.add_argument("--number", required=True, help="the number, E.164 (+15551234567)")
    p.add_argument("--url", help="voice URL (default PUBLIC_BASE_URL + /voice)")
    p.set_defaults(func=_configure_number)
