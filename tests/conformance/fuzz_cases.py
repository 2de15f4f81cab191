"""The fuzz grid of tests/conformance/test_fuzz.py and the child that runs it.

Every public op, from a small valid call, with one argument at a time replaced by a member of
a class of bad (or borderline) values: dtypes, ndim, zero sizes, layouts (transposed,
strided, broadcast), overflowing shapes, every key's bounds +-1, member forms, NaN / inf,
out= aliasing and read-only outputs. A case's outcome must be a ValueError / TypeError whose
message starts with the name of one of the call's arguments, or a result equal to the
reference's (eggroll.reference; skipped where the reference itself refuses the input). The
grid is deterministic; the child prints one line per case so that the parent can name a case
that kills the process or hangs.

Run one backend by hand:  python tests/conformance/fuzz_cases.py numpy [start]
"""
from __future__ import annotations

import json
import math
import sys
import traceback
from typing import Any, Callable

import numpy as np

OPS = ("perturbed_matmul", "perturbed_matmul_full", "perturb_vector", "lowrank_factors",
       "es_gradient", "centered_rank", "zscore", "antithetic_sign", "perturbed_matmul_int8",
       "int8_update", "normal", "philox4x32")

rng = np.random.default_rng(2026)
F32 = rng.standard_normal((4, 5)).astype(np.float32)
W32 = rng.standard_normal((3, 5)).astype(np.float32)
I8 = rng.integers(-20, 20, (4, 5)).astype(np.int8)
W8 = rng.integers(-20, 20, (3, 5)).astype(np.int8)


def base(op: str) -> tuple[tuple, dict]:
    """A valid call of op: (positional arguments, keywords)."""
    key = dict(epoch=0, seed=1)
    if op in ("perturbed_matmul", "perturbed_matmul_full"):
        kw = dict(members=range(4), sigma=0.1, **key)
        if op == "perturbed_matmul":
            kw["rank"] = 2
        return (F32, W32), kw
    if op == "perturb_vector":
        return (F32[0],), dict(members=range(4), sigma=0.1, **key)
    if op == "lowrank_factors":
        return ((3, 5),), dict(members=range(4), sigma=0.1, rank=2, **key)
    if op == "es_gradient":
        return (F32[:, 0].copy(), (3, 5)), dict(sigma=0.1, rank=2, **key)
    if op in ("centered_rank", "zscore", "antithetic_sign"):
        return (F32[:, 0].copy(),), {}
    if op == "perturbed_matmul_int8":
        return (I8, W8), dict(members=range(4), sigma_shift=1, **key)
    if op == "int8_update":
        return (W8, np.array([1, -1, 0], np.int8)), dict(threshold=2, **key)
    if op == "normal":
        return (5,), dict(seed=1)
    return (np.arange(8, dtype=np.uint32).reshape(2, 4), np.array([1, 2], np.uint32)), {}


ARG_NAMES = {
    "perturbed_matmul": ("x", "W"), "perturbed_matmul_full": ("x", "W"), "perturb_vector": ("v",),
    "lowrank_factors": ("shape",), "es_gradient": ("fitness", "shape"), "centered_rank": ("f",),
    "zscore": ("f",), "antithetic_sign": ("f",), "perturbed_matmul_int8": ("x", "W"),
    "int8_update": ("W", "pair_fitness"), "normal": ("count",), "philox4x32": ("counter", "key")}

KEY_BOUNDS = {
    "seed": [-1, 0, 2**64 - 1, 2**64, 1.0, True, None, "1"],
    "param_id": [-1, 2**32 - 1, 2**32, 2.0],
    "epoch": [-1, 2**32 - 1, 2**32, 2**70, 0.5, None],
    "noise_reuse": [-1, 0, 2**32 - 1, 2**32],
    "antithetic": [None, 0, 1, "x", False],
    "sigma": [0, -1.0, math.nan, math.inf, 1e-46, 1.4e-45, 3.4e38, 3.5e38, 1e308, "a", None,
              True, np.float32(0.5), np.float64(2.0)],
    "rank": [0, 1, 1024, 1025, 2**20, True, 1.5, -3],
    "fixed_point": [-1, 0, 7, 8],
    "sigma_shift": [-1, 0, 32, 33, 1.5, None],
    "threshold": [0, 1, 2**63 - 1, 2**63, -5],
    "group_size": [-1, 0, 2, 3, 4, 5, 2**62, 1.5],
    "offset": [-1, 0, 2**34 - 5, 2**34 - 4, 2**34],
    "count": [-1, 0, 2**34 + 1, True],
    "epoch_index": [-1, 2**32], "noise_index": [-1, 2**32],
}

