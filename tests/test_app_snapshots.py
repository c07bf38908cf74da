"""Snapshot tests pinning the look of the chat (at 120x34 and at 80x24), compare and
training screens.

Deterministic on purpose: the tiny model is built from fixed seeds and sampled with a
fixed seed, stored timestamps are pinned, notifications are cleared before the picture.
Update the pictures with `pytest tests/test_app_snapshots.py --snapshot-update` after a
deliberate change, and look at them.
"""

from __future__ import annotations

import sys

import pytest
from app_support import focus_latest_reply, make_app, open_chat_store, trainer_transcript, wait_for

from chat_tui.screens.compare_screen import CompareScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.services.training_process import TrainingProcess

SIZE = (120, 34)
PINNED_TIME = "2025-01-02T03:04:05+00:00"
REPLY = """Use `sorted()`, which returns a new list:

```python
numbers = [3, 1, 2]
print(sorted(numbers))  # [1, 2, 3]
```

or `list.sort()` to sort **in place**."""


@pytest.fixture
def store(tiny_chat_model):
    store = open_chat_store(tiny_chat_model, compare_k=3, max_new_tokens=24)
    version_id = store.active_model_version().id
    conversation = store.create_conversation()
    user = store.add_user_message(conversation.id, "How do I sort a list in Python?")
    first = store.add_assistant_reply(user.id, "Try a loop.", model_version_id=version_id)
    best = store.add_assistant_reply(user.id, REPLY, model_version_id=version_id)
    store.rate(first.id, -1, ["unhelpful"])
    store.rate(best.id, 1, ["accurate", "concise"])
    other = store.create_conversation(title="Tea or coffee?")
    store.add_user_message(other.id, "Tea or coffee?")
    # Newest first: the sorting conversation on top.
    store.db.execute("UPDATE conversations SET created_at = ?, updated_at = ?", [PINNED_TIME, PINNED_TIME])
    store.db.execute("UPDATE conversations SET updated_at = '2025-01-02T05:00:00+00:00' WHERE id = ?", [conversation.id])
    yield store
    store.close()


async def open_conversation_and_focus_reply(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
    app.screen.query_one("#conversations").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.screen.query_one("#log").replies) == 1, what="conversation shown")
    await focus_latest_reply(pilot)


def test_chat_screen(snap_compare, store):
    app = make_app(store)

    async def run_before(pilot) -> None:
        await open_conversation_and_focus_reply(pilot)
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_screen_at_80_by_24(snap_compare, store):
    """The size of a default terminal: the reply header keeps its sibling position, rating
    and model name (wrapped, not cut) beside the sidebar."""
    app = make_app(store)

    async def run_before(pilot) -> None:
        await open_conversation_and_focus_reply(pilot)
        app.clear_notifications()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_compare_screen(snap_compare, store):
    app = make_app(store)

    async def run_before(pilot) -> None:
        await open_conversation_and_focus_reply(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare screen")
        await wait_for(pilot, lambda: len(app.screen.reply_ids) == 3, what="alternatives stored")
        await pilot.press("2")
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_training_screen(snap_compare, store):
    app = make_app(store)

    async def run_before(pilot) -> None:
        await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
        services = app.services
        # The trainer's output replayed, so the picture does not depend on timings (the
        # live run is in test_app_training).
        replay = TrainingProcess([sys.executable, "-c", f"import sys; sys.stdout.write({trainer_transcript()!r})"])
        services.training = replay
        services.training_announced = True  # no notice over the picture
        await wait_for(pilot, lambda: replay.returncode == 0, what="replay finished")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.shown_lines == len(replay.snapshot().log), what="log shown")
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
