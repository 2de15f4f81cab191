"""eggroll.torch.ES: evolution strategies for any nn.Module, with any torch.optim optimiser.

One step (docs/torch.md)::

    es = eggroll.torch.ES(model, sigma=0.05, population=512)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    with es.ask():                              # population mode: no copies of the module
        logits = model(x.expand(512, *x.shape))     # [P, batch, ...] -> member i sees W + E_i
    es.tell(fitness)                            # [P], higher is better -> p.grad = -g
    opt.step()

Inside ``es.ask()`` every nn.Linear computes the eggroll op on its [P, ..., n] input (its
weight perturbed low rank, its bias full rank, per member); every other module with
parameters of its own runs under torch.vmap with per-member full-rank copies of those
parameters (torch.func.functional_call). ``tell`` regenerates the same noise from
(seed, param_id(name), epoch) and writes the negated ES estimate into ``.grad``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from .. import _trainer as _t
from .._trainer import UINT32_MAX, UINT64_MAX, check_member_block, check_names
from ..optim import NONFINITE, SHAPINGS, check_fitness, shape_fitness
from ._ops import es_gradient
from .._ops import perturb_vector as _perturb_vector_op
from .._ops import perturbed_matmul as _perturbed_matmul_op
from .._ops import perturbed_matmul_full as _perturbed_matmul_full_op

__all__ = ["ES", "Population", "linear"]

LOWRANK, FULL = "lowrank", "full"
_ACTIVE: list[Population] = []         # the populations inside `with es.ask():`, innermost last


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias), except inside ``with es.ask():`` for a weight the ES
    trains (an nn.Linear weight or one named in ES(matmul_weights=...)): then every member
    i computes x_i @ (weight + E_i).T (+ bias_i), x [P, ..., n] -> [P, ..., m].

    Use it in a module's forward for a 2-D parameter applied as a matmul weight, so that it
    is perturbed low rank like an nn.Linear weight."""
    for pop in reversed(_ACTIVE):
        if id(weight) in pop._es._names:
            return pop.linear(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


class Population:
    """The population-mode context of one epoch (``with es.ask(): ...``).

    On entry every nn.Linear and every other module with parameters of its own gets an
    instance ``forward`` that evaluates all members at once; on exit the modules are as they
    were. Runs under torch.no_grad(): ES needs no backward pass. block: the members evaluated
    (es.ask(members=range(lo, hi)); all by default): inputs carry len(block) rows, row j for
    member block[j]."""

    def __init__(self, es: ES, block: range | None = None) -> None:
        self._es = es
        self.block = range(es.population) if block is None else block
        self.epoch = es.epoch
        self.sigma = es.sigma_at(es.epoch)
        self._members: dict[torch.device, Tensor] = {}
        self._vectors: dict[str, Tensor] = {}     # per-member 1-D/flattened params, once/epoch
        self._patched: list[nn.Module] = []
        self._no_grad: Any = None

    def __len__(self) -> int:
        return len(self.block)

    def __repr__(self) -> str:
        return f"Population(members={len(self)}, epoch={self.epoch}, sigma={self.sigma})"

    def __enter__(self) -> Population:
        if self._patched:
            raise RuntimeError("this Population is already active")
        self._check_epoch()
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        _ACTIVE.append(self)
        try:
            for mod_name, module in self._es._modules.items():
                if mod_name in self._es._direct:
                    continue                  # its forward calls eggroll.torch.linear itself
                if "forward" in module.__dict__:
                    raise RuntimeError(f"module {mod_name!r} already has an instance forward "
                                       "(nested es.ask()?)")
                if isinstance(module, nn.Linear):
                    module.forward = self._linear_forward(mod_name, module)
                else:
                    module.forward = self._vmap_forward(mod_name, module)
                self._patched.append(module)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)
        self._patched = []
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._no_grad is not None:
            self._no_grad.__exit__(None, None, None)
            self._no_grad = None

    # -- noise keys ------------------------------------------------------------------------

    def _check_epoch(self) -> None:
        if self._es.epoch != self.epoch:
            raise RuntimeError(f"this Population is of epoch {self.epoch} but the ES is at "
                               f"epoch {self._es.epoch}: call es.ask() again after tell()")

    def _key(self, name: str) -> dict[str, Any]:
        es = self._es
        return dict(seed=es.seed, param_id=es.param_ids[name], epoch=self.epoch,
                    noise_reuse=es.noise_reuse, antithetic=es.antithetic, sigma=self.sigma)

    def members(self, device: torch.device) -> range:
        return self.block  # a range: never materialised, on any device

    def vector(self, name: str) -> Tensor:
        """float32 [M, *shape] (M = len(block)): row j is member block[j]'s copy of parameter
        name perturbed full rank
        (v + s_i sigma z_k over the flattened values), made once per epoch; a frozen
        parameter gives an expanded view of itself."""
        self._check_epoch()
        es = self._es
        p = es._params[name]
        if name in es.frozen:
            return p.detach().expand(len(self.block), *p.shape)
        v = self._vectors.get(name)
        if v is None:
            flat = p.detach().reshape(-1).float().contiguous()
            v = _perturb_vector_op(flat, members=self.members(p.device), **self._key(name))
            v = v.reshape(len(self.block), *p.shape)
            self._vectors[name] = v
        return v

    # -- population forwards ---------------------------------------------------------------

    def _check_x(self, x: Any, mod_name: str) -> Tensor:
        P = len(self.block)
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != P:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: module {mod_name!r} expects [population={P}, ..., features] "
                             f"inputs in population mode, got {shape}")
        return x

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None,
               where: str = "") -> Tensor:
        """x [P, ..., n] @ (weight + E_i).T (+ bias_i) for every member i: weight [m, n] a
        parameter of the module (low rank, or full rank with full_rank=True); bias [m] a
        parameter (perturbed per member) or any other tensor (added as is)."""
        self._check_epoch()
        es = self._es
        wname = es._names.get(id(weight))
        if wname is None or weight.dim() != 2:
            raise ValueError(f"weight: not a 2-D parameter of the module this ES trains "
                             f"({where or 'eggroll.torch.linear'})")
        x = self._check_x(x, where or wname)
        W = weight.detach()
        if W.dtype != torch.float32:
            raise TypeError(f"{wname}: population mode computes in float32, got {W.dtype}")
        lead = x.shape[:-1]
        x3 = x.reshape(x.shape[0], -1, x.shape[-1]) if x.dim() != 3 else x
        x3 = x3.contiguous().float()
        mem = None if wname in es.frozen else self.members(x.device)
        if es.kinds[wname] == LOWRANK:
            y = _perturbed_matmul_op(x3, W, members=mem, rank=es.rank, **self._key(wname))
        else:
            y = _perturbed_matmul_full_op(x3, W, members=mem, **self._key(wname))
        if bias is not None:
            bname = es._names.get(id(bias))
            y.add_(self.vector(bname)[:, None, :] if bname is not None else bias.detach())
        return y.reshape(*lead, W.shape[0])

    def _linear_forward(self, mod_name: str, module: nn.Linear) -> Callable[[Tensor], Tensor]:
        def forward(x: Tensor) -> Tensor:
            return self.linear(x, module.weight, module.bias, mod_name)
        return forward

    def _vmap_forward(self, mod_name: str, module: nn.Module) -> Callable[..., Any]:
        names = {local: f"{mod_name}.{local}" if mod_name else local
                 for local, _ in module.named_parameters(recurse=False)}

        def forward(*args: Any, **kwargs: Any) -> Any:
            self._check_epoch()
            if not args:
                raise ValueError(f"x: module {mod_name!r} got no positional input")
            self._check_x(args[0], mod_name)
            stacked = {local: self.vector(full) for local, full in names.items()}
            own = module.__dict__.pop("forward")     # functional_call must reach the class's

            def one(params: dict[str, Tensor], *a: Any) -> Any:
                return torch.func.functional_call(module, params, a, kwargs)
            in_dims = (0, *(0 if isinstance(a, Tensor) else None for a in args))
            try:
                return torch.vmap(one, in_dims=in_dims)(stacked, *args)
            finally:
                module.forward = own
        return forward


