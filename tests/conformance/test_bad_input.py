"""Bad input (docs/ops.md): every public op raises ValueError/TypeError naming the argument."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import eggroll

# The children import the same eggroll as this process (the installed package in CI, the
# working tree under PYTHONPATH=python in development).
REPO_PYTHON = Path(eggroll.__file__).resolve().parents[1]
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

M, N_IN, M_OUT = 4, 6, 5  # population rows, n (in), m (out)
KEY = dict(epoch=0, seed=1, sigma=0.1)


def named(name: str) -> str:
    """The message starts with the argument's name: "x: expected ..." (design.md)."""
    return rf"^{re.escape(name)}:"


def f32(*shape: int) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 7.0 + 0.5


# ------------------------------------------------------------------------------------------
# One caller per public op that takes the noise key; keyword overrides replace defaults.
# ------------------------------------------------------------------------------------------

def call_lowrank_factors(**kw):
    args = dict(shape=(M_OUT, N_IN), members=range(M), **KEY)
    args.update(kw)
    return eggroll.lowrank_factors(args.pop("shape"), **args)


def call_perturbed_matmul(**kw):
    args = dict(x=f32(M, N_IN), W=f32(M_OUT, N_IN), members=range(M), **KEY)
    args.update(kw)
    return eggroll.perturbed_matmul(args.pop("x"), args.pop("W"), **args)


def call_perturbed_matmul_full(**kw):
    args = dict(x=f32(M, N_IN), W=f32(M_OUT, N_IN), members=range(M), **KEY)
    args.update(kw)
    return eggroll.perturbed_matmul_full(args.pop("x"), args.pop("W"), **args)


def call_perturb_vector(**kw):
    args = dict(v=f32(M_OUT), members=range(M), **KEY)
    args.update(kw)
    return eggroll.perturb_vector(args.pop("v"), **args)


def call_es_gradient(**kw):
    args = dict(fitness=f32(M), shape=(M_OUT, N_IN), **KEY)
    args.update(kw)
    return eggroll.es_gradient(args.pop("fitness"), args.pop("shape"), **args)


def call_es_gradient_full(**kw):
    return call_es_gradient(full_rank=True, **kw)


def call_es_gradient_vector(**kw):
    return call_es_gradient(shape=(M_OUT,), **kw)


KEY_OPS = {
    "lowrank_factors": call_lowrank_factors,
    "perturbed_matmul": call_perturbed_matmul,
    "perturbed_matmul_full": call_perturbed_matmul_full,
    "perturb_vector": call_perturb_vector,
    "es_gradient": call_es_gradient,
    "es_gradient_full": call_es_gradient_full,
    "es_gradient_vector": call_es_gradient_vector,
}
RANK_OPS = ("lowrank_factors", "perturbed_matmul", "es_gradient")
MEMBER_OPS = ("lowrank_factors", "perturbed_matmul", "perturbed_matmul_full", "perturb_vector",
              "es_gradient")

# (argument, bad value, exception)
KEY_CASES = [
    ("seed", -1, ValueError), ("seed", 1 << 64, ValueError), ("seed", 1.0, TypeError),
    ("seed", True, TypeError), ("seed", "1", TypeError), ("seed", None, TypeError),
    ("param_id", -1, ValueError), ("param_id", 1 << 32, ValueError),
    ("param_id", 1.5, TypeError),
    ("epoch", -1, ValueError), ("epoch", 1 << 32, ValueError), ("epoch", 0.0, TypeError),
    ("noise_reuse", -1, ValueError), ("noise_reuse", 1.0, TypeError),
    ("antithetic", 1, TypeError), ("antithetic", "yes", TypeError),
    ("sigma", float("nan"), ValueError), ("sigma", float("inf"), ValueError),
    ("sigma", -float("inf"), ValueError), ("sigma", 0.0, ValueError), ("sigma", -0.1, ValueError),
    ("sigma", np.float32("nan"), ValueError), ("sigma", np.float64("inf"), ValueError),
    ("sigma", "0.1", TypeError), ("sigma", None, TypeError), ("sigma", True, TypeError),
]
RANK_CASES = [("rank", 0, ValueError), ("rank", -1, ValueError), ("rank", 1.0, TypeError),
              ("rank", True, TypeError), ("rank", 1 << 30, ValueError)]


@pytest.mark.parametrize(("arg", "value", "exc"), KEY_CASES,
                         ids=[f"{a}={v!r}" for a, v, _ in KEY_CASES])
@pytest.mark.parametrize("op", list(KEY_OPS))
def test_noise_key_arguments(op, arg, value, exc):
    with pytest.raises(exc, match=named(arg)):
        KEY_OPS[op](**{arg: value})


@pytest.mark.parametrize(("arg", "value", "exc"), RANK_CASES,
                         ids=[f"{a}={v!r}" for a, v, _ in RANK_CASES])
@pytest.mark.parametrize("op", RANK_OPS)
def test_rank(op, arg, value, exc):
    with pytest.raises(exc, match=named(arg)):
        KEY_OPS[op](**{arg: value})


