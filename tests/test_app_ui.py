"""Pilot tests of the app's screens that need no model: help, settings, conversations,
search, system prompt, keys, copying, remaps and a model that fails to load.

Each drives the real ChatApp on a real feedback store and checks both the screen and the
store.
"""

from __future__ import annotations

import json

import pytest
from app_support import (
    async_test,
    focus_latest_reply,
    make_app,
    noticed,
    open_store,
    running_app,
    seed_conversation,
    wait_for,
)
from textual.widgets import Input, Markdown

from chat_tui import paths
from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.help_screen import HelpScreen
from chat_tui.screens.settings_screen import SettingsScreen
from chat_tui.screens.text_prompt_screen import TextPromptScreen
from chat_tui.services.settings_store import SettingsStore
from chat_tui.widgets.message_view import MessageView

SIZE = (120, 36)


@pytest.fixture
def store():
    store = open_store()
    yield store
    store.close()


def sidebar_titles(app) -> list[str]:
    options = app.screen.query_one("#conversations")
    return [str(options.get_option_at_index(i).prompt).split("\n")[0] for i in range(options.option_count)]


async def open_first_conversation(app, pilot) -> None:
    app.screen.query_one("#conversations").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen.session.conversation_id is not None, what="conversation open")


async def open_settings(pilot) -> SettingsScreen:
    await pilot.press("f2")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen), what="settings")
    return pilot.app.screen


@pytest.mark.parametrize("key", ["f1", "question_mark"])
@async_test
async def test_help_opens_on_f1_and_question_mark_and_lists_every_key(store, key):
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        if key == "question_mark":
            app.screen.query_one("#conversations").focus()  # "?" types into the prompt otherwise
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
        text = app.screen.query_one(Markdown).source
        chat = app.screen_stack[1]
        for binding in [*app.BINDINGS, *ChatScreen.BINDINGS]:
            assert binding.id in text, f"help misses {binding.id}"
        for binding_id in ["reply.rate_up", "reply.teach", "compare.not_rankable", "training.start", "prompt.newline"]:
            assert binding_id in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat, what="help closed")


@async_test
async def test_settings_are_saved_to_the_store_and_remembered(store):
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        screen = await open_settings(pilot)
        for name, value in [("temperature", "0.3"), ("top_p", "0.8"), ("max_new_tokens", "64"),
                            ("repetition_penalty", "1.2"), ("compare_k", "3")]:
            screen.query_one(f"#{name}", Input).value = value
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="settings saved")
        assert noticed(app, "Settings saved")
    saved = SettingsStore(store).load()
    assert (saved.temperature, saved.top_p, saved.max_new_tokens, saved.repetition_penalty, saved.compare_k) == (
        0.3, 0.8, 64, 1.2, 3,
    )
    # A new app (a restart) shows the remembered values.
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await open_settings(pilot)
        assert app.screen.query_one("#compare_k", Input).value == "3"


@async_test
async def test_settings_refuse_an_out_of_range_value_and_name_it(store):
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await open_settings(pilot)
        app.screen.query_one("#compare_k", Input).value = "7"
        await pilot.press("ctrl+s")
        error = app.screen.query_one("#settings-error")
        await wait_for(pilot, lambda: "compare k" in str(error.render()), what="error shown")
        assert "7" in str(error.render())
        assert isinstance(app.screen, SettingsScreen)
    assert SettingsStore(store).load().compare_k == 2


@async_test
async def test_a_dialogs_buttons_cancel_and_save_as_its_keys_do(store):
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        (await open_settings(pilot)).query_one("#temperature", Input).value = "0.4"
        await pilot.click("#cancel")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="settings cancelled")
        assert SettingsStore(store).load().temperature == 0.7
        (await open_settings(pilot)).query_one("#temperature", Input).value = "0.4"
        await pilot.click("#save")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="settings saved")
        assert SettingsStore(store).load().temperature == 0.4 and noticed(app, "Settings saved")


@async_test
async def test_sidebar_lists_newest_first_and_resumes_a_conversation_with_its_tree(store):
    seed_conversation(store, "older question", ["older answer"])
    _, user, replies = seed_conversation(store, "newer question", ["first try", "second try"])
    store.rate(replies[1].id, 1)
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        assert sidebar_titles(app) == ["newer question", "older question"]
        await open_first_conversation(app, pilot)
        views = list(app.screen.query(MessageView))
        await wait_for(pilot, lambda: len(list(app.screen.query(MessageView))) == 2, what="turns shown")
        views = list(app.screen.query(MessageView))
        assert views[0].turn.content == "newer question"
        reply = views[1].turn
        assert (reply.content, reply.sibling_index, reply.sibling_count, reply.rating) == ("second try", 1, 2, 1)
        header = str(views[1].query_one(".message-header").render())
        assert "2/2" in header and "👍" in header


@async_test
async def test_rename_and_delete_a_conversation(store):
    conversation, _, _ = seed_conversation(store, "to rename", ["reply"])
    seed_conversation(store, "to delete", ["reply"])
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        app.screen.query_one("#conversations").focus()
        await pilot.press("down", "r")  # the second row: "to rename"
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="rename dialog")
        app.screen.query_one("#value", Input).value = "Renamed chat"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Renamed chat" in sidebar_titles(app), what="renamed in sidebar")
        assert store.get_conversation(conversation.id).title == "Renamed chat"
        assert noticed(app, "Renamed")

        app.screen.query_one("#conversations").focus()
        await pilot.press("end", "delete")  # renaming made "Renamed chat" the newest
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        await pilot.press("y")
        await wait_for(pilot, lambda: sidebar_titles(app) == ["Renamed chat"], what="deleted from sidebar")
        assert [c.title for c in store.list_conversations()] == ["Renamed chat"]
        assert noticed(app, "Deleted")