class ES:
    """Evolution strategies over an nn.Module's parameters (docs/torch.md).

    module: any nn.Module whose forward accepts inputs with a leading population axis
      [P, batch, ...]. nn.Linear weights are perturbed low rank (rank r), every other
      parameter full rank; parameters named in frozen, or with requires_grad=False, are used
      unperturbed and get no .grad.
    sigma: float, or a callable epoch -> float. population: P (even when antithetic).
    shaping / group_size / noise_reuse / antithetic / full_rank / nonfinite: as eggroll.ES.
    seed: 64-bit noise seed. param_ids come from the parameter names (eggroll.es.param_id).
    matmul_weights: names of 2-D parameters of other modules that their forward applies with
      eggroll.torch.linear(x, W, b): perturbed low rank like nn.Linear weights. Such a module
      runs as written in population mode (no vmap), so its other own parameters must be
      used as the bias of eggroll.torch.linear, or be frozen.
    The update itself is the optimiser's: tell() writes p.grad = -g (g points uphill), so a
    minimising torch.optim optimiser ascends the fitness.
    """

    def __init__(self, module: nn.Module, *, sigma: float | Callable[[int], float],
                 population: int, rank: int = 1, seed: int = 0,
                 shaping: str | None = "centered_rank", group_size: int = 0,
                 noise_reuse: int = 1, antithetic: bool = True, frozen: Iterable[str] = (),
                 full_rank: bool = False, nonfinite: str = "raise",
                 matmul_weights: Iterable[str] = ()) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.sigma = _t.check_schedule(sigma, "sigma", positive=True)
        self.population = _t.check_int(population, "population", 1, UINT32_MAX)
        self.rank = _t.check_int(rank, "rank", 1, 1 << 20)
        self.seed = _t.check_int(seed, "seed", 0, UINT64_MAX)
        self.shaping = _t.check_choice(shaping, "shaping", SHAPINGS)
        self.group_size = _t.check_int(group_size, "group_size", 0, self.population)
        self.noise_reuse = _t.check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX)
        self.antithetic = _t.check_bool(antithetic, "antithetic")
        self.full_rank = _t.check_bool(full_rank, "full_rank")
        self.nonfinite = _t.check_choice(nonfinite, "nonfinite", NONFINITE)
        if self.antithetic and self.population % 2:
            raise ValueError(f"population: antithetic sampling needs an even population, got "
                             f"{self.population} (or pass antithetic=False)")
        if self.group_size and (self.shaping != "zscore" or self.population % self.group_size):
            raise ValueError(f"group_size: needs shaping='zscore' and must divide the "
                             f"population {self.population}, got {self.group_size}")
        if self.shaping == "antithetic_sign" and not self.antithetic:
            raise ValueError("shaping: 'antithetic_sign' needs antithetic=True")
        self._collect(module, set(check_names(matmul_weights, "matmul_weights")))
        self.frozen = self._frozen(frozen)
        self.epoch = 0
        self._sigma_cache: tuple[int, float] | None = None

    def _collect(self, module: nn.Module, matmul: set[str]) -> None:
        """Parameters by name, how each is perturbed, and the modules population mode patches
        (nn.Linear: the op; modules holding a matmul_weights parameter: left as written, their
        forward calls eggroll.torch.linear; other modules with parameters: vmap)."""
        self._params: dict[str, nn.Parameter] = {}
        self._names: dict[int, str] = {}
        self.kinds: dict[str, str] = {}
        self._modules: dict[str, nn.Module] = {}
        self._direct: set[str] = set()
        seen: set[int] = set()
        all_names = {n for n, _ in module.named_parameters()}
        unknown = matmul - all_names
        if unknown:
            raise ValueError(f"matmul_weights: no parameter named {sorted(unknown)[0]!r}")
        for mod_name, sub in module.named_modules():
            own = [(n, p) for n, p in sub.named_parameters(recurse=False)]
            if not own:
                continue
            full = {local: f"{mod_name}.{local}" if mod_name else local for local, _ in own}
            direct = any(n in matmul for n in full.values())
            if direct:
                self._direct.add(mod_name)
            elif not isinstance(sub, nn.Linear) and any(
                    True for c in sub.children() for _ in c.parameters()):
                raise ValueError(f"module: {mod_name or type(sub).__name__!r} has parameters "
                                 "of its own and submodules with parameters; move its own "
                                 "parameters into a submodule (population mode runs each "
                                 "such module under vmap)")
            for local, p in own:
                name = f"{mod_name}.{local}" if mod_name else local
                if id(p) in seen:
                    raise ValueError(f"module: parameter {name!r} is shared with another "
                                     "module (tied weights are not supported)")
                seen.add(id(p))
                if not p.dtype.is_floating_point:
                    raise TypeError(f"module: parameter {name!r} has dtype {p.dtype}; "
                                    "expected a float parameter")
                self._params[name] = p
                self._names[id(p)] = name
                if name in matmul and p.dim() != 2:
                    raise ValueError(f"matmul_weights: {name!r} has shape {tuple(p.shape)}; "
                                     "expected a 2-D [m, n] weight")
                lowrank = (isinstance(sub, nn.Linear) and local == "weight") or name in matmul
                self.kinds[name] = LOWRANK if lowrank and not self.full_rank else FULL
            self._modules[mod_name] = sub
        if not self._params:
            raise ValueError("module: has no parameters")
        self.param_ids: dict[str, int] = {}
        ids: dict[int, str] = {}
        for name in self._params:
            pid = _t.param_id(name)
            if pid in ids:
                raise ValueError(f"module: the parameter names {ids[pid]!r} and {name!r} have "
                                 f"the same param_id {pid:#010x} (blake2b collision)")
            ids[pid] = name
            self.param_ids[name] = pid

    def _frozen(self, frozen: Any) -> tuple[str, ...]:
        if isinstance(frozen, str):
            frozen = (frozen,)
        try:
            names = set(frozen)
        except TypeError:
            raise TypeError(f"frozen: expected an iterable of parameter names, got "
                            f"{type(frozen).__name__}") from None
        for name in names:
            if name not in self._params:
                raise ValueError(f"frozen: no parameter named {name!r} (have "
                                 f"{sorted(self._params)})")
        names |= {n for n, p in self._params.items() if not p.requires_grad}
        return tuple(sorted(names))

    @property
    def trainable(self) -> list[str]:
        """Names of the parameters tell() writes a .grad for."""
        return [n for n in self._params if n not in self.frozen]

    def sigma_at(self, epoch: int) -> float:
        if not callable(self.sigma):
            return self.sigma
        if self._sigma_cache is None or self._sigma_cache[0] != epoch:
            s = _t.check_float(self.sigma(epoch), f"sigma (schedule at epoch {epoch})",
                              positive=True)
            self._sigma_cache = (epoch, s)
        return self._sigma_cache[1]

    # -- ask / tell ------------------------------------------------------------------------

    def ask(self, members: range | None = None) -> Population:
        """The population of the current epoch, as a context: ``with es.ask(): model(x)``.

        members: a block range(lo, hi) to evaluate here (None: all); inputs then carry
        hi - lo rows and each member's outputs are bit for bit those of the whole population
        (how eggroll.distributed splits a population over ranks). tell() still takes the
        whole population's fitness."""
        if self.epoch > UINT32_MAX:
            raise ValueError(f"epoch: the noise key holds 32-bit epochs; reached {self.epoch}")
        return Population(self, check_member_block(members, self.population))

    def tell(self, raw_fitness: Any) -> dict[str, Any]:
        """Shape raw_fitness [population] (higher is better), write p.grad = -g for every
        trainable parameter (replacing any .grad), and advance the epoch. Then call the
        optimiser's step(). Returns the statistics eggroll.ES.tell returns."""
        if isinstance(raw_fitness, Tensor):
            raw_fitness = raw_fitness.detach().to("cpu", torch.float64).numpy()
        f, nbad = check_fitness(raw_fitness, self.population, self.nonfinite)
        shaped = torch.from_numpy(shape_fitness(f, self.shaping, self.group_size))
        epoch = self.epoch
        sigma = self.sigma_at(epoch)
        norms: dict[str, float] = {}
        on_device: dict[torch.device, Tensor] = {}
        for name in self.trainable:
            p = self._params[name]
            fit = on_device.get(p.device)
            if fit is None:
                fit = on_device[p.device] = shaped.to(p.device)
            shape = tuple(p.shape) if self.kinds[name] == LOWRANK else (p.numel(),)
            g = es_gradient(fit, shape, epoch=epoch, seed=self.seed,
                            param_id=self.param_ids[name], sigma=sigma, rank=self.rank,
                            noise_reuse=self.noise_reuse, antithetic=self.antithetic,
                            full_rank=False)
            norms[name] = float(torch.linalg.vector_norm(g.double()))
            p.grad = g.neg_().reshape(p.shape).to(p.dtype)
        self.epoch = epoch + 1
        return {"epoch": epoch, "fitness_mean": float(f.mean()), "fitness_max": float(f.max()),
                "fitness_min": float(f.min()), "nonfinite": nbad,
                "grad_norm": math.sqrt(sum(v * v for v in norms.values())),
                "grad_norms": norms, "sigma": sigma}

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The ES state (epoch, noise key, shaping and the other settings): plain Python
        values. The parameters and the optimiser have their own state_dicts."""
        return {"epoch": self.epoch, "seed": self.seed,
                "sigma": None if callable(self.sigma) else self.sigma,
                "population": self.population, "rank": self.rank, "shaping": self.shaping,
                "group_size": self.group_size, "noise_reuse": self.noise_reuse,
                "antithetic": self.antithetic, "full_rank": self.full_rank,
                "nonfinite": self.nonfinite, "frozen": list(self.frozen),
                "param_ids": dict(self.param_ids),
                "shapes": {n: tuple(p.shape) for n, p in self._params.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where state_dict() was taken: epoch, seed, sigma (unless a schedule was
        used: then this ES's schedule stays), shaping and the other settings. The module's
        parameter names must give the same param_ids."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        missing = {"epoch", "seed", "population", "rank", "param_ids"} - set(state)
        if missing:
            raise ValueError(f"state: missing {sorted(missing)}")
        if dict(state["param_ids"]) != self.param_ids:
            raise ValueError("state: its parameters (names -> param_ids) differ from this "
                             "module's")
        for name, shape in dict(state.get("shapes", {})).items():
            if name in self._params and tuple(shape) != tuple(self._params[name].shape):
                raise ValueError(f"state: parameter {name!r} has shape {tuple(shape)} in the "
                                 f"state but {tuple(self._params[name].shape)} in this module")
        if int(state["population"]) != self.population or int(state["rank"]) != self.rank:
            raise ValueError(f"state: population/rank {state['population']}/{state['rank']} "
                             f"differ from this ES's {self.population}/{self.rank}")
        self.epoch = _t.check_int(state["epoch"], "state['epoch']", 0, UINT32_MAX + 1)
        self.seed = _t.check_int(state["seed"], "state['seed']", 0, UINT64_MAX)
        if state.get("sigma") is not None:
            self.sigma = _t.check_float(state["sigma"], "state['sigma']", positive=True)
        checks = {"shaping": lambda v, k: _t.check_choice(v, k, SHAPINGS),
                  "group_size": lambda v, k: _t.check_int(v, k, 0, self.population),
                  "noise_reuse": lambda v, k: _t.check_int(v, k, 0, UINT32_MAX),
                  "antithetic": _t.check_bool, "full_rank": _t.check_bool,
                  "nonfinite": lambda v, k: _t.check_choice(v, k, NONFINITE)}
        for key, check in checks.items():     # the constructor's checks: never unvalidated
            if key in state:
                setattr(self, key, check(state[key], f"state[{key!r}]"))
        if "frozen" in state:
            self.frozen = self._frozen(state["frozen"])
        self._sigma_cache = None

    def __repr__(self) -> str:
        lowrank = sum(1 for k in self.kinds.values() if k == LOWRANK)
        return (f"ES({type(self.module).__name__}: {len(self._params)} parameters, {lowrank} "
                f"low rank; population={self.population}, rank={self.rank}, "
                f"shaping={self.shaping!r}, epoch={self.epoch})")


