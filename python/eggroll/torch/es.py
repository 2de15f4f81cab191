"""eggroll.torch.ES: evolution strategies for any nn.Module (Hugging Face language models
included), with any torch.optim optimiser.

One step (docs/torch.md)::

    es = eggroll.torch.ES(model, sigma=0.05, population=512)
    opt = torch.optim.Adam(es.parameters(), lr=0.02)
    with es.ask():                              # population mode: no copies of the module
        logits = model(x.expand(512, *x.shape))     # [P, batch, ...] -> member i sees W + E_i
    es.tell(fitness)                            # [P], higher is better -> p.grad = -g
    opt.step()

Population mode (population.py) evaluates every member in one call: matrices (nn.Linear,
transformers' Conv1D, nn.Embedding, eggroll.torch.linear weights) low rank, vectors full
rank, never a per-member copy of a matrix. ``tell`` regenerates the same noise from
(seed, param_id(name), epoch) and writes the negated ES estimate into ``.grad``. A bf16/fp16
model trains an fp32 master copy (``es.parameters()``) that refreshes the model's weights
after every optimiser step.
"""
from __future__ import annotations

import math
import re
import weakref
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                   register_optimizer_step_pre_hook)

from .. import _trainer as _t
from .._trainer import UINT32_MAX, UINT64_MAX, check_member_block, check_names
from ..optim import NONFINITE, SHAPINGS, check_fitness, shape_fitness
from ._ops import es_gradient
from .population import ACTIVE, FULL, LOWRANK, Population

__all__ = ["ES", "Population", "linear"]

_HALF = (torch.float16, torch.bfloat16)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias), except inside ``with es.ask():`` for a weight the ES
    trains (an nn.Linear weight or one named in ES(matmul_weights=...)): then every member
    i computes x_i @ (weight + E_i).T (+ bias_i) on folded (or shared) rows.

    Use it in a module's forward for a 2-D parameter applied as a matmul weight, so that it
    is perturbed low rank like an nn.Linear weight."""
    for pop in reversed(ACTIVE):
        if pop._es.name_of(weight) is not None:
            return pop.linear(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 style: y = x @ W + b with W stored [in, out]), recognised
    without importing transformers."""
    cls = type(module)
    return (cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")
            and isinstance(getattr(module, "weight", None), Tensor) and module.weight.dim() == 2)