@pytest.mark.parametrize("op", [call_perturbed_matmul, call_perturbed_matmul_full])
def test_key_is_validated_even_without_members(op):
    """members=None (no perturbation) still rejects a bad noise key."""
    with pytest.raises(ValueError, match=named("sigma")):
        op(members=None, sigma=float("nan"))
    with pytest.raises(ValueError, match=named("seed")):
        op(members=None, seed=-1)


# ------------------------------------------------------------------------------------------
# members
# ------------------------------------------------------------------------------------------

MEMBER_CASES = [
    ([0, -1, 2, 3], ValueError),
    (np.array([0, 1, 2, -3]), ValueError),
    (range(-2, 2), ValueError),
    (range(1, -3, -1), ValueError),
    ([0.0, 1.0, 2.0, 3.0], TypeError),
    (np.arange(4, dtype=np.float32), TypeError),
    (np.array([True, False, True, False]), TypeError),
    (np.array([0j, 1j, 2j, 3j]), TypeError),
    (np.arange(4).reshape(2, 2), ValueError),
    (np.array([2**63, 0, 1, 2], dtype=np.uint64), ValueError),  # > int64: must not wrap
    ([2**64, 0, 1, 2], TypeError),
]


@pytest.mark.parametrize(("members", "exc"), MEMBER_CASES,
                         ids=[f"case{i}" for i in range(len(MEMBER_CASES))])
@pytest.mark.parametrize("op", MEMBER_OPS)
def test_bad_members(op, members, exc):
    with pytest.raises(exc, match=named("members")):
        KEY_OPS[op](members=members)


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full", "es_gradient"])
@pytest.mark.parametrize("members", [range(M - 1), range(M + 2), [0, 1]])
def test_members_length_must_match(op, members):
    with pytest.raises(ValueError, match=named("members")):
        KEY_OPS[op](members=members)


def test_forward_calls_accept_odd_member_counts():
    """Any subset of members is fine for a forward call (ops.md), even an odd one."""
    x, W = f32(3, N_IN), f32(M_OUT, N_IN)
    for fn in (eggroll.perturbed_matmul, eggroll.perturbed_matmul_full):
        y = fn(x, W, members=[0, 1, 2], **KEY)
        assert y.shape == (3, M_OUT) and np.isfinite(y).all()
        y1 = fn(x[:1], W, members=[1], **KEY)  # an odd member alone: its pair is elsewhere
        assert y1.shape == (1, M_OUT)
    v = eggroll.perturb_vector(f32(M_OUT), members=[1, 4, 5], **KEY)
    assert v.shape == (3, M_OUT)
    # antithetic partner alone: member 1 is exactly the negated perturbation of member 0
    A0, B0 = eggroll.lowrank_factors((M_OUT, N_IN), members=[0], **KEY)
    A1, B1 = eggroll.lowrank_factors((M_OUT, N_IN), members=[1], **KEY)
    assert np.array_equal(B0, B1) and np.array_equal(A1, -A0) and np.any(A0 != 0)


# ------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------

BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint32, np.bool_, np.complex64, np.complex128,
              np.object_]


def _as(dtype, shape):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=[np.dtype(d).name for d in BAD_DTYPES])
@pytest.mark.parametrize(("op", "arg", "shape"), [
    ("perturbed_matmul", "x", (M, N_IN)), ("perturbed_matmul", "W", (M_OUT, N_IN)),
    ("perturbed_matmul_full", "x", (M, N_IN)), ("perturbed_matmul_full", "W", (M_OUT, N_IN)),
    ("perturb_vector", "v", (M_OUT,)),
    ("es_gradient", "fitness", (M,)), ("es_gradient_full", "fitness", (M,)),
    ("es_gradient_vector", "fitness", (M,)),
])
def test_wrong_array_dtype(op, arg, shape, dtype):
    with pytest.raises(TypeError, match=named(arg)):
        KEY_OPS[op](**{arg: _as(dtype, shape)})


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_dtypes_are_converted(dtype):
    """float64 / float16 inputs are converted to float32 (numpy.py's documented policy)."""
    x, W = f32(M, N_IN), f32(M_OUT, N_IN)
    want = eggroll.perturbed_matmul(x.astype(dtype).astype(np.float32),
                                    W.astype(dtype).astype(np.float32), members=range(M), **KEY)
    got = eggroll.perturbed_matmul(x.astype(dtype), W.astype(dtype), members=range(M), **KEY)
    assert got.dtype == np.float32 and np.array_equal(got, want)


SHAPING = {"centered_rank": eggroll.centered_rank, "zscore": eggroll.zscore,
           "antithetic_sign": eggroll.antithetic_sign}


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.complex128, np.object_, np.str_],
                         ids=["bool", "complex64", "complex128", "object", "str"])
@pytest.mark.parametrize("op", list(SHAPING))
def test_shaping_wrong_dtype(op, dtype):
    f = np.array([1, 2, 3, 4]).astype(dtype)
    with pytest.raises(TypeError, match=named("f")):
        SHAPING[op](f)


