"""The chat decodes from quantized weights on the CPU by default, as asked otherwise."""

from __future__ import annotations

import pytest

import engine.kernels.llama_decode as llama_decode
from chat_tui.errors import UserError
from chat_tui.quant_choice import CHAT_QUANT, chat_quant
from chat_tui.services.model_service import ModelService, load_serving_model
from engine.kernels.quant_types import KINDS
from engine.sampling import SamplingParams
from tiny_models import make_tiny_model_dir


def test_the_chat_decodes_from_its_default_type_on_the_cpu_only():
    assert CHAT_QUANT in ("q8_0", "q4_0")
    assert chat_quant(None, "cpu") == CHAT_QUANT
    assert chat_quant(None, "cuda:0") == "none"
    assert chat_quant("none", "cpu") == "none" and chat_quant("q4_0", "cpu") == "q4_0"
    with pytest.raises(UserError, match="q8_0.*CPU only"):
        chat_quant("q8_0", "cuda:0")


def test_the_served_model_decodes_from_the_type_asked_for(tmp_path, monkeypatch):
    directory = make_tiny_model_dir(tmp_path / "tiny")
    kinds = set()
    original = llama_decode.decode_logits
    monkeypatch.setattr(llama_decode, "decode_logits",
                        lambda model, table, *a: kinds.update(table[:, 2].tolist()) or original(model, table, *a))
    service = ModelService()
    service.install(load_serving_model(directory, None, "tiny", quant="q4_0"))
    try:
        stream = service.submit([5, 6, 7], SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True))
        assert len(stream.result(timeout=120).completions[0].token_ids) == 6
    finally:
        service.close()
    assert kinds == {KINDS["none"], KINDS["q4_0"], KINDS["q8_0"]}
