"""The second real model: Qwen2.5-Coder-0.5B-Instruct (qwen2, Q4_K_M GGUF, 491 MB).

Marked `qwen_model`; skipped unless the assembled file is where `sh scripts/install.sh
--qwen` puts it (chat_tui/model_downloads.py: $CHAT_TUI_MODEL_CACHE, else
~/.cache/chat-tui/models). The file is imported once per module the way a user imports it,
into this module's own data directory, and used through the engine, `chat-tui ask` and
the chat in a real terminal. Transformers' own GGUF reader of the same file is the
reference for the tokenizer, the logits and greedy decoding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from chat_tui.model_downloads import PACKAGED
from engine.engine import LLMEngine
from engine.kernels import llama_decode
from engine.loading import load_model
from engine.loading.model_store import ModelStore
from engine.sampling import SamplingParams
from loading_helpers import MIXED_TEXT, transformers_gguf_reading

GGUF = PACKAGED["qwen2.5-coder-0.5b"].path()
NAME = "qwen2.5-coder-0.5b"
QUESTION = "What is the capital of France?"

pytestmark = [
    pytest.mark.qwen_model,
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} is absent: `sh scripts/install.sh --qwen` fetches it"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A data directory holding the imported model, for this module's CLI runs."""
    home = tmp_path_factory.mktemp("qwen-home")
    started = time.perf_counter()
    ModelStore(home / "models").import_model(GGUF, name=NAME)
    print(f"\nimport of {GGUF.name}: {time.perf_counter() - started:.1f}s")
    return home


@pytest.fixture(scope="module")
def loaded(home):
    return load_model(NAME, store_root=home / "models")


@pytest.fixture(scope="module")
def reference():
    return transformers_gguf_reading(GGUF)


def chat_ids(loaded) -> list[int]:
    return loaded.encode_chat([{"role": "user", "content": QUESTION}])


def run_chat_tui(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHAT_TUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "chat_tui", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_config_facts(loaded):
    c = loaded.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.intermediate_size) == ("qwen2", 24, 896, 4864)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size, c.rope_theta) == (14, 2, 151936, 1e6)
    assert c.qkv_bias and not c.o_bias and not c.tie_word_embeddings  # the file carries its own output matrix
    assert loaded.tokenizer.eos_token == "<|im_end|>" and c.eos_token_ids == [151645]
    assert loaded.chat_template.source.startswith("{%- if tools %}")


def test_tokenizer_matches_transformers_gguf_reader(loaded, reference):
    tokenizer, _ = reference
    chat = "<|im_start|>user\n" + MIXED_TEXT + "<|im_end|>\n<|im_start|>assistant\n"
    for text in (MIXED_TEXT, chat, "  leading spaces, 12345 digits\r\n\ttabs"):
        assert loaded.tokenizer.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chat_ids(loaded) == tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True, return_dict=False
    )


def test_logits_match_transformers_gguf_reader(loaded, reference):
    _, model = reference
    ids = torch.tensor([chat_ids(loaded)])
    with torch.no_grad():
        ours, theirs = loaded.model(ids)[0], model(ids).logits[0]
    # Both dequantize the same Q4_K/Q5_0/Q6_K/Q8_0 blocks to fp32; what remains is fp32
    # summation order (measured 1.4e-5 against logits of std 3.1).
    assert (ours - theirs).abs().max() < 1e-3 * theirs.std()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_greedy_ask_matches_transformers_for_32_tokens(home, loaded, reference):
    _, model = reference
    result = run_chat_tui(home, "ask", "--model", NAME, "--temperature", "0", "--repetition-penalty", "1",
                          "--max-tokens", "32", "--json", QUESTION)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)["token_ids"]
    prompt = torch.tensor([chat_ids(loaded)])
    with torch.no_grad():
        theirs = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False)
    theirs = theirs[0, prompt.shape[1]:].tolist()
    assert ours == theirs[: len(ours)]  # the same tokens, up to where <|im_end|> stops `ask`
    assert len(ours) == 32 or ours[-1] in loaded.stop_token_ids


def test_batched_engine_decodes_each_row_as_alone(loaded):
    """Qwen2's q/k/v biases through the engine's C++ decode step: greedy replies to
    several questions at once equal each one decoded alone."""
    if llama_decode.available():
        assert llama_decode.weight_table(loaded.model) is not None  # the step covers this model
    questions = [QUESTION, "Write a Python function that adds two numbers.", "Name three colours."]
    prompts = [loaded.encode_chat([{"role": "user", "content": q}]) for q in questions]
    params = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    together = [o.completions[0].token_ids for o in LLMEngine(loaded, max_batch_size=8).generate(prompts, params)]
    alone = [LLMEngine(loaded, max_batch_size=1).generate([p], params)[0].completions[0].token_ids for p in prompts]
    assert together == alone


def test_ask_answers_paris(home):
    result = run_chat_tui(home, "ask", "--model", NAME, "--seed", "0", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_chat_opens_on_it_and_streams_in_tmux(home):
    from test_app_tmux import Tmux

    env = {"CHAT_TUI_HOME": str(home), "TERM": "xterm-256color", "PATH": os.environ["PATH"],
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    tmux = Tmux(f"{sys.executable} -m chat_tui --model {NAME}", env)
    try:
        tmux.wait_for(lambda s: f"● {NAME}" in s, 300, "the model loaded")
        tmux.keys(QUESTION, literal=True)
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "writing… (Esc stops)" in s, 120, "the reply to start streaming")
        done = tmux.wait_for(lambda s: "tok/s" in s and "writing…" not in s, 300, "the reply to finish")
        assert f"Assistant · {NAME}" in done and "Paris" in done
    finally:
        tmux.close()