def test_shaping_accepts_integer_fitness():
    """Integer fitness is converted (expected values worked out by hand)."""
    assert np.array_equal(eggroll.centered_rank(np.array([30, 10, 20], dtype=np.int32)),
                          np.array([0.5, -0.5, 0.0], dtype=np.float32))
    assert np.array_equal(eggroll.antithetic_sign(np.array([3, 1, 1, 1, 0, 2])),
                          np.array([1.0, 0.0, -1.0], dtype=np.float32))


# ------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize(("arg", "value"), [
    ("x", f32(N_IN)),                      # 1-D
    ("x", f32(M, 1, 1, N_IN)),             # 4-D
    ("x", np.float32(1.0)),                # 0-D
    ("W", f32(N_IN)),                      # 1-D
    ("W", f32(2, M_OUT, N_IN)),            # 3-D
    ("W", f32(M_OUT, N_IN + 1)),           # n does not match x
    ("W", f32(N_IN, M_OUT)),               # transposed
], ids=["x1d", "x4d", "x0d", "W1d", "W3d", "W_n_mismatch", "W_transposed"])
def test_forward_wrong_shape(op, arg, value):
    with pytest.raises(ValueError, match=named(arg)):
        KEY_OPS[op](**{arg: value})


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize("shape", [(M, M_OUT + 1), (M + 1, M_OUT), (M_OUT,), (M, 1, M_OUT),
                                   (M_OUT, M)])
def test_forward_wrong_out_shape(op, shape):
    with pytest.raises(ValueError, match=named("out")):
        KEY_OPS[op](out=np.zeros(shape, np.float32))


def test_forward_wrong_out_shape_batched():
    x = f32(M, 3, N_IN)
    with pytest.raises(ValueError, match=named("out")):
        call_perturbed_matmul(x=x, out=np.zeros((M, 2, M_OUT), np.float32))
    with pytest.raises(ValueError, match=named("out")):
        call_perturbed_matmul(x=x, out=np.zeros((M, M_OUT), np.float32))


@pytest.mark.parametrize("v", [f32(M_OUT, 1), np.float32(2.0), f32(1, M_OUT)],
                         ids=["2d", "0d", "row"])
def test_perturb_vector_wrong_shape(v):
    with pytest.raises(ValueError, match=named("v")):
        call_perturb_vector(v=v)


@pytest.mark.parametrize("op", ["es_gradient", "es_gradient_full", "es_gradient_vector"])
@pytest.mark.parametrize("fitness", [f32(2, 2), np.float32(1.0)], ids=["2d", "0d"])
def test_es_gradient_fitness_wrong_shape(op, fitness):
    with pytest.raises(ValueError, match=named("fitness")):
        KEY_OPS[op](fitness=fitness)


@pytest.mark.parametrize(("op", "shape", "exc"), [
    ("lowrank_factors", (M_OUT,), ValueError),         # a vector has no low-rank factors
    ("lowrank_factors", (3, 4, 5), ValueError),
    ("lowrank_factors", (0, 4), ValueError),
    ("lowrank_factors", (4, 0), ValueError),
    ("lowrank_factors", (4, -2), ValueError),
    ("lowrank_factors", (), ValueError),
    ("lowrank_factors", 5, TypeError),
    ("lowrank_factors", (4.0, 5), TypeError),
    ("es_gradient", (3, 4, 5), ValueError),
    ("es_gradient", (0, 4), ValueError),
    ("es_gradient", (0,), ValueError),
    ("es_gradient", (), ValueError),
    ("es_gradient", 5, TypeError),
    ("es_gradient", ("a", 2), TypeError),
    ("es_gradient_full", (-1, 3), ValueError),
])
def test_bad_shape_argument(op, shape, exc):
    with pytest.raises(exc, match=named("shape")):
        KEY_OPS[op](shape=shape)


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
def test_unsupported_framework_array(op):
    """Arrays of a framework eggroll has no adapter for: TypeError naming the argument."""
    fake = type("Tensor", (), {"__module__": "tensorflow.python.framework"})()
    with pytest.raises(TypeError, match=named("x")):
        KEY_OPS[op](x=fake)


# ------------------------------------------------------------------------------------------
# population rules of the update (ops.md: antithetic => N even)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["es_gradient", "es_gradient_full", "es_gradient_vector"])
@pytest.mark.parametrize("N", [1, 3, 7])
def test_es_gradient_odd_population_with_antithetic(op, N):
    with pytest.raises(ValueError, match=named("fitness")):
        KEY_OPS[op](fitness=f32(N), members=range(N))
    g = KEY_OPS[op](fitness=f32(N), members=range(N), antithetic=False)  # fine without it
    assert g.dtype == np.float32 and np.isfinite(g).all() and np.any(g != 0)


