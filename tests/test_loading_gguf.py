"""GGUF loading: tiny models written with gguf's writer load back to the source's logits.

The source is a random transformers Llama; the GGUF is laid out as llama.cpp's converter
does (Q/K rows permuted, llama.cpp tensor names, F32 norms), with a byte-level BPE or a
sentencepiece-style tokenizer in the metadata.
"""

from __future__ import annotations

import copy

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import quants as gguf_quants

from engine.loading import load_model
from engine.loading.gguf_file import SUPPORTED_TYPES, dequantize, open_gguf, read_gguf
from engine.loading.gguf_names import permute_qk, unpermute_qk
from loading_helpers import (
    MIXED_TEXT,
    gpt2_tokenizer_fields,
    llama_tokenizer_fields,
    tiny_hf_config,
    tiny_hf_model,
    write_gguf,
)
from tiny_models import CHATML_TEMPLATE


def _logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out)[0]


@pytest.mark.parametrize("num_heads", [1, 2, 4, 9])
def test_unpermute_inverts_llama_cpp_permutation(num_heads):
    rng = np.random.default_rng(num_heads)
    head_dim = 8
    weight = rng.standard_normal((num_heads * head_dim, 24)).astype(np.float32)
    assert np.array_equal(unpermute_qk(permute_qk(weight, num_heads), num_heads), weight)
    assert np.array_equal(permute_qk(unpermute_qk(weight, num_heads), num_heads), weight)
    assert not np.array_equal(permute_qk(weight, num_heads), weight)  # it really reorders rows
    bias = rng.standard_normal(num_heads * head_dim).astype(np.float32)
    assert np.array_equal(unpermute_qk(permute_qk(bias, num_heads), num_heads), bias)


def _quantization_round_trip(model, qtype):
    """The source model with every matrix quantized and dequantized by gguf itself."""
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        for param in copy_.parameters():
            if param.dim() == 2:
                values = param.numpy()
                if qtype == Q.F32:
                    continue
                if qtype == Q.F16:
                    values = values.astype(np.float16).astype(np.float32)
                else:
                    values = gguf_quants.dequantize(gguf_quants.quantize(values, qtype), qtype)
                param.copy_(torch.from_numpy(values))
    return copy_


# (quantization, tied embeddings, allowed max |logit difference| from the unquantized
# source, as a fraction of the logits' standard deviation)
CASES = [
    (Q.F32, True, 1e-4),
    (Q.F32, False, 1e-4),
    (Q.F16, False, 0.02),
    (Q.Q8_0, True, 0.15),
    (Q.Q8_0, False, 0.15),
    (Q.Q4_0, False, 2.0),
    (Q.Q4_1, False, 2.0),
    (Q.Q5_0, False, 1.0),
]


@pytest.mark.parametrize("qtype,tied,tolerance", CASES, ids=[f"{c[0].name}-{'tied' if c[1] else 'untied'}" for c in CASES])
def test_gguf_model_matches_source_logits(tmp_path, bpe, qtype, tied, tolerance):
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=tied), seed=1)
    path = write_gguf(tmp_path / "tiny.gguf", source, qtype, gpt2_tokenizer_fields(bpe), CHATML_TEMPLATE)
    loaded = load_model(path)
    assert loaded.config.tie_word_embeddings is tied
    assert (loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight) is tied
    ids = loaded.tokenizer.encode("Hello world! def add(a, b): return a + b 你好 😀")
    expected, actual = _logits(source, ids), _logits(loaded.model, ids)
    # Exactly the quantized source: permutation, names and dequantization are all right.
    exact = _logits(_quantization_round_trip(source, qtype), ids)
    assert (exact - actual).abs().max().item() < 1e-4
    # And within quantization error of the original weights.
    diff = (expected - actual).abs().max().item()
    assert diff < tolerance * expected.std().item(), f"{qtype.name}: max abs logit difference {diff}"
    if qtype in (Q.F32, Q.F16):
        assert torch.equal(expected.argmax(-1), actual.argmax(-1))


