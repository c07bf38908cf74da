"""Sampling parameters and the pure functions that turn logits into next tokens.

`SamplingParams` is what every caller fills in; `validate` checks it before any work.
The tensor functions (penalties, filters, sampling) work on a whole batch at once, one row
per sequence, so per-step Python work does not grow with the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import InvalidRequestError


@dataclass
class SamplingParams:
    """How to draw a reply. Each field's default leaves its stage off (temperature 1 is the
    model's own distribution); `chat_defaults()` holds the chat's recommended setting."""

    temperature: float = 1.0  # 0 means greedy; 1 leaves the logits as they are
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # in (0, 1]; 1 disables
    min_p: float = 0.0  # in [0, 1); 0 disables
    repetition_penalty: float = 1.0  # > 0; 1 disables (CTRL-style, over prompt and output)
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # stop strings, not included in the text
    stop_token_ids: list[int] = field(default_factory=list)  # added to the model's own
    seed: int | None = None
    n: int = 1  # samples per prompt; the prompt is prefilled once and shared
    logprobs: bool = False  # return the log-probability of each sampled token
    ignore_eos: bool = False  # keep going past stop tokens (benchmarks)

    @classmethod
    def chat_defaults(cls) -> "SamplingParams":
        """The chat's recommended sampling, and the one place it is written: the chat's
        settings and its one-shot `ask` command take their defaults from here (the reply
        length too: the field default). A small chat model repeats itself when decoded
        greedily and reads well with some temperature, nucleus sampling and a light
        repetition penalty."""
        return cls(temperature=0.7, top_p=0.9, repetition_penalty=1.1)

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise InvalidRequestError naming the first bad value."""
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise InvalidRequestError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise InvalidRequestError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise InvalidRequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise InvalidRequestError(f"n must be >= 1, got {self.n}")
        if vocab_size is not None:
            for token_id in self.stop_token_ids:
                if not 0 <= token_id < vocab_size:
                    raise InvalidRequestError(
                        f"stop token id {token_id} is not in the vocabulary (size {vocab_size})"
                    )