@pytest.mark.parametrize("op", ["es_gradient", "es_gradient_full", "es_gradient_vector"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_es_gradient_non_finite_fitness(op, bad):
    f = f32(M)
    f[2] = bad
    with pytest.raises(ValueError, match=named("fitness")):
        KEY_OPS[op](fitness=f)


@pytest.mark.parametrize("op", ["es_gradient", "es_gradient_full", "es_gradient_vector"])
def test_es_gradient_empty_population(op):
    """Decision: an empty population has no estimate (0/0) -> ValueError naming fitness."""
    with pytest.raises(ValueError, match=named("fitness")):
        KEY_OPS[op](fitness=np.zeros(0, np.float32), members=range(0))


# ------------------------------------------------------------------------------------------
# fitness shaping
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", list(SHAPING))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shaping_non_finite(op, bad, dtype):
    f = np.array([1.0, bad, 3.0, 4.0], dtype=dtype)
    with pytest.raises(ValueError, match=named("f")):
        SHAPING[op](f)


@pytest.mark.parametrize("op", list(SHAPING))
@pytest.mark.parametrize("f", [np.ones((2, 2)), np.float64(1.0)], ids=["2d", "0d"])
def test_shaping_wrong_shape(op, f):
    with pytest.raises(ValueError, match=named("f")):
        SHAPING[op](f)


@pytest.mark.parametrize("N", [1, 3, 5])
def test_antithetic_sign_odd_population(N):
    with pytest.raises(ValueError, match=named("f")):
        eggroll.antithetic_sign(np.arange(N, dtype=np.float64))


@pytest.mark.parametrize(("group_size", "exc"), [
    (-1, ValueError), (3, ValueError), (5, ValueError), (2.0, TypeError), (True, TypeError),
    ("2", TypeError), (None, TypeError),
])
def test_zscore_bad_group_size(group_size, exc):
    with pytest.raises(exc, match=named("group_size")):
        eggroll.zscore(np.arange(4, dtype=np.float64), group_size)


@pytest.mark.parametrize("op", list(SHAPING))
def test_shaping_non_contiguous(op):
    with pytest.raises(ValueError, match=named("f")):
        SHAPING[op](np.arange(8, dtype=np.float64)[::2])


# ------------------------------------------------------------------------------------------
# layout: non-contiguous inputs and bad out buffers
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "arg", "value"), [
    ("perturbed_matmul", "x", f32(N_IN, M).T),
    ("perturbed_matmul", "x", f32(M, 2 * N_IN)[:, ::2]),
    ("perturbed_matmul", "x", f32(M, N_IN, 3).transpose(0, 2, 1)),
    ("perturbed_matmul", "W", f32(M_OUT, 2 * N_IN)[:, ::2]),  # (a contiguous W.T is read as is)
    ("perturbed_matmul_full", "x", f32(M, 2 * N_IN)[:, ::2]),
    ("perturbed_matmul_full", "W", f32(2 * M_OUT, N_IN)[::2]),
    ("perturb_vector", "v", f32(2 * M_OUT)[::2]),
    ("es_gradient", "fitness", f32(2 * M)[::2]),
    ("es_gradient_full", "fitness", f32(2 * M)[::2]),
    ("es_gradient_vector", "fitness", f32(2 * M)[::-2]),
], ids=["x_T", "x_strided", "x3d_T", "W_strided", "full_x", "full_W", "v", "fitness", "fitness_full",
        "fitness_vec"])
def test_non_contiguous_input(op, arg, value):
    assert not value.flags.c_contiguous
    with pytest.raises(ValueError, match=named(arg)):
        KEY_OPS[op](**{arg: value})


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize(("out", "exc"), [
    (np.zeros((M, M_OUT), np.float64), TypeError),
    (np.zeros((M, M_OUT), np.float16), TypeError),
    (np.zeros((M, M_OUT), np.int32), TypeError),
    (np.zeros((M, M_OUT), np.complex64), TypeError),
    ([[0.0] * M_OUT] * M, TypeError),                          # not an array
    (np.zeros((M_OUT, M), np.float32).T, ValueError),          # non-contiguous
    (np.zeros((M, 2 * M_OUT), np.float32)[:, ::2], ValueError),
    (np.broadcast_to(np.zeros(M_OUT, np.float32), (M, M_OUT)), ValueError),  # read-only
], ids=["f64", "f16", "i32", "c64", "list", "T", "strided", "readonly"])
def test_bad_out(op, out, exc):
    with pytest.raises(exc, match=named("out")):
        KEY_OPS[op](out=out)


@pytest.mark.parametrize("op", ["perturbed_matmul", "perturbed_matmul_full"])
def test_good_out_is_filled_and_returned(op):
    out = np.full((M, M_OUT), np.nan, np.float32)
    y = KEY_OPS[op](out=out)
    assert y is out
    assert np.array_equal(out, KEY_OPS[op]())


# ------------------------------------------------------------------------------------------
# philox4x32 and normal
# ------------------------------------------------------------------------------------------

KEY0 = np.zeros(2, np.uint32)
C0 = np.zeros(4, np.uint32)


