"""Tiny random models in ordinary HF-layout directories, for fast tests.

`make_tiny_model_dir(path)` writes config.json, model.safetensors (random weights from a
seed), a byte-level BPE tokenizer.json trained on a built-in text with ChatML special
tokens, and tokenizer_config.json with a ChatML template. The directory loads through
`engine.loading.load_model` like any real model. Nothing here is a stand-in for the
code under test: the model and tokenizer classes are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from engine.config import ModelConfig
from engine.loading.checkpoint import stored_tensors
from engine.models.gemma3 import GEMMA3_MODEL_TYPE
from engine.models.registry import build_model, config_to_dict

# A Gemma 3 small enough for fast tests that still exercises what sets it apart: one
# local layer with a 4-token window and its own rope base, one global layer, and a score
# scale that is not 1/sqrt(head_dim).
TINY_GEMMA3 = {
    "layer_types": ["sliding_attention", "full_attention"],
    "sliding_window": 4,
    "rope_local_base_freq": 100.0,
    "query_pre_attn_scalar": 24.0,
}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
    "def add(a, b):\n    return a + b\n"
    "Hello! How are you today? I am fine, thank you. What is the weather like? "
    "Emoji 😀🎉 and 中文 汉字 text, numbers 12345 and    spaces.\n"
) * 20


def train_bpe_tokenizer(vocab_size: int = 384) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT], trainer)
    return tok


def make_tiny_model_dir(
    path: Path,
    model_type: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random model directory at `path` and return it; model_type "gemma3_text"
    makes a two-layer Gemma 3 (TINY_GEMMA3, tied embeddings) whatever `num_layers` says."""
    path.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer()
    eos_id = tok.token_to_id("<|im_end|>")
    config = ModelConfig(
        model_type=model_type,
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        qkv_bias=model_type == "qwen2",
        bos_token_id=tok.token_to_id("<|im_start|>"),
        eos_token_id=eos_id,
    )
    if model_type == GEMMA3_MODEL_TYPE:
        config.num_hidden_layers, config.tie_word_embeddings = 2, True
        for key, value in TINY_GEMMA3.items():
            setattr(config, key, value)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        # Tied heads with N(0, 1) embeddings make every distribution one-hot; scale them down.
        if config.tie_word_embeddings:
            model.model.embed_tokens.weight.mul_(0.1)
    state = {k: v.contiguous() for k, v in stored_tensors(model.state_dict(), config).items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    tok.save(str(path / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {
            str(tok.token_to_id(s)): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                                      "normalized": False, "single_word": False}
            for s in SPECIAL_TOKENS
        },
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return path
