"""The durable MQTT outbox on its own: order, bounds, overflow policy, expiry, crash survival, one owner."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.errors import InspectorError
from inspector.mqtt.outbox import Outbox, OutboxMessage


def msg(i: int, kind: str = "ok", *, size: int = 100, expires_at: float | None = None) -> OutboxMessage:
    return OutboxMessage(
        message_id=f"m{i:05d}",
        topic="t/verdict",  # 9 bytes: size counts payload + topic
        payload=b"x" * (size - 9),
        kind=kind,  # type: ignore[arg-type]
        schema="line-inspector/frame-verdict",
        schema_version="1.0",
        expires_at=expires_at,
    )


def ids(rows) -> list[str]:
    return [row.message.message_id for row in rows]


def test_rows_come_back_in_order_and_leave_on_ack(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        seqs = box.append([msg(0), msg(1, "ng"), msg(2, "reject")])
        assert seqs == sorted(seqs) and len(box) == 3 and box.bytes == 300
        rows = box.take(0, 10)
        assert ids(rows) == ["m00000", "m00001", "m00002"]
        assert rows[2].message.kind == "reject" and rows[0].message.payload == b"x" * 91
        assert ids(box.take(rows[0].seq, 10)) == ["m00001", "m00002"]  # resume after a seq
        assert box.ack([rows[0].seq, rows[2].seq]) == 2
        assert ids(box.take(0, 10)) == ["m00001"]
        assert box.ack([rows[0].seq]) == 0  # a late duplicate PUBACK is harmless
        assert box.stats()["outbox_by_kind"] == {"ok": 0, "ng": 1, "uncertain": 0, "reject": 0}
        assert box.stats()["outbox_high_water"] == 3  # the most ever waiting, not the depth now


def test_contents_and_sequence_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        first = box.append([msg(0), msg(1)])
        box.ack(first)  # the table is empty now
        box.append([msg(2)])
    with Outbox(path) as box:
        assert ids(box.take(0, 10)) == ["m00002"] and len(box) == 1 and box.bytes == 100
        (later,) = box.append([msg(3)])
        assert later > max(first) + 1  # sequence numbers are never reused
        assert ids(box.take(0, 10)) == ["m00002", "m00003"]


def test_drop_oldest_ok_drops_ok_then_uncertain_then_ng_never_rejects(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=10, max_bytes=10**6) as box:
        kinds = ["reject", "ng", "ok", "uncertain", "ok", "reject", "ng", "ok", "uncertain", "ok"]
        box.append([msg(i, k) for i, k in enumerate(kinds)])
        box.append([msg(10, "ok"), msg(11, "ok")])  # two OK must go: the oldest OK, m2 and m4
        assert ids(box.take(0, 100)) == [f"m{i:05d}" for i in (0, 1, 3, 5, 6, 7, 8, 9, 10, 11)]
        box.append([msg(i, "ng") for i in range(12, 17)])  # 5 more: the 4 OK left, then the oldest UNCERTAIN
        assert ids(box.take(0, 100)) == [f"m{i:05d}" for i in (0, 1, 5, 6, 8, *range(12, 17))]
        box.append([msg(i, "reject") for i in range(17, 30)])  # rejects push out every verdict, then exceed
        remaining = box.take(0, 100)
        assert {r.message.kind for r in remaining} == {"reject"} and len(remaining) == 15
        assert box.counters() == {"dropped_ok": 6, "dropped_uncertain": 2, "dropped_ng": 7}


def test_only_rejects_may_exceed_the_bound(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=3) as box:
        box.append([msg(0, "reject"), msg(1, "reject"), msg(2, "ok")])
        box.append([msg(3, "ng"), msg(4, "reject")])  # NG verdict + its reject: the stored OK goes, then the new NG
        assert ids(box.take(0, 10)) == ["m00000", "m00001", "m00004"]
        box.append([msg(5, "ok")])  # nothing but rejects stored: the new OK itself is dropped
        box.append([msg(6, "reject")])  # a reject is kept even past the bound
        assert ids(box.take(0, 10)) == ["m00000", "m00001", "m00004", "m00006"]
        assert box.counters() == {"dropped_ok": 2, "dropped_ng": 1}


def test_drop_oldest_ignores_kind_but_spares_rejects(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=4, overflow="drop_oldest") as box:
        box.append([msg(0, "reject"), msg(1, "ng"), msg(2, "ok"), msg(3, "uncertain")])
        box.append([msg(4, "ok")])
        assert ids(box.take(0, 10)) == ["m00000", "m00002", "m00003", "m00004"]
        assert box.counters() == {"dropped_ng": 1}


def test_drop_new_refuses_new_verdicts_but_keeps_their_rejects(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=3, overflow="drop_new") as box:
        box.append([msg(0), msg(1), msg(2)])
        assert box.append([msg(3, "ng"), msg(4, "reject")]) != []
        assert ids(box.take(0, 10)) == ["m00000", "m00001", "m00002", "m00004"]
        assert box.counters() == {"dropped_ng": 1}


def test_byte_bound(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_bytes=1000) as box:
        box.append([msg(i, size=300) for i in range(3)])
        box.append([msg(3, size=300)])  # 1200 > 1000: the oldest OK goes
        assert ids(box.take(0, 10)) == ["m00001", "m00002", "m00003"] and box.bytes == 900


def test_expired_rejects_are_dropped_and_counted_not_sent(tmp_path: Path) -> None:
    now = time.time()
    with Outbox(tmp_path / "o.sqlite") as box:
        box.append([msg(0, "ng"), msg(1, "reject", expires_at=now + 5), msg(2, "ok")])
        assert ids(box.take(0, 10, now=now)) == ["m00000", "m00001", "m00002"]
        assert ids(box.take(0, 10, now=now + 6)) == ["m00000", "m00002"]
        assert box.counters() == {"expired": 1} and len(box) == 2
        box.append([msg(3, "reject", expires_at=now - 1)])
        assert box.purge_expired(now=now) == 1 and box.counters() == {"expired": 2}


def test_expired_rejects_make_room_before_the_policy_drops_verdicts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=2) as box:
        box.append([msg(0, "reject", expires_at=time.time() - 1), msg(1, "ok")])
        box.append([msg(2, "ok")])
        assert ids(box.take(0, 10)) == ["m00001", "m00002"]
        assert box.counters() == {"expired": 1}


def test_drop_counters_persist_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, max_messages=1) as box:
        box.append([msg(0)])
        box.append([msg(1)])
        box.discard([box.take(0, 1)[0].seq], "refused")
    with Outbox(path) as box:
        assert box.counters() == {"dropped_ok": 1, "refused": 1}


def test_second_owner_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path):
        with pytest.raises(InspectorError, match="in use by another running publisher"):
            Outbox(path)
    Outbox(path).close()  # free again once closed


def test_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InspectorError, match="cannot open the MQTT outbox"):
        Outbox(path)


def test_appended_rows_survive_sigkill(tmp_path: Path) -> None:
    """synchronous=NORMAL in WAL mode: once append() returned, a killed process loses nothing."""
    path = tmp_path / "o.sqlite"
    child = textwrap.dedent(
        f"""
        import sys
        from inspector.mqtt.outbox import Outbox, OutboxMessage
        box = Outbox({str(path)!r})
        i = 0
        while True:
            box.append([OutboxMessage(f"m{{i}}", "t", b"{{}}", "ok", "s", "1")])
            print(i, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = -1
    for line in proc.stdout:
        reported = int(line)
        if reported >= 300:
            break
    proc.kill()
    proc.wait()
    with Outbox(path) as box:
        stored = [int(r.message.message_id[1:]) for r in box.take(0, 10**6)]
    assert stored[: reported + 1] == list(range(reported + 1))  # everything acknowledged to the caller, in order


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["append", "ack", "flush", "reopen"]), st.integers(1, 5)), max_size=30))
def test_counts_and_order_stay_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ops) -> None:
    # A memory window of 3 rows: take() and ack() cross between memory and the file all the time.
    path = tmp_path / f"h{time.monotonic_ns()}.sqlite"
    box = Outbox(path, max_messages=8, memory_rows=3)
    made = 0
    try:
        for op, n in ops:
            if op == "append":
                box.append([msg(made + j, "reject" if (made + j) % 7 == 0 else "ok") for j in range(n)])
                made += n
            elif op == "ack":
                box.ack([row.seq for row in box.take(0, n)])
            elif op == "flush":
                box.flush()
            else:
                before = ids(box.take(0, 10**6))
                box.close()
                box = Outbox(path, max_messages=8, memory_rows=3)
                assert ids(box.take(0, 10**6)) == before  # close() wrote every acknowledgement
            rows = box.take(0, 10**6)
            assert [r.seq for r in rows] == sorted(r.seq for r in rows)
            assert len(rows) == len(box) and sum(r.message.size for r in rows) == box.bytes
            assert sum(1 for r in rows if r.message.kind == "ok") == 0 or len(rows) <= 8
            assert ids(box.take(rows[0].seq, 10**6)) == ids(rows[1:]) if rows else True  # resuming mid-way
    finally:
        box.close()


