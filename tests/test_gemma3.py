"""The Gemma 3 decoder against transformers' own Gemma3ForCausalLM on the same weights,
and through the engine (sliding windows in prefill and in the KV cache)."""

from __future__ import annotations

import json

import pytest
import torch

from engine.engine import LLMEngine
from engine.errors import ModelLoadError
from engine.loading import load_model
from engine.models.gemma3 import gemma3_config_from_dict, gemma3_config_to_dict
from engine.models.registry import build_model, config_from_dict
from engine.sampling import SamplingParams
from test_engine import DECODE_PATHS, naive_greedy, random_prompts
from tiny_models import TINY_GEMMA3, make_tiny_model_dir

transformers = pytest.importorskip("transformers")


def hf_gemma3(layer_types, sliding_window=6, query_pre_attn_scalar=24, local_base=500.0, seed=0):
    config = transformers.Gemma3TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=len(layer_types),
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=sliding_window,
        max_position_embeddings=256, query_pre_attn_scalar=query_pre_attn_scalar, layer_types=layer_types,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": local_base}},
    )
    torch.manual_seed(seed)
    model = transformers.Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # norms too: Gemma's are 1 + weight, zero by default
            param.normal_(0, 0.1 if param.dim() == 2 else 0.3)
    return model


def ours_from(hf_model):
    config = config_from_dict(hf_model.config.to_dict())
    model = build_model(config).eval()
    model.load_state_dict(hf_model.state_dict(), strict=False)  # the tied head is the embedding
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


LAYERS = ["sliding_attention", "full_attention", "sliding_attention"]


def test_logits_match_transformers_with_windows_padding_and_own_scale():
    hf = hf_gemma3(LAYERS)
    ours = ours_from(hf)
    ids = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(1))  # 5x the window
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :7] = 0  # left padding
    with torch.no_grad():
        want, got = hf(ids).logits, ours(ids)
        assert (want - got).abs().max() < 1e-4
        want, got = hf(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask)
        assert (want[0] - got[0]).abs().max() < 1e-4 and (want[1, 7:] - got[1, 7:]).abs().max() < 1e-4
        # The window matters here: with a window as long as the text the logits change.
        wide = ours_from(hf_gemma3(LAYERS, sliding_window=64))
        assert (wide(ids) - got).abs().max() > 1e-2


def test_config_round_trips_and_reads_transformers_5_and_4_forms():
    hf = hf_gemma3(LAYERS)
    raw = hf.config.to_dict()  # transformers 5: rope_parameters per layer kind
    config = gemma3_config_from_dict(raw)
    assert (config.rope_theta, config.rope_local_base_freq, config.query_pre_attn_scalar) == (100000.0, 500.0, 24.0)
    assert config.layer_types == LAYERS and config.sliding_window == 6 and config.tie_word_embeddings
    written = gemma3_config_to_dict(config)  # top-level keys, as transformers 4 wrote them
    assert "rope_parameters" not in written and written["rope_local_base_freq"] == 500.0
    assert gemma3_config_from_dict(written) == config
    reread = transformers.Gemma3TextConfig(**{k: v for k, v in written.items() if k != "model_type"})
    assert reread.rope_parameters["sliding_attention"]["rope_theta"] == 500.0
    assert reread.layer_types == LAYERS and reread.query_pre_attn_scalar == 24.0


@pytest.mark.parametrize("change, message", [
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0 is not supported"),
    ({"hidden_activation": "relu"}, "unsupported hidden_activation='relu'"),
    ({"layer_types": ["sliding_attention"]}, "layer_types must name 3 layers"),
    ({"tie_word_embeddings": False}, "ties its LM head"),
])
def test_configs_it_cannot_run_are_refused(change, message):
    raw = {**hf_gemma3(LAYERS).config.to_dict(), **change}
    with pytest.raises(ModelLoadError, match=message):
        gemma3_config_from_dict(raw, "gemma/config.json")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    return load_model(make_tiny_model_dir(tmp_path_factory.mktemp("gemma") / "model", model_type="gemma3_text"))


@pytest.mark.parametrize("path", list(DECODE_PATHS))
def test_engine_greedy_equals_naive_greedy_past_the_window(tiny_gemma, path):
    assert tiny_gemma.config.sliding_window == TINY_GEMMA3["sliding_window"] == 4
    engine = LLMEngine(tiny_gemma, max_batch_size=8, block_size=4, **DECODE_PATHS[path])
    prompts = random_prompts(5, tiny_gemma.config.vocab_size, seed=3, lengths=(1, 12))
    params = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True)
    for prompt, out in zip(prompts, engine.generate(prompts, params)):
        assert out.completions[0].token_ids == naive_greedy(tiny_gemma, prompt, 10)


def test_store_directory_loads_in_transformers(tmp_path):
    directory = make_tiny_model_dir(tmp_path / "gemma", model_type="gemma3_text")
    assert json.loads((directory / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]
    ours = load_model(directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([ours.tokenizer.encode("Paris is the capital of France. Hello world!")])
    with torch.no_grad():
        assert (hf(ids).logits - ours.model(ids)).abs().max() < 1e-4


def test_the_cpp_decode_step_leaves_gemma3_to_its_own_forward(tiny_gemma):
    """The C++ step computes the Llama block; a Gemma 3 must never be handed to it."""
    from engine.kernels import llama_decode

    assert llama_decode.weight_table(tiny_gemma.model) is None