@pytest.mark.parametrize(("counter", "key", "exc", "arg"), [
    (np.zeros(4, np.float32), KEY0, TypeError, "counter"),
    (np.zeros(4, np.float64), KEY0, TypeError, "counter"),
    (np.zeros(4, bool), KEY0, TypeError, "counter"),
    (np.zeros(4, np.complex64), KEY0, TypeError, "counter"),
    (np.array([2**70, 0, 0, 0], dtype=object), KEY0, TypeError, "counter"),
    (C0, np.zeros(2, np.float64), TypeError, "key"),
    (C0, np.array([True, False]), TypeError, "key"),
    ([-1, 0, 0, 0], KEY0, ValueError, "counter"),
    ([2**32, 0, 0, 0], KEY0, ValueError, "counter"),
    (C0, [0, 2**32], ValueError, "key"),
    (C0, [-1, 0], ValueError, "key"),
    (np.zeros(3, np.uint32), KEY0, ValueError, "counter"),
    (np.zeros((2, 5), np.uint32), KEY0, ValueError, "counter"),
    (np.uint32(0), KEY0, ValueError, "counter"),
    (C0, np.zeros(3, np.uint32), ValueError, "key"),
    (C0, np.zeros(1, np.uint32), ValueError, "key"),
    (C0, np.zeros((1, 2), np.uint32), ValueError, "key"),
    (C0, np.uint32(0), ValueError, "key"),
], ids=["c_f32", "c_f64", "c_bool", "c_c64", "c_obj", "k_f64", "k_bool", "c_neg", "c_big",
        "k_big", "k_neg", "c_len3", "c_len5", "c_0d", "k_len3", "k_len1", "k_2d", "k_0d"])
def test_philox_bad_input(counter, key, exc, arg):
    with pytest.raises(exc, match=named(arg)):
        eggroll.philox4x32(counter, key)


def test_philox_non_contiguous_counter_is_named():
    """No op copies an input for its layout (docs/ops.md): a strided counter is a ValueError
    naming it, and its contiguous copy gives the words of the same counters."""
    c = np.arange(32, dtype=np.uint32).reshape(4, 8)[:, ::2]
    assert not c.flags.c_contiguous
    with pytest.raises(ValueError, match="^counter: must be C-contiguous"):
        eggroll.philox4x32(c, np.array([5, 6], np.uint32))
    got = eggroll.philox4x32(np.ascontiguousarray(c), [5, 6])
    assert np.array_equal(got[1], eggroll.philox4x32([8, 10, 12, 14], [5, 6]))


def test_philox_counter_with_many_batch_dims():
    c = np.zeros((1, 2, 1, 2, 4), np.uint32)
    try:
        got = eggroll.philox4x32(c, KEY0)
    except ValueError as e:
        assert str(e).startswith("counter:"), str(e)
    else:
        assert got.shape == c.shape
        want = np.array([0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8], np.uint32)
        assert np.array_equal(got.reshape(-1, 4), np.tile(want, (4, 1)))


@pytest.mark.parametrize(("kw", "exc", "arg"), [
    (dict(count=-1), ValueError, "count"),
    (dict(count=(1 << 34) + 1), ValueError, "count"),
    (dict(count=3.0), TypeError, "count"),
    (dict(count=True), TypeError, "count"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1 << 64), ValueError, "seed"),
    (dict(seed=2.0), TypeError, "seed"),
    (dict(param_id=-1), ValueError, "param_id"),
    (dict(param_id=1 << 32), ValueError, "param_id"),
    (dict(epoch_index=-1), ValueError, "epoch_index"),
    (dict(epoch_index=1 << 32), ValueError, "epoch_index"),
    (dict(noise_index=-1), ValueError, "noise_index"),
    (dict(noise_index=1 << 32), ValueError, "noise_index"),
    (dict(noise_index=0.5), TypeError, "noise_index"),
    (dict(offset=-1), ValueError, "offset"),
    (dict(offset=(1 << 34) + 1), ValueError, "offset"),
    (dict(offset=1.0), TypeError, "offset"),
])
def test_normal_bad_arguments(kw, exc, arg):
    args = dict(count=3, seed=1)
    args.update(kw)
    with pytest.raises(exc, match=named(arg)):
        eggroll.normal(args.pop("count"), **args)


def test_normal_accepts_numpy_integers():
    z = eggroll.normal(np.int64(5), seed=np.uint64(U64_MAX), param_id=np.uint32(U32_MAX),
                       epoch_index=np.int32(3), noise_index=np.uint64(U32_MAX),
                       offset=np.int16(7))
    want = eggroll.normal(5, seed=U64_MAX, param_id=U32_MAX, epoch_index=3,
                          noise_index=U32_MAX, offset=7)
    assert np.array_equal(z.view(np.uint32), want.view(np.uint32))


# ------------------------------------------------------------------------------------------
# set_num_threads / set_isa
# ------------------------------------------------------------------------------------------

@pytest.fixture
def restore_backend():
    isa, threads = eggroll.get_isa(), eggroll.get_num_threads()
    yield
    eggroll.set_isa(isa)
    eggroll.set_num_threads(threads)