def _stored_ids(path: Path) -> list[str]:
    """What the file holds, through a connection of its own: only committed rows are visible there."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT message_id FROM outbox ORDER BY seq")]


def test_appends_that_arrive_during_a_commit_share_the_next_one_and_each_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        box.append([msg(0)])
        before = box.commits
        # Another writer holds SQLite's write lock: the first append's commit cannot finish.
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        returned: list[int] = []
        threads = [threading.Thread(target=lambda i=i: returned.append(box.append([msg(i)])[0])) for i in range(1, 9)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(box._queue) < 7 and time.monotonic() < deadline:  # one leads (blocked), seven wait
            time.sleep(0.01)
        assert returned == []  # nobody returns before their row is committed
        blocker.execute("COMMIT")
        blocker.close()
        for thread in threads:
            thread.join(10)
        assert len(returned) == 8 and sorted(_stored_ids(path)) == [f"m{i:05d}" for i in range(9)]
        assert ids(box.take(0, 100)) == _stored_ids(path)  # memory and file agree on the order
        assert box.commits - before == 2  # the blocked leader's own, then one for the seven that queued


def test_an_acknowledgement_reaches_the_file_with_the_next_commit_or_flush(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        seqs = box.append([msg(0), msg(1), msg(2)])
        assert box.ack(seqs[:2]) == 2 and len(box) == 1 and ids(box.take(0, 10)) == ["m00002"]
        assert box.ack(seqs[:1]) == 0  # a duplicate PUBACK before the flush counts nothing
        # Not in the file yet: a crash now re-sends m0 and m1 (duplicates), it loses nothing.
        assert _stored_ids(path) == ["m00000", "m00001", "m00002"]
        box.append([msg(3)])  # the acknowledgements ride along with the next commit
        assert _stored_ids(path) == ["m00002", "m00003"]
        box.ack([box.take(0, 1)[0].seq])
        box.flush()
        assert _stored_ids(path) == ["m00003"]


def test_rows_older_than_the_memory_window_come_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Outbox(tmp_path / "o.sqlite", memory_rows=4) as box:
        box.append([msg(i) for i in range(10)])
        rows = box.take(0, 100)
        assert ids(rows) == [f"m{i:05d}" for i in range(10)]
        assert box.ack([rows[0].seq, rows[9].seq]) == 2  # one from the file, one from memory
        assert ids(box.take(rows[5].seq, 100)) == [f"m{i:05d}" for i in range(6, 9)]
        assert len(box) == 8 and box.bytes == 800


def test_acknowledged_rows_are_never_counted_as_overflow_drops(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_messages=3) as box:
        box.append([msg(0), msg(1), msg(2)])
        box.ack([row.seq for row in box.take(0, 2)])  # delivered, not yet written down
        box.append([msg(3), msg(4), msg(5)])  # 1 + 3 > 3: the oldest undelivered OK goes, nothing else
        assert ids(box.take(0, 10)) == ["m00003", "m00004", "m00005"]
        assert box.counters() == {"dropped_ok": 1} and len(box) == 3
