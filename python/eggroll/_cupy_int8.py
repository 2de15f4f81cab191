"""CuPy adapter for the integer path: perturbed_matmul_int8 and int8_update on the GPU
(eggroll._cuda, exact integer arithmetic: the same results as the CPU). Re-exported by
``eggroll.cupy``; same names and keyword arguments as the NumPy integer functions."""
from __future__ import annotations

from typing import Any

import cupy as cp

from ._ops import UINT32_MAX, UINT64_MAX, check_bool, check_int, cuda_module

_cuda = cuda_module()
MAX_N = 1 << 16
MAX_RANK = 1024


def _key(*, seed: Any, param_id: Any, epoch: Any, noise_reuse: Any, antithetic: Any, rank: Any,
         fixed_point: Any) -> dict[str, Any]:
    return dict(seed=check_int(seed, "seed", 0, UINT64_MAX),
                param_id=check_int(param_id, "param_id", 0, UINT32_MAX),
                epoch=check_int(epoch, "epoch", 0, UINT32_MAX),
                noise_reuse=check_int(noise_reuse, "noise_reuse", 0, UINT32_MAX),
                antithetic=check_bool(antithetic, "antithetic"),
                rank=check_int(rank, "rank", 1, MAX_RANK),
                fixed_point=check_int(fixed_point, "fixed_point", 0, 7))


def _int8_array(a: Any, name: str, ndims: tuple[int, ...]) -> cp.ndarray:
    from .cupy import _cupy_array
    a = _cupy_array(a, name)
    if a.dtype != cp.int8:
        raise TypeError(f"{name}: expected an int8 array (a silent cast of wider integers would "
                        f"wrap), got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous; pass cupy.ascontiguousarray({name})")
    return a


def _int8_out(out: Any, shape: tuple[int, ...], ref: cp.ndarray, inputs: dict[str, cp.ndarray],
              may_alias: str | None = None) -> cp.ndarray:
    from .cupy import _out
    if out is None:
        return cp.empty(shape, dtype=cp.int8)
    if may_alias is not None and isinstance(out, cp.ndarray) and out is inputs[may_alias]:
        inputs = {k: v for k, v in inputs.items() if k != may_alias}
    return _out(out, shape, cp.int8, ref, inputs)


def perturbed_matmul_int8(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, rank: int = 1, sigma_shift: int,
                          fixed_point: int = 4, noise_reuse: int = 1, antithetic: bool = True,
                          out: Any = None) -> cp.ndarray:
    """int8 [M, m] / [M, b, m] from x int8 [M, n] / [M, b, n] and W int8 [m, n] (CuPy)."""
    from .cupy import _members, _same_device, _stream, view
    key = _key(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
               antithetic=antithetic, rank=rank, fixed_point=fixed_point)
    shift = check_int(sigma_shift, "sigma_shift", 0, 32)
    x = _int8_array(x, "x", (2, 3))
    W = _int8_array(W, "W", (2,))
    _same_device(W, "W", x, "x")
    n = x.shape[-1]
    if W.shape[1] != n:
        raise ValueError(f"W: expected shape (m, {n}) to match x's last dimension, got {W.shape}")
    if not 1 <= n <= MAX_N:
        raise ValueError(f"x: the inner dimension n must be in [1, {MAX_N}] (exact int32 "
                         f"accumulation), got {n}")
    from . import _core
    with x.device:
        mem = None if members is None else _members(members, x.shape[0], x)[0]
        y = _int8_out(out, x.shape[:-1] + (W.shape[0],), x, {"x": x, "W": W})
        _cuda.perturbed_matmul_int8(view(x), view(W), _core.TensorView() if mem is None else view(mem),
                                    view(y), sigma_shift=shift, stream=_stream(), **key)
    return y


def int8_update(W: Any, pair_fitness: Any, *, threshold: int, epoch: int = 0, seed: int = 0,
                param_id: int = 0, rank: int = 1, fixed_point: int = 4, noise_reuse: int = 1,
                out: Any = None) -> cp.ndarray:
    """W' int8 [m, n] = clamp(W + [Z >= T] - [Z <= -T], -127, 127), Z = sum_k f_k A_k B_k^T
    (CuPy); pair_fitness [P] with values in {-1, 0, 1}; out may be W itself."""
    from .cupy import _capturing, _same_device, _stream, view
    key = _key(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
               antithetic=True, rank=rank, fixed_point=fixed_point)
    del key["antithetic"]
    T = check_int(threshold, "threshold", 1, (1 << 63) - 1)
    W = _int8_array(W, "W", (2,))
    with W.device:
        f = pair_fitness if isinstance(pair_fitness, cp.ndarray) else cp.asarray(pair_fitness)
        _same_device(f, "pair_fitness", W, "W")
        if f.dtype.kind not in "iuf":
            raise TypeError(f"pair_fitness: expected integer or float values in {{-1, 0, 1}}, "
                            f"got dtype {f.dtype}")
        if f.ndim != 1:
            raise ValueError(f"pair_fitness: expected a 1-D array [P] (one value per antithetic "
                             f"pair), got shape {f.shape}")
        if f.size and not _capturing() and not bool(((f == -1) | (f == 0) | (f == 1)).all()):
            raise ValueError("pair_fitness: values must be exactly -1, 0 or 1 "
                             "(e.g. eggroll.antithetic_sign(fitness))")
        f = cp.ascontiguousarray(f, dtype=cp.int8)
        y = _int8_out(out, W.shape, W, {"W": W, "pair_fitness": f}, may_alias="W")
        _cuda.int8_update(view(W), view(f), T, view(y), stream=_stream(), **key)
    return y
