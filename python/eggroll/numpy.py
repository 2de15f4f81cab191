"""NumPy adapter: every op on NumPy arrays, computed by the C++ core on the CPU.

Dtype policy: computation is float32. float64 and float16 inputs are converted to float32
(a copy) and results are float32; integer, bool and complex inputs raise TypeError.
Inputs must be C-contiguous (ValueError otherwise: we never copy silently for layout).
The base product x @ W.T is the core's own deterministic GEMM (same bits for any member
split and thread count, see docs/ops.md "The base product"); the core adds the per-member
correction in place.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._ops import (DTYPE_CODES, FLOAT_DTYPES, STREAM_LENGTH, UINT32_MAX, UINT64_MAX, check_bool,
                   check_factor_shape, check_int, check_shape_arg, es_args, ids_layout,
                   members_array)

# A null view: "no members" (the unperturbed product).
NO_MEMBERS = _core.TensorView()


def view(a: np.ndarray) -> Any:
    """A core TensorView over a NumPy array (strides in elements)."""
    return _core.TensorView(a.ctypes.data, DTYPE_CODES[a.dtype], list(a.shape),
                            [s // a.itemsize for s in a.strides])


def as_float32(a: Any, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 array (float64/float16 are converted), "
                        f"got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous; pass numpy.ascontiguousarray({name})")
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    return a


def out_array(out: np.ndarray | None, shape: tuple[int, ...], inputs: dict[str, np.ndarray]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a NumPy array, got {type(out).__name__}")
    if out.dtype != np.float32:
        raise TypeError(f"out: expected dtype float32, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be a writeable C-contiguous array")
    for name, arr in inputs.items():
        if np.shares_memory(out, arr):
            raise ValueError(f"out: overlaps the input {name}")
    return out


def _forward_prep(x: Any, W: Any, out: Any, members: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    x = as_float32(x, "x", (2, 3))
    W = as_float32(W, "W", (2,))
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"W: expected shape (m, {x.shape[-1]}) to match x's last dimension, "
                         f"got {W.shape}")
    mem = None if members is None else members_array(members, x.shape[0])
    y = out_array(out, x.shape[:-1] + (W.shape[0],), {"x": x, "W": W})
    return x, W, y, mem


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                     param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                     antithetic: bool = True, out: Any = None) -> np.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    x, W, y, mem = _forward_prep(x, W, out, members)
    _core.perturbed_matmul(view(x), view(W), NO_MEMBERS if mem is None else view(mem), args,
                           view(y))
    return y


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, sigma: float = 1.0, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None) -> np.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=1)
    x, W, y, mem = _forward_prep(x, W, out, members)
    _core.perturbed_matmul_full(view(x), view(W), NO_MEMBERS if mem is None else view(mem),
                                args, view(y))
    return y


def perturb_vector(v: Any, *, members: Any, epoch: int = 0, seed: int = 0, param_id: int = 0,
                   sigma: float = 1.0, noise_reuse: int = 1, antithetic: bool = True,
                   out: Any = None) -> np.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=1)
    v = as_float32(v, "v", (1,))
    mem = members_array(members, None)
    y = out_array(out, (mem.shape[0], v.shape[0]), {"v": v})
    _core.perturb_vector(view(v), view(mem), args, view(y))
    return y


def perturbed_embedding(ids: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                        param_id: int = 0, sigma: float = 1.0, rank: int = 1,
                        noise_reuse: int = 1, antithetic: bool = True,
                        out: Any = None) -> np.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    ids = np.asarray(ids)
    if ids.dtype not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise TypeError(f"ids: expected int64 or int32 token ids, got dtype {ids.dtype}")
    M, T, shared = ids_layout(ids.shape, tuple(s // ids.itemsize for s in ids.strides))
    W = as_float32(W, "W", (2,))
    mem = None if members is None else members_array(members, M, what="ids")
    y = out_array(out, ids.shape + (W.shape[1],), {"W": W})
    rows = np.lib.stride_tricks.as_strided(ids, (M, T), (0 if shared else T * ids.itemsize,
                                                         ids.itemsize))
    _core.perturbed_embedding(view(rows), view(W), NO_MEMBERS if mem is None else view(mem),
                              args, view(y.reshape(M, T, W.shape[1])))
    return y


def lowrank_factors(shape: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                    param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    m, n = check_factor_shape(shape, rank)
    mem = members_array(members, None)
    A = np.empty((mem.shape[0], m, rank), dtype=np.float32)
    B = np.empty((mem.shape[0], n, rank), dtype=np.float32)
    _core.lowrank_factors(view(mem), m, n, args, view(A), view(B))
    return A, B


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: int = 0, seed: int = 0,
                param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> np.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    dims = check_shape_arg(shape)
    f = as_float32(fitness, "fitness", (1,))
    if not np.isfinite(f).all():
        raise ValueError("fitness: contains NaN or inf")
    N = f.shape[0]
    if N == 0:
        raise ValueError("fitness: empty population")
    if antithetic and N % 2:
        raise ValueError(f"fitness: antithetic sampling needs an even population, got {N}")
    mem = members_array(range(N) if members is None else members, N, "members",
                        what="fitness")
    full = check_bool(full_rank, "full_rank") or len(dims) == 1
    if full and int(np.prod(dims)) > STREAM_LENGTH:
        raise ValueError(f"shape: {dims} has more than the 2^34 values of one noise stream")
    g = np.empty(dims, dtype=np.float32)
    # Low rank: factor rows regenerated in bounded chunks, then the core's deterministic
    # GEMM; full rank: streamed. Both in the core (cpp/update.cpp).
    _core.es_gradient(view(f), view(mem), args, full, N, False, view(g))
    return g


def _shape_fitness(f: Any) -> np.ndarray:
    if not isinstance(f, np.ndarray):
        f = np.asarray(f)
    if f.dtype.kind not in "fiu" or f.dtype.kind == "b":
        raise TypeError(f"f: expected a real (float or integer) array, got dtype {f.dtype}")
    if f.ndim != 1:
        raise ValueError(f"f: expected a 1-D array [N], got shape {f.shape}")
    if not f.flags.c_contiguous:
        raise ValueError("f: must be C-contiguous; pass numpy.ascontiguousarray(f)")
    if f.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        f = f.astype(np.float64)  # integers and float16 are exact in float64
    return f


def centered_rank(f: Any) -> np.ndarray:
    f = _shape_fitness(f)
    out = np.empty(f.shape, dtype=np.float32)
    _core.centered_rank(view(f), view(out))
    return out


def zscore(f: Any, group_size: int = 0) -> np.ndarray:
    f = _shape_fitness(f)
    g = check_int(group_size, "group_size", 0, 1 << 62)
    out = np.empty(f.shape, dtype=np.float32)
    _core.zscore(view(f), g, view(out))
    return out


def antithetic_sign(f: Any) -> np.ndarray:
    f = _shape_fitness(f)
    if f.shape[0] % 2:
        raise ValueError(f"f: antithetic_sign needs an even population, got {f.shape[0]}")
    out = np.empty((f.shape[0] // 2,), dtype=np.float32)
    _core.antithetic_sign(view(f), view(out))
    return out


def normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
           noise_index: int = 0, offset: int = 0) -> np.ndarray:
    count = check_int(count, "count", 0, STREAM_LENGTH)
    offset = check_int(offset, "offset", 0, STREAM_LENGTH)
    if count + offset > STREAM_LENGTH:
        raise ValueError(f"offset: offset + count must be <= 2^34 (one stream), got "
                         f"{offset} + {count}")
    key = (check_int(seed, "seed", 0, UINT64_MAX), check_int(param_id, "param_id", 0, UINT32_MAX),
           check_int(epoch_index, "epoch_index", 0, UINT32_MAX),
           check_int(noise_index, "noise_index", 0, UINT32_MAX))
    out = np.empty((count,), dtype=np.float32)
    _core.normal(view(out), *key, offset)
    return out


def philox4x32(counter: Any, key: Any) -> np.ndarray:
    c = np.asarray(counter)
    k = np.asarray(key)
    for name, a in (("counter", c), ("key", k)):
        if a.dtype != np.uint32:
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{name}: expected uint32 values, got dtype {a.dtype}")
            if a.size and (a.min() < 0 or a.max() > 0xFFFFFFFF):
                raise ValueError(f"{name}: values must fit in uint32")
    c = np.ascontiguousarray(c, dtype=np.uint32)
    k = np.ascontiguousarray(k, dtype=np.uint32)
    if c.ndim < 1 or c.shape[-1] != 4:
        raise ValueError(f"counter: expected shape [..., 4], got {c.shape}")
    if k.shape != (2,):
        raise ValueError(f"key: expected shape (2,), got {k.shape}")
    out = np.empty(c.shape, dtype=np.uint32)
    flat = c.reshape(-1, 4)  # the core takes [count, 4]; any [..., 4] batch is flattened
    _core.philox4x32(view(flat), view(k), view(out.reshape(-1, 4)))
    return out


from ._int8 import int8_update, perturbed_matmul_int8  # noqa: E402,F401  (the integer path)
