"""eggroll.jax.ES over JAX processes (jax.distributed) and over the devices of one process
(shard_map), with only fitness crossing between them.

Across the local devices of a process, inside jax.jit (docs/distributed.md)::

    mesh = jax.make_mesh((jax.local_device_count(),), ("pop",))
    fitness_of = sharded_fitness(es, lambda pop, xb, yb: -loss(pop, xb, yb), mesh, "pop")

    @jax.jit
    def step(params, opt_state, epoch, xb, yb):
        f = fitness_of(params, epoch, xb, yb)      # [N]: each device its block, all-gathered
        grads = es.gradient(params, f, epoch)       # the same update on every device
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

Across processes (``jax.distributed.initialize`` first)::

    des = DistributedES(es, params)                # checks the set-up on every process
    f_block = eval_block(params, epoch)             # jitted, es.ask(..., members=des.members)
    f = des.gather(f_block, params, epoch)          # multihost_utils.process_allgather
    params, opt_state = update(params, opt_state, f, epoch)   # jitted: gradient + optax

The two compose: a process evaluates its block with sharded_fitness(..., members=des.members)
over its local devices, then gathers across processes. Or, all inside one jax.jit: give
sharded_fitness a mesh of every process's devices (jax.make_mesh((jax.device_count(),),
("pop",))) and pass host (NumPy) or replicated parameters; the all-gather then crosses
processes inside the computation (XLA's CPU collectives: gloo), as the official code does.
DistributedES adds what a bare all-gather lacks: the set-up check at start, the epoch and
digest checks and the fitness log.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from .digest import trainer_setup
from .exchange import FitnessExchange
from .log import FitnessLog
from .plan import split_blocks

__all__ = ["DistributedES", "sharded_fitness"]


def _shard_map() -> Any:
    fn = getattr(jax, "shard_map", None)
    if fn is None:                                   # jax < 0.7
        from jax.experimental.shard_map import shard_map as fn
    return fn


def _check_es(es: Any) -> None:
    from ..jax.es import ES
    if not isinstance(es, ES):
        raise TypeError(f"es: expected an eggroll.jax.ES, got {type(es).__name__}")


def sharded_fitness(es: Any, fitness_fn: Callable[..., Any], mesh: Any, axis: str | None = None,
                    *, members: range | None = None) -> Callable[..., jax.Array]:
    """A function (params, epoch, *args) -> float32 [len(members)] for use inside jax.jit:
    the block `members` (default: the whole population) is split into contiguous
    sub-blocks over the devices of `mesh` along `axis` (default: its only axis); each device
    runs fitness_fn(pop, *args) on es.ask(params, epoch, members=its sub-block) and the
    results are all-gathered in member order, so every device holds the block's fitness.

    fitness_fn(pop, *args) -> [len(pop)] fitness; args are replicated to every device (give
    each member its inputs inside, e.g. jnp.broadcast_to(xb, (len(pop),) + xb.shape)).
    Uneven sub-blocks are padded to the largest: a padded row evaluates a member beyond the
    sub-block (harmless) and is dropped, so any population works on any number of devices
    up to its number of antithetic pairs. A member's fitness has the same bits on any device
    and in any split (the ops' guarantee), so the result equals the unsharded evaluation."""
    _check_es(es)
    if axis is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"axis: the mesh has axes {mesh.axis_names}; name the one the "
                             "population is split over")
        axis = mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"axis: {axis!r} is not an axis of the mesh {mesh.axis_names}")
    from .._trainer import check_member_block
    block = check_member_block(members, es.population)
    D = int(mesh.shape[axis])
    unit = 2 if es.antithetic and block.start % 2 == 0 and len(block) % 2 == 0 else 1
    if len(block) // unit < D:
        raise ValueError(f"mesh: {D} devices along {axis!r} but the block {block} has only "
                         f"{len(block) // unit} {'pairs' if unit == 2 else 'members'}")
    subs = split_blocks(block.start, block.stop, D, unit)
    width = max(len(s) for s in subs)
    starts = np.array([s.start for s in subs], dtype=np.int32)
    keep = np.concatenate([d * width + np.arange(len(s)) for d, s in enumerate(subs)])

    def local(params: Any, epoch: Any, *args: Any) -> jax.Array:
        lo = jnp.asarray(starts)[jax.lax.axis_index(axis)]
        pop = es.ask(params, epoch, members=lo + jnp.arange(width, dtype=jnp.int32))
        f = jnp.asarray(fitness_fn(pop, *args), dtype=jnp.float32)
        if f.shape != (width,):
            raise ValueError(f"fitness_fn: expected one value per member, shape ({width},), "
                             f"got {f.shape}")
        return jax.lax.all_gather(f, axis, tiled=True)        # [D * width], member order

    def run(params: Any, epoch: Any, *args: Any) -> jax.Array:
        n_in = 2 + len(args)
        gathered = _shard_map()(local, mesh=mesh, in_specs=(P(),) * n_in, out_specs=P(),
                                check_vma=False)(params, epoch, *args)
        return gathered[keep]
    return run


class DistributedES:
    """The fitness exchange of an eggroll.jax.ES across JAX processes.

    es: the process's eggroll.jax.ES (built alike everywhere); params: the initial parameter
    pytree (its digest is part of the set-up check); epoch: the starting epoch. wire,
    digest_every, log: as eggroll.distributed.torch.DistributedES. Call after
    jax.distributed.initialize (with one process it works alone)."""

    def __init__(self, es: Any, params: Any, *, epoch: int = 0, wire: str = "float32",
                 digest_every: int = 10, log: FitnessLog | None = None) -> None:
        _check_es(es)
        if wire == "sign" and es.shaping != "antithetic_sign":
            raise ValueError(f"wire: the 'sign' form carries one vote per pair; it needs "
                             f"ES(shaping='antithetic_sign'), got shaping={es.shaping!r}")
        from jax.experimental import multihost_utils
        self.es = es
        self._current = params
        world, rank = jax.process_count(), jax.process_index()

        def allgather(frame: np.ndarray) -> np.ndarray:
            return np.asarray(multihost_utils.process_allgather(frame)).reshape(world, -1)
        self.exchange = FitnessExchange(
            allgather, rank, world, population=es.population, antithetic=es.antithetic,
            setup=trainer_setup(es, epoch, self._params), params=self._params, wire=wire,
            digest_every=digest_every, log=log)

    def _params(self) -> Any:
        from ..jax.es import _named_leaves
        names, leaves, _ = _named_leaves(self._current)
        return zip(names, (np.asarray(v) for v in leaves))

    @property
    def members(self) -> range:
        """This process's block of the population."""
        return self.exchange.members

    @property
    def plan(self) -> Any:
        return self.exchange.plan

    def gather(self, block_fitness: Any, params: Any, epoch: int) -> jax.Array:
        """This process's fitness [len(members)] for `epoch` -> the population's float32 [N]
        (the same bits on every process). params: the parameters the block was evaluated
        with (digested on check generations)."""
        self._current = params
        f = self.exchange.gather(int(epoch), np.asarray(block_fitness))
        return jnp.asarray(f)

    def __repr__(self) -> str:
        return (f"DistributedES(process {self.exchange.rank} of {self.exchange.world_size}, "
                f"members={self.members}, wire={self.exchange.wire.mode!r})")