def _matches(name: str, targets: Any) -> bool:
    """PEFT's target_modules rule: a str is a regular expression the whole module name must
    match; a list holds module names, each matching itself or any name ending in '.' + it."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


class ES:
    """Evolution strategies over an nn.Module's parameters (docs/torch.md).

    module: any nn.Module. In population mode (``with es.ask() as pop:``) its inputs carry the
      population folded into the leading axis ([P, ...], or [P * b, ...] with b rows per
      member after pop.fold) or are shared by all members (expanded, or without that axis).
      nn.Linear, transformers' Conv1D and nn.Embedding weights are perturbed low rank (rank
      r); vector parameters (biases, norms) full rank; other modules with trainable
      parameters must be frozen, declared (matmul_weights) or opted into per-member copies
      (vmap_modules), else ValueError here.
    sigma: float, or a callable epoch -> float. population: P (even when antithetic).
    shaping / group_size / noise_reuse / antithetic / full_rank / nonfinite: as eggroll.ES.
    seed: 64-bit noise seed. param_ids come from the parameter names (eggroll.es.param_id).
    frozen: parameter names used unperturbed and given no .grad (as is any parameter with
      requires_grad=False). target_modules: PEFT-style module names (a list: names or name
      suffixes; a str: a regular expression) whose parameters evolve; every other parameter
      is frozen.
    matmul_weights: names of 2-D parameters of other modules that their forward applies with
      eggroll.torch.linear(x, W, b): perturbed low rank like nn.Linear weights. Such a module
      runs as written in population mode, so its other own parameters must be used as the
      bias of eggroll.torch.linear, or be frozen.
    vmap_modules: names of modules with trainable parameters of another kind (Conv2d, ...)
      that run under torch.vmap with a full per-member copy of their parameters (P times
      their memory: opt in knowingly).
    track_changes: measure the fraction of float32 weights each optimiser step changes (one
      copy of them during the step; half-precision weights are always measured, free).
    The update itself is the optimiser's: tell() writes p.grad = -g (g points uphill), so a
    minimising torch.optim optimiser ascends the fitness. Give it es.parameters(): the
    module's trainable parameters, or their fp32 masters for bf16/fp16 ones.
    """

    def __init__(self, module: nn.Module, *, sigma: float | Callable[[int], float],
                 population: int, rank: int = 1, seed: int = 0,
                 shaping: str | None = "centered_rank", group_size: int = 0,
                 noise_reuse: int = 1, antithetic: bool = True, frozen: Iterable[str] = (),
                 target_modules: str | Iterable[str] | None = None, full_rank: bool = False,
                 nonfinite: str = "raise", matmul_weights: Iterable[str] = (),
                 vmap_modules: Iterable[str] = (), track_changes: bool = False) -> None:
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
        self.track_changes = _t.check_bool(track_changes, "track_changes")
        if self.antithetic and self.population % 2:
            raise ValueError(f"population: antithetic sampling needs an even population, got "
                             f"{self.population} (or pass antithetic=False)")
        if self.group_size and (self.shaping != "zscore" or self.population % self.group_size):
            raise ValueError(f"group_size: needs shaping='zscore' and must divide the "
                             f"population {self.population}, got {self.group_size}")
        if self.shaping == "antithetic_sign" and not self.antithetic:
            raise ValueError("shaping: 'antithetic_sign' needs antithetic=True")
        self._collect(module, set(check_names(matmul_weights, "matmul_weights")),
                      set(check_names(vmap_modules, "vmap_modules")))
        self.target_modules = self._targets(target_modules)
        self.frozen = self._frozen(frozen)
        self._classify()
        self.epoch = 0
        self._sigma_cache: tuple[int, float] | None = None
        self._make_masters()
        self.last_weights_changed: float | None = None   # set by each optimiser step
        self._snapshot: dict[str, Tensor] = {}
        self.checked_modules: set[str] = set()    # vector modules checked against member 0
        self._hooks = _register_optimizer_hooks(self)

    # -- parameters and modules ------------------------------------------------------------

    def _collect(self, module: nn.Module, matmul: set[str], vmap: set[str]) -> None:
        """Parameters by canonical name (the first of a tied parameter's names), the modules
        holding them, and per parameter how it is perturbed and in which layout."""
        self.params: dict[str, nn.Parameter] = dict(module.named_parameters())
        if not self.params:
            raise ValueError("module: has no parameters")
        self._names: dict[int, str] = {id(p): n for n, p in self.params.items()}
        all_names = {n for n, _ in module.named_parameters(remove_duplicate=False)}
        unknown = matmul - all_names
        if unknown:
            raise ValueError(f"matmul_weights: no parameter named {sorted(unknown)[0]!r}")
        self.modules: dict[str, nn.Module] = {}
        self._module_params: dict[str, list[str]] = {}
        self._base_kinds: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.transposed: dict[str, bool] = {}
        names_by_id = dict(self._names)
        module_names = {n for n, _ in module.named_modules()}
        missing = vmap - module_names
        if missing:
            raise ValueError(f"vmap_modules: no module named {sorted(missing)[0]!r}")
        for mod_name, sub in module.named_modules():
            own = list(sub.named_parameters(recurse=False))
            if not own:
                continue
            full = {local: f"{mod_name}.{local}" if mod_name else local for local, _ in own}
            canon = [names_by_id[id(p)] for _, p in own]
            where = mod_name or type(sub).__name__
            for local, p in own:
                if not p.dtype.is_floating_point:
                    raise TypeError(f"module: parameter {full[local]!r} has dtype {p.dtype}; "
                                    "expected a float parameter")
            if any(n in matmul for n in full.values()):
                kind = "direct"
            elif mod_name in vmap:
                kind = "vmap"
            elif isinstance(sub, nn.Linear):
                kind = "linear"
            elif _is_conv1d(sub):
                kind = "conv1d"
            elif isinstance(sub, nn.Embedding):
                if sub.max_norm is not None:
                    raise ValueError(f"module: {where!r} is an nn.Embedding with max_norm, "
                                     "which rewrites its weight during the forward; "
                                     "population mode cannot perturb it (drop max_norm or "
                                     "freeze it)")
                kind = "embedding"
            elif isinstance(sub, nn.LayerNorm):
                kind = "layernorm"
            elif all(p.dim() == 1 for _, p in own):
                kind = "vector"
            else:
                kind = "unknown"
            if kind in ("vector", "vmap") and any(
                    True for c in sub.children() for _ in c.parameters()):
                raise ValueError(f"module: {where!r} has parameters of its own and "
                                 "submodules with parameters; move its own parameters into a "
                                 "submodule (population mode evaluates it as one unit)")
            self.modules[mod_name] = sub
            self._module_params[mod_name] = canon
            self._base_kinds[mod_name] = kind
            for (local, p), name in zip(own, canon):
                lowrank = ((kind in ("linear", "conv1d", "embedding") and local == "weight")
                           or full[local] in matmul)
                if full[local] in matmul and p.dim() != 2:
                    raise ValueError(f"matmul_weights: {full[local]!r} has shape "
                                     f"{tuple(p.shape)}; expected a 2-D [m, n] weight")
                pkind = LOWRANK if lowrank else FULL
                transposed = kind == "conv1d" and local == "weight"
                if name in self.kinds and (self.kinds[name], self.transposed[name]) != (
                        pkind, transposed):
                    raise ValueError(f"module: the tied parameter {name!r} is used by {where!r} "
                                     "in another layout (low rank / vector / transposed) than "
                                     "by its other module; population mode needs one noise "
                                     "shape per parameter")
                self.kinds[name] = pkind
                self.transposed[name] = transposed
        if self.full_rank:
            for name, k in self.kinds.items():
                if k == LOWRANK and not self._embedding_only(name):
                    self.kinds[name] = FULL
        self.param_ids: dict[str, int] = {}
        ids: dict[int, str] = {}
        for name in self.params:
            pid = _t.param_id(name)
            if pid in ids:
                raise ValueError(f"module: the parameter names {ids[pid]!r} and {name!r} have "
                                 f"the same param_id {pid:#010x} (blake2b collision)")
            ids[pid] = name
            self.param_ids[name] = pid

    def _embedding_only(self, name: str) -> bool:
        return any(self._base_kinds[m] == "embedding" and name in ps
                   for m, ps in self._module_params.items())

    def _targets(self, targets: Any) -> Any:
        if targets is None:
            return None
        if isinstance(targets, str):
            try:
                re.compile(targets)
            except re.error as e:
                raise ValueError(f"target_modules: not a regular expression ({e})") from None
            if not any(_matches(m, targets) for m in self.modules):
                raise ValueError(f"target_modules: {targets!r} matches no module with "
                                 f"parameters (have {sorted(self.modules)})")
            return targets
        names = check_names(targets, "target_modules")
        for t in names:
            if not any(_matches(m, [t]) for m in self.modules):
                raise ValueError(f"target_modules: {t!r} matches no module with parameters "
                                 f"(have {sorted(self.modules)})")
        return names

    def _frozen(self, frozen: Any) -> tuple[str, ...]:
        if isinstance(frozen, str):
            frozen = (frozen,)
        try:
            names = set(frozen)
        except TypeError:
            raise TypeError(f"frozen: expected an iterable of parameter names, got "
                            f"{type(frozen).__name__}") from None
        for name in names:
            if name not in self.params:
                raise ValueError(f"frozen: no parameter named {name!r} (have "
                                 f"{sorted(self.params)})")
        names |= {n for n, p in self.params.items() if not p.requires_grad}
        if self.target_modules is not None:
            targeted = {n for m, ps in self._module_params.items()
                        if _matches(m, self.target_modules) for n in ps}
            names |= set(self.params) - targeted
        return tuple(sorted(names))

    def _classify(self) -> None:
        """module_kinds: how population mode runs each module with parameters ('frozen':
        as written, nothing of it trainable). Rejects what it cannot run without copies."""
        self.module_kinds: dict[str, str] = {}
        frozen = set(self.frozen)
        for mod_name, kind in self._base_kinds.items():
            names = self._module_params[mod_name]
            trainable = [n for n in names if n not in frozen]
            where = mod_name or type(self.modules[mod_name]).__name__
            if kind != "direct" and not trainable:
                kind = "frozen"
            elif kind == "unknown":
                raise ValueError(
                    f"module: {where!r} ({type(self.modules[mod_name]).__name__}) has trainable "
                    f"parameters {trainable} that population mode cannot perturb without a "
                    f"full copy per member; freeze them (frozen=[...] or target_modules=...), "
                    "apply a 2-D weight with eggroll.torch.linear and name it in "
                    f"matmul_weights=[...], or accept per-member copies with "
                    f"vmap_modules=[{mod_name!r}]")
            if kind == "embedding" and self.full_rank and trainable:
                raise ValueError(f"full_rank: the embedding {where!r} is perturbed low rank "
                                 "only; freeze it for a full-rank run")
            for n in trainable:
                p = self.params[n]
                if p.dtype == torch.float64:
                    raise TypeError(f"module: parameter {n!r} is float64; population mode "
                                    "computes in float32 (call module.float(), or freeze it)")
            self.module_kinds[mod_name] = kind

    def name_of(self, p: Any) -> str | None:
        """The canonical name of a parameter of the module (None for any other tensor)."""
        return self._names.get(id(p))

    @property
    def trainable(self) -> list[str]:
        """Names of the parameters tell() writes a .grad for."""
        frozen = set(self.frozen)
        return [n for n in self.params if n not in frozen]

    # -- fp32 master weights of half-precision models ----------------------------------------

    def _make_masters(self) -> None:
        self._masters: dict[str, nn.Parameter] = {}
        for name in self.trainable:
            p = self.params[name]
            if p.dtype in _HALF:
                self._masters[name] = nn.Parameter(p.detach().float().clone())
        self._versions = {n: (m._version, self.params[n]._version)
                          for n, m in self._masters.items()}

    def master(self, name: str) -> Tensor:
        """The parameter the optimiser steps: the fp32 master of a half-precision one, else the
        module's parameter itself."""
        return self._masters.get(name, self.params[name])

    def parameters(self) -> list[nn.Parameter]:
        """What to give the optimiser: every trainable parameter (its fp32 master copy for
        bf16/fp16 ones), in module order."""
        return [self.master(n) for n in self.trainable]  # type: ignore[misc]

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, self.master(n)) for n in self.trainable]  # type: ignore[misc]

    def sync_weights(self) -> None:
        """Write the fp32 masters into the half-precision model weights (rounded once). Runs by
        itself after each optimiser step over es.parameters() and on entering ask(); a model
        weight written since (load_state_dict, ...) is copied into its master instead."""
        changed = total = 0
        for name, mp in self._masters.items():
            p = self.params[name]
            mv, pv = self._versions[name]
            if mp._version != mv:
                with torch.no_grad():
                    new = mp.detach().to(p.dtype)
                    changed += int((new != p.detach()).sum())
                    total += p.numel()
                    p.copy_(new)
            elif p._version != pv:
                with torch.no_grad():
                    mp.copy_(p.detach().float())
            self._versions[name] = (mp._version, p._version)
        if total:
            self._half_changed = (changed, total)

    def _before_step(self) -> None:
        self._half_changed = (0, 0)
        if self.track_changes:
            self._snapshot = {n: self.params[n].detach().clone() for n in self.trainable
                              if n not in self._masters}

    def _after_step(self) -> None:
        self.sync_weights()
        changed, total = getattr(self, "_half_changed", (0, 0))
        for n, before in self._snapshot.items():
            changed += int((self.params[n].detach() != before).sum())
            total += before.numel()
        self._snapshot = {}
        self.last_weights_changed = changed / total if total else None

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
        """The population of the current epoch, as a context: ``with es.ask() as pop:``.

        members: a block range(lo, hi) to evaluate here (None: all); inputs then carry
        hi - lo members and each member's outputs are bit for bit those of the whole
        population (how eggroll.distributed splits a population over ranks). tell() still
        takes the whole population's fitness."""
        if self.epoch > UINT32_MAX:
            raise ValueError(f"epoch: the noise key holds 32-bit epochs; reached {self.epoch}")
        return Population(self, check_member_block(members, self.population))

    def tell(self, raw_fitness: Any) -> dict[str, Any]:
        """Shape raw_fitness [population] (higher is better), write .grad = -g for every
        trainable parameter (its master for half-precision ones; replacing any .grad), and
        advance the epoch. Then call the optimiser's step(). Returns the statistics
        eggroll.ES.tell returns, plus pair_disagreement (antithetic: the fraction of pairs
        whose two members scored differently; 0 means the step carries no signal)."""
        if isinstance(raw_fitness, Tensor):
            raw_fitness = raw_fitness.detach().to("cpu", torch.float64).numpy()
        f, nbad = check_fitness(raw_fitness, self.population, self.nonfinite)
        shaped = torch.from_numpy(shape_fitness(f, self.shaping, self.group_size))
        epoch = self.epoch
        sigma = self.sigma_at(epoch)
        norms: dict[str, float] = {}
        on_device: dict[torch.device, Tensor] = {}
        for name in self.trainable:
            p = self.master(name)
            fit = on_device.get(p.device)
            if fit is None:
                fit = on_device[p.device] = shaped.to(p.device)
            if self.kinds[name] == LOWRANK:
                shape = tuple(p.shape)[::-1] if self.transposed[name] else tuple(p.shape)
            else:
                shape = (p.numel(),)
            g = es_gradient(fit, shape, epoch=epoch, seed=self.seed,
                            param_id=self.param_ids[name], sigma=sigma, rank=self.rank,
                            noise_reuse=self.noise_reuse, antithetic=self.antithetic,
                            full_rank=False)
            norms[name] = float(torch.linalg.vector_norm(g.double()))
            g = g.neg_()
            if self.transposed[name]:
                g = g.t().contiguous()
            p.grad = g.reshape(p.shape).to(p.dtype)
        self.epoch = epoch + 1
        stats = {"epoch": epoch, "fitness_mean": float(f.mean()),
                 "fitness_max": float(f.max()), "fitness_min": float(f.min()),
                 "nonfinite": nbad, "grad_norm": math.sqrt(sum(v * v for v in norms.values())),
                 "grad_norms": norms, "sigma": sigma}
        if self.antithetic:
            stats["pair_disagreement"] = float((f[0::2] != f[1::2]).mean())
        return stats

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The ES state (epoch, noise key, shaping and the other settings, the parameters'
        names and shapes) as plain Python values, and the fp32 masters of a half-precision
        model. The module's parameters and the optimiser have their own state_dicts."""
        return {"epoch": self.epoch, "seed": self.seed,
                "sigma": None if callable(self.sigma) else self.sigma,
                "population": self.population, "rank": self.rank, "shaping": self.shaping,
                "group_size": self.group_size, "noise_reuse": self.noise_reuse,
                "antithetic": self.antithetic, "full_rank": self.full_rank,
                "nonfinite": self.nonfinite, "frozen": list(self.frozen),
                "param_ids": dict(self.param_ids),
                "shapes": {n: list(p.shape) for n, p in self.params.items()},
                "masters": {n: m.detach().clone() for n, m in self._masters.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where state_dict() was taken: epoch, seed, sigma (unless a schedule was
        used: then this ES's schedule stays), shaping and the other settings, fp32 masters.
        The module's parameters must have the same names (param_ids) and shapes."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        missing = {"epoch", "seed", "population", "rank", "param_ids"} - set(state)
        if missing:
            raise ValueError(f"state: missing {sorted(missing)}")
        if dict(state["param_ids"]) != self.param_ids:
            raise ValueError("state: its parameters (names -> param_ids) differ from this "
                             "module's")
        for name, shape in dict(state.get("shapes", {})).items():
            if tuple(shape) != tuple(self.params[name].shape):
                raise ValueError(f"state: parameter {name!r} has shape {tuple(shape)} in the "
                                 f"state but {tuple(self.params[name].shape)} in this module")
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
            self._classify()
        masters = dict(state.get("masters", {}))
        if set(masters) - set(self._masters):
            raise ValueError(f"state: fp32 masters of {sorted(set(masters) - set(self._masters))}"
                             " but those are not half-precision trainable parameters here")
        with torch.no_grad():
            for name, value in masters.items():
                self._masters[name].copy_(value)
        self.sync_weights()
        self._sigma_cache = None

    def __repr__(self) -> str:
        lowrank = sum(1 for n in self.trainable if self.kinds[n] == LOWRANK)
        return (f"ES({type(self.module).__name__}: {len(self.params)} parameters, "
                f"{len(self.trainable)} trainable, {lowrank} low rank; "
                f"population={self.population}, rank={self.rank}, "
                f"shaping={self.shaping!r}, epoch={self.epoch})")


def _register_optimizer_hooks(es: ES) -> tuple[Any, Any]:
    """Global optimiser step hooks that act for this ES when an optimiser steps one of
    es.parameters(): the fp32 masters are written into the half-precision model, and the
    changed-weight fraction is measured. Held through a weak reference: they do nothing (and
    are removed) once the ES is gone."""
    ref = weakref.ref(es)

    def owns(opt: torch.optim.Optimizer) -> ES | None:
        me = ref()
        if me is None:
            return None
        mine = {id(p) for p in me.parameters()}
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) in mine:
                    return me
        return None

    def pre(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        me = owns(opt)
        if me is not None:
            me._before_step()

    def post(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        me = owns(opt)
        if me is not None:
            me._after_step()

    handles = (register_optimizer_step_pre_hook(pre),
               register_optimizer_step_post_hook(post))
    weakref.finalize(es, lambda: [h.remove() for h in handles])
    return handles
