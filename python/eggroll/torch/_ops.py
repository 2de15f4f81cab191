"""The eggroll ops on torch tensors: what only torch knows. Plain eager calls go straight to the
C++ entries (eggroll._core for CPU tensors, on torch's OpenMP threads; eggroll._cuda for CUDA
ones, on the current stream). Under torch.compile, autograd, functorch transforms or tensor
modes the same entries run inside custom ops ``torch.ops.eggroll.<name>``, one per op with one
generic schema ``(Tensor?[] tensors, int[] codes, float[] floats) -> Tensor[]`` that carries
the entry's positional arguments; their fake implementations are the core's own checks
(``_core.check_<name>``), and perturbed_matmul / perturb_vector (and perturbed_embedding, in
W) have autograd rules.
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch._C import _are_functorch_transforms_active, _is_torch_function_mode_enabled
from torch._C import _len_torch_dispatch_stack

from .. import _core
from .. import _ops as _generic
from .._ops import OPS, cuda_module, register
from ._threads import use_torch_threads

NS = "eggroll"
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int32,
    torch.int64, torch.uint32, torch.uint8, torch.int16, torch.bool)}
NOT_DIFFERENTIABLE = ("{op} is not differentiable: evolution strategies estimate gradients "
                      "from fitness (eggroll.torch.ES); use perturbed_matmul / perturb_vector "
                      "for a differentiable forward")


def _empty(shape: tuple, dt: str, like: Tensor) -> tuple[Tensor, int]:
    """A new tensor for an entry's result and its address (the bridge need not export it); the
    sizes as separate ints, which torch parses faster than a tuple."""
    if like.is_cpu:      # (no device argument to parse)
        t = torch.empty(*shape or ((),), dtype=_DTYPES[dt])
    else:
        t = torch.empty(*shape or ((),), dtype=_DTYPES[dt], device=like.device)
    return t, t.data_ptr()


def _gemm(a: Tensor, b: Tensor, out: Tensor, kind: str) -> None:
    if kind == "nt":      # out [..., m] = a [..., n] b [m, n]^T
        torch.matmul(a.reshape(-1, a.shape[-1]), b.t(), out=out.view(-1, b.shape[0]))
    elif kind == "tn":    # out = a^T b
        torch.matmul(a.t(), b, out=out)
    else:
        out.addmm_(a.t(), b)


def _register(module: Any) -> None:
    # to_dlpack exports a tensor that requires grad as it is (its data; autograd is the custom
    # ops' business)
    module.register_framework(Tensor, torch.utils.dlpack.to_dlpack, _empty,
                              lambda t, dt: t.to(_DTYPES[dt]), _gemm, True, torch.from_dlpack)


_register(_core)
use_torch_threads(True)


@functools.cache
def _cuda() -> Any:
    """eggroll._cuda, registered for torch (RuntimeError in a build without CUDA)."""
    module = cuda_module()
    _register(module)
    return module


_compiling, _grad_enabled = torch.compiler.is_compiling, torch.is_grad_enabled


def _plain(args: tuple, k: int = 0) -> bool:
    """Whether a call whose k leading arguments are its arrays may skip the custom op: eager,
    no autograd, no transform or mode."""
    if (_compiling() or _are_functorch_transforms_active() or _is_torch_function_mode_enabled()
            or _len_torch_dispatch_stack()):
        return False
    if _grad_enabled():
        for a in args[:k]:
            if getattr(a, "requires_grad", False):
                return False
    return True


# ---- the custom ops' generic schema: an entry's positional arguments as tensors / ints / floats
_TENSOR, _NONE, _BOOL, _INT, _RANGE, _SEQ, _FLOAT = range(7)


def _words(v: int) -> list[int]:
    return [v & 0xFFFFFFFF, v >> 32]


def _encode(args: tuple) -> tuple[list, list[int], list[float]]:
    tensors: list = []
    codes: list[int] = []
    floats: list[float] = []
    for a in args:
        if isinstance(a, Tensor):
            codes.append(_TENSOR)
            tensors.append(a)
        elif a is None:
            codes.append(_NONE)
        elif isinstance(a, (bool, np.bool_)):
            codes += [_BOOL, int(a)]
        elif isinstance(a, range):
            codes += [_RANGE, *_words(a.start), *_words(a.stop), *_words(a.step)]
        elif isinstance(a, numbers.Integral):
            codes += [_INT, *_words(int(a))]
        elif isinstance(a, numbers.Real):
            codes.append(_FLOAT)
            floats.append(float(a))
        elif isinstance(a, (tuple, list)):   # a shape, or members as a list
            codes += [_SEQ, len(a)] + [w for v in a for w in _words(int(v))]
        else:                                # an array: as a tensor
            codes.append(_TENSOR)
            tensors.append(torch.as_tensor(np.asarray(a)))
    return tensors, codes, floats


def _decode(tensors: list, codes: list[int], floats: list[float]) -> tuple:
    t, f, c = iter(tensors), iter(floats), iter(codes)

    def word() -> int:
        return next(c) | (next(c) << 32)

    read = {_TENSOR: lambda: next(t), _NONE: lambda: None, _BOOL: lambda: bool(next(c)),
            _INT: word, _RANGE: lambda: range(word(), word(), word()),   # start, stop, step
            _SEQ: lambda: tuple(word() for _ in range(next(c))), _FLOAT: lambda: next(f)}
    return tuple(read[k]() for k in c)


def _run(name: str, args: tuple) -> Any:
    """The entry for the arrays' device (the first argument decides: the ops' leading array,
    or `like`)."""
    t = args[0]
    if not isinstance(t, Tensor) or not t.is_cuda:
        return getattr(_core, name)(*args)
    return getattr(_cuda(), name)(*args, torch.cuda.current_stream(t.device).cuda_stream)


def _fake(name: str, args: tuple) -> list[Tensor]:
    specs = getattr(_core, "check_" + name)(*args)
    dev = next(a for a in args if isinstance(a, Tensor)).device
    return [torch.empty(shape, dtype=_DTYPES[dt], device=dev) for shape, dt in specs]


def _define(name: str) -> Any:
    @torch.library.custom_op(f"{NS}::{name}", mutates_args=())
    def op(tensors: list[Optional[Tensor]], codes: list[int], floats: list[float]) -> list[Tensor]:
        out = _run(name, _decode(tensors, codes, floats))
        return list(out) if isinstance(out, tuple) else [out]

    op.register_fake(lambda tensors, codes, floats: _fake(name, _decode(tensors, codes, floats)))
    return op


CUSTOM_OPS = {name: _define(name) for name in OPS}


def _setup(ctx: Any, inputs: tuple, output: Any) -> None:
    tensors, codes, floats = inputs
    ctx.args = _decode(tensors, codes, floats)
    ctx.grads = [isinstance(t, Tensor) and t.requires_grad for t in ctx.args[:2]]
    ctx.save_for_backward(*[a for a in ctx.args[:2] if isinstance(a, Tensor)])
    ctx.n = len(tensors)


def _grads(ctx: Any, *g: Any) -> tuple:
    """The custom op's input gradients: g for its leading tensors, None for the rest."""
    return [*g] + [None] * (ctx.n - len(g)), None, None


