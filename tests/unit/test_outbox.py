"""The SQLite outbox: ordering, acknowledgement, persistence, sequence numbers, bound policy."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmcore.errors import PublishError
from nmcore.publish.outbox import SEQ_BLOCK, Kind, Outbox, PutResult


def fill(ob: Outbox, kinds: str) -> list[int]:
    """Store one message per letter: 'e' event, 'r' result. Returns their seqs."""
    seqs = []
    for k in kinds:
        seq = ob.next_seq()
        ob.put(seq, Kind.EVENT if k == "e" else Kind.RESULT, f"t/{k}", f"{k}{seq}".encode())
        seqs.append(seq)
    return seqs


def test_rows_come_back_in_seq_order_and_ack_deletes(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 100)
    seqs = fill(ob, "erere")
    rows = ob.fetch_after(0, 3)
    assert [r[0] for r in rows] == seqs[:3]
    assert rows[0][1:] == ("t/e", f"e{seqs[0]}".encode())
    assert [r[0] for r in ob.fetch_after(seqs[2], 10)] == seqs[3:]
    assert ob.ack(seqs[1])
    assert not ob.ack(seqs[1])  # already gone
    assert ob.depth == 4
    assert [r[0] for r in ob.fetch_after(0, 10)] == [seqs[0], *seqs[2:]]
    ob.close()


def test_messages_and_sequence_survive_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 100)
    seqs = fill(ob, "rrr")
    ob.ack(seqs[0])
    ob.close()
    ob = Outbox(tmp_path / "o.db", 100)
    assert ob.depth == 2
    assert [r[0] for r in ob.fetch_after(0, 10)] == seqs[1:]
    assert ob.next_seq() > seqs[-1]
    ob.close()


def test_sequence_never_repeats_even_when_rows_are_gone(tmp_path: Path) -> None:
    """The reservation in `meta` keeps seq increasing though every row was acknowledged."""
    path = tmp_path / "o.db"
    highest = 0
    for _ in range(3):
        ob = Outbox(path, 100)
        for s in fill(ob, "e" * 5):
            assert s > highest
            highest = s
            ob.ack(s)
        ob.close()
    # a restart skips at most one reservation block
    assert highest <= 3 * SEQ_BLOCK


def test_sequence_crosses_reservation_blocks(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 100)
    seqs = [ob.next_seq() for _ in range(SEQ_BLOCK * 2 + 5)]
    assert seqs == list(range(1, len(seqs) + 1))
    ob.close()
    ob = Outbox(tmp_path / "o.db", 100)
    assert ob.next_seq() > seqs[-1]
    ob.close()


def test_full_outbox_evicts_oldest_event_never_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ob = Outbox(tmp_path / "o.db", 4)
    seqs = fill(ob, "erer")
    caplog.set_level(logging.DEBUG, "nmcore.publish.outbox")
    # a new event evicts the oldest event
    s = ob.next_seq()
    assert ob.put(s, Kind.EVENT, "t/e", b"new") is PutResult.STORED_EVICTED_EVENT
    assert [r[0] for r in ob.fetch_after(0, 10)] == [seqs[1], seqs[2], seqs[3], s]
    # a result also evicts the oldest event
    s2 = ob.next_seq()
    assert ob.put(s2, Kind.RESULT, "t/r", b"res") is PutResult.STORED_EVICTED_EVENT
    assert ob.depth == 4
    assert ob.dropped_events == 2
    # now only results and one event; evict it, then events are refused, results kept
    s3 = ob.next_seq()
    assert ob.put(s3, Kind.RESULT, "t/r", b"res") is PutResult.STORED_EVICTED_EVENT
    s4 = ob.next_seq()
    assert ob.put(s4, Kind.EVENT, "t/e", b"late") is PutResult.DROPPED
    s5 = ob.next_seq()
    assert ob.put(s5, Kind.RESULT, "t/r", b"kept") is PutResult.STORED_OVER_LIMIT
    rows = ob.fetch_after(0, 10)
    assert all(t == "t/r" for _, t, _ in rows)
    assert len(rows) == 5 == ob.depth
    assert ob.dropped_events == 4
    assert ob.results_over_limit == 1
    assert any("never dropped" in r.message and r.levelno == logging.ERROR for r in caplog.records)
    assert any("dropped" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    ob.close()


def test_second_owner_is_refused_with_a_fix(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 10)
    with pytest.raises(PublishError, match="another nmcore daemon"):
        Outbox(tmp_path / "o.db", 10, lock_timeout_s=0.05)
    ob.close()
    Outbox(tmp_path / "o.db", 10).close()  # free again


def test_database_is_wal(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.db", 10).close()
    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("erA"), st.integers(0, 30)), max_size=60))
def test_outbox_matches_a_plain_model(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    """Random puts/acks against a dict model with the same eviction rule."""
    limit = 6
    ob = Outbox(tmp_path_factory.mktemp("ob") / "o.db", limit)
    model: dict[int, Kind] = {}
    for op, n in ops:
        if op == "A":
            keys = sorted(model)
            if keys:
                seq = keys[n % len(keys)]
                del model[seq]
                assert ob.ack(seq)
            continue
        kind = Kind.EVENT if op == "e" else Kind.RESULT
        seq = ob.next_seq()
        res = ob.put(seq, kind, "t", b"x")
        events = sorted(s for s, k in model.items() if k is Kind.EVENT)
        if len(model) < limit:
            assert res is PutResult.STORED
            model[seq] = kind
        elif events:
            assert res is PutResult.STORED_EVICTED_EVENT
            del model[events[0]]
            model[seq] = kind
        elif kind is Kind.EVENT:
            assert res is PutResult.DROPPED
        else:
            assert res is PutResult.STORED_OVER_LIMIT
            model[seq] = kind
        assert ob.depth == len(model)
    assert [r[0] for r in ob.fetch_after(0, 1000)] == sorted(model)
    ob.close()
