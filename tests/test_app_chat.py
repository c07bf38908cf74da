"""Pilot tests of the chat flows against the real engine with a tiny random model:
send and stream, stop, multi-turn context, thumbs with reasons, regenerate and sibling
navigation, teach, and switching the model version. Each checks the screen and the store.
"""

from __future__ import annotations

import threading


import pytest
from app_support import (
    async_test,
    focus_latest_reply,
    make_app,
    noticed,
    open_chat_store,
    press_soon,
    running_app,
    save_test_settings,
    send,
    wait_for,
)
from tiny_models import make_tiny_chat_model_dir

from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.models_screen import ModelsScreen
from chat_tui.screens.reasons_screen import ReasonsScreen
from chat_tui.screens.teach_screen import TeachScreen
from chat_tui.services import model_service
from chat_tui.widgets.message_view import MessageView

SIZE = (120, 36)


@pytest.fixture
def store(tiny_chat_model):
    store = open_chat_store(tiny_chat_model)
    yield store
    store.close()


def replies(app) -> list[MessageView]:
    return app.screen.query_one("#log").replies


def header(view: MessageView) -> str:
    return str(view.query_one(".message-header").render())


async def reply_to(app, pilot, text: str) -> MessageView:
    """Send `text` and focus the stored reply, ready for a feedback key."""
    await send(app, pilot, text)
    return await focus_latest_reply(pilot)


@async_test
async def test_a_reply_streams_token_by_token_and_is_stored(store, monkeypatch):
    save_test_settings(store, max_new_tokens=60)
    version = store.active_model_version()
    # The real load, held until the window is up: the window must not wait for it.
    may_load = threading.Event()
    real_load = model_service.load_serving_model

    def held_load(*args, **kwargs):
        assert may_load.wait(timeout=60), "the window never came up while the model loaded"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(model_service, "load_serving_model", held_load)
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.screen
        status = chat.query_one("#status")
        assert status.state == "loading" and chat.prompt.has_focus  # up and usable, the model still loading
        may_load.set()
        await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
        await pilot.press(*"Hello there")
        pressing = press_soon(pilot, "enter")
        await wait_for(pilot, lambda: chat.job is not None, what="reply started")
        seen: set[int] = set()

        def written() -> bool:  # and meanwhile, how much of the text was shown
            job = chat.job
            if job is not None:
                seen.add(len(job.view.body.source))
            return job is None

        await wait_for(pilot, written, poll_s=0.005, what="the reply written")
        await pressing
        await wait_for(pilot, lambda: len(chat.session.turns()) == 2, what="reply stored")
        view = replies(app)[-1]
        conversation = store.load_conversation(chat.session.conversation_id)
        user, reply = conversation.shown_path
        assert (user.role, user.content) == ("user", "Hello there")
        assert reply.role == "assistant" and reply.content
        assert view.body.source == reply.content == chat.last_output.completions[0].text
        assert reply.model_version_id == version.id
        assert reply.sampling["max_new_tokens"] == 60
        assert reply.finish_reason in ("stop", "length")
        partial = {n for n in seen if 0 < n < len(reply.content)}
        assert len(partial) >= 2, f"the reply did not stream: text lengths seen {sorted(seen)}"
        assert status.state == "ready" and status.tokens_per_s > 0
        assert "tiny-v1" in header(view)
        assert "Hello there" in str(chat.query_one("#chat-title").render())


@async_test
async def test_escape_stops_a_reply_and_keeps_what_was_written(store):
    save_test_settings(store, max_new_tokens=900)
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        await pilot.press(*"Write a lot")
        pressing = press_soon(pilot, "enter")
        await wait_for(pilot, lambda: chat.job is not None and len(chat.job.view.body.source) > 10, what="some text")
        await pilot.press("escape")
        await pressing
        await wait_for(pilot, lambda: chat.job is None and len(chat.session.turns()) == 2, what="stopped reply stored")
        reply = store.load_conversation(chat.session.conversation_id).shown_path[-1]
        assert reply.finish_reason == "abort"
        assert 0 < len(chat.last_output.completions[0].token_ids) < 900
        assert reply.content and replies(app)[-1].body.source == reply.content
        assert "stopped" in header(replies(app)[-1])
        assert noticed(app, "Stopped")