def _pm_backward(ctx: Any, grads: list) -> tuple:
    """y_i = x_i (W + A_i B_i^T)^T, so dL/dx_i = g_i W + (g_i A_i) B_i^T and
    dL/dW = sum_i g_i^T x_i (the noise does not depend on W). Exact and cheap: the factors are
    O((m + n) r) per member, regenerated from the key. A shared x (no member axis) sums the
    members' contributions. Without the base product (base=False) only the correction's
    terms: torch differentiates the framework's x @ W.T itself."""
    x, W = ctx.saved_tensors
    args, g = ctx.args, grads[0]
    members, shared, base = args[2], args[4], args[5]
    m, n = W.shape
    xs = x.float().reshape(-1, n)                       # [M b, n], or [b, n] when shared
    M = (len(members) if members is not None else 1) if shared else x.shape[0]
    g3 = g.reshape(M, -1, m)                            # [M, b, m]
    gx = gW = None
    if ctx.grads[0]:
        gx3 = torch.matmul(g3, W.float()) if base else g3.new_zeros(g3.shape[:-1] + (n,))
        if members is not None:
            A, B = BACKEND.lowrank_factors(x, (m, n), members, *args[6:])
            gx3 = gx3 + torch.bmm(torch.bmm(g3, A), B.transpose(1, 2))
        gx = (gx3.sum(0) if shared else gx3).reshape(x.shape).to(x.dtype)
    if ctx.grads[1] and base:
        gW = (g3.sum(0).t() @ xs if shared else g3.reshape(-1, m).t() @ xs).to(W.dtype)
    return _grads(ctx, gx, gW)


