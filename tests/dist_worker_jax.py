"""The JAX rank of tests/dist_worker.py: jax.distributed on 127.0.0.1 (coordinator bound to the
loopback address), each process one CPU device; its block of the population is evaluated by
sharded_fitness over that process's devices, then gathered across processes (DistributedES);
then the same run again as one jitted step over a mesh of all processes' devices. Also the
--scenario shard run: one process, several local devices, sharded vs unsharded in one run."""
from __future__ import annotations

import argparse

import numpy as np

from dist_worker import HIDDEN, N_IN, N_OUT, data, listening_addresses


def _setup(population: int, seed: int, wire: str) -> tuple:
    import jax.numpy as jnp

    import eggroll.jax as ej
    rng = np.random.default_rng(0)
    params = {"W1": jnp.asarray(rng.standard_normal((HIDDEN, N_IN)).astype(np.float32)),
              "b1": jnp.zeros(HIDDEN, jnp.float32),
              "W2": jnp.asarray(rng.standard_normal((N_OUT, HIDDEN)).astype(np.float32)),
              "scale": jnp.ones(N_OUT, jnp.float32)}
    shaping = "antithetic_sign" if wire == "sign" else "centered_rank"
    es = ej.ES(params, sigma=0.1, population=population, rank=2, seed=seed, shaping=shaping)
    return es, params


def fitness(pop, xb, yb):
    import jax.numpy as jnp
    x = jnp.broadcast_to(xb, (len(pop),) + xb.shape)
    h = jnp.tanh(pop.linear("W1", x, bias="b1"))
    y = pop.linear("W2", h) * pop.vector("scale")[:, None, :]
    return -jnp.mean((y - yb) ** 2, axis=(1, 2))


def _update_fn(es, opt):
    import jax
    import optax

    @jax.jit
    def update(params, opt_state, f, epoch):
        grads = es.gradient(params, f, epoch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    return update


def run(a: argparse.Namespace) -> dict[str, np.ndarray]:
    import jax
    import optax
    if a.world > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{a.port}",
                                   coordinator_bind_address=f"127.0.0.1:{a.port}",
                                   num_processes=a.world, process_id=a.rank,
                                   initialization_timeout=60, heartbeat_timeout_seconds=20,
                                   shutdown_timeout_seconds=20)
    if a.scenario == "shard":
        return run_shard(a)
    from eggroll.distributed.jax import DistributedES, sharded_fitness
    es, params = _setup(a.population, 7 + (a.rank if a.scenario == "seed" else 0), a.wire)
    opt = optax.adam(0.05)
    update = _update_fn(es, opt)
    xb, yb = data()
    des = DistributedES(es, params, wire=a.wire, digest_every=2) if a.world > 1 else None
    block = des.members if des else range(a.population)
    mesh = jax.make_mesh((jax.local_device_count(),), ("pop",),
                         devices=jax.local_devices())
    fit = jax.jit(sharded_fitness(es, fitness, mesh, members=block))
    opt_state = opt.init(params)
    for epoch in range(a.steps):
        f = fit(params, epoch, xb, yb)
        full = des.gather(f, params, epoch) if des else f
        params, opt_state = update(params, opt_state, full, epoch)
    out = {k: np.asarray(v) for k, v in params.items()}
    if a.world > 1:
        out.update({f"_global/{k}": v for k, v in run_global_mesh(a, es, opt).items()})
    out["_listening"] = np.array(listening_addresses(), dtype=np.str_)
    if a.world > 1:
        jax.distributed.shutdown()
    return out


def run_global_mesh(a: argparse.Namespace, es, opt) -> dict[str, np.ndarray]:
    """The whole step in one jax.jit over a mesh of every process's devices: sharded_fitness
    all-gathers across processes inside the computation (no process_allgather)."""
    import jax
    import optax

    from eggroll.distributed.jax import sharded_fitness
    _, params = _setup(a.population, 7, a.wire)
    xb, yb = data()
    mesh = jax.make_mesh((jax.device_count(),), ("pop",))
    fit = sharded_fitness(es, fitness, mesh)

    @jax.jit
    def step(params, opt_state, epoch):
        f = fit(params, epoch, xb, yb)
        updates, opt_state = opt.update(es.gradient(params, f, epoch), opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    params = {k: np.asarray(v) for k, v in params.items()}     # host values: replicated
    opt_state = jax.tree.map(np.asarray, opt.init(params))
    for epoch in range(a.steps):
        params, opt_state = step(params, opt_state, epoch)
    return {k: np.asarray(v.addressable_data(0)) for k, v in params.items()}


def run_shard(a: argparse.Namespace) -> dict[str, np.ndarray]:
    """Sharded over all local devices vs one device, in the same process: must be equal."""
    import jax
    import optax

    from eggroll.distributed.jax import sharded_fitness
    es, params0 = _setup(a.population, 7, a.wire)
    opt = optax.adam(0.05)
    xb, yb = data()
    mesh = jax.make_mesh((jax.device_count(),), ("pop",))
    sharded = sharded_fitness(es, fitness, mesh)

    def make_step(fit):
        @jax.jit
        def step(params, opt_state, epoch):
            f = fit(params, epoch)
            updates, opt_state = opt.update(es.gradient(params, f, epoch), opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        return step
    steps = {"sharded": make_step(lambda p, e: sharded(p, e, xb, yb)),
             "single": make_step(lambda p, e: fitness(es.ask(p, e), xb, yb))}
    out = {}
    for name, step in steps.items():
        params, opt_state = params0, opt.init(params0)
        for epoch in range(a.steps):
            params, opt_state = step(params, opt_state, epoch)
        out.update({f"{name}/{k}": np.asarray(v) for k, v in params.items()})
    text = steps["sharded"].lower(params0, opt.init(params0), 0).as_text()
    out["_devices"] = np.array(jax.device_count())
    out["_all_gathers"] = np.array(text.count("all_gather"))
    return out

