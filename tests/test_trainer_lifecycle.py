"""A run's life: one at a time, SIGTERM recorded as cancelled and resumable, a resume
after the last checkpoint, runs on a replaced base abandoned, launches refused up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from chat_tui.paths import data_dir, models_dir
from test_trainer_pipeline import SMALL, add_feedback, base_state, install_base  # noqa: F401 (fixture)
from trainer.checkpoints import run_folder
from trainer.pipeline import BaseVersion, run_training
from trainer.run import TrainingRun
from trainer.run_lock import RunLock
from trainer.settings import TrainSettings


def train_cli(args: list[str], home, **env) -> subprocess.Popen:
    full_env = {**os.environ, "CHAT_TUI_HOME": str(home), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "chat_tui", "train", *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_run_is_refused_while_one_holds_the_lock(base_state, chat_tui_home):  # noqa: F811
    store, _ = install_base(base_state)
    add_feedback(store, conversations=6)
    with RunLock(data_dir()) as lock:
        lock.note(run_id=7)
        process = train_cli(["--device", "cpu", "--steps", "1"], chat_tui_home)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines() == [f"Error: another training run is in progress (run 7, pid {os.getpid()}); "
                                        f"wait for it to finish or stop it first"]
    assert store.list_training_runs() == []


def test_sigterm_cancels_the_run_and_the_same_command_resumes_it(base_state, chat_tui_home):  # noqa: F811
    store, _ = install_base(base_state)
    add_feedback(store)
    args = ["--algo", "dpo", "--steps", "300", "--device", "cpu", "--max-reply-tokens", "12", "--top-layers", "0"]
    process = train_cli(args, chat_tui_home)
    state = run_folder(data_dir(), 1) / "state.json"
    deadline = time.monotonic() + 240
    while not (state.is_file() and json.loads(state.read_text()).get("policy_step", 0) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == ("Error: training was cancelled (SIGTERM); run the same command again "
                                            "to resume it")
    run = store.list_training_runs()[0]
    assert run.status == "cancelled" and state.is_file()
    checkpointed = json.loads(state.read_text())["policy_step"]
    resumed = subprocess.run([sys.executable, "-m", "chat_tui", "train", *args], capture_output=True, text=True,
                             env={**os.environ, "CHAT_TUI_HOME": str(chat_tui_home)}, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"dpo: resuming at step {checkpointed} of 300" in resumed.stdout
    assert [(r.id, r.status) for r in store.list_training_runs()] == [(1, "succeeded")]


def test_a_run_killed_after_its_last_checkpoint_resumes_and_saves(base_state, monkeypatch):  # noqa: F811
    store, base = install_base(base_state)
    add_feedback(store, demos_every=0)
    settings = TrainSettings(algo="dpo", **{**SMALL, "steps": 4})
    real_evaluate = TrainingRun.evaluate

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies between the last checkpoint and saving

    monkeypatch.setattr(TrainingRun, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert json.loads((run_folder(data_dir(), 1) / "state.json").read_text())["policy_step"] == 4
    monkeypatch.setattr(TrainingRun, "evaluate", real_evaluate)
    lines = []
    outcome = run_training(settings, store, base, data_dir(), models_dir(), echo=lines.append)
    assert "dpo: resuming at step 4 of 4" in lines
    assert outcome.version_name == "tiny-dpo-run1"
    assert store.list_training_runs()[0].status == "succeeded"


def test_an_interrupted_run_on_a_replaced_base_is_abandoned(base_state, monkeypatch):  # noqa: F811
    store, base = install_base(base_state)
    add_feedback(store, demos_every=0)
    monkeypatch.setattr(TrainingRun, "evaluate", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_training(TrainSettings(algo="dpo", **SMALL), store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert store.list_training_runs()[0].status == "running" and run_folder(data_dir(), 1).exists()
    monkeypatch.undo()
    other = store.register_model_version("tiny-copy", base.path, source="import", activate=True)
    run_training(TrainSettings(algo="dpo", **SMALL), store, BaseVersion(base.path, other.id, "tiny-copy"), data_dir(),
                 models_dir(), echo=lambda _: None)
    first, second = store.list_training_runs()
    assert first.status == "abandoned" and "superseded by a run on 'tiny-copy'" in first.error
    assert not run_folder(data_dir(), first.id).exists()
    assert second.status == "succeeded"


@pytest.mark.parametrize("env,message", [
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}, "accelerate launch --cpu runs a single process"),
    ({"ACCELERATE_USE_FSDP": "true"}, "accelerate's FSDP engine is not supported"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "accelerate's DeepSpeed engine is not supported"),
])
def test_launches_that_would_not_do_what_was_asked_are_refused_up_front(base_state, chat_tui_home, env, message):  # noqa: F811
    store, _ = install_base(base_state)
    add_feedback(store, conversations=6)
    process = train_cli(["--device", "cpu"], chat_tui_home, **env)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert store.list_training_runs() == []