@async_test
async def test_the_second_turn_is_prompted_with_the_whole_conversation(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        chat.session.set_system_prompt("Be brief.")
        await send(app, pilot, "first question")
        first_reply = chat.session.turns()[1].content
        await send(app, pilot, "second question")
        tokenizer = app.services.model.require().loaded.tokenizer
        prompt = tokenizer.decode(chat.last_output.prompt_token_ids, skip_special_tokens=False)
        expected = (
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nfirst question<|im_end|>\n"
            f"<|im_start|>assistant\n{first_reply}<|im_end|>\n"
            "<|im_start|>user\nsecond question<|im_end|>\n<|im_start|>assistant\n"
        )
        assert prompt == expected
        assert [v.turn.content for v in chat.query(MessageView)][::2] == ["first question", "second question"]


@async_test
async def test_thumbs_up_then_down_with_reason_tags_and_a_comment(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        view = await reply_to(app, pilot, "rate this")
        reply_id = view.turn.message_id

        def rating():
            return store.load_conversation(chat.session.conversation_id).ratings.get(reply_id)

        await pilot.press("plus")
        await wait_for(pilot, lambda: rating() is not None, what="thumbs up stored")
        assert rating().value == 1 and "👍" in header(view) and noticed(app, "👍 saved")
        await pilot.press("minus")
        await wait_for(pilot, lambda: rating().value == -1, what="thumbs down stored")
        assert "👎" in header(view)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ReasonsScreen), what="reasons dialog")
        await pilot.press("1", "4")  # wrong, repetitive
        app.screen.query_one("#comment").value = "loops on itself"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="reasons saved")
        saved = rating()
        assert (saved.value, saved.tags, saved.comment) == (-1, ["wrong", "repetitive"], "loops on itself")
        assert "wrong repetitive" in header(view)
        assert noticed(app, "Reasons saved: wrong, repetitive")


@async_test
async def test_regenerate_adds_a_sibling_and_arrows_move_between_siblings(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        first = (await reply_to(app, pilot, "say something")).turn
        await pilot.press("r")
        await wait_for(pilot, lambda: chat.job is None and len(store.load_conversation(
            chat.session.conversation_id).siblings(first.message_id)) == 2, what="regeneration stored")
        tree = store.load_conversation(chat.session.conversation_id)
        siblings = tree.siblings(first.message_id)
        assert [m.id for m in siblings][0] == first.message_id and len(siblings) == 2
        second = siblings[1]
        assert tree.shown_path[-1].id == second.id
        assert replies(app)[-1].turn.message_id == second.id and "2/2" in header(replies(app)[-1])

        await focus_latest_reply(pilot)
        await pilot.press("left")
        await wait_for(pilot, lambda: replies(app)[-1].turn.message_id == first.message_id, what="first sibling shown")
        assert "1/2" in header(replies(app)[-1])
        assert store.load_conversation(chat.session.conversation_id).shown_path[-1].id == first.message_id
        assert app.focused.turn.message_id == first.message_id
        await pilot.press("right")
        await wait_for(pilot, lambda: replies(app)[-1].turn.message_id == second.id, what="second sibling shown")
        await pilot.press("right")
        assert noticed(app, "No more replies that way")


@async_test
async def test_teach_saves_the_edited_reply_as_a_human_demonstration(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        model_reply = (await reply_to(app, pilot, "what is 2+2?")).turn
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, TeachScreen), what="teach dialog")
        area = app.screen.query_one("#reply")
        assert area.text == model_reply.content
        area.text = "2 + 2 = 4."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="taught")
        tree = store.load_conversation(chat.session.conversation_id)
        taught = tree.shown_path[-1]
        assert (taught.content, taught.is_human, taught.parent_id) == ("2 + 2 = 4.", True, model_reply.parent_id)
        demos = [d for d in store.demonstrations() if d.source == "human"]
        assert [(d.message_id, d.completion) for d in demos] == [(taught.id, "2 + 2 = 4.")]
        view = replies(app)[-1]
        assert view.turn.message_id == taught.id and "You (taught)" in header(view)
        assert noticed(app, "demonstration")


