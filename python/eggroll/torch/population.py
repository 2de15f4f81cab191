"""Population mode of eggroll.torch.ES (``with es.ask() as pop:``): every module with trainable
parameters evaluates all members in one call, with no per-member copy of any matrix.

Batch layout (docs/torch.md, "Population mode"): the population is folded into the leading
axis. With ``b`` rows per member (``pop.batch``, declared by ``pop.fold`` and 1 by default) a
module input whose leading size is

- ``M * b`` (M = len(pop), the members evaluated) is *folded*: rows ``i*b .. i*b + b - 1``
  belong to member ``block[i]``. ``[P, ...]`` inputs are the case b = 1. An input whose
  leading axis is broadcast (stride 0, ``x.expand(M, ...)``) is *shared* instead;
- ``b`` (when b > 1) or ``1`` has no population axis: it is *shared* by every member, the
  shared part is computed once, and the output is folded ``[M * b, ...]``;
- anything else is a ValueError naming the module.

How each kind of module evaluates the population (the kinds come from ES._collect):
``linear`` (nn.Linear), ``conv1d`` (transformers' Conv1D, weight stored ``[in, out]``) and
``direct`` modules (eggroll.torch.linear): the eggroll op, weight low rank, bias per member;
``embedding``: eggroll's perturbed_embedding (only the rows looked up, never A);
``layernorm``: the normalisation once, then a per-member affine; ``vector`` (modules whose
own parameters are all vectors: RMSNorm, ...): the module's own forward with each parameter
as a broadcasting ``[M, 1, ..., d]`` tensor, checked once against member 0 run alone;
``vmap`` (opted in with ES(vmap_modules=...)): torch.vmap with per-member full copies.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .._ops import perturb_vector as _perturb_vector_op
from ._ops import _plain
from .._ops import perturbed_embedding as _embedding_op
from .._ops import perturbed_matmul as _perturbed_matmul_op
from .._ops import perturbed_matmul_full as _perturbed_matmul_full_op
from .._trainer import member_chunks

__all__ = ["Population", "ACTIVE"]

def _tanh_(x: Tensor) -> Tensor:
    """tanh in place. On a contiguous float32 CPU tensor through NumPy's view of it (no copy):
    NumPy's vectorised tanh took 12 ms where torch's took 86 ms on [131072, 256] at one thread
    (torch 2.13 CPU), and it is the one the NumPy trainer applies (the same bits)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        a = x.numpy()
        np.tanh(a, out=a)
        return x
    return x.tanh_()


def _result(shape: tuple[int, ...], device: torch.device) -> Tensor | None:
    """A float32 result of a population op: for an eager CPU call in NumPy's memory
    (torch.from_numpy, no copy); None (the op allocates) on other devices and where the op
    runs as a custom op (compile, modes, transforms: out= would cost a copy there). NumPy puts
    large arrays on transparent huge pages, so writing a fresh [M, b, m] result costs far
    fewer page faults than torch's allocator gives: a [512, 256, 256] shared-input forward
    took 29 ms into a NumPy array against 107-122 ms into a torch.empty one (one thread, a
    2-core VM), and the trainer's time per generation was dominated by it."""
    if device.type != "cpu" or not _plain(()):
        return None
    return torch.from_numpy(np.empty(shape, np.float32))


# Activation modules and their in-place forms (module, x) -> x.
_INPLACE: dict[type, Callable[[nn.Module, Tensor], Tensor]] = {
    nn.Tanh: lambda m, x: _tanh_(x),
    nn.Sigmoid: lambda m, x: x.sigmoid_(),
    nn.ReLU: lambda m, x: x.relu_(),
    nn.SiLU: lambda m, x: nn.functional.silu(x, inplace=True),
    nn.LeakyReLU: lambda m, x: nn.functional.leaky_relu_(x, m.negative_slope),
    nn.ELU: lambda m, x: nn.functional.elu_(x, m.alpha),
    nn.Hardtanh: lambda m, x: nn.functional.hardtanh_(x, m.min_val, m.max_val),
}

LOWRANK, FULL = "lowrank", "full"
ACTIVE: list["Population"] = []     # the populations inside `with es.ask():`, innermost last
_MAIN_INPUTS = ("input_ids", "inputs_embeds", "x", "input")


