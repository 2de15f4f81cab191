"""PyTorch adapter: every eggroll op on torch tensors (CPU, and CUDA in CUDA builds), and
``eggroll.torch.ES``, the evolution-strategies trainer for any ``nn.Module``.

The functions below have the names and keyword arguments of ``eggroll.numpy`` (the top-level
``eggroll.perturbed_matmul(tensor, ...)`` lands here). They validate the arguments (errors
name the argument, as in the NumPy adapter), then call the custom ops
``torch.ops.eggroll.<name>`` (``_ops.py``), which torch.compile traces through.

Dtype policy, as NumPy's: computation is float32; float64/float16/bfloat16 inputs are
converted (a copy) and results are float32. Inputs must be contiguous (ValueError otherwise:
no silent layout copies) and on one device; results are on the inputs' device.

Threads: on CPU tensors the ops run on torch's own intra-op (OpenMP) threads, as many as
``torch.get_num_threads()``, like any torch op (``use_torch_threads``; docs/torch.md).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._ops import (STREAM_LENGTH, UINT32_MAX, UINT64_MAX, check_bool, check_factor_shape,
                    check_int, check_shape_arg, check_sigma, ids_layout)
from . import _embedding, _ops
from ._ops import seed_halves
from ._threads import use_torch_threads

__all__ = ["ES", "linear", "perturbed_matmul_int8", "int8_update", "philox4x32",
           "perturbed_matmul", "perturbed_matmul_full",
           "perturb_vector", "perturbed_embedding", "lowrank_factors", "es_gradient", "centered_rank", "zscore",
           "antithetic_sign", "members_tensor", "use_torch_threads"]

_CONVERT = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def as_float32(t: Any, name: str, ndims: tuple[int, ...]) -> Tensor:
    """t as a contiguous float32 tensor of one of ndims dimensions (float64/16 converted)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _CONVERT:
        raise TypeError(f"{name}: expected a float32 tensor (float64/float16/bfloat16 are "
                        f"converted), got dtype {t.dtype}")
    if t.dim() not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} tensor, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous; pass {name}.contiguous()")
    return t if t.dtype == torch.float32 else t.float()


def _same_device(t: Tensor, name: str, device: torch.device, ref: str) -> None:
    if t.device != device:
        raise ValueError(f"{name}: is on {t.device} but {ref} is on {device}; move both to "
                         "one device")


def members_tensor(members: Any, expected_len: int | None, device: torch.device,
                   name: str = "members", what: str = "x") -> Tensor:
    """members (range, int sequence, NumPy or torch int array) as a contiguous int64 [M]
    tensor on device. Indices are checked to be >= 0 (the kernels would read a negative one
    as a huge noise index): on the host for host forms; a CUDA index tensor costs one
    device sync for that check, as in the CuPy adapter, except under torch.compile or while
    a CUDA graph is captured, where a value check cannot run (the caller vouches for the
    indices there). A range never syncs: it is checked on the host and made on the device."""
    if isinstance(members, Tensor):
        if members.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D index tensor or range, got shape "
                             f"{tuple(members.shape)}")
        if members.numel() and (members.dtype.is_floating_point or members.dtype.is_complex
                                or members.dtype == torch.bool):
            raise TypeError(f"{name}: expected integer indices, got dtype {members.dtype}")
        if members.device != device:
            raise ValueError(f"{name}: is on {members.device} but {what} is on {device}")
        # Not under torch.compile (a value check would break the graph) nor while a CUDA
        # graph is captured (a sync is illegal there).
        if (members.numel() and members.device.type in ("cpu", "cuda")
                and not torch.compiler.is_compiling()
                and not (members.device.type == "cuda"
                         and torch.cuda.is_current_stream_capturing())
                and int(members.min()) < 0):
            raise ValueError(f"{name}: indices must be >= 0, got {int(members.min())}")
        t = members.to(torch.int64).contiguous()
    else:
        from .._ops import members_array
        arr = members_array(members, None, name, what)          # checked on the host
        if isinstance(members, range) and device.type != "cpu":
            # made on the device: no host-to-device copy (a pageable copy syncs the stream)
            t = torch.arange(members.start, members.stop, members.step, dtype=torch.int64,
                             device=device)
        else:
            t = torch.from_numpy(arr).to(device, non_blocking=True)
    if expected_len is not None and t.shape[0] != expected_len:
        raise ValueError(f"{name}: has {t.shape[0]} entries but the leading dimension of "
                         f"{what} is {expected_len}")
    return t


