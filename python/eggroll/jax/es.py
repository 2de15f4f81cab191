"""eggroll.jax.ES: evolution strategies over a JAX parameter pytree, with optax.

One fully jittable step (docs/jax.md)::

    es = eggroll.jax.ES(params, sigma=0.05, population=512)
    opt = optax.adam(0.02)

    @jax.jit
    def step(params, opt_state, epoch, xb, yb):
        pop = es.ask(params, epoch)                       # epoch may be traced
        h = jnp.tanh(pop.linear("W1", xb, bias="b1", shared=True))  # xb [b, n]: every member's
        fitness = -loss(pop.linear("W2", h, bias="b2"), yb)  # [N], higher is better
        grads = es.gradient(params, fitness, epoch)         # a pytree like params
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

Leaves are named by their pytree path ("W1", "enc/0/kernel", ...; ``leaf_name``), and each
name's ``param_id`` is eggroll.es.param_id(name) — the same blake2b rule as eggroll.ES, so a
flat dict gets the same noise (and the same estimates) in both trainers. 2-D leaves W [m, n]
(applied as x @ W.T) are perturbed low rank, every other leaf full rank; ``exclude`` names
leaves that are used unperturbed and get a zero gradient.

``gradient`` returns what optax expects: the gradient of a loss to *minimise*, i.e. minus
the ES ascent estimate g = (1/(N sigma)) sum_i f_i E_i of eggroll.es_gradient.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .._trainer import (UINT32_MAX, UINT64_MAX, check_bool, check_float, check_int,
                        check_member_block, param_id)
from ._ops import (antithetic_sign, centered_rank, es_gradient, perturb_vector, perturbed_matmul,
               zscore)

__all__ = ["ES", "Population", "param_id", "leaf_name"]

SHAPINGS = ("centered_rank", "zscore", "antithetic_sign", None)


def leaf_name(path: tuple) -> str:
    """A leaf's name from its pytree key path: dict keys, attribute names and sequence
    indices joined by "/" ({"enc": [{"W": ...}]} -> "enc/0/W")."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:  # pragma: no cover - custom key types
            parts.append(str(k))
    return "/".join(parts)


def _member_block(members: Any, population: int) -> jax.Array:
    """int32 [M] member indices from None (all), a range block or an integer array [M]."""
    if members is None or isinstance(members, range):
        block = check_member_block(members, population)
        return jnp.arange(block.start, block.stop, dtype=jnp.int32)
    m = members if isinstance(members, jax.Array) else np.asarray(members)
    if m.ndim != 1 or m.shape[0] == 0 or not jnp.issubdtype(m.dtype, jnp.integer):
        raise ValueError(f"members: expected None, a range or a non-empty 1-D integer array, "
                         f"got {getattr(m, 'dtype', type(m).__name__)} of shape "
                         f"{tuple(m.shape)}")
    return jnp.asarray(m)


def _named_leaves(params: Any) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [leaf_name(p) for p, _ in flat], [v for _, v in flat], treedef


