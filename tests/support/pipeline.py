"""The log pipeline installed in-process, with every global it touches put back afterwards."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from service.logs.config import LIBRARY_LOGGERS, configure_logging

LoggerState = tuple[list[logging.Handler], bool, int, bool]


@contextmanager
def installed_pipeline() -> Iterator[io.StringIO]:
    """configure_logging(stream=StringIO) and put every global it touches back afterwards."""
    loggers = [logging.getLogger(n) for n in LIBRARY_LOGGERS] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved: dict[logging.Logger, LoggerState] = {
        lg: (list(lg.handlers), lg.propagate, lg.level, lg.disabled) for lg in [*loggers]
    }
    root = logging.getLogger()
    root_state = (list(root.handlers), root.level)
    globals_ = (logging.lastResort, logging.raiseExceptions)
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    structlog_config = structlog.get_config()
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        yield stream
    finally:
        logging.captureWarnings(False)
        structlog.configure(**structlog_config)
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
        logging.lastResort, logging.raiseExceptions = globals_
        root.handlers[:] = root_state[0]
        root.setLevel(root_state[1])
        for lg, (handlers, propagate, level, disabled) in saved.items():
            lg.handlers[:] = handlers
            lg.propagate, lg.level, lg.disabled = propagate, level, disabled
