"""The digits MLP with eggroll.ES on a pool of Ray actors: each actor holds a replica and
evaluates chunks of the population; only fitness moves (the driver sends each actor the
fitness it has not applied, the actor sends back its chunk's fitness).

    python examples/distributed/ray_digits.py --actors 2
    python examples/distributed/ray_digits.py --actors 2 --smoke
    python examples/distributed/ray_digits.py --address auto     # an existing Ray cluster

Kill an actor while it runs (kill -9 on a `ray::_Actor` process): Ray restarts it, it
replays the fitness log to catch up, and its chunk is evaluated by another actor meanwhile;
the result is bit for bit that of an uninterrupted run. The driver appends every generation
to a fitness log (examples/out/ray_digits.fitlog).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "out"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=2, help="actors (one CPU each)")
    ap.add_argument("--chunks", type=int, default=None, help="chunks per generation")
    ap.add_argument("--address", default=None, help="an existing cluster (default: start one)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--population", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--straggler-timeout", type=float, default=30.0)
    ap.add_argument("--fitness-log", type=Path, default=OUT / "ray_digits.fitlog")
    ap.add_argument("--smoke", action="store_true", help="a few steps (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.population = 4, 32
    return args


class DigitsReplica:
    """What every actor (and the driver) holds: the ES, the data and the minibatch stream.
    Every replica draws the same minibatch for the same epoch (seeded by the epoch), so the
    data order is shared without sending data."""

    def __init__(self, population: int, batch: int, seed: int) -> None:
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        import eggroll
        from eggroll.demo import MLP
        X, y = load_digits(return_X_y=True)
        self.Xtr, self.Xte, self.ytr, self.yte = train_test_split(
            (X / 16.0).astype(np.float32), y, test_size=0.25, random_state=seed, stratify=y)
        self.es = eggroll.ES(MLP(64, 64, 10, np.random.default_rng(seed)).init, sigma=0.05,
                             lr=0.02, population=population, optimizer="adam", seed=seed)
        self.batch, self.seed = batch, seed

    # the Replica protocol (eggroll.distributed.ray.Replica)
    epoch = property(lambda self: self.es.epoch)
    population = property(lambda self: self.es.population)
    antithetic = property(lambda self: self.es.antithetic)

    def evaluate(self, members: range):
        import numpy as np

        from eggroll.demo import MLP, cross_entropy
        rng = np.random.default_rng([self.seed, self.es.epoch])   # this epoch's minibatch
        idx = rng.choice(len(self.Xtr), size=self.batch, replace=False)
        logits = MLP.population_logits(self.es.ask(members=members), self.Xtr[idx])
        return -cross_entropy(logits, self.ytr[idx])

    def tell(self, fitness):
        return self.es.tell(fitness)

    def digest(self) -> int:
        from eggroll.distributed import param_digest
        return param_digest(self.es.params.items())

    def test_accuracy(self) -> float:
        from eggroll.demo import MLP
        return float((MLP.logits(self.es.params, self.Xte).argmax(1) == self.yte).mean())


class Factory:
    def __init__(self, population: int, batch: int, seed: int) -> None:
        self.args = (population, batch, seed)

    def __call__(self) -> DigitsReplica:
        return DigitsReplica(*self.args)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import ray
        import sklearn  # noqa: F401
    except ImportError as e:
        print(f"needs ray and scikit-learn: pip install 'eggroll-hyperscale[ray]' scikit-learn ({e})",
              file=sys.stderr)
        return 2
    from eggroll.distributed import FitnessLog
    from eggroll.distributed.ray import RayPool

    if args.address:
        ray.init(address=args.address)
    else:   # a local pool; to keep it on the loopback interface see docs/distributed.md
        ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    args.fitness_log.parent.mkdir(parents=True, exist_ok=True)
    args.fitness_log.unlink(missing_ok=True)
    log = FitnessLog(args.fitness_log, population=args.population, sync_every=10)
    pool = RayPool(Factory(args.population, args.batch, args.seed), num_actors=args.actors,
                   chunks=args.chunks, straggler_timeout=args.straggler_timeout,
                   max_restarts=-1, log=log)
    print(f"Ray pool: {args.actors} actors, population {args.population} in chunks "
          f"{pool.plan.sizes}")
    t0 = time.perf_counter()
    for t in range(args.steps):
        stats = pool.step()
        if t % 50 == 0 or t == args.steps - 1:
            print(f"step {t:4d}  fitness mean {stats['fitness_mean']:.3f}  test acc "
                  f"{pool.replica.test_accuracy() * 100:.1f}%", flush=True)
    took = time.perf_counter() - t0
    print(f"{args.steps} steps in {took:.1f} s ({took / args.steps * 1e3:.1f} ms/step); pool "
          f"events {pool.stats}; fitness log {args.fitness_log}")
    log.close()
    pool.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
