"""The training screen: parsing the trainer's progress lines (an ETA right after a resume),
cancelling (asked first, SIGTERM, resumable), a run started from a shell, and a real
`chat-tui train` run started from the app with a tiny model, followed live and offered for
the arena on success.
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
    running_app,
    seed_conversation,
    trainer_transcript,
    wait_for,
)
from textual.widgets import Input, Select, Sparkline

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


def _resumed_run(progress_lines):
    """The JSON lines of a PPO phase of 40 steps resumed at step 30, written by the trainer's
    own JsonProgress: the first advance catches up the 30 steps, then steps 31 and 32."""
    import io

    from trainer.progress import JsonProgress

    out = io.StringIO()
    phase = JsonProgress(out).phase("ppo", 40)
    phase.advance(30)
    phase.advance(1, {"reward": 0.1})
    phase.advance(1, {"reward": 0.2})
    return out.getvalue().splitlines(keepends=True)


def test_after_a_resume_the_eta_counts_only_the_steps_done_in_this_run():
    phase_line, resumed, step31, step32 = _resumed_run(None)
    assert json.loads(resumed)["resumed"] is True and "resumed" not in json.loads(step31)
    progress = TrainingProgress()
    apply_line(progress, phase_line, now=0.0)
    apply_line(progress, resumed, now=1.0)  # at once: those steps were done by an earlier process
    assert progress.eta_s is None  # no step timed yet in this process
    apply_line(progress, step31, now=11.0)
    apply_line(progress, step32, now=21.0)
    # Two steps in 20 s since the resume: 10 s a step, 8 steps left.
    assert progress.step == 32 and progress.eta_s == pytest.approx(80.0)
    assert "ppo: resumed at step 30 of 40" in progress.log


def test_the_consoles_eta_after_a_resume_counts_only_the_steps_done_in_this_run(monkeypatch):
    import io

    from trainer import progress as console

    now = [0.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: now[0])
    phase = console.ConsoleProgress(io.StringIO()).phase("ppo", 40)  # started at t=0
    now[0] = 1.0
    phase.advance(30)  # the resume, at t=1
    now[0] = 11.0
    phase.advance(1, {"reward": 0.1})  # 10 s for one step here
    now[0] = 21.0
    phase.advance(1, {"reward": 0.2})
    assert phase.line().split()[3:5] == ["eta", "1:20"]  # 8 steps at 10 s, not 8 at 21/32 s


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
async def test_training_runs_in_the_background_with_live_progress_and_offers_the_new_version_for_the_arena(store):
    base = store.active_model_version()
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.screen
        await wait_for(pilot, lambda: app.services.model.is_ready, timeout=120, what="model loaded")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        screen = app.screen
        assert "preference pairs 20" in str(screen.query_one("#feedback-counts").render())
        screen.query_one("#method", Select).value = "ppo"  # the method with a reward curve to draw
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
            lambda: isinstance(app.screen, ConfirmScreen) and bool(app.screen.query(".dialog-title"))
            and bool(app.screen.query("#yes")),
            timeout=30,
            what="the arena offer",
        )
        assert screen.query_one("#reward-plot", Sparkline).data  # the reward curve was drawn
        state = str(screen.query_one("#training-state").render())
        assert "Finished" in state and "phase ppo step 2/2" in state
        run = store.last_training_run()
        new_version = store.get_model_version(run.result_version_id)
        assert new_version.parent_id == base.id and new_version.source == "train"
        assert new_version.name in str(app.screen.query_one(".dialog-title").render())
        assert "Try it blind" in str(app.screen.query_one("#yes").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: app.screen is chat, what="back to chat")
        await wait_for(pilot, lambda: app.services.arena.is_ready, timeout=120, what="the new version against its parent")
        assert app.services.arena.pair == (new_version.id, base.id)
        assert isinstance(app.screen, ChatScreen)


# A process that answers SIGTERM as `chat-tui train` does (records the run as cancelled and
# exits 143; the trainer's own test covers that side), after printing a phase it is in.
SIGTERM_LIKE_THE_TRAINER = """
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
print(json.dumps({"event": "phase", "phase": "dpo", "total": 30}), flush=True)
print(json.dumps({"event": "step", "phase": "dpo", "step": 1, "total": 30, "metrics": {"loss": 0.7}}), flush=True)
time.sleep(120)
"""


@async_test
async def test_cancel_asks_first_sends_sigterm_and_says_the_run_is_resumable(store):
    import sys

    from chat_tui.services.training_process import TrainingProcess

    async with running_app(store, (120, 40), load_model=False) as (app, pilot):
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        screen = app.screen
        needs = str(screen.query_one("#training-needs").render())
        assert "DPO needs at least 16 preference pairs ✓ (you have 20)" in needs  # the default method
        screen.query_one("#method", Select).value = "ppo"
        await wait_for(pilot, lambda: "4 prompts to practise on ✓" in str(screen.query_one("#training-needs").render()),
                       what="PPO's needs")
        process = TrainingProcess([sys.executable, "-c", SIGTERM_LIKE_THE_TRAINER])
        app.services.training = process
        await wait_for(pilot, lambda: process.snapshot().step == 1, what="the run under way")
        screen.refresh_bindings()
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked first")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen, what="not cancelled")
        assert process.returncode is None
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked again")
        await pilot.press("y")
        await wait_for(pilot, lambda: process.returncode is not None, what="the run stopped")
        assert process.returncode == 143  # SIGTERM, not a kill
        await wait_for(pilot, lambda: "Cancelled (resumable" in str(screen.query_one("#training-state").render()),
                       what="cancelled, resumable")
        assert not any(severity == "error" for _, severity in app.notices)


@async_test
async def test_a_run_started_from_a_shell_shows_on_the_training_screen(store):
    async with running_app(store, (120, 40), load_model=False) as (app, pilot):
        run = store.start_training_run("ppo", base_version_id=store.active_model_version().id)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), what="training screen")
        state = app.screen.query_one("#training-state")
        await wait_for(pilot, lambda: f"run {run.id} (ppo)" in str(state.render()), what="the shell run shown")
        assert "started outside the app" in str(state.render())
        store.finish_training_run(run.id, "cancelled")
        await wait_for(pilot, lambda: "Not running" in str(state.render()), what="its end")
