"""Sampling parameters and the pure functions that turn logits into next tokens.

`SamplingParams` is what every caller fills in; `validate` checks it before any work.
The tensor functions (penalties, filters, sampling) work on a whole batch at once, one row
per sequence, so per-step Python work does not grow with the batch size.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from engine.errors import InvalidRequestError

# The most sequences one engine decodes at once. The n samples of a prompt decode
# together, so n is bounded by it too; checked before any engine is sized from it.
MAX_BATCH_SIZE = 1024
# Below this a temperature would push scaled logits past float32's range; 0 is greedy.
MIN_TEMPERATURE = 1e-4
# A repetition penalty outside this range turns logits into 0 or infinity in float32.
PENALTY_RANGE = (1e-2, 1e2)
MAX_TOP_K = 2**31 - 1


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
        """Raise InvalidRequestError naming the first bad value. Comparisons are written
        so that NaN fails them (NaN compares false with everything)."""
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidRequestError(f"{name} must be a finite number, got {value!r}")
        for name in ("top_k", "max_new_tokens", "n"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
        if not (self.temperature == 0 or self.temperature >= MIN_TEMPERATURE):
            raise InvalidRequestError(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise InvalidRequestError(f"min_p must be in [0, 1), got {self.min_p}")
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidRequestError(f"top_k must be from 0 to {MAX_TOP_K}, got {self.top_k}")
        low, high = PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:
            raise InvalidRequestError(
                f"repetition_penalty must be from {low:g} to {high:g} (1 disables), got {self.repetition_penalty}"
            )
        if self.max_new_tokens < 1:
            raise InvalidRequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 1 <= self.n <= MAX_BATCH_SIZE:
            raise InvalidRequestError(f"n must be from 1 to {MAX_BATCH_SIZE}, got {self.n}")
        if vocab_size is not None:
            for token_id in self.stop_token_ids:
                if not 0 <= token_id < vocab_size:
                    raise InvalidRequestError(
                        f"stop token id {token_id} is not in the vocabulary (size {vocab_size})"
                    )
