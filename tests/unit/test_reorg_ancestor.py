"""``indexer.reorg.find_ancestor``: the highest block whose stored hash is the node's."""

from __future__ import annotations

import pytest

from indexer.reorg import ReorgTooDeep, find_ancestor


def chains(kept: range, diverged_from: int | None) -> tuple[dict[int, str], dict[int, str]]:
    """Our kept hashes for ``kept`` and the node's, which differ from ``diverged_from`` on."""
    node = {n: f"0x{n:064x}" for n in range(0, 200)}
    ours = {n: node[n] for n in kept}
    if diverged_from is not None:
        for n in ours:
            if n >= diverged_from:
                ours[n] = f"0x{n:062x}ff"
    return ours, node


def test_same_hash_at_the_start_is_the_ancestor():
    ours, node = chains(range(50, 101), None)
    asked: list[int] = []

    def fetch(n: int) -> str:
        asked.append(n)
        return node[n]

    assert find_ancestor(ours.get, fetch, 100, 50) == 100
    assert asked == [100]  # one comparison, no walk


@pytest.mark.parametrize("depth", [1, 2, 7, 50])
def test_divergence_k_blocks_deep_finds_the_block_below_it(depth):
    # blocks 100-depth+1 .. 100 were replaced: the ancestor is 100 - depth
    ours, node = chains(range(40, 101), 101 - depth)
    assert find_ancestor(ours.get, node.__getitem__, 100, 40) == 100 - depth


def test_divergence_below_the_kept_hashes_is_too_deep():
    ours, node = chains(range(90, 101), 85)  # every kept block differs; 89 is not kept
    with pytest.raises(ReorgTooDeep):
        find_ancestor(ours.get, node.__getitem__, 100, 0)


def test_divergence_reaching_the_floor_is_too_deep():
    ours, node = chains(range(0, 101), 60)  # hashes kept, but the floor is 70
    with pytest.raises(ReorgTooDeep):
        find_ancestor(ours.get, node.__getitem__, 100, 70)
    # the floor block itself may be the ancestor
    ours, node = chains(range(0, 101), 71)
    assert find_ancestor(ours.get, node.__getitem__, 100, 70) == 70
