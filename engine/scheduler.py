"""Which requests run: the waiting queue, the running set, and admission. No torch.

Admission is first come, first served, and reserves each request's worst case (prompt
plus max_new_tokens, for every sample) against the cache, so a running sequence never
runs out of blocks and nothing is ever preempted. Requests that do not fit yet wait in
the queue; they are never refused for lack of room (only for being larger than the whole
cache, which `check_fits` reports up front).
"""

from __future__ import annotations

from collections import deque

from engine.block_manager import BlockManager
from engine.errors import InvalidRequestError
from engine.sequence import Request, Sequence


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_batch_size: int, max_prefill_tokens: int) -> None:
        self.blocks = block_manager
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Sequence] = []

    def _worst_case_blocks(self, request: Request) -> int:
        """Blocks the request can ever hold at once: shared prompt blocks plus each sample's tail."""
        prompt = len(request.prompt_token_ids)
        final = prompt + request.params.max_new_tokens
        prompt_blocks = self.blocks.blocks_for(prompt)
        partial_copies = (request.params.n - 1) if prompt % self.blocks.block_size else 0
        tail = self.blocks.blocks_for(final) - prompt_blocks
        return prompt_blocks + partial_copies + request.params.n * tail

    def _future_blocks(self, seq: Sequence) -> int:
        final = len(seq.request.prompt_token_ids) + seq.request.params.max_new_tokens
        return max(0, self.blocks.blocks_for(final) - len(seq.block_table))

    def check_fits(self, request: Request) -> None:
        """Raise if the request could never run, whatever else finishes first."""
        if request.params.n > self.max_batch_size:
            raise InvalidRequestError(
                f"n={request.params.n} is more than the engine's max batch size {self.max_batch_size}"
            )
        needed = self._worst_case_blocks(request)
        if needed > self.blocks.num_blocks:
            capacity = self.blocks.num_blocks * self.blocks.block_size
            raise InvalidRequestError(
                f"request needs up to {needed * self.blocks.block_size} cached tokens "
                f"({len(request.prompt_token_ids)} prompt + {request.params.max_new_tokens} new, "
                f"x{request.params.n} samples); the cache holds {capacity}"
            )

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def admit(self) -> list[Request]:
        """Pop the waiting requests that fit now, in arrival order, for prefill."""
        admitted: list[Request] = []
        if not self.waiting:
            return admitted
        reserved = sum(self._future_blocks(s) for s in self.running)
        available = self.blocks.num_free_blocks - reserved
        batch = len(self.running)
        prefill_tokens = 0
        while self.waiting:
            request = self.waiting[0]
            needed = self._worst_case_blocks(request)
            prompt_len = len(request.prompt_token_ids)
            if batch + request.params.n > self.max_batch_size or needed > available:
                break
            if admitted and prefill_tokens + prompt_len > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            admitted.append(request)
            available -= needed
            batch += request.params.n
            prefill_tokens += prompt_len
        return admitted

    def remove_waiting(self, request: Request) -> bool:
        try:
            self.waiting.remove(request)
        except ValueError:
            return False
        return True

    @property
    def num_running(self) -> int:
        return len(self.running)
