"""KV-cache bookkeeping: which cache blocks each sequence owns. Pure Python, no torch.

The cache is a pool of `num_blocks` blocks of `block_size` token slots each. A sequence
owns a block table (a list of block ids); token `i` of the sequence lives in slot
`block_table[i // block_size] * block_size + i % block_size`. Blocks are reference
counted so the n samples of one prompt share the prompt's full blocks; a partly filled
last block is copied on fork, because each sample writes its own next token there.

The runner (engine/runner.py) owns the tensors and performs the copies this class asks for.
"""

from __future__ import annotations

from dataclasses import dataclass


class CacheFullError(RuntimeError):
    """Raised when an allocation is attempted without enough free blocks (a scheduler bug)."""


@dataclass(frozen=True)
class BlockCopy:
    """Copy the contents of block `src` into block `dst` (copy-on-fork of a partial block)."""

    src: int
    dst: int


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of one slot, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives 0, 1, ...
        self._ref_counts = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def _take(self) -> int:
        if not self._free:
            raise CacheFullError("no free KV-cache block")
        block = self._free.pop()
        self._ref_counts[block] = 1
        return block

    def allocate(self, num_tokens: int) -> list[int]:
        """A fresh block table with room for `num_tokens` tokens."""
        needed = self.blocks_for(num_tokens)
        if needed > len(self._free):
            raise CacheFullError(f"{needed} blocks needed, {len(self._free)} free")
        return [self._take() for _ in range(needed)]

    def fork(self, block_table: list[int], num_tokens: int) -> tuple[list[int], BlockCopy | None]:
        """A table sharing `block_table`'s full blocks; a partial last block is copied.

        `num_tokens` is how many tokens the table holds. Returns the new table and the copy
        the runner must perform (or None when the last block is full).
        """
        shared = list(block_table)
        copy = None
        if num_tokens % self.block_size and shared:
            src = shared.pop()
            dst = self._take()
            copy = BlockCopy(src, dst)
            for block in shared:
                self._ref_counts[block] += 1
            shared.append(dst)
        else:
            for block in shared:
                self._ref_counts[block] += 1
        return shared, copy

    def needs_block(self, num_tokens: int) -> bool:
        """Whether a table holding `num_tokens` tokens needs a new block for the next one."""
        return num_tokens % self.block_size == 0

    def append_block(self, block_table: list[int]) -> int:
        """Add one block at the end of `block_table` (in place); returns its id."""
        block = self._take()
        block_table.append(block)
        return block

    def free(self, block_table: list[int]) -> None:
        """Release a table's blocks; blocks shared with other tables stay until their last owner."""
        for block in block_table:
            count = self._ref_counts[block]
            if count <= 0:
                raise RuntimeError(f"block {block} freed twice")
            self._ref_counts[block] = count - 1
            if count == 1:
                self._free.append(block)
        block_table.clear()

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]
