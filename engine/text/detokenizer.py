"""Streaming detokenization: the text a growing sequence of token ids adds, piece by piece.

`IncrementalDecoder` decodes a small window of recent tokens and emits only what is new,
holding back while the tail is an incomplete UTF-8 character (U+FFFD). The engine gives
each sample one, so token events carry text as it is generated. Not here: stop strings
(the engine holds back text that may start one), tokenization itself (engine/text/tokenizer.py).
"""

from __future__ import annotations

from engine.text.tokenizer import REPLACEMENT_CHAR, Tokenizer


class IncrementalDecoder:
    """Text of a growing token sequence, one new piece per pushed token.

    Decodes the last few tokens before and after the new one and emits the difference,
    so sentencepiece's leading-space rule and multi-token characters come out right.
    Pieces never end in half a UTF-8 character: while the decoded tail ends in U+FFFD the
    text is held back until a later token completes it (or `flush` is called).

    prompt_ids: the tokens before the first pushed one (only the last few are used), so the
        first piece gets the spacing it has in context. Without them the pieces join to
        `tokenizer.decode(pushed_ids)`.
    """

    CONTEXT_TOKENS = 6

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: list[int] | None = None, skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-self.CONTEXT_TOKENS :]) if prompt_ids else []
        self._prefix_offset = 0  # window start: decoded only for context
        self._read_offset = len(self._ids)  # tokens before this are already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly "")."""
        self._ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Whatever is still held back (e.g. a character the sequence never completed)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or (after.endswith(REPLACEMENT_CHAR) and not final):
            return ""
        delta = after[len(before) :]
        # The new window starts where the emitted text ended; drop tokens no longer needed.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        drop = self._prefix_offset
        if drop:
            del self._ids[:drop]
            self._prefix_offset -= drop
            self._read_offset -= drop
        return delta
