"""Tiny random models for fast tests, built with the real model and tokenizer classes.

- `tiny_llama(vocab_size, ...)`, `tiny_palm(vocab_size, ...)`: a model in memory, random
  weights from a seed, in eval mode.
- `train_bpe_tokenizer(...)`: a byte-level BPE trained here, ChatML special tokens first.
- `make_tiny_model_dir(path, ...)`: both written as an ordinary HF-layout directory
  (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML
  template) that `engine.loading.load_model` loads like any real model.
- `make_tiny_chat_model_dir(path)`: the app tests' chat model (see its docstring).

Nothing here is a stand-in for the code under test.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from engine.config import ModelConfig
from engine.loading.checkpoint import stored_tensors
from engine.models.gemma3 import GEMMA3_MODEL_TYPE
from engine.models.llama import LlamaForCausalLM
from engine.models.palm import PalmForCausalLM, palm_config
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

# ASCII only, every printable character among it: see make_tiny_chat_model_dir.
CHAT_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I sort a list in Python? Use sorted(items) or items.sort().",
    "Hello! I am a small assistant. Ask me anything about code, words or numbers.",
    "def add(a, b):\n    return a + b\n",
    "Rust, Go and Python are programming languages; tea and coffee are drinks.",
    string.printable,
] * 4


def tiny_llama(vocab_size: int, seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A random Llama: 2 layers, width 32 (MLP twice that), 4 heads over 2 KV heads;
    `config` overrides any ModelConfig field."""
    values: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    values.update(config)
    values.setdefault("intermediate_size", 2 * values["hidden_size"])
    torch.manual_seed(seed)
    return LlamaForCausalLM(ModelConfig(vocab_size=vocab_size, **values)).eval()


def tiny_palm(vocab_size: int, seed: int = 0, hidden_size: int = 32, num_hidden_layers: int = 2) -> PalmForCausalLM:
    """A random PaLM with 4 heads."""
    torch.manual_seed(seed)
    config = palm_config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                         num_attention_heads=4)
    return PalmForCausalLM(config).eval()


def train_bpe_tokenizer(
    texts: list[str] | None = None, vocab_size: int = 384, specials: list[str] | None = None,
    byte_alphabet: bool = True,
) -> HFTokenizer:
    """A byte-level BPE trained on `texts` (default TRAINING_TEXT), `specials` (default
    ChatML's) first. Without `byte_alphabet`, only characters seen in `texts` get a token."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS if specials is None else specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_alphabet else [],
        show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT] if texts is None else texts, trainer)
    return tok


def write_bpe_dir(directory: Path, tokenizer: HFTokenizer, chat_template: str | None = None) -> Path:
    """tokenizer.json and a tokenizer_config.json naming ChatML's special tokens, as
    transformers writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(s)): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                                            "normalized": False, "single_word": False}
            for s in SPECIAL_TOKENS if tokenizer.token_to_id(s) is not None
        },
    }
    if chat_template:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


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
    tokenizer: HFTokenizer | None = None,
    rms_norm_eps: float = 1e-6,
) -> Path:
    """Write a tiny random model directory at `path` (tokenizer: train_bpe_tokenizer()'s
    unless given) and return it; model_type "gemma3_text" makes a two-layer Gemma 3
    (TINY_GEMMA3, tied embeddings) whatever `num_layers` says."""
    tok = tokenizer or train_bpe_tokenizer()
    config = ModelConfig(
        model_type=model_type, vocab_size=tok.get_vocab_size(), hidden_size=hidden_size,
        intermediate_size=hidden_size * 2, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, rms_norm_eps=rms_norm_eps, max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings, qkv_bias=model_type == "qwen2",
        bos_token_id=tok.token_to_id("<|im_start|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    if model_type == GEMMA3_MODEL_TYPE:
        config.num_hidden_layers, config.tie_word_embeddings = 2, True
        for key, value in TINY_GEMMA3.items():
            setattr(config, key, value)
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        # Tied heads with N(0, 1) embeddings make every distribution one-hot; scale them down.
        if config.tie_word_embeddings:
            model.model.embed_tokens.weight.mul_(0.1)
    state = {k: v.contiguous() for k, v in stored_tensors(model.state_dict(), config).items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    write_bpe_dir(path, tok, CHATML_TEMPLATE)
    return path


def make_tiny_chat_model_dir(path: Path, seed: int = 0) -> Path:
    """The app tests' chat model: width 48, room for replies of 900 tokens, and tokens for
    ASCII characters only, so a random model's reply always decodes to visible text,
    never to a run of half characters, and any ASCII prompt encodes."""
    tokenizer = train_bpe_tokenizer(CHAT_TEXT, vocab_size=320, byte_alphabet=False)
    return make_tiny_model_dir(path, hidden_size=48, max_position_embeddings=1024, rms_norm_eps=1e-5, seed=seed,
                               tokenizer=tokenizer)
