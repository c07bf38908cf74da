"""LLMEngine: continuous batching over one model.

Requests are added at any time; each `step()` prefills the waiting requests that fit
(in one forward over all their prompts; each prompt once, its KV shared by the request's
n samples) and then advances every running sample by one token in a single batched
forward. Finished or aborted samples leave at once and free their cache blocks.
`generate()` is the blocking batch call; engine/streaming.py puts a thread-safe front on
top for the UI.

Not thread-safe by itself: one thread calls add_request/step/abort.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence as SequenceOf

import torch

from engine.block_manager import BlockManager
from engine.bundle import LoadedModel
from engine.errors import InvalidRequestError
from engine.kernels.quant_types import QUANT_TYPES
from engine.kernels.quantized_copy import quantized_copy
from engine.runner import ModelRunner
from engine.sampling import MAX_BATCH_SIZE, SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Completion, FinishReason, Request, RequestOutput, Sequence, TokenEvent
from engine.text.detokenizer import IncrementalDecoder

__all__ = ["LLMEngine", "RequestOutput", "Completion", "TokenEvent", "SamplingParams", "decodes_with_graphs"]

DEFAULT_BLOCK_SIZE = 16


def decodes_with_graphs(device: torch.device, decode_graphs: bool | None) -> bool:
    """Whether an engine on `device` given `decode_graphs` decodes through fixed-shape
    steps (engine/graphed_decode.py): as asked, and by default on a CUDA device."""
    return device.type == "cuda" if decode_graphs is None else decode_graphs


def _sample_seed(request_seed: int, index: int) -> int:
    """A distinct, reproducible seed for sample `index` of a request seeded `request_seed`."""
    return (request_seed * 1_000_003 + index * 7_919 + 1) % (1 << 62)


class LLMEngine:
    def __init__(
        self,
        loaded: LoadedModel,
        max_batch_size: int = 32,
        max_cached_tokens: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_prefill_tokens: int = 4096,
        fast_cpu_kernels: bool = True,
        decode_graphs: bool | None = None,
        quant: str = "none",
    ) -> None:
        """fast_cpu_kernels: for an fp32 model on the CPU, decode through the C++ step of
        engine/kernels/llama_decode.py where it covers the model and run other linear layers through
        engine/kernels/cpu_linear.py (False: the model's own forward with PyTorch's kernels, for
        comparisons).
        decode_graphs: decode in fixed-shape steps replayed from CUDA graphs
        (engine/graphed_decode.py); default on for a model on a CUDA device. Elsewhere the
        same steps run eagerly (tests use that).
        quant: "q8_0" or "q4_0" to decode from 8-bit or 4-bit block-quantized copies of
        the weight matrices (engine/kernels/quantized_copy.py; CPU only, through the C++
        step); "none" decodes from the weights as they are. Prefill uses the weights as they
        are either way."""
        if not 1 <= max_batch_size <= MAX_BATCH_SIZE:  # before anything is sized from it
            raise InvalidRequestError(f"max_batch_size must be from 1 to {MAX_BATCH_SIZE}, got {max_batch_size}")
        self.loaded = loaded
        self.model = loaded.model
        self.config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.max_batch_size = max_batch_size
        self.max_context = self.config.max_position_embeddings
        if max_cached_tokens is None:
            max_cached_tokens = min(max_batch_size * 1024, 32768)
        # No more than every row at full context can ever be cached.
        max_cached_tokens = min(max_cached_tokens, max_batch_size * self.max_context)
        num_blocks = max(1, -(-max_cached_tokens // block_size))
        self.block_manager = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.block_manager, max_batch_size, max_prefill_tokens)
        param = next(self.model.parameters())
        if quant not in QUANT_TYPES:
            raise InvalidRequestError(f"{quant!r} is not a weight type (one of {', '.join(QUANT_TYPES)})")
        if quant != "none" and param.device.type != "cpu":
            raise InvalidRequestError(f"quantized weights ({quant}) are decoded on the CPU only, not on {param.device}")
        self.quant = quant
        max_blocks_per_seq = min(num_blocks, -(-self.max_context // block_size))
        self.runner = ModelRunner(
            self.model, num_blocks, block_size, max_batch_size, max_blocks_per_seq, param.device, param.dtype,
            fast_cpu_kernels=fast_cpu_kernels,
            decode_graphs=decodes_with_graphs(param.device, decode_graphs),
            quantized=quantized_copy(loaded, quant),
        )
        self._default_stop_ids = frozenset(loaded.stop_token_ids)
        self._requests: dict[str, Request] = {}
        self._free_rows = list(range(max_batch_size - 1, -1, -1))
        self._ids = itertools.count()
        self._rows_tensor: torch.Tensor | None = None  # cached while the running set is unchanged
        self._pending_events: list[TokenEvent] = []

    # --- public API --------------------------------------------------------------------

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None) -> str:
        """Queue a request; returns its id. Raises InvalidRequestError before any work."""
        params.validate(self.config.vocab_size)
        if not prompt_token_ids:
            raise InvalidRequestError("the prompt is empty")
        bad = [t for t in prompt_token_ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise InvalidRequestError(f"prompt token id {bad[0]} is not in the vocabulary (size {self.config.vocab_size})")
        prompt_len = len(prompt_token_ids)
        if prompt_len >= self.max_context:
            raise InvalidRequestError(
                f"the prompt has {prompt_len} tokens; the model's context is {self.max_context}"
            )
        if prompt_len + params.max_new_tokens > self.max_context:
            raise InvalidRequestError(
                f"max_new_tokens={params.max_new_tokens} would overflow the model's context "
                f"({prompt_len} prompt tokens + {params.max_new_tokens} > {self.max_context})"
            )
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already in use")
        stop_ids = frozenset(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= self._default_stop_ids
        request = Request(request_id, list(prompt_token_ids), params, stop_ids)
        self.scheduler.check_fits(request)
        self.scheduler.add(request)
        self._requests[request_id] = request
        return request_id

    def abort(self, request_id: str) -> None:
        """Stop a request; its samples end with finish_reason 'abort', text so far kept."""
        request = self._requests.get(request_id)
        if request is None or request.is_finished:
            return
        request.aborted = True
        if self.scheduler.remove_waiting(request):
            request.finish_time = time.perf_counter()
            for index in range(request.params.n):
                self._pending_events.append(
                    TokenEvent(request_id, index, None, "", finished=True, finish_reason=FinishReason.ABORT.value)
                )
            return
        for seq in request.sequences:
            if not seq.is_finished:
                seq.finish_reason = FinishReason.ABORT
                self._pending_events.append(self._final_event(seq, None, None))
        self._release_finished()

    def warm_up(self, batch_size: int | None = None, context: int | None = None) -> None:
        """Do one-time set-up (compiling CPU kernels, seconds) now instead of in the first
        request. Optional: without it the first request pays it. On a GPU, `batch_size`
        and `context` (tokens) also record the CUDA graphs that decoding that many
        requests up to that length will use (otherwise each is recorded when first needed)."""
        self.runner.warm_up(batch_size, context)

    def has_unfinished(self) -> bool:
        return bool(self.scheduler.waiting or self.scheduler.running or self._pending_events)

    def get_output(self, request_id: str) -> RequestOutput:
        return self._requests[request_id].output()

    def pop_output(self, request_id: str) -> RequestOutput:
        """The output of a finished request, forgetting it."""
        request = self._requests.pop(request_id)
        return request.output()

    def step(self) -> list[TokenEvent]:
        """Admit and prefill what fits, then advance every running sample by one token."""
        events, self._pending_events = self._pending_events, []
        admitted = self.scheduler.admit()
        if admitted:
            events.extend(self._prefill(admitted))
        if self.scheduler.running:
            events.extend(self._decode())
        return events

    def generate(
        self, prompts: SequenceOf[list[int]], params: SamplingParams | SequenceOf[SamplingParams]
    ) -> list[RequestOutput]:
        """Run prompts to completion (blocking); outputs in the order of `prompts`."""
        params_list = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(params_list) != len(prompts):
            raise InvalidRequestError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        for p in params_list:
            p.validate(self.config.vocab_size)
        ids = [self.add_request(list(prompt), p) for prompt, p in zip(prompts, params_list)]
        pending = set(ids)
        while pending:
            self.step()
            pending = {rid for rid in pending if not self._requests[rid].is_finished}
        return [self.pop_output(rid) for rid in ids]

    @property
    def num_cached_blocks(self) -> int:
        return self.block_manager.num_used_blocks

    # --- internals ---------------------------------------------------------------------

    def _prefill(self, requests: list[Request]) -> list[TokenEvent]:
        """Prefill the admitted requests in one forward, then sample every sample's first token."""
        prompts = [request.prompt_token_ids for request in requests]
        tables = [self.block_manager.allocate(len(prompt)) for prompt in prompts]
        self.runner.zero_blocks([block for table in tables for block in table])
        logits = self.runner.prefill(prompts, tables)  # (P, V)
        seqs: list[Sequence] = []
        logit_rows: list[int] = []  # which prompt's logits each new sample starts from
        for i, (request, table) in enumerate(zip(requests, tables)):
            request.sequences = self._start_samples(request, table)
            seqs += request.sequences
            logit_rows += [i] * len(request.sequences)
        rows = torch.tensor([s.row for s in seqs], device=self.runner.device)
        want_logprobs = any(request.params.logprobs for request in requests)
        tokens, logprobs = self.runner.sample(logits[logit_rows], rows, want_logprobs)
        first_token_time = time.perf_counter()
        for request in requests:
            request.first_token_time = first_token_time
        self.scheduler.running.extend(seqs)
        self._rows_tensor = None
        events = self._append_tokens(seqs, tokens.tolist(), logprobs.tolist() if logprobs is not None else None)
        self._release_finished()
        return events

    def _start_samples(self, request: Request, table: list[int]) -> list[Sequence]:
        """The request's n samples, each in a batch row, sharing the prompt's cache blocks."""
        params = request.params
        prompt = request.prompt_token_ids
        base_seed = params.seed if params.seed is not None else random.SystemRandom().randrange(1 << 62)
        seqs: list[Sequence] = []
        for index in range(params.n):
            if index == 0:
                seq_table = table
            else:
                seq_table, copy = self.block_manager.fork(table, len(prompt))
                if copy is not None:
                    self.runner.copy_block(copy.src, copy.dst)
            seq = Sequence(request, index, _sample_seed(base_seed, index), block_table=seq_table)
            seq.row = self._free_rows.pop()
            seq.decoder = IncrementalDecoder(self.tokenizer, prompt)
            self.runner.init_row(seq.row, params, seq.seed, seq_table)
            self.runner.set_context_len(seq.row, len(prompt))
            if index == 0:
                self.runner.set_seen(seq.row, prompt)
            else:
                self.runner.copy_row_seen(seqs[0].row, seq.row)
            seqs.append(seq)
        return seqs

    def _decode(self) -> list[TokenEvent]:
        running = self.scheduler.running
        num_blocks = 0
        for seq in running:
            # The token fed this step is written at position num_tokens - 1.
            if self.block_manager.needs_block(seq.num_tokens - 1):
                block = self.block_manager.append_block(seq.block_table)
                self.runner.zero_blocks([block])
                self.runner.set_block(seq.row, len(seq.block_table) - 1, block)
            num_blocks = max(num_blocks, len(seq.block_table))
        if self._rows_tensor is None:
            self._rows_tensor = torch.tensor([s.row for s in running], device=self.runner.device)
        rows = self._rows_tensor
        last_tokens = torch.tensor([s.token_ids[-1] for s in running], device=self.runner.device)
        logits = self.runner.decode(rows, last_tokens, num_blocks)
        want_logprobs = any(s.request.params.logprobs for s in running)
        tokens, logprobs = self.runner.sample(logits, rows, want_logprobs)
        events = self._append_tokens(running, tokens.tolist(), logprobs.tolist() if logprobs is not None else None)
        self._release_finished()
        return events

    def _append_tokens(self, seqs: list[Sequence], tokens: list[int], logprobs: list[float] | None) -> list[TokenEvent]:
        events = []
        for i, seq in enumerate(seqs):
            token = tokens[i]
            logprob = logprobs[i] if logprobs is not None else None
            seq.token_ids.append(token)
            if logprob is not None and seq.request.params.logprobs:
                seq.logprobs.append(logprob)
            events.append(self._advance_text(seq, token, logprob))
        return events

    def _advance_text(self, seq: Sequence, token: int, logprob: float | None) -> TokenEvent:
        request = seq.request
        params = request.params
        is_stop_token = token in request.stop_token_ids
        if not is_stop_token:
            seq.text += seq.decoder.push(token)
        if is_stop_token:
            seq.finish_reason = FinishReason.STOP
        elif params.stop and self._truncate_at_stop_string(seq):
            seq.finish_reason = FinishReason.STOP
        elif len(seq.token_ids) >= params.max_new_tokens or seq.num_tokens >= self.max_context:
            seq.finish_reason = FinishReason.LENGTH
        if seq.is_finished:
            if seq.finish_reason is not FinishReason.STOP or is_stop_token:
                seq.text += seq.decoder.flush()
            return self._final_event(seq, token, logprob)
        # Hold back text that could still turn out to be the start of a stop string.
        holdback = max((len(s) for s in params.stop), default=1) - 1
        visible = len(seq.text) - holdback
        delta = seq.text[seq.emitted : visible] if visible > seq.emitted else ""
        seq.emitted += len(delta)
        return TokenEvent(request.request_id, seq.index, token, delta, logprob)

    @staticmethod
    def _truncate_at_stop_string(seq: Sequence) -> bool:
        longest = max(len(s) for s in seq.request.params.stop)
        window_start = max(0, seq.emitted - longest)
        hits = [i for s in seq.request.params.stop if (i := seq.text.find(s, window_start)) >= 0]
        if not hits:
            return False
        seq.text = seq.text[: min(hits)]
        return True

    def _final_event(self, seq: Sequence, token: int | None, logprob: float | None) -> TokenEvent:
        delta = seq.text[seq.emitted :]
        seq.emitted = len(seq.text)
        return TokenEvent(
            seq.request.request_id, seq.index, token, delta, logprob, finished=True, finish_reason=seq.finish_reason.value
        )

    def _release_finished(self) -> None:
        running = self.scheduler.running
        if not any(s.is_finished for s in running):
            return
        keep = []
        for seq in running:
            if seq.is_finished:
                self.block_manager.free(seq.block_table)
                self._free_rows.append(seq.row)
                if seq.request.is_finished:
                    seq.request.finish_time = time.perf_counter()
            else:
                keep.append(seq)
        self.scheduler.running = keep
        self._rows_tensor = None
