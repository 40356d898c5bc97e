"""Foreign log lines the scrubber may render with their numbers: known message templates.

A foreign logger's line (uvicorn's, say) reaches the pipeline as a format string and its
arguments. The scrubber masks every digit of the rendered text, so ``make run`` used to say
``Uvicorn running on http://***.*.*.*:****`` and ``Started server process [*****]``. For
the few templates listed here, the scrubber renders the line itself, argument by argument:
an argument passes verbatim only when the template says what it is (:class:`Arg`) and the
value passes that kind's check (an ``int`` in range for a port or a PID; a configured
listen address for a host); every other argument, and every argument of any other line,
is masked as before.

The match is exact and made on what the library passed, before formatting: the logger's
name, ``record.msg`` (the unformatted string, compared with ``==``) and the arguments'
types. A caller's digits never arrive as one of these arguments: uvicorn fills them from
its configuration (our settings) and ``os.getpid()``; and even if a caller's entry did,
it would be a ``str`` (the webhook never turns digits into numbers), which no numeric
kind accepts.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from structlog.typing import EventDict, WrappedLogger

__all__ = ["KNOWN_TEMPLATES", "SPEC", "Arg", "TemplateEvent", "capture_templates"]


class Arg(enum.Enum):
    """What one argument of a known template is, and so which check it must pass to be
    shown verbatim (:meth:`service.logs.scrubbing.Scrubber.render_template`)."""

    PORT = "port"  # an int, 1-65535: the port a listener of ours is bound to
    PID = "pid"  # an int, 1 to the kernel's PID limit: os.getpid()
    SCHEME = "scheme"  # "http" or "https"
    LISTEN_HOST = "listen_host"  # equal to a configured listen address, an IP literal
    ERRNO = "errno"  # an int the kernel names (errno.errorcode): 98, address in use
    METHOD = "method"  # an HTTP method of Vault's API: GET, POST, PUT, DELETE, LIST, ...
    REQUEST_PATH = "request_path"  # a Vault API path (/v1/...) built by our code; its query
    # string, if any, stays masked (a ciphertext may ride in one)
    HTTP_VERSION = "http_version"  # "HTTP/1.1" and the like
    STATUS = "status"  # an int, 100-599: the answer's HTTP status
    TEXT = "text"  # anything else: masked


# asyncio's create_server when the port is taken, as uvicorn logs it (``logger.error(exc)``,
# uvicorn/server.py): the exception is the message, so it is read back into this template's
# arguments (:func:`_bind_failure`) and checked like any other.
BIND_FAILED: Final = "[Errno %d] error while attempting to bind on address ('%s', %d): %s"
_BIND_TEXT: Final = re.compile(
    r"error while attempting to bind on address \('([^']*)', ([0-9]{1,5})\): ([a-z ]*)"
)

# (logger name, record.msg) → what each positional argument is. uvicorn 0.x,
# uvicorn/server.py: the start and finish lines of a server process and its listener, and
# the line that says its port is taken.
KNOWN_TEMPLATES: Final[Mapping[tuple[str, str], tuple[Arg, ...]]] = MappingProxyType(
    {
        ("uvicorn.error", "Started server process [%d]"): (Arg.PID,),
        ("uvicorn.error", "Finished server process [%d]"): (Arg.PID,),
        ("uvicorn.error", "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"): (
            Arg.SCHEME,
            Arg.LISTEN_HOST,
            Arg.PORT,
        ),
        ("uvicorn.error", "Uvicorn running on %s://[%s]:%d (Press CTRL+C to quit)"): (
            Arg.SCHEME,
            Arg.LISTEN_HOST,
            Arg.PORT,
        ),
        ("uvicorn.error", BIND_FAILED): (Arg.ERRNO, Arg.LISTEN_HOST, Arg.PORT, Arg.TEXT),
        # urllib3 2.x, connectionpool.py: each request of the blocking Vault client (requests,
        # under hvac), at DEBUG: what -vv is for. Method, path and status show; the host, and
        # the length (a four-digit one is shaped like a PIN), stay masked.
        ("urllib3.connectionpool", '%s://%s:%s "%s %s %s" %s %s'): (
            Arg.SCHEME,
            Arg.TEXT,
            Arg.PORT,
            Arg.METHOD,
            Arg.REQUEST_PATH,
            Arg.HTTP_VERSION,
            Arg.STATUS,
            Arg.TEXT,
        ),
    }
)

# One printf conversion (what ``%`` formatting understands), or a literal ``%%``.
SPEC: Final = re.compile(
    r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|[0-9]+)?(?:\.(?:\*|[0-9]+))?[hlL]?[diouxXeEfFgGcrsa%]"
)


@dataclass(frozen=True)
class TemplateEvent:
    """A foreign record's event, kept unformatted for the scrubber: ``msg`` is the
    record's ``msg``, ``args`` its positional arguments. It proves nothing by itself: the
    scrubber looks ``(logger, msg)`` up again and checks every argument."""

    logger: str
    msg: str
    args: tuple[Any, ...]


def capture_templates(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """First processor of the pipeline's ``foreign_pre_chain``: a record of a known
    template keeps its message unformatted (a :class:`TemplateEvent`) for the scrubber;
    any other record keeps the event ``logging`` formatted, exactly as before.

    Needs ``ProcessorFormatter(pass_foreign_args=True)``; removes ``positional_args``
    always, so that nothing formats the message a second time."""
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.error" and not args:
        failure = _bind_failure(record.msg)
        if failure is not None:
            event_dict["event"] = TemplateEvent(record.name, BIND_FAILED, failure)
            return event_dict
    if record is None or not isinstance(args, tuple) or not args:
        return event_dict
    msg, name = record.msg, record.name
    if type(msg) is str and type(name) is str and (name, msg) in KNOWN_TEMPLATES:
        event_dict["event"] = TemplateEvent(name, msg, args)
    return event_dict


def _bind_failure(msg: object) -> tuple[int, str, int, str] | None:
    """An OSError exactly as asyncio raises it for a port it cannot bind (IPv4), as the
    template's arguments; None for anything else."""
    if not isinstance(msg, OSError) or len(msg.args) != 2:
        return None
    code, text = msg.args
    if type(code) is not int or type(text) is not str:
        return None
    match = _BIND_TEXT.fullmatch(text)
    if match is None:
        return None
    return code, match[1], int(match[2]), match[3]
