"""The arena in the app, against the real engine with a tiny model and a version trained
from it (stored as a delta): two versions answer each prompt blind, the choice is stored
as what trains and what ranks, the end shows the verdict and switches; a finished
training run, even one from a shell, is offered for the arena; `--arena A B` opens it.
"""

from __future__ import annotations

import pytest
import torch
from app_support import async_test, make_app, noticed, open_chat_store, running_app, wait_for
from textual.widgets import Select

from chat_tui.paths import models_dir
from chat_tui.screens.arena_screen import ArenaScreen
from chat_tui.screens.arena_setup_screen import ArenaSetupScreen
from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.reasons_screen import ReasonsScreen
from chat_tui.screens.verdict_screen import VerdictScreen
from engine.loading import ModelStore, load_model
from feedback.exporting import export_rows

SIZE = (140, 40)
METRICS = {"heldout_learned": 0.7, "heldout_learned_low": 0.52, "heldout_learned_high": 0.86, "heldout_pairs": 10,
           "activation_reason": "it moved towards your choices on held-out feedback"}


@pytest.fixture
def store(tiny_chat_model):
    """tiny-v1 (active, in the model store) and tiny-tuned: its top layer changed, stored as a
    delta on it, registered as a trained child with a card."""
    model_store = ModelStore(models_dir())
    base_dir = model_store.import_model(tiny_chat_model, "tiny-v1")
    base = load_model(base_dir)
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    generator = torch.Generator().manual_seed(5)
    for name in [n for n in state if ".layers.1." in n and n.endswith("proj.weight")]:
        state[name] = state[name] + 0.05 * torch.randn(state[name].shape, generator=generator)
    tuned_dir = model_store.save_model(base, "tiny-tuned", state_dict=state, base="tiny-v1")
    store = open_chat_store(base_dir)
    store.db.execute("UPDATE model_versions SET path = ? WHERE name = 'tiny-v1'", [str(base_dir)])
    parent = store.get_model_version("tiny-v1")
    store.register_model_version("tiny-tuned", str(tuned_dir), source="train", parent_id=parent.id, metrics=METRICS)
    yield store
    store.close()


async def open_arena(app, pilot) -> None:
    await pilot.press("f6")
    await wait_for(pilot, lambda: isinstance(app.screen, ArenaSetupScreen), what="arena setup")
    setup = app.screen
    names = {str(setup.query_one("#first", Select).value), str(setup.query_one("#second", Select).value)}
    assert names == {str(v.id) for v in app.services.store.list_model_versions()}  # the active one and its parent
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: app.services.arena.is_ready, timeout=120, what="both versions loaded")


