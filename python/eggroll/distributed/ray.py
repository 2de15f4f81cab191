"""A Ray actor pool for any trainer: a driver plus actors that each hold a replica, with only
fitness crossing between them; crashed actors, restarted actors and stragglers handled.

    import ray, eggroll
    from eggroll.distributed.ray import ESReplica, RayPool

    def make():                                    # runs on the driver and in every actor
        es = eggroll.ES(init_params(), sigma=0.05, lr=0.02, population=512, seed=0)
        return ESReplica(es, fitness_of)           # fitness_of(pop) -> [len(pop)] fitness

    ray.init(num_cpus=2)
    pool = RayPool(make, num_actors=2, straggler_timeout=30.0)
    for _ in range(steps):
        stats = pool.step()                        # one generation
    params = pool.replica.es.params                # the driver's replica: the result

Each generation the population is cut into contiguous chunks (whole antithetic pairs). An idle
actor gets the next chunk together with the fitness of every generation it has not applied
yet (normally one: the last), replays them with tell() and evaluates its chunk; the driver
collects the chunks in member order, appends the fitness to the log and tells its own
replica. So:
- an actor that dies mid-generation (RayActorError) loses only its chunk, which goes to
  another actor; the final parameters are bit for bit those of an uninterrupted run;
- an actor Ray restarts (max_restarts) comes back from its factory (the initial state or a
  checkpoint it loads) and catches up by replaying the fitness log, never by receiving
  weights;
- a chunk still running after straggler_timeout seconds is given to an idle actor as well;
  whichever result comes first is used (both are the same bits).
Any framework works through a Replica: an object with epoch, evaluate(members) and tell.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import numpy as np

from .._trainer import check_int
from .digest import DivergenceError, param_digest
from .log import FitnessLog
from .plan import ShardPlan

__all__ = ["Replica", "ESReplica", "RayPool"]


class Replica(Protocol):
    """What an actor holds: a trainer that can evaluate a block and apply a generation."""

    @property
    def epoch(self) -> int: ...

    def evaluate(self, members: range) -> Any:
        """float32-convertible [len(members)] fitness of the block at the current epoch."""

    def tell(self, fitness: np.ndarray) -> Any:
        """Apply the population's fitness [N] (advances the epoch by one)."""

    def digest(self) -> int:
        """64-bit digest of the parameters (eggroll.distributed.param_digest)."""


class ESReplica:
    """A Replica around an eggroll.ES: fitness_fn(pop) -> [len(pop)] for es.ask(members=...).

    Wrap eggroll.torch.ES (with its optimiser) or a JAX step the same way: evaluate a block,
    tell the population's fitness (and step the optimiser), digest the parameters."""

    def __init__(self, es: Any, fitness_fn: Callable[[Any], Any]) -> None:
        self.es = es
        self.fitness_fn = fitness_fn

    @property
    def epoch(self) -> int:
        return self.es.epoch

    @property
    def population(self) -> int:
        return self.es.population

    @property
    def antithetic(self) -> bool:
        return self.es.antithetic

    def evaluate(self, members: range) -> Any:
        return self.fitness_fn(self.es.ask(members=members))

    def tell(self, fitness: np.ndarray) -> Any:
        return self.es.tell(fitness)

    def digest(self) -> int:
        return param_digest(self.es.params.items())


class _Actor:
    """The actor class (made remote lazily, so importing this module never needs ray)."""

    def __init__(self, factory: Callable[[], Any], threads: int) -> None:
        import os
        import eggroll
        eggroll.set_num_threads(threads)
        self.replica = factory()
        self.pid = os.getpid()

    def run(self, epoch: int, members: range, records: list[tuple[int, Any]],
            want_digest: bool) -> tuple[str, int, Any, Any]:
        """Replay records (epoch, fitness or its ObjectRef) up to `epoch`, evaluate `members`:
        ("ok", epoch, fitness, digest), or ("behind", its epoch, None, None) when records do
        not reach back to it."""
        import ray
        for e, f in records:
            if e == self.replica.epoch:
                self.replica.tell(ray.get(f) if isinstance(f, ray.ObjectRef) else f)
        if self.replica.epoch != epoch:
            return "behind", int(self.replica.epoch), None, None
        digest = self.replica.digest() if want_digest else None
        f = np.asarray(self.replica.evaluate(members), dtype=np.float32)
        return "ok", epoch, f, digest

    def where(self) -> tuple[int, int]:
        return self.pid, int(self.replica.epoch)