@async_test
async def test_switching_the_model_version_on_the_models_screen(store, tmp_path):
    other = make_tiny_chat_model_dir(tmp_path / "tiny2", seed=7)
    v2 = store.register_model_version("tiny-v2", str(other), source="train",
                                      parent_id=store.active_model_version().id,
                                      metrics={"heldout_learned": 0.7, "heldout_pairs": 12, "eval_kl": 1.5})
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models screen")
        detail = str(app.screen.query_one("#version-detail").render())
        assert "tiny-v2 (train) ← tiny-v1 (import)" in detail
        assert "on 12 held-out comparisons it moved towards your choice in 70%" in detail  # the version's card
        await pilot.press("enter")  # the newest version is highlighted first
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        assert store.active_model_version().id == v2.id
        await wait_for(pilot, lambda: app.services.model.is_ready and app.services.model.require().version_id == v2.id,
                       timeout=120, what="tiny-v2 loaded")
        assert chat.query_one("#status").model_label == "tiny-v2"
        await send(app, pilot, "hello new model")
        reply = store.load_conversation(chat.session.conversation_id).shown_path[-1]
        assert reply.model_version_id == v2.id
        assert "tiny-v2" in header(replies(app)[-1])


@async_test
async def test_model_flag_opens_another_model_and_records_it_as_a_version(store, tmp_path):
    other = make_tiny_chat_model_dir(tmp_path / "tiny-other", seed=3)
    active = store.active_model_version()
    async with running_app(store, SIZE, requested_model=str(other)) as (app, pilot):
        chat = app.screen
        assert chat.query_one("#status").model_label == "tiny-other"
        version = store.get_model_version("tiny-other")
        assert version.path == str(other) and not version.is_active
        assert store.active_model_version().id == active.id  # --model does not change the active version
        await send(app, pilot, "hello")
        assert store.load_conversation(chat.session.conversation_id).shown_path[-1].model_version_id == version.id


@async_test
async def test_a_failed_generation_is_reported_and_the_message_can_be_sent_again(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        too_long = "xq " * 1200  # well past the tiny model's 1024-token context
        chat.query_one("#prompt").text = too_long
        await pilot.press("enter")
        await wait_for(pilot, lambda: noticed(app, "more than the model's context"), what="the error shown")
        await wait_for(pilot, lambda: chat.job is None and not replies(app), what="the empty reply removed")
        conversation_id = chat.session.conversation_id
        [failed] = store.load_conversation(conversation_id).shown_path
        assert failed.role == "user" and failed.content == too_long.strip()
        assert app.is_running and chat.query_one("#status").state == "ready"
        await pilot.press(*"short one", "enter")
        await wait_for(pilot, lambda: chat.job is None and [t.role for t in chat.session.turns()] == ["user", "assistant"],
                       what="the reply to the new message")
        tree = store.load_conversation(conversation_id)
        user, reply = tree.shown_path
        assert user.content == "short one" and user.parent_id is None  # a sibling of the failed turn
        assert reply.role == "assistant" and failed.id in tree.messages


@async_test
async def test_the_command_palette_runs_a_feedback_action_on_the_latest_reply(store):
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        await send(app, pilot, "palette please")
        reply_id = chat.session.turns()[-1].message_id
        await pilot.press("ctrl+p")
        await pilot.press(*"Thumbs up")
        await pilot.press("enter")
        await wait_for(pilot, lambda: reply_id in store.load_conversation(chat.session.conversation_id).ratings,
                       what="rating from the palette")
        assert store.load_conversation(chat.session.conversation_id).ratings[reply_id].value == 1


@async_test
async def test_enter_arriving_with_the_typed_text_sends_all_of_it(store):
    """A terminal read can hold the typed characters and Enter together (tmux send-keys,
    fast typists, pasted lines). Enter must act after the characters before it, never
    before them: the message is sent whole, exactly once."""
    from textual import events

    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        text = "Hello all at once"
        # Queued back to back, as the driver does for one read: no pause between them.
        for character in text:
            app.post_message(events.Key(character, character))
        app.post_message(events.Key("enter", "\r"))
        await wait_for(pilot, lambda: chat.job is None and len(chat.session.turns()) == 2, what="reply stored")
        user, _ = store.load_conversation(chat.session.conversation_id).shown_path
        assert user.content == text
        assert chat.query_one("#prompt").text == ""