async def arena_round(app, pilot, prompt: str) -> ArenaScreen:
    chat = app.screen
    chat.query_one("#prompt").focus()
    await pilot.press(*prompt, "enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ArenaScreen), what="arena round")
    screen = app.screen
    await wait_for(pilot, lambda: len(screen.reply_ids) == 2, timeout=120, what="both replies stored")
    return screen


@async_test
async def test_arena_rounds_are_blind_stored_as_training_pairs_and_end_in_a_verdict(store):
    store.activate_model_version("tiny-tuned")
    tuned, base = store.get_model_version("tiny-tuned"), store.get_model_version("tiny-v1")
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        await open_arena(app, pilot)
        # The chat's model is one side; the other holds only the changed layer of its own.
        left, right = app.services.arena.sides_loaded
        theirs = dict(right.serving.loaded.model.named_parameters())
        shared = [n for n, p in left.serving.loaded.model.named_parameters() if p is theirs[n]]
        assert "model.embed_tokens.weight" in shared and "model.layers.0.mlp.up_proj.weight" in shared
        assert "model.layers.1.mlp.up_proj.weight" not in shared
        assert "arena" in str(chat.query_one("#status").render())

        for number, key in enumerate(["1", "2", "3", "4", "1"]):
            screen = await arena_round(app, pilot, f"Question {number}?")
            header = str(screen.views[0].query_one(".alternative-header").render())
            assert "tiny" not in header  # blind until chosen
            await pilot.press(key)
            await wait_for(pilot, lambda: "tiny" in str(screen.views[0].query_one(".alternative-header").render()),
                           what="the versions revealed")
            if number == 0:
                await pilot.press("r")
                await wait_for(pilot, lambda: isinstance(app.screen, ReasonsScreen), what="reasons")
                await pilot.press("1", "ctrl+s")
                await wait_for(pilot, lambda: app.screen is screen, what="reasons saved")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        # Which version is on the left is drawn afresh for every round.
        assert {app.services.arena.sides()[0].version_id for _ in range(60)} == {tuned.id, base.id}

        choices = store.arena_choices()
        assert [c.outcome for c in choices] == ["first", "second", "tie", "both_bad", "first"]
        assert choices[0].tags and {choices[0].first_version_id, choices[0].second_version_id} == {tuned.id, base.id}
        pairs = [p for p in store.preference_pairs() if p.source == "arena"]
        assert len(pairs) == 3
        assert {row["source"] for row in export_rows(store, "pairs")} >= {"arena"}
        wins = store.head_to_head(tuned.id, base.id)
        assert sum(wins) == 5 and wins[2] == 2
        # The shown reply is the winner of the last round, and the conversation goes on from it.
        last = choices[-1]
        assert chat.session.turns()[-1].message_id == last.first_id

        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), what="the verdict")
        verdict = str(app.screen.query_one("#verdict").render())
        assert f"tiny-tuned won {wins[0]}, tiny-v1 won {wins[1]}, 2 tied or both bad" in verdict
        assert "learned your taste" in verdict and "verdict: it moved towards your choices" in verdict
        await pilot.press("2")  # use tiny-v1 (the second version chosen in the setup: the parent)
        await wait_for(pilot, lambda: app.services.model.is_ready and app.services.model.require().version_id == base.id,
                       timeout=120, what="the parent in use")
        assert store.active_model_version().id == base.id and not app.services.arena.is_on


@async_test
async def test_a_run_finished_from_a_shell_is_offered_for_the_arena(store):
    base, tuned = store.get_model_version("tiny-v1"), store.get_model_version("tiny-tuned")
    async with running_app(store, SIZE) as (app, pilot):
        chat = app.screen
        run = store.start_training_run("dpo", base_version_id=base.id)
        await wait_for(pilot, lambda: "from a shell" in str(chat.query_one("#status").render()), timeout=10,
                       what="the status line says a run is training")
        assert "replies are slower" in str(chat.query_one("#status").render())
        store.finish_training_run(run.id, "succeeded", tuned.id, METRICS)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query(".dialog-title"),
                       timeout=10, what="the arena offer")
        question = str(app.screen.query_one(".dialog-title").render())
        assert f"Training run {run.id} made tiny-tuned from tiny-v1" in question and "learned your taste" in question
        await pilot.press("y")
        await wait_for(pilot, lambda: app.services.arena.is_ready, timeout=120, what="arena loaded")
        assert app.services.arena.pair == (tuned.id, base.id) and app.services.arena.from_run == run.id
        assert "from a shell" not in str(chat.query_one("#status").render())
    # Offered once: a new app does not ask again about the same run.
    async with running_app(store, SIZE, load_model=False) as (app, pilot):
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)


@async_test
async def test_arena_from_the_command_line_and_bad_names(store):
    app = make_app(store)
    app.services.arena_request = ("tiny-tuned", "tiny-v1")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.services.arena.is_ready, timeout=120, what="arena loaded")
        screen = await arena_round(app, pilot, "Hello?")
        await pilot.press("escape")  # closed without a choice: both replies kept
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="back")
        assert store.arena_choices() == [] and noticed(app, "without a choice")
        assert len(store.load_conversation(app.screen.session.conversation_id).children(
            store.get_message(screen.reply_ids[0]).parent_id)) == 2
        app.screen.start_arena("tiny-tuned", "nope")
        assert noticed(app, "No arena: 'nope' is not a known model version")