@pytest.mark.parametrize(("n", "exc"), [(0, ValueError), (-1, ValueError),
                                        (1.5, TypeError), (2.0, TypeError), (True, TypeError),
                                        ("2", TypeError), (None, TypeError)])
def test_set_num_threads_bad(restore_backend, n, exc):
    before = eggroll.get_num_threads()
    with pytest.raises(exc, match=named("n")):
        eggroll.set_num_threads(n)
    assert eggroll.get_num_threads() == before


@pytest.mark.parametrize("name", ["sse", "", "AVX2", "avx", "auto", "scalar "])
def test_set_isa_unknown_name(restore_backend, name):
    before = eggroll.get_isa()
    with pytest.raises(ValueError, match=named("name")):
        eggroll.set_isa(name)
    assert eggroll.get_isa() == before


@pytest.mark.parametrize("name", [3, None, 2.5])
def test_set_isa_not_a_string(restore_backend, name):
    with pytest.raises(TypeError, match="name"):
        eggroll.set_isa(name)


def test_set_num_threads_is_capped(restore_backend):
    """A huge thread count (set_num_threads or EGGROLL_NUM_THREADS) is capped instead of
    starting that many OS threads (results never depend on the count)."""
    eggroll.set_num_threads(100_000)
    assert 1 <= eggroll.get_num_threads() <= max(64, 8 * (os.cpu_count() or 1))
    res = run_isolated("return eggroll.get_num_threads()", env={"EGGROLL_NUM_THREADS": "100000"})
    assert res["raised"] is None and int(res["result"]) <= max(64, 8 * (os.cpu_count() or 1)), res


def test_set_isa_paths_the_cpu_lacks(restore_backend):
    """Every level either runs (and is reported back) or is a ValueError naming it; which ones
    this CPU has is eggroll.isas(), whatever the machine (AVX2-only, AVX-512, AMX)."""
    supported = []
    for name in ("scalar", "avx2", "avx_vnni", "avx512", "avx512_vnni", "amx"):
        try:
            eggroll.set_isa(name)
        except ValueError as e:
            assert str(e).startswith("name:") and name in str(e), e
        else:
            assert eggroll.get_isa() == name
            supported.append(name)
    assert supported == eggroll.isas() and supported[0] == "scalar"
    assert eggroll.best_isa() == supported[-1]
    with pytest.raises(ValueError, match="^name:"):
        eggroll.set_isa("avx9000")


@pytest.mark.parametrize("cap", ["scalar", "avx2"])
def test_max_isa_environment_hides_the_wider_levels(cap):
    """EGGROLL_MAX_ISA=<level>: the process behaves as on a CPU without the wider levels (how
    the suite is run as on an AVX2-only machine); an unknown name is a ValueError naming it."""
    res = run_isolated("return [eggroll.isas(), eggroll.get_isa()]", env={"EGGROLL_MAX_ISA": cap})
    assert res["raised"] is None, res
    levels = eggroll.isas()
    assert res["result"] == str([levels[:levels.index(cap) + 1], cap])
    res = run_isolated("return eggroll.isas()", env={"EGGROLL_MAX_ISA": "avx9000"})
    assert res["raised"] == "ValueError" and res["msg"].startswith("EGGROLL_MAX_ISA:"), res


# ------------------------------------------------------------------------------------------
# The GIL is released while the core computes
# ------------------------------------------------------------------------------------------

def test_gil_released_during_compute():
    assert eggroll._core.gil_released_probe() is True


# ------------------------------------------------------------------------------------------
# Crash-prone input runs in a child process: a segfault, abort or hang fails the test
# instead of killing the run. The child's address space is capped at 16 GiB so that a
# request for an absurd allocation fails the same way on every machine.
# ------------------------------------------------------------------------------------------

CHILD = """
import json, resource
resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import numpy as np
import eggroll
KEY = dict(epoch=0, seed=1, sigma=0.1)

def case():
{body}

def summary(r):
    if isinstance(r, np.ndarray):
        return {{"shape": list(r.shape), "dtype": str(r.dtype),
                 "finite": bool(np.isfinite(r).all()) if r.dtype.kind == "f" else True,
                 "zero": bool((r == 0).all())}}
    if isinstance(r, tuple):
        return [summary(a) for a in r]
    return repr(r)

try:
    r = case()
except Exception as e:
    kind = ("ValueError" if isinstance(e, ValueError) else
            "TypeError" if isinstance(e, TypeError) else type(e).__name__)
    out = {{"raised": kind, "type": type(e).__name__, "msg": str(e)}}
else:
    out = {{"raised": None, "result": summary(r)}}
print("RESULT " + json.dumps(out), flush=True)
"""


