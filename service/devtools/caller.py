"""``ivr-vault call``: play Twilio against a running webhook.

A new CallSid per call, each request signed as Twilio signs it, each ``<Gather action>``
followed, every sentence the caller hears printed. Each prompt is answered by the step it
belongs to (its action's path), never by its words, so translated prompts change nothing:
at ``/voice/account`` the caller types ``identify`` (an account number), or presses star
(:data:`REGISTERED`: the registered-phone path); at the card and PIN steps the entries are
consumed one per ``<Gather>``; when they run out the caller stays silent (an empty
``Digits``), as a caller who does not answer would.
A language menu (a ``<Gather>`` posting to ``/voice/language``) is answered apart, with the
key of the ``<Say>`` in ``lang``'s language (its options are keys 1, 2, ... in order), and
consumes no entry.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from service.webhook.signature import compute_signature

MAX_STEPS = 20
MENU_PATH = "/voice/language"
DEFAULT_TO = "+15005550001"
# Press star at the account-number prompt: "I am calling from my registered phone".
REGISTERED = "*"
ACCOUNT_STEP = "/voice/account"


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


@dataclass(frozen=True)
class Said:
    """One ``<Say>``: its whole text (SSML children such as ``<say-as>`` included) and the
    attributes that choose how Twilio speaks it."""

    text: str
    language: str | None
    voice: str | None

    @classmethod
    def of(cls, verb: ET.Element) -> Said:
        return cls("".join(verb.itertext()), verb.get("language"), verb.get("voice"))

    @property
    def how(self) -> str:
        """``[language=ja-JP voice=Polly.Mizuki]``: printed before a ``<Say>`` spoken
        otherwise than the one before it. In brackets, like every line that is not heard,
        so that a call's last line is still its last sentence."""
        return f"[language={self.language or '-'} voice={self.voice or '-'}]"


@dataclass
class CallResult:
    heard: list[str] = field(default_factory=list)
    said: list[Said] = field(default_factory=list)
    completed: bool = False
    statuses: list[int] = field(default_factory=list)


@dataclass
class Caller:
    """Plays one call. ``client`` is injectable so tests can add hostile headers."""

    base_url: str
    auth_token: str
    client: httpx.Client
    say: Callable[[str], None] = print
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    caller: str = "+15005550006"  # the From number (Twilio's test number)
    show_voice: bool = False  # say() also gets each change of language and voice
    identify: str = REGISTERED  # the answer at the account step: digits, or star
    stir_verstat: str | None = None  # Twilio's StirVerstat parameter, when set

    def post(
        self, url: str, params: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        signature = compute_signature(self.auth_token, url, list(params.items()))
        return self.client.post(
            url, data=params, headers={"X-Twilio-Signature": signature, **(headers or {})}
        )

    def play(
        self,
        entries: Sequence[str],
        *,
        call_sid: str | None = None,
        to: str | None = None,
        lang: str | None = None,
    ) -> CallResult:
        """``to``: the number called (Twilio's ``To``); ``lang``: the language to choose in
        a language menu (none: stay silent there, as a caller who does not choose)."""
        call_sid = call_sid or new_call_sid()
        pending = list(entries)
        base = {
            "CallSid": call_sid,
            "AccountSid": self.account_sid,
            "From": self.caller,
            "To": to or DEFAULT_TO,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        if self.stir_verstat is not None:
            base["StirVerstat"] = self.stir_verstat
        url = self.base_url.rstrip("/") + "/voice"
        params = dict(base)
        result = CallResult()
        for _ in range(MAX_STEPS):
            response = self.post(url, params)
            result.statuses.append(response.status_code)
            if response.status_code != 200:
                self.say(f"[webhook answered HTTP {response.status_code}]")
                return result
            start = len(result.said)
            next_step = self._perform(response.text, result)
            if next_step is None:
                result.completed = True
                return result
            action, is_gather = next_step
            url = urljoin(url, action)
            params = dict(base)
            if is_gather and urlsplit(url).path.endswith(MENU_PATH):
                params["Digits"] = menu_key(result.said[start:], lang)
            elif is_gather:
                params.update(self._answer(urlsplit(url).path, pending))
        self.say("[too many steps; giving up]")
        return result

    def _answer(self, step: str, pending: list[str]) -> dict[str, str]:
        """What the caller keys at ``step``: the identification at the account step, else
        the next entry. Pressing star alone posts an empty ``Digits`` with
        ``FinishedOnKey``, as Twilio does."""
        if step == ACCOUNT_STEP:
            if self.identify == REGISTERED:
                return {"Digits": "", "FinishedOnKey": REGISTERED}
            return {"Digits": self.identify, "FinishedOnKey": ""}
        return {"Digits": pending.pop(0) if pending else ""}

    def _perform(self, document: str, result: CallResult) -> tuple[str, bool] | None:
        """Speak the document; the next (action, is_gather), or None when the call ends."""
        root = ET.fromstring(document)  # noqa: S314
        for verb in root:
            if verb.tag == "Say":
                self._hear(Said.of(verb), result)
            elif verb.tag == "Gather":
                for inner in verb:
                    if inner.tag == "Say":
                        self._hear(Said.of(inner), result)
                return verb.attrib.get("action", ""), True
            elif verb.tag == "Redirect":
                return verb.text or "", False
            elif verb.tag == "Hangup":
                return None
        return None

    def _hear(self, said: Said, result: CallResult) -> None:
        if self.show_voice and (not result.said or result.said[-1].how != said.how):
            self.say(said.how)
        result.heard.append(said.text)
        result.said.append(said)
        self.say(said.text)


def menu_key(options: Sequence[Said], lang: str | None) -> str:
    """The key that chooses ``lang`` in a menu whose options were ``options``, in order;
    empty (no key) when no option speaks it."""
    for key, option in enumerate(options, start=1):
        if lang is not None and option.language == lang:
            return str(key)
    return ""