MEMBER_FORMS = [None, range(3), range(5), range(2**40), range(-1, 3), range(0, 8, 2),
                range(3, -1, -1), range(2**33, 2**33 + 4), range(2**32, 2**32 + 4), [0, 1, 2, 3],
                [0, -1, 2, 3], [0.0, 1.0, 2.0, 3.0], "int32", "uint64", "huge", "bool", "float",
                "2d", [], "str"]

SHAPES = [(2**62, 4), (2**33, 2**33), (True, 8), (3, True), (-1, 5), (0, 5), (3, 0), (3,), (40,),
          (1, 2, 3), (), "ab", 5, (2**34 + 1,), (2**17, 2**17 + 1), (1.5, 2), None]


def _members(form: Any) -> Any:
    if isinstance(form, str):
        return {"int32": np.arange(4, dtype=np.int32),
                "uint64": np.array([0, 1, 2, 2**63 + 5], np.uint64),
                "huge": np.array([0, 1, 2, 2**34], np.int64),
                "bool": np.ones(4, bool), "float": np.arange(4.0),
                "2d": np.zeros((2, 2), np.int64), "str": "abcd"}[form]
    return form


def _array_variants(a: np.ndarray) -> list[tuple[str, Any]]:
    """Replacements for array argument a: dtypes, ndim, zero sizes, layouts, non-finite."""
    out: list[tuple[str, Any]] = []
    for dt in (np.int32, np.bool_, np.complex64, np.float64, np.float16, np.uint8, np.int8,
               np.uint32, np.int64):
        if a.dtype != dt:
            out.append((f"dtype {np.dtype(dt)}", a.astype(dt)))
    out += [("0-d", a.reshape(-1)[:1].reshape(())), ("1-d", a.reshape(-1)),
            ("4-d", a.reshape((1, 1) + a.shape) if a.ndim <= 6 else a),
            ("9-d", a.reshape((1,) * 8 + (-1,))), ("zero rows", a[:0]),
            ("zero cols", a[..., :0]), ("transposed", a.T),
            ("strided", np.repeat(a, 2, axis=-1)[..., ::2]), ("reversed", a[::-1]),
            ("broadcast", np.broadcast_to(a.reshape(-1)[:1], a.shape) if a.size else a),
            ("list", a.tolist()), ("scalar", 1.5), ("str", "abc"), ("None", None)]
    if a.dtype.kind == "f":
        bad = a.astype(a.dtype).copy()
        bad.reshape(-1)[:1] = np.nan
        inf = a.copy()
        inf.reshape(-1)[-1:] = np.inf
        tiny = np.full_like(a, 1e-40)
        out += [("nan", bad), ("inf", inf), ("subnormal", tiny),
                ("huge", np.full_like(a, 3e38)), ("1e200", a.astype(np.float64) * 1e200)]
    return out


