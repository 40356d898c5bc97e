"""The real pipeline: configure_logging() into a StringIO, log every way we can, parse the lines."""

from __future__ import annotations

import errno
import gc
import inspect
import io
import json
import logging
import re
import sys
import threading
import warnings
from decimal import Decimal
from typing import Any

import pytest
import structlog
import urllib3.connectionpool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.logs.config import UVICORN_LOG_KWARGS, configure_logging
from service.logs.scrubbing import ALLOWED_FIELDS, REDACTED
from tests.support.digits import GOOD_SID, assert_no_digits, digit_text, has_digit, nested
from tests.support.templates import shown_arguments


def lines(stream: io.StringIO, hosts: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every line must be one JSON object; returns them parsed and checked for digits: only
    under an allow-listed key with a valid value, or as a known template's checked argument
    (tests/support/templates.py)."""
    text = stream.getvalue()
    assert text.endswith("\n") or not text
    parsed = [json.loads(line) for line in text.splitlines()]
    shown_digits = 0
    for obj in parsed:
        assert isinstance(obj, dict)
        shown = shown_arguments(obj.get("logger"), obj.get("event"), hosts)
        if shown is not None:
            event = str(obj["event"])
            for value in shown:
                event = event.replace(value, "", 1)
            assert not has_digit(event), obj["event"]
            shown_digits += sum(c.isdigit() for value in shown for c in value)
            obj = {k: v for k, v in obj.items() if k != "event"}
        assert_no_digits(obj, ALLOWED_FIELDS)
    # The raw text too (JSON escapes such as \u0661 would hide digits from the parsed check):
    # only allow-listed values may put a digit on disk.
    assert sum(c.isdigit() for c in text) == sum(map(_allowed_digits, parsed)) + shown_digits
    return parsed


def _allowed_digits(value: object) -> int:
    if isinstance(value, dict):
        return sum(
            sum(c.isdigit() for c in json.dumps(v))
            if k in ALLOWED_FIELDS and ALLOWED_FIELDS[k](v)
            else _allowed_digits(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return sum(map(_allowed_digits, value))
    return 0


TIMESTAMP_PREFIX = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z ", re.MULTILINE)


def chained_error(message: str) -> None:
    try:
        raise ValueError(f"pin {message}")
    except ValueError as inner:
        raise RuntimeError(f"card {message}") from inner


def test_structlog_and_stdlib_records_share_one_scrubbed_json_pipeline(
    pipeline: io.StringIO,
) -> None:
    log = structlog.get_logger("ivr.test")
    log.info("caller typed 1234", Digits="1234", call_sid=GOOD_SID, status_code=200, n=4321)
    logging.getLogger("uvicorn.error").warning("listening on port %d for %s", 8080, "①②")
    logging.getLogger("hvac").error("vault said %s", {"pin": "4321", "x": 12})
    logging.getLogger().info("root %s %d", "٤٣٢١", 1234)
    logging.getLogger("httpx").warning("GET https://h/voice/pin?card=vault:v1:AA12")
    out = lines(pipeline)
    assert [o["logger"] for o in out] == ["ivr.test", "uvicorn.error", "hvac", "root", "httpx"]
    assert out[0]["Digits"] == REDACTED and out[0]["call_sid"] == GOOD_SID
    assert out[0]["status_code"] == 200 and out[0]["n"] == "****"
    assert out[1]["event"] == "listening on port **** for **"
    assert out[2]["event"] == "vault said {'pin': '****', 'x': **}"
    assert all(o["timestamp"] and o["level"] for o in out)


def test_exceptions_are_rendered_then_scrubbed_without_locals(pipeline: io.StringIO) -> None:
    marker = "zebra" + "crossing"  # a local variable that must not appear anywhere
    try:
        chained_error("4321 ⓵⓶❶፩")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application 12")
        structlog.get_logger().exception("handler failed %s", "99")
    del marker
    out = lines(pipeline)
    assert len(out) == 2  # keep_exc_info=False: no raw traceback appended after the line
    for obj in out:
        tb = obj["exception"]
        assert "RuntimeError: card ****" in tb and "ValueError: pin ****" in tb
        assert "direct cause" in tb and "line **" in tb
        assert "zebracrossing" not in json.dumps(obj)


def test_console_format_is_plain_and_scrubbed(pipeline: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream)
    try:
        chained_error("1234")
    except RuntimeError:
        structlog.get_logger("ivr.test").exception("oops 5678", card="1234", x=7)
    logging.getLogger("hvac").warning("from %s", "٣")
    text = stream.getvalue()
    assert "\x1b[" not in text and "Traceback (most recent call last)" in text
    assert "oops ****" in text and "card=*REDACTED* x=*" in text
    assert "RuntimeError: card ****" in text and "from *" in text
    # Apart from each line's leading timestamp, nothing has a digit.
    assert not has_digit(TIMESTAMP_PREFIX.sub("", text))


@given(
    text=digit_text,
    value=nested,
    number=st.one_of(st.integers(), st.decimals(allow_nan=False), st.floats()),
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_digit_survives_the_real_pipeline(
    pipeline: io.StringIO, text: str, value: object, number: int | Decimal | float
) -> None:
    pipeline.seek(0)
    pipeline.truncate()
    structlog.get_logger("ivr.prop").warning(text, value=value, **{text: number})
    logging.getLogger("uvicorn.error").error("msg %s %r %s", text, value, number)
    logging.getLogger("twilio.http_client").info(text)
    try:
        chained_error(text)
    except RuntimeError:
        logging.getLogger().exception("%s", text)
    # A known template with caller text where the address goes: the port shows, not it.
    port = number if type(number) is int else 8080
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", text, port
    )
    structlog.get_logger("ivr.prop").info("typed", ttl_s=text, port=text, keys=value, type=text)
    out = lines(pipeline)
    assert len(out) == 6


@pytest.mark.parametrize(
    ("key", "value"),
    [("call_sid", "CA" + "4321" * 7), ("status_code", "4321"), ("key_version", 4321)],
)
def test_misshapen_allow_listed_values_are_redacted_in_the_pipeline(
    pipeline: io.StringIO, key: str, value: object
) -> None:
    structlog.get_logger().info("x", **{key: value})
    assert lines(pipeline)[0][key] == REDACTED


def test_failing_percent_format_writes_the_fixed_line_only(
    pipeline: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("hvac").error("card %s pin %d", "1234")  # noqa: PLE1206 (too few args)
    logging.getLogger("hvac").error("pin %d", "4321")  # wrong type
    assert lines(pipeline) == [{"event": "log handler failure", "level": "error"}] * 2
    captured = capsys.readouterr()
    assert not has_digit(captured.err + captured.out)


def test_scrubber_failure_is_a_fixed_line(pipeline: io.StringIO) -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("pin 4321")

    structlog.get_logger().info("card 1234", thing=Bad())
    assert lines(pipeline) == [{"event": "log scrubber failure", "level": "error"}]


def test_last_resort_and_raise_exceptions(
    pipeline: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logging.raiseExceptions is False
    orphan = logging.getLogger("ivr.test.orphan")
    orphan.propagate = False  # no handler anywhere: logging falls back to lastResort
    orphan.warning("orphan %s", "1234")
    orphan.error("orphan %d", "bad")
    out = lines(pipeline)
    assert out[0]["event"] == "orphan ****" and out[0]["logger"] == "ivr.test.orphan"
    assert out[1] == {"event": "log handler failure", "level": "error"}
    assert capsys.readouterr().err == ""


def test_foreign_handlers_are_removed_and_propagation_restored(pipeline: io.StringIO) -> None:
    names = ("uvicorn.error", "uvicorn.access", "hvac", "ivr.test.some_lib")
    for name in names:
        lg = logging.getLogger(name)
        lg.addHandler(logging.StreamHandler(sys.stderr))
        lg.propagate = False
    configure_logging(stream=pipeline)  # a second call replaces the first
    for name in names:
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate is True
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    logging.getLogger("ivr.test.some_lib").warning("pin %s", "1234")
    assert lines(pipeline)[0]["event"] == "pin ****"


def test_uvicorn_kwargs_keep_uvicorn_out_of_logging(pipeline: io.StringIO) -> None:
    import uvicorn

    assert dict(UVICORN_LOG_KWARGS) == {"log_config": None, "access_log": False}
    root_handlers = list(logging.getLogger().handlers)  # ours, plus pytest's capture handlers
    uvicorn.Config(app=lambda *_: None, **UVICORN_LOG_KWARGS)
    assert logging.getLogger("uvicorn.error").handlers == []
    assert logging.getLogger("uvicorn.access").handlers == []
    assert logging.getLogger().handlers == root_handlers


def test_uncaught_exception_hooks_log_through_the_pipeline(
    pipeline: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        chained_error("1234")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())

    def worker() -> None:
        raise ValueError("pin 5678")

    thread = threading.Thread(target=worker, name="worker-42")
    thread.start()
    thread.join()

    class Finaliser:
        def __del__(self) -> None:
            raise ValueError("card 9999")

    Finaliser()
    gc.collect()
    out = lines(pipeline)
    events = {o["event"]: o for o in out}
    assert "RuntimeError: card ****" in events["uncaught exception"]["exception"]
    assert events["uncaught exception in thread"]["thread"] == "worker-**"
    assert "ValueError: pin ****" in events["uncaught exception in thread"]["exception"]
    assert "ValueError: card ****" in events["unraisable exception"]["exception"]
    assert capsys.readouterr().err == ""


def test_warnings_are_captured(pipeline: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated since 2024, pin 1234", DeprecationWarning, stacklevel=1)
    (out,) = lines(pipeline)
    assert out["logger"] == "py.warnings" and "pin ****" in out["event"]


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        configure_logging(fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        configure_logging(level="LOUD")


def test_level_filters_both_kinds_of_logger(pipeline: io.StringIO) -> None:
    configure_logging(stream=pipeline, level="warning")
    structlog.get_logger().info("hidden")
    logging.getLogger("hvac").info("hidden")
    structlog.get_logger().warning("shown")
    assert [o["event"] for o in lines(pipeline)] == ["shown"]


def test_a_taken_port_shows_its_address_and_port(pipeline: io.StringIO) -> None:
    """uvicorn logs asyncio's bind error as the exception itself: its address and port
    show when the address is a configured listen address; anything else stays masked."""
    configure_logging(stream=pipeline, listen_hosts=frozenset({"127.0.0.1"}))
    uvicorn_log = logging.getLogger("uvicorn.error")
    for host in ("127.0.0.1", "10.0.0.9"):
        uvicorn_log.error(
            OSError(
                errno.EADDRINUSE,
                "error while attempting to bind on "
                f"address ('{host}', 18080): address already in use",
            )
        )
    uvicorn_log.error(
        OSError(
            errno.EADDRINUSE,
            "error while attempting to bind on address "
            "('127.0.0.1', 18080): address already in use 4321",
        )
    )
    logging.getLogger("hvac").error(
        OSError(
            errno.EADDRINUSE,
            "error while attempting to bind on address ('127.0.0.1', 18080): address in use",
        )
    )
    out = lines(pipeline, hosts=frozenset({"127.0.0.1"}))
    assert [o["event"] for o in out] == [
        "[Errno 98] error while attempting to bind on address ('127.0.0.1', 18080): "
        "address already in use",
        "[Errno 98] error while attempting to bind on address ('**.*.*.*', 18080): "
        "address already in use",
        "[Errno **] error while attempting to bind on address ('***.*.*.*', *****): "
        "address already in use ****",  # not the template's shape: all masked
        "[Errno **] error while attempting to bind on address ('***.*.*.*', *****): "
        "address in use",  # another logger
    ]


def test_uvicorn_start_lines_show_the_real_port_and_pid(pipeline: io.StringIO) -> None:
    """What make run's first lines say (issue 15): a real PID and port, through the real
    logging calls uvicorn makes; the listen address only when it is the configured one."""
    configure_logging(stream=pipeline, listen_hosts=frozenset({"127.0.0.1"}))
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.info("Started server process [%d]", 4321)
    uvicorn_log.info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "127.0.0.1", 18080
    )
    uvicorn_log.info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "10.0.0.9", 18080
    )
    logging.getLogger("hvac").info("Started server process [%d]", 4321)
    structlog.get_logger("ivr.vault").info("vault login", ttl_s=3600.0, renewable=True)
    structlog.get_logger("ivr.bootstrap").info("key created", key="ivr-dtmf", type="aes256-gcm96")
    out = lines(pipeline, hosts=frozenset({"127.0.0.1"}))
    assert [o["event"] for o in out[:4]] == [
        "Started server process [4321]",
        "Uvicorn running on http://127.0.0.1:18080 (Press CTRL+C to quit)",
        "Uvicorn running on http://**.*.*.*:18080 (Press CTRL+C to quit)",
        "Started server process [****]",  # another logger: not the template
    ]
    assert out[4]["ttl_s"] == 3600.0 and out[5]["type"] == "aes256-gcm96"


def test_the_vault_clients_request_lines_show_method_path_and_status(pipeline: io.StringIO) -> None:
    """-vv's urllib3 lines (docs/logging.md): through the real logging call urllib3 makes, the
    method, the Vault API path and the status show; the host and the length stay masked;
    a query string (where a ciphertext could ride) and a path with a run of four digits
    are masked."""
    configure_logging(stream=pipeline, level="debug")
    pool = logging.getLogger("urllib3.connectionpool")
    template = '%s://%s:%s "%s %s %s" %s %s'
    # The installed urllib3 still logs its requests with this very template.
    assert repr(template)[1:-1] in inspect.getsource(urllib3.connectionpool)
    pool.debug(
        template,
        "http",
        "127.0.0.1",
        8200,
        "POST",
        "/v1/transit/encrypt/ivr-dtmf",
        "HTTP/1.1",
        200,
        1234,
    )
    pool.debug(
        template, "http", "127.0.0.1", 8200, "LIST", "/v1/transit/keys", "HTTP/1.1", 403, None
    )
    pool.debug(
        template,
        "https",
        "vault",
        8200,
        "GET",
        "/v1/transit/keys/ivr-dtmf?ciphertext=vault:v1:QUJD4321",
        "HTTP/1.1",
        404,
        0,
    )
    pool.debug(template, "http", "vault", 8200, "GET", "/v1/accounts/4321", "HTTP/1.1", 200, 5)
    assert [o["event"] for o in lines(pipeline)] == [
        'http://***.*.*.*:8200 "POST /v1/transit/encrypt/ivr-dtmf HTTP/1.1" 200 ****',
        'http://***.*.*.*:8200 "LIST /v1/transit/keys HTTP/1.1" 403 None',
        'https://vault:8200 "GET /v1/transit/keys/ivr-dtmf?ciphertext=vault:v*:QUJD**** '
        'HTTP/1.1" 404 *',
        'http://vault:8200 "GET /v*/accounts/**** HTTP/1.1" 200 *',
    ]


def test_a_template_with_a_caller_string_for_a_number_writes_the_fixed_line(
    pipeline: io.StringIO,
) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", "4321")
    assert lines(pipeline) == [{"event": "log handler failure", "level": "error"}]


def test_our_events_make_no_log_record_and_pass_the_same_scrubber(
    pipeline: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access line's way (#21): a structlog event is rendered by structlog and written
    by the pipeline's handler, without a stdlib LogRecord; it is scrubbed all the same."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    structlog.get_logger("ivr.access").info(
        "request", path="/voice/card", status_code=200, pin="4321", outcome="typed 1234"
    )
    logging.getLogger("uvicorn.error").info("a foreign record %s", "1234")
    out = lines(pipeline)
    assert made and {r.name for r in made} == {"uvicorn.error"}  # the formatter copies it
    assert out[0] == {
        "path": "/voice/card", "status_code": 200, "pin": REDACTED, "outcome": "typed ****",
        "event": "request", "level": "info", "logger": "ivr.access",
        "timestamp": out[0]["timestamp"],
    }  # fmt: skip
    assert out[1]["event"] == "a foreign record ****"


def test_a_failed_write_of_our_event_is_the_fixed_line(pipeline: io.StringIO) -> None:
    handler = logging.getLogger().handlers[0]
    real_write = pipeline.write
    calls: list[str] = []

    def write_once_failing(text: str) -> int:
        calls.append(text)
        if len(calls) == 1:
            raise OSError("card 1234")
        return real_write(text)

    handler.stream.write = write_once_failing  # type: ignore[attr-defined]
    structlog.get_logger("ivr.test").warning("pin 4321")
    assert lines(pipeline) == [{"event": "log handler failure", "level": "error"}]