def test_gguf_config_and_metadata(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=True))
    path = write_gguf(tmp_path / "tiny.gguf", source, Q.Q8_0, gpt2_tokenizer_fields(bpe), CHATML_TEMPLATE)
    checkpoint = read_gguf(path)
    c = checkpoint.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (2, 64, 4, 2)
    assert (c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (128, bpe.get_vocab_size(), 256)
    assert c.rope_theta == source.config.rope_parameters["rope_theta"]
    assert abs(c.rms_norm_eps - 1e-5) < 1e-9
    assert checkpoint.chat_template == CHATML_TEMPLATE
    assert c.eos_token_id == bpe.token_to_id("<|im_end|>")
    assert "lm_head.weight" not in checkpoint.tensors


def test_gguf_byte_level_tokenizer_matches_the_source_tokenizer(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=True))
    path = write_gguf(tmp_path / "tiny.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), CHATML_TEMPLATE)
    tokenizer = read_gguf(path).tokenizer
    chat = "<|im_start|>user\n" + MIXED_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    for text in (MIXED_TEXT, chat):
        assert tokenizer.encode(text) == bpe.encode(text).ids
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.special_tokens == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def test_gguf_sentencepiece_tokenizer_matches_sentencepiece(tmp_path, sp_model):
    import sentencepiece

    model_file = sp_model
    reference = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    source = tiny_hf_model(tiny_hf_config(vocab_size=reference.get_piece_size(), tie=False), seed=3)
    path = write_gguf(tmp_path / "sp.gguf", source, Q.F32, llama_tokenizer_fields(model_file))
    loaded = load_model(path)
    tokenizer = loaded.tokenizer
    assert tokenizer.kind == "sentencepiece"
    assert tokenizer.encode(MIXED_TEXT) == reference.encode(MIXED_TEXT)
    assert tokenizer.encode(MIXED_TEXT, add_special_tokens=True) == [1] + reference.encode(MIXED_TEXT)
    assert tokenizer.decode(tokenizer.encode(MIXED_TEXT)) == MIXED_TEXT
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    # no template in the file: ChatML fallback
    assert loaded.chat_template.is_fallback
    ids = tokenizer.encode("hello world 你好")
    assert (_logits(source, ids) - _logits(loaded.model, ids)).abs().max().item() < 1e-4


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_every_quantized_type_dequantizes_like_gguf(tmp_path, bpe):
    """Most k- and i-quants cannot be written by gguf-py; random raw blocks of every type
    we accept, read through our parser, must give what gguf's own reader and
    dequantizer give for the same bytes (NaN where a random scale is one)."""
    rng = np.random.default_rng(0)
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=True))
    extra = {}
    quantized = sorted(SUPPORTED_TYPES - {Q.F32, Q.F16, Q.BF16}, key=lambda t: t.name)
    for qtype in quantized:
        block_elems, block_bytes = gguf_quants.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(3, 512 // block_elems * block_bytes), dtype=np.uint8)
        extra[f"extra_{qtype.name}.weight"] = (raw, qtype)
    path = write_gguf(tmp_path / "k.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), extra_tensors=extra)
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}
    file = open_gguf(path)
    checked = []
    for tensor in file.tensors:
        if tensor.name.startswith("extra_"):
            ours = dequantize(file, tensor)
            want = reference[tensor.name]
            assert ours.shape == (3, 512)
            np.testing.assert_array_equal(ours, gguf_quants.dequantize(np.array(want.data), want.tensor_type))
            checked.append(tensor.name)
    assert len(checked) == len(quantized) >= 18


def test_q2_k_and_q3_k_blocks_by_hand(tmp_path, bpe):
    """Blocks built by hand from ggml's layout, values known: each 16-value group of a
    256-value block has its own scale, in order."""
    q2 = np.zeros(84, dtype=np.uint8)  # scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
    scales = np.arange(16) % 15 + 1  # 4-bit scales 1..15, then 1 again; mins 0
    q2[:16] = scales
    q2[16:80] = 0b10101010  # every 2-bit quant is 2
    q2[80:84] = np.frombuffer(np.array([0.5, 0.0], dtype=np.float16).tobytes(), dtype=np.uint8)
    q3 = np.zeros(110, dtype=np.uint8)  # hmask[32], qs[64], scales[12] (6-bit, offset 32), d
    q3[:32] = 0xFF  # high bit set: no -4
    q3[32:96] = 0b01010101  # every 2-bit quant is 1
    q3[96:104] = 0x11  # low 4 bits of every scale: 1 ...
    q3[104:108] = 0xAA  # ... high 2 bits: 2, so 33 - 32 = 1
    q3[108:110] = np.frombuffer(np.array([0.25], dtype=np.float16).tobytes(), dtype=np.uint8)
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=True))
    extra = {"q2.weight": (q2[None], Q.Q2_K), "q3.weight": (q3[None], Q.Q3_K)}
    path = write_gguf(tmp_path / "hand.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), extra_tensors=extra)
    file = open_gguf(path)
    by_name = {t.name: t for t in file.tensors}
    np.testing.assert_array_equal(dequantize(file, by_name["q2.weight"])[0], np.repeat(scales * 0.5 * 2, 16))
    np.testing.assert_array_equal(dequantize(file, by_name["q3.weight"])[0], np.full(256, 0.25))


def test_gguf_import_into_store_loads_the_same(tmp_path, bpe):
    from engine.loading import import_model

    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), tie=True), seed=5)
    path = write_gguf(tmp_path / "tiny.gguf", source, Q.Q8_0, gpt2_tokenizer_fields(bpe), CHATML_TEMPLATE)
    root = tmp_path / "store"
    stored = import_model(path, name="tiny", store_root=root)
    assert sorted(p.name for p in stored.iterdir()) == [
        "chat_template.jinja", "chat_tui_model.json", "config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]
    direct = load_model(path)
    from_store = load_model("tiny", store_root=root)
    ids = direct.tokenizer.encode(MIXED_TEXT)
    assert from_store.tokenizer.encode(MIXED_TEXT) == ids
    assert torch.equal(_logits(direct.model, ids), _logits(from_store.model, ids))
    assert from_store.chat_template.source == CHATML_TEMPLATE


def test_llama3_rope_scaling_from_rope_freqs(tmp_path, bpe):
    """llama.cpp stores Llama 3.1 rope scaling as per-frequency divisors (rope_freqs)."""
    import math

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    source = tiny_hf_model(tiny_hf_config(vocab_size=bpe.get_vocab_size(), rope_parameters=rope), seed=9)
    head_dim = 16
    divisors = []
    for i in range(head_dim // 2):  # as llama.cpp's converter computes them
        freq = 1.0 / rope["rope_theta"] ** (2 * i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < 8192 / 4.0:
            divisors.append(1.0)
        elif wavelen > 8192 / 1.0:
            divisors.append(8.0)
        else:
            smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            divisors.append(1 / ((1 - smooth) / 8.0 + smooth))
    assert len(set(divisors)) > 2  # all three regimes present
    extra = {"rope_freqs.weight": (np.array(divisors, dtype=np.float32), None)}
    path = write_gguf(tmp_path / "l3.gguf", source, Q.F32, gpt2_tokenizer_fields(bpe), extra_tensors=extra)
    loaded = load_model(path)
    assert loaded.config.rope_scaling["rope_type"] == "llama3"
    ids = [(7 * i) % 390 + 3 for i in range(250)]  # long enough for the positions to matter
    assert (_logits(source, ids) - _logits(loaded.model, ids)).abs().max().item() < 1e-4
    # the scaling matters at these positions: without it the logits differ clearly
    unscaled = load_model(path)
    unscaled.model.model.rotary.inv_freq.mul_(torch.tensor(divisors))
    assert (_logits(source, ids) - _logits(unscaled.model, ids)).abs().max().item() > 1e-3


def test_pre_tokenizers_split_text_as_transformers_gguf_reader_does():
    """Every `tokenizer.ggml.pre` name both know cuts text into the same pieces."""
    from tokenizers import Regex, pre_tokenizers

    from engine.loading.gguf_tokenizer import PRE_TOKENIZERS

    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    text = MIXED_TEXT + " it's DON'T CamelCase über-Straße 1234567 x/y\r\n\tend  "
    shared = sorted(set(PRE_TOKENIZERS) & set(mapping.GGUF_PRE_TOKENIZER_SPLITS))
    assert {"qwen2", "llama-bpe", "tekken", "deepseek-r1-qwen"} <= set(shared)
    for name in shared:
        theirs = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(mapping.GGUF_PRE_TOKENIZER_SPLITS[name]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        make, _ = PRE_TOKENIZERS[name]
        assert make().pre_tokenize_str(text) == theirs.pre_tokenize_str(text), name
