"""The integer path on torch tensors: custom ops ``eggroll::perturbed_matmul_int8`` and
``eggroll::int8_update`` (CPU), plus the public functions ``eggroll.torch`` re-exports.

The CPU kernels call the NumPy adapter (eggroll/_int8.py) on zero-copy NumPy views of the
tensors' memory, so they run the same core function and give the same bits; every argument
check there names the argument. Semantics: docs/ops.md, "Integer path (int8)". CUDA int8 runs
through CuPy (eggroll.cupy) in this release; a CUDA tensor here raises TypeError.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .. import _int8 as _np_int8
from .._ops import UINT64_MAX, check_int
from ._ops import NS, seed_halves
from ._threads import on_torch_threads


def _cpu_int8(t: Any, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int8:
        raise TypeError(f"{name}: expected dtype torch.int8 (fixed point, see docs/ops.md), "
                        f"got {t.dtype}")
    if t.device.type != "cpu":
        raise TypeError(f"{name}: the torch int8 ops take CPU tensors in this release, got "
                        f"{t.device} (on a GPU use CuPy arrays: eggroll.cupy)")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous; pass {name}.contiguous()")
    return t


@torch.library.custom_op(f"{NS}::perturbed_matmul_int8", mutates_args=(), device_types="cpu")
def perturbed_matmul_int8_op(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                             seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                             antithetic: bool, rank: int, sigma_shift: int,
                             fixed_point: int) -> Tensor:
    """int8 [M, (b,) m] from x int8 [M, (b,) n], W int8 [m, n]; members int64 [M] or None."""
    y = torch.empty(tuple(x.shape[:-1]) + (W.shape[0],), dtype=torch.int8)
    with on_torch_threads():
        _np_int8.perturbed_matmul_int8(
            x.numpy(), W.numpy(), members=None if members is None else members.numpy(),
            epoch=epoch, seed=(seed_hi << 32) | seed_lo, param_id=param_id, rank=rank,
            sigma_shift=sigma_shift, fixed_point=fixed_point, noise_reuse=noise_reuse,
            antithetic=antithetic, out=y.numpy())
    return y


@perturbed_matmul_int8_op.register_fake
def _perturbed_matmul_int8_fake(x: Tensor, W: Tensor, members: Optional[Tensor], seed_lo: int,
                                seed_hi: int, param_id: int, epoch: int, noise_reuse: int,
                                antithetic: bool, rank: int, sigma_shift: int,
                                fixed_point: int) -> Tensor:
    return x.new_empty(tuple(x.shape[:-1]) + (W.shape[0],), dtype=torch.int8)


@torch.library.custom_op(f"{NS}::int8_update", mutates_args=(), device_types="cpu")
def int8_update_op(W: Tensor, pair_fitness: Tensor, threshold: int, seed_lo: int, seed_hi: int,
                   param_id: int, epoch: int, noise_reuse: int, rank: int,
                   fixed_point: int) -> Tensor:
    """W' int8 [m, n] (a new tensor) from W int8 [m, n] and pair_fitness [P] in {-1, 0, 1}."""
    y = torch.empty_like(W)
    with on_torch_threads():
        _np_int8.int8_update(W.numpy(), pair_fitness.numpy(), threshold=threshold,
                             epoch=epoch, seed=(seed_hi << 32) | seed_lo, param_id=param_id,
                             rank=rank, fixed_point=fixed_point, noise_reuse=noise_reuse,
                             out=y.numpy())
    return y


@int8_update_op.register_fake
def _int8_update_fake(W: Tensor, pair_fitness: Tensor, threshold: int, seed_lo: int,
                      seed_hi: int, param_id: int, epoch: int, noise_reuse: int, rank: int,
                      fixed_point: int) -> Tensor:
    return torch.empty_like(W)


def _members(members: Any, M: int) -> Optional[Tensor]:
    if members is None:
        return None
    from . import members_tensor
    return members_tensor(members, M, torch.device("cpu"))


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None) -> Tensor:
    """EGGROLL int8 forward on CPU tensors: x int8 [M, n] or [M, b, n], W int8 [m, n] ->
    int8 [M, m] or [M, b, m] (bit-identical to the NumPy path; members=None: unperturbed)."""
    x, W = _cpu_int8(x, "x"), _cpu_int8(W, "W")
    lo, hi = seed_halves(check_int(seed, "seed", 0, UINT64_MAX))
    y = perturbed_matmul_int8_op(x, W, _members(members, x.shape[0]), lo, hi, param_id, epoch,
                                 noise_reuse, antithetic, rank, sigma_shift, fixed_point)
    if out is None:
        return y
    _cpu_int8(out, "out")
    if out.shape != y.shape:
        raise ValueError(f"out: expected shape {tuple(y.shape)}, got {tuple(out.shape)}")
    return out.copy_(y)


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: int = 0, seed: int = 0,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4, noise_reuse: int = 1,
                out: Any = None) -> Tensor:
    """The thresholded vote update on CPU tensors: W int8 [m, n], pair_fitness [P] in
    {-1, 0, 1} (one per antithetic pair) -> W' int8 [m, n]; out may be W (in place)."""
    W = _cpu_int8(W, "W")
    if not isinstance(pair_fitness, Tensor):
        pair_fitness = torch.as_tensor(pair_fitness)
    if pair_fitness.device.type != "cpu":
        raise TypeError(f"pair_fitness: expected a CPU tensor, got {pair_fitness.device}")
    lo, hi = seed_halves(check_int(seed, "seed", 0, UINT64_MAX))
    y = int8_update_op(W, pair_fitness.contiguous(), threshold, lo, hi, param_id, epoch,
                       noise_reuse, rank, fixed_point)
    if out is None:
        return y
    _cpu_int8(out, "out")
    if out.shape != y.shape:
        raise ValueError(f"out: expected shape {tuple(y.shape)}, got {tuple(out.shape)}")
    return out.copy_(y)
