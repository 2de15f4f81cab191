"""One rank's side of the fitness-only protocol, over any engine's all-gather of byte frames.

The engine adapters (eggroll.distributed.torch / .jax) give it one function,
allgather(uint8 [S]) -> uint8 [W, S] in rank order, and everything else is here, in NumPy:

1. start-up: every rank sends the fingerprint of its set-up (trainer settings, the initial
   parameters' digest, the wire options); a mismatch raises SetupMismatch on every rank;
   then the shard plan (a world larger than the number of pairs raises on every rank);
2. each generation: the rank's block fitness goes out as one frame (wire.py), the frames
   come back as the population's fitness [N] (identical bits on every rank), which is
   logged (FitnessLog) and handed to the trainer's tell(); every `digest_every`
   generations the frame carries the rank's parameter digest and a difference raises
   DivergenceError on every rank.

Every check is decided from gathered data, so all ranks decide alike: none raises while the
others wait in the next collective.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .._trainer import check_int
from .digest import check_digests, check_setup, param_digest, setup_fingerprint
from .log import FitnessLog
from .plan import ShardPlan
from .wire import MODES, Wire

__all__ = ["FitnessExchange"]

AllGather = Callable[[np.ndarray], Any]


class FitnessExchange:
    """allgather: uint8 [S] -> [W, S] (rank order). rank, world_size: this rank and W.
    setup: the settings every rank must share (digest.trainer_setup). params: () -> the
    (name, array) pairs to digest. wire: "float32" or "sign". digest_every: k >= 0 (0: no
    divergence check). log: a FitnessLog to append each generation to (usually on rank 0)."""

    def __init__(self, allgather: AllGather, rank: int, world_size: int, *, population: int,
                 antithetic: bool, setup: Mapping[str, Any],
                 params: Callable[[], Iterable[tuple[str, Any]]], wire: str = "float32",
                 digest_every: int = 10, log: FitnessLog | None = None) -> None:
        if wire not in MODES:
            raise ValueError(f"wire: expected one of {MODES}, got {wire!r}")
        self.digest_every = check_int(digest_every, "digest_every", 0, 1 << 30)
        self.rank = check_int(rank, "rank", 0, world_size - 1)
        self.world_size = world_size
        self._allgather = allgather
        self._params = params
        self.log = log
        setup = dict(setup, world_size=world_size, wire=wire, digest_every=self.digest_every)
        fp = setup_fingerprint(setup)
        gathered = self._gather(fp.view(np.uint8)).view("<u8")
        check_setup(gathered, setup, rank)
        self.plan = ShardPlan(population, world_size, antithetic=antithetic)
        self.wire = Wire(self.plan, wire)
        if log is not None and (log.population, log.mode) != (population, wire):
            raise ValueError(f"log: holds population {log.population} in {log.mode!r} form; "
                             f"this run sends {population} in {wire!r} form")
        self.frames_sent = 0
        self.bytes_sent = 0

    def _gather(self, frame: np.ndarray) -> np.ndarray:
        out = np.asarray(self._allgather(np.ascontiguousarray(frame, dtype=np.uint8)))
        if out.shape != (self.world_size, frame.size):
            raise RuntimeError(f"allgather returned shape {out.shape}, expected "
                               f"({self.world_size}, {frame.size})")
        return out

    @property
    def members(self) -> range:
        """This rank's block of the population."""
        return self.plan.block(self.rank)

    def gather(self, epoch: int, block_fitness: Any) -> np.ndarray:
        """Send this rank's block fitness for `epoch`, return the population's float32 [N]
        (rank order = member order), after the digest check of a check generation."""
        check = self.digest_every and epoch % self.digest_every == 0
        digest = param_digest(self._params()) if check else None
        frame, problem = self.wire.encode(self.rank, epoch, block_fitness, digest)
        frames = self._gather(frame)
        self.frames_sent += 1
        self.bytes_sent += frame.size
        fitness, digests = self.wire.decode(frames, epoch, problem)
        if digests is not None:
            check_digests(digests, epoch)
        if self.log is not None:
            self.log.append(epoch, fitness)
        return fitness
