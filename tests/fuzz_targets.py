"""Property-based fuzzing of every input a user or a downloaded file controls.

Each target generates malformed inputs with hypothesis (starting from a good tiny model,
feedback line or command line and changing values, types and structure) and asserts the
one-line-error contract: the input is accepted, or refused with the package's own
user-error type whose message is one line. Any other exception (a traceback for the
user) fails the target with hypothesis's smallest example.

tests/test_fuzz_inputs.py runs each target in a subprocess under a 3 GB address-space
limit, so an input that makes the code allocate without bound fails too. A fixed seed
(derandomize) and a bounded number of examples keep it repeatable and fast for CI.

    python tests/fuzz_targets.py TARGET WORKDIR   # what the test runs
    CHAT_TUI_FUZZ_SCALE=10 python tests/fuzz_targets.py TARGET WORKDIR   # a longer search
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# CHAT_TUI_FUZZ_SCALE=10 runs ten times the examples (a longer search than CI's).
SCALE = float(os.environ.get("CHAT_TUI_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, int(count * SCALE))


def one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message, f"not a one-line error: {message!r}"


def loads_or_refuses(path: Path) -> None:
    """The model at `path` loads, or is refused with a one-line ModelLoadError."""
    from engine.errors import ModelLoadError
    from engine.loading import load_model

    try:
        load_model(path)
    except ModelLoadError as exc:
        one_line(exc)


# -- values --------------------------------------------------------------------------------

special_floats = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320, 1e308, -1.0])
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-4, max_value=4096),
    st.floats(allow_nan=True, allow_infinity=True), special_floats,
    st.text(max_size=12),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)

CONFIG_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
               "rope_scaling", "rope_parameters", "tie_word_embeddings", "attention_bias", "mlp_bias", "bos_token_id",
               "eos_token_id", "pad_token_id", "model_type", "hidden_act", "sliding_window"]
rope_dicts = st.fixed_dictionaries({}, optional={
    "rope_type": st.sampled_from(["linear", "llama3", "default", "yarn", 5]),
    "factor": st.one_of(special_floats, st.floats(-10, 1e7), st.text(max_size=3)),
    "low_freq_factor": st.one_of(special_floats, st.floats(-2, 10)),
    "high_freq_factor": st.one_of(special_floats, st.floats(-2, 10)),
    "original_max_position_embeddings": st.one_of(st.integers(-5, 2**40), special_floats),
})


# -- targets -------------------------------------------------------------------------------


def fuzz_configs(work: Path) -> None:
    """config.json with keys changed, removed or given odd values."""
    from tiny_models import make_tiny_model_dir

    good = make_tiny_model_dir(work / "good")
    base = json.loads((good / "config.json").read_text())
    target = work / "model"
    shutil.copytree(good, target)

    @settings(max_examples=examples(80), **SETTINGS)
    @given(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(json_values, rope_dicts, st.just(...)),
                           min_size=1, max_size=4))
    def check(changes: dict[str, Any]) -> None:
        config = dict(base)
        for key, value in changes.items():
            if value is ...:
                config.pop(key, None)
            else:
                config[key] = value
        (target / "config.json").write_text(json.dumps(config))
        loads_or_refuses(target)

    check()


def fuzz_safetensors_headers(work: Path) -> None:
    """model.safetensors whose header entries have odd dtypes, shapes, offsets and keys."""
    from malformed_models import read_safetensors_header, write_safetensors_header
    from tiny_models import make_tiny_model_dir

    good = make_tiny_model_dir(work / "good")
    header, body = read_safetensors_header(good / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    target = work / "model"
    shutil.copytree(good, target)
    entry_fields = st.sampled_from(["dtype", "shape", "data_offsets"])
    field_values = st.one_of(json_values, st.sampled_from(["F32", "F16", "I64", "BOOL", "F8_E4M3", "X9"]),
                             st.lists(st.integers(-3, 2**64), max_size=4))

    @settings(max_examples=examples(80), **SETTINGS)
    @given(st.lists(st.tuples(st.sampled_from(names + ["__metadata__", "extra.weight"]), entry_fields, field_values),
                    min_size=1, max_size=3),
           st.one_of(st.none(), st.binary(max_size=64)))
    def check(edits: list[tuple[str, str, Any]], raw: bytes | None) -> None:
        changed = json.loads(json.dumps(header))
        for name, field, value in edits:
            entry = changed.setdefault(name, {})
            if isinstance(entry, dict):
                entry[field] = value
            else:
                changed[name] = value
        write_safetensors_header(target / "model.safetensors", changed, body, raw_header=raw)
        loads_or_refuses(target)

    check()


def fuzz_gguf_metadata(work: Path) -> None:
    """A GGUF file whose llama.* and tokenizer id keys hold odd values of any GGUF type."""
    from gguf import GGUFValueType as V

    from engine.export.gguf import export_gguf
    from malformed_models import rewrite_gguf
    from tiny_models import make_tiny_model_dir

    good = export_gguf(make_tiny_model_dir(work / "good"), work / "good.gguf", "f32")
    keys = ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
            "llama.attention.head_count_kv", "llama.attention.key_length", "llama.rope.dimension_count",
            "llama.context_length", "llama.vocab_size", "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
            "llama.rope.scaling.type", "llama.rope.scaling.factor", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.bos_token_id", "general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.chat_template",
            "tokenizer.ggml.add_bos_token"]
    plain_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
    typed_values = st.one_of(
        st.tuples(st.integers(0, 2**32 - 1), st.just(V.UINT32)),
        st.tuples(st.integers(-(2**31), 2**31 - 1), st.just(V.INT32)),
        st.tuples(st.integers(0, 2**64 - 1), st.just(V.UINT64)),
        st.tuples(st.floats(width=32), st.just(V.FLOAT32)),
        st.tuples(plain_text, st.just(V.STRING)),
        st.tuples(st.lists(plain_text, min_size=1, max_size=5), st.just(V.ARRAY)),
        st.tuples(st.booleans(), st.just(V.BOOL)),
        st.tuples(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4), st.just(V.ARRAY)),
        st.none(),  # the key removed
    )

    @settings(max_examples=examples(60), **SETTINGS)
    @given(st.dictionaries(st.sampled_from(keys), typed_values, min_size=1, max_size=3))
    def check(changes: dict[str, Any]) -> None:
        path = rewrite_gguf(good, work / "model.gguf", changes)
        loads_or_refuses(path)

    check()


def fuzz_feedback_lines(work: Path) -> None:
    """Lines of a `feedback import` file: odd JSON, odd text (surrogates), odd bytes."""
    from feedback import Store
    from feedback.errors import FeedbackError
    from feedback.importing import ImportedItems, content_key, read_pairs_file

    texts = st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028"]))
    messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
                                               "content": st.one_of(texts, json_scalars)}), max_size=4)
    pairs = st.fixed_dictionaries({}, optional={
        "prompt": st.one_of(texts, messages, json_values), "chosen": st.one_of(texts, messages, json_values),
        "rejected": st.one_of(texts, messages, json_values), "context": st.one_of(messages, json_values),
    })
    lines = st.one_of(pairs.map(lambda obj: json.dumps(obj).encode()),
                      st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
                      st.binary(max_size=40))
    store = Store(work / "feedback.db")
    source = work / "pairs.jsonl"

    @settings(max_examples=examples(200), **SETTINGS)
    @given(st.lists(lines, min_size=1, max_size=4))
    def check(file_lines: list[bytes]) -> None:
        source.write_bytes(b"\n".join(file_lines) + b"\n")
        try:
            parsed = read_pairs_file(source)
            store.import_items(ImportedItems(pairs=[(content_key("pair", p), p) for p in parsed]))
        except FeedbackError as exc:
            one_line(exc)

    check()
    store.close()


def fuzz_cli_values(work: Path) -> None:
    """`chat-tui ask` with odd sampling values, as text on the command line, on a tiny model:
    exit 0, or one 'Error:' line on stderr and a non-zero exit."""
    from chat_tui.cli import cli, run_command
    from tiny_models import make_tiny_model_dir

    model = make_tiny_model_dir(work / "tiny")
    numbers = st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e-300", "1e300", "abc", "", "1e400",
                                         "99999999999999999999999"]),
                        st.floats(allow_nan=False, allow_infinity=False).map(repr),
                        st.integers(-10, 10**6).map(str))
    options = ["--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--max-tokens", "--n",
               "--seed"]

    @settings(max_examples=examples(40), **SETTINGS)
    @given(st.dictionaries(st.sampled_from(options), numbers, min_size=1, max_size=3))
    def check(values: dict[str, str]) -> None:
        args = ["ask", "--model", str(model), "--max-tokens", "3"]
        for option, value in values.items():
            args += [f"{option}={value}"]
        args.append("hi")
        err, out = io.StringIO(), io.StringIO()
        old_argv = sys.argv
        sys.argv = ["chat-tui", *args]
        status = 0
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                run_command(cli)
        except SystemExit as exc:
            status = exc.code or 0
        finally:
            sys.argv = old_argv
        lines = err.getvalue().splitlines()
        if status:
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, err.getvalue())
        else:
            assert not lines, (args, err.getvalue())

    check()


TARGETS = {
    "configs": fuzz_configs,
    "safetensors": fuzz_safetensors_headers,
    "gguf": fuzz_gguf_metadata,
    "feedback": fuzz_feedback_lines,
    "cli": fuzz_cli_values,
}

if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # the engine's warnings are not errors
    TARGETS[sys.argv[1]](Path(sys.argv[2]))