def _pv_backward(ctx: Any, grads: list) -> tuple:
    """Row i is v plus noise that does not depend on v: dL/dv = sum_i g_i."""
    return _grads(ctx, grads[0].sum(0) if ctx.grads[0] else None)


def _pe_backward(ctx: Any, grads: list) -> tuple:
    """Row t of every member's table is W[t] plus noise that does not depend on W: dL/dW[t] is
    the sum of the gradients of the rows that read row t (nn.Embedding's backward). ids may
    lack the member axis (shared): it broadcasts against the gradient's leading axes."""
    ids, W = ctx.saved_tensors
    g = grads[0]
    gW = None
    if ctx.grads[1]:
        d = W.shape[1]
        rows = ids.expand(g.shape[:-1]).reshape(-1)
        gW = g.new_zeros(W.shape).index_add_(0, rows, g.reshape(-1, d)).to(W.dtype)
    return _grads(ctx, None, gW)


def _not_differentiable(name: str) -> Any:
    def backward(ctx: Any, *grads: Any) -> tuple:
        raise RuntimeError(NOT_DIFFERENTIABLE.format(op=f"{NS}::{name}"))
    return backward


_BACKWARDS = {"perturbed_matmul": _pm_backward, "perturb_vector": _pv_backward,
              "perturbed_embedding": _pe_backward}
for _name, _op in CUSTOM_OPS.items():
    _op.register_autograd(_BACKWARDS.get(_name) or _not_differentiable(_name), setup_context=_setup)


class Backend:
    """The entries for torch tensors (eggroll._ops.backend): direct when plain, else the ops."""

    def __getattr__(self, name: str) -> Any:
        k, cpu = OPS[name][0], getattr(_core, name)

        def call(*args: Any) -> Any:
            if not _plain(args, k):
                return _through_op(name, args)
            return _run(name, args) if args[0].is_cuda else cpu(*args)

        setattr(self, name, call)
        return call


def _through_op(name: str, args: tuple) -> Any:
    """The custom op: traced by torch.compile, differentiated by autograd. out is filled by a
    copy (custom ops never write their inputs)."""
    pos = OPS[name][1]
    out = args[pos] if pos is not None else None
    if out is not None:
        args = args[:pos] + (None,) + args[pos + 1:]
    if not torch.compiler.is_compiling():
        getattr(_core, "check_" + name)(*args)     # named errors before any encoding
    res = CUSTOM_OPS[name](*_encode(args))
    res = res[0] if len(res) == 1 else tuple(res)
    return res if out is None else out.copy_(res)


BACKEND = Backend()
register(BACKEND, Tensor, torch.nn.Parameter)

# The ops of eggroll.torch: results are tensors also for NumPy or list inputs.
globals().update(_generic.framework_ops(
    lambda a: a if isinstance(a, (Tensor, range)) or a is None else torch.as_tensor(a),
    lambda: torch.empty(0), (Tensor, torch.nn.Parameter)))
__all__ = list(OPS)


def lowrank_factors(shape: Any, *, members: Any, epoch: Any, seed: Any, param_id: int = 0,
                    sigma: float, rank: int = 1, noise_reuse: int = 1, antithetic: bool = True,
                    device: Any = None) -> tuple[Tensor, Tensor]:
    """(A float32 [M, m, r] scaled by s_i sigma / sqrt(r), B float32 [M, n, r]) on device (by
    default the device of members when it is a tensor, else the CPU)."""
    if device is None:
        device = members.device if isinstance(members, Tensor) else "cpu"
    return _generic.lowrank_factors(shape, members=members, epoch=epoch, seed=seed,
                                    param_id=param_id, sigma=sigma, rank=rank,
                                    noise_reuse=noise_reuse, antithetic=antithetic,
                                    like=torch.empty(0, device=device))
