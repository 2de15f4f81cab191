"""CuPy adapter: every op on CuPy arrays, computed on the GPU by eggroll._cuda.

Same function names and keyword arguments as ``eggroll.numpy``. Outputs are allocated by
CuPy on the inputs' device; every kernel is enqueued on CuPy's current stream of that device
(``cupy.cuda.get_current_stream().ptr``), so calls compose with user streams and CUDA graph
capture. Base products (x @ W.T, Af.T @ Bf) are ``cupy.matmul`` (cuBLAS); eggroll's kernels
add the per-member noise terms on top. While the current stream is capturing a CUDA graph
they are eggroll's own tiled GEMM kernels instead (``_cuda.gemm_nt`` / ``gemm_tn``), because
CuPy refuses to call cuBLAS during stream capture; see docs/backends.md.

Dtype policy: x / W / out may be float32, float16 or bfloat16 (float32 accumulation; the
result has the dtype of ``x @ W.T``); float64 is converted to float32; anything else raises
TypeError. Members (a range, a sequence, a NumPy or a CuPy int array) are validated on the
host; a CuPy index array is checked on the device (one synchronisation), except while the
stream is capturing a graph, where it is used as given.
While capturing, host members must be a range (generated on the device by an arange kernel;
es_gradient's default members=None is one): an upload from the host would be baked into the
graph from a temporary buffer. Fitness shaping and es_gradient check that fitness is finite
(one synchronisation, skipped under graph capture).
"""
from __future__ import annotations

from typing import Any

import cupy as cp
import numpy as np

from . import _core
from ._ops import (STREAM_LENGTH, UINT32_MAX, UINT64_MAX, check_bool, check_factor_shape,
                   check_int, check_shape_arg, cuda_module, es_args, ids_layout, members_array)

_cuda = cuda_module()
_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3, "int8": 4, "int32": 5,
          "int64": 6, "uint32": 7}
_FLOAT_STORAGE = ("float32", "float16", "bfloat16")
# Factor memory per es_gradient chunk (the CPU core uses the same bound).
_FACTOR_BYTES = 64 << 20


def _stream() -> int:
    return int(cp.cuda.get_current_stream().ptr)


def _capturing() -> bool:
    """Whether the current stream is capturing a CUDA graph (then nothing may synchronise)."""
    s = cp.cuda.get_current_stream()
    if hasattr(s, "is_capturing"):
        return bool(s.is_capturing())
    return bool(cp.cuda.runtime.streamIsCapturing(s.ptr))


