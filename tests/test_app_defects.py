"""Pilot tests, one per defect found by trying the app as a new user (issue 23, item 6).

Each drives the real app the way a person would and checks what the screen shows or what
the store holds; each failed before its fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from app_support import (
    async_test,
    focus_latest_reply,
    noticed,
    open_chat_store,
    open_store,
    press_together,
    running_app,
    save_test_settings,
    screen_text,
    seed_conversation,
    send,
    wait_for,
    widget_text,
)
from textual.widgets import TextArea

from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.compare_screen import CompareScreen
from chat_tui.screens.reasons_screen import ReasonsScreen
from chat_tui.screens.settings_screen import SettingsScreen
from chat_tui.screens.teach_screen import TeachScreen
from chat_tui.screens.text_prompt_screen import TextPromptScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.services.training_process import TrainingProcess
from chat_tui.widgets.message_view import MessageView

WIDE = (120, 36)
NARROW = (80, 24)


@pytest.fixture
def store():
    store = open_store()
    yield store
    store.close()


@pytest.fixture
def real_model_pace(monkeypatch):
    """The tiny model decodes thousands of tokens a second, done before a person (or a test)
    can act; each engine step here also waits 20 ms, about a real 135M model's pace on a
    laptop, so a test can watch and press keys while replies are written."""
    import time

    from engine.engine import LLMEngine

    step = LLMEngine.step

    def paced_step(self, *args, **kwargs):
        time.sleep(0.02)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(LLMEngine, "step", paced_step)


@pytest.fixture
def chat_store(tiny_chat_model):
    store = open_chat_store(tiny_chat_model, compare_k=2)
    yield store
    store.close()


async def open_first_conversation(app, pilot) -> None:
    app.screen.query_one("#conversations").focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen.session.conversation_id is not None and app.screen.query(MessageView),
                   what="conversation open")


def flat(text: str) -> str:
    """Screen text read as a person reads wrapped lines: borders and line ends gone."""
    return re.sub(r"[│\s]+", " ", text)


def shown_leaf(store, app) -> int:
    return store.load_conversation(app.screen_stack[1].session.conversation_id).shown_path[-1].id


# ---- rendering ------------------------------------------------------------------------------


@async_test
async def test_line_breaks_inside_a_reply_are_kept(store):
    seed_conversation(store, "A poem, please.", ["Roses are red,\nviolets are blue,\nsugar is sweet."])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        lines = screen_text(app).splitlines()
        assert any(line.rstrip().endswith("Roses are red,") for line in lines), screen_text(app)
        assert any("violets are blue," in line and "Roses" not in line for line in lines)


@async_test
async def test_the_users_own_message_is_shown_as_written_not_as_markdown(store):
    seed_conversation(store, "What does __init__ do? And *args?", ["It initialises."])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        assert "What does __init__ do? And *args?" in widget_text(app, app.screen.query_one("#log"))


@async_test
async def test_at_80_columns_the_reply_header_keeps_the_model_siblings_and_marks(store):
    version = store.register_model_version("smollm2-135m-instruct-dpo-run12", "/m/v", activate=True)
    _, _, replies = seed_conversation(store, "Hi", ["Hello!", "Hi there."], version_id=version.id)
    store.rate(replies[1].id, 1, ["helpful"])
    async with running_app(store, NARROW, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        text = screen_text(app)
        assert "2/2" in text and "👍" in text and "smollm2-135m-instruct-dpo-run12" in text, text


# ---- siblings and compare ---------------------------------------------------------------------


@async_test
async def test_quickly_repeated_sibling_keys_each_move(store):
    conversation, user, replies = seed_conversation(store, "Count", ["one", "two", "three"])
    store.switch_path(replies[0].id)
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await focus_latest_reply(pilot)
        press_together(app, "right", "right")
        await wait_for(pilot, lambda: store.load_conversation(conversation.id).shown_path[-1].id == replies[2].id,
                       timeout=10, what="the third sibling shown")
        await wait_for(pilot, lambda: app.screen.query_one("#log").replies[-1].turn.content == "three",
                       what="the third sibling on screen")


@async_test
async def test_closing_compare_keeps_the_reply_that_was_shown(chat_store, real_model_pace):
    async with running_app(chat_store, (140, 36)) as (app, pilot):
        chat = app.screen
        await send(app, pilot, "Which is best?")
        first = chat.session.turns()[-1].message_id
        await focus_latest_reply(pilot)
        # Closed once the alternatives are written: the first reply is still the one shown.
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and len(app.screen.reply_ids) == 2,
                       what="alternatives")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        assert shown_leaf(chat_store, app) == first
        await wait_for(pilot, lambda: chat.query_one("#log").replies[-1].turn.message_id == first, what="first shown")
        # Stopped half way (long replies, so Esc lands while they are written) and closed:
        # not a stopped fragment either.
        save_test_settings(chat_store, compare_k=2, max_new_tokens=800)
        await focus_latest_reply(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare again")
        compare = app.screen
        await wait_for(pilot, lambda: compare.views[0].num_pieces > 0, what="writing")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(compare.reply_ids) == 2, what="stopped and stored")
        assert "abort" in [chat_store.get_message(i).finish_reason for i in compare.reply_ids]
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        assert shown_leaf(chat_store, app) == first
        # The next message continues from the reply that was shown.
        save_test_settings(chat_store, compare_k=2)
        await pilot.press("i")  # from the shown reply back to writing
        await send(app, pilot, "And then?")
        assert chat.session.turns()[1].message_id == first


@async_test
async def test_compare_columns_show_progress_and_wrap_long_code_lines(chat_store, real_model_pace):
    save_test_settings(chat_store, compare_k=2, max_new_tokens=400)
    async with running_app(chat_store, (100, 36)) as (app, pilot):
        save_test_settings(chat_store, compare_k=2)
        await send(app, pilot, "Write code")
        save_test_settings(chat_store, compare_k=2, max_new_tokens=400)
        await focus_latest_reply(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        screen = app.screen
        await wait_for(pilot, lambda: "tokens" in screen_text(app) or screen.reply_ids, what="progress or the end")
        assert screen.reply_ids == [] and re.search(r"writing… \d+ tokens", screen_text(app)), screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(screen.reply_ids) == 2, timeout=120, what="alternatives")
        long_line = "result = compute_the_total(first_argument, second_argument, third_argument)  # end"
        view = screen.views[0]
        await view.body.update(f"```python\n{long_line}\n```")
        await pilot.pause()
        assert "third_argument) # end" in flat(widget_text(app, view)), widget_text(app, view)


# ---- feedback counts and training contexts ---------------------------------------------------------


@async_test
async def test_a_thumbs_down_with_reasons_counts_as_one_rating_on_the_training_screen(store):
    seed_conversation(store, "2+2?", ["5"])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await focus_latest_reply(pilot)
        await pilot.press("minus", "t")
        await wait_for(pilot, lambda: isinstance(app.screen, ReasonsScreen), what="reasons")
        await pilot.press("1", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="saved")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        assert "ratings 1 " in str(app.screen.query_one("#feedback-counts").render())


@async_test
async def test_a_system_prompt_set_later_is_not_in_the_context_of_earlier_replies(chat_store):
    from feedback.exporting import export_rows

    async with running_app(chat_store, WIDE) as (app, pilot):
        chat = app.screen
        await send(app, pilot, "Hi")
        await focus_latest_reply(pilot)
        await pilot.press("plus")
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="system prompt dialog")
        app.screen.query_one("#value", TextArea).text = "Answer in French."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is chat, what="saved")
    (row,) = export_rows(chat_store, "sft")
    assert [m["role"] for m in row["context"]] == ["user"]


# ---- training screen and settings ---------------------------------------------------------------


@async_test
async def test_the_training_log_wraps_long_lines(store):
    long_line = ("not enough feedback to train yet: 3 preference pair(s) (need 16: rank alternative replies or vote "
                 "replies up and down) and 1 demonstration(s) (need 4 demonstrations: write the reply you wanted)")
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        replay = TrainingProcess([sys.executable, "-c", f"import sys; sys.stdout.write({long_line + chr(10)!r})"])
        app.services.training = replay
        app.services.training_announced = True
        await wait_for(pilot, lambda: replay.returncode is not None, what="replay finished")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        log = app.screen.query_one("#training-log")
        await wait_for(pilot, lambda: "need 4 demonstrations: write the reply you wanted)" in flat(widget_text(app, log)),
                       timeout=10, what="the end of the long line on screen")


@async_test
async def test_settings_hints_are_not_clipped_at_140_columns(store):
    async with running_app(store, (140, 40), load_model=False) as (app, pilot):
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="settings")
        text = flat(screen_text(app))
        assert "keep the smallest set of tokens with this much probability" in text, screen_text(app)
        assert "empty = random; a number makes replies reproducible" in text


# ---- teach and copy ---------------------------------------------------------------------------


@async_test
async def test_teach_can_be_cleared_with_one_key(store):
    seed_conversation(store, "2+2?", ["The answer is five, probably, or maybe six."])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await focus_latest_reply(pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, TeachScreen), what="teach")
        await pilot.press("ctrl+l", *"4.", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="saved")
        assert [d.completion for d in store.demonstrations() if d.source == "human"] == ["4."]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@async_test
async def test_copy_inside_tmux_goes_to_tmux_and_says_so(store, tmp_path, monkeypatch):
    socket = tmp_path / "tmux.sock"
    subprocess.run(["tmux", "-S", str(socket), "new-session", "-d", "-s", "copy", "sleep 60"], check=True)
    try:
        monkeypatch.setenv("TMUX", f"{socket},{os.getpid()},0")
        seed_conversation(store, "hi", ["Copy me, please."])
        async with running_app(store, WIDE, load_model=False) as (app, pilot):
            await open_first_conversation(app, pilot)
            await focus_latest_reply(pilot)
            await pilot.press("y")
            await wait_for(pilot, lambda: noticed(app, "tmux"), what="copy notice")
        buffer = subprocess.run(["tmux", "-S", str(socket), "show-buffer"], capture_output=True, text=True)
        assert buffer.stdout == "Copy me, please."
        assert not noticed(app, "Copied the reply (")  # the old claim, true or not
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], check=False)


# ---- search, sidebar, editing, export ---------------------------------------------------------------


@async_test
async def test_search_matches_word_prefixes_and_says_when_nothing_matches(store):
    seed_conversation(store, "Where do emperor penguins live?", ["Antarctica."])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await pilot.press("ctrl+f", *"pengu")
        await wait_for(pilot, lambda: app.screen.query_one("#conversations").option_count == 1, timeout=10,
                       what="a prefix match")
        await pilot.press(*"xyz")
        await wait_for(pilot, lambda: "No conversation matches" in screen_text(app), timeout=10, what="no matches")


@async_test
async def test_the_sidebar_can_be_hidden_and_shown(store):
    seed_conversation(store, "Hi", ["Hello."])
    async with running_app(store, NARROW, load_model=False) as (app, pilot):
        sidebar = app.screen.query_one("#sidebar")
        assert sidebar.display
        await pilot.press("f7")
        await wait_for(pilot, lambda: not sidebar.display, what="sidebar hidden")
        assert app.screen.query_one("#chat").size.width == NARROW[0]
        await pilot.press("f7")
        await wait_for(pilot, lambda: sidebar.display, what="sidebar shown")


@async_test
async def test_editing_a_sent_message_resends_it_as_a_new_branch(chat_store):
    async with running_app(chat_store, WIDE) as (app, pilot):
        chat = app.screen
        await send(app, pilot, "Capitl of France?")
        original = chat.session.turns()[0]
        await focus_latest_reply(pilot)
        await pilot.press("up")  # from the reply to the user's message above it
        await wait_for(pilot, lambda: isinstance(app.focused, MessageView) and not app.focused.turn.is_reply,
                       what="own message focused")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="edit dialog")
        app.screen.query_one("#value", TextArea).text = "Capital of France?"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: chat.job is None and len(chat.session.turns()) == 2
                       and chat.session.turns()[0].message_id != original.message_id, what="resent")
        tree = chat_store.load_conversation(chat.session.conversation_id)
        edited = tree.shown_path[0]
        assert edited.content == "Capital of France?" and edited.parent_id == original.parent_id
        assert [m.id for m in tree.siblings(edited.id)] == [original.message_id, edited.id]
        assert tree.shown_path[1].role == "assistant" and tree.shown_path[1].parent_id == edited.id


@async_test
async def test_a_conversation_exports_as_markdown(store):
    seed_conversation(store, "What is __init__?", ["It *initialises* an object:\n\n```python\nx = 1\n```"])
    async with running_app(store, WIDE, load_model=False) as (app, pilot):
        await open_first_conversation(app, pilot)
        await pilot.press("f8")
        await wait_for(pilot, lambda: noticed(app, ".md"), what="export notice")
        path = next(message for message, _ in app.notices if ".md" in message).split(" to ", 1)[1].rstrip(".")
        text = open(path, encoding="utf-8").read()
        assert "What is __init__?" in text and "```python\nx = 1\n```" in text
        assert text.index("What is __init__?") < text.index("It *initialises*")
