"""Whole training runs from a real feedback store and model store, on a tiny chat model.

The base model (the tiny word-level chat model after SFT, see test_trainer_scripted.py)
is saved into the model store and registered as the active version; conversations with
ranked alternatives (ranked by the kind-word rater) and a few demonstrations fill the
feedback store. Covers dry runs, PPO/DPO/SFT-only runs, not enough feedback, a NaN run,
a model too large, kill-and-resume, and the `chat-tui train` command.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from chat_tui.cli import cli
from chat_tui.paths import data_dir, database_path, ensure_data_dir, models_dir
from engine.config import ModelConfig
from engine.errors import DeviceError
from engine.loading import ModelStore, load_model
from feedback import Store
from feedback.records import ReplyDraft
from test_trainer_scripted import kind_share, random_words, sft_base_model, tiny_chat_model
from trainer.checkpoints import run_folder
from trainer.errors import ModelTooLargeError, NotEnoughFeedbackError, TrainerError, TrainingDivergedError
from trainer.memory import check_fits, estimate_memory
from trainer.pipeline import BaseVersion, run_training
from trainer.settings import MIN_PAIRS, TrainSettings

SMALL = dict(
    device="cpu", steps=4, prompts_per_step=4, max_reply_tokens=12, reward_lr=2e-3, sft_lr=3e-3, policy_lr=3e-3,
    value_lr=1e-3, top_layers=0, reward_epochs=2,
)


@pytest.fixture(scope="module")
def base_state() -> dict[str, torch.Tensor]:
    loaded, _ = sft_base_model(random.Random(0))
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


def install_base(base_state, corrupt: bool = False) -> tuple[Store, BaseVersion]:
    """Save the base model into this test's model store and make it the active version."""
    ensure_data_dir()
    loaded = tiny_chat_model()
    loaded.model.load_state_dict(base_state)
    if corrupt:  # weights that overflow: every logit becomes inf/NaN
        with torch.no_grad():
            loaded.model.model.layers[0].mlp.down_proj.weight.fill_(3e38)
    path = ModelStore(models_dir()).save_model(loaded, "tiny", source="import")
    store = Store(database_path())
    version = store.register_model_version("tiny", str(path), source="import", activate=True)
    return store, BaseVersion(str(path), version.id, "tiny")


def add_feedback(store: Store, conversations: int = 24, rank: bool = True, demos_every: int = 4, seed: int = 0) -> None:
    rng = random.Random(seed)
    for c in range(conversations):
        cid = store.create_conversation(f"c{c}").id
        for _ in range(2):
            user = store.add_user_message(cid, random_words(rng, 0.0, 3))
            if demos_every and c % demos_every == 0:
                store.save_demonstration(user.id, random_words(rng, 0.8, 4))
            num_replies = 3 if rank else 1
            drafts = [ReplyDraft(random_words(rng, rng.random(), rng.randint(2, 6))) for _ in range(num_replies)]
            replies = store.add_assistant_replies(user.id, drafts)
            if rank:
                store.rank(user.id, [m.id for m in sorted(replies, key=lambda m: -kind_share(m.content))])