class _Args:
    """A validated noise key: the checks and messages of the NumPy adapter (_ops.es_args),
    in plain Python so that torch.compile traces them (the core checks the key again)."""

    def __init__(self, *, seed: Any, param_id: Any, epoch: Any, noise_reuse: Any,
                 antithetic: Any, sigma: Any, rank: Any) -> None:
        lo, hi = seed_halves(check_int(seed, "seed", 0, UINT64_MAX))
        # seed halves, param_id, epoch, noise_reuse, antithetic, sigma: the ops' key arguments
        self.key = (lo, hi, check_int(param_id, "param_id", 0, UINT32_MAX),
                    check_int(epoch, "epoch", 0, UINT32_MAX),
                    check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
                    check_bool(antithetic, "antithetic"), check_sigma(sigma))
        self.rank = check_int(rank, "rank", 1, 1 << 20)


def _out(out: Any, result: Tensor, inputs: dict[str, Tensor]) -> Tensor:
    """Copy result into a caller's out tensor (checked), or return result."""
    if out is None:
        return result
    if not isinstance(out, Tensor):
        raise TypeError(f"out: expected a torch.Tensor, got {type(out).__name__}")
    if out.dtype != torch.float32:
        raise TypeError(f"out: expected dtype float32, got {out.dtype}")
    if out.shape != result.shape:
        raise ValueError(f"out: expected shape {tuple(result.shape)}, got {tuple(out.shape)}")
    if out.device != result.device:
        raise ValueError(f"out: is on {out.device}, the result on {result.device}")
    if not out.is_contiguous():
        raise ValueError("out: must be contiguous")
    for name, t in inputs.items():
        if out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
            raise ValueError(f"out: overlaps the input {name}")
    return out.copy_(result)


def _forward_prep(x: Any, W: Any, members: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    x = as_float32(x, "x", (2, 3))
    if isinstance(W, Tensor) and W.dim() == 2 and not W.is_contiguous() and W.t().is_contiguous():
        W = as_float32(W.t(), "W", (2,)).t()    # a transposed weight: no copy (docs/ops.md)
    else:
        W = as_float32(W, "W", (2,))
    _same_device(W, "W", x.device, "x")
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"W: expected shape (m, {x.shape[-1]}) to match x's last dimension, "
                         f"got {tuple(W.shape)}")
    mem = None if members is None else members_tensor(members, x.shape[0], x.device)
    return x, W, mem


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                     param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                     antithetic: bool = True, out: Any = None) -> Tensor:
    """EGGROLL forward. x float32 [M, n] or [M, b, n]; W [m, n] -> [M, m] or [M, b, m].
    members=None gives exactly x @ W.T (the core's deterministic GEMM on the CPU).
    Differentiable with respect to x and W (the noise is a constant)."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=rank)
    x, W, mem = _forward_prep(x, W, members)
    y = _ops.perturbed_matmul(x, W, mem, *args.key, args.rank)
    return _out(out, y, {"x": x, "W": W})


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, sigma: float = 1.0, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None) -> Tensor:
    """Full-rank (OpenES) forward: x_i (W + s_i sigma Z_k)^T. Shapes as perturbed_matmul."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=1)
    x, W, mem = _forward_prep(x, W, members)
    y = _ops.perturbed_matmul_full(x, W, mem, *args.key)
    return _out(out, y, {"x": x, "W": W})


