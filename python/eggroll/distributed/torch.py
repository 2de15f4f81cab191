"""eggroll.torch.ES over torch.distributed: each rank evaluates its block, only fitness moves.

Under ``torchrun --nproc_per_node 2 train.py`` (docs/distributed.md)::

    dist.init_process_group("gloo")                 # "nccl" on GPUs
    es = eggroll.torch.ES(model, sigma=0.05, population=512, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)   # any torch.optim
    des = eggroll.distributed.torch.DistributedES(es)
    for step in range(steps):
        with des.ask() as pop:                      # this rank's members only
            logits = model(xb.expand(len(pop), *xb.shape))
        des.tell(fitness(logits))                   # [len(pop)] -> all-gather -> es.tell
        opt.step()                                  # the same update on every rank

The frames go through one ``all_gather_single`` of uint8 per generation (on the GPU
for NCCL, the CPU for gloo); everything else is eggroll.distributed.FitnessExchange.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .digest import trainer_setup
from .exchange import FitnessExchange
from .log import FitnessLog

__all__ = ["DistributedES"]


def _allgather(group: Any, world: int, device: torch.device) -> Any:
    # all_gather_single is the newer name of all_gather_into_tensor (deprecated in 2.13)
    gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

    def allgather(frame: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(frame).to(device)
        out = torch.empty(world * frame.size, dtype=torch.uint8, device=device)
        gather_single(out, t, group=group)
        return out.cpu().numpy().reshape(world, frame.size)
    return allgather


class DistributedES:
    """An eggroll.torch.ES whose population is split over a torch.distributed group.

    es: the rank's eggroll.torch.ES (every rank builds it the same way: same module
    initialisation, seed, population and settings; checked at construction).
    group: the process group (None: the default group; dist.init_process_group first).
    wire: "float32" (4 bytes per member) or "sign" (2 bits per antithetic pair; needs
    shaping="antithetic_sign"). digest_every: check that all replicas hold the same
    parameters every k generations (0: never). log: a FitnessLog to append the gathered
    fitness to (usually on rank 0 only).

    Set a timeout on the process group (init_process_group(timeout=...)): a rank that dies
    mid-generation leaves the others waiting in the all-gather until it expires (torchrun
    stops the other ranks when one fails)."""

    def __init__(self, es: Any, group: Any = None, *, wire: str = "float32",
                 digest_every: int = 10, log: FitnessLog | None = None) -> None:
        from ..torch.es import ES
        if not isinstance(es, ES):
            raise TypeError(f"es: expected an eggroll.torch.ES, got {type(es).__name__}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call "
                               "torch.distributed.init_process_group first (torchrun sets "
                               "the environment it reads)")
        if wire == "sign" and es.shaping != "antithetic_sign":
            raise ValueError(f"wire: the 'sign' form carries one vote per pair; it needs "
                             f"ES(shaping='antithetic_sign'), got shaping={es.shaping!r}")
        self.es = es
        self.group = group
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        setup = trainer_setup(es, es.epoch, self._params)
        self.exchange = FitnessExchange(
            _allgather(group, world, device), rank, world, population=es.population,
            antithetic=es.antithetic, setup=setup, params=self._params, wire=wire,
            digest_every=digest_every, log=log)

    def _params(self) -> Any:
        return ((n, p.detach().cpu()) for n, p in self.es.module.named_parameters())

    @property
    def members(self) -> range:
        """This rank's block of the population, range(lo, hi)."""
        return self.exchange.members

    @property
    def plan(self) -> Any:
        return self.exchange.plan

    def ask(self) -> Any:
        """es.ask(members=self.members): the population-mode context of this rank's block."""
        return self.es.ask(members=self.members)

    def gather(self, block_fitness: Any) -> np.ndarray:
        """This rank's fitness [len(members)] -> the population's float32 [N] (every rank
        gets the same bits)."""
        if isinstance(block_fitness, torch.Tensor):
            block_fitness = block_fitness.detach().to("cpu", torch.float32).numpy()
        return self.exchange.gather(self.es.epoch, block_fitness)

    def tell(self, block_fitness: Any) -> dict[str, Any]:
        """gather() then es.tell() of the whole population: writes the same .grad on every
        rank. Call opt.step() after it, as without distribution."""
        return self.es.tell(self.gather(block_fitness))

    def __repr__(self) -> str:
        return (f"DistributedES(rank {self.exchange.rank} of {self.exchange.world_size}, "
                f"members={self.members}, wire={self.exchange.wire.mode!r})")
