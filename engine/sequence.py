"""State of requests and of the sequences generating their samples. No torch.

A `Request` is one prompt with its sampling parameters; once admitted it owns `n`
`Sequence`s, one per sample, which share the prompt's KV blocks. A sequence holds its
token ids, the block table, text decoded so far and why it finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

from engine.sampling import SamplingParams


class FinishReason(str, Enum):
    STOP = "stop"  # a stop token or stop string
    LENGTH = "length"  # max_new_tokens reached
    ABORT = "abort"  # aborted by the caller


@dataclass
class TokenEvent:
    """One step's news for one sample of a request."""

    request_id: str
    index: int  # sample index within the request, 0..n-1
    token_id: int | None  # None when the event only reports an abort
    text_delta: str  # newly completed text (stop strings and half characters held back)
    logprob: float | None = None
    finished: bool = False
    finish_reason: str | None = None


@dataclass
class Completion:
    """One finished sample."""

    index: int
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[float] | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    completions: list[Completion]
    ttft_s: float  # time from submission to the first sampled token
    tokens_per_s: float  # this request's generated tokens over its decode time

    @property
    def num_generated_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


@dataclass
class Sequence:
    request: "Request"
    index: int
    seed: int
    token_ids: list[int] = field(default_factory=list)  # generated tokens only
    logprobs: list[float] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    row: int = -1  # batch row in the runner's per-row buffers
    text: str = ""  # decoded text, stop strings excluded
    emitted: int = 0  # characters of `text` already handed out in events
    decoder: object | None = None  # engine.text.detokenizer.IncrementalDecoder
    finish_reason: FinishReason | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV is (or is about to be) in the cache: prompt + generated."""
        return len(self.request.prompt_token_ids) + len(self.token_ids)

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stop_token_ids: frozenset[int]
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    finish_time: float | None = None
    sequences: list[Sequence] = field(default_factory=list)
    aborted: bool = False

    @property
    def is_finished(self) -> bool:
        return bool(self.sequences) and all(s.is_finished for s in self.sequences)

    def output(self) -> RequestOutput:
        completions = [
            Completion(
                index=s.index,
                token_ids=list(s.token_ids),
                text=s.text,
                finish_reason=(s.finish_reason or FinishReason.ABORT).value,
                logprobs=list(s.logprobs) if self.params.logprobs else None,
            )
            for s in self.sequences
        ]
        if not completions:  # aborted before it was admitted
            completions = [
                Completion(index=i, token_ids=[], text="", finish_reason=FinishReason.ABORT.value)
                for i in range(self.params.n)
            ]
        ttft = (self.first_token_time - self.arrival_time) if self.first_token_time else 0.0
        end = self.finish_time or time.perf_counter()
        decode_time = end - (self.first_token_time or end)
        generated = sum(len(c.token_ids) for c in completions)
        # The first token of each sample comes from prefill; the rest from decode steps.
        decoded = generated - len(self.sequences)
        rate = decoded / decode_time if decode_time > 0 and decoded > 0 else 0.0
        return RequestOutput(self.request_id, list(self.prompt_token_ids), completions, ttft, rate)
