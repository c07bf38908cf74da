"""Gemma 3 270M (the base model, gemma3 Q4_K_M GGUF, 253 MB) against transformers' own
GGUF reading of the same file.

Marked `gemma3_model`; skipped unless the assembled file is where `sh scripts/install.sh
--gemma3` puts it (chat_tui/model_downloads.py). The prompt is longer than the model's
512-token sliding window, so the local layers' window and rope base are exercised on real
weights.
"""

from __future__ import annotations

import pytest
import torch

from chat_tui.model_downloads import PACKAGED
from engine.engine import LLMEngine
from engine.loading import load_model
from engine.sampling import SamplingParams
from loading_helpers import MIXED_TEXT, transformers_gguf_reading

GGUF = PACKAGED["gemma3-270m"].path()

pytestmark = [
    pytest.mark.gemma3_model,
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} is absent: `sh scripts/install.sh --gemma3` fetches it"),
]


@pytest.fixture(scope="module")
def loaded():
    return load_model(GGUF)


@pytest.fixture(scope="module")
def reference():
    return transformers_gguf_reading(GGUF)


def test_config_facts(loaded):
    c = loaded.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.head_dim, c.vocab_size) == (
        "gemma3_text", 18, 640, 256, 262144)
    assert (c.num_attention_heads, c.num_key_value_heads, c.sliding_window) == (4, 1, 512)
    assert [i for i, kind in enumerate(c.layer_types) if kind == "full_attention"] == [5, 11, 17]
    assert (c.rope_theta, c.rope_local_base_freq, c.query_pre_attn_scalar) == (1e6, 10000.0, 256.0)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight


def test_tokenizer_matches_transformers_gguf_reader(loaded, reference):
    tokenizer, _ = reference
    turn = "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    for text in (MIXED_TEXT, turn, "a  b   c\n\n\nd"):
        assert loaded.tokenizer.encode(text, add_special_tokens=True) == tokenizer(text)["input_ids"]


def test_logits_past_the_sliding_window_match_transformers(loaded, reference):
    _, model = reference
    ids = loaded.tokenizer.encode(MIXED_TEXT * 8, add_special_tokens=True)
    assert len(ids) > 600  # past the 512-token window
    with torch.no_grad():
        ours, theirs = loaded.model(torch.tensor([ids]))[0], model(torch.tensor([ids])).logits[0]
    assert (ours - theirs).abs().max() < 1e-3 * theirs.std()
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.999


def test_greedy_continuation_matches_transformers(loaded, reference):
    _, model = reference
    prompt = loaded.tokenizer.encode("The capital of France is", add_special_tokens=True)
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    ours = LLMEngine(loaded, max_batch_size=1).generate([prompt], params)[0].completions[0].token_ids
    ids = torch.tensor([prompt])
    with torch.no_grad():
        theirs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    assert ours == theirs[0, len(prompt):].tolist()
