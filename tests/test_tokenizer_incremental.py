"""Streaming detokenization: pieces join to the full decode and never hold half a character."""

from __future__ import annotations

import pytest

from engine.loading.tokenizer_files import read_tokenizer
from engine.text.detokenizer import IncrementalDecoder
from engine.text.tokenizer import REPLACEMENT_CHAR
from loading_helpers import MIXED_TEXT, write_sentencepiece_dir
from tiny_models import write_bpe_dir

STREAM_TEXT = MIXED_TEXT + " 🎉🎉 深度学习 👩‍💻 end"


@pytest.fixture(scope="module", params=["sentencepiece", "byte-level-bpe"])
def tokenizer(request, tmp_path_factory, sp_model, bpe):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "sentencepiece":
        directory = write_sentencepiece_dir(root / "tok", sp_model)
    else:
        directory = write_bpe_dir(root / "tok", bpe)
    return read_tokenizer(directory)[0]


def _stream(decoder, ids):
    pieces = [decoder.push(i) for i in ids]
    tail = decoder.flush()
    return pieces, tail


def test_pieces_join_to_full_decode(tokenizer):
    ids = tokenizer.encode(STREAM_TEXT)
    pieces, tail = _stream(IncrementalDecoder(tokenizer), ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids) == STREAM_TEXT
    assert tail == ""
    assert not any(REPLACEMENT_CHAR in p for p in pieces)
    # multi-token characters were really held back at least once (emoji split into bytes)
    assert pieces.count("") > 0


def test_pieces_after_a_prompt_keep_their_leading_space(tokenizer):
    prompt = tokenizer.encode("<|im_start|>assistant\nThe answer is")
    reply = tokenizer.encode(" Paris, 巴黎 🗼, of course.")
    pieces, tail = _stream(IncrementalDecoder(tokenizer, prompt_ids=prompt), reply)
    full = tokenizer.decode(prompt + reply)
    assert "".join(pieces) + tail == full[len(tokenizer.decode(prompt)) :]
    assert "".join(pieces).startswith(" Paris")
    assert not any(REPLACEMENT_CHAR in p for p in pieces)


def test_special_tokens_are_skipped_unless_asked(tokenizer):
    ids = tokenizer.encode("Hi<|im_end|>")
    skipped, _ = _stream(IncrementalDecoder(tokenizer), ids)
    kept, _ = _stream(IncrementalDecoder(tokenizer, skip_special_tokens=False), ids)
    assert "".join(skipped) == tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(kept) == tokenizer.decode(ids)
    if tokenizer.kind == "tokenizers":  # <|im_end|> is special there; a plain added token in the sp model
        assert "<|im_end|>" not in "".join(skipped)


def test_incomplete_character_is_held_until_flush(tokenizer):
    ids = tokenizer.encode("a🦊")  # not in the training text: several byte tokens
    assert len(ids) > 2
    # cut the emoji's bytes short: the decoder must not print a replacement character
    decoder = IncrementalDecoder(tokenizer)
    partial = ids[:-1]
    pieces = [decoder.push(i) for i in partial]
    assert not any(REPLACEMENT_CHAR in p for p in pieces)
    assert "".join(pieces) == "a"
    assert decoder.flush().startswith(REPLACEMENT_CHAR)