def cases() -> list[tuple[str, str, tuple, dict]]:
    """(op, what changed, args, kwargs): the deterministic grid."""
    out = []
    for op in OPS:
        args, kw = base(op)
        out.append((op, "valid", args, dict(kw)))
        for i, name in enumerate(ARG_NAMES[op]):
            a = args[i]
            variants = _array_variants(a) if isinstance(a, np.ndarray) else \
                [(f"shape {s!r}", s) for s in SHAPES] if name == "shape" else \
                [(f"count {c!r}", c) for c in KEY_BOUNDS["count"]] if name == "count" else []
            for what, v in variants:
                out.append((op, f"{name}: {what}", args[:i] + (v,) + args[i + 1:], dict(kw)))
        for name, values in KEY_BOUNDS.items():
            if name in kw or (op == "zscore" and name == "group_size") or \
                    (op == "normal" and name in ("offset", "epoch_index", "noise_index", "param_id")) or \
                    (name in ("param_id", "noise_reuse") and "seed" in kw and op != "normal") or \
                    (name == "antithetic" and "members" in kw) or \
                    (name == "fixed_point" and op in ("perturbed_matmul_int8", "int8_update")):
                for v in values:
                    out.append((op, f"{name}={v!r}", args, dict(kw, **{name: v})))
        if "members" in kw or op == "es_gradient":
            for form in MEMBER_FORMS:
                out.append((op, f"members={form!r}", args, dict(kw, members=_members(form))))
        if op in ("perturbed_matmul", "perturbed_matmul_full", "perturbed_matmul_int8"):
            out.append((op, "shared [n]", (args[0][0],) + args[1:], dict(kw, shared=True)))
            out.append((op, "shared [b, n]", args, dict(kw, shared=True, members=range(6))))
            out.append((op, "shared=1", args, dict(kw, shared=1)))
            out.append((op, "shared, no members", args, dict(kw, shared=True, members=None)))
        if op in ("perturbed_matmul", "perturbed_matmul_full", "perturbed_matmul_int8",
                  "perturb_vector", "int8_update"):
            out += [(op, f"out: {w}", args, dict(kw, out=o)) for w, o in _outs(op, args)]
    return out


def _outs(op: str, args: tuple) -> list[tuple[str, Any]]:
    """out= variants: aliasing an input, overlapping, wrong dtype / shape, read-only."""
    x = args[0]
    if op == "perturb_vector":
        shape = (4, 5)
    elif op in ("int8_update", "philox4x32"):
        shape = args[0].shape
    else:
        shape = (x.shape[0], args[1].shape[0])
    dt = {"perturbed_matmul_int8": np.int8, "int8_update": np.int8,
          "philox4x32": np.uint32}.get(op, np.float32)
    ro = np.zeros(shape, dt)
    ro.flags.writeable = False
    big = np.zeros(int(np.prod(shape)) + 8, dt)
    return [("x", x), ("overlap", big[3:3 + int(np.prod(shape))].reshape(shape)),
            ("self-overlap", big[:int(np.prod(shape))].reshape(shape)),
            ("dtype", np.zeros(shape, np.float64)), ("shape", np.zeros((1, 1), dt)),
            ("read-only", ro), ("non-contiguous", np.zeros(shape[::-1], dt).T),
            ("list", [0.0]), ("out=W", args[-1] if op == "int8_update" else args[0])]


# ------------------------------------------------------------------------------------------
# the child: runs cases [start, ...) on one backend, one line per case
# ------------------------------------------------------------------------------------------

def _convert(backend: str) -> Callable[[Any], Any]:
    if backend == "numpy":
        return lambda a: a
    if backend == "torch":
        import torch
        return lambda a: torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) and \
            a.dtype.kind in "fiubc" else a
    import jax
    import jax.numpy as jnp
    cpu = jax.devices("cpu")[0]

    def to_jax(a: Any) -> Any:
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub" or a.dtype.itemsize > 4 \
                and a.dtype.kind != "f":
            return a
        return jax.device_put(jnp.asarray(a), cpu)
    return to_jax


def _extreme(args: list, kw: dict) -> bool:
    """Inputs whose float32 arithmetic over- or underflows (values beyond 1e30 or below 1e-30,
    a sigma beyond them): there the reference, a plain float32 evaluation, is no oracle."""
    for v in list(args) + [kw.get("sigma")]:
        a = np.asarray(v) if isinstance(v, (np.ndarray, float, np.floating)) else None
        if a is not None and a.dtype.kind == "f" and a.size:
            mag = np.abs(a[np.isfinite(a) & (a != 0)])
            if mag.size and (mag.max() > 1e30 or mag.min() < 1e-30):
                return True
    return False