class Population:
    """The population of one epoch: evaluates every member at once ([N, ...] arrays).

    Built by ES.ask inside or outside jit; holds the (possibly traced) params, epoch and
    member indices. Member i's parameters are p + E_i with the noise keyed by (seed,
    param_id(name), epoch // noise_reuse, i // 2). Row j of every input and output is member
    members[j] (all N members by default; a block with ES.ask(..., members=...))."""

    def __init__(self, es: ES, params: Any, epoch: Any, members: Any = None) -> None:
        names, leaves, _ = _named_leaves(params)
        if names != es.names:
            raise ValueError(f"params: expected the leaves {es.names}, got {names}")
        self._es = es
        self._leaves = dict(zip(names, leaves))
        self.epoch = epoch
        self.members = _member_block(members, es.population)   # int [M], maybe traced

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def _key(self, name: str) -> dict[str, Any]:
        es = self._es
        return dict(epoch=self.epoch, seed=es.seed, param_id=es.param_ids[name], sigma=es.sigma,
                    noise_reuse=es.noise_reuse, antithetic=es.antithetic)

    def _leaf(self, name: Any, arg: str) -> Any:
        if not isinstance(name, str):
            raise TypeError(f"{arg}: expected a leaf name (str), got {type(name).__name__}")
        if name not in self._leaves:
            raise ValueError(f"{arg}: no leaf named {name!r}; leaves: {self._es.names}")
        return self._leaves[name]

    def param(self, name: str) -> jax.Array:
        """The leaf as it is (the mean model's value)."""
        return self._leaf(name, "name")

    def linear(self, name: str, x: Any, bias: str | None = None, *,
               shared: bool = False) -> jax.Array:
        """x [M, n] | [M, b, n] -> [M, m] | [M, b, m] (M = len(self), N by default): row j is
        member i = members[j]'s x_j @ (W + E_i).T (+ its perturbed bias [m]). shared=True:
        x [n] | [b, n] is every member's input (x @ W.T computed once; the same bits as
        jnp.broadcast_to(x, (M,) + x.shape), docs/ops.md "Shared inputs")."""
        W = self._leaf(name, "name")
        if W.ndim != 2:
            raise ValueError(f"name: linear needs a 2-D leaf [m, n], {name!r} has shape "
                             f"{tuple(W.shape)}")
        N = len(self)
        if shared:
            if jnp.ndim(x) not in (1, 2):
                raise ValueError(f"x: a shared input is [n] or [b, n], got shape "
                                 f"{tuple(jnp.shape(x))}")
        elif jnp.ndim(x) not in (2, 3) or jnp.shape(x)[0] != N:
            raise ValueError(f"x: expected [{N}, n] or [{N}, b, n] (one leading row per "
                             f"member; shared=True takes one input for every member), got "
                             f"shape {tuple(jnp.shape(x))}")
        if name in self._es.exclude and shared:
            y0 = perturbed_matmul(x, W, members=None, shared=True, **self._key(name))
            y = jnp.broadcast_to(y0, (N,) + y0.shape)
        else:
            y = perturbed_matmul(x, W, members=None if name in self._es.exclude
                                 else self.members, rank=self._es.rank, shared=shared,
                                 **self._key(name))
        if bias is not None:
            bv = self.vector(bias)                      # [N, m]
            if bv.ndim != 2 or bv.shape[1] != y.shape[-1]:
                raise ValueError(f"bias: expected a [{y.shape[-1]}] leaf, {bias!r} has shape "
                                 f"{tuple(self._leaves[bias].shape)}")
            y = y + (bv if y.ndim == 2 else bv[:, None, :])
        return y

    def map_chunks(self, fn: Callable[..., Any], *xs: Any, size: int) -> Any:
        """fn over the members in consecutive chunks of `size`, one chunk at a time
        (jax.lax.map): the [size, b, width] activations of a chunk stay in cache instead of
        the whole population's going through memory (docs/jax.md "Evaluating in chunks")::

            def chunk(sub, xc, yc):          # sub: the chunk's Population; xc, yc: its rows
                h = jnp.tanh(sub.linear("W1", xb, bias="b1", shared=True))
                return -loss(sub.linear("W2", h, bias="b2"), yc)     # [size]
            fitness = pop.map_chunks(chunk, x, y, size=16)          # [M]

        xs: per-member arrays [M, ...] (M = len(self)), split along axis 0 (shared data is
        closed over by fn instead). fn returns a pytree of arrays [size, ...] (one row per
        member); the result stacks them: [M, ...]. A member's rows are bit for bit those of
        the undivided population. A last chunk of M % size members runs once after the map."""
        size = check_int(size, "size", 1, 1 << 31)
        if not callable(fn):
            raise TypeError(f"fn: expected a callable (sub, *xs_chunk) -> [size, ...], got "
                            f"{type(fn).__name__}")
        M = len(self)
        for j, x in enumerate(xs):
            if jnp.ndim(x) < 1 or jnp.shape(x)[0] != M:
                raise ValueError(f"xs[{j}]: expected a per-member array [{M}, ...], got shape "
                                 f"{tuple(jnp.shape(x))} (close over shared data in fn)")
        size = min(size, M)
        n, tail = divmod(M, size)

        def run(members: Any, *xc: Any) -> Any:
            sub = Population.__new__(Population)
            sub._es, sub._leaves, sub.epoch, sub.members = (self._es, self._leaves,
                                                            self.epoch, members)
            out = fn(sub, *xc)
            k = members.shape[0]
            for leaf in jax.tree_util.tree_leaves(out):
                if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != k:
                    raise ValueError(f"fn: must return arrays with one leading row per member "
                                     f"[{k}, ...], got shape {tuple(jnp.shape(leaf))}")
            return out

        def split(a: Any) -> Any:
            return jnp.reshape(a[:n * size], (n, size) + tuple(jnp.shape(a)[1:]))

        mem = split(self.members)
        if n == 1:
            out = jax.tree_util.tree_map(lambda a: a[None], run(mem[0], *(x[:size] for x in xs)))
        else:
            out = jax.lax.map(lambda args: run(*args), (mem, *(split(x) for x in xs)))
        out = jax.tree_util.tree_map(lambda a: jnp.reshape(a, (n * size,) + a.shape[2:]), out)
        if tail:
            rest = run(self.members[n * size:], *(x[n * size:] for x in xs))
            out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)
        return out

    def vector(self, name: str) -> jax.Array:
        """Any leaf p (full-rank perturbation) -> [M, *p.shape]: row j is p + s_i sigma
        z_k[0:p.size] of member i = members[j]."""
        p = self._leaf(name, "name")
        N = len(self)
        if name in self._es.exclude:
            return jnp.broadcast_to(p, (N,) + p.shape)
        flat = perturb_vector(jnp.ravel(p), members=self.members, **self._key(name))
        return flat.reshape((N,) + p.shape)


