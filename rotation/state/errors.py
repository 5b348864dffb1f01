"""Database failures as one :class:`StateDBError` line, chosen by error code.

SQLite errors carry ``sqlite_errorcode`` (https://sqlite.org/rescode.html),
psycopg errors a SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html).
A failure to *connect* to PostgreSQL has no SQLSTATE (libpq reports it
before any result exists): it is "unreachable", or "does not exist" when
the server said the database does not exist (the one case read from the
message).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from keystead.rotation.state.records import StateDBError

# SQLite primary result codes.
_BUSY, _LOCKED, _CORRUPT, _CANTOPEN, _NOTADB = 5, 6, 11, 14, 26
# PostgreSQL SQLSTATEs (classes are the first two characters).
_NO_DATABASE = "3D000"
_STATEMENT_TIMEOUT = "57014"
_LOCK_TIMEOUT = "55P03"
_UNREACHABLE_CLASSES = ("08", "57P")  # connection exceptions; admin/crash shutdown, cannot connect now


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def message(exc: DBAPIError, where: str, doing: str, *, busy_timeout: float) -> str:
    """The one line a user sees for ``exc`` raised while ``doing`` on the database ``where``."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        code &= 0xFF
        if code in (_BUSY, _LOCKED):
            return f"state database {where} is locked by another process (gave up after {busy_timeout:g}s)"
        if code in (_CORRUPT, _NOTADB):
            return (f"state database {where} is corrupt ({orig}); move it aside and run again: "
                    "keystead rebuilds the rotation state from the vault")
        if code == _CANTOPEN:
            return f"state database {where}: cannot open the file ({orig})"
        return f"state database {where}: {doing} failed: {_first_line(orig)}"
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == _NO_DATABASE:
        return f"state database {where} does not exist: create it (createdb) or fix state_url"
    if sqlstate in (_STATEMENT_TIMEOUT, _LOCK_TIMEOUT):
        return f"state database {where}: {doing} timed out: {_first_line(orig)}"
    if sqlstate and sqlstate.startswith(_UNREACHABLE_CLASSES):
        return f"state database {where} is unreachable: {_first_line(orig)}"
    if sqlstate is None and _is_connect_failure(orig):
        if "does not exist" in str(orig):  # FATAL 3D000 during the startup packet: no SQLSTATE here
            return f"state database {where} does not exist: create it (createdb) or fix state_url"
        return f"state database {where} is unreachable: {_first_line(orig)}"
    return f"state database {where}: {doing} failed: {_first_line(orig)}"


def transient(exc: DBAPIError) -> bool:
    """Whether the failure may pass on its own: a lost or refused connection, a timeout, a lock
    wait (SQLite busy). Corruption, a missing database or a bad statement do not."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_BUSY, _LOCKED)
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in (_STATEMENT_TIMEOUT, _LOCK_TIMEOUT, "40001", "40P01"):  # + serialization, deadlock
        return True
    if sqlstate and sqlstate.startswith(_UNREACHABLE_CLASSES):
        return True
    return sqlstate is None and _is_connect_failure(orig) and "does not exist" not in str(orig)


def _is_connect_failure(orig: BaseException | None) -> bool:
    return type(orig).__name__ == "OperationalError" and type(orig).__module__.startswith("psycopg")


@contextlib.contextmanager
def translated(where: str, doing: str, *, busy_timeout: float) -> Iterator[None]:
    """Turn database failures inside the block into StateDBError (``raise … from``)."""
    try:
        yield
    except DBAPIError as exc:
        raise StateDBError(message(exc, where, doing, busy_timeout=busy_timeout), transient=transient(exc)) from exc
    except SQLAlchemyError as exc:
        raise StateDBError(f"state database {where}: {doing} failed: {exc}") from exc