def view(a: cp.ndarray) -> Any:
    """A core TensorView over a CuPy array (device code 1, the array's GPU)."""
    code = _CODES.get(a.dtype.name)
    if code is None:
        raise TypeError(f"array: dtype {a.dtype} is not supported")
    return _core.TensorView(int(a.data.ptr), code, list(a.shape),
                            [s // a.itemsize for s in a.strides], 1, int(a.device.id))


def host_view(a: np.ndarray) -> Any:
    return _core.TensorView(a.ctypes.data, _CODES[a.dtype.name], list(a.shape),
                            [s // a.itemsize for s in a.strides])


def _cupy_array(a: Any, name: str) -> cp.ndarray:
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{name}: expected a CuPy array (the other inputs are on the GPU), got "
                        f"{type(a).__module__}.{type(a).__name__}")
    return a


def _same_device(a: cp.ndarray, name: str, ref: cp.ndarray, ref_name: str) -> None:
    if a.device.id != ref.device.id:
        raise ValueError(f"{name}: on cuda:{a.device.id} but {ref_name} is on "
                         f"cuda:{ref.device.id}; move it with cupy.asarray under that device")


def as_float(a: Any, name: str, ndims: tuple[int, ...], storage: tuple[str, ...] = _FLOAT_STORAGE
             ) -> cp.ndarray:
    a = _cupy_array(a, name)
    if a.dtype.name not in storage and a.dtype != cp.float64:
        raise TypeError(f"{name}: expected a float32 array (float64 is converted; "
                        f"{', '.join(storage)} are used as is), got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous; pass cupy.ascontiguousarray({name})")
    if a.dtype.name not in storage:
        a = a.astype(cp.float32)
    return a


def _overlaps(a: cp.ndarray, b: cp.ndarray) -> bool:
    if a.device.id != b.device.id or a.nbytes == 0 or b.nbytes == 0:
        return False
    a0, b0 = int(a.data.ptr), int(b.data.ptr)
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


def _members(members: Any, expected_len: int | None, ref: cp.ndarray, what: str = "x"
             ) -> tuple[cp.ndarray, np.ndarray | None]:
    """(device int64 [M] on ref's device, host copy or None when given on the device)."""
    if isinstance(members, cp.ndarray):
        _same_device(members, "members", ref, what)
        if members.ndim != 1:
            raise ValueError(f"members: expected a 1-D index array or range, got shape "
                             f"{members.shape}")
        if members.size and members.dtype.kind not in "iu":
            raise TypeError(f"members: expected integer indices, got dtype {members.dtype}")
        if expected_len is not None and members.shape[0] != expected_len:
            raise ValueError(f"members: has {members.shape[0]} entries but the leading "
                             f"dimension of {what} is {expected_len}")
        mem = cp.ascontiguousarray(members, dtype=cp.int64)
        if mem.size and not _capturing() and int(mem.min()) < 0:
            raise ValueError(f"members: indices must be >= 0, got {int(mem.min())}")
        return mem, None
    host = members_array(members, expected_len, what=what)
    if _capturing():
        # An upload would be captured as a copy from CuPy's pooled staging buffer, which is
        # reused once the capture-time copy "completes": replays could read other data. A range
        # becomes an arange kernel (nothing read from the host); other host forms are refused.
        if not isinstance(members, range):
            raise ValueError("members: while capturing a CUDA graph, pass a range or a CuPy "
                             "int array (a host array would be uploaded from a temporary buffer)")
        return cp.arange(members.start, members.stop, members.step, dtype=cp.int64), host
    return cp.asarray(host), host


def _out(out: Any, shape: tuple[int, ...], dtype: Any, ref: cp.ndarray,
         inputs: dict[str, cp.ndarray]) -> cp.ndarray:
    if out is None:
        return cp.empty(shape, dtype=dtype)
    out = _cupy_array(out, "out")
    _same_device(out, "out", ref, "x")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {cp.dtype(dtype)}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out: must be a C-contiguous array")
    for name, arr in inputs.items():
        if _overlaps(out, arr):
            raise ValueError(f"out: overlaps the input {name}")
    return out


def _forward(x: Any, W: Any, members: Any, out: Any, args: Any, correction: Any) -> cp.ndarray:
    x = as_float(x, "x", (2, 3))
    W = as_float(W, "W", (2,))
    _same_device(W, "W", x, "x")
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"W: expected shape (m, {x.shape[-1]}) to match x's last dimension, "
                         f"got {W.shape}")
    if W.dtype != x.dtype:
        raise TypeError(f"W: expected the dtype of x ({x.dtype}), got {W.dtype}")
    with x.device:
        mem = None if members is None else _members(members, x.shape[0], x)[0]
        y = _out(out, x.shape[:-1] + (W.shape[0],), x.dtype, x, {"x": x, "W": W})
        # Base product over all M * b rows (float32 accumulation): one cuBLAS GEMM, or the
        # fallback kernel while capturing a graph (CuPy cannot call cuBLAS then).
        x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, W.shape[0])
        if _capturing():
            _cuda.gemm_nt(view(x2), view(W), view(y2), stream=_stream())
        else:
            cp.matmul(x2, W.T, out=y2)
        if mem is not None:
            correction(view(x), view(mem), args, view(y), stream=_stream())
    return y


def perturbed_matmul(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                     param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                     antithetic: bool = True, out: Any = None) -> cp.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    return _forward(x, W, members, out, args, _cuda.lowrank_correction)


def perturbed_matmul_full(x: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                          param_id: int = 0, sigma: float = 1.0, noise_reuse: int = 1,
                          antithetic: bool = True, out: Any = None) -> cp.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=1)
    return _forward(x, W, members, out, args, _cuda.fullrank_correction)


def perturb_vector(v: Any, *, members: Any, epoch: int = 0, seed: int = 0, param_id: int = 0,
                   sigma: float = 1.0, noise_reuse: int = 1, antithetic: bool = True,
                   out: Any = None) -> cp.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=1)
    v = as_float(v, "v", (1,), storage=("float32",))
    with v.device:
        mem = _members(members, None, v, "v")[0]
        y = _out(out, (mem.shape[0], v.shape[0]), cp.float32, v, {"v": v})
        _cuda.perturb_vector(view(v), view(mem), args, view(y), stream=_stream())
    return y


