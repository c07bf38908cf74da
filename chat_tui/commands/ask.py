"""`chat-tui ask`: one question, one streamed answer, from the command line.

Loads a model (the active version, as the chat does, when --model is absent), renders the question with the
model's chat template, and runs it through the engine: with n=1 the reply streams to
stdout as it is generated; with --n N the N samples share one prefill and are printed
one after another. --json prints a single JSON object (a list of them for --n > 1).
"""

from __future__ import annotations

import json
import sys
import time
from typing import BinaryIO

import click

from chat_tui.errors import UserError
from chat_tui.quant_choice import QUANT_TYPES, check_quant_device
from engine.sampling import SamplingParams  # no torch: the flags' defaults are the chat's

SAMPLE_QUESTION = "What is the capital of France?"
_CHAT = SamplingParams.chat_defaults()
# Far more text than any model's context holds; reading stops here rather than at memory's end.
MAX_PROMPT_BYTES = 4 * 2**20


def read_prompt(stream: BinaryIO) -> str:
    """The prompt piped to `ask -`: UTF-8 text of at most MAX_PROMPT_BYTES, else a
    UserError saying what is wrong with it."""
    data = stream.read(MAX_PROMPT_BYTES + 1)
    if len(data) > MAX_PROMPT_BYTES:
        raise UserError(f"the prompt on standard input is longer than {MAX_PROMPT_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"the prompt on standard input is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def check_text(value: str, what: str) -> str:
    """`value` if it is valid Unicode text; command-line arguments that were not UTF-8
    arrive with lone surrogates in them, which no tokenizer can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(
            f"{what} is not UTF-8 text (undecodable byte {ord(value[exc.start]) & 0xFF:#04x} at character {exc.start})"
        ) from None
    return value


def _sampling_options(func):
    """The sampling flags, defaulting to the chat's recommended sampling."""
    options = [
        click.option("--temperature", type=float, default=_CHAT.temperature, show_default=True, help="0 is greedy."),
        click.option("--top-p", type=float, default=_CHAT.top_p, show_default=True, help="Nucleus sampling mass, in (0, 1]."),
        click.option("--top-k", type=int, default=_CHAT.top_k, show_default=True, help="Keep the k most likely tokens (0: off)."),
        click.option("--min-p", type=float, default=_CHAT.min_p, show_default=True, help="Drop tokens below this fraction of the top one."),
        click.option("--repetition-penalty", type=float, default=_CHAT.repetition_penalty, show_default=True, help="1 disables."),
        click.option("--max-tokens", type=int, default=_CHAT.max_new_tokens, show_default=True, help="Most new tokens per reply."),
        click.option("--seed", type=int, default=None, help="Seed for reproducible sampling."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _model_path(requested: str | None) -> str:
    """What to load, chosen as the chat chooses: a version by name, else a store name or
    path; with no --model the active version (the default model on a fresh install). A path
    is loaded as it is, and nothing is written to the data directory for it."""
    import os

    if requested is not None and os.path.exists(requested):
        return requested
    from chat_tui.paths import database_path, ensure_data_dir
    from chat_tui.services.bootstrap import choose_model
    from feedback import Store

    ensure_data_dir()
    with Store(database_path()) as store:
        return choose_model(store, requested, None, lambda label, text: click.echo(f"{label}: {text}", err=True)).path


@click.command()
@click.argument("prompt", required=False)
@click.option("--model", "model_name", default=None, help="A model version, a model in the store, a model directory or a .gguf file (default: the active version, as in the chat).")
@click.option("--system", default=None, help="System prompt.")
@_sampling_options
@click.option("--n", "num_samples", type=int, default=1, show_default=True, help="Number of replies (sampled together, sharing the prompt).")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a list for --n > 1) instead of streaming text.")
@click.option("--device", default="cpu", show_default=True, help="cpu, auto (the GPU if any), cuda, cuda:N or mps.")
@click.option("--dtype", default=None, help="float32 (CPU default), bfloat16 (GPU default) or float16.")
@click.option("--quant", type=click.Choice(QUANT_TYPES), default="none", show_default=True,
              help="Decode from 8-bit (q8_0) or 4-bit (q4_0) block-quantized weights (CPU); none: the weights as they are.")
def ask(
    prompt: str | None,
    model_name: str | None,
    system: str | None,
    temperature: float,
    top_p: float,
    top_k: int,
    min_p: float,
    repetition_penalty: float,
    max_tokens: int,
    seed: int | None,
    num_samples: int,
    stop: tuple[str, ...],
    as_json: bool,
    device: str,
    dtype: str | None,
    quant: str,
) -> None:
    """Ask the model PROMPT and print its reply (reads stdin when PROMPT is '-')."""

    if prompt is None:
        raise UserError("give a PROMPT (or '-' to read it from stdin), e.g. chat-tui ask " f"{SAMPLE_QUESTION!r}")
    prompt = read_prompt(sys.stdin.buffer) if prompt == "-" else check_text(prompt, "the prompt")
    for text, what in ((system, "--system"), *((s, "--stop") for s in stop)):
        if text is not None:
            check_text(text, what)
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_tokens,
        seed=seed,
        n=num_samples,
        stop=list(stop),
    )
    params.validate()  # before the (slow) imports and model load
    check_quant_device(quant, device)
    from chat_tui.paths import models_dir
    from engine.devices import resolve_device
    from engine.engine import LLMEngine
    from engine.loading import load_model
    from engine.streaming import StreamingEngine

    device = str(resolve_device(device))  # before choosing a model, which may import the default one
    load_started = time.perf_counter()
    loaded = load_model(_model_path(model_name), device=device, dtype=dtype, store_root=models_dir())
    load_s = time.perf_counter() - load_started
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    prompt_ids = loaded.encode_chat(messages)
    engine = LLMEngine(loaded, max_batch_size=max(8, num_samples), quant=quant)

    if as_json or num_samples > 1:
        output = engine.generate([prompt_ids], params)[0]
        if as_json:
            records = [
                {
                    "text": c.text,
                    "token_ids": c.token_ids,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": len(c.token_ids),
                    "tokens_per_s": round(output.tokens_per_s / max(1, num_samples), 2),
                    "ttft_s": round(output.ttft_s, 4),
                    "load_s": round(load_s, 3),
                    "model": loaded.name,
                }
                for c in output.completions
            ]
            click.echo(json.dumps(records[0] if num_samples == 1 else records, ensure_ascii=False))
        else:
            for c in output.completions:
                click.echo(f"--- reply {c.index + 1} of {num_samples} ({c.finish_reason}) ---")
                click.echo(c.text)
        return

    front = StreamingEngine(engine).start()
    try:
        stream = front.submit(prompt_ids, params)
        try:
            for event in stream:
                sys.stdout.write(event.text_delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.cancel()
            stream.result(timeout=10)
        sys.stdout.write("\n")
    finally:
        front.stop()
