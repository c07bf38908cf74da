"""Tokenization identical to transformers' for a sentencepiece and a byte-level BPE tokenizer.

Both tokenizers are trained here; transformers reads the same files (LlamaTokenizer for
tokenizer.model, PreTrainedTokenizerFast for tokenizer.json) and is the reference.
"""

from __future__ import annotations

import pytest
import sentencepiece

from engine.loading.tokenizer_files import read_tokenizer
from engine.text import sentencepiece_proto as spp
from engine.text.tokenizer import Tokenizer
from loading_helpers import MIXED_TEXT, write_sentencepiece_dir
from tiny_models import write_bpe_dir

transformers = pytest.importorskip("transformers")

CHAT_TEXT = "<|im_start|>user\n" + MIXED_TEXT + "<|im_end|>\n<|im_start|>assistant\nSure:  ok<|im_end|>\n"
TEXTS = [
    MIXED_TEXT,
    CHAT_TEXT,
    "x <|im_end|> y",
    "Hello</s><s>[INST] again [/INST]",
    "  two leading spaces, then text",  # transformers puts no extra "▁" before a space
    "a",
    "",
]


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory, sp_model):
    return write_sentencepiece_dir(tmp_path_factory.mktemp("sp") / "tok", sp_model)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory, bpe):
    return write_bpe_dir(tmp_path_factory.mktemp("bpe") / "tok", bpe)


# Our tokenizer of each kind, and the transformers class that reads the same directory.
REFERENCES = {"sentencepiece": ("sp_dir", "LlamaTokenizer"), "tokenizers": ("bpe_dir", "PreTrainedTokenizerFast")}


@pytest.mark.parametrize("kind", REFERENCES)
@pytest.mark.parametrize("text", TEXTS)
def test_encoding_and_decoding_match_transformers(request, kind, text):
    fixture, reference_class = REFERENCES[kind]
    directory = request.getfixturevalue(fixture)
    reference = getattr(transformers, reference_class).from_pretrained(directory)
    ours, _ = read_tokenizer(directory)
    assert ours.kind == kind
    ids = ours.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False)
    assert ours.encode(text, add_special_tokens=True) == reference.encode(text, add_special_tokens=True)
    assert ours.decode(ids) == reference.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_mixed_text_round_trips_and_uses_byte_fallback(sp_dir, bpe_dir):
    for directory in (sp_dir, bpe_dir):
        tokenizer, _ = read_tokenizer(directory)
        assert tokenizer.decode(tokenizer.encode(MIXED_TEXT)) == MIXED_TEXT
    sp, _ = read_tokenizer(sp_dir)
    # the emoji is not in the tiny vocabulary: it must come out as <0xXX> byte pieces
    pieces = [sp.id_to_token(i) for i in sp.encode("👩‍💻")]
    assert all(p.startswith("<0x") for p in pieces if p != "\u2581")


def test_sentencepiece_special_tokens_and_ids(sp_dir):
    tokenizer, _ = read_tokenizer(sp_dir)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0 + 1, 2, 0)
    assert tokenizer.special_tokens == ["<unk>", "<s>", "</s>"]
    assert tokenizer.token_to_id("<|im_start|>") is not None
    assert tokenizer.token_to_id("definitely-not-a-piece") is None
    assert tokenizer.id_to_token(tokenizer.token_to_id("<|im_end|>")) == "<|im_end|>"
    assert tokenizer.vocab_size == 400
    assert tokenizer.pad_token_id is None


def test_byte_level_special_tokens_and_ids(bpe_dir):
    tokenizer, _ = read_tokenizer(bpe_dir)
    assert tokenizer.special_tokens == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.vocab_size == 400


@pytest.mark.parametrize("which", ["sp", "bpe"])
def test_save_and_read_back(tmp_path, sp_dir, bpe_dir, which):
    original, _ = read_tokenizer(sp_dir if which == "sp" else bpe_dir)
    original.save(tmp_path, extra_config={"chat_template": "{{ messages }}"})
    again, template = read_tokenizer(tmp_path)
    assert template == "{{ messages }}"
    assert again.kind == original.kind
    for text in TEXTS:
        assert again.encode(text) == original.encode(text)
        assert again.encode(text, add_special_tokens=True) == original.encode(text, add_special_tokens=True)
    assert again.special_tokens == original.special_tokens
    assert (again.bos_token, again.eos_token, again.pad_token) == (original.bos_token, original.eos_token, original.pad_token)
    # and transformers reads what we wrote the same way
    cls = transformers.LlamaTokenizer if which == "sp" else transformers.PreTrainedTokenizerFast
    reference = cls.from_pretrained(tmp_path)
    assert reference.encode(CHAT_TEXT, add_special_tokens=False) == again.encode(CHAT_TEXT)


def test_sentencepiece_proto_fields_read_by_protobuf(sp_model):
    """Our wire-format writer agrees with sentencepiece's own protobuf schema."""
    pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    model_file = sp_model
    original = model_file.read_bytes()
    pieces = spp.read_pieces(original)
    parsed = pb2.ModelProto()
    parsed.ParseFromString(original)
    assert [(p.piece, p.type) for p in parsed.pieces] == [(p.text, p.type) for p in pieces]
    assert spp.adds_dummy_prefix(original) is True

    flipped = pb2.ModelProto()
    flipped.ParseFromString(spp.with_dummy_prefix(original, False))
    assert flipped.normalizer_spec.add_dummy_prefix is False
    assert flipped.trainer_spec.vocab_size == parsed.trainer_spec.vocab_size

    built = spp.build_model(pieces, add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2)
    rebuilt = pb2.ModelProto()
    rebuilt.ParseFromString(built)
    assert rebuilt.trainer_spec.model_type == pb2.TrainerSpec.BPE
    assert rebuilt.trainer_spec.byte_fallback is True
    assert (rebuilt.trainer_spec.unk_id, rebuilt.trainer_spec.bos_id, rebuilt.trainer_spec.pad_id) == (0, 1, -1)
    assert [p.score for p in rebuilt.pieces] == [p.score for p in parsed.pieces]
    # a model rebuilt from (piece, score, type) tokenizes exactly like the trained one
    reference = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    ours = sentencepiece.SentencePieceProcessor(model_proto=built)
    assert ours.encode(MIXED_TEXT) == reference.encode(MIXED_TEXT)


def test_tokenizer_needs_exactly_one_backend():
    with pytest.raises(ValueError):
        Tokenizer()
