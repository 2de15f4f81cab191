"""eggroll.ES: the ask/tell trainer over a dict of named NumPy parameters.

One step (docs/trainer.md):

    pop = es.ask()                                   # the population of this epoch
    h = np.tanh(pop.linear("W1", x, bias="b1"))      # x [N, b, n]: every member at once
    y = pop.linear("W2", h, bias="b2")
    es.tell(fitness(y))                              # [N], higher is better: shape, estimate, step

2-D parameters W [m, n] (applied as x @ W.T) are perturbed low rank (eggroll.perturbed_matmul)
or, with full_rank=True, full rank (perturbed_matmul_full); 1-D parameters full rank
(perturb_vector). Every parameter's noise is keyed by (seed, param_id(name), epoch), so the
member i evaluated here and the estimate in tell() regenerate the same perturbation.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from ._ops import es_gradient, perturb_vector, perturbed_matmul, perturbed_matmul_full
from ._trainer import (UINT32_MAX, UINT64_MAX, Schedule, array_module, check_bool,
                       check_choice, check_float, check_int, check_member_block, check_names,
                       check_schedule, member_chunks, param_id)
from .optim import (NONFINITE, OPTIMIZERS, SHAPINGS, adam_step, check_fitness, sgd_step,
                    shape_fitness)

__all__ = ["ES", "Population", "param_id"]


def _params(params: Any) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of name -> array, got {type(params).__name__}")
    if not params:
        raise ValueError("params: expected at least one parameter, got an empty dict")
    out: dict[str, np.ndarray] = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise TypeError(f"params: names must be str, got {name!r}")
        xp = _xp(value)
        arr = value if xp is not np else np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"params[{name!r}]: expected a real float array, got dtype "
                            f"{arr.dtype}")
        if arr.ndim not in (1, 2) or 0 in arr.shape:
            raise ValueError(f"params[{name!r}]: expected a non-empty 1-D [m] or 2-D [m, n] "
                             f"array, got shape {arr.shape}")
        arr = xp.array(arr, dtype=np.float32, order="C", copy=True)
        if not bool(xp.isfinite(arr).all()):
            raise ValueError(f"params[{name!r}]: contains NaN or inf")
        out[name] = arr
    kinds = {_xp(a).__name__ for a in out.values()}
    if len(kinds) > 1:
        raise TypeError(f"params: mixes NumPy and CuPy arrays ({sorted(kinds)}); keep every "
                        "parameter on one device")
    return out


_xp = array_module


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    if isinstance(v, np.ndarray):  # CuPy arrays have no read-only flag
        v.flags.writeable = False
    return v


# ------------------------------------------------------------------------------------------
# the population view
# ------------------------------------------------------------------------------------------

class Population:
    """The members of one epoch (all, or the block es.ask(members=range(lo, hi)) named; row j of
    every input and output is member members[j]). Valid until the next ES.tell() (then a
    RuntimeError)."""

    def __init__(self, es: ES, epoch: int, sigma: float, members: range,
                 rows: slice | None = None) -> None:
        self._es = es
        self.epoch = epoch
        self.sigma = sigma
        self.members = members
        # where this population's rows sit in the one chunks() split it from (else all)
        self.rows = slice(0, len(members)) if rows is None else rows
        # Perturbed vectors are fixed for the epoch: a bias used at every time step of a
        # rollout is regenerated once, not per call (read-only, so the cache stays valid).
        self._vectors: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Population(members={len(self.members)}, epoch={self.epoch}, sigma={self.sigma})"

    def chunks(self, size: int) -> list[Population]:
        """The members in consecutive blocks of `size` (the last may be shorter), each a
        Population of its own (docs/trainer.md "Evaluating in chunks"):

            pop = es.ask()
            f = np.empty(es.population, np.float32)
            for sub in pop.chunks(16):                 # sub.rows: its rows of pop's [M, ...]
                h = sub.linear("W1", x, bias="b1", shared=True)   # [16, b, W]: stays in cache
                f[sub.rows] = fitness(sub.linear("W2", np.tanh(h, out=h), bias="b2"))
            es.tell(f)

        A member's outputs are bit for bit those of the undivided population (its noise does
        not depend on the split), so tell() of the assembled fitness is the same step. Per
        member inputs are sliced with x[sub.rows]."""
        self._key(next(iter(self._es._params)))          # a stale population fails here
        return [Population(self._es, self.epoch, self.sigma, block, rows)
                for block, rows in member_chunks(self.members, size)]

    def _key(self, name: str) -> dict[str, Any]:
        es = self._es
        if es.epoch != self.epoch:
            raise RuntimeError(f"this Population is of epoch {self.epoch} but the ES is at "
                               f"epoch {es.epoch}: call es.ask() again after tell()")
        return dict(epoch=self.epoch, seed=es.seed, param_id=es.param_ids[name],
                    sigma=self.sigma, noise_reuse=es.noise_reuse, antithetic=es.antithetic)

    def _param(self, name: Any, arg: str, ndim: int) -> np.ndarray:
        if not isinstance(name, str):
            raise TypeError(f"{arg}: expected a parameter name (str), got {type(name).__name__}")
        p = self._es._params.get(name)
        if p is None:
            raise ValueError(f"{arg}: no parameter named {name!r} (have "
                             f"{sorted(self._es._params)})")
        if p.ndim != ndim:
            raise ValueError(f"{arg}: parameter {name!r} has shape {p.shape}; expected a "
                             f"{ndim}-D parameter")
        return p

    def linear(self, name: str, x: Any, bias: str | None = None, *,
               shared: bool = False) -> np.ndarray:
        """y = x @ W_i.T (+ b_i) for every member i.

        x: float32 [M, n] or [M, b, n] (M = len(members), row j is member members[j]'s input);
        shared=True: x [n] or [b, n] is every member's input (the base product x @ W.T is
        computed once; the same bits as passing it broadcast to [M, ...], docs/ops.md "Shared
        inputs"). W = params[name] [m, n]; bias: the name of a 1-D parameter [m], broadcast
        over b. Returns float32 [M, m] or [M, b, m]. Frozen parameters enter unperturbed."""
        W = self._param(name, "name", 2)
        key = self._key(name)
        es = self._es
        xs = np.shape(x)
        M = len(self.members)
        if shared:
            if len(xs) not in (1, 2):
                raise ValueError(f"x: a shared input is [n] or [b, n], got shape {xs}")
        elif len(xs) not in (2, 3) or xs[0] != M:
            what = "population" if M == es.population else "len(members)"
            raise ValueError(f"x: expected [N, n] or [N, b, n] with N = {what} = {M}, got "
                             f"shape {xs} (shared=True takes one input for every member)")
        frozen = name in es.frozen
        if frozen and shared:
            y0 = perturbed_matmul(x, W, members=None, shared=True, **key)
            xp = _xp(y0)
            y = xp.ascontiguousarray(xp.broadcast_to(y0, (M,) + y0.shape))
        elif es.full_rank:
            y = perturbed_matmul_full(x, W, members=None if frozen else self.members,
                                      shared=shared, **key)
        else:
            y = perturbed_matmul(x, W, members=None if frozen else self.members,
                                 rank=es.rank, shared=shared, **key)
        if bias is not None:
            b = self._param(bias, "bias", 1)
            if b.shape[0] != W.shape[0]:
                raise ValueError(f"bias: parameter {bias!r} has shape {b.shape}, expected "
                                 f"({W.shape[0]},) to match {name!r} {W.shape}")
            bv = self.vector(bias)                       # [M, m]
            y += bv[:, None, :] if y.ndim == 3 else bv
        return y

    def vector(self, name: str) -> np.ndarray:
        """float32 [M, m], read-only: row j is member members[j]'s copy of the 1-D parameter
        params[name] (v + s_i sigma z_k), computed once per epoch. A frozen parameter gives a
        broadcast view of v itself."""
        v = self._param(name, "name", 1)
        key = self._key(name)
        if name in self._es.frozen:
            return np.broadcast_to(v, (len(self.members), v.shape[0]))
        cached = self._vectors.get(name)
        if cached is None:
            cached = _readonly(perturb_vector(v, members=self.members, **key))
            self._vectors[name] = cached
        return cached


# ------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------

class ES:
    """EGGROLL evolution strategies over named NumPy parameters (docs/trainer.md).

    params: name -> float array, 1-D [m] or 2-D [m, n] (copied to float32).
    sigma, lr: float, or a callable epoch -> float (a schedule).
    population: N members; even when antithetic (pairs 2k, 2k+1 share noise, signs ±).
    rank: of the low-rank perturbations of 2-D parameters (ignored with full_rank=True).
    optimizer: "sgd" (p += lr g) or "adam" (bias-corrected, on the ascent direction).
    shaping: "centered_rank", "zscore" (group_size: mean per consecutive group of members),
      "antithetic_sign" (one ±1/0 vote per pair) or None (raw fitness).
    noise_reuse: fresh noise every noise_reuse epochs (0: the same noise forever).
    weight_decay: decoupled, p -= lr * weight_decay * p each step.
    frozen: names used unperturbed and never updated.
    nonfinite: "raise" (ValueError) or "worst" (NaN/inf fitness -> the minimum finite value).
    """

    def __init__(self, params: Mapping[str, Any], *, sigma: Schedule, lr: Schedule,
                 population: int, rank: int = 1, seed: int = 0, optimizer: str = "sgd",
                 shaping: str | None = "centered_rank", group_size: int = 0,
                 noise_reuse: int = 1, antithetic: bool = True, weight_decay: float = 0.0,
                 frozen: Iterable[str] = (), full_rank: bool = False,
                 nonfinite: str = "raise", adam_betas: tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8) -> None:
        self._params = _params(params)
        self.sigma = check_schedule(sigma, "sigma", positive=True)
        self.lr = check_schedule(lr, "lr", positive=False)
        self.population = check_int(population, "population", 1, UINT32_MAX)
        self.rank = check_int(rank, "rank", 1, 1 << 20)
        self.seed = check_int(seed, "seed", 0, UINT64_MAX)
        self.optimizer = check_choice(optimizer, "optimizer", OPTIMIZERS)
        self.shaping = check_choice(shaping, "shaping", SHAPINGS)
        self.group_size = check_int(group_size, "group_size", 0, self.population)
        self.noise_reuse = check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX)
        self.antithetic = check_bool(antithetic, "antithetic")
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.full_rank = check_bool(full_rank, "full_rank")
        self.nonfinite = check_choice(nonfinite, "nonfinite", NONFINITE)
        self.adam_betas = self._betas(adam_betas)
        self.adam_eps = check_float(adam_eps, "adam_eps", positive=True)
        self.frozen = self._frozen(frozen)
        if self.antithetic and self.population % 2:
            raise ValueError(f"population: antithetic sampling needs an even population, got "
                             f"{self.population} (or pass antithetic=False)")
        if self.group_size and self.shaping != "zscore":
            raise ValueError(f"group_size: only used by shaping='zscore', got shaping="
                             f"{self.shaping!r} with group_size={self.group_size}")
        if self.group_size and self.population % self.group_size:
            raise ValueError(f"group_size: must divide the population {self.population}, got "
                             f"{self.group_size}")
        if self.shaping == "antithetic_sign" and not self.antithetic:
            raise ValueError("shaping: 'antithetic_sign' votes per antithetic pair; it needs "
                             "antithetic=True")
        self.param_ids: dict[str, int] = {}
        seen: dict[int, str] = {}
        for name in self._params:
            pid = param_id(name)
            if pid in seen:
                raise ValueError(f"params: the names {seen[pid]!r} and {name!r} have the same "
                                 f"param_id {pid:#010x} (blake2b collision); rename one")
            seen[pid] = name
            self.param_ids[name] = pid
        self.epoch = 0
        self._adam_m: dict[str, np.ndarray] = {}
        self._adam_v: dict[str, np.ndarray] = {}
        if self.optimizer == "adam":
            for name in self.trainable:
                self._adam_m[name] = np.zeros_like(self._params[name])
                self._adam_v[name] = np.zeros_like(self._params[name])
        self._sigma_cache: tuple[int, float] | None = None

    # -- small helpers ---------------------------------------------------------------------

    @staticmethod
    def _betas(betas: Any) -> tuple[float, float]:
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"adam_betas: expected a pair of floats, got {betas!r}") from None
        out = (check_float(b1, "adam_betas"), check_float(b2, "adam_betas"))
        if not all(b < 1.0 for b in out):
            raise ValueError(f"adam_betas: each must be in [0, 1), got {betas!r}")
        return out

    def _frozen(self, frozen: Any) -> tuple[str, ...]:
        names = check_names(frozen, "frozen")
        for name in names:
            if name not in self._params:
                raise ValueError(f"frozen: no parameter named {name!r} (have "
                                 f"{sorted(self._params)})")
        return tuple(sorted(set(names)))

    @property
    def trainable(self) -> list[str]:
        """Names of the parameters tell() updates (all but the frozen), in params order."""
        return [n for n in self._params if n not in self.frozen]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current mean parameters: read-only float32 arrays. tell() replaces them with new
        arrays, so what you got before a step stays as it was."""
        return {n: _readonly(p) for n, p in self._params.items()}

    def sigma_at(self, epoch: int) -> float:
        """sigma of an epoch (a schedule is called once per epoch and checked)."""
        if not callable(self.sigma):
            return self.sigma
        if self._sigma_cache is not None and self._sigma_cache[0] == epoch:
            return self._sigma_cache[1]
        s = check_float(self.sigma(epoch), f"sigma (schedule at epoch {epoch})", positive=True)
        self._sigma_cache = (epoch, s)
        return s

    def lr_at(self, epoch: int) -> float:
        if not callable(self.lr):
            return self.lr
        return check_float(self.lr(epoch), f"lr (schedule at epoch {epoch})")

    # -- ask / tell ------------------------------------------------------------------------

    def ask(self, members: range | None = None) -> Population:
        """The population of the current epoch: evaluate it, then pass its fitness to tell().

        members: a block range(lo, hi) of the population to evaluate here (None: all). Each
        member's outputs are bit for bit those of the whole population's evaluation, so
        processes that evaluate disjoint blocks and exchange their fitness (eggroll.distributed)
        can all tell() the same [population] fitness and stay identical."""
        if self.epoch > UINT32_MAX:
            raise ValueError(f"epoch: the noise key holds 32-bit epochs; reached {self.epoch}")
        block = check_member_block(members, self.population)
        return Population(self, self.epoch, self.sigma_at(self.epoch), block)

    def tell(self, raw_fitness: Any) -> dict[str, Any]:
        """Shape raw_fitness [population] (higher is better), estimate every trainable
        parameter's gradient with eggroll.es_gradient, step, and advance the epoch.

        Returns {"epoch", "fitness_mean", "fitness_max", "fitness_min", "nonfinite",
        "grad_norm", "grad_norms": {name: norm}, "sigma", "lr"} (fitness statistics over the
        raw values after the non-finite policy; norms of the estimates g, before the optimiser)."""
        if _xp(raw_fitness) is not np:  # N values: shaped on the host, one small copy each way
            raw_fitness = raw_fitness.get()
        f, nbad = check_fitness(raw_fitness, self.population, self.nonfinite)
        shaped = shape_fitness(f, self.shaping, self.group_size)
        xp = _xp(next(iter(self._params.values())))
        if xp is not np:  # es_gradient runs where the parameters live
            shaped = xp.asarray(shaped)
        epoch = self.epoch
        sigma, lr = self.sigma_at(epoch), self.lr_at(epoch)
        norms: dict[str, float] = {}
        new_params = dict(self._params)
        for name in self.trainable:
            p = self._params[name]
            g = es_gradient(shaped, p.shape, epoch=epoch, seed=self.seed,
                            param_id=self.param_ids[name], sigma=sigma, rank=self.rank,
                            noise_reuse=self.noise_reuse, antithetic=self.antithetic,
                            full_rank=self.full_rank)
            norms[name] = float(np.linalg.norm(g.astype(np.float64)))
            if self.optimizer == "adam":
                new_params[name], self._adam_m[name], self._adam_v[name] = adam_step(
                    p, g, self._adam_m[name], self._adam_v[name], epoch + 1, lr,
                    self.weight_decay, self.adam_betas, self.adam_eps)
            else:
                new_params[name] = sgd_step(p, g, lr, self.weight_decay)
        self._params = new_params
        self.epoch = epoch + 1
        return {"epoch": epoch, "fitness_mean": float(f.mean()), "fitness_max": float(f.max()),
                "fitness_min": float(f.min()), "nonfinite": nbad,
                "grad_norm": math.sqrt(sum(v * v for v in norms.values())),
                "grad_norms": norms, "sigma": sigma, "lr": lr}

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A plain dict (copies): "params" and the Adam moments "adam_m" / "adam_v" as dicts of
        float32 arrays, epoch, seed and every plain hyper-parameter. A schedule (callable sigma
        or lr) is stored as None: pass it again to from_state_dict / load."""
        from .checkpoint import state_dict
        return state_dict(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, sigma: Schedule | None = None,
                        lr: Schedule | None = None) -> ES:
        """Rebuild an ES that continues bit for bit where state_dict() was taken. sigma / lr
        override the stored values and are required where a schedule was used."""
        from .checkpoint import from_state_dict
        return from_state_dict(cls, state, sigma=sigma, lr=lr)

    def save(self, path: Any) -> None:
        """Write state_dict() to path as .npz (no pickle), atomically: a temporary file in the
        same directory, flushed and fsynced, then os.replace. path is used as given."""
        from .checkpoint import save
        save(self.state_dict(), path)

    @classmethod
    def load(cls, path: Any, *, sigma: Schedule | None = None, lr: Schedule | None = None
             ) -> ES:
        """ES.from_state_dict of a file written by save() (loaded with allow_pickle=False)."""
        from .checkpoint import load
        return cls.from_state_dict(load(path), sigma=sigma, lr=lr)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}{tuple(p.shape)}" for n, p in self._params.items())
        return (f"ES({shapes}; population={self.population}, rank={self.rank}, "
                f"optimizer={self.optimizer!r}, shaping={self.shaping!r}, epoch={self.epoch})")
