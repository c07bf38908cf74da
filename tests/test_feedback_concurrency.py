"""Durability and concurrency of the feedback store, with real processes.

- A writer process (the chat) and a reader process (a trainer building its views and
  recording its run) share the database for 20 s: no lost row, no "database is locked"
  reaching either, and every snapshot the reader takes reads back the same, and matches
  exactly what the writer had committed up to it.
- A writer killed with SIGKILL mid-work leaves a database that opens, passes
  `PRAGMA integrity_check`, and holds every action it had reported as committed; a big
  import killed half way leaves all of it or none.

This file is also the worker script: `python test_feedback_concurrency.py writer|reader|import ...`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CONCURRENCY_SECONDS = 20.0


# ---- worker side ---------------------------------------------------------------------------------


def writer_round(store, i: int, log: Callable[[dict], None]) -> None:
    """One conversation of chat-like actions; logs each committed call with the training-view
    rows it adds (pairs, prompts, demonstrations), by the view rules in feedback.views."""
    from feedback import ReplyDraft

    def entry(action_id, message_ids=(), pairs=0, prompts=0, demos=0, conversation_id=None):
        log({"action_id": action_id, "message_ids": list(message_ids), "pairs": pairs, "prompts": prompts,
             "demos": demos, "conversation_id": conversation_id})

    conversation = store.create_conversation(system_prompt="Be exact." if i % 2 else None)
    entry(None, conversation_id=conversation.id)
    user = store.add_user_message(conversation.id, f"question {i}: what is {i} squared?")
    entry(user.action_id, [user.id], prompts=1)
    drafts = [ReplyDraft(f"answer {i}.{k}: {i * i + k}", None, {"temperature": 0.9, "seed": k}, "stop") for k in range(4)]
    replies = store.add_assistant_replies(user.id, drafts)
    entry(replies[0].action_id, [r.id for r in replies])
    ids = [r.id for r in replies]
    if i % 3 == 0:
        ranked = random.sample(ids, len(ids))
        entry(store.rank(user.id, ranked).action_id, pairs=6)
        follow = store.add_user_message(conversation.id, f"and {i} cubed?")
        entry(follow.action_id, [follow.id], prompts=1)
        second = store.add_assistant_replies(follow.id, [ReplyDraft(f"{i ** 3}"), ReplyDraft("no idea")])
        entry(second[0].action_id, [r.id for r in second])
        entry(store.rate(second[0].id, 1, tags=["correct"]).action_id, demos=1)
        entry(store.rate(second[1].id, -1, comment="unhelpful").action_id, pairs=1)
    elif i % 3 == 1:
        entry(store.rate(ids[0], 1).action_id, demos=1)
        entry(store.rate(ids[1], -1).action_id, pairs=1)
        entry(store.rate(ids[2], -1).action_id, pairs=1)
    else:
        entry(store.rate(ids[3], -1).action_id)
        demo = store.save_demonstration(user.id, f"{i} squared is {i * i}.")
        # Preferred over every model-written sibling not voted up: all four (DITTO pairs).
        entry(demo.action_id, [demo.id], pairs=4, demos=1)


def run_writer(db_path: str, seconds: float, log_path: str | None) -> None:
    from feedback import Store

    out = open(log_path, "a", buffering=1) if log_path else sys.stdout

    def log(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    store = Store(db_path)
    deadline = time.monotonic() + seconds
    i = store._conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
    while time.monotonic() < deadline:
        writer_round(store, i, log)
        i += 1
    store.close()


def run_reader(db_path: str, seconds: float, out_path: str) -> None:
    """Build training views at fresh snapshots, re-read each snapshot later, record what was seen."""
    from feedback import Store

    store = Store(db_path)
    run = store.start_training_run("ppo", {"purpose": "concurrency test"})
    observations = []
    previous = (0, 0, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        snapshot = store.snapshot()
        first = store.training_data(snapshot)
        if len(observations) % 5 == 0:
            store.counts_since_last_training()
            store.search_conversations("squared")
            store.list_conversations(limit=20)
        again = store.training_data(snapshot.action_id)  # a later transaction, same snapshot
        assert again.pairs == first.pairs, "pairs changed under a fixed snapshot"
        assert again.prompts == first.prompts, "prompts changed under a fixed snapshot"
        assert again.demonstrations == first.demonstrations, "demonstrations changed under a fixed snapshot"
        for pair in first.pairs:
            assert pair.chosen_id != pair.rejected_id and pair.context[-1]["role"] == "user"
        counts = (len(first.pairs), len(first.prompts), len(first.demonstrations))
        assert all(now >= before for now, before in zip(counts, previous)), "a view shrank"
        previous = counts
        observations.append([snapshot.action_id, *counts])
        store.update_training_run(run.id, {"snapshots_read": len(observations)})  # the trainer writes too
    store.finish_training_run(run.id, "succeeded", metrics={"snapshots_read": len(observations)})
    store.close()
    Path(out_path).write_text(json.dumps(observations))


def run_import(db_path: str, pairs_path: str) -> None:
    from feedback import Store

    store = Store(db_path)
    print("importing", flush=True)
    result = store.import_pairs(pairs_path)
    print(f"imported {result.num_pairs}", flush=True)


# ---- test side ------------------------------------------------------------------------------------


def _spawn(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], **kwargs)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_writer_and_reader_processes_side_by_side(tmp_path):
    from feedback import Store

    db = tmp_path / "feedback.db"
    Store(db).close()  # migrate once up front, as the app does at start
    writer_log, reader_out = tmp_path / "writer.jsonl", tmp_path / "reader.json"
    writer = _spawn("writer", str(db), str(CONCURRENCY_SECONDS), str(writer_log), stderr=subprocess.PIPE, text=True)
    reader = _spawn("reader", str(db), str(CONCURRENCY_SECONDS), str(reader_out), stderr=subprocess.PIPE, text=True)
    _, writer_err = writer.communicate(timeout=CONCURRENCY_SECONDS + 120)
    _, reader_err = reader.communicate(timeout=CONCURRENCY_SECONDS + 120)
    assert writer.returncode == 0, writer_err
    assert reader.returncode == 0, reader_err
    assert "locked" not in writer_err + reader_err

    entries = _read_log(writer_log)
    observations = json.loads(reader_out.read_text())
    num_actions = sum(1 for e in entries if e["action_id"] is not None)
    assert num_actions >= 100, f"writer only committed {num_actions} actions"
    assert len(observations) >= 10, f"reader only took {len(observations)} snapshots"

    with Store(db) as store:
        # No lost row: every message the writer was told about is there, and nothing else.
        logged_ids = sorted(mid for e in entries for mid in e["message_ids"])
        stored_ids = [row[0] for row in store._conn.execute("SELECT id FROM messages ORDER BY id")]
        assert stored_ids == logged_ids
        logged_conversations = {e["conversation_id"] for e in entries if e["conversation_id"] is not None}
        assert {c.id for c in store.list_conversations()} == logged_conversations
        final = store.training_data()
        assert len(final.pairs) == sum(e["pairs"] for e in entries)
        assert store.last_training_run().metrics["snapshots_read"] == len(observations)

    # Every snapshot saw exactly the actions committed up to it: no more, no fewer.
    snapshots_inside_the_run = 0
    for action_id, num_pairs, num_prompts, num_demos in observations:
        upto = [e for e in entries if e["action_id"] is not None and e["action_id"] <= action_id]
        assert num_pairs == sum(e["pairs"] for e in upto), action_id
        assert num_prompts == sum(e["prompts"] for e in upto), action_id
        assert num_demos == sum(e["demos"] for e in upto), action_id
        snapshots_inside_the_run += 0 < len(upto) < num_actions
    assert snapshots_inside_the_run >= 5  # the reader really read while the writer wrote


def _check_after_kill(db: Path) -> None:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_sigkilled_writer_keeps_every_committed_action(tmp_path):
    from feedback import Store

    db = tmp_path / "feedback.db"
    entries: list[dict] = []
    rng = random.Random(4)
    for _ in range(3):  # kill it three times at different points
        writer = _spawn("writer", str(db), "120", "", stdout=subprocess.PIPE, text=True)
        seen = 0
        target = rng.randint(15, 40)
        while seen < target:
            line = writer.stdout.readline()
            assert line, "writer exited early"
            entries.append(json.loads(line))
            seen += 1
        time.sleep(rng.uniform(0, 0.02))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL
        # What it printed before dying was committed before it printed.
        entries.extend(json.loads(line) for line in writer.stdout.read().splitlines() if line.strip())
        writer.stdout.close()

        _check_after_kill(db)
        with Store(db) as store:
            stored = {row[0] for row in store._conn.execute("SELECT id FROM messages")}
            actions = {row[0] for row in store._conn.execute("SELECT id FROM actions")}
            conversations = {row[0] for row in store._conn.execute("SELECT id FROM conversations")}
            assert {mid for e in entries for mid in e["message_ids"]} <= stored
            assert {e["action_id"] for e in entries if e["action_id"] is not None} <= actions
            assert {e["conversation_id"] for e in entries if e["conversation_id"] is not None} <= conversations
            # Nothing half-written: every action's rows are whole (4 replies per reply action, etc).
            sizes = store._conn.execute(
                "SELECT count(*) FROM messages GROUP BY action_id HAVING count(*) NOT IN (1, 2, 4)"
            ).fetchall()
            assert sizes == []
            assert len(store.preference_pairs()) >= sum(e["pairs"] for e in entries)


def test_sigkilled_import_leaves_all_or_nothing(tmp_path):
    from feedback import Store

    db = tmp_path / "feedback.db"
    Store(db).close()
    pairs = tmp_path / "pairs.jsonl"
    num_pairs = 6000
    pairs.write_text("".join(
        json.dumps({"prompt": f"prompt {n} " * 20, "chosen": f"good {n} " * 30, "rejected": f"bad {n} " * 30}) + "\n"
        for n in range(num_pairs)
    ))
    worker = _spawn("import", str(db), str(pairs), stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "importing"
    # Kill once the transaction has spilled pages into the WAL: the import is under way.
    wal = Path(f"{db}-wal")
    deadline = time.monotonic() + 30
    while (not wal.exists() or wal.stat().st_size < 512 * 1024) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    finished = "imported" in worker.stdout.read()
    worker.stdout.close()

    _check_after_kill(db)
    with Store(db) as store:
        imported = store._conn.execute("SELECT count(*) FROM conversations WHERE source = 'import'").fetchone()[0]
        messages = store._conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert (imported, messages) == ((num_pairs, 3 * num_pairs) if finished else (0, 0))
    assert not finished, "the import finished before the kill; make the file bigger"


if __name__ == "__main__":
    mode, db_path = sys.argv[1], sys.argv[2]
    if mode == "writer":
        run_writer(db_path, float(sys.argv[3]), sys.argv[4] or None)
    elif mode == "reader":
        run_reader(db_path, float(sys.argv[3]), sys.argv[4])
    elif mode == "import":
        run_import(db_path, sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
