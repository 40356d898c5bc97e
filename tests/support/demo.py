"""The demo account every stack seeds (service/backend/enrolment.py ``seed_demo``), and
what a caller hears and the backend answers when its card and PIN are right: derived
here once, from the service's own constants."""

from __future__ import annotations

from service.backend.enrolment import DEMO_ACCOUNT
from service.webhook.twiml import FOUND as FOUND_SENTENCE

ACCOUNT, BALANCE = DEMO_ACCOUNT
# What the caller hears.
FOUND = FOUND_SENTENCE.format(account=ACCOUNT, balance=BALANCE)
# What the backend answers (POST /v1/lookup, 200).
ANSWER = {"account": ACCOUNT, "balance": BALANCE}