def _equal_to_reference(op: str, args: tuple, kw: dict, result: Any) -> str | None:
    """None if result equals eggroll.reference's (or the reference refuses the input)."""
    from eggroll import reference as ref
    import warnings
    warnings.simplefilter("ignore")          # the reference's own overflow warnings
    try:
        np_args = [np.asarray(a) if hasattr(a, "shape") or isinstance(a, list) else a
                   for a in args]
        rkw = {k: (np.asarray(v) if hasattr(v, "shape") and not isinstance(v, range) else v)
               for k, v in kw.items() if k not in ("out", "shared")}
        if kw.get("shared"):
            return None   # covered bit for bit by the shared-input tests
        if _extreme(np_args, rkw):
            return None   # the reference's float32 evaluation over- or underflows first
        if isinstance(rkw.get("sigma"), (bool, str)) or rkw.get("sigma") is None and "sigma" in rkw:
            return None
        want = getattr(ref, op)(*np_args, **rkw)
    except Exception:
        return None                    # the reference takes no such input: nothing to compare
    got = tuple(np.asarray(g) for g in result) if isinstance(result, tuple) else np.asarray(result)
    want = want if isinstance(want, tuple) else (want,)
    if not all(np.isfinite(np.asarray(w, np.float64)).all() for w in want):
        return None   # the reference overflowed (eggroll's sums may not: zscore, es_gradient)
    got = got if isinstance(got, tuple) else (got,)
    for g, w in zip(got, want):
        w = np.asarray(w)
        if g.shape != w.shape:
            return f"shape {g.shape} != reference {w.shape}"
        if w.dtype.kind in "iu" or op in ("normal", "lowrank_factors", "perturb_vector",
                                           "centered_rank", "antithetic_sign"):
            ok = np.array_equal(g, w.astype(g.dtype)) or np.allclose(g, w, rtol=1e-6, atol=0)
        else:
            fin = np.abs(w[np.isfinite(w)]) if w.size else np.zeros(0)
            scale = float(fin.max()) if fin.size else 0.0
            with np.errstate(all="ignore"):
                ok = np.allclose(g.astype(np.float64), w.astype(np.float64), rtol=1e-3,
                                 atol=1e-3 * max(scale, 1.0), equal_nan=True)   # O(1) inputs
        if not ok:
            return "differs from the reference"
    return None


def child(backend: str, start: int) -> None:
    import eggroll
    conv = _convert(backend)
    allowed_names = {"x", "W", "members", "epoch", "seed", "param_id", "sigma", "rank",
                     "noise_reuse", "antithetic", "out", "shared", "v", "shape", "fitness",
                     "full_rank", "f", "group_size", "sigma_shift", "fixed_point",
                     "pair_fitness", "threshold", "count", "offset", "epoch_index",
                     "noise_index", "counter", "key", "like", "population"}
    for i, (op, what, args, kw) in enumerate(cases()):
        if i < start:
            continue
        print(f"START {i}", flush=True)
        a = tuple(conv(v) for v in args)
        k = {n: (conv(v) if n in ("members", "out") else v) for n, v in kw.items()}
        # the reference sees the inputs as they were (out= may be one of them)
        args = tuple(np.array(v) if isinstance(v, np.ndarray) else v for v in args)
        if backend == "jax" and "out" in k:
            k.pop("out")
        try:
            res = getattr(eggroll, op)(*a, **k)
        except (ValueError, TypeError) as e:
            msg = str(e)
            named = msg.split(":", 1)[0] if ":" in msg else ""
            status = "named" if named in allowed_names else "unnamed"
            print(json.dumps([i, status, type(e).__name__, msg[:300]]), flush=True)
            continue
        except BaseException as e:  # noqa: BLE001 - anything else is what the fuzz looks for
            print(json.dumps([i, "other", type(e).__name__, str(e)[:300] + " " +
                              traceback.format_exc()[-600:]]), flush=True)
            continue
        bad = _equal_to_reference(op, args, kw, res)
        print(json.dumps([i, "ok" if bad is None else "wrong", "", bad or ""]), flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
