"""Decode steps with fixed shapes and fixed buffers, recorded once as CUDA graphs.

On a GPU a decode step of a small model is a few hundred short kernels, and launching
them one by one from Python costs more than running them. A CUDA graph records the
launches once and replays them in one call. The price is that a graph replays exactly
what it recorded: the same shapes and the same memory. So here:

- a step's inputs (token ids, positions, block tables) are copied into buffers that live
  as long as the runner, and its logits come out in one such buffer;
- a batch of B rows is padded up to a row bucket (1, 2, 4, 8, ..., the runner's row
  count), and attention spans a bucketed number of cache blocks (1, 2, 4, ... up to the
  longest row's), so a few dozen graphs cover every batch;
- padding rows feed token 0 at position 0 with every table entry at a scratch block
  that no sequence owns, so their k/v writes land there and nowhere else; their logits
  are dropped;
- each (rows, blocks) bucket is recorded the first time it is needed. All graphs share
  one memory pool (they never run at the same time).

A graph also has every weight's address baked in. In-place updates (an optimizer step
between PPO rollouts) keep it valid; a weight that moved (`.to()`, assigned `.data`, LoRA
layers added) makes every graph stale, and they are recorded again.

Only CUDA records graphs. Elsewhere the same step runs eagerly on the same buffers,
which is how the CPU tests check padding and bucketing; they also watch every operation
of a step (a TorchDispatchMode) to show it never reads a tensor's value on the host,
which a capture would reject.

Not here: prefill (its shapes vary with every prompt; it runs eagerly), sampling (it
runs after the step, and its choice of candidate counts reads values on the host).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.module_changes import Placement

# Warm-up runs before recording a graph, on a side stream as PyTorch's CUDA graph notes
# ask: lazy initialisation (cuBLAS workspaces, autotuning) must not happen during capture.
_WARM_UP_RUNS = 2


def bucket_sizes(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, then `limit` itself."""
    sizes = []
    size = 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return sizes + [limit]


def bucket_for(count: int, sizes: list[int]) -> int:
    """The smallest size that holds `count` (at most the last size)."""
    return next(size for size in sizes if size >= count)


# One step on the first `rows` rows of the buffers, attending over `blocks` cache blocks:
# (token_ids (R,), positions (R,), block_tables (R, N)) -> logits (R, V).
StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class GraphedDecode:
    """Fixed-shape decode steps for a runner's batch rows, replayed from CUDA graphs on a GPU."""

    def __init__(
        self,
        step: StepFunction,
        model: torch.nn.Module,
        max_rows: int,
        max_blocks: int,
        vocab_size: int,
        scratch_block: int,
        device: torch.device,
    ) -> None:
        """step: the eager decode step (the runner's), run on slices of this object's buffers.
        scratch_block: a cache block no sequence owns, where padding rows write."""
        self._step = step
        self._model = model
        self.row_buckets = bucket_sizes(max_rows)
        self.block_buckets = bucket_sizes(max_blocks)
        self.scratch_block = scratch_block
        self.device = device
        self.records_graphs = device.type == "cuda"
        self.token_ids = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.block_tables = torch.full((max_rows, max_blocks), scratch_block, dtype=torch.long, device=device)
        self.logits = torch.zeros(max_rows, vocab_size, dtype=torch.float32, device=device)
        # (rows, blocks) -> its graph, or None where steps run eagerly; cleared when stale.
        self.recorded: dict[tuple[int, int], torch.cuda.CUDAGraph | None] = {}
        self._pool = None
        self._recorded_for: Placement | None = None  # the model's tensors the graphs read

    def __call__(self, token_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
        """One step for B rows: token_ids (B,), positions (B,), block_tables (B, blocks), the
        rows' tables cut to the blocks the longest one uses. Returns logits (B, V), a view
        of this object's buffer that the next step overwrites."""
        count, needed = block_tables.shape
        rows = bucket_for(count, self.row_buckets)
        blocks = bucket_for(needed, self.block_buckets)
        self.token_ids[:count] = token_ids
        self.positions[:count] = positions
        self.block_tables[:count, :needed] = block_tables
        # Blocks past a row's own are masked off in attention, but masked slots are still
        # multiplied by zero, so they must hold numbers: each row's point at its own first
        # block (as the runner's tables do), padding rows' at the scratch block.
        self.block_tables[:count, needed:blocks] = block_tables[:, :1]
        self.token_ids[count:rows] = 0
        self.positions[count:rows] = 0
        self.block_tables[count:rows, :blocks] = self.scratch_block
        self._forget_if_stale()
        key = (rows, blocks)
        if key not in self.recorded:
            self.recorded[key] = self._record(rows, blocks) if self.records_graphs else None
        graph = self.recorded[key]
        if graph is None:
            self._run(rows, blocks)
        else:
            with torch.cuda.device(self.device):  # its streams, should the current device be another
                graph.replay()
        return self.logits[:count]

    def prepare(self, count: int, max_blocks: int) -> None:
        """Record now the steps a batch of `count` rows needs up to `max_blocks` blocks a row,
        rather than in the middle of decoding (a benchmark's timed run, say). Every row
        runs as padding, so the real cache is untouched. Nothing to do where steps run
        eagerly."""
        if not self.records_graphs:
            return
        rows = bucket_for(count, self.row_buckets)
        self._forget_if_stale()
        self.token_ids[:rows] = 0
        self.positions[:rows] = 0
        self.block_tables[:rows] = self.scratch_block
        for blocks in self.block_buckets:
            if (rows, blocks) not in self.recorded:
                self.recorded[(rows, blocks)] = self._record(rows, blocks)
            if blocks >= max_blocks:
                break

    def _run(self, rows: int, blocks: int) -> None:
        self.logits[:rows] = self._step(self.token_ids[:rows], self.positions[:rows], self.block_tables[:rows, :blocks])

    def _record(self, rows: int, blocks: int) -> torch.cuda.CUDAGraph:
        # The warm-up runs compute this very step (same inputs, same cache writes), so
        # running it again by replaying is harmless.
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(_WARM_UP_RUNS):
                    self._run(rows, blocks)
            torch.cuda.current_stream().wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._run(rows, blocks)
        return graph

    def _forget_if_stale(self) -> None:
        """Drop every recorded step if a model tensor moved or a module was added since."""
        if self._recorded_for is not None and self._recorded_for.holds():
            return
        self.recorded.clear()
        self._recorded_for = Placement.now([*self._model.parameters(), *self._model.buffers()])
