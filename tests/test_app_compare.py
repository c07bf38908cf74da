"""Compare mode against the real engine with a tiny model: k alternatives from one batched
request, ranked with number keys or marked not rankable; screen and store both checked.
"""

from __future__ import annotations

import pytest
from app_support import async_test, focus_latest_reply, noticed, open_chat_store, running_app, wait_for

from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.compare_screen import CompareScreen
from chat_tui.widgets.alternative_view import AlternativeView

SIZE = (140, 36)


@pytest.fixture
def store(tiny_chat_model):
    store = open_chat_store(tiny_chat_model, compare_k=3)
    yield store
    store.close()


async def open_compare(app, pilot) -> CompareScreen:
    """Send a message, move to its reply and press c; wait until the k replies are stored."""
    chat = app.screen
    await pilot.press(*"Which is best?", "enter")
    await wait_for(pilot, lambda: chat.job is None and len(chat.session.turns()) == 2, what="first reply")
    await focus_latest_reply(pilot)
    await pilot.press("c")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare screen")
    screen = app.screen
    await wait_for(pilot, lambda: len(screen.reply_ids) == 3, what="alternatives stored")
    return screen


@async_test
async def test_k_alternatives_come_from_one_batch_and_are_ranked_with_number_keys(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        screen = await open_compare(app, pilot)
        parent_id = chat.session.turns()[0].message_id
        output = screen.output
        assert len(output.completions) == 3  # one request, n=3: the prompt was prefilled once
        columns = list(screen.query(AlternativeView))
        assert [c.body.source for c in columns] == [c.text for c in sorted(output.completions, key=lambda c: c.index)]
        tree = store.load_conversation(chat.session.conversation_id)
        stored = [m for m in tree.children(parent_id) if m.id in screen.reply_ids]
        assert [m.content for m in stored] == [c.body.source for c in columns]
        assert all(m.sampling["n"] == 3 for m in stored)
        assert len(tree.children(parent_id)) == 4  # the first reply plus the three alternatives

        await pilot.press("2")
        assert columns[1].rank == 1 and "ranked #1" in str(columns[1].query_one(".alternative-header").render())
        await pilot.press("3")  # two of three placed: the last place is implied and the ranking saved
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        ids = screen.reply_ids
        ranking = store.load_conversation(chat.session.conversation_id).rankings[parent_id]
        assert ranking.is_rankable and ranking.ranked_ids == [ids[1], ids[2], ids[0]]
        assert noticed(app, "Ranking saved: 2 > 3 > 1")
        shown = chat.query_one("#log").replies[-1]
        await wait_for(pilot, lambda: chat.query_one("#log").replies[-1].turn.message_id == ids[1], what="best shown")
        shown = chat.query_one("#log").replies[-1]
        assert "ranked #1" in str(shown.query_one(".message-header").render())
        assert store.load_conversation(chat.session.conversation_id).shown_path[-1].id == ids[1]


@async_test
async def test_backspace_undoes_a_rank_and_x_marks_not_rankable(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        screen = await open_compare(app, pilot)
        await pilot.press("1")
        assert screen.order == [1]
        await pilot.press("backspace")
        assert screen.order == [] and list(screen.query(AlternativeView))[0].rank is None
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="back to chat")
        parent_id = chat.session.turns()[0].message_id
        ranking = store.load_conversation(chat.session.conversation_id).rankings[parent_id]
        assert not ranking.is_rankable and ranking.ranked_ids == []
        assert noticed(app, "not rankable")