def run_isolated(body: str, timeout: float = 60, env: dict | None = None) -> dict:
    code = CHILD.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_PYTHON), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative = killed by signal "
        f"{-proc.returncode}); stderr tail:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"child printed no result; stdout:\n{proc.stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def expect_raises(body: str, exc: str, arg: str) -> None:
    res = run_isolated(body)
    assert res["raised"] == exc, res
    assert res["msg"].startswith(f"{arg}:"), res


def expect_result(body: str) -> object:
    res = run_isolated(body)
    assert res["raised"] is None, res
    return res["result"]


def test_child_harness_reports_signals():
    """The harness itself: a child killed by a signal fails the assertion."""
    with pytest.raises(AssertionError, match="killed by signal"):
        run_isolated("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")


# --- extreme members -----------------------------------------------------------------------

X1 = "x = np.ones((1, 6), np.float32); W = np.ones((5, 6), np.float32)\n"


@pytest.mark.parametrize(("call", "member", "antithetic"), [
    ("eggroll.perturbed_matmul(x, W, members=[{m}], antithetic={a}, **KEY)", 2**33, True),
    ("eggroll.perturbed_matmul(x, W, members=[{m}], antithetic={a}, **KEY)", 2**32, False),
    ("eggroll.perturbed_matmul(x, W, members=[{m}], antithetic={a}, **KEY)", 2**62, True),
    ("eggroll.perturbed_matmul_full(x, W, members=[{m}], antithetic={a}, **KEY)", 2**33, True),
    ("eggroll.perturb_vector(W[0], members=[{m}], antithetic={a}, **KEY)", 2**33, True),
    ("eggroll.lowrank_factors((5, 6), members=[{m}], antithetic={a}, **KEY)", 2**32, False),
    ("eggroll.es_gradient(np.ones(2, np.float32), (5, 6), members=[{m}, {m} + 1], "
     "antithetic={a}, **KEY)", 2**33, True),
    ("eggroll.es_gradient(np.ones(2, np.float32), (5,), members=[{m}, {m} + 1], "
     "antithetic={a}, **KEY)", 2**33, True),
], ids=["mm_2^33", "mm_plain_2^32", "mm_2^62", "full_2^33", "vector_2^33", "factors_plain_2^32",
        "grad_2^33", "grad_vector_2^33"])
def test_members_beyond_the_noise_index_range(call, member, antithetic):
    """k must fit 32 bits: member < 2^33 with antithetic, < 2^32 without."""
    expect_raises(X1 + "return " + call.format(m=member, a=antithetic), "ValueError", "members")


def test_largest_members_work():
    """The largest members whose noise index still fits 32 bits are perturbed normally."""
    res = expect_result("""
    x = np.ones((1, 6), np.float32); W = np.ones((5, 6), np.float32)
    a = eggroll.perturbed_matmul(x, W, members=[2**33 - 1], **KEY)
    b = eggroll.perturbed_matmul(x, W, members=[2**32 - 1], antithetic=False, **KEY)
    assert not np.array_equal(a, x @ W.T) and not np.array_equal(b, x @ W.T)
    return a
    """)
    assert res == {"shape": [1, 5], "dtype": "float32", "finite": True, "zero": False}


# --- the end of the stream -----------------------------------------------------------------

@pytest.mark.parametrize(("count", "offset"), [(5, 2**34 - 3), (1, 2**34), (2, 2**34 - 1),
                                               (2**20, 2**34 - 2**19)])
def test_normal_past_the_end_of_the_stream(count, offset):
    expect_raises(f"return eggroll.normal({count}, seed=1, offset={offset})", "ValueError",
                  "offset")


@pytest.mark.parametrize(("count", "offset"), [(3, 2**34 - 3), (1, 2**34 - 1), (2**20, 2**34 - 2**20)])
def test_normal_up_to_the_end_of_the_stream(count, offset):
    res = expect_result(f"return eggroll.normal({count}, seed=2**64 - 1, offset={offset})")
    assert res["shape"] == [count] and res["finite"]


def test_normal_past_the_end_is_checked_before_allocating():
    expect_raises("return eggroll.normal(2**34, seed=1, offset=1)", "ValueError", "offset")


# --- huge shapes ---------------------------------------------------------------------------

def test_huge_rank_in_forward():
    """(m + n) * rank > 2^34 values per member: ValueError naming rank, nothing allocated."""
    expect_raises("""
    x = np.ones((1, 2**14), np.float32); W = np.ones((4, 2**14), np.float32)
    return eggroll.perturbed_matmul(x, W, members=[0], rank=2**20, **KEY)
    """, "ValueError", "rank")


def test_huge_rank_in_lowrank_factors():
    expect_raises("return eggroll.lowrank_factors((2**14, 2**14), members=range(2**20), "
                  "rank=2**20, **KEY)", "ValueError", "rank")


def test_huge_full_rank_gradient():
    expect_raises("return eggroll.es_gradient(np.ones(2, np.float32), (2**20, 2**15), "
                  "full_rank=True, **KEY)", "ValueError", "shape")


# --- out overlapping its inputs ------------------------------------------------------------

@pytest.mark.parametrize("fn", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize(("setup", "arg"), [
    ("a = np.ones((6, 6), np.float32); x, W, out = a, np.ones((6, 6), np.float32), a", "x"),
    ("a = np.ones((6, 6), np.float32); x, W, out = np.ones((6, 6), np.float32), a, a", "W"),
    ("buf = np.ones(100, np.float32); x = buf[:24].reshape(4, 6); "
     "W = np.ones((5, 6), np.float32); out = buf[20:40].reshape(4, 5)", "x"),
    ("buf = np.ones(100, np.float32); W = buf[:30].reshape(5, 6); "
     "x = np.ones((4, 6), np.float32); out = buf[29:49].reshape(4, 5)", "W"),
    ("buf = np.ones(200, np.float32); x = buf[:72].reshape(4, 3, 6); "
     "W = np.ones((5, 6), np.float32); out = buf[71:131].reshape(4, 3, 5)", "x"),
], ids=["out_is_x", "out_is_W", "partial_x", "partial_W", "partial_x3d"])
def test_out_overlapping_inputs(fn, setup, arg):
    res = run_isolated(setup + f"\nreturn eggroll.{fn}(x, W, members=range(x.shape[0]), "
                       "out=out, **KEY)")
    assert res["raised"] == "ValueError", res
    assert res["msg"].startswith("out:") and arg in res["msg"], res


# --- zero-size dimensions --------------------------------------------------------------
# Decisions: M = 0 members returns an empty result; n = 0 (an empty sum) returns zeros of
# shape [M, m]; m = 0 returns [M, 0]; es_gradient of an empty population raises (above);
# lowrank_factors rejects m or n = 0 through `shape` (above).



@pytest.mark.parametrize(("body", "want"), [
    ("return eggroll.perturbed_matmul(np.ones((0, 6), np.float32), np.ones((5, 6), np.float32), "
     "members=range(0), **KEY)", [0, 5]),
    ("return eggroll.perturbed_matmul(np.ones((0, 6), np.float32), np.ones((5, 6), np.float32), "
     "members=[], **KEY)", [0, 5]),
    ("return eggroll.perturbed_matmul_full(np.ones((0, 6), np.float32), "
     "np.ones((5, 6), np.float32), members=range(0), **KEY)", [0, 5]),
    ("return eggroll.perturbed_matmul(np.ones((0, 3, 6), np.float32), "
     "np.ones((5, 6), np.float32), members=range(0), **KEY)", [0, 3, 5]),
    ("return eggroll.perturbed_matmul(np.ones((3, 0, 6), np.float32), "
     "np.ones((5, 6), np.float32), members=range(3), **KEY)", [3, 0, 5]),
    ("return eggroll.perturbed_matmul_full(np.ones((3, 0, 6), np.float32), "
     "np.ones((5, 6), np.float32), members=range(3), **KEY)", [3, 0, 5]),
    ("return eggroll.perturb_vector(np.ones(5, np.float32), members=range(0), **KEY)", [0, 5]),
    ("return eggroll.perturb_vector(np.ones(0, np.float32), members=range(3), **KEY)", [3, 0]),
    ("return eggroll.normal(0, seed=1)", [0]),
    ("return eggroll.philox4x32(np.zeros((0, 4), np.uint32), [1, 2])", [0, 4]),
    ("return eggroll.centered_rank(np.zeros(0))", [0]),
    ("return eggroll.zscore(np.zeros(0))", [0]),
    ("return eggroll.antithetic_sign(np.zeros(0))", [0]),
], ids=["mm_M0", "mm_M0_list", "full_M0", "mm3d_M0", "mm3d_b0", "full3d_b0", "vector_M0",
        "vector_m0", "normal_0", "philox_0", "centered_rank_0", "zscore_0", "antithetic_sign_0"])
def test_empty_results(body, want):
    res = expect_result(body)
    assert res["shape"] == want, res


def test_empty_lowrank_factors():
    res = expect_result("return eggroll.lowrank_factors((5, 6), members=range(0), rank=2, **KEY)")
    assert [r["shape"] for r in res] == [[0, 5, 2], [0, 6, 2]]


@pytest.mark.parametrize("fn", ["perturbed_matmul", "perturbed_matmul_full"])
@pytest.mark.parametrize(("xs", "ws", "want", "zero"), [
    ((3, 0), (5, 0), [3, 5], True),          # n = 0: every output is an empty sum
    ((3, 6), (0, 6), [3, 0], True),          # m = 0
    ((3, 2, 0), (5, 0), [3, 2, 5], True),
], ids=["n0", "m0", "n0_3d"])
def test_empty_inner_or_output_dimension(fn, xs, ws, want, zero):
    res = expect_result(f"return eggroll.{fn}(np.ones({xs}, np.float32), "
                        f"np.ones({ws}, np.float32), members=range(3), **KEY)")
    assert res["shape"] == want and res["zero"] == zero, res


def test_core_fullrank_correction_with_n_zero_does_not_crash():
    """Through the binding entry directly (x [3, 0], W [4, 0]): the product is zeros."""
    res = run_isolated("""
    from eggroll import _core
    x = np.empty((3, 0), np.float32); W = np.empty((4, 0), np.float32)
    return _core.perturbed_matmul_full(x, W, range(3), None, False, True, 1, 0, 0, 1, False,
                                       1.0, 1, 4, 0)
    """)
    assert res["raised"] in (None, "ValueError"), res
