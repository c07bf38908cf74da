"""BlockManager bookkeeping: allocation, sharing on fork, copy of partial blocks, freeing."""

import pytest

from engine.block_manager import BlockManager, CacheFullError


def test_allocate_rounds_up_to_whole_blocks():
    bm = BlockManager(num_blocks=8, block_size=4)
    table = bm.allocate(9)
    assert len(table) == 3
    assert bm.num_free_blocks == 5


def test_fork_shares_full_blocks_and_copies_partial_last_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    table = bm.allocate(6)  # one full block, one half-full
    forked, copy = bm.fork(table, 6)
    assert forked[0] == table[0]
    assert bm.ref_count(table[0]) == 2
    assert copy is not None and copy.src == table[1] and copy.dst == forked[1]
    assert forked[1] != table[1]
    assert bm.num_free_blocks == 5


def test_fork_of_block_aligned_prompt_copies_nothing():
    bm = BlockManager(num_blocks=8, block_size=4)
    table = bm.allocate(8)
    forked, copy = bm.fork(table, 8)
    assert copy is None and forked == table
    assert all(bm.ref_count(b) == 2 for b in table)


def test_shared_blocks_return_only_after_last_owner_frees():
    bm = BlockManager(num_blocks=8, block_size=4)
    table = bm.allocate(8)
    forked, _ = bm.fork(table, 8)
    bm.free(table)
    assert bm.num_free_blocks == 6
    bm.free(forked)
    assert bm.num_free_blocks == 8


def test_needs_block_only_at_block_boundaries():
    bm = BlockManager(num_blocks=8, block_size=4)
    assert [bm.needs_block(n) for n in range(9)] == [True, False, False, False, True, False, False, False, True]


def test_cache_full_and_double_free_are_errors():
    bm = BlockManager(num_blocks=2, block_size=4)
    table = bm.allocate(8)
    with pytest.raises(CacheFullError):
        bm.allocate(1)
    first = table[0]
    bm.free(table)
    with pytest.raises(RuntimeError):
        bm.free([first])
