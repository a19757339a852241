"""One SQLite connection per process for the audit trail's own-transaction appends.

Every read request appends an audit entry in a short transaction of its own. Through the
engine's pool those transactions rotated over several connections, and SQLite empties a
connection's page cache whenever another connection has written since its last transaction
(WAL mode): each append then read the head of every B-tree of ``audit_entry`` again, from
the WAL file, before it could write. On the record-store bench that was most of an entry's
cost (a search's entry: 0.36 ms through the pool, 0.12 ms on one connection; a read's 0.12 →
0.11 ms).

So on SQLite every append made outside a caller's transaction goes through one connection
per process, under a lock: the request threads, the group-commit writer thread and the
command-line tools share it. Nothing is lost by the lock: SQLite lets one connection write
at a time anyway, and the same connection's page cache stays valid between appends.

The connection stays at ``synchronous=NORMAL`` (a commit survives a crash of the process,
not of the machine) and is raised to FULL only around a durable append.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

T = TypeVar("T")

# Connections opened before a fork are never used or closed in the child (SQLite forbids
# both); they are kept here so that garbage collection does not close them either.
_INHERITED: list[sqlite3.Connection] = []


class SqliteAppender:
    """The process's one connection for audit appends on a SQLite trail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._durable = False

    def run(self, work: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        """Call ``work`` with the connection, outside any transaction, holding the lock.

        ``durable``: its commit waits for the disk (``synchronous=FULL``). On a database
        error (``sqlite3.Error``, raised as it is) the connection is closed and the next
        append opens another.
        """
        with self._lock:
            connection = self._open()
            try:
                if durable != self._durable:
                    connection.execute("PRAGMA synchronous=FULL" if durable
                                       else "PRAGMA synchronous=NORMAL")
                    self._durable = durable
                return work(connection)
            except sqlite3.Error:
                self._discard()
                raise

    def close(self) -> None:
        """Close the connection (the next append opens another). Idempotent."""
        with self._lock:
            self._discard()

    def _open(self) -> sqlite3.Connection:
        if self._connection is not None and self._pid != os.getpid():
            _INHERITED.append(self._connection)
            self._connection = None
        if self._connection is None:
            # Opened by the engine (its connect-time settings: WAL, busy timeout, cache), then
            # detached: the pool neither hands it out nor closes it.
            pooled = self.engine.raw_connection()
            driver: Any = pooled.driver_connection
            pooled.detach()
            driver.execute("PRAGMA synchronous=NORMAL")
            self._connection, self._pid, self._durable = driver, os.getpid(), False
        return self._connection

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._pid != os.getpid():
            _INHERITED.append(connection)
            return
        try:
            connection.close()
        except sqlite3.Error:
            pass
