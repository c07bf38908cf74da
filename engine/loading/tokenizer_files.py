"""Read a model directory's tokenizer: `tokenizer.json` or `tokenizer.model`, plus config.

`tokenizer.json` (the tokenizers library) is preferred when both files exist, as
transformers does. Special token strings, sentencepiece options and the chat template come
from `tokenizer_config.json` (with `special_tokens_map.json` as an older fallback); a
`chat_template.jinja` file overrides the config's template. Errors name the bad file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sentencepiece
import tokenizers

from engine.errors import ModelLoadError
from engine.text import sentencepiece_proto as spp
from engine.text.tokenizer import Tokenizer

TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or ModelLoadError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable JSON file ({exc})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: not a readable JSON file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer configs: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return jinja_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{jinja_file}: cannot be read ({exc})") from None
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: use the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def read_tokenizer(directory: Path) -> tuple[Tokenizer, str | None]:
    """The directory's tokenizer and its chat template source (None when it has none)."""
    config_file = directory / "tokenizer_config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    map_file = directory / "special_tokens_map.json"
    token_map = read_json(map_file) if map_file.is_file() else {}
    special = {key: _token_text(config.get(key, token_map.get(key))) for key in TOKEN_KEYS}

    json_file, model_file = directory / "tokenizer.json", directory / "tokenizer.model"
    if json_file.is_file():
        try:
            backend = tokenizers.Tokenizer.from_file(str(json_file))
        except Exception as exc:  # the Rust library raises plain Exception for any bad file
            raise ModelLoadError(f"{json_file}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None
        extra = [t for t in (_token_text(v) for v in config.get("additional_special_tokens") or []) if t]
        tokenizer = Tokenizer.from_tokenizers(backend, special_tokens=extra, **special)
    elif model_file.is_file():
        tokenizer = _sentencepiece_tokenizer(model_file, config, special)
    else:
        raise ModelLoadError(f"{directory}: tokenizer missing (expected tokenizer.json or tokenizer.model)")
    return tokenizer, _chat_template(directory, config)


def _sentencepiece_tokenizer(model_file: Path, config: dict[str, Any], special: dict[str, str | None]) -> Tokenizer:
    model = model_file.read_bytes()
    try:
        spp.read_pieces(model)
        sentencepiece.SentencePieceProcessor(model_proto=model)
    except (spp.ProtoError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{model_file}: not a valid sentencepiece model ({exc})") from None
    added: dict[str, int] = {}
    special_strings: list[str] = []
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        content = _token_text(entry)
        if content is None or not str(key).isdigit():
            continue
        added[content] = int(key)
        if isinstance(entry, dict) and entry.get("special", True):
            special_strings.append(content)
    special_strings += [t for t in (_token_text(v) for v in config.get("additional_special_tokens") or []) if t]
    return Tokenizer.from_sentencepiece(
        model,
        added_tokens=added,
        special_tokens=special_strings,
        add_bos_token=bool(config.get("add_bos_token", False)),
        add_eos_token=bool(config.get("add_eos_token", False)),
        add_prefix_space=config.get("add_prefix_space"),
        legacy=bool(config.get("legacy", False)),
        **special,
    )
