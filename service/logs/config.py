"""One log pipeline for every process: our structlog events and every stdlib logger.

``configure_logging()`` is called once at each entry point (webhook, backend, CLI). Afterwards
every record, whatever produced it, is rendered by a single root handler whose formatter runs
the same processor chain, ending in the digit scrubber and then the renderer. The escape hatches
that would bypass that chain (``logging.lastResort``, ``Handler.handleError``, uncaught-exception
hooks, warnings, library-installed handlers) are closed here as well.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
import sys
import threading
import types
from typing import Any, Final, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor

from service.logs.scrubbing import Scrubber
from service.logs.templates import capture_templates

__all__ = ["LIBRARY_LOGGERS", "UVICORN_LOG_KWARGS", "configure_logging", "uvicorn_log_kwargs"]

# Keyword arguments for uvicorn.run()/uvicorn.Config: without log_config=None uvicorn installs
# its own handlers, and its access line carries the raw query string. AccessLogMiddleware
# writes our access line instead.
UVICORN_LOG_KWARGS: Final[types.MappingProxyType[str, Any]] = types.MappingProxyType(
    {"log_config": None, "access_log": False}
)

LIBRARY_LOGGERS: Final[tuple[str, ...]] = (
    "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "hvac", "urllib3",
    "requests", "httpx", "httpcore", "twilio", "twilio.http_client", "asyncio",
    "py.warnings", "starlette",
)  # fmt: skip

# httpx and httpcore log full request URLs at INFO; our URLs carry ciphertexts in the query.
_QUIET_AT_WARNING: Final[tuple[str, ...]] = ("httpx", "httpcore")

_FAILURE_LINES: Final[dict[str, str]] = {
    "json": '{"event": "log handler failure", "level": "error"}\n',
    "console": "[error    ] log handler failure\n",
}


def uvicorn_log_kwargs() -> dict[str, Any]:
    """A fresh copy of UVICORN_LOG_KWARGS, for ``uvicorn.run(app, **uvicorn_log_kwargs())``."""
    return dict(UVICORN_LOG_KWARGS)


class _PipelineHandler(logging.StreamHandler[TextIO]):
    """The single root handler. Its failure path writes a fixed line, never the record."""

    def __init__(self, stream: TextIO, failure_line: str) -> None:
        super().__init__(stream)
        self._failure_line = failure_line

    def handleError(self, record: logging.LogRecord | None) -> None:
        # The stdlib version prints the record's msg and args to stderr: exactly the digits
        # the scrubber exists to hide. Say that something failed, nothing more.
        try:
            self.stream.write(self._failure_line)
            self.flush()
        except Exception:  # noqa: S110 (nowhere safe left to report to)
            pass

    def write_line(self, line: str) -> None:
        """A line structlog rendered (scrubbed), written as ``emit`` writes a record's:
        under the handler's lock, to the same stream, failing to the fixed line."""
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            self.handleError(None)
        finally:
            self.release()


class _LineLogger:
    """What structlog's native loggers write through (its "wrapped logger"): the chain's
    rendered line goes to the pipeline's handler. ``name``: the logger's, for
    ``add_logger_name``. No stdlib ``LogRecord`` is made for our own events: building
    one and the ProcessorFormatter round trip were most of the access line's cost (#21,
    bench/profiles/webhook-before.md)."""

    def __init__(self, name: str, handler: _PipelineHandler) -> None:
        self.name = name
        self._handler = handler

    def msg(self, line: str) -> None:
        self._handler.write_line(line)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


class _LineLoggerFactory:
    """structlog's logger_factory: one :class:`_LineLogger` per name, kept by the
    configuration that made it (structlog calls the factory for each bound logger)."""

    def __init__(self, handler: _PipelineHandler) -> None:
        self._handler = handler
        self._loggers: dict[str, _LineLogger] = {}

    def __call__(self, *args: object) -> _LineLogger:
        name = str(args[0]) if args and args[0] is not None else "ivr"
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._loggers.setdefault(name, _LineLogger(name, self._handler))
        return logger


