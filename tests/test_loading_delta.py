"""Models stored as changes to a base ("base + delta"): what is written, that reading
rebuilds the exact weights (through a chain too), that a base others need is not removed,
and two loaded versions holding their common weights once."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ModelLoadError
from engine.loading import ModelStore, load_model
from engine.loading.delta import DELTA_FILE, share_unchanged_weights
from engine.loading.hf_dir import read_hf_directory
from tiny_models import make_tiny_model_dir

RANK = 2


@pytest.fixture
def store(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.import_model(make_tiny_model_dir(tmp_path / "src" / "base", tie_word_embeddings=True), name="base")
    return store


def _trained(loaded, seed: int = 1):
    """What a LoRA run on layer 1 leaves: that layer's q_proj gets a rank-2 update, the
    final norm changes freely. Returns (weights without the update, the update, merged)."""
    generator = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    state["model.norm.weight"] += 0.5
    weight = state["model.layers.1.self_attn.q_proj.weight"]
    b = torch.randn(weight.shape[0], RANK, generator=generator) * 0.1
    a = torch.randn(RANK, weight.shape[1], generator=generator)
    merged = dict(state)
    merged["model.layers.1.self_attn.q_proj.weight"] = weight + b @ a
    return state, {"model.layers.1.self_attn.q_proj.weight": (b, a)}, merged


def _logits(loaded, ids=(5, 9, 14, 3)):
    with torch.no_grad():
        return loaded.model(torch.tensor([list(ids)]))[0]


def test_a_version_saved_with_its_base_stores_only_what_changed(store):
    base = load_model("base", store_root=store.root)
    state, low_rank, merged = _trained(base)
    path = store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    assert not (path / "model.safetensors").exists() and (path / DELTA_FILE).is_file()
    from safetensors.torch import load_file

    assert set(load_file(path / DELTA_FILE)) == {
        "model.norm.weight",
        "model.layers.1.self_attn.q_proj.weight.lora_a", "model.layers.1.self_attn.q_proj.weight.lora_b",
    }
    stored = {m.name: m for m in store.list_models()}
    assert stored["tuned"].base == "base" and stored["base"].base is None
    assert stored["tuned"].size_bytes < stored["base"].size_bytes / 3
    # Reading it rebuilds the merged weights; the model computes what the merged one does.
    tensors = read_hf_directory(path).tensors
    for name, tensor in merged.items():
        if name != "lm_head.weight":
            torch.testing.assert_close(tensors[name], tensor, rtol=0, atol=1e-6)
    tuned = load_model("tuned", store_root=store.root)
    reference = load_model("base", store_root=store.root)
    reference.model.load_state_dict(merged)
    torch.testing.assert_close(_logits(tuned), _logits(reference), rtol=0, atol=1e-5)


def test_a_chain_of_deltas_loads_and_an_outside_base_is_stored_whole(store, tmp_path):
    base = load_model("base", store_root=store.root)
    state, low_rank, merged = _trained(base)
    store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    tuned = load_model("tuned", store_root=store.root)
    again, low_rank_2, merged_2 = _trained(tuned, seed=2)
    store.save_model(tuned, "tuned-2", state_dict=again, base=store.path_of("tuned"), low_rank=low_rank_2)
    assert store.dependents("tuned") == ["tuned-2"]
    twice = load_model("tuned-2", store_root=store.root)
    torch.testing.assert_close(twice.model.model.layers[1].self_attn.q_proj.weight,
                               merged_2["model.layers.1.self_attn.q_proj.weight"], rtol=0, atol=1e-5)
    outside = make_tiny_model_dir(tmp_path / "elsewhere", tie_word_embeddings=True)
    whole = store.save_model(base, "whole", state_dict=state, base=outside, low_rank=low_rank)
    assert (whole / "model.safetensors").is_file() and not (whole / DELTA_FILE).exists()
    torch.testing.assert_close(_logits(load_model("whole", store_root=store.root)), _logits(tuned), rtol=0, atol=1e-5)


def test_a_base_others_are_stored_against_is_not_removed(store):
    base = load_model("base", store_root=store.root)
    state, low_rank, _ = _trained(base)
    store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    with pytest.raises(ModelLoadError, match=r"'base' is the base of 'tuned' \(stored as changes to it\); remove that first"):
        store.remove("base")
    assert store.has("base") and load_model("tuned", store_root=store.root) is not None
    freed = store.remove("tuned")
    assert freed > 0 and not store.has("tuned") and not store.path_of("tuned").exists()
    assert store.remove("base") > freed
    assert store.list_models() == [] and [p.name for p in store.root.iterdir()] == []
    with pytest.raises(ModelLoadError, match="'base' is not a model in the store"):
        store.remove("base")


def test_a_delta_whose_base_is_gone_is_a_one_line_error(store):
    base = load_model("base", store_root=store.root)
    state, low_rank, _ = _trained(base)
    store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    store.path_of("base").rename(store.root / "moved")
    with pytest.raises(ModelLoadError, match="its base model 'base' is missing from the store"):
        load_model("tuned", store_root=store.root)


def test_two_versions_loaded_together_hold_their_common_weights_once(store):
    base = load_model("base", store_root=store.root)
    state, low_rank, _ = _trained(base)
    store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    tuned = load_model("tuned", store_root=store.root)
    before = _logits(tuned)
    freed = share_unchanged_weights(tuned.model, base.model)
    changed = {"model.norm.weight", "model.layers.1.self_attn.q_proj.weight"}
    theirs = dict(base.model.named_parameters())
    for name, param in tuned.model.named_parameters():
        assert (param is theirs[name]) == (name not in changed), name
    assert freed == sum(p.numel() * 4 for n, p in tuned.model.named_parameters() if n not in changed)
    assert tuned.model.lm_head.weight is tuned.model.model.embed_tokens.weight  # still tied
    torch.testing.assert_close(_logits(tuned), before, rtol=0, atol=0)


def test_a_delta_version_exports_to_gguf_as_the_whole_model(store, tmp_path):
    from engine.export.gguf import export_gguf

    base = load_model("base", store_root=store.root)
    state, low_rank, merged = _trained(base)
    store.save_model(base, "tuned", state_dict=state, base="base", low_rank=low_rank)
    store.save_model(base, "whole", state_dict=merged)
    from_delta = export_gguf(store.path_of("tuned"), tmp_path / "delta.gguf", "f32")
    from_whole = export_gguf(store.path_of("whole"), tmp_path / "whole.gguf", "f32")
    torch.testing.assert_close(_logits(load_model(from_delta)), _logits(load_model(from_whole)), rtol=0, atol=1e-5)
