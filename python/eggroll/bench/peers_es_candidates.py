"""The contenders of the ES peer benchmark (peers_es.py): one ES generation on the same task,
written the way each library's users write it.

Task (peers_es.Task): MLP 64 -> width (tanh) -> 10 on scikit-learn's digits, population P,
a minibatch of b rows per member (shared: one [b, 64] batch for the whole population;
per-member: x [P, b, 64]), fitness = minus the mean cross-entropy of a member on its rows,
centered-rank shaping, Adam, antithetic pairs, the same initial weights and sigma for all.

    eggroll-numpy   eggroll.ES (NumPy arrays): for sub in es.ask().chunks(k): pop.linear per
                    layer, eggroll.fitness.cross_entropy into f[sub.rows]; tell
    eggroll-torch   eggroll.torch.ES on nn.Sequential: with es.ask() as pop, for sub in
                    pop.chunks(k): model(x), eggroll.fitness.cross_entropy; tell, Adam
    eggroll-jax     eggroll.jax.ES: ask / map_chunks(linear, cross_entropy) / gradient +
                    optax.adam, one jitted step
    (k = eggroll.chunk_size(b * width): the chunked evaluation docs/trainer.md recommends)
    jax-idiom       the official EGGROLL code's way: a per-member forward regenerating rank-r
                    factors from fold_in(fold_in(key, epoch), i // 2), jax.vmap'ped over the
                    members with the minibatch unbatched (shared) so XLA computes x W^T
                    once; the update regenerates the factors and einsums them; optax.adam
    evosax          evosax's Open_ES (full-rank OpenAI-ES) on the parameter pytree, the
                    population's forward jax.vmap'ped; optax.adam inside the strategy
    evotorch        EvoTorch's PGPE on a vectorised Problem (all members' flat parameter
                    vectors [P, D] in one call), Adam, centered ranking, symmetric sampling

Each candidate: Candidate(task) (the eggroll ones also take chunk=k) builds its trainer from task.init; batch(xb, yb) converts a
NumPy minibatch into its framework (not timed); step(batch) runs one generation and returns
once the work is done; params() returns the mean model as NumPy arrays for the (shared,
NumPy) accuracy check. `notes` says what the candidate does that the others do not.
Frameworks are imported inside the candidates, so a missing one only removes its rows.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

NAMES = ("eggroll-numpy", "eggroll-torch", "eggroll-jax", "jax-idiom", "evosax", "evotorch")
# module(s) each candidate needs (beyond numpy and eggroll)
NEEDS = {"eggroll-numpy": (), "eggroll-torch": ("torch",),
         "eggroll-jax": ("jax", "optax", "eggroll._xla_ffi"), "jax-idiom": ("jax", "optax"),
         "evosax": ("evosax", "jax", "optax"), "evotorch": ("evotorch", "torch")}


class Candidate:
    name = "?"
    notes = ""

    def __init__(self, task: Any) -> None:
        self.task = task

    def batch(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        return xb, yb

    def step(self, batch: Any) -> None:
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- eggroll

class EggrollNumpy(Candidate):
    name = "eggroll-numpy"

    def __init__(self, task: Any, chunk: int | None = None) -> None:
        super().__init__(task)
        import eggroll
        self.es = eggroll.ES(dict(task.init), sigma=task.sigma, lr=task.lr,
                             population=task.population, rank=task.rank, optimizer="adam",
                             shaping="centered_rank", seed=task.seed)
        self.chunk = chunk or eggroll.chunk_size(task.batch * task.width)
        self.notes = f"chunks of {self.chunk} members" + (
            "; shared batch passed once (x [b, n])" if task.shared else "")

    def step(self, batch: Any) -> None:
        import eggroll.fitness
        xb, yb = batch
        shared = self.task.shared
        f = np.empty(self.task.population, np.float32)
        for sub in self.es.ask().chunks(self.chunk):
            x = xb if shared else xb[sub.rows]
            h = sub.linear("W1", x, bias="b1", shared=shared)          # [chunk, b, width]
            np.tanh(h, out=h)
            logits = sub.linear("W2", h, bias="b2")                      # [chunk, b, 10]
            f[sub.rows] = -eggroll.fitness.cross_entropy(logits, yb if shared else yb[sub.rows])
        self.es.tell(f)

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.es.params.items()}


class EggrollTorch(Candidate):
    name = "eggroll-torch"

    def __init__(self, task: Any, chunk: int | None = None) -> None:
        super().__init__(task)
        import torch
        from torch import nn

        import eggroll.torch
        self.torch = torch
        self.model = nn.Sequential(nn.Linear(task.n_in, task.width), nn.Tanh(),
                                   nn.Linear(task.width, task.n_out))
        with torch.no_grad():
            for i, (w, b) in ((0, ("W1", "b1")), (2, ("W2", "b2"))):
                self.model[i].weight.copy_(torch.from_numpy(task.init[w]))
                self.model[i].bias.copy_(torch.from_numpy(task.init[b]))
        self.es = eggroll.torch.ES(self.model, sigma=task.sigma, population=task.population,
                                   rank=task.rank, seed=task.seed, shaping="centered_rank")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=task.lr)
        self.chunk = chunk or eggroll.chunk_size(task.batch * task.width)
        self.notes = f"chunks of {self.chunk} members" + (
            "; shared batch as x.expand(chunk, b, n)" if task.shared else "")

    def batch(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        t = self.torch
        return t.from_numpy(xb), t.from_numpy(yb.astype(np.int64))

    def step(self, batch: Any) -> None:
        import eggroll.fitness
        torch, task = self.torch, self.task
        xb, yb = batch
        f = torch.empty(task.population)
        with self.es.ask() as pop:
            for sub in pop.chunks(self.chunk):
                k = len(sub)
                x = xb.expand(k, *xb.shape) if task.shared else xb[sub.rows]    # [k, b, n]
                logits = self.model(x)                                         # [k, b, 10]
                f[sub.rows] = -eggroll.fitness.cross_entropy(
                    logits, yb if task.shared else yb[sub.rows])
        self.es.tell(f)
        self.opt.step()

    def params(self) -> dict[str, np.ndarray]:
        m = self.model
        return {"W1": m[0].weight.detach().numpy().copy(), "b1": m[0].bias.detach().numpy().copy(),
                "W2": m[2].weight.detach().numpy().copy(), "b2": m[2].bias.detach().numpy().copy()}


def _jax_cross_entropy(logits: Any, labels: Any) -> Any:
    """logits [P, b, 10], labels [b] or [P, b] -> [P]."""
    import jax
    import jax.numpy as jnp
    logp = jax.nn.log_softmax(logits, axis=-1)
    lab = jnp.broadcast_to(labels, logits.shape[:-1])
    return -jnp.take_along_axis(logp, lab[..., None], axis=-1)[..., 0].mean(axis=-1)


class _JaxCandidate(Candidate):
    """Shared plumbing: parameters as a dict pytree, one jitted step, block until done."""

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        self.state: Any = None
        self.epoch = 0

    def batch(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        return self.jnp.asarray(xb), self.jnp.asarray(yb.astype(np.int32))

    def step(self, batch: Any) -> None:
        """self.state = (params, opt_state) through the jitted step(params, opt_state,
        epoch, xb, yb)."""
        self.state = self._step(*self.state, self.jnp.int32(self.epoch), *batch)
        self.jax.block_until_ready(self.state)
        self.epoch += 1

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.state[0].items()}


class EggrollJax(_JaxCandidate):
    name = "eggroll-jax"

    def __init__(self, task: Any, chunk: int | None = None) -> None:
        super().__init__(task)
        import optax

        import eggroll
        import eggroll.jax
        jax, jnp = self.jax, self.jnp
        params = {k: jnp.asarray(v) for k, v in task.init.items()}
        es = eggroll.jax.ES(params, sigma=task.sigma, population=task.population,
                            rank=task.rank, seed=task.seed, shaping="centered_rank")
        opt = optax.adam(task.lr)
        self.chunk = chunk or eggroll.chunk_size(task.batch * task.width)
        self.notes = f"chunks of {self.chunk} members (map_chunks)" + (
            "; shared batch passed once (x [b, n])" if task.shared else "")

        def step(params: Any, opt_state: Any, epoch: Any, xb: Any, yb: Any) -> Any:
            pop = es.ask(params, epoch)

            def chunk(sub: Any, *rows: Any) -> Any:
                x, y = (xb, yb) if task.shared else rows
                h = jnp.tanh(sub.linear("W1", x, bias="b1", shared=task.shared))
                return -eggroll.fitness.cross_entropy(sub.linear("W2", h, bias="b2"), y)

            fitness = pop.map_chunks(chunk, *(() if task.shared else (xb, yb)),
                                     size=self.chunk)
            grads = es.gradient(params, fitness, epoch)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        self._step = jax.jit(step)
        self.state = (params, opt.init(params))


class JaxIdiom(_JaxCandidate):
    name = "jax-idiom"

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        import optax
        jax, jnp = self.jax, self.jnp
        P, r, sigma = task.population, task.rank, task.sigma
        names = ("W1", "b1", "W2", "b2")
        base = jax.random.split(jax.random.key(task.seed), len(names))
        keys = dict(zip(names, base))                  # one key per parameter leaf
        members = jnp.arange(P)
        self.notes = ("vmap over members, batch unbatched: x W^T computed once"
                      if task.shared else "vmap over members and their batches")

        def thread_key(name: str, epoch: Any, i: Any) -> Any:
            return jax.random.fold_in(jax.random.fold_in(keys[name], epoch), i // 2)

        def sign(i: Any) -> Any:
            return jnp.where(i % 2 == 0, 1.0, -1.0).astype(jnp.float32)

        def factors(name: str, shape: tuple[int, int], epoch: Any, i: Any) -> Any:
            m, n = shape
            L = jax.random.normal(thread_key(name, epoch, i), (m + n, r), jnp.float32)
            return L[n:] * (sign(i) * sigma / math.sqrt(r)), L[:n]      # A [m, r], B [n, r]

        def vec_noise(name: str, size: int, epoch: Any, i: Any) -> Any:
            return sign(i) * sigma * jax.random.normal(thread_key(name, epoch, i), (size,),
                                                       jnp.float32)

        def linear(p: Any, w: str, b: str, x: Any, epoch: Any, i: Any) -> Any:
            A, B = factors(w, p[w].shape, epoch, i)
            return x @ p[w].T + (x @ B) @ A.T + p[b] + vec_noise(b, p[b].shape[0], epoch, i)

        def member(p: Any, x: Any, i: Any, epoch: Any) -> Any:
            h = jnp.tanh(linear(p, "W1", "b1", x, epoch, i))
            return linear(p, "W2", "b2", h, epoch, i)                       # [b, 10]

        forward = jax.vmap(member, in_axes=(None, None if task.shared else 0, 0, None))
        opt = optax.adam(task.lr)

        def centered_rank(f: Any) -> Any:
            ranks = jnp.argsort(jnp.argsort(f)).astype(jnp.float32)
            return ranks / (f.shape[0] - 1) - 0.5

        def gradient(p: Any, f: Any, epoch: Any) -> Any:
            g = {}
            for w in ("W1", "W2"):
                A, B = jax.vmap(lambda i, w=w: factors(w, p[w].shape, epoch, i))(members)
                g[w] = jnp.einsum("n,nir,njr->ij", f, A, B) / P          # [m, n]
            for b in ("b1", "b2"):
                eps = jax.vmap(lambda i, b=b: vec_noise(b, p[b].shape[0], epoch, i))(members)
                g[b] = f @ eps / P
            # the official code hands optax -sqrt(N) G (Adam does not see the scale)
            return jax.tree_util.tree_map(lambda v: -math.sqrt(P) * v, g)

        def step(p: Any, opt_state: Any, epoch: Any, xb: Any, yb: Any) -> Any:
            logits = forward(p, xb, members, epoch)                      # [P, b, 10]
            f = centered_rank(-_jax_cross_entropy(logits, yb))
            updates, opt_state = opt.update(gradient(p, f, epoch), opt_state, p)
            return optax.apply_updates(p, updates), opt_state

        self._step = jax.jit(step)
        params = {k: jnp.asarray(v) for k, v in task.init.items()}
        self.state = (params, opt.init(params))



class Evosax(_JaxCandidate):
    name = "evosax"
    notes = "full-rank OpenAI-ES (materialised [P, D] population)"

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        import optax
        from evosax.algorithms import Open_ES
        jax, jnp = self.jax, self.jnp
        init = {k: jnp.asarray(v) for k, v in task.init.items()}
        es = Open_ES(population_size=task.population, solution=init,
                     optimizer=optax.adam(task.lr),
                     std_schedule=optax.constant_schedule(task.sigma))
        es_params = es.default_params

        def member(p: Any, x: Any) -> Any:
            h = jnp.tanh(x @ p["W1"].T + p["b1"])
            return h @ p["W2"].T + p["b2"]                              # [b, 10]

        forward = jax.vmap(member, in_axes=(0, None if task.shared else 0))

        def step(state: Any, key: Any, xb: Any, yb: Any) -> Any:
            k_ask, k_tell = jax.random.split(key)
            pop, state = es.ask(k_ask, state, es_params)
            loss = _jax_cross_entropy(forward(pop, xb), yb)             # minimised
            state, _ = es.tell(k_tell, pop, loss, state, es_params)
            return state

        self._es = es
        self._step = jax.jit(step)
        self._key = jax.random.key(task.seed)
        self.state = es.init(jax.random.key(task.seed + 1), init, es_params)

    def step(self, batch: Any) -> None:
        self.state = self._step(self.state, self.jax.random.fold_in(self._key, self.epoch),
                                *batch)
        self.jax.block_until_ready(self.state)
        self.epoch += 1

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._es.get_mean(self.state).items()}


class EvoTorch(Candidate):
    name = "evotorch"
    notes = "PGPE, vectorised problem (materialised [P, D] population)"

    def __init__(self, task: Any) -> None:
        super().__init__(task)
        import logging
        import warnings

        import torch
        with warnings.catch_warnings():      # evotorch 0.6 calls torch.jit.script on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from evotorch import Problem
            from evotorch.algorithms import PGPE
        logging.getLogger("evotorch").setLevel(logging.WARNING)    # no INFO lines per run
        self.torch = torch
        w, n, o = task.width, task.n_in, task.n_out
        self.shapes = (("W1", (w, n)), ("b1", (w,)), ("W2", (o, w)), ("b2", (o,)))
        center = np.concatenate([task.init[k].ravel() for k, _ in self.shapes])
        self.current: Any = None

        def unflatten(xs: Any) -> dict[str, Any]:           # xs [P, D] -> views per leaf
            out, at = {}, 0
            for k, shape in self.shapes:
                size = math.prod(shape)
                out[k] = xs[:, at:at + size].reshape(xs.shape[0], *shape)
                at += size
            return out

        def loss(xs: Any) -> Any:                            # [P, D] -> [P], minimised
            xb, yb = self.current
            p = unflatten(xs)
            P = xs.shape[0]
            x = xb.expand(P, *xb.shape) if task.shared else xb             # [P, b, n]
            h = torch.tanh(torch.baddbmm(p["b1"][:, None, :], x, p["W1"].transpose(1, 2)))
            logits = torch.baddbmm(p["b2"][:, None, :], h, p["W2"].transpose(1, 2))
            labels = yb.expand(P, task.batch) if task.shared else yb
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, o), labels.reshape(-1),
                                                   reduction="none")
            return ce.reshape(P, task.batch).mean(dim=1)

        self.unflatten = unflatten
        problem = Problem("min", loss, solution_length=center.size, initial_bounds=(-1, 1),
                          vectorized=True, dtype=torch.float32, seed=task.seed)
        self.searcher = PGPE(problem, popsize=task.population,
                             center_learning_rate=task.lr, stdev_learning_rate=0.1,
                             stdev_init=task.sigma, optimizer="adam",
                             ranking_method="centered", center_init=torch.from_numpy(center),
                             symmetric=True)

    def batch(self, xb: np.ndarray, yb: np.ndarray) -> Any:
        t = self.torch
        return t.from_numpy(xb), t.from_numpy(yb.astype(np.int64))

    def step(self, batch: Any) -> None:
        self.current = batch
        self.searcher.step()

    def params(self) -> dict[str, np.ndarray]:
        flat = self.torch.as_tensor(self.searcher.status["center"]).detach().clone()
        p = self.unflatten(flat[None])
        return {k: v[0].detach().cpu().numpy().copy() for k, v in p.items()}


CLASSES = {c.name: c for c in (EggrollNumpy, EggrollTorch, EggrollJax, JaxIdiom, Evosax,
                               EvoTorch)}
