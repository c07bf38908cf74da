"""The training screen: parsing the trainer's progress lines, and a real `chat-tui train`
run started from the app with a tiny model, followed live and switched to on success.
"""

from __future__ import annotations

import json

import pytest
from app_support import (
    async_test,
    make_app,
    noticed,
    open_store,
    register_tiny_model,
    seed_conversation,
    trainer_transcript,
    wait_for,
)
from textual.widgets import Input, Sparkline

from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.services.training_process import TrainingProgress, apply_line


def test_the_trainers_json_lines_give_phase_step_reward_kl_and_the_new_version():
    progress = TrainingProgress()
    for line in trainer_transcript().splitlines(keepends=True):
        apply_line(progress, line)
    assert (progress.phase, progress.step, progress.total) == ("ppo", 4, 4)
    assert progress.reward == pytest.approx(0.1929) and progress.kl == pytest.approx(0.001892)
    assert progress.rewards == pytest.approx([-0.01693, -0.1845, 0.05065, 0.1929])
    assert progress.kls == pytest.approx([0.0, 0.0002773, 0.0008095, 0.001892])
    assert (progress.result_version_id, progress.result_version) == (2, "tiny-v1-ppo-run1")
    assert progress.log == ["base model: tiny-v1", "phases: sft -> reward -> ppo", "phase reward (12 steps)",
                            "phase ppo (4 steps)", "done: tiny-v1-ppo-run1"]


def test_other_lines_are_kept_as_log_lines_as_last_drawn():
    progress = TrainingProgress()
    apply_line(progress, json.dumps({"event": "phase", "phase": "dpo", "total": 10}))
    apply_line(progress, "Downloading 10%\rDownloading 100%\n")  # redrawn in place on stderr
    apply_line(progress, "{not json")
    apply_line(progress, json.dumps({"no": "event key"}))
    assert progress.log[1:] == ["Downloading 100%", "{not json", '{"no": "event key"}']
    assert (progress.phase, progress.step, progress.total) == ("dpo", 0, 10)


@pytest.fixture
def store(tiny_chat_model):
    store = open_store()
    register_tiny_model(store, tiny_chat_model)
    for i in range(20):
        _, user, replies = seed_conversation(store, f"question {i} about tea", [f"tea is nice {i}", f"zzz {i}"])
        store.rank(user.id, [replies[0].id, replies[1].id])
    yield store
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
@async_test
async def test_training_runs_in_the_background_with_live_progress_and_offers_the_new_version(store):
    base = store.active_model_version()
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        screen = app.screen
        assert "preference pairs 20" in str(screen.query_one("#feedback-counts").render())
        screen.query_one("#train-options", Input).value = "--steps 2 --top-layers 2"
        screen.query_one("#method").focus()
        await pilot.press("s")
        assert noticed(app, "started in the background")
        process = app.services.training
        phases = set()

        def ended() -> bool:  # and meanwhile, which phases it went through
            phases.add(process.snapshot().phase)
            return process.returncode is not None

        # A shared two-core machine can take minutes.
        await wait_for(pilot, ended, timeout=1500, poll_s=0.05, what="the training run")
        assert process.returncode == 0, "\n".join(process.snapshot().log)
        assert {"reward", "ppo"} <= phases, f"phases seen while running: {phases}"
        # Pushed is not yet composed: wait until the dialog's widgets exist.
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, ConfirmScreen) and bool(app.screen.query(".dialog-title")),
            timeout=30,
            what="switch offer",
        )
        assert screen.query_one("#reward-plot", Sparkline).data  # the reward curve was drawn
        state = str(screen.query_one("#training-state").render())
        assert "Finished" in state and "phase ppo step 2/2" in state
        run = store.last_training_run()
        new_version = store.get_model_version(run.result_version_id)
        assert new_version.parent_id == base.id and new_version.source == "train"
        assert new_version.name in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        await wait_for(pilot, lambda: app.services.model.is_ready
                       and app.services.model.require().version_id == new_version.id, timeout=120, what="new version")
        assert store.active_model_version().id == new_version.id
        assert isinstance(app.screen, ChatScreen)