class RayPool:
    """One population over a pool of Ray actors (docs/distributed.md).

    factory: () -> Replica, picklable (Ray sends it to every actor); called once on the
      driver (pool.replica, which the pool tells each generation: the result) and in every
      actor start or restart.
    num_actors: actors to start (each num_cpus=1, `threads` core threads).
    chunks: pieces the population is cut into per generation (default: num_actors; more
      gives finer load balancing and re-assignment); whole antithetic pairs each.
    straggler_timeout: seconds after which a running chunk is also given to an idle actor
      (None: never). max_restarts: how often Ray restarts a dead actor (-1: always).
    digest_every: compare each actor's parameter digest with the driver's every k
      generations (DivergenceError naming the actor). log: a FitnessLog to append to.
    """

    def __init__(self, factory: Callable[[], Any], *, num_actors: int = 2,
                 chunks: int | None = None, straggler_timeout: float | None = None,
                 max_restarts: int = 1, digest_every: int = 10, threads: int = 1,
                 log: FitnessLog | None = None, actor_options: dict | None = None) -> None:
        import ray
        if not callable(factory):
            raise TypeError(f"factory: expected a callable () -> Replica, got "
                            f"{type(factory).__name__}")
        self.num_actors = check_int(num_actors, "num_actors", 1, 1 << 16)
        n_chunks = self.num_actors if chunks is None else check_int(chunks, "chunks", 1,
                                                                     1 << 20)
        if straggler_timeout is not None and not straggler_timeout > 0:
            raise ValueError(f"straggler_timeout: must be > 0 or None, got {straggler_timeout}")
        self.straggler_timeout = straggler_timeout
        self.digest_every = check_int(digest_every, "digest_every", 0, 1 << 30)
        self.replica = factory()
        for attr in ("epoch", "evaluate", "tell", "digest", "population", "antithetic"):
            if not hasattr(self.replica, attr):
                raise TypeError(f"factory: its replica has no {attr!r} (see "
                                "eggroll.distributed.ray.Replica)")
        self.plan = ShardPlan(self.replica.population, n_chunks,
                              antithetic=self.replica.antithetic)
        self.log = log
        if log is not None and log.population != self.replica.population:
            raise ValueError(f"log: holds population {log.population}, the replica has "
                             f"{self.replica.population}")
        # epoch -> the fitness in Ray's object store (put once: every actor on a node then
        # reads the same copy), for catching up
        self._history: dict[int, Any] = {}
        if not ray.is_initialized():
            raise RuntimeError("ray is not initialised: call ray.init(...) first")
        remote = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=0)(_Actor)
        opts = dict(actor_options or {})
        self._actors = [remote.options(**opts).remote(factory, threads)
                        for _ in range(self.num_actors)]
        # actor -> the epoch it is known to be at (None: unknown, e.g. after a crash)
        self._known: list[int | None] = [int(self.replica.epoch)] * self.num_actors
        self._dead = [False] * self.num_actors
        self._abandoned: list[Any] = []                 # refs of superseded duplicates
        self.stats = {"reassigned": 0, "duplicated": 0, "catch_up_records": 0,
                      "actor_errors": 0}

    # -- catching up: the fitness of every generation an actor has not applied --------------

    def _records(self, since: int | None, epoch: int) -> list[tuple[int, Any]]:
        import ray
        lo = epoch - 1 if since is None else since      # unknown: optimistic, "behind" corrects
        out = []
        for e in range(max(lo, 0), epoch):
            f = self._history.get(e)
            if f is None and self.log is not None and self.log.first_epoch is not None \
                    and self.log.first_epoch <= e < self.log.next_epoch:
                f = ray.put(self.log.fitness(e))        # older generations: from the log
            if f is None:
                raise RuntimeError(f"an actor needs the fitness of epoch {e} to catch up, but "
                                   "neither the pool's memory nor its log holds it; give its "
                                   "factory a newer checkpoint or the pool a FitnessLog")
            out.append((e, f))
        return out

    def _submit(self, a: int, chunk: int, epoch: int, want_digest: bool) -> Any:
        records = self._records(self._known[a], epoch)
        self.stats["catch_up_records"] += max(len(records) - 1, 0)
        return self._actors[a].run.remote(epoch, self.plan.blocks[chunk], records, want_digest)

    # -- one generation --------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """Evaluate the current epoch over the pool, tell the driver's replica (and log).
        Returns the replica's tell() statistics (a dict, or {} when it returns none)."""
        import ray
        from ray.exceptions import RayActorError
        epoch = int(self.replica.epoch)
        want_digest = bool(self.digest_every) and epoch % self.digest_every == 0
        own_digest = self.replica.digest() if want_digest else None
        n = len(self.plan.blocks)
        results: list[Any] = [None] * n
        todo = list(range(n))                            # chunks no actor is running
        running: dict[Any, tuple[int, int, float]] = {}  # ref -> (chunk, actor, start time)

        def owners(c: int) -> int:
            return sum(1 for k, _, _ in running.values() if k == c)
        while any(r is None for r in results):
            self._prune_abandoned()
            busy = {a for _, a, _ in running.values()} | {a for _, a in self._abandoned}
            idle = [a for a in range(self.num_actors) if not self._dead[a] and a not in busy]
            if all(self._dead):
                raise RuntimeError("every actor of the pool is dead (max_restarts exhausted)")
            while todo and idle:
                a, c = idle.pop(0), todo.pop(0)
                running[self._submit(a, c, epoch, want_digest)] = (c, a, time.monotonic())
            if self.straggler_timeout is not None and idle:
                now = time.monotonic()
                for c, _, t0 in list(running.values()):
                    if idle and owners(c) == 1 and now - t0 > self.straggler_timeout:
                        b = idle.pop(0)
                        running[self._submit(b, c, epoch, want_digest)] = (c, b, now)
                        self.stats["duplicated"] += 1
            wait = 1.0 if self.straggler_timeout is None else min(1.0, self.straggler_timeout / 4)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
            for ref in ready:
                c, a, _ = running.pop(ref)
                try:
                    status, at, f, digest = ray.get(ref)
                except RayActorError:
                    self.stats["actor_errors"] += 1
                    self._known[a] = None                # restarted (or dead): ask it
                    self._dead[a] = not self._alive(a)
                    status, at = "lost", None
                if status != "ok":
                    if status == "behind" and at > epoch:
                        raise RuntimeError(f"actor {a} is at epoch {at}, ahead of the driver's "
                                           f"replica ({epoch}): its factory must build the "
                                           "driver's starting state or an older one")
                    if status == "behind":
                        self._known[a] = at
                    if results[c] is None and owners(c) == 0:
                        todo.insert(0, c)                # its members go to the next idle actor
                        self.stats["reassigned"] += status == "lost"
                    continue
                self._known[a] = epoch
                if digest is not None and digest != own_digest:
                    raise DivergenceError(f"actor {a}'s parameters differ from the driver's at "
                                          f"epoch {epoch} (digest {digest:#018x} vs "
                                          f"{own_digest:#018x}): its replica applied another "
                                          "update (another library version or device?)")
                if results[c] is None:
                    results[c] = self._check_block(f, c)
                for other, (k, b, _) in list(running.items()):
                    if k == c:                           # a duplicate no longer needed
                        self._abandoned.append((other, b))
                        running.pop(other)
        fitness = np.concatenate(results).astype(np.float32)
        self._history[epoch] = ray.put(fitness)
        if self.log is not None:                         # older generations: read from the log
            self.log.append(epoch, fitness)
            self._history.pop(epoch - 2, None)
        stats = self.replica.tell(fitness)
        return dict(stats) if isinstance(stats, dict) else {}

    def _prune_abandoned(self) -> None:
        """Forget superseded duplicates that finished; one that died counts as an actor error
        (its actor restarts from its factory and will say it is behind)."""
        import ray
        from ray.exceptions import RayActorError
        keep = []
        for ref, a in self._abandoned:
            if not ray.wait([ref], timeout=0)[0]:
                keep.append((ref, a))
                continue
            try:
                ray.get(ref)
            except RayActorError:
                self.stats["actor_errors"] += 1
                self._known[a] = None
                self._dead[a] = not self._alive(a)
        self._abandoned = keep

    def _alive(self, a: int, patience: float = 60.0) -> bool:
        """Whether actor a answers within `patience` seconds. A call submitted in the moment
        between its death and Ray's restart fails at once (the task is not retried), so a
        failure is retried until the deadline; only silence for that long means it is gone."""
        import ray
        deadline = time.monotonic() + patience
        while True:
            try:
                ray.get(self._actors[a].where.remote(),
                        timeout=max(deadline - time.monotonic(), 0.1))
                return True
            except Exception:  # noqa: BLE001 - any failure to answer: ask again until the deadline
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.2)

    def _check_block(self, f: Any, c: int) -> np.ndarray:
        block = self.plan.blocks[c]
        arr = np.asarray(f, dtype=np.float32)
        if arr.shape != (len(block),):
            raise ValueError(f"evaluate: returned shape {arr.shape} for the block {block}; "
                             f"expected ({len(block)},)")
        return arr

    def shutdown(self) -> None:
        """Kill the pool's actors (the Ray runtime stays up)."""
        import ray
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []

    def __repr__(self) -> str:
        return (f"RayPool(actors={self.num_actors}, chunks={len(self.plan.blocks)}, "
                f"epoch={self.replica.epoch})")