def perturb_vector(v: Any, *, members: Any, epoch: int = 0, seed: int = 0, param_id: int = 0,
                   sigma: float = 1.0, noise_reuse: int = 1, antithetic: bool = True,
                   out: Any = None) -> Tensor:
    """v float32 [m] -> [M, m], row i = v + s_i sigma z_k[0:m]."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=1)
    v = as_float32(v, "v", (1,))
    mem = members_tensor(members, None, v.device)
    y = _ops.perturb_vector(v, mem, *args.key)
    return _out(out, y, {"v": v})


def perturbed_embedding(ids: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                        param_id: int = 0, sigma: float = 1.0, rank: int = 1,
                        noise_reuse: int = 1, antithetic: bool = True) -> Tensor:
    """ids int64/int32 [M, ...], W [V, d] -> float32 [M, ..., d]: row t of member i's table
    W + E_i (E_i the low-rank noise of shape (V, d), as perturbed_matmul perturbs a weight
    [V, d]). An expanded axis 0 (ids.expand(M, ...), stride 0) is read once. members=None:
    W[ids]. Differentiable with respect to W."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=rank)
    if not isinstance(ids, Tensor):
        raise TypeError(f"ids: expected a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"ids: expected int64 or int32 token ids, got dtype {ids.dtype}")
    M, T, shared = ids_layout(tuple(ids.shape), tuple(ids.stride()))
    W = as_float32(W, "W", (2,))
    _same_device(ids, "ids", W.device, "W")
    mem = None if members is None else members_tensor(members, M, W.device, what="ids")
    rows = ids.as_strided((M, T), (0 if shared else T, 1))
    if (rows.device.type == "cuda" and rows.numel() and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing()):
        # the CPU core checks the ids itself; on CUDA this costs one sync (docs/ops.md)
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= W.shape[0]:
            raise ValueError(f"ids: every id must be in [0, {W.shape[0]}) (the rows of W), "
                             f"got {lo if lo < 0 else hi}")
    y = _embedding.perturbed_embedding(rows, W, mem, *args.key, args.rank)
    return y.reshape(*ids.shape, W.shape[1])


def lowrank_factors(shape: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                    param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True, device: Any = "cpu") -> tuple[Tensor, Tensor]:
    """(A float32 [M, m, r] scaled by s_i sigma / sqrt(r), B float32 [M, n, r]) on device
    (the device of members when it is a tensor)."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=rank)
    dims = check_factor_shape(shape, args.rank)
    dev = members.device if isinstance(members, Tensor) else torch.device(device)
    mem = members_tensor(members, None, dev)
    return _ops.lowrank_factors(mem, dims[0], dims[1], *args.key, args.rank)


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: int = 0, seed: int = 0,
                param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> Tensor:
    """g float32 [shape] = (1/(N sigma)) sum_i f_i E_i on fitness's device (uphill).
    fitness: float32 [N] (already shaped); members defaults to range(N)."""
    args = _Args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                 antithetic=antithetic, sigma=sigma, rank=rank)
    dims = check_shape_arg(shape)
    f = as_float32(fitness, "fitness", (1,))
    if (f.device.type == "cpu" and not torch.compiler.is_compiling()
            and not bool(torch.isfinite(f).all())):     # the CPU kernel checks again
        raise ValueError("fitness: contains NaN or inf")
    N = f.shape[0]
    if N == 0:
        raise ValueError("fitness: empty population")
    if antithetic and N % 2:
        raise ValueError(f"fitness: antithetic sampling needs an even population, got {N}")
    mem = members_tensor(range(N) if members is None else members, N, f.device,
                         what="fitness")
    full = check_bool(full_rank, "full_rank") or len(dims) == 1
    if full and math.prod(dims) > STREAM_LENGTH:
        raise ValueError(f"shape: {dims} has more than the 2^34 values of one noise stream")
    return _ops.es_gradient(f, mem, list(dims), *args.key, args.rank, full)


def _shape_fitness(f: Any) -> Tensor:
    if not isinstance(f, Tensor):
        raise TypeError(f"f: expected a torch.Tensor, got {type(f).__name__}")
    if f.dtype == torch.bool or f.dtype.is_complex:
        raise TypeError(f"f: expected a real (float or integer) tensor, got dtype {f.dtype}")
    if f.dim() != 1:
        raise ValueError(f"f: expected a 1-D tensor [N], got shape {tuple(f.shape)}")
    if not f.is_contiguous():
        raise ValueError("f: must be contiguous; pass f.contiguous()")
    if f.dtype not in (torch.float32, torch.float64):
        f = f.to(torch.float64)  # integers and half floats are exact in float64
    return f


def centered_rank(f: Any) -> Tensor:
    """f [N] -> float32 [N]: ranks onto [-0.5, 0.5] (ties share their mean rank)."""
    return _ops.centered_rank(_shape_fitness(f))


def zscore(f: Any, group_size: int = 0) -> Tensor:
    """f [N] -> float32 [N]: (f - mean) / sqrt(var + 1e-5), mean per group (0 = all)."""
    f = _shape_fitness(f)
    return _ops.zscore(f, check_int(group_size, "group_size", 0, 1 << 62))


def antithetic_sign(f: Any) -> Tensor:
    """f [N] (N even) -> float32 [N/2]: sign(f_2k - f_2k+1)."""
    f = _shape_fitness(f)
    if f.shape[0] % 2:
        raise ValueError(f"f: antithetic_sign needs an even population, got {f.shape[0]}")
    return _ops.antithetic_sign(f)


def _uint32(t: Any, name: str, device: torch.device | None) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.as_tensor(np.asarray(t), device=device)
    if t.dtype != torch.uint32:
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"{name}: expected uint32 values, got dtype {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > UINT32_MAX):
            raise ValueError(f"{name}: values must fit in uint32")
        t = t.to(torch.int64).to(torch.uint32)
    return t.contiguous()


def philox4x32(counter: Any, key: Any) -> Tensor:
    """Raw Philox4x32-10. counter: uint32 [..., 4] tensor; key: uint32 [2] -> uint32 [..., 4]."""
    c = _uint32(counter, "counter", None)
    k = _uint32(key, "key", c.device)
    if c.dim() < 1 or c.shape[-1] != 4:
        raise ValueError(f"counter: expected shape [..., 4], got {tuple(c.shape)}")
    if tuple(k.shape) != (2,):
        raise ValueError(f"key: expected shape (2,), got {tuple(k.shape)}")
    _same_device(k, "key", c.device, "counter")
    return _ops.philox4x32(c.reshape(-1, 4), k).reshape(c.shape)


from ._int8 import int8_update, perturbed_matmul_int8  # noqa: E402
from .es import ES, linear  # noqa: E402  (the trainer builds on the functions above)