class Population:
    """The population-mode context of one epoch (``with es.ask() as pop: ...``).

    On entry the modules with trainable parameters get an instance ``forward`` that evaluates
    all members at once, the module is put in eval mode (no dropout: a member's output must
    not depend on the call) and torch.no_grad() is on; on exit everything is as it was.
    block: the members evaluated (es.ask(members=range(lo, hi)); all by default)."""

    def __init__(self, es: Any, block: range) -> None:
        self._es = es
        self.block = block
        self._asked = block              # what es.ask() named; block narrows in chunks()
        self.rows = slice(0, len(block))     # block's rows of the asked block's [M, ...]
        self.epoch = es.epoch
        self.sigma = es.sigma_at(es.epoch)
        self.batch = 1                   # rows per member (pop.fold declares it)
        self._vectors: dict[str, Tensor] = {}    # per-member vector params, once per epoch
        self._weights: dict[str, Tensor] = {}    # float32 [m, n] weights (Conv1D transposed)
        self._patched: list[nn.Module] = []
        self._hooks: list[Any] = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._no_grad: Any = None

    def __len__(self) -> int:
        return len(self.block)

    def __repr__(self) -> str:
        return (f"Population(members={len(self)}, batch={self.batch}, epoch={self.epoch}, "
                f"sigma={self.sigma})")

    # -- context ---------------------------------------------------------------------------

    def __enter__(self) -> Population:
        if self._patched or self._no_grad is not None:
            raise RuntimeError("this Population is already active")
        self._check_epoch()
        es = self._es
        es.sync_weights()                # half-precision models: weights from the masters
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        ACTIVE.append(self)
        try:
            root = es.module
            self._training = [(m, m.training) for m in root.modules()]
            root.eval()
            for mod_name, kind in es.module_kinds.items():
                module = es.modules[mod_name]
                if kind in ("direct", "frozen"):
                    continue             # direct: its forward calls eggroll.torch.linear
                if "forward" in module.__dict__:
                    raise RuntimeError(
                        f"module {mod_name!r} already has an instance forward: another "
                        "es.ask() is active on it, or a library wrapped it (accelerate's "
                        "device hooks, ...); population mode replaces forward for the `with` "
                        "block, so run it on a plain module")
                module.forward = self._forward_for(mod_name, module, kind)
                self._patched.append(module)
            self._patch_inplace_activations(root)
            self._hooks.append(root.register_forward_pre_hook(self._tile_extras,
                                                              with_kwargs=True))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)
        self._patched = []
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for module, training in self._training:
            module.training = training
        self._training = []
        if self in ACTIVE:
            ACTIVE.remove(self)
        if self._no_grad is not None:
            self._no_grad.__exit__(None, None, None)
            self._no_grad = None

    def _patch_inplace_activations(self, root: nn.Module) -> None:
        """An activation that directly follows a Linear / Conv1D / LayerNorm in an
        nn.Sequential reads a tensor population mode has just allocated and nothing else
        holds: it runs in place (saving one [M * b, ..., m] allocation and pass). Not for
        an activation module used in more than one place."""
        uses: dict[int, int] = {}
        for _, m in root.named_modules(remove_duplicate=False):
            uses[id(m)] = uses.get(id(m), 0) + 1
        kinds = {id(self._es.modules[n]): k for n, k in self._es.module_kinds.items()}
        for seq in root.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            children = list(seq.children())
            for prev, act in zip(children, children[1:]):
                inplace = _INPLACE.get(type(act))
                if (inplace is None or uses.get(id(act), 0) != 1 or "forward" in act.__dict__
                        or kinds.get(id(prev)) not in ("linear", "conv1d", "layernorm")):
                    continue
                act.forward = (lambda f, a: (lambda x: f(a, x)))(inplace, act)
                self._patched.append(act)

    # -- chunks ----------------------------------------------------------------------------

    def chunks(self, size: int) -> Iterator[Population]:
        """Evaluate the members in consecutive blocks of `size` (the last may be shorter),
        one block per iteration (docs/torch.md "Evaluating in chunks")::

            f = torch.empty(es.population)
            with es.ask() as pop:
                for sub in pop.chunks(16):       # sub is pop, narrowed to 16 members
                    logits = model(x.expand(len(sub), *x.shape))   # or x[sub.rows]
                    f[sub.rows] = -loss(logits)
            es.tell(f)

        Within an iteration this population evaluates only sub.members (len(pop) is the
        chunk's size; sub.rows are its rows of the asked block), so the [chunk, b, width]
        activations stay in cache; a member's outputs are bit for bit those of the undivided
        population. Also works outside ``with``: each block then runs in its own ``with``."""
        chunks = member_chunks(self._asked, size)
        if self.block is not self._asked:
            raise RuntimeError("chunks(): this population is already being evaluated in "
                               "chunks")
        entered = not self._patched and self._no_grad is None
        if entered:
            self.__enter__()
        try:
            for block, rows in chunks:
                self.block, self.rows = block, rows
                yield self
        finally:
            self.block, self.rows = self._asked, slice(0, len(self._asked))
            if entered:
                self.__exit__(None, None, None)

    # -- batch layout ----------------------------------------------------------------------

    def fold(self, *tensors: Tensor) -> Any:
        """[b, ...] -> [M * b, ...]: every member gets the b rows (member-major: rows
        i*b .. i*b + b - 1 are member block[i]'s), and pop.batch = b, so that the model's
        activations [M * b, ...] read as folded. Several tensors (prompt ids, attention mask)
        must share b; returns one tensor or a tuple."""
        if not tensors:
            raise ValueError("tensors: fold() needs at least one tensor")
        b = None
        out = []
        for t in tensors:
            if not isinstance(t, Tensor) or t.dim() < 1:
                raise ValueError(f"tensors: expected tensors [b, ...], got "
                                 f"{tuple(t.shape) if isinstance(t, Tensor) else type(t)}")
            if b is not None and t.shape[0] != b:
                raise ValueError(f"tensors: all must have the same leading size b, got {b} "
                                 f"and {t.shape[0]}")
            b = t.shape[0]
            out.append(t.repeat(len(self), *([1] * (t.dim() - 1))))
        self.batch = int(b)
        return out[0] if len(out) == 1 else tuple(out)

    def unfold(self, t: Tensor) -> Tensor:
        """[M * b, ...] -> [M, b, ...] (a view): member block[i]'s rows are [i]."""
        M = len(self)
        if not isinstance(t, Tensor) or t.dim() < 1 or t.shape[0] % M:
            raise ValueError(f"t: expected a folded tensor [{M} * b, ...], got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t)}")
        return t.view(M, t.shape[0] // M, *t.shape[1:])

    def _layout(self, x: Any, where: str) -> tuple[bool, Tensor]:
        """(shared, x): folded x [M*b, ...] as is, or the shared rows [b or 1, ...]."""
        M, b = len(self), self.batch
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise ValueError(f"x: module {where!r} expects tensor inputs in population mode, "
                             f"got {tuple(x.shape) if isinstance(x, Tensor) else type(x)}")
        if x.dtype == torch.float64:
            raise TypeError(f"x: module {where!r} got a float64 input; population mode "
                            "computes in float32 and would convert (copy) it: pass x.float()")
        L = x.shape[0]
        if L == M * b:
            if L > 1 and x.stride(0) == 0:
                return True, x[:1]          # broadcast (expanded) axis: one row, read once
            return False, x
        if L in (b, 1):
            return True, x
        want = f"[population={M}, ...]" if b == 1 else f"[{M} * {b}, ...] (folded)"
        raise ValueError(f"x: module {where!r} expects {want} inputs in population mode, got "
                         f"{tuple(x.shape)}; an input shared by every member is "
                         f"x.expand({M}, ...) or has leading size {b if b > 1 else 1}, and "
                         "pop.fold(x) folds a batch of b rows per member")

    def _fold_shared(self, y: Tensor, rows: int) -> Tensor:
        """y [M, rows, ...] from a shared input with `rows` leading rows -> [M * b, ...]."""
        M, b = len(self), self.batch
        if rows == 1 and b > 1:
            y = y.expand(M, b, *y.shape[2:])
        return y.reshape(M * y.shape[1], *y.shape[2:])

    def _tile_extras(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """At the model's entry: tensors of >= 2 dims with b leading rows (attention masks,
        position ids) other than the main input become [M * b, ...] (member-major), so an
        unmodified forward that mixes them with folded activations just works."""
        M, b = len(self), self.batch
        if b == 1 or M == 1:
            return None
        main = next((a for a in args if isinstance(a, Tensor)), None)
        if main is None:
            main = next((kwargs[k] for k in _MAIN_INPUTS if isinstance(kwargs.get(k), Tensor)),
                        None)

        def tile(t: Any) -> Any:
            if isinstance(t, Tensor) and t is not main and t.dim() >= 2 and t.shape[0] == b:
                return t.repeat(M, *([1] * (t.dim() - 1)))
            return t
        return tuple(tile(a) for a in args), {k: tile(v) for k, v in kwargs.items()}

    # -- noise keys and per-population tensors ----------------------------------------------

    def _check_epoch(self) -> None:
        if self._es.epoch != self.epoch:
            raise RuntimeError(f"this Population is of epoch {self.epoch} but the ES is at "
                               f"epoch {self._es.epoch}: call es.ask() again after tell()")

    def _key(self, name: str) -> dict[str, Any]:
        es = self._es
        return dict(seed=es.seed, param_id=es.param_ids[name], epoch=self.epoch,
                    noise_reuse=es.noise_reuse, antithetic=es.antithetic, sigma=self.sigma)

    @property
    def members(self) -> range:
        """The members evaluated, as the ops take them (a range: never materialised)."""
        return self.block

    def vector(self, name: str) -> Tensor:
        """float32 [M, *shape]: row j is member block[j]'s copy of parameter name perturbed
        full rank (v + s_i sigma z_k over the flattened values), made once per epoch; a
        frozen parameter gives an expanded view of itself."""
        self._check_epoch()
        es = self._es
        if name in es.frozen:
            p = es.params[name].detach()
            return p.expand(len(self), *p.shape)
        v = self._vectors.get(name)
        if v is None:       # the whole asked block's, once: a chunk's rows are a view of it
            flat = es.master(name).detach().reshape(-1).float().contiguous()
            v = _perturb_vector_op(flat, members=self._asked, **self._key(name))
            v = v.reshape(len(self._asked), *es.params[name].shape)
            self._vectors[name] = v
        return v if self.block is self._asked else v[self.rows]

    def weight(self, name: str) -> Tensor:
        """float32 [m, n]: the weight in the x @ W.T form the ops take (the fp32 master of a
        half-precision model; transformers' Conv1D [n, m] as its transposed view, which the
        core's GEMM reads without a copy), once per population."""
        W = self._weights.get(name)
        if W is None:
            es = self._es
            W = (es.master(name) if name not in es.frozen else es.params[name]).detach()
            W = W.float()        # no copy for float32
            # Conv1D stores [in, out]: its transpose is a view the core GEMM reads as is
            W = W.t() if es.transposed.get(name) else W.contiguous()
            if W.is_cuda:        # the CUDA GEMMs take contiguous weights only
                W = W.contiguous()
            self._weights[name] = W
        return W

    # -- population forwards ---------------------------------------------------------------

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None,
               where: str = "") -> Tensor:
        """Every member's x_i @ (weight + E_i).T (+ bias_i): weight a 2-D parameter the ES
        trains (low rank, or full rank with full_rank=True), bias a parameter (perturbed per
        member) or any tensor. x folded [M*b, ..., n] or shared (see the module docstring)."""
        es = self._es
        wname = es.name_of(weight)
        if wname is None or weight.dim() != 2:
            raise ValueError(f"weight: not a 2-D parameter of the module this ES trains "
                             f"({where or 'eggroll.torch.linear'})")
        return self._matmul(x, wname, es.name_of(bias) if bias is not None else None,
                            bias, where or wname)

    def _matmul(self, x: Tensor, wname: str, bname: str | None, bias: Tensor | None,
                where: str) -> Tensor:
        self._check_epoch()
        es = self._es
        shared, x = self._layout(x, where)
        W = self.weight(wname)
        M, m, n = len(self), W.shape[0], W.shape[1]
        if x.dim() < 2 or x.shape[-1] != n:
            raise ValueError(f"x: module {where!r} expects [rows, ..., {n}] inputs, got shape "
                             f"{tuple(x.shape)}")
        out_dtype, rows, mid = x.dtype, x.shape[0], x.shape[1:-1]
        # The ops compute in float32 on contiguous [M, R, n] rows: a half-precision or
        # non-contiguous activation is converted / copied here (docs/torch.md, "Copies").
        # A shared x [R, n] takes the ops' shared-input path: x W^T once, then each member's
        # correction (docs/ops.md "Shared inputs"; the same bits as the materialised input).
        x2 = x.reshape(-1, n) if shared else x.reshape(M, -1, n)
        x2 = x2.float().contiguous()
        if wname in es.frozen:
            y = _perturbed_matmul_op(x2, W, members=None, **self._key(wname))
            y = y.view(1 if shared else M, -1, m)
        elif es.kinds[wname] == LOWRANK:
            y = _perturbed_matmul_op(x2, W, members=self.members, shared=shared, rank=es.rank,
                                     out=_result((M, x2.shape[-2], m), x2.device),
                                     **self._key(wname))
        else:
            y = _perturbed_matmul_full_op(x2, W, members=self.members, shared=shared,
                                          out=_result((M, x2.shape[-2], m), x2.device),
                                          **self._key(wname))
        # y [M, R, m]; [1, R, m] when the weight is frozen and x shared
        if bname is not None and bname not in es.frozen:
            v = self.vector(bname)[:, None, :]
            y = y.add_(v) if y.shape[0] == M else y + v
        elif bias is not None:
            y.add_(bias.detach().float())
        if not shared:
            return y.view(rows, *mid, m).to(out_dtype)
        if y.shape[0] != M:                     # everything frozen: the output stays shared
            return y.view(rows, *mid, m).to(out_dtype)
        return self._fold_shared(y.view(M, rows, *mid, m), rows).to(out_dtype)

    def _embedding(self, ids: Tensor, name: str, module: nn.Embedding, where: str) -> Tensor:
        self._check_epoch()
        es = self._es
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"input: module {where!r} expects int64/int32 token ids, got "
                            f"{ids.dtype if isinstance(ids, Tensor) else type(ids).__name__}")
        if ids.dim() == 0:
            raise ValueError(f"input: module {where!r} expects [M * b, ...] token ids, got a "
                             "scalar")
        M = len(self)
        out_dtype = es.params[name].dtype
        shared, ids = self._layout(ids, where)
        W = self.weight(name)
        rows, rest = ids.shape[0], ids.shape[1:]
        flat = ids.reshape(-1) if shared else ids.reshape(M, -1)
        y = _embedding_op(flat, W, members=self.members, shared=shared, rank=es.rank,
                          out=_result((M, flat.shape[-1], W.shape[1]), W.device),
                          **self._key(name))
        y = y.view(M, rows if shared else rows // M, *rest, W.shape[1])
        if shared:
            y = self._fold_shared(y, rows)
        else:
            y = y.reshape(rows, *rest, W.shape[1])
        return y.to(out_dtype)

    def _layernorm(self, x: Tensor, module: nn.LayerNorm, names: dict[str, str],
                   where: str) -> Tensor:
        shared, x = self._layout(x, where)
        y = nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)
        return self._affine(y, shared, names.get("weight"), names.get("bias"), x.dtype)

    def _affine(self, y: Tensor, shared: bool, wname: str | None, bname: str | None,
                dtype: torch.dtype) -> Tensor:
        """y [rows, ..., *shape] (folded or shared) * w_i + b_i per member."""
        M, rows = len(self), y.shape[0]
        vshape = self._es.params[wname or bname].shape
        lead = y.shape[1:y.dim() - len(vshape)]
        ym = y.unsqueeze(0) if shared else y.view(M, rows // M, *y.shape[1:])
        ym = ym.float()
        expand = (M,) + (1,) * (1 + len(lead)) + tuple(vshape)
        if wname is not None:
            ym = ym * self.vector(wname).view(expand)
        if bname is not None:
            ym = ym + self.vector(bname).view(expand)
        if shared:
            ym = ym.expand(M, *ym.shape[1:]) if ym.shape[0] == 1 else ym
            return self._fold_shared(ym, rows).to(dtype)
        return ym.reshape(rows, *y.shape[1:]).to(dtype)

    def _vector_module(self, module: nn.Module, names: dict[str, str], where: str,
                       args: tuple, kwargs: dict) -> Any:
        """The module's own forward with every own parameter as a broadcasting [M, 1, ..., d]
        tensor over the unfolded input [M, rows, ...]; the first call per module checks
        member 0 against the module run alone with member 0's parameters."""
        if not args:
            raise ValueError(f"x: module {where!r} got no positional input")
        shared, x = self._layout(args[0], where)
        M, rows = len(self), x.shape[0]
        xm = x.unsqueeze(0) if shared else x.view(M, rows // M, *x.shape[1:])
        ones = (1,) * (xm.dim() - 2)
        params = {local: self.vector(full).view(M, *ones, *self._es.params[full].shape)
                  for local, full in names.items()}
        own = module.__dict__.pop("forward")     # functional_call must reach the class's
        try:
            try:
                ym = torch.func.functional_call(module, params, (xm, *args[1:]), kwargs)
            except RuntimeError as e:
                raise ValueError(self._vector_message(where, module, str(e))) from None
            if not isinstance(ym, Tensor) or ym.shape[:2] != (M, xm.shape[1]) and not (
                    shared and ym.dim() >= 1 and ym.shape[0] == M):
                raise ValueError(self._vector_message(
                    where, module, f"its output {type(ym).__name__} does not keep the "
                    "[members, rows, ...] layout"))
            if where not in self._es.checked_modules:
                one = {local: self.vector(full)[0] for local, full in names.items()}
                x0 = x if shared else xm[0]
                y0 = torch.func.functional_call(module, one, (x0, *args[1:]), kwargs)
                if not isinstance(y0, Tensor) or y0.shape != ym[0].shape or not torch.allclose(
                        ym[0].float(), y0.float(), rtol=1e-5, atol=1e-6):
                    raise ValueError(self._vector_message(
                        where, module, "member 0's rows differ from the module run with "
                        "member 0's parameters"))
                self._es.checked_modules.add(where)
        finally:
            module.forward = own
        if ym.dtype != x.dtype and ym.dtype.is_floating_point and x.dtype.is_floating_point:
            ym = ym.to(x.dtype)      # fp32 member vectors on a half-precision activation
        if shared:
            return self._fold_shared(ym.expand(M, *ym.shape[1:]), rows)
        return ym.reshape(rows, *ym.shape[2:])

    @staticmethod
    def _vector_message(where: str, module: nn.Module, why: str) -> str:
        return (f"module: {where!r} ({type(module).__name__}) cannot evaluate its per-member "
                f"vector parameters by broadcasting ({why}); freeze them (ES(frozen=...) or "
                f"target_modules=...) or accept per-member copies with "
                f"ES(vmap_modules=[{where!r}])")

    def _vmap(self, module: nn.Module, names: dict[str, str], where: str, args: tuple,
              kwargs: dict) -> Any:
        if not args:
            raise ValueError(f"x: module {where!r} got no positional input")
        shared, x = self._layout(args[0], where)
        M, b = len(self), self.batch
        if shared:            # per-member copies need per-member rows: [M * b, ...]
            x = (x.expand(M * b, *x.shape[1:]) if x.shape[0] == 1 else
                 x.repeat(M, *([1] * (x.dim() - 1))))
        xm = x.view(M, x.shape[0] // M, *x.shape[1:])
        squeeze = self.batch == 1
        stacked = {local: self.vector(full) for local, full in names.items()}
        own = module.__dict__.pop("forward")

        def one(params: dict[str, Tensor], xi: Tensor, *a: Any) -> Any:
            return torch.func.functional_call(module, params, (xi[0] if squeeze else xi, *a),
                                              kwargs)
        in_dims = (0, 0, *(None for _ in args[1:]))
        try:
            y = torch.vmap(one, in_dims=in_dims)(stacked, xm, *args[1:])
        finally:
            module.forward = own
        return y if squeeze else y.reshape(M * y.shape[1], *y.shape[2:])

    def _forward_for(self, mod_name: str, module: nn.Module, kind: str) -> Callable[..., Any]:
        es = self._es
        names = {local: es.name_of(p) for local, p in module.named_parameters(recurse=False)}
        where = mod_name or type(module).__name__
        if kind in ("linear", "conv1d"):
            wname, bname = names["weight"], names.get("bias")
            bias = module.bias

            def forward(x: Tensor) -> Tensor:
                return self._matmul(x, wname, bname, bias, where)
        elif kind == "embedding":
            def forward(ids: Tensor) -> Tensor:                # type: ignore[misc]
                return self._embedding(ids, names["weight"], module, where)
        elif kind == "layernorm":
            def forward(x: Tensor) -> Tensor:                  # type: ignore[misc]
                return self._layernorm(x, module, names, where)
        elif kind == "vector":
            def forward(*args: Any, **kwargs: Any) -> Any:     # type: ignore[misc]
                self._check_epoch()
                return self._vector_module(module, names, where, args, kwargs)
        else:
            def forward(*args: Any, **kwargs: Any) -> Any:     # type: ignore[misc]
                self._check_epoch()
                return self._vmap(module, names, where, args, kwargs)
        return forward
