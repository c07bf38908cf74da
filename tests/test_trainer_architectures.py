"""The trainer on the architectures beyond Llama: a Qwen2 (q/k/v biases) and a Gemma 3
(sliding-window layers, scaled embeddings, (1 + w) norms) train with LoRA by PPO and DPO
from a real feedback store, on a shared frozen trunk too, and the new version is a model
of the same architecture that loads and exports."""

from __future__ import annotations

import pytest
import torch

from chat_tui.paths import data_dir, database_path, ensure_data_dir, models_dir
from engine.export.gguf import export_gguf
from engine.loading import ModelStore, load_model
from feedback import Store
from test_trainer_pipeline import SMALL, add_feedback
from tiny_models import make_tiny_model_dir
from trainer.pipeline import BaseVersion, run_training
from trainer.settings import TrainSettings
from trainer.trunk import hidden_states, run_trunk

ARCHITECTURES = ["qwen2", "gemma3_text"]


def install(tmp_path, model_type: str) -> tuple[Store, BaseVersion]:
    ensure_data_dir()
    path = ModelStore(models_dir()).import_model(make_tiny_model_dir(tmp_path / "source", model_type=model_type),
                                                 name="tiny")
    store = Store(database_path())
    version = store.register_model_version("tiny", str(path), source="import", activate=True)
    return store, BaseVersion(str(path), version.id, "tiny")


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_trunk_then_top_equals_the_full_forward(tmp_path, model_type):
    model = load_model(make_tiny_model_dir(tmp_path / "m", model_type=model_type)).model
    ids = torch.tensor([[5, 9, 14, 7, 31, 40, 2, 8, 11, 3], [6, 6, 20, 21, 22, 23, 24, 25, 0, 0]])
    assert torch.allclose(hidden_states(model, ids, run_trunk(model, ids, 1)), model.hidden_states(ids), atol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "dpo"])
@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_lora_run_on_a_shared_trunk_writes_a_version_of_the_same_architecture(tmp_path, model_type, algo):
    store, base = install(tmp_path, model_type)
    add_feedback(store, demos_every=0, seed=1)
    settings = TrainSettings(**{**SMALL, "algo": algo, "use_lora": True, "top_layers": 1})
    outcome = run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    run = store.list_training_runs()[-1]
    assert run.status == "succeeded" and run.kind == algo
    version = store.get_model_version(run.result_version_id)
    new, parent = load_model(version.path), load_model(base.path)
    assert new.config == parent.config and new.config.model_type == model_type
    ids = torch.tensor([new.encode_chat([{"role": "user", "content": "w1 kind w3 warm"}])])
    with torch.no_grad():
        assert not torch.allclose(new.model(ids), parent.model(ids))  # the merged adapters changed it
    # Only the top layer trained: the bottom one and the embeddings are the parent's.
    new_state, parent_state = new.model.state_dict(), parent.model.state_dict()
    for name, value in parent_state.items():
        if ".layers.0." in name or "embed_tokens" in name:
            assert torch.equal(new_state[name], value), name
    assert export_gguf(version.path, tmp_path / "new.gguf", "f32").is_file()
    assert outcome.version_name == f"tiny-{algo}-run1"


def test_ppo_rollouts_decode_gemma3_past_its_window(tmp_path):
    """Rollouts longer than the 4-token window go through the engine's windowed cache."""
    store, base = install(tmp_path, "gemma3_text")
    add_feedback(store, demos_every=0, seed=2)
    settings = TrainSettings(**{**SMALL, "algo": "ppo", "max_reply_tokens": 12, "steps": 2})
    run_training(settings, store, base, data_dir(), models_dir(), echo=lambda _: None)
    run = store.list_training_runs()[-1]
    assert run.status == "succeeded"
    assert max(step["reply_length"] for step in run.metrics["ppo"]) > 4
