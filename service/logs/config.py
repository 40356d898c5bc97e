"""One log pipeline for every process: our structlog events and every stdlib logger.

``configure_logging()`` is called once at each entry point (webhook, backend, CLI). Afterwards
every record, whatever produced it, is rendered by a single root handler whose formatter runs
the same processor chain, ending in the digit scrubber and then the renderer. The escape hatches
that would bypass that chain (``logging.lastResort``, ``Handler.handleError``, uncaught-exception
hooks, warnings, library-installed handlers) are closed here as well.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import signal
import sys
import threading
import types
from typing import Any, Final, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor

from service.logs.scrubbing import Scrubber

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

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib version prints the record's msg and args to stderr: exactly the digits
        # the scrubber exists to hide. Say that something failed, nothing more.
        try:
            self.stream.write(self._failure_line)
            self.flush()
        except Exception:  # noqa: S110 (nowhere safe left to report to)
            pass


class _BackgroundStream:
    """What the root handler writes to in a service: finished lines (formatted and scrubbed
    on the caller's thread, as before) go into a queue; one thread writes whatever has
    queued up in one write and one flush. The request path no longer pays a write system
    call per line (make run: unbuffered, to a terminal), and a burst becomes one write.

    Only text crosses threads, never a record with the caller's arguments (unlike
    QueueHandler/QueueListener, which would format in the listener's thread). ``close()``,
    registered with atexit, writes everything queued before the interpreter exits (normal
    exit, SystemExit, an uncaught exception, uvicorn's SIGTERM shutdown); afterwards lines
    are written directly, so even a late atexit handler's line is not lost. SIGTERM, which
    kills without atexit (uvicorn re-raises it after its graceful shutdown), first writes
    what is queued. A full queue (the terminal stopped reading) makes writers wait rather
    than grow without bound.
    """

    _STOP = object()

    def __init__(self, out: TextIO, *, limit: int = 10_000) -> None:
        self._out = out
        self._queue: queue.Queue[object] = queue.Queue(maxsize=limit)
        self._direct = False
        self._lock = threading.Lock()  # direct writes after close
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread() and (
                previous in (signal.SIG_DFL, None) or _is_flush_handler(previous)):
            signal.signal(signal.SIGTERM, self._flush_then_die)

    def _flush_then_die(self, signum: int, frame: types.FrameType | None) -> None:
        # From another thread, with a timeout: this thread may have been interrupted while
        # holding the queue's lock, and must not wait for itself.
        closer = threading.Thread(target=self.close, name="log-flush")
        closer.start()
        closer.join(timeout=5)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # die as SIGTERM would have, lines written

    def write(self, text: str) -> None:
        if self._direct:
            with self._lock:
                self._write([text])
        else:
            self._queue.put(text)

    def flush(self) -> None:
        """The writer thread flushes after each batch; the handler's flush is free."""

    def close(self) -> None:
        if self._direct:
            return
        self._direct = True
        self._queue.put(self._STOP)
        self._thread.join(timeout=10)
        with self._lock:  # anything a racing writer queued after the stop mark
            rest = []
            with contextlib.suppress(queue.Empty):
                while True:
                    rest.append(self._queue.get_nowait())
            self._write([t for t in rest if isinstance(t, str)])
        atexit.unregister(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            lines = [t for t in batch if isinstance(t, str)]
            self._write(lines)
            if len(lines) != len(batch):
                return

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._out.write("".join(lines))
            self._out.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nowhere left to report to


def _is_flush_handler(handler: object) -> bool:
    return getattr(handler, "__func__", None) is _BackgroundStream._flush_then_die


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
    kvs = " ".join(f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}"
                   for k, v in sorted(fields.items()))
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


def _build_formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            Scrubber(),  # last before the renderer
            _renderer(fmt),
        ],
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
) -> None:
    """Route structlog and every stdlib logger through one scrubbing pipeline.

    ``background``: write the lines from a thread (see :class:`_BackgroundStream`); the
    services do, the CLI and tests write synchronously.
    Idempotent: a second call replaces the first configuration (tests rely on this).
    """
    if fmt not in _FAILURE_LINES:
        raise ValueError(f"unknown log format {fmt!r}")
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    out = stream if stream is not None else sys.stderr

    if background:
        out = cast(TextIO, _BackgroundStream(out))  # write() and flush() are all it needs
    handler = _PipelineHandler(out, _FAILURE_LINES[fmt])
    handler.setFormatter(_build_formatter(fmt))

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(getattr(old, "stream", None), _BackgroundStream):
            old.stream.close()  # type: ignore[attr-defined]  # its lines before the new ones
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

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Not cached: tests and CLI subcommands reconfigure, and capture_logs() must still work.
        cache_logger_on_first_use=False,
    )
    _install_hooks()
