"""Training settings: one registry of algorithms, one default per knob, `--set` parsing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from chat_tui.commands.train import train
from chat_tui.screens.training_screen import METHODS
from trainer.algorithms import ALGORITHMS, get_algorithm
from trainer.dpo import DPOConfig
from trainer.errors import TrainerError
from trainer.ppo import PPOConfig
from trainer.reward_training import RewardTrainingConfig
from trainer.settings import TrainSettings, describe_settings
from trainer.sft import SFTConfig


def test_every_algorithm_is_offered_by_the_cli_and_the_app():
    choices = next(p for p in train.params if p.name == "algo").type.choices
    assert list(choices) == list(ALGORITHMS)
    assert [name for _, name in METHODS] == list(ALGORITHMS)
    for algorithm in ALGORITHMS.values():
        assert callable(algorithm.load_phase())


def test_unknown_algorithm_names_the_choices():
    with pytest.raises(TrainerError, match="unknown algorithm 'rlhf' \\(choose from ppo, dpo"):
        get_algorithm("rlhf")


def test_phase_configs_take_their_values_from_the_settings():
    settings = TrainSettings(algo="ppo", device="cpu", kl_beta=0.07, temperature=0.9, max_reply_tokens=77, dpo_nll_weight=0.3,
                             minibatch_rows=6, seed=5).resolved(on_gpu=False)
    ppo = PPOConfig.from_settings(settings, trunk_layers=3)
    assert (ppo.kl_beta, ppo.temperature, ppo.max_new_tokens, ppo.minibatch_rows, ppo.seed, ppo.trunk_layers) == (
        0.07, 0.9, 77, 6, 5, 3)
    assert ppo.lr == get_algorithm("ppo").lr_lora and ppo.steps == get_algorithm("ppo").steps_cpu
    dpo = DPOConfig.from_settings(settings)
    assert (dpo.nll_weight, dpo.beta, dpo.seed) == (0.3, settings.dpo_beta, 5)
    assert SFTConfig.from_settings(settings).examples_per_batch == 6
    assert RewardTrainingConfig.from_settings(settings).groups_per_batch == 3


def test_phase_config_defaults_agree_with_the_settings():
    """A config built without settings has the same defaults as a run's (one source)."""
    from trainer.rloo import RLOOConfig

    for algo, config in (("ppo", PPOConfig(lr=1.0)), ("rloo", RLOOConfig(lr=1.0))):
        s = TrainSettings(algo=algo).resolved(on_gpu=False)
        for name in ("kl_beta", "temperature", "prompts_per_step", "samples_per_prompt", "minibatch_rows",
                     "value_lr", "target_kl", "no_eos_penalty", "steps"):
            assert getattr(config, name) == getattr(s, name), (algo, name)
        assert config.max_new_tokens == s.max_reply_tokens
    assert PPOConfig(lr=1.0).ppo_epochs == TrainSettings.ppo_epochs
    assert RLOOConfig(lr=1.0).ppo_epochs == TrainSettings.rloo_epochs
    s, dpo = TrainSettings(), DPOConfig(lr=1.0)
    assert (dpo.beta, dpo.nll_weight, dpo.kto_weight) == (s.dpo_beta, s.dpo_nll_weight, s.kto_weight)


def test_settings_parse_text_values_by_field_type():
    s = TrainSettings().with_values({"kl_beta": "0.5", "steps": "12", "use_lora": "false", "top_layers": "none"})
    assert (s.kl_beta, s.steps, s.use_lora, s.top_layers) == (0.5, 12, False, None)
    with pytest.raises(TrainerError, match="unknown setting 'kl'"):
        TrainSettings().with_values({"kl": "1"})
    with pytest.raises(TrainerError, match="setting steps takes a whole number, got 'many'"):
        TrainSettings().with_values({"steps": "many"})


def test_validate_names_the_bad_setting():
    with pytest.raises(TrainerError, match="setting temperature has a bad value: 0"):
        TrainSettings(device="cpu", temperature=0).validate()
    with pytest.raises(TrainerError, match="setting policy_lr has a bad value: -1.0"):
        TrainSettings(device="cpu", policy_lr=-1.0).validate()


def test_every_setting_has_help():
    rows = describe_settings()
    assert {name for name, _, _ in rows} >= {"algo", "kl_beta", "dpo_beta", "policy_lr"}
    assert all(text for _, _, text in rows)


def test_cli_lists_and_sets_settings(chat_tui_home):
    listed = CliRunner().invoke(train, ["--list-settings"])
    assert listed.exit_code == 0 and "dpo_nll_weight" in listed.output
    assert not any(chat_tui_home.iterdir())  # listing touches nothing
    bad = subprocess.run([sys.executable, "-m", "chat_tui", "train", "--device", "cpu", "--set", "bogus=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["Error: unknown setting 'bogus' (see chat-tui train --list-settings)"]
    assert not any(chat_tui_home.iterdir())


def test_token_limits_are_bounded():
    with pytest.raises(TrainerError, match="setting max_reply_tokens has a bad value: 1000000000"):
        TrainSettings(device="cpu", max_reply_tokens=10**9).validate()


def test_a_checkpoint_write_on_a_full_disk_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from trainer import checkpoints

    checkpoint = checkpoints.RunCheckpoint(tmp_path / "run-1")
    checkpoint.write_state({"policy_step": 2})

    def full_disk_write(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")  # what torch says

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 0))
    monkeypatch.setattr(checkpoints.torch, "save", full_disk_write)
    with pytest.raises(TrainerError, match=r"cannot write the checkpoint '.*ppo-trainer-4.pt': No space left on device \(ENOSPC\)"):
        checkpoint.save_object("ppo-trainer-4", {"step": 4})
    assert checkpoint.read_state() == {"policy_step": 2}
    assert sorted(p.name for p in (tmp_path / "run-1").iterdir()) == ["state.json"]  # no temporary file left
