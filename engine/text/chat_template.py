"""Render a conversation into prompt text with the model's own chat template.

Templates are Jinja2 source shipped with the checkpoint (tokenizer_config.json,
chat_template.jinja or GGUF metadata); they are untrusted, so they run in Jinja's
immutable sandbox with limits on time, sizes and output (engine/text/template_sandbox.py),
and any way a template fails, raising or over a limit, is one ChatTemplateError. The environment matches what transformers gives templates
(trim_blocks, lstrip_blocks, loop controls, `raise_exception`, a `tojson` that keeps
non-ASCII text, `strftime_now`, bos/eos/... token strings), so the rendered text is the
same one a model was fine-tuned on. A model without a template gets ChatML.

`stop_token_ids` finds the end-of-turn tokens a template implies by rendering a probe
conversation and looking at what follows an assistant reply; nothing is inferred from
file or model names. Tokenizing the rendered text is the caller's job.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2

from engine.errors import EngineError
from engine.text.template_sandbox import (
    MAX_SOURCE_CHARS,
    TEMPLATE_FILENAME,
    LimitedSandbox,
    TemplateLimitError,
    render_limited,
)

if TYPE_CHECKING:
    from engine.text.tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A reply no real conversation contains, to find where an assistant turn ends.
_PROBE_REPLY = "PROBE-REPLY-7f3a"


class ChatTemplateError(EngineError):
    """A chat template that cannot be compiled or rendered; the message says why."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _describe_failure(exc: BaseException) -> str:
    """What went wrong in the template, and on which of its lines when that is known."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(exc, MemoryError):
        text = "ran out of memory"
    elif isinstance(exc, RecursionError):
        text = "recursed too deeply"
    elif isinstance(exc, TemplateLimitError):
        text = str(exc)
    else:
        text = f"{exc} ({type(exc).__name__})" if str(exc) else type(exc).__name__
    return f"{text}, at line {line}" if line else text


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    if len(source) > MAX_SOURCE_CHARS:
        raise ChatTemplateError(f"chat template is {len(source):,} characters long (the limit is {MAX_SOURCE_CHARS:,})")
    env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template does not compile: {exc.message} (line {exc.lineno})") from None
    except Exception as exc:  # the compiler on hostile source: nesting past Python's limits and the like
        raise ChatTemplateError(f"chat template does not compile: {_describe_failure(exc)}") from None


class ChatTemplate:
    """A model's chat template. `source=None` means the ChatML fallback."""

    def __init__(
        self,
        source: str | None,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
    ) -> None:
        self.is_fallback = not source
        self.source: str = source or CHATML_TEMPLATE
        self.special_tokens = {
            "bos_token": bos_token or "",
            "eos_token": eos_token or "",
            "pad_token": pad_token or "",
            "unk_token": unk_token or "",
        }
        self._template = _compile(self.source)

    @classmethod
    def for_tokenizer(cls, source: str | None, tokenizer: "Tokenizer") -> "ChatTemplate":
        """A template whose bos/eos/pad/unk variables are the tokenizer's token strings."""
        return cls(
            source,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            pad_token=tokenizer.pad_token,
            unk_token=tokenizer.unk_token,
        )

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]).

        add_generation_prompt: end with the opening of an assistant turn, for generation.
        variables: extra template variables (e.g. tools=..., or ones a template defines).
        """
        context = {
            **self.special_tokens,
            "tools": None,
            "documents": None,
            **variables,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return render_limited(self._template, context)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"chat template refused the conversation: {exc}") from None
        except (Exception, MemoryError) as exc:  # untrusted code: every way it fails is the template's
            raise ChatTemplateError(f"chat template failed: {_describe_failure(exc)}") from None

    def stop_token_ids(self, tokenizer: "Tokenizer") -> list[int]:
        """Token ids that end an assistant turn under this template, eos included.

        Renders a probe conversation and takes the special tokens that directly follow the
        assistant's reply (e.g. <|im_end|>, <|eot_id|>, </s>), then adds eos.
        """
        ids: list[int] = []
        suffix = self._text_after_reply()
        if suffix is not None:
            special = tokenizer.special_token_ids
            for token_id in tokenizer.encode(suffix.lstrip(" "), add_special_tokens=False)[:3]:
                if token_id in special:
                    ids.append(token_id)
                    break
        if not ids:  # no rendering worked: special tokens the template writes that read as turn ends
            for token in tokenizer.special_tokens:
                if token in self.source and any(mark in token.lower() for mark in ("end", "eot", "</s>")):
                    ids.append(tokenizer.token_to_id(token))
                    break
        eos = tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids

    def _text_after_reply(self) -> str | None:
        """What the template writes right after an assistant reply, up to the next turn."""
        conversations = (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE_REPLY},
             {"role": "user", "content": "Thanks"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE_REPLY}],
        )
        for messages in conversations:
            try:
                text = self.render(messages, add_generation_prompt=False)
            except ChatTemplateError:
                continue
            at = text.find(_PROBE_REPLY)
            if at < 0:
                continue
            suffix = text[at + len(_PROBE_REPLY) :]
            end = suffix.find("Thanks")
            return suffix if end < 0 else suffix[:end]
        return None
