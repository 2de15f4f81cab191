"""The shard plan: which contiguous block of the population each rank evaluates.

Antithetic pairs (members 2k, 2k+1) are never split, so a rank can always form its pairs'
signs on its own (the packed wire form, eggroll.distributed.wire). Blocks are as even as the
pairs allow: with P pairs over W ranks the first P % W ranks hold one pair more, so any
world size up to P works and blocks may differ by one pair. Rank order is member order,
which is also the order every all-gather returns.
"""
from __future__ import annotations

from typing import Any

from .._trainer import UINT32_MAX, check_int

__all__ = ["ShardPlan", "split_blocks"]


def split_blocks(start: int, stop: int, parts: int, unit: int) -> list[range]:
    """range(start, stop) cut into `parts` contiguous blocks of whole units (an antithetic
    pair is a unit of 2), as even as possible, larger blocks first. Needs (stop - start) to
    be a multiple of unit and at least `parts` units."""
    units = (stop - start) // unit
    base, extra = divmod(units, parts)
    out, lo = [], start
    for p in range(parts):
        hi = lo + (base + (p < extra)) * unit
        out.append(range(lo, hi))
        lo = hi
    return out


class ShardPlan:
    """Contiguous member blocks of a population over world_size ranks.

    population: N >= 1 (even when antithetic); world_size: W >= 1, at most the number of
    antithetic pairs N / 2 (or N without antithetic sampling), else a ValueError: a rank
    with no members would only wait on the others.

    blocks[r] is rank r's range(lo, hi); sizes[r] = hi - lo; max_block is the largest."""

    def __init__(self, population: Any, world_size: Any, *, antithetic: bool = True) -> None:
        self.population = check_int(population, "population", 1, UINT32_MAX)
        self.world_size = check_int(world_size, "world_size", 1, UINT32_MAX)
        self.antithetic = bool(antithetic)
        unit = 2 if self.antithetic else 1
        if self.population % unit:
            raise ValueError(f"population: antithetic sampling needs an even population, got "
                             f"{self.population}")
        units = self.population // unit
        if self.world_size > units:
            what = "antithetic pairs" if self.antithetic else "members"
            raise ValueError(f"world_size: {self.world_size} ranks but only {units} {what} "
                             f"(population {self.population}); a rank needs at least one "
                             f"{'pair' if self.antithetic else 'member'}: use at most {units} "
                             "ranks or a larger population")
        self.unit = unit
        self.blocks = split_blocks(0, self.population, self.world_size, unit)
        self.sizes = [len(b) for b in self.blocks]
        self.max_block = max(self.sizes)

    def block(self, rank: Any) -> range:
        """Rank `rank`'s members, range(lo, hi)."""
        r = check_int(rank, "rank", 0, self.world_size - 1)
        return self.blocks[r]

    def rank_of(self, member: Any) -> int:
        """The rank whose block holds `member`."""
        i = check_int(member, "member", 0, self.population - 1)
        for r, b in enumerate(self.blocks):
            if i < b.stop:
                return r
        raise AssertionError("unreachable: blocks cover the population")

    def __repr__(self) -> str:
        return (f"ShardPlan(population={self.population}, world_size={self.world_size}, "
                f"sizes={self.sizes})")
