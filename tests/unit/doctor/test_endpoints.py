"""Doctor's rules for the public URL, the local URLs and the report's shape."""

from __future__ import annotations

import json

import pytest

from service.doctor.endpoints import is_development_host, local_url, public_url_check
from service.doctor.report import Check, report
from service.settings import Settings


@pytest.mark.parametrize(
    ("host", "development"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("api.localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("ivr.example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_development_is_loopback_only(host: str, development: bool) -> None:
    assert is_development_host(host) is development


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("https://ivr.example.com", True),
        ("http://ivr.example.com", False),
        ("http://10.0.0.5:8080", False),
    ],
)
def test_public_url_must_be_https_off_loopback(url: str, ok: bool) -> None:
    check = public_url_check(Settings.from_environ({"PUBLIC_BASE_URL": url}))
    assert check.ok is ok
    assert ok or "PUBLIC_BASE_URL=https://" in str(check.fix)


def test_an_empty_public_url_defers_to_the_trusted_proxies() -> None:
    settings = Settings.from_environ({"PUBLIC_BASE_URL": "", "TRUSTED_PROXIES": "10.0.0.2"})
    check = public_url_check(settings)
    assert check.ok and "10.0.0.2/32" in check.detail


def test_wildcard_listeners_are_asked_on_loopback() -> None:
    assert local_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert local_url("::", 8080) == "http://127.0.0.1:8080"
    assert local_url("::1", 8081) == "http://[::1]:8081"
    assert local_url("10.1.2.3", 80) == "http://10.1.2.3:80"


def test_every_failure_needs_a_fix() -> None:
    with pytest.raises(ValueError, match="needs its fix"):
        Check("x", "fail", "broken")


def test_the_report_fails_only_on_failures_and_renders_both_ways() -> None:
    rows = [
        Check.passed("settings", "valid"),
        Check.reminder("Twilio PCI Mode", "turn on"),
        Check.failed("public URL", "http", "use https"),
    ]
    result = report(rows)
    assert not result.ok and [c.name for c in result.failed] == ["public URL"]
    assert result.table().splitlines() == [
        "✓ settings         valid",
        "! Twilio PCI Mode  turn on",
        "✗ public URL       http",
        "                   fix: use https",
        "1 of 2 checks failed",
    ]
    parsed = json.loads(result.as_json())
    assert parsed["ok"] is False and parsed["checks"][2] == {
        "name": "public URL",
        "status": "fail",
        "detail": "http",
        "fix": "use https",
    }
    assert report(rows[:2]).ok and report(rows[:2]).table().endswith("all checks passed")
