"""Text <-> token ids for the engine.

`Tokenizer` is one class over either backend a checkpoint may ship:

- a `tokenizers.Tokenizer` (`tokenizer.json`: byte-level BPE, Llama-3, Qwen2, SmolLM ...),
  which already knows its added and special tokens;
- a `sentencepiece.SentencePieceProcessor` (`tokenizer.model`: Llama 2, Mistral,
  TinyLlama ...). Special tokens written in the text are split out here, and the text
  between them is encoded the way transformers' Llama tokenizer does it (a "▁" is put
  in front of the text only at the very start, unless the text already starts with a
  space), so ids match what a model was fine-tuned on through transformers.

Turning a stream of ids into text pieces is engine/text/detokenizer.py's job. Reading
tokenizer files from a model directory lives in engine/loading/tokenizer_files.py;
rebuilding one from GGUF metadata in engine/loading/gguf_tokenizer.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import sentencepiece
import tokenizers

from engine.text import sentencepiece_proto as spp

REPLACEMENT_CHAR = "\ufffd"
_SPACE_MARK = "\u2581"  # sentencepiece's "▁"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class Tokenizer:
    """Encode/decode with a model's own tokenizer; see the module docstring.

    Build one with `from_tokenizers` or `from_sentencepiece`. Token strings for bos/eos/
    pad/unk come from the checkpoint's tokenizer config (or GGUF metadata).
    """

    def __init__(
        self,
        *,
        hf_tokenizer: tokenizers.Tokenizer | None = None,
        sentencepiece_model: bytes | None = None,
        added_tokens: dict[str, int] | None = None,
        special_tokens: list[str] | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        add_prefix_space: bool | None = None,
        legacy: bool = False,
    ) -> None:
        if (hf_tokenizer is None) == (sentencepiece_model is None):
            raise ValueError("give exactly one of hf_tokenizer and sentencepiece_model")
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self._hf = hf_tokenizer
        self._sp: sentencepiece.SentencePieceProcessor | None = None
        self._sp_model = sentencepiece_model
        self.legacy = legacy
        if hf_tokenizer is not None:
            self.kind = "tokenizers"
            decoder = hf_tokenizer.get_added_tokens_decoder()
            self._added = {tok.content: i for i, tok in decoder.items()}
            self._special = {tok.content for tok in decoder.values() if tok.special}
            self._special.update(special_tokens or [])
            self.add_prefix_space = bool(add_prefix_space)
        else:
            self.kind = "sentencepiece"
            self._init_sentencepiece(sentencepiece_model, added_tokens or {}, special_tokens or [], add_prefix_space)
        self._by_id = {i: s for s, i in self._added.items()}
        self._special_ids = {self._added[s] for s in self._special if s in self._added}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_tokenizers(cls, hf_tokenizer: tokenizers.Tokenizer, **special: Any) -> "Tokenizer":
        """Wrap a `tokenizers.Tokenizer`; `special` takes bos_token, eos_token, pad_token, unk_token."""
        return cls(hf_tokenizer=hf_tokenizer, **special)

    @classmethod
    def from_sentencepiece(cls, model: bytes, **options: Any) -> "Tokenizer":
        """Wrap a serialized sentencepiece model (the bytes of a `tokenizer.model`)."""
        return cls(sentencepiece_model=model, **options)

    def _init_sentencepiece(
        self, model: bytes, added: dict[str, int], special: list[str], add_prefix_space: bool | None
    ) -> None:
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        # A second processor that never adds the leading "▁", for text after a special token.
        self._sp_plain = sentencepiece.SentencePieceProcessor(model_proto=spp.with_dummy_prefix(model, False))
        self._model_adds_prefix = spp.adds_dummy_prefix(model)
        self.add_prefix_space = self._model_adds_prefix if add_prefix_space is None else add_prefix_space
        self._piece_types = [p.type for p in spp.read_pieces(model)]
        self._added = dict(added)
        self._special = set(special)
        # Control, unknown and user-defined pieces are matched whole in the text, as in transformers.
        for i, kind in enumerate(self._piece_types):
            if kind in (spp.CONTROL, spp.UNKNOWN, spp.USER_DEFINED):
                piece = self._sp.id_to_piece(i)
                self._added.setdefault(piece, i)
                if kind != spp.USER_DEFINED:
                    self._special.add(piece)
        ordered = sorted(self._added, key=len, reverse=True)  # longest match wins
        self._added_pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    # -- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        if self._hf is not None:
            return self._hf.get_vocab_size(with_added_tokens=True)
        top_added = max(self._added.values(), default=-1) + 1
        return max(self._sp.get_piece_size(), top_added)

    @property
    def special_tokens(self) -> list[str]:
        """Special token strings, in id order."""
        return sorted(self._special & set(self._added), key=lambda s: self._added[s])

    @property
    def special_token_ids(self) -> set[int]:
        return set(self._special_ids)

    @property
    def added_tokens(self) -> dict[str, int]:
        """Tokens matched whole in the text (special or not) -> id."""
        return dict(self._added)

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        if self._hf is not None:
            return self._hf.token_to_id(token)
        token_id = self._sp.piece_to_id(token)
        # sentencepiece answers unknown pieces with the unk id
        if token_id == self._sp.unk_id() and token != self._sp.id_to_piece(token_id):
            return None
        return token_id

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self._by_id:
            return self._by_id[token_id]
        if self._hf is not None:
            return self._hf.id_to_token(token_id)
        if 0 <= token_id < self._sp.get_piece_size():
            return self._sp.id_to_piece(token_id)
        return None

    def _special_id(self, token: str | None) -> int | None:
        return None if token is None else self.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id(self.unk_token)

    # -- encode / decode ----------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in it become their ids.

        add_special_tokens: add what the checkpoint adds around a sequence (usually bos).
        """
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=add_special_tokens).ids
        ids: list[int] = []
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids.append(self.bos_token_id)
        position = 0
        matches = self._added_pattern.finditer(text) if self._added_pattern else ()
        for match in matches:
            if match.start() > position:
                ids += self._encode_plain(text[position : match.start()], at_start=position == 0)
            ids.append(self._added[match.group()])
            position = match.end()
        if position < len(text):
            ids += self._encode_plain(text[position:], at_start=position == 0)
        if add_special_tokens and self.add_eos_token and self.eos_token_id is not None:
            ids.append(self.eos_token_id)
        return ids

    def _encode_plain(self, text: str, at_start: bool) -> list[int]:
        # transformers' Llama tokenizer prefixes "▁" only at the start of the input ("legacy"
        # prefixes every piece between special tokens), and never when a space is already there.
        wants_prefix = self.add_prefix_space and (at_start or self.legacy) and not text.startswith(" ")
        processor = self._sp if wants_prefix and self._model_adds_prefix else self._sp_plain
        if wants_prefix and processor is self._sp_plain:
            text = " " + text
        return processor.encode(text)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        if self._hf is not None:
            return self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)
        parts: list[str] = []
        pending = bytearray()  # consecutive byte-fallback pieces form one UTF-8 sequence

        def flush() -> None:
            if pending:
                try:
                    parts.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append(REPLACEMENT_CHAR * len(pending))
                pending.clear()

        size = self._sp.get_piece_size()
        for token_id in ids:
            if token_id in self._by_id:
                if skip_special_tokens and token_id in self._special_ids:
                    continue
                flush()
                parts.append(self._by_id[token_id])
            elif 0 <= token_id < size:
                piece = self._sp.id_to_piece(token_id)
                byte = _BYTE_PIECE.match(piece) if self._piece_types[token_id] == spp.BYTE else None
                if byte:
                    pending.append(int(byte.group(1), 16))
                else:
                    flush()
                    parts.append(piece.replace(_SPACE_MARK, " "))
        flush()
        text = "".join(parts)
        if self.add_prefix_space and text.startswith(" "):
            text = text[1:]  # the "▁" that encoding put in front
        return text

    # -- files --------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """The `tokenizer_config.json` entries that describe this tokenizer."""
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast" if self._hf is not None else "LlamaTokenizer",
            "clean_up_tokenization_spaces": False,
            "added_tokens_decoder": {
                str(i): {
                    "content": s,
                    "special": s in self._special,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "single_word": False,
                }
                for s, i in sorted(self._added.items(), key=lambda kv: kv[1])
            },
        }
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        if self._sp is not None:
            config.update(
                add_bos_token=self.add_bos_token,
                add_eos_token=self.add_eos_token,
                add_prefix_space=self.add_prefix_space,
                legacy=self.legacy,
            )
        return config

    def save(self, directory: str | Path, extra_config: dict[str, Any] | None = None) -> None:
        """Write `tokenizer.json` or `tokenizer.model`, and `tokenizer_config.json`.

        extra_config: more `tokenizer_config.json` entries (e.g. the chat template).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._hf is not None:
            self._hf.save(str(directory / "tokenizer.json"))
        else:
            (directory / "tokenizer.model").write_bytes(self._sp_model)
        config = {**self.config_dict(), **(extra_config or {})}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