@async_test
async def test_full_text_search_finds_a_conversation_by_a_word_in_a_reply(store):
    seed_conversation(store, "about fruit", ["bananas are yellow"])
    seed_conversation(store, "about sky", ["the sky is blue"])
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: app.focused is app.screen.query_one("#search"), what="search focused")
        await pilot.press(*"bananas")
        await wait_for(pilot, lambda: sidebar_titles(app) == ["about fruit"], what="search result")
        await pilot.press("enter", "enter")  # to the list, then open the hit
        await wait_for(pilot, lambda: app.screen.session.conversation_id is not None, what="opened")
        assert store.get_conversation(app.screen.session.conversation_id).title == "about fruit"


@async_test
async def test_system_prompt_is_saved_per_conversation(store):
    conversation, _, _ = seed_conversation(store, "hi", ["hello"])
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="system prompt dialog")
        app.screen.query_one("#value").text = "You are terse."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="saved")
        assert noticed(app, "System prompt saved")
    assert store.get_conversation(conversation.id).system_prompt == "You are terse."
    context = app.services.session.context_for(store.load_conversation(conversation.id).shown_path[0].id)
    assert context[0] == {"role": "system", "content": "You are terse."}


@async_test
async def test_ctrl_j_adds_a_line_and_enter_does_not(store):
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        prompt = app.screen.query_one("#prompt")
        await pilot.press(*"one", "ctrl+j", *"two")
        assert prompt.text == "one\ntwo"
        await pilot.press("enter")  # no model: refused with a message, the text stays
        assert prompt.text == "one\ntwo"
        assert noticed(app, "No model is loaded")
        assert store.list_conversations() == []


@async_test
async def test_copy_reply_and_code_blocks_cycle(store):
    reply = "Two blocks:\n\n```python\nprint(1)\n```\n\nand\n\n```sh\nls\n```\n"
    seed_conversation(store, "show code", [reply])
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await focus_latest_reply(pilot)
        await pilot.press("y")
        assert app.clipboard == reply
        await pilot.press("Y")
        assert app.clipboard == "print(1)\n"
        await pilot.press("Y")
        assert app.clipboard == "ls\n"
        assert noticed(app, "Code block 2 of 2 (sh): ")


@async_test
async def test_keymap_file_remaps_a_binding(store):
    _, _, replies = seed_conversation(store, "rate me", ["a reply"])
    (paths.data_dir() / "keymap.json").write_text(json.dumps({"reply.rate_up": "u"}))
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await focus_latest_reply(pilot)
        await pilot.press("u")
        await wait_for(pilot, lambda: replies[0].id in store.load_conversation(replies[0].conversation_id).ratings,
                       what="rating stored")
    assert store.load_conversation(replies[0].conversation_id).ratings[replies[0].id].value == 1


@async_test
async def test_a_model_that_cannot_load_shows_a_message_and_the_app_keeps_running(store, tmp_path):
    missing = tmp_path / "no-such-model"
    app = make_app(store, requested_model=str(missing))
    async with app.run_test(size=SIZE) as pilot:
        status = app.screen.query_one("#status")
        await wait_for(pilot, lambda: status.state == "failed", timeout=60, what="load failure")
        assert "no-such-model" in status.detail
        assert noticed(app, "Could not load the model")
        await pilot.press(*"hello", "enter")
        assert noticed(app, "No model is loaded")
        assert app.is_running


def all_binding_owners():
    from chat_tui.app import ChatApp
    from chat_tui.screens.compare_screen import CompareScreen
    from chat_tui.screens.models_screen import ModelsScreen
    from chat_tui.screens.reasons_screen import ReasonsScreen
    from chat_tui.screens.teach_screen import TeachScreen
    from chat_tui.screens.training_screen import TrainingScreen
    from chat_tui.widgets.chat_log import ChatLog
    from chat_tui.widgets.conversation_list import ConversationOptions
    from chat_tui.widgets.prompt_input import PromptInput

    return [ChatApp, ChatScreen, PromptInput, ChatLog, ConversationOptions, CompareScreen, ModelsScreen,
            TrainingScreen, SettingsScreen, ReasonsScreen, TeachScreen, TextPromptScreen, ConfirmScreen, HelpScreen]


def test_every_binding_has_an_id_and_an_action_that_exists():
    from textual.binding import Binding

    ids = []
    for owner in all_binding_owners():
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding) and binding.id, f"{owner.__name__} binding {binding.key!r} has no id"
            ids.append(binding.id)
            action = binding.action.split("(")[0]
            assert hasattr(owner, f"action_{action}"), f"{owner.__name__}: {binding.key!r} -> missing action {action!r}"
            assert binding.description, f"{binding.id} has no description for the footer and help"
    assert len(ids) == len(set(ids)), "binding ids must be unique so a remap names one key"


@async_test
async def test_square_brackets_in_user_text_are_shown_as_written(store):
    title = "[/b] odd [tea] title"
    conversation, _, _ = seed_conversation(store, title, ["a [red]reply[/red] with [/oops] brackets"])
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        assert sidebar_titles(app) == [title]
        await open_first_conversation(app, pilot)
        assert title in str(app.screen.query_one("#chat-title").render())
        await pilot.press("ctrl+f", *"tea")
        await wait_for(pilot, lambda: sidebar_titles(app) == [title], what="search hit")
        app.screen.query_one("#conversations").focus()
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="delete dialog")
        assert title in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: noticed(app, f"Deleted “{title}”"), what="deleted")