def folder_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(path).iterdir()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def test_dry_run_describes_the_data_and_writes_nothing(base_state):
    store, base = install_base(base_state)
    add_feedback(store)
    lines = []
    outcome = run_training(TrainSettings(algo="ppo", **SMALL), store, base, data_dir(), models_dir(), dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert "phases: sft -> reward -> ppo" in text and "held out by conversation" in text
    assert f"preference pairs: {outcome.summary['train_pairs']} train" in text and outcome.summary["train_pairs"] > 100
    assert "estimated peak memory" in text
    assert store.list_training_runs() == [] and [v.name for v in store.list_model_versions()] == ["tiny"]


@pytest.mark.parametrize("top_layers", [0, 1], ids=["all-layers", "top-layer-shared-trunk"])
def test_ppo_run_writes_a_new_version_and_leaves_the_parent_alone(base_state, top_layers):
    store, base = install_base(base_state)
    add_feedback(store)
    before = folder_digest(Path(base.path))
    settings = TrainSettings(algo="ppo", **{**SMALL, "top_layers": top_layers})
    outcome = run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert folder_digest(Path(base.path)) == before
    run = store.list_training_runs()[-1]
    assert run.status == "succeeded" and run.kind == "ppo" and run.result_version_id is not None
    version = store.get_model_version(run.result_version_id)
    assert version.parent_id == base.version_id and version.source == "train"
    assert version.name == outcome.version_name == "tiny-ppo-run1"
    assert store.active_model_version().name == (version.name if outcome.activated else "tiny")
    assert outcome.activated == bool(outcome.improved)
    assert len(run.metrics["ppo"]) == 4 and {"reward", "kl", "clip_fraction", "value_loss", "approx_kl",
                                             "reply_length"} <= set(run.metrics["ppo"][0])
    assert run.metrics["reward"]["eval_pairs"] > 0
    assert set(outcome.phase_seconds) == {"setup", "sft", "reward", "ppo", "evaluate", "save"}
    assert len(outcome.samples) == 3 and all({"prompt", "parent", "new"} <= set(s) for s in outcome.samples)
    # The new version loads like any stored model and differs from its parent.
    new, parent = load_model(version.path), load_model(base.path)
    ids = torch.tensor([new.encode_chat([{"role": "user", "content": "w1 w2 w3"}])])
    assert not torch.allclose(new.model(ids), parent.model(ids))
    assert not run_folder(data_dir(), run.id).exists()  # checkpoint removed after success
    assert (data_dir() / "reward_models" / "tiny-rm-run1" / "model.safetensors").is_file()


@pytest.mark.parametrize("top_layers", [0, 1], ids=["all-layers", "top-layer-shared-trunk"])
def test_dpo_run_with_activate(base_state, top_layers):
    store, base = install_base(base_state)
    add_feedback(store, demos_every=0)
    settings = TrainSettings(algo="dpo", activate=True, **{**SMALL, "top_layers": top_layers})
    outcome = run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert outcome.plan.names == ["dpo"]
    assert store.active_model_version().name == "tiny-dpo-run1"
    assert "dpo_eval_accuracy" in outcome.metrics
    # Stored as its LoRA adapters on the base, not a full copy; loading folds them in.
    from safetensors.torch import load_file

    stored = {m.name: m for m in ModelStore(models_dir()).list_models()}
    assert stored["tiny-dpo-run1"].base == "tiny" and not (Path(outcome.version_path) / "model.safetensors").exists()
    delta = load_file(Path(outcome.version_path) / "delta.safetensors")
    assert delta and all(name.endswith((".lora_a", ".lora_b")) for name in delta)
    num_layers = tiny_chat_model().config.num_hidden_layers
    assert {int(name.split(".")[2]) for name in delta} == set(range(num_layers - (top_layers or num_layers), num_layers))
    new, parent = load_model(outcome.version_path), load_model(base.path)
    ids = torch.tensor([new.encode_chat([{"role": "user", "content": "w1 w2 w3"}])])
    assert not torch.allclose(new.model(ids), parent.model(ids))


def test_a_second_run_updates_the_reward_model_and_scores_it_on_the_feedback_since(base_state):
    store, base = install_base(base_state)
    add_feedback(store, conversations=12, demos_every=0)
    settings = TrainSettings(algo="rloo", **{**SMALL, "top_layers": 1, "samples_per_prompt": 2, "steps": 1})
    first = run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert "reward_prior_accuracy" not in first.metrics and "reward_updated_from_run" not in first.metrics
    add_feedback(store, conversations=6, demos_every=0, seed=5)
    lines = []
    second = run_training(settings, store, base, data_dir(), models_dir(), echo=lines.append)
    assert second.metrics["reward_updated_from_run"] == first.run_id
    # The 6 new conversations' rankings: 2 prompts x 3 pairs each, none seen by the first model.
    assert second.metrics["reward_prior_pairs"] == 6 * 2 * 3
    assert 0.0 <= second.metrics["reward_prior_accuracy"] <= 1.0
    assert any("pairs given since it was trained" in line for line in lines)


def test_rloo_run_writes_a_new_version(base_state):
    store, base = install_base(base_state)
    add_feedback(store, demos_every=0)
    settings = TrainSettings(algo="rloo", **{**SMALL, "top_layers": 1, "samples_per_prompt": 3})
    outcome = run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert outcome.plan.names == ["reward", "rloo"]
    run = store.list_training_runs()[-1]
    assert run.status == "succeeded" and run.kind == "rloo"
    assert len(run.metrics["rloo"]) == 4 and "value_loss" not in run.metrics["rloo"][0]
    assert outcome.version_name == "tiny-rloo-run1"


def test_not_enough_feedback_says_how_much_is_needed(base_state):
    store, base = install_base(base_state)
    with pytest.raises(NotEnoughFeedbackError, match=f"0 preference pair.*need {MIN_PAIRS}.*0 demonstration"):
        run_training(TrainSettings(algo="ppo", **SMALL), store, base, data_dir(), models_dir(), echo=lambda _: None)
    add_feedback(store, conversations=2, rank=False, demos_every=0)  # chat only, no judgments
    with pytest.raises(NotEnoughFeedbackError, match="not enough feedback"):
        run_training(TrainSettings(algo="ppo", **SMALL), store, base, data_dir(), models_dir(), echo=lambda _: None)
    assert store.list_training_runs() == []


def test_only_demonstrations_runs_sft_only(base_state):
    """Replies the user wrote with no model reply beside them: nothing to prefer them over."""
    store, base = install_base(base_state)
    rng = random.Random(1)
    for c in range(8):
        cid = store.create_conversation(f"c{c}").id
        for _ in range(2):
            user = store.add_user_message(cid, random_words(rng, 0.0, 3))
            store.save_demonstration(user.id, random_words(rng, 0.8, 4))
    lines = []
    outcome = run_training(TrainSettings(algo="ppo", **SMALL), store, base, data_dir(), models_dir(), echo=lines.append)
    assert outcome.plan.names == ["sft"]
    assert any("running SFT only" in line for line in lines)
    assert outcome.version_name == "tiny-sft-run1"


def test_nan_loss_stops_the_run_and_nothing_is_activated(base_state):
    store, base = install_base(base_state, corrupt=True)
    add_feedback(store)
    with pytest.raises(TrainingDivergedError, match="nan"):
        run_training(TrainSettings(algo="ppo", **SMALL), store, base, data_dir(), models_dir(), echo=lambda _: None)
    run = store.list_training_runs()[-1]
    assert run.status == "failed" and "nan" in run.error
    assert [v.name for v in store.list_model_versions()] == ["tiny"] and store.active_model_version().name == "tiny"


def test_model_too_large_is_refused_up_front():
    # A 70B Llama in fp32 with full training: far beyond this machine.
    config = ModelConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                         num_attention_heads=64, num_key_value_heads=8)
    estimate = estimate_memory(config, config.num_parameters, bytes_per_weight=4, needs_reference_copy=True,
                               needs_reward_and_value=True, rows=8, sequence_length=512, logit_columns=64,
                               trained_layers=80, kv_cache_tokens=8192)
    with pytest.raises(ModelTooLargeError, match=r"needs about [0-9.]+ GiB .* but cpu has [0-9.]+ GiB free"):
        check_fits(estimate, torch.device("cpu"), "llama-70b")


