"""The eggroll ops as PyTorch custom ops (``torch.ops.eggroll.<name>``): CPU and CUDA kernels,
fake (meta) implementations for torch.compile, and the autograd rules.

Pure Python over ``torch.library.custom_op``: each CPU kernel wraps the tensors' memory in
``eggroll._core.TensorView``s (``tensor.data_ptr()``, strides in elements) and calls the same
core function as the NumPy adapter (GIL released there), so the bits are the NumPy path's.
CUDA kernels call ``eggroll._cuda`` (CUDA builds only) on the current stream; the base GEMM
on the GPU is torch.matmul and the core adds the per-member correction.

Op arguments are what a torch schema can hold: the 64-bit seed travels as two 32-bit halves
(``seed_lo``, ``seed_hi``; a schema int is int64, so seeds >= 2^63 would not fit whole),
members as an int64 tensor (``None``: the unperturbed product). The ops assume validated
arguments (``eggroll.torch`` checks them and names the argument); the kernels still check
dtype, device and layout, because a wrong pointer here would read the wrong memory.
"""
from __future__ import annotations

import importlib

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .. import _core
from ._threads import on_torch_threads

NS = "eggroll"
_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3,
          torch.int8: 4, torch.int32: 5, torch.int64: 6, torch.uint32: 7}
NO_MEMBERS = _core.TensorView()

NOT_DIFFERENTIABLE = ("{op} is not differentiable: evolution strategies estimate the gradient "
                      "from fitness values (eggroll.es_gradient, eggroll.torch.ES.tell), so no "
                      "backward pass is needed. Compute it under torch.no_grad() or detach() "
                      "its inputs.")


def view(t: Tensor) -> Any:
    """A core TensorView over a tensor's memory (strides in elements, device and ordinal)."""
    code = _CODES.get(t.dtype)
    if code is None:
        raise TypeError(f"tensor: dtype {t.dtype} has no core equivalent")
    dev = 1 if t.device.type == "cuda" else 0
    idx = (t.device.index or 0) if dev else 0
    return _core.TensorView(t.data_ptr(), code, list(t.shape), list(t.stride()), dev, idx)


def _mview(members: Optional[Tensor]) -> Any:
    return NO_MEMBERS if members is None else view(members)


def seed_halves(seed: int) -> tuple[int, int]:
    """A 64-bit seed as (low, high) 32-bit halves (both fit a schema int)."""
    return seed & 0xFFFFFFFF, seed >> 32


def _args(seed_lo: int, seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
          antithetic: bool, sigma: float, rank: int) -> Any:
    return _core.EsArgs(seed=(seed_hi << 32) | seed_lo, param_id=param_id, epoch=epoch,
                        noise_reuse=noise_reuse, antithetic=antithetic, sigma=sigma, rank=rank)


def _check(t: Tensor, name: str, dtypes: Sequence[torch.dtype], device: torch.device) -> None:
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous; pass {name}.contiguous()")


def _cuda() -> Any:
    """eggroll._cuda, or a RuntimeError that says this build has no CUDA kernels."""
    try:
        # import_module consults sys.modules (so a module blocked there counts as absent even
        # after `eggroll._cuda` became an attribute of the package).
        mod = importlib.import_module("eggroll._cuda")
    except ImportError:
        raise RuntimeError("eggroll was built without CUDA (no eggroll._cuda module): CUDA "
                           "tensors need a CUDA build; move the tensors to the CPU or "
                           "reinstall eggroll with CUDA") from None
    return mod


def _stream(t: Tensor) -> int:
    """The cudaStream_t of torch's current stream on t's device, as an integer."""
    return int(torch.cuda.current_stream(t.device).cuda_stream)


_F32 = (torch.float32,)
_I64 = (torch.int64,)


# ------------------------------------------------------------------------------------------
# forward: perturbed_matmul (low rank), perturbed_matmul_full (OpenES), perturb_vector
# ------------------------------------------------------------------------------------------