class _BatchingStream:
    """What the root handler writes to in a service: finished lines (formatted and scrubbed
    where they are made, as before) made on the event loop are joined and written once per
    loop iteration, by a callback after the current ones; lines from other threads are
    written at once, after anything pending. A burst of requests costs one write system
    call instead of one per line (make run writes unbuffered, to a terminal).

    A/B (bench/RESULTS.md): one write per line measured better than handing lines to a
    writer thread (QueueHandler/QueueListener style: the wake-ups and GIL hand-offs cost
    more than the writes saved), and worse than this. No line is lost for it: ``close()``,
    registered with atexit, writes what is pending at any exit (normal, SystemExit, an
    uncaught exception, a loop closed with the callback still queued), and SIGTERM, which
    kills without atexit (uvicorn re-raises it after its graceful shutdown), first writes
    what is pending.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._pending: list[str] = []
        self._scheduled = False
        # Reentrant: the SIGTERM handler may interrupt a write() on this same thread.
        self._lock = threading.RLock()
        atexit.register(self.close)
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread() and (
            previous in (signal.SIG_DFL, None) or _is_flush_handler(previous)
        ):
            signal.signal(signal.SIGTERM, self._flush_then_die)

    def write(self, text: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not an event loop's thread: write through
            with self._lock:
                self._pending.append(text)
                self._drain()
            return
        with self._lock:
            self._pending.append(text)
            if self._scheduled:
                return
            self._scheduled = True
        loop.call_soon(self._flush_pending)

    def flush(self) -> None:
        """Lines go out with the loop's callback (or close()); the handler's flush is free."""

    def close(self) -> None:
        with self._lock:
            self._drain()

    def _flush_pending(self) -> None:
        with self._lock:
            self._scheduled = False
            self._drain()

    def _drain(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nowhere left to report to

    def _flush_then_die(self, signum: int, frame: types.FrameType | None) -> None:
        self.close()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # die as SIGTERM would have, lines written


def _is_flush_handler(handler: object) -> bool:
    return getattr(handler, "__func__", None) is _BatchingStream._flush_then_die


def _shared_processors() -> list[Processor]:
    # Everything that can turn data into text runs here, before the scrubber sees it.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Plain string tracebacks, no local variables (dict_tracebacks/rich would show a PIN
        # sitting in a local). Rendering happens before scrubbing, so tracebacks are scrubbed.
        structlog.processors.format_exc_info,
    ]


def console_line(logger: object, method_name: str, event_dict: EventDict) -> str:
    """The console format of structlog's ConsoleRenderer(colors=False) for the scrubbed,
    JSON-native event dicts this pipeline renders: timestamp, padded level and event,
    [logger], sorted key=value (strings bare, anything else repr), then the traceback.

    Written here because ConsoleRenderer's column machinery was 40 % of the formatting of
    an access line (py-spy under `make run`; an access line 65 -> 49 us in-process). What
    reaches it has passed the scrubber: it only arranges text.
    """
    fields = dict(event_dict)
    timestamp = fields.pop("timestamp", None)
    level = fields.pop("level", "")
    event = fields.pop("event", "")
    name = fields.pop("logger", None)
    exception = fields.pop("exception", None)
    stack = fields.pop("stack", None)
    head = f"{timestamp} " if timestamp is not None else ""
    head += f"[{level:<9}] {event!s:<30}"
    if name is not None:
        head += f" [{name}]"
    kvs = " ".join(
        f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}" for k, v in sorted(fields.items())
    )
    line = f"{head} {kvs}".rstrip() if kvs else head.rstrip()
    if stack is not None:
        line += "\n" + str(stack)
    if exception is not None:
        line += "\n" + str(exception)
    return line


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        # ensure_ascii=False: "\u0661"-style escapes would put hex digits in the raw line.
        return structlog.processors.JSONRenderer(ensure_ascii=False, sort_keys=False)
    return console_line


def _last_processors(fmt: str, listen_hosts: frozenset[str]) -> list[Processor]:
    """The end of every line's way, ours and foreign: the scrubber, last before the
    renderer."""
    return [Scrubber(listen_hosts=listen_hosts), _renderer(fmt)]


def _build_formatter(last: list[Processor]) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        # A foreign record of a known template (uvicorn's port and PID lines) keeps its
        # arguments for the scrubber, which shows the safe ones (logs/templates.py); any
        # other keeps the message logging formatted, as before.
        foreign_pre_chain=[capture_templates, *_shared_processors()],
        pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        keep_exc_info=False,
        keep_stack_info=False,
    )


def _adopt_logger(logger: logging.Logger) -> None:
    # Libraries (uvicorn, some CLIs) attach their own stream handlers and stop propagation;
    # those handlers would write unscrubbed lines.
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def _log_uncaught(
    exc_type: type[BaseException],
    exc_value: BaseException | None,
    exc_tb: types.TracebackType | None,
    event: str,
    **fields: object,
) -> None:
    exc_info = (exc_type, exc_value, exc_tb) if exc_value is not None else False
    structlog.get_logger("ivr.uncaught").critical(event, exc_info=exc_info, **fields)


def _excepthook(
    exc_type: type[BaseException], exc_value: BaseException, exc_tb: types.TracebackType | None
) -> None:
    _log_uncaught(exc_type, exc_value, exc_tb, "uncaught exception")


def _threading_excepthook(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):
        return  # threading's default hook ignores SystemExit too
    thread = args.thread.name if args.thread is not None else None
    _log_uncaught(
        args.exc_type, args.exc_value, args.exc_traceback, "uncaught exception in thread",
        thread=thread,
    )  # fmt: skip


def _unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
    # The default hook prints repr(object) and the traceback straight to stderr.
    _log_uncaught(
        unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback,
        "unraisable exception", detail=unraisable.err_msg, object=unraisable.object,
    )  # fmt: skip


def _install_hooks() -> None:
    sys.excepthook = _excepthook
    threading.excepthook = _threading_excepthook
    sys.unraisablehook = _unraisablehook


def configure_logging(
    *,
    fmt: Literal["json", "console"] = "json",
    level: str = "INFO",
    stream: TextIO | None = None,
    background: bool = False,
    listen_hosts: frozenset[str] = frozenset(),
) -> None:
    """Route structlog and every stdlib logger through one scrubbing pipeline.

    ``background``: join the lines made on an event loop into one write per loop iteration
    (see :class:`_BatchingStream`); the services do, the CLI and tests write each line.
    ``listen_hosts``: this process's configured listen addresses, which uvicorn's
    "Uvicorn running on" line may then show (an IP literal equal to one of them).
    Idempotent: a second call replaces the first configuration (tests rely on this).
    """
    if fmt not in _FAILURE_LINES:
        raise ValueError(f"unknown log format {fmt!r}")
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    out = stream if stream is not None else sys.stderr

    if background:
        out = cast(TextIO, _BatchingStream(out))  # write() and flush() are all it needs
    handler = _PipelineHandler(out, _FAILURE_LINES[fmt])
    last = _last_processors(fmt, listen_hosts)
    handler.setFormatter(_build_formatter(last))

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(getattr(old, "stream", None), _BatchingStream):
            old.stream.close()  # type: ignore[attr-defined]  # its lines before the new ones
            atexit.unregister(old.stream.close)  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric_level)

    # Every logger that exists now loses its own handlers; the libraries we know about (some
    # not imported yet) also inherit our level, as uvicorn otherwise pins its own.
    for obj in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(obj, logging.Logger):
            _adopt_logger(obj)
    for name in LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        _adopt_logger(library_logger)
        library_logger.disabled = False
        library_logger.setLevel(logging.NOTSET)
    for name in _QUIET_AT_WARNING:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))

    # lastResort serves records that find no handler (propagate=False loggers created later);
    # make it the pipeline rather than a bare stderr writer.
    logging.lastResort = handler
    # With raiseExceptions=True, logging prints "--- Logging error ---" plus the record itself.
    logging.raiseExceptions = False
    logging.captureWarnings(True)

    # Our own events stay in structlog: filtered by level in the bound logger, through the
    # same processors and the same scrubber and renderer objects as a foreign record, then
    # written by the same handler (its lock, its stream, its failure line).
    structlog.configure(
        processors=[*_shared_processors(), *last],
        logger_factory=_LineLoggerFactory(handler),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        context_class=dict,
        # Not cached: tests and CLI subcommands reconfigure, and capture_logs() must still work.
        cache_logger_on_first_use=False,
    )
    _install_hooks()
