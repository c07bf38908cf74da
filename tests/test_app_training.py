"""The training screen: parsing the trainer's progress lines, and a real `chat-tui train`
run started from the app with a tiny model, followed live and switched to on success.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from app_support import (
    async_test,
    make_app,
    make_tiny_model,
    noticed,
    open_store,
    register_tiny_model,
    seed_conversation,
    wait_for,
)
from textual.widgets import Input, Sparkline

from chat_tui.screens.chat_screen import ChatScreen
from chat_tui.screens.confirm_screen import ConfirmScreen
from chat_tui.screens.training_screen import TrainingScreen
from chat_tui.services.training_process import TrainingProgress, apply_line

# Lines as `chat-tui train` prints them when its stderr is not a terminal.
CONSOLE_LINES = [
    "phases: sft -> reward -> ppo\n",
    "reward   [##......................] 1/12 eta 0:02  loss 0.6859  accuracy 1\n",
    "ppo      [........................] 0/4 0:00\n",
    "ppo      [######..................] 1/4 eta 0:38  reward -0.01693  kl 0  entropy 5.603\n",
    "ppo      [############............] 2/4 eta 0:27  reward -0.1845  kl 0.0002773  entropy 5.603\n",
]


def test_console_progress_lines_give_phase_step_reward_and_kl():
    progress = TrainingProgress()
    for line in CONSOLE_LINES:
        apply_line(progress, line)
    assert (progress.phase, progress.step, progress.total) == ("ppo", 2, 4)
    assert progress.reward == pytest.approx(-0.1845) and progress.kl == pytest.approx(0.0002773)
    assert progress.rewards == pytest.approx([-0.01693, -0.1845])
    assert progress.kls == pytest.approx([0.0, 0.0002773])
    assert progress.log[0] == "phases: sft -> reward -> ppo" and len(progress.log) == len(CONSOLE_LINES)


def test_terminal_redraws_and_json_lines_are_understood_too():
    progress = TrainingProgress()
    apply_line(progress, "\r\x1b[2Kppo      [#####...] 1/8 eta 0:10  reward 0.5  kl 0.01")
    assert (progress.step, progress.reward) == (1, 0.5)
    apply_line(progress, json.dumps({"event": "phase", "phase": "dpo", "total": 10}))
    apply_line(progress, json.dumps({"event": "step", "phase": "dpo", "step": 3, "total": 10,
                                     "metrics": {"loss": 0.6, "reward": 1.5, "kl": 0.02}}))
    apply_line(progress, json.dumps({"event": "done", "version_id": 4, "version": "tiny-dpo-1"}))
    assert (progress.phase, progress.step, progress.total, progress.reward, progress.kl) == ("dpo", 3, 10, 1.5, 0.02)
    assert (progress.result_version_id, progress.result_version) == (4, "tiny-dpo-1")
    apply_line(progress, "{not json")
    assert progress.log[-1] == "{not json"


@pytest.fixture
def store(tmp_path):
    store = open_store()
    register_tiny_model(store, make_tiny_model(tmp_path / "tiny"))
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
        while process.returncode is None:  # a shared two-core machine can take minutes
            phases.add(process.snapshot().phase)
            await asyncio.sleep(0.05)
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