def _forward_checks(x: Tensor, W: Tensor, members: Optional[Tensor]) -> None:
    _check(x, "x", _F32, x.device)
    # W [m, n] contiguous, or the transpose of a contiguous [n, m] (a weight stored [in, out],
    # passed as W.t() without a copy: the core packs it into the same GEMM panels)
    _check(W if W.dim() != 2 or W.is_contiguous() else W.t(), "W", _F32, x.device)
    if members is not None:
        _check(members, "members", _I64, x.device)


@torch.library.custom_op(f"{NS}::perturbed_matmul", mutates_args=(), device_types="cpu")
def perturbed_matmul(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                     seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                     antithetic: bool, sigma: float, rank: int) -> Tensor:
    """x float32 [M, n] or [M, b, n], W float32 [m, n], members int64 [M] or None ->
    float32 [M, m] or [M, b, m]: x_i W^T + (x_i B_k) A_k^T per member (docs/ops.md)."""
    _forward_checks(x, W, members)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    y = x.new_empty(x.shape[:-1] + (W.shape[0],))
    with on_torch_threads():
        _core.perturbed_matmul(view(x), view(W), _mview(members), args, view(y))
    return y


@perturbed_matmul.register_kernel("cuda")
def _perturbed_matmul_cuda(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                           seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                           antithetic: bool, sigma: float, rank: int) -> Tensor:
    cuda = _cuda()
    _forward_checks(x, W, members)
    y = torch.matmul(x, W.t())     # the base GEMM: the framework's (cuBLAS), on its stream
    if members is not None:
        args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
        cuda.lowrank_correction(view(x), view(members), args, view(y), stream=_stream(x))
    return y


@perturbed_matmul.register_fake
def _perturbed_matmul_fake(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                           seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                           antithetic: bool, sigma: float, rank: int) -> Tensor:
    return x.new_empty(x.shape[:-1] + (W.shape[0],))


@torch.library.custom_op(f"{NS}::lowrank_factors", mutates_args=(), device_types="cpu")
def lowrank_factors(members: Tensor, m: int, n: int, seed_lo: int, seed_hi: int,
                    param_id: int, epoch: int, noise_reuse: int, antithetic: bool,
                    sigma: float, rank: int) -> tuple[Tensor, Tensor]:
    """members int64 [M] -> (A float32 [M, m, r] scaled by s_i sigma / sqrt(r), B [M, n, r])."""
    _check(members, "members", _I64, members.device)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    A = torch.empty((members.shape[0], m, rank), dtype=torch.float32)
    B = torch.empty((members.shape[0], n, rank), dtype=torch.float32)
    with on_torch_threads():
        _core.lowrank_factors(view(members), m, n, args, view(A), view(B))
    return A, B


@lowrank_factors.register_kernel("cuda")
def _lowrank_factors_cuda(members: Tensor, m: int, n: int, seed_lo: int, seed_hi: int,
                          param_id: int, epoch: int, noise_reuse: int, antithetic: bool,
                          sigma: float, rank: int) -> tuple[Tensor, Tensor]:
    cuda = _cuda()
    _check(members, "members", _I64, members.device)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    A = members.new_empty((members.shape[0], m, rank), dtype=torch.float32)
    B = members.new_empty((members.shape[0], n, rank), dtype=torch.float32)
    cuda.lowrank_factors(view(members), m, n, args, view(A), view(B), stream=_stream(members))
    return A, B


@lowrank_factors.register_fake
def _lowrank_factors_fake(members: Tensor, m: int, n: int, seed_lo: int, seed_hi: int,
                          param_id: int, epoch: int, noise_reuse: int, antithetic: bool,
                          sigma: float, rank: int) -> tuple[Tensor, Tensor]:
    M = members.shape[0]
    return (members.new_empty((M, m, rank), dtype=torch.float32),
            members.new_empty((M, n, rank), dtype=torch.float32))


def _pm_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, W, members, *key = inputs
    ctx.save_for_backward(x, W, members)
    ctx.key = key          # seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank


def _pm_backward(ctx: Any, grad: Tensor) -> tuple:
    """y_i = x_i (W + E_i)^T with E_i = A_i B_i^T, so dL/dx_i = g_i W + (g_i A_i) B_i^T and
    dL/dW = sum_i g_i^T x_i (the noise does not depend on W). Both are exact and cheap: the
    factors are O((m + n) r) per member, regenerated from the key."""
    x, W, members = ctx.saved_tensors
    g = grad.contiguous()
    gx = gW = None
    if ctx.needs_input_grad[0]:
        gx = torch.matmul(g, W)
        if members is not None:
            A, B = lowrank_factors(members, W.shape[0], W.shape[1], *ctx.key)
            g3 = g if g.dim() == 3 else g.unsqueeze(1)
            corr = torch.bmm(torch.bmm(g3, A), B.transpose(1, 2))       # [M, b, n]
            gx = gx + (corr if g.dim() == 3 else corr.squeeze(1))
    if ctx.needs_input_grad[1]:
        gW = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
    return (gx, gW) + (None,) * 9


perturbed_matmul.register_autograd(_pm_backward, setup_context=_pm_setup)


@torch.library.custom_op(f"{NS}::perturbed_matmul_full", mutates_args=(), device_types="cpu")
def perturbed_matmul_full(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                          seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                          antithetic: bool, sigma: float) -> Tensor:
    """The full-rank (OpenES) forward: x_i (W + s_i sigma Z_k)^T. Shapes as perturbed_matmul."""
    _forward_checks(x, W, members)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, 1)
    y = x.new_empty(x.shape[:-1] + (W.shape[0],))
    with on_torch_threads():
        _core.perturbed_matmul_full(view(x), view(W), _mview(members), args, view(y))
    return y


@perturbed_matmul_full.register_kernel("cuda")
def _perturbed_matmul_full_cuda(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                                seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                                antithetic: bool, sigma: float) -> Tensor:
    cuda = _cuda()
    _forward_checks(x, W, members)
    y = torch.matmul(x, W.t())
    if members is not None:
        args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, 1)
        cuda.fullrank_correction(view(x), view(members), args, view(y), stream=_stream(x))
    return y


@perturbed_matmul_full.register_fake
def _perturbed_matmul_full_fake(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                                seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                                antithetic: bool, sigma: float) -> Tensor:
    return x.new_empty(x.shape[:-1] + (W.shape[0],))


@torch.library.custom_op(f"{NS}::perturb_vector", mutates_args=(), device_types="cpu")
def perturb_vector(v: Tensor, members: Tensor, seed_lo: int, seed_hi: int, param_id: int,
                   epoch: int, noise_reuse: int, antithetic: bool, sigma: float) -> Tensor:
    """v float32 [m], members int64 [M] -> float32 [M, m], row i = v + s_i sigma z_k[0:m]."""
    _check(v, "v", _F32, v.device)
    _check(members, "members", _I64, v.device)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, 1)
    y = v.new_empty((members.shape[0], v.shape[0]))
    with on_torch_threads():
        _core.perturb_vector(view(v), view(members), args, view(y))
    return y


@perturb_vector.register_kernel("cuda")
def _perturb_vector_cuda(v: Tensor, members: Tensor, seed_lo: int, seed_hi: int, param_id: int,
                         epoch: int, noise_reuse: int, antithetic: bool, sigma: float) -> Tensor:
    cuda = _cuda()
    _check(v, "v", _F32, v.device)
    _check(members, "members", _I64, v.device)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, 1)
    y = v.new_empty((members.shape[0], v.shape[0]))
    cuda.perturb_vector(view(v), view(members), args, view(y), stream=_stream(v))
    return y


@perturb_vector.register_fake
def _perturb_vector_fake(v: Tensor, members: Tensor, seed_lo: int, seed_hi: int, param_id: int,
                         epoch: int, noise_reuse: int, antithetic: bool, sigma: float) -> Tensor:
    return v.new_empty((members.shape[0], v.shape[0]))


def _pv_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    pass


def _pv_backward(ctx: Any, grad: Tensor) -> tuple:
    """Row i is v plus noise that does not depend on v: dL/dv = sum_i g_i."""
    return (grad.sum(0),) + (None,) * 8


perturb_vector.register_autograd(_pv_backward, setup_context=_pv_setup)


# ------------------------------------------------------------------------------------------
# update and fitness shaping (not differentiable: their backward raises a clear error)
# ------------------------------------------------------------------------------------------

