"""Rebuild a GGUF file's tokenizer from its `tokenizer.ggml.*` metadata.

Two vocabulary kinds are supported, as llama.cpp names them:

- "gpt2": byte-level BPE from tokens + merges. The pre-tokenizer (how text is split before
  merging) is chosen by `tokenizer.ggml.pre`; each supported name maps to the split rule
  llama.cpp applies for it. An unknown name is refused rather than guessed.
- "llama": sentencepiece-style, tokens + scores + token types with `<0xXX>` byte-fallback
  pieces. It becomes a real sentencepiece BPE model (merges by score, the way llama.cpp
  tokenizes such a vocabulary), written with engine.text.sentencepiece_proto.

Control tokens (token type 3) are special; user-defined ones (4) are matched whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from engine.errors import ModelLoadError
from engine.text import sentencepiece_proto as spp
from engine.text.tokenizer import Tokenizer

# Split rules (regexes) of the byte-level pre-tokenizers, written out from the rules each
# model family's tokenizer uses.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Mistral's tekken (Nemo, Small 3): cased words kept apart, single digits.
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o's rule (Phi-4-mini, Llama 4): tekken's words with contractions attached, digits in threes.
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # Each digit on its own, then the GPT-2 rule (SmolLM, StarCoder).
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


# tokenizer.ggml.pre -> (pre-tokenizer factory, BPE ignore_merges), as llama.cpp maps the
# names of the covered families' files. Llama 3 and tekken take a word that is itself a
# token whole, without merging ("ignore_merges").
PRE_TOKENIZERS: dict[str, tuple[Any, bool]] = {
    "default": (_gpt2, False),
    "gpt-2": (_gpt2, False),
    "gpt2": (_gpt2, False),
    "smollm": (_digits_then_gpt2, False),
    "starcoder": (_digits_then_gpt2, False),
    "refact": (_digits_then_gpt2, False),
    "llama-bpe": (lambda: _split(LLAMA3_SPLIT), True),
    "llama3": (lambda: _split(LLAMA3_SPLIT), True),
    "llama-v3": (lambda: _split(LLAMA3_SPLIT), True),
    "falcon3": (lambda: _split(LLAMA3_SPLIT), True),
    "pixtral": (lambda: _split(LLAMA3_SPLIT), True),
    "smaug-bpe": (lambda: _split(LLAMA3_SPLIT), False),
    "dbrx": (lambda: _split(LLAMA3_SPLIT), False),
    "qwen2": (lambda: _split(QWEN2_SPLIT), False),
    "deepseek-r1-qwen": (lambda: _split(QWEN2_SPLIT), False),
    "megrez": (lambda: _split(QWEN2_SPLIT), False),
    "tekken": (lambda: _split(TEKKEN_SPLIT), True),
    "gpt-4o": (lambda: _split(GPT4O_SPLIT), False),
}


def _field(fields: dict[str, Any], key: str, default: Any = None) -> Any:
    return fields.get(key, default)


def tokenizer_from_gguf(fields: dict[str, Any], source: Path) -> Tokenizer:
    """The tokenizer described by a GGUF file's metadata (`fields`: key -> plain value)."""
    kind = _field(fields, "tokenizer.ggml.model")
    tokens = _field(fields, "tokenizer.ggml.tokens")
    if kind is None or not tokens:
        raise ModelLoadError(f"{source}: tokenizer missing (no tokenizer.ggml.model / tokenizer.ggml.tokens metadata)")
    types = list(_field(fields, "tokenizer.ggml.token_type") or [spp.NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise ModelLoadError(f"{source}: {len(types)} token types for {len(tokens)} tokens")

    def token_at(key: str) -> str | None:
        index = _field(fields, f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    special = {
        "bos_token": token_at("bos"),
        "eos_token": token_at("eos"),
        "pad_token": token_at("padding"),
        "unk_token": token_at("unknown"),
    }
    if kind == "gpt2":
        return _byte_level_bpe(fields, tokens, types, special, source)
    if kind == "llama":
        return _sentencepiece(fields, tokens, types, special, source)
    raise ModelLoadError(f"{source}: unsupported tokenizer model {kind!r} (supported: 'gpt2', 'llama')")


def _byte_level_bpe(
    fields: dict[str, Any], tokens: list[str], types: list[int], special: dict[str, str | None], source: Path
) -> Tokenizer:
    merges = _field(fields, "tokenizer.ggml.merges")
    if not merges:
        raise ModelLoadError(f"{source}: tokenizer missing (byte-level BPE without tokenizer.ggml.merges)")
    pre = _field(fields, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ModelLoadError(
            f"{source}: unsupported tokenizer pre-tokenizer {pre!r} (supported: {', '.join(sorted(PRE_TOKENIZERS))})"
        )
    make_pre, ignore_merges = PRE_TOKENIZERS[pre]
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    try:
        backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges))
    except Exception as exc:  # the Rust library raises plain Exception for merges the tokens do not allow
        raise ModelLoadError(f"{source}: tokenizer.ggml.merges do not fit tokenizer.ggml.tokens ({exc})") from None
    backend.pre_tokenizer = make_pre()
    backend.decoder = decoders.ByteLevel()
    _add_whole_tokens(backend, tokens, types)
    bos = special["bos_token"]
    if _field(fields, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return Tokenizer.from_tokenizers(backend, **special)


def _add_whole_tokens(backend: tokenizers.Tokenizer, tokens: list[str], types: list[int]) -> None:
    """Register control tokens as special and user-defined ones as plain added tokens."""
    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == spp.CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == spp.USER_DEFINED]
    if control:
        backend.add_special_tokens(control)
    if user:
        backend.add_tokens(user)


def _sentencepiece(
    fields: dict[str, Any], tokens: list[str], types: list[int], special: dict[str, str | None], source: Path
) -> Tokenizer:
    scores = list(_field(fields, "tokenizer.ggml.scores") or [0.0] * len(tokens))
    if len(scores) != len(tokens):
        raise ModelLoadError(f"{source}: {len(scores)} token scores for {len(tokens)} tokens")
    pieces = [spp.Piece(t, float(s), k if k in range(1, 7) else spp.NORMAL) for t, s, k in zip(tokens, scores, types)]

    def index(key: str) -> int | None:
        value = _field(fields, f"tokenizer.ggml.{key}_token_id")
        return value if isinstance(value, int) and 0 <= value < len(tokens) else None

    unk = index("unknown")
    if unk is None:
        unk = next((i for i, p in enumerate(pieces) if p.type == spp.UNKNOWN), None)
    if unk is None:
        raise ModelLoadError(f"{source}: sentencepiece-style tokenizer without an unknown token")
    # sentencepiece wants exactly one UNKNOWN piece, the one its trainer spec names.
    pieces = [p if p.type != spp.UNKNOWN or i == unk else spp.Piece(p.text, p.score, spp.CONTROL)
              for i, p in enumerate(pieces)]
    pieces[unk] = spp.Piece(pieces[unk].text, pieces[unk].score, spp.UNKNOWN)
    model = spp.build_model(
        pieces,
        add_dummy_prefix=bool(_field(fields, "tokenizer.ggml.add_space_prefix", True)),
        byte_fallback=any(p.type == spp.BYTE for p in pieces),
        unk_id=unk,
        bos_id=index("bos"),
        eos_id=index("eos"),
        pad_id=index("padding"),
    )
    try:
        return Tokenizer.from_sentencepiece(
            model,
            add_bos_token=bool(_field(fields, "tokenizer.ggml.add_bos_token", True)),
            add_eos_token=bool(_field(fields, "tokenizer.ggml.add_eos_token", False)),
            **special,
        )
    except RuntimeError as exc:  # sentencepiece's own check of the vocabulary
        raise ModelLoadError(f"{source}: sentencepiece-style tokenizer is inconsistent ({exc})") from None