def perturbed_embedding(ids: Any, W: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                        param_id: int = 0, sigma: float = 1.0, rank: int = 1,
                        noise_reuse: int = 1, antithetic: bool = True) -> cp.ndarray:
    """ids int64/int32 [M, ...] (a broadcast axis 0 is shared), W [V, d] -> float32
    [M, ..., d] (docs/ops.md). The id range is checked with one device sync (the kernel writes
    a NaN row rather than read outside W) except while a CUDA graph is captured."""
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    ids = _cupy_array(ids, "ids")
    if ids.dtype not in (cp.int64, cp.int32):
        raise TypeError(f"ids: expected int64 or int32 token ids, got dtype {ids.dtype}")
    M, T, shared = ids_layout(ids.shape, tuple(s // ids.itemsize for s in ids.strides))
    W = as_float(W, "W", (2,), storage=("float32",))
    _same_device(ids, "ids", W, "W")
    with W.device:
        rows = cp.lib.stride_tricks.as_strided(ids, (M, T), (0 if shared else T * ids.itemsize,
                                                              ids.itemsize))
        if rows.size and not _capturing():
            lo, hi = int(rows.min()), int(rows.max())
            if lo < 0 or hi >= W.shape[0]:
                raise ValueError(f"ids: every id must be in [0, {W.shape[0]}) (the rows of W), "
                                 f"got {lo if lo < 0 else hi}")
        mem = None if members is None else _members(members, M, W, "ids")[0]
        y = cp.empty((M, T, W.shape[1]), dtype=cp.float32)
        _cuda.perturbed_embedding(view(rows), view(W),
                                  _core.TensorView() if mem is None else view(mem), args,
                                  view(y), stream=_stream())
    return y.reshape(ids.shape + (W.shape[1],))


def lowrank_factors(shape: Any, *, members: Any, epoch: int = 0, seed: int = 0,
                    param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                    antithetic: bool = True) -> tuple[cp.ndarray, cp.ndarray]:
    """(A float32 [M, m, r], B float32 [M, n, r]) on the current device (bits of the CPU)."""
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    m, n = check_factor_shape(shape, rank)
    A = cp.empty((0,), dtype=cp.float32)  # the current device's reference for _members
    mem = _members(members, None, A, "the current device")[0]
    A = cp.empty((mem.shape[0], m, rank), dtype=cp.float32)
    B = cp.empty((mem.shape[0], n, rank), dtype=cp.float32)
    _cuda.lowrank_factors(view(mem), m, n, args, view(A), view(B), stream=_stream())
    return A, B


def _check_finite(f: cp.ndarray, name: str) -> None:
    if f.size and not _capturing() and not bool(cp.isfinite(f).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def es_gradient(fitness: Any, shape: Any, *, members: Any = None, epoch: int = 0, seed: int = 0,
                param_id: int = 0, sigma: float = 1.0, rank: int = 1, noise_reuse: int = 1,
                antithetic: bool = True, full_rank: bool = False) -> cp.ndarray:
    args = es_args(seed=seed, param_id=param_id, epoch=epoch, noise_reuse=noise_reuse,
                   antithetic=antithetic, sigma=sigma, rank=rank)
    dims = check_shape_arg(shape)
    f = as_float(fitness, "fitness", (1,), storage=("float32",))
    N = f.shape[0]
    if N == 0:
        raise ValueError("fitness: empty population")
    if antithetic and N % 2:
        raise ValueError(f"fitness: antithetic sampling needs an even population, got {N}")
    full = check_bool(full_rank, "full_rank") or len(dims) == 1
    if full and int(np.prod(dims)) > STREAM_LENGTH:
        raise ValueError(f"shape: {dims} has more than the 2^34 values of one noise stream")
    _check_finite(f, "fitness")
    with f.device:
        mem, host = _members(range(N) if members is None else members, N, f, "fitness")
        if full:
            g = cp.empty(dims, dtype=cp.float32)
            _cuda.es_gradient(view(f), view(mem), args, True, N, False, view(g), stream=_stream())
            return g
        if host is None:  # the run structure is computed on the host (once, small)
            if _capturing():  # reading it back would synchronise, which capture forbids
                raise ValueError("members: while capturing a CUDA graph, the low-rank "
                                 "es_gradient needs members=None or a range (its run "
                                 "structure is computed on the host), not a CuPy array")
            host = cp.asnumpy(mem)
        m, n = dims
        g = cp.empty(dims, dtype=cp.float32)
        # Bounded memory: members in even-sized chunks (antithetic pairs stay together),
        # each chunk's factors summed into g by one GEMM g (+)= Af^T Bf (cuBLAS, or the
        # fallback kernel under graph capture).
        capturing = _capturing()
        step = max(2, (_FACTOR_BYTES // (4 * (m + n) * rank)) & ~1)
        for c0 in range(0, N, step):
            c1 = min(N, c0 + step)
            C = int(_core.es_gradient_columns(host_view(host[c0:c1]), antithetic, rank))
            Af = cp.empty((C, m), dtype=cp.float32)
            Bf = cp.empty((C, n), dtype=cp.float32)
            _cuda.es_gradient_factors(view(f[c0:c1]), view(mem[c0:c1]), m, n, args, N,
                                      view(Af), view(Bf), stream=_stream())
            if capturing:
                _cuda.gemm_tn(view(Af), view(Bf), view(g), c0 > 0, stream=_stream())
            elif c0 == 0:
                cp.matmul(Af.T, Bf, out=g)
            else:
                g += cp.matmul(Af.T, Bf)
        return g


def _shape_fitness(f: Any) -> cp.ndarray:
    f = _cupy_array(f, "f")
    if f.dtype.kind not in "fiu" or f.dtype.kind == "b":
        raise TypeError(f"f: expected a real (float or integer) array, got dtype {f.dtype}")
    if f.ndim != 1:
        raise ValueError(f"f: expected a 1-D array [N], got shape {f.shape}")
    if not f.flags.c_contiguous:
        raise ValueError("f: must be C-contiguous; pass cupy.ascontiguousarray(f)")
    if f.dtype not in (cp.float32, cp.float64):
        f = f.astype(cp.float64)  # integers and float16 are exact in float64
    _check_finite(f, "f")
    return f


def centered_rank(f: Any) -> cp.ndarray:
    f = _shape_fitness(f)
    with f.device:
        out = cp.empty(f.shape, dtype=cp.float32)
        _cuda.centered_rank(view(f), view(out), stream=_stream())
    return out


def zscore(f: Any, group_size: int = 0) -> cp.ndarray:
    f = _shape_fitness(f)
    g = check_int(group_size, "group_size", 0, 1 << 62)
    with f.device:
        out = cp.empty(f.shape, dtype=cp.float32)
        _cuda.zscore(view(f), g, view(out), stream=_stream())
    return out


def antithetic_sign(f: Any) -> cp.ndarray:
    f = _shape_fitness(f)
    if f.shape[0] % 2:
        raise ValueError(f"f: antithetic_sign needs an even population, got {f.shape[0]}")
    with f.device:
        out = cp.empty((f.shape[0] // 2,), dtype=cp.float32)
        _cuda.antithetic_sign(view(f), view(out), stream=_stream())
    return out


def normal(count: int, *, seed: int, param_id: int = 0, epoch_index: int = 0,
           noise_index: int = 0, offset: int = 0) -> cp.ndarray:
    """float32 [count] on the current device: the same bits as eggroll.normal."""
    count = check_int(count, "count", 0, STREAM_LENGTH)
    offset = check_int(offset, "offset", 0, STREAM_LENGTH)
    if count + offset > STREAM_LENGTH:
        raise ValueError(f"offset: offset + count must be <= 2^34 (one stream), got "
                         f"{offset} + {count}")
    key = (check_int(seed, "seed", 0, UINT64_MAX), check_int(param_id, "param_id", 0, UINT32_MAX),
           check_int(epoch_index, "epoch_index", 0, UINT32_MAX),
           check_int(noise_index, "noise_index", 0, UINT32_MAX))
    out = cp.empty((count,), dtype=cp.float32)
    _cuda.normal(view(out), *key, offset, stream=_stream())
    return out


def philox4x32(counter: Any, key: Any) -> cp.ndarray:
    c = _cupy_array(counter, "counter")
    if c.dtype != cp.uint32:
        raise TypeError(f"counter: expected uint32 values, got dtype {c.dtype}")
    if c.ndim < 1 or c.shape[-1] != 4:
        raise ValueError(f"counter: expected shape [..., 4], got {c.shape}")
    with c.device:
        k = key if isinstance(key, cp.ndarray) else np.asarray(key)
        if k.dtype != np.uint32:
            raise TypeError(f"key: expected uint32 values, got dtype {k.dtype}")
        if k.shape != (2,):
            raise ValueError(f"key: expected shape (2,), got {k.shape}")
        k = cp.ascontiguousarray(cp.asarray(k))
        _same_device(k, "key", c, "counter")
        flat = cp.ascontiguousarray(c).reshape(-1, 4)
        out = cp.empty(c.shape, dtype=cp.uint32)
        _cuda.philox4x32(view(flat), view(k), view(out.reshape(-1, 4)), stream=_stream())
    return out


from ._cupy_int8 import int8_update, perturbed_matmul_int8  # noqa: E402,F401  (integer path)