@torch.library.custom_op(f"{NS}::es_gradient", mutates_args=(), device_types="cpu")
def es_gradient(fitness: Tensor, members: Tensor, shape: Sequence[int], seed_lo: int,
                seed_hi: int, param_id: int, epoch: int, noise_reuse: int, antithetic: bool,
                sigma: float, rank: int, full_rank: bool) -> Tensor:
    """fitness float32 [N], members int64 [N] -> g float32 [shape] = (1/(N sigma)) sum f_i E_i."""
    _check(fitness, "fitness", _F32, fitness.device)
    _check(members, "members", _I64, fitness.device)
    if not bool(torch.isfinite(fitness).all()):
        raise ValueError("fitness: contains NaN or inf")
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    g = fitness.new_empty(tuple(shape))
    with on_torch_threads():
        _core.es_gradient(view(fitness), view(members), args, full_rank or len(shape) == 1,
                          fitness.shape[0], False, view(g))
    return g


# Factor memory per chunk of the CUDA low-rank estimate (the CPU core uses the same bound).
FACTOR_CHUNK_BYTES = 64 << 20


@es_gradient.register_kernel("cuda")
def _es_gradient_cuda(fitness: Tensor, members: Tensor, shape: Sequence[int], seed_lo: int,
                      seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                      antithetic: bool, sigma: float, rank: int, full_rank: bool) -> Tensor:
    """Full rank / vectors: the CUDA kernel. Low rank: per chunk of members the factor rows
    (eggroll._cuda.es_gradient_factors) and one torch GEMM g (+)= Af^T Bf; the number of
    rows needs the member indices on the host (one small copy of members)."""
    cuda = _cuda()
    _check(fitness, "fitness", _F32, fitness.device)
    _check(members, "members", _I64, fitness.device)
    args = _args(seed_lo, seed_hi, param_id, epoch, noise_reuse, antithetic, sigma, rank)
    g = fitness.new_empty(tuple(shape))
    stream = _stream(fitness)
    N = fitness.shape[0]
    if full_rank or len(shape) == 1:
        cuda.es_gradient(view(fitness), view(members), args, True, N, False, view(g),
                         stream=stream)
        return g
    m, n = shape
    host = members.cpu()
    step = max(2, (FACTOR_CHUNK_BYTES // (4 * rank * (m + n))) // 2 * 2)   # even: pairs whole
    for c0 in range(0, N, step):
        c1 = min(N, c0 + step)
        C = int(_core.es_gradient_columns(view(host[c0:c1]), antithetic, rank))
        Af = fitness.new_empty((C, m))
        Bf = fitness.new_empty((C, n))
        cuda.es_gradient_factors(view(fitness[c0:c1]), view(members[c0:c1]), m, n, args, N,
                                 view(Af), view(Bf), stream=stream)
        if c0 == 0:
            torch.matmul(Af.t(), Bf, out=g)
        else:
            g.addmm_(Af.t(), Bf)
    if N == 0:
        g.zero_()
    return g


@es_gradient.register_fake
def _es_gradient_fake(fitness: Tensor, members: Tensor, shape: Sequence[int], seed_lo: int,
                      seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                      antithetic: bool, sigma: float, rank: int, full_rank: bool) -> Tensor:
    return fitness.new_empty(tuple(shape))


_FIT = (torch.float32, torch.float64)


def _fitness_kernel(name: str, out_len: Any, extra: tuple = ()) -> Any:
    """CPU and CUDA kernels of a shaping op f [N] (float32/64) -> float32 [out_len(N)]."""
    def cpu(f: Tensor, *rest: Any) -> Tensor:
        _check(f, "f", _FIT, f.device)
        out = f.new_empty((out_len(f.shape[0]),), dtype=torch.float32)
        with on_torch_threads():
            getattr(_core, name)(view(f), *rest, view(out))
        return out

    def cuda(f: Tensor, *rest: Any) -> Tensor:
        mod = _cuda()
        _check(f, "f", _FIT, f.device)
        out = f.new_empty((out_len(f.shape[0]),), dtype=torch.float32)
        getattr(mod, name)(view(f), *rest, view(out), stream=_stream(f))
        return out
    return cpu, cuda


_cr_cpu, _cr_cuda = _fitness_kernel("centered_rank", lambda N: N)
_zs_cpu, _zs_cuda = _fitness_kernel("zscore", lambda N: N)
_as_cpu, _as_cuda = _fitness_kernel("antithetic_sign", lambda N: N // 2)


@torch.library.custom_op(f"{NS}::centered_rank", mutates_args=(), device_types="cpu")
def centered_rank(f: Tensor) -> Tensor:
    """f float32/64 [N] -> float32 [N]: ranks onto [-0.5, 0.5], ties share the mean rank."""
    return _cr_cpu(f)


@torch.library.custom_op(f"{NS}::zscore", mutates_args=(), device_types="cpu")
def zscore(f: Tensor, group_size: int) -> Tensor:
    """f float32/64 [N] -> float32 [N]: (f - group mean) / sqrt(var + 1e-5)."""
    return _zs_cpu(f, group_size)


@torch.library.custom_op(f"{NS}::antithetic_sign", mutates_args=(), device_types="cpu")
def antithetic_sign(f: Tensor) -> Tensor:
    """f float32/64 [N] (N even) -> float32 [N/2]: sign(f_2k - f_2k+1)."""
    return _as_cpu(f)


centered_rank.register_kernel("cuda")(_cr_cuda)
zscore.register_kernel("cuda")(_zs_cuda)
antithetic_sign.register_kernel("cuda")(_as_cuda)
centered_rank.register_fake(lambda f: f.new_empty(f.shape, dtype=torch.float32))
zscore.register_fake(lambda f, group_size: f.new_empty(f.shape, dtype=torch.float32))
antithetic_sign.register_fake(lambda f: f.new_empty((f.shape[0] // 2,), dtype=torch.float32))


# ------------------------------------------------------------------------------------------
# the raw generator
# ------------------------------------------------------------------------------------------

@torch.library.custom_op(f"{NS}::philox4x32", mutates_args=(), device_types="cpu")
def philox4x32(counter: Tensor, key: Tensor) -> Tensor:
    """counter uint32 [C, 4], key uint32 [2] -> uint32 [C, 4]: Philox4x32-10 (docs/noise.md)."""
    _check(counter, "counter", (torch.uint32,), counter.device)
    _check(key, "key", (torch.uint32,), counter.device)
    out = torch.empty_like(counter)
    with on_torch_threads():
        _core.philox4x32(view(counter), view(key), view(out))
    return out


@philox4x32.register_kernel("cuda")
def _philox4x32_cuda(counter: Tensor, key: Tensor) -> Tensor:
    cuda = _cuda()
    _check(counter, "counter", (torch.uint32,), counter.device)
    _check(key, "key", (torch.uint32,), counter.device)
    out = torch.empty_like(counter)
    cuda.philox4x32(view(counter), view(key), view(out), stream=_stream(counter))
    return out


@philox4x32.register_fake
def _philox4x32_fake(counter: Tensor, key: Tensor) -> Tensor:
    return torch.empty_like(counter)


def _not_differentiable(op: Any, name: str) -> None:
    """Register a backward that raises: an op whose gradient is neither needed by ES nor cheap."""
    message = NOT_DIFFERENTIABLE.format(op=f"{NS}::{name}")

    def backward(ctx: Any, *grads: Any) -> tuple:
        raise RuntimeError(message)

    op.register_autograd(backward, setup_context=lambda ctx, inputs, output: None)


OPS = {"perturbed_matmul": perturbed_matmul, "perturbed_matmul_full": perturbed_matmul_full,
       "perturb_vector": perturb_vector, "lowrank_factors": lowrank_factors,
       "es_gradient": es_gradient, "centered_rank": centered_rank, "zscore": zscore,
       "antithetic_sign": antithetic_sign, "philox4x32": philox4x32}

for _name in ("perturbed_matmul_full", "lowrank_factors", "es_gradient", "centered_rank",
              "zscore", "antithetic_sign", "philox4x32"):
    _not_differentiable(OPS[_name], _name)

__all__ = ["OPS", "view", "seed_halves", *OPS]