def test_bad_settings_are_clear_errors(base_state):
    store, base = install_base(base_state)
    add_feedback(store, conversations=6)
    with pytest.raises(TrainerError, match="unknown algorithm 'rlhf'"):
        run_training(TrainSettings(algo="rlhf"), store, base, data_dir(), models_dir())
    with pytest.raises(TrainerError, match="more than the model's 2 layers"):
        run_training(TrainSettings(algo="ppo", **{**SMALL, "top_layers": 9}), store, base, data_dir(), models_dir(), echo=lambda _: None)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        run_training(TrainSettings(device="tpu"), store, base, data_dir(), models_dir())


def run_cli(args: list[str], home: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "CHAT_TUI_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "chat_tui", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_killed_run_leaves_stores_intact_and_resumes(base_state, chat_tui_home):
    store, base = install_base(base_state)
    add_feedback(store)
    # Enough steps that the run is still going when the test sees its second checkpoint.
    args = ["--algo", "ppo", "--steps", "30", "--device", "cpu", "--max-reply-tokens", "12", "--top-layers", "0"]
    process = run_cli(args, chat_tui_home)
    deadline = time.time() + 240
    state_file = None
    while time.time() < deadline and process.poll() is None:
        runs = store.list_training_runs()
        if runs:
            state_file = run_folder(data_dir(), runs[-1].id) / "state.json"
            if state_file.is_file() and '"policy_step": 2' in state_file.read_text():
                break
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpointed = json.loads(state_file.read_text())["policy_step"]  # 2, or a later one
    assert 2 <= checkpointed < 30
    # The database is intact, the parent is still active, no version was added.
    with sqlite3.connect(database_path()) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.active_model_version().name == "tiny"
    assert [v.name for v in store.list_model_versions()] == ["tiny"]
    assert store.list_training_runs()[-1].status == "running"
    # Rerunning the same command resumes from the checkpoint and finishes.
    result = subprocess.run([sys.executable, "-m", "chat_tui", "train", *args], env={**os.environ, "CHAT_TUI_HOME": str(chat_tui_home)},
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "resuming training run 1" in output and f"ppo: resuming at step {checkpointed} of 30" in output
    assert "sft: done in an earlier attempt" in output and "reward model: done in an earlier attempt" in output
    runs = store.list_training_runs()
    assert len(runs) == 1 and runs[0].status == "succeeded" and len(runs[0].metrics["ppo"]) == 30
    assert "saved model version 'tiny-ppo-run1'" in output


def test_train_command_help_and_dry_run(base_state):
    store, _ = install_base(base_state)
    add_feedback(store, conversations=6)
    runner = CliRunner()
    help_text = runner.invoke(cli, ["train", "--help"]).output
    for flag in ("--algo", "--lora / --full", "--steps", "--device", "--dry-run", "--activate"):
        assert flag in help_text
    result = runner.invoke(cli, ["train", "--dry-run", "--algo", "dpo", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "phases: sft -> dpo" in result.output


def test_train_command_progress_json_is_what_the_chat_reads(base_state):
    """Every stdout line of `chat-tui train --progress-json` is a JSON event, and the chat's
    training-screen parser follows the run from them to the new version."""
    import json

    from chat_tui.services.training_process import TrainingProgress, apply_line

    store, _ = install_base(base_state)
    add_feedback(store, conversations=12, demos_every=0)
    result = CliRunner().invoke(cli, ["train", "--progress-json", "--algo", "dpo", "--device", "cpu", "--steps", "2",
                                      "--top-layers", "0", "--max-reply-tokens", "12"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and "message" in kinds
    phases = [e for e in events if e["event"] == "phase"]
    assert [p["phase"] for p in phases] == ["dpo"] and phases[0]["total"] == 2
    steps = [e for e in events if e["event"] == "step"]
    assert [s["step"] for s in steps] == [1, 2] and "loss" in steps[-1]["metrics"]
    progress = TrainingProgress()
    for line in result.stdout.splitlines():
        apply_line(progress, line)
    new_version = store.get_model_version("tiny-dpo-run1")
    assert events[-1]["version"] == progress.result_version == new_version.name
    assert events[-1]["version_id"] == progress.result_version_id == new_version.id
    assert progress.phase == "dpo" and progress.step == 2