class ES:
    """ES over the leaves of a parameter pytree; gradients for any optax optimiser.

    params: pytree of float arrays (its structure and shapes are fixed here).
    sigma: float > 0 (static: it is an attribute of the compiled step).
    population: N >= 1 (even with antithetic=True). rank: r of the 2-D leaves' perturbation.
    shaping: "centered_rank" | "zscore" | "antithetic_sign" | None; group_size for zscore.
    exclude: leaf names (see leaf_name) or a predicate name -> bool: used unperturbed, zero
    gradient. full_rank: 2-D leaves estimated full rank too (OpenES)."""

    def __init__(self, params: Any, *, sigma: float, population: int, rank: int = 1,
                 seed: int = 0, shaping: str | None = "centered_rank", group_size: int = 0,
                 noise_reuse: int = 1, antithetic: bool = True,
                 exclude: Iterable[str] | Callable[[str], bool] = ()) -> None:
        self.sigma = check_float(sigma, "sigma", positive=True)
        self.population = check_int(population, "population", 1, 1 << 31)
        self.rank = check_int(rank, "rank", 1, 1 << 20)
        self.seed = check_int(seed, "seed", 0, UINT64_MAX)
        self.noise_reuse = check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX)
        self.antithetic = check_bool(antithetic, "antithetic")
        self.group_size = check_int(group_size, "group_size", 0, 1 << 31)
        if shaping not in SHAPINGS or (shaping is not None and not isinstance(shaping, str)):
            raise ValueError(f"shaping: expected one of {SHAPINGS}, got {shaping!r}")
        self.shaping = shaping
        if self.antithetic and self.population % 2:
            raise ValueError(f"population: antithetic sampling needs an even population, got "
                             f"{self.population}")
        names, leaves, self._treedef = _named_leaves(params)
        if not names:
            raise ValueError("params: the pytree has no leaves")
        for name, leaf in zip(names, leaves):
            dt = jnp.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
            if not jnp.issubdtype(dt, jnp.floating):
                raise TypeError(f"params: leaf {name!r} has dtype {dt}; expected float arrays")
        if len(set(names)) != len(names):
            raise ValueError(f"params: leaf names are not unique: {names}")
        self.names = names
        self.shapes = {n: tuple(np.shape(v)) for n, v in zip(names, leaves)}
        self.param_ids = {n: param_id(n) for n in names}
        seen: dict[int, str] = {}
        for n, pid in self.param_ids.items():
            if pid in seen:
                raise ValueError(f"params: leaves {seen[pid]!r} and {n!r} share param_id "
                                 f"{pid:#010x} (blake2b collision); rename one")
            seen[pid] = n
        if callable(exclude):
            self.exclude = frozenset(n for n in names if exclude(n))
        else:
            if isinstance(exclude, str):
                raise TypeError("exclude: expected an iterable of leaf names or a predicate, "
                                "got a str")
            self.exclude = frozenset(exclude)
            unknown = sorted(self.exclude - set(names))
            if unknown:
                raise ValueError(f"exclude: no leaves named {unknown}; leaves: {names}")

    def __repr__(self) -> str:
        return (f"eggroll.jax.ES(population={self.population}, sigma={self.sigma}, "
                f"rank={self.rank}, leaves={len(self.names)}, excluded={len(self.exclude)})")

    def ask(self, params: Any, epoch: Any, members: Any = None) -> Population:
        """The population of `epoch` (an int or a traced integer scalar) around params.

        members: the members evaluated here (None: all N): a block range(lo, hi), or an
        integer array [M] that may be traced (e.g. lo + jnp.arange(M) with lo from
        jax.lax.axis_index under shard_map; its values are the caller's to keep in
        [0, N)). Each member's outputs are bit for bit those of the whole population, so
        devices or processes evaluating disjoint blocks stay identical once gradient() gets
        the whole [N] fitness (eggroll.distributed)."""
        return Population(self, params, epoch, members)

    def shape_fitness(self, raw_fitness: Any) -> jax.Array:
        """float32 [N] member weights from the raw fitness (higher is better)."""
        f = jnp.asarray(raw_fitness)
        if f.shape != (self.population,):
            raise ValueError(f"raw_fitness: expected shape ({self.population},), got "
                             f"{tuple(f.shape)}")
        if self.shaping == "centered_rank":
            return centered_rank(f)
        if self.shaping == "zscore":
            return zscore(f, self.group_size)
        if self.shaping == "antithetic_sign":
            c = antithetic_sign(f)                         # one vote per pair, as eggroll.ES
            return jnp.stack([c, -c], axis=1).reshape(-1)
        return f.astype(jnp.float32)

    def gradient(self, params: Any, raw_fitness: Any, epoch: Any) -> Any:
        """A pytree like params: minus the ES estimate of each leaf (optax minimises), zeros
        for excluded leaves. raw_fitness [N]: higher is better; shaped here."""
        names, leaves, treedef = _named_leaves(params)
        if names != self.names:
            raise ValueError(f"params: expected the leaves {self.names}, got {names}")
        shaped = self.shape_fitness(raw_fitness)
        out = []
        for name, p in zip(names, leaves):
            if name in self.exclude:
                out.append(jnp.zeros_like(p))
                continue
            shape = p.shape if p.ndim == 2 else (int(np.prod(p.shape, dtype=np.int64)),)
            g = es_gradient(shaped, shape, epoch=epoch, seed=self.seed,
                            param_id=self.param_ids[name], sigma=self.sigma, rank=self.rank,
                            noise_reuse=self.noise_reuse, antithetic=self.antithetic)
            out.append((-g).reshape(p.shape).astype(p.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)
