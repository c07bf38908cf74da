"""Bad values on the command line: one line on stderr, a non-zero exit, nothing written.

Each case runs `chat-tui` as a subprocess under a 3 GB address-space limit
(tests/cli_contract.py) and checks the data directory is as it was. Values that are
checked before a model loads need no model; the rest use a tiny one.
"""

from __future__ import annotations

import errno
import json

import pytest

from chat_tui.errors import describe_os_error, one_line
from cli_contract import assert_one_line_error, listing, run_cli
from engine.errors import InvalidRequestError
from engine.sampling import MAX_BATCH_SIZE, SamplingParams
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny")


def tiny_with_template(tmp_path, tiny, template: str):
    import shutil

    directory = tmp_path / "templated"
    shutil.copytree(tiny, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


BEFORE_LOAD = [
    (["ask", "--temperature", "nan", "hi"], ["temperature", "nan"]),
    (["ask", "--repetition-penalty", "nan", "hi"], ["repetition_penalty", "nan"]),
    (["ask", "--temperature", "inf", "hi"], ["temperature", "inf"]),
    (["ask", "--temperature", "-inf", "hi"], ["temperature", "-inf"]),
    (["ask", "--top-p", "nan", "hi"], ["top_p", "nan"]),
    (["ask", "--min-p", "nan", "hi"], ["min_p", "nan"]),
    (["ask", "--temperature", "1e-300", "hi"], ["temperature", "1e-300"]),
    (["ask", "--repetition-penalty", "1e-300", "hi"], ["repetition_penalty", "1e-300"]),
    (["ask", "--repetition-penalty", "0", "hi"], ["repetition_penalty", "0"]),
    (["ask", "--n", "1000000000", "hi"], ["n must be from 1 to", "1000000000"]),
    (["ask", "--n", "0", "hi"], ["n must be from 1"]),
    (["ask", "--top-k", "99999999999999999999999", "hi"], ["top_k", "99999999999999999999999"]),
    (["ask", "--max-tokens", "-5", "hi"], ["max_new_tokens", "-5"]),
    (["ask", "--temperature", "abc", "hi"], ["--temperature", "'abc'"]),
    (["ask", "--no-such-option", "hi"], ["--no-such-option"]),
    (["ask"], ["give a PROMPT"]),
    (["bench", "--concurrency", "1000000000"], ["--concurrency", "1000000000"]),
    (["bench", "--concurrency", "1,x"], ["--concurrency", "1,x"]),
    (["bench", "--max-tokens", "0"], ["--max-tokens", "0"]),
    (["no-such-command"], ["no-such-command"]),
]


@pytest.mark.parametrize("args,expected", BEFORE_LOAD, ids=[" ".join(a) for a, _ in BEFORE_LOAD])
def test_bad_values_are_refused_before_any_model_loads(args, expected, tmp_path):
    home = tmp_path / "home"
    result = run_cli(*args, home=home, timeout=120)
    assert_one_line_error(result, *expected)
    assert listing(home) == []  # nothing imported, no database made


def test_binary_bytes_on_stdin_are_refused(tmp_path):
    home = tmp_path / "home"
    result = run_cli("ask", "-", home=home, stdin=bytes(range(256)) * 4, timeout=120)
    assert_one_line_error(result, "standard input is not UTF-8", "0x80")
    assert listing(home) == []


def test_oversized_stdin_is_refused_without_reading_it_all(tmp_path):
    from chat_tui.commands.ask import MAX_PROMPT_BYTES

    result = run_cli("ask", "-", home=tmp_path / "home", stdin=b"a" * (MAX_PROMPT_BYTES + 10), timeout=120)
    assert_one_line_error(result, "standard input is longer than")


def test_undecodable_argument_bytes_are_refused(tmp_path):
    result = run_cli("ask", b"caf\xe9 \xff", home=tmp_path / "home", timeout=120)
    assert_one_line_error(result, "the prompt is not UTF-8 text", "0xe9")


TEMPLATES = [
    ("{{ 1/0 }}", ["chat template failed", "division by zero"]),
    ("{{ raise_exception('no system role') }}", ["chat template refused", "no system role"]),
    ("{{ 'a' * 4000000000 }}", ["chat template failed", "4,000,000,000"]),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     ["chat template failed", "'~' made a value"]),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     ["chat template failed", "longer than"]),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", ["chat template failed", "recursed too deeply"]),
    ("{{ 'x'|center(4000000000) }}", ["chat template failed", "center", "4000000000"]),
    ("{% for m in messages %}{{ m.content", ["chat template does not compile"]),
]


@pytest.mark.parametrize("template,expected", TEMPLATES, ids=[t for t, _ in TEMPLATES])
def test_a_failing_or_runaway_chat_template_is_one_line(template, expected, tmp_path, tiny):
    directory = tiny_with_template(tmp_path, tiny, template)
    home = tmp_path / "home"
    result = run_cli("ask", "--model", str(directory), "--max-tokens", "4", "hi", home=home, timeout=180)
    assert_one_line_error(result, *expected)
    assert listing(home) == []


def test_bench_max_tokens_past_the_context_is_refused_before_sizing(tmp_path, tiny):
    result = run_cli("bench", "--model", str(tiny), "--no-hf", "--concurrency", "2", "--max-tokens", "1000000000",
                     home=tmp_path / "home", timeout=180)
    assert_one_line_error(result, "--max-tokens 1000000000", "context of 512")


def test_sampling_params_refuse_non_finite_values():
    for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
        for value in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(InvalidRequestError, match=name):
                SamplingParams(**{name: value}).validate()
    with pytest.raises(InvalidRequestError, match="n must be"):
        SamplingParams(n=MAX_BATCH_SIZE + 1).validate()
    SamplingParams(temperature=0, n=MAX_BATCH_SIZE, repetition_penalty=1.3).validate()


def test_engine_refuses_a_batch_size_past_the_limit_before_sizing(tiny):
    from engine.engine import LLMEngine
    from engine.loading import load_model

    with pytest.raises(InvalidRequestError, match="max_batch_size"):
        LLMEngine(load_model(tiny), max_batch_size=10**9)


def test_os_errors_read_as_one_line_naming_the_file_and_the_reason():
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/data/models/x"))
    assert full == "/data/models/x: the disk is full (ENOSPC)"
    read_only = describe_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/out.gguf"))
    assert read_only == "/mnt/out.gguf: the file system is read-only (EROFS)"
    assert one_line("first\n  second\n") == "first second"
