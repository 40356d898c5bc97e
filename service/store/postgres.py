"""PostgreSQL for the account store: psycopg 3 and a psycopg_pool connection pool.

Each backend process keeps one pool, as large as its threads that run store work; every
replica's pool talks to the same database, which is what makes lockouts, caller limits,
remembered answers and sealed records shared across replicas. Connections are in
autocommit, so a read is one statement and one round trip; a write opens one explicit
transaction (``BEGIN`` … ``COMMIT``) at READ COMMITTED, and the ledger takes the row locks
that make a lookup's decision atomic (``service/store/accounts.py``, :class:`PostgresLedger`).

psycopg's and the pool's exceptions stop here: a connection that cannot be made or was
lost becomes :class:`~service.errors.StoreUnavailable`, a unique-key violation
:class:`~service.errors.StoreConflict`. Their messages name the store by its display URL
and never carry the password (libpq's own messages do not quote it; a password that shows
up anyway is cut out) nor a row's values (a unique violation's DETAIL quotes the key:
only the constraint's name is kept).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from service.errors import StoreConflict, StoreUnavailable
from service.settings import StoreUrl

T = TypeVar("T")

# How long opening the store (libpq's connect_timeout) may take before it counts as
# unavailable.
CONNECT_TIMEOUT_S = 5.0
# How long a request waits for a pooled connection. The pool is as large as the threads
# that use it, so this only runs out while PostgreSQL cannot be reached: a lookup then
# answers 503 within the webhook's 2 s BACKEND_TIMEOUT (the caller hears "try later"),
# and /readyz says {"store": false} within its own 2 s (measured: tests/integration/store/
# test_store_outage.py; with 5 s, /readyz said only that it timed out).
WAIT_S = 1.0
# The connections that serve callers' lookups (``serving=True``: the backend's) carry
# limits the server applies to them, so that a backend that stops mid-transaction (paused,
# frozen, cut off) does not hold its call, caller and account locks until TCP notices
# (about 2 h by default), making the other backend's retry of the same call, and every
# lookup of that account or caller number, wait. A decision's transaction runs its few
# statements back to back (milliseconds); one idle for IDLE_IN_TRANSACTION_S has a client
# that stopped: the server ends it and its locks go, within the webhook's request budget
# (2.5 s), so that the retry on the other backend still answers (measured: make run-ha,
# one backend SIGSTOPped for 10 s: tests/integration/ha/test_ha_drills.py). The keepalives
# and TCP_USER_TIMEOUT find a dead peer in seconds, on both ends: the server frees the
# session of a backend that is gone, the backend drops a connection to a server that is.
IDLE_IN_TRANSACTION_S = 1.0
TCP_USER_TIMEOUT_S = 5.0
KEEPALIVE = {"idle": 5, "interval": 2, "count": 3}  # seconds, seconds, probes
SERVING_OPTIONS = (
    f"-c idle_in_transaction_session_timeout={round(IDLE_IN_TRANSACTION_S * 1000)}"
    f" -c tcp_user_timeout={round(TCP_USER_TIMEOUT_S * 1000)}"
    + "".join(f" -c tcp_keepalives_{k}={v}" for k, v in KEEPALIVE.items())
)


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A pooled psycopg connection behind the store's ``?`` placeholders. ``raw`` is the
    psycopg connection itself, for what only PostgreSQL has (``COPY``)."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(_placeholders(sql), parameters)


class PostgresDatabase:
    """The PostgreSQL :class:`~service.store.database.Database`."""

    engine: Literal["postgresql"] = "postgresql"

    def __init__(
        self,
        url: StoreUrl,
        *,
        pool_size: int = 4,
        timeout: float = CONNECT_TIMEOUT_S,
        wait: float = WAIT_S,
        serving: bool = False,
    ) -> None:
        assert url.conninfo is not None
        self.url = url
        conninfo = url.conninfo.reveal()
        self._password = str(_conninfo_field(conninfo, "password") or "")
        connect: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, round(timeout))}
        if serving:
            connect.update(_serving_limits(conninfo))
        # One connection first: a store that cannot be reached fails here at once, with
        # libpq's own reason in one line (the pool would retry in the background, log a
        # warning each time, and then say only that it timed out).
        try:
            psycopg.connect(conninfo, **connect).close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{url.display}: cannot connect ({self._reason(exc)})") from None
        # check: a connection that died while idle (a PostgreSQL restart, a failover) is
        # replaced before use instead of failing the request that drew it; it costs one
        # empty round trip per use.
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            timeout=wait,
            name="ivr-store",
            check=ConnectionPool.check_connection,
            kwargs=connect,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"{url.display}: no connection within {timeout:g}s") from None

    @property
    def display(self) -> str:
        return self.url.display

    def _reason(self, exc: BaseException) -> str:
        """libpq's first line (``… failed: Connection refused``), without the password,
        should it ever be in there."""
        text = next(
            (line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__
        ).removeprefix("connection failed: ")
        if self._password:
            text = text.replace(self._password, "**********")
        return text

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[PgConnection]:
        try:
            with self._pool.connection() as raw:
                yield PgConnection(raw)
        except psycopg.IntegrityError as exc:
            where = exc.diag.constraint_name or exc.diag.table_name or "a constraint"
            raise StoreConflict(f"{self.url.display}: {where} would be violated") from None
        # IdleInTransactionSessionTimeout: the server ended this session's transaction
        # while this process was stopped (IDLE_IN_TRANSACTION_S); nothing committed. It is
        # an InternalError to psycopg: without it here, a backend resumed after a pause
        # answered 500.
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            PoolTimeout,
            psycopg.errors.IdleInTransactionSessionTimeout,
        ) as exc:
            raise StoreUnavailable(f"{self.url.display}: {self._reason(exc)}") from None

    def run(
        self,
        work: Callable[[PgConnection], T],
        *,
        write: bool = False,
        timeout: float | None = None,
    ) -> T:
        """``timeout`` (with ``write``): the transaction's statements, and its waits for
        locks, end with an error past it (StoreUnavailable: nothing committed)."""
        with self._connection() as conn:
            if not write:
                return work(conn)
            with conn.raw.transaction():
                if timeout is not None:
                    limit = f"{max(1, round(timeout * 1000))}ms"
                    conn.raw.execute(
                        "SELECT set_config('statement_timeout', %s, true),"
                        " set_config('lock_timeout', %s, true)",
                        (limit, limit),
                    )
                return work(conn)


def _serving_limits(conninfo: str) -> dict[str, Any]:
    """libpq's own keepalives and TCP_USER_TIMEOUT, and the server's limits as startup
    options, after any ``options`` the STORE_URL gives."""
    given = str(_conninfo_field(conninfo, "options") or "")
    return {
        "keepalives": 1,
        **{f"keepalives_{k}": v for k, v in KEEPALIVE.items()},
        "tcp_user_timeout": round(TCP_USER_TIMEOUT_S * 1000),
        "options": f"{given} {SERVING_OPTIONS}".strip(),
    }


def _conninfo_field(conninfo: str, name: str) -> object:
    try:
        return conninfo_to_dict(conninfo).get(name)
    except psycopg.ProgrammingError:  # not parseable: the pool will say so, without it
        return None
