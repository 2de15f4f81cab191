"""The digits MLP with eggroll.jax.ES across jax.distributed processes: each process evaluates
its block of the population (sharded over its local devices with shard_map inside jax.jit),
the fitness is all-gathered with multihost_utils.process_allgather, and every process applies
the same optax update.

    python examples/distributed/jax_digits.py --processes 2          # two local processes
    python examples/distributed/jax_digits.py --processes 2 --smoke
    # on hosts of a cluster, one command per host (process ids 0 .. n-1):
    python examples/distributed/jax_digits.py --coordinator HOST0:1234 --num-processes N \
        --process-id I

--processes N starts N processes on this machine (coordinator on 127.0.0.1, bound there
only). Every process uses the same seeds and the same minibatch order (docs/distributed.md).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=0,
                    help="start this many local processes (0: this is one process)")
    ap.add_argument("--coordinator", default="", help="HOST:PORT of process 0")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="ES steps (300; 4 with --smoke)")
    ap.add_argument("--population", type=int, default=None, help="members (512; 32 --smoke)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--smoke", action="store_true", help="a few steps, for the tests")
    args = ap.parse_args(argv)
    args.steps = args.steps or (4 if args.smoke else 300)
    args.population = args.population or (32 if args.smoke else 512)
    return args


def spawn(args: argparse.Namespace) -> int:
    """Start args.processes copies of this script on 127.0.0.1 and wait for them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [f"--steps={args.steps}", f"--population={args.population}", f"--seed={args.seed}",
            f"--batch={args.batch}", f"--sigma={args.sigma}", f"--lr={args.lr}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS=os.environ.get(
        "JAX_PLATFORMS", "cpu"))
    procs = [subprocess.Popen([sys.executable, __file__, *base, "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", str(args.processes),
                               "--process-id", str(i)], env=env)
             for i in range(args.processes)]
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.processes:
        return spawn(args)
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
        import optax
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        print(f"needs jax, optax and scikit-learn: pip install 'eggroll-hyperscale[jax]' scikit-learn "
              f"({e})", file=sys.stderr)
        return 2
    import eggroll.jax
    from eggroll.distributed.jax import DistributedES, sharded_fitness

    if args.num_processes > 1:
        local = args.coordinator.startswith("127.0.0.1:")
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id, initialization_timeout=120,
            coordinator_bind_address=args.coordinator if local else None)
    me = jax.process_index()
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=args.seed,
                                          stratify=y)
    rng = np.random.default_rng(args.seed)                 # the same init everywhere
    params = {"W1": jnp.asarray(rng.standard_normal((64, 64)) / 8.0, jnp.float32),
              "b1": jnp.zeros(64, jnp.float32),
              "W2": jnp.asarray(rng.standard_normal((10, 64)) / 8.0, jnp.float32),
              "b2": jnp.zeros(10, jnp.float32)}
    es = eggroll.jax.ES(params, sigma=args.sigma, population=args.population, seed=args.seed)
    opt = optax.adam(args.lr)
    des = DistributedES(es, params, digest_every=25)

    def fitness(pop, xb, yb):                                # -> [len(pop)]
        h = jnp.tanh(pop.linear("W1", xb, bias="b1", shared=True))   # xb for every member
        logp = jax.nn.log_softmax(pop.linear("W2", h, bias="b2"), axis=-1)
        return (logp * jax.nn.one_hot(yb, 10)).sum(-1).mean(-1)   # minus the cross-entropy

    mesh = jax.make_mesh((jax.local_device_count(),), ("pop",), devices=jax.local_devices())
    block_fitness = jax.jit(sharded_fitness(es, fitness, mesh, members=des.members))

    @jax.jit
    def update(params, opt_state, f, epoch):
        updates, opt_state = opt.update(es.gradient(params, f, epoch), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def accuracy(params, Xs, ys):
        h = jnp.tanh(Xs @ params["W1"].T + params["b1"])
        return jnp.mean(jnp.argmax(h @ params["W2"].T + params["b2"], axis=1) == ys)

    if me == 0:
        print(f"jax.distributed: {jax.process_count()} processes, population "
              f"{args.population}, members per process {des.plan.sizes}")
    opt_state = opt.init(params)
    batches = np.random.default_rng(args.seed + 1)           # the same minibatches everywhere
    t0 = time.perf_counter()
    for t in range(args.steps):
        idx = batches.choice(len(Xtr), size=args.batch, replace=False)
        f_block = block_fitness(params, t, Xtr[idx], ytr[idx])
        f = des.gather(f_block, params, t)                  # [population], all processes
        params, opt_state = update(params, opt_state, f, t)
        if me == 0 and (t % 50 == 0 or t == args.steps - 1):
            print(f"step {t:4d}  test acc {float(accuracy(params, Xte, yte)) * 100:.1f}%",
                  flush=True)
    took = time.perf_counter() - t0
    if me == 0:
        print(f"{args.steps} steps in {took:.1f} s ({took / args.steps * 1e3:.1f} ms/step, "
              "first compilation included)")
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
