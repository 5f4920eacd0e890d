"""The on-disk outbox: events and trial results wait here until the broker acknowledged them.

SQLite in WAL mode, one row per message, keyed by its `seq`. A row is deleted only after the
broker's PUBACK, so a broker outage or a daemon crash loses nothing; after a restart the rows
left are sent first, in `seq` order. The database also keeps the sequence counter, so `seq`
keeps increasing across restarts (allocated in blocks: one write per `SEQ_BLOCK` numbers, at
the price of a gap after a restart).

Durability: `synchronous=NORMAL` in WAL mode survives a crash of the daemon (the kernel
holds the written pages) but a power cut may lose the last commits; `synchronous=FULL`
(`durable=True`) fsyncs every message at ~1-10 ms each on an SD card or a disk.

Bound (`max_messages`) and what happens when it is reached, most expendable first:
1. live data never enters the outbox (QoS 0, dropped and counted when it cannot be sent);
2. a new event evicts the oldest stored *event*; if only results are stored the new event is
   dropped; both are counted (`dropped_events`) and logged;
3. trial results are never dropped: the bound is exceeded for them (logged at ERROR and
   counted in `results_over_limit`). A result is a few KB once per trial, so the disk fills
   only after days of trials without a broker; losing the lab's measurement is worse.

Synchronous on purpose (no asyncio here): one insert and commit costs tens of microseconds,
cheap enough for the event loop at event rates. What is not cheap is a WAL checkpoint (it
writes the database file and fsyncs it: 5-25 ms measured here); with `manual_checkpoint=True`
the owner runs `checkpoint()` in a worker thread instead (it uses its own connection), so the
event loop never waits for one.

One owner per database: a lock file (`<outbox>.lock`, flock) refuses a second daemon at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from enum import IntEnum
from pathlib import Path

from nmcore.errors import PublishError

__all__ = ["SEQ_BLOCK", "Kind", "Outbox", "PutResult"]

_log = logging.getLogger(__name__)

# One meta write per this many sequence numbers; a restart skips at most this many.
SEQ_BLOCK = 1024
# After the first, report repeated losses only every N (they come in bursts when full).
_LOG_EVERY = 1000


class Kind(IntEnum):
    EVENT = 1  # may be evicted when the outbox is full (oldest first)
    RESULT = 2  # never evicted


class PutResult(IntEnum):
    STORED = 0
    STORED_EVICTED_EVENT = 1  # stored; the oldest event was deleted to make room
    DROPPED = 2  # the new event was not stored (outbox full of results)
    STORED_OVER_LIMIT = 3  # a result stored beyond max_messages


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind_seq ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """A bounded, durable FIFO of (seq, topic, payload). Not thread-safe; one owner."""

    def __init__(
        self,
        path: Path,
        max_messages: int,
        *,
        durable: bool = False,
        manual_checkpoint: bool = False,
        lock_timeout_s: float = 2.0,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = Path(path)
        self.max_messages = max_messages
        self.dropped_events = 0
        self.results_over_limit = 0
        self._sync = "FULL" if durable else "NORMAL"
        self._ckpt_db: sqlite3.Connection | None = None
        self._ckpt_lock = threading.Lock()
        self._writes_since_checkpoint = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=lock_timeout_s, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self._sync}")
            if manual_checkpoint:
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SCHEMA)
            (depth,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            (max_seq,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
            row = self._db.execute("SELECT value FROM meta WHERE key='seq_reserved'").fetchone()
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise PublishError(f"cannot open the MQTT outbox {self.path}: {exc}") from exc
        self._depth = int(depth)
        reserved = int(row[0]) if row else 0
        # Everything up to `reserved` may have been handed out before a crash: start above it.
        self._next_seq = max(reserved, int(max_seq)) + 1
        self._reserved = self._next_seq - 1

    def _take_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise PublishError(
                f"the MQTT outbox {self.path} is in use by another process. Is another nmcore "
                "daemon using the same state directory? Stop it or give this one its own "
                "mqtt.outbox_path."
            ) from exc
        return fd

    # -- sequence numbers ---------------------------------------------------------------------
    def next_seq(self) -> int:
        """A sequence number never handed out before by this database."""
        seq = self._next_seq
        if seq > self._reserved:
            self._reserved = seq + SEQ_BLOCK - 1
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES('seq_reserved', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self._reserved,),
            )
        self._next_seq = seq + 1
        return seq

    # -- messages -----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Messages waiting for a broker acknowledgement."""
        return self._depth

    def put(self, seq: int, kind: Kind, topic: str, payload: bytes) -> PutResult:
        """Store one message (committed before returning), applying the bound policy.
        Raises PublishError if the database cannot be written (disk full, I/O error)."""
        try:
            return self._put(seq, kind, topic, payload)
        except sqlite3.Error as exc:
            raise PublishError(
                f"the MQTT outbox {self.path} cannot store a message ({exc}); the message "
                f"for {topic} is NOT saved. Free disk space in {self.path.parent}."
            ) from exc

    def _put(self, seq: int, kind: Kind, topic: str, payload: bytes) -> PutResult:
        db = self._db
        if self._depth < self.max_messages:
            db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (seq, int(kind), topic, payload))
            self._depth += 1
            self._writes_since_checkpoint += 1
            return PutResult.STORED
        db.execute("BEGIN IMMEDIATE")
        try:
            evicted = db.execute(
                "DELETE FROM outbox WHERE seq = "
                "(SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1)",
                (int(Kind.EVENT),),
            ).rowcount
            if evicted == 0 and kind is Kind.EVENT:
                db.execute("COMMIT")
                self._count_dropped_event(f"the new event on {topic} (only results stored)")
                return PutResult.DROPPED
            db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (seq, int(kind), topic, payload))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._writes_since_checkpoint += 1
        if evicted:
            self._count_dropped_event("the oldest stored event")
            return PutResult.STORED_EVICTED_EVENT
        self._depth += 1
        self.results_over_limit += 1
        if self.results_over_limit == 1 or self.results_over_limit % _LOG_EVERY == 0:
            _log.error(
                "MQTT outbox holds %d messages, over its limit of %d, and they are all trial "
                "results, which are never dropped; check the broker connection (%d results over "
                "the limit so far)",
                self._depth,
                self.max_messages,
                self.results_over_limit,
            )
        return PutResult.STORED_OVER_LIMIT

    def _count_dropped_event(self, which: str) -> None:
        self.dropped_events += 1
        n = self.dropped_events
        level = logging.WARNING if n == 1 or n % _LOG_EVERY == 0 else logging.DEBUG
        _log.log(
            level,
            "MQTT outbox full (%d messages, the broker has been unreachable): dropped %s; "
            "%d events dropped so far. Trial results are kept.",
            self._depth,
            which,
            n,
        )

    def fetch_after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` stored messages with a sequence number above `seq`, oldest first."""
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [(int(s), str(t), bytes(p)) for s, t, p in rows]

    def ack(self, seq: int) -> bool:
        """The broker has the message: delete it. False if it was already gone (evicted)."""
        deleted = self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
        self._depth -= deleted
        self._writes_since_checkpoint += 1
        return deleted > 0

    def ack_many(self, seqs: list[int]) -> int:
        """Delete several acknowledged messages in one transaction; returns how many existed."""
        if not seqs:
            return 0
        db = self._db
        db.execute("BEGIN")
        try:
            deleted = db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._depth -= deleted.rowcount
        self._writes_since_checkpoint += 1
        return int(deleted.rowcount)

    @property
    def needs_checkpoint(self) -> bool:
        return self._writes_since_checkpoint > 0

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never blocks the writer). Safe to call
        from a worker thread while the owner keeps writing: it has its own connection."""
        self._writes_since_checkpoint = 0
        with self._ckpt_lock:
            if self._ckpt_db is None:
                self._ckpt_db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._ckpt_db.execute(f"PRAGMA synchronous={self._sync}")
            self._ckpt_db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with self._ckpt_lock:
            if self._ckpt_db is not None:
                self._ckpt_db.close()
                self._ckpt_db = None
        self._db.close()
        os.close(self._lock_fd)  # releases the flock
