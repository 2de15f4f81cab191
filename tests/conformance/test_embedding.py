"""perturbed_embedding on every backend: the reference bit for bit (shared ids, int32 ids, any
member form, member splits; thread counts and SIMD paths on NumPy), its rows are the rows of
the table perturbed_matmul perturbs (the tied-weight contract), es_gradient of the table's
shape is its update, and bad input is rejected by name."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref
from conftest import MEMBER_FORMS, make_members, on, supported_isas

SEED = 0x9E3779B97F4A7C15
KEY = dict(epoch=3, seed=SEED, param_id=77, sigma=0.03, noise_reuse=2)


def _ids(rng, M, V, shape=(5,), dtype=np.int64):
    return rng.integers(0, V, size=(M, *shape)).astype(dtype)


@pytest.mark.parametrize("form", MEMBER_FORMS)
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 33)])
def test_equals_the_reference_bit_for_bit(backend, rng, form, rank, antithetic, shape):
    V, d, M = 29, 17, 6
    W = rng.standard_normal((V, d)).astype(np.float32)
    members = make_members(form, M, rng)
    ids = _ids(rng, M, V, shape)
    got = on(backend, eggroll.perturbed_embedding, ids, W, members=members, rank=rank,
             antithetic=antithetic, **KEY)
    want = ref.perturbed_embedding(ids, W, members=members, rank=rank, antithetic=antithetic,
                                   **KEY)
    assert got.shape == (M, *shape, d) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_shared_int32_ids_and_member_splits_give_the_same_bits(backend, rng):
    V, d, M = 40, 24, 8
    W = rng.standard_normal((V, d)).astype(np.float32)
    ids = _ids(rng, 1, V, (3, 11))[0]                                # [3, 11], every member's
    full = on(backend, eggroll.perturbed_embedding,
              np.ascontiguousarray(np.broadcast_to(ids, (M, *ids.shape))), W,
              members=range(M), **KEY)
    np.testing.assert_array_equal(
        on(backend, eggroll.perturbed_embedding, ids, W, members=range(M), shared=True, **KEY),
        full)
    np.testing.assert_array_equal(
        on(backend, eggroll.perturbed_embedding, ids.astype(np.int32), W, members=range(M),
           shared=True, **KEY), full)
    halves = [on(backend, eggroll.perturbed_embedding, ids, W, members=range(3), shared=True,
                 **KEY),
              on(backend, eggroll.perturbed_embedding, ids, W, members=range(3, M),
                 shared=True, **KEY)]
    np.testing.assert_array_equal(np.concatenate(halves), full)
    np.testing.assert_array_equal(       # shared without members: the plain lookup, no axis
        on(backend, eggroll.perturbed_embedding, ids, W, members=None, shared=True, **KEY),
        W[ids])


def test_a_stride_0_member_axis_is_a_shared_input(rng):
    V, d, M = 40, 24, 8
    W = rng.standard_normal((V, d)).astype(np.float32)
    ids = _ids(rng, 1, V, (3, 11))[0]
    np.testing.assert_array_equal(
        eggroll.perturbed_embedding(np.broadcast_to(ids, (M, *ids.shape)), W,
                                    members=range(M), **KEY),
        eggroll.perturbed_embedding(ids, W, members=range(M), shared=True, **KEY))


def test_threads_and_simd_paths_do_not_change_the_bits(rng, restore_threads, restore_isa):
    V, d, M = 50, 33, 5
    W = rng.standard_normal((V, d)).astype(np.float32)
    ids = _ids(rng, M, V, (130,))                                    # > one 64-token block
    want = ref.perturbed_embedding(ids, W, members=range(M), rank=2, **KEY)
    for isa in supported_isas():
        eggroll.set_isa(isa)
        for threads in (1, 2, 3):
            eggroll.set_num_threads(threads)
            np.testing.assert_array_equal(
                eggroll.perturbed_embedding(ids, W, members=range(M), rank=2, **KEY), want)


def test_members_none_is_the_plain_lookup(backend, rng):
    W = rng.standard_normal((9, 4)).astype(np.float32)
    ids = _ids(rng, 3, 9, (6,))
    np.testing.assert_array_equal(
        on(backend, eggroll.perturbed_embedding, ids, W, members=None, **KEY), W[ids])


@pytest.mark.parametrize("rank", [1, 2])
def test_rows_are_the_rows_of_the_table_perturbed_matmul_perturbs(rng, rank):
    """The tied-weight contract: perturbed_matmul with W [V, d] applies W + E_i; feeding it
    the unit vectors of R^d reads (W + E_i)^T column by column, so its output, transposed, is
    member i's whole table, which perturbed_embedding returns row by row."""
    V, d, M = 13, 8, 4
    W = rng.standard_normal((V, d)).astype(np.float32)
    table = eggroll.perturbed_matmul(np.eye(d, dtype=np.float32), W, members=range(M),
                                     rank=rank, shared=True, **KEY)          # [M, d, V]
    rows = eggroll.perturbed_embedding(np.arange(V), W, members=range(M), rank=rank,
                                       shared=True, **KEY)                  # [M, V, d]
    A, B = ref.lowrank_factors((V, d), members=range(M), rank=rank, dtype=np.float64, **KEY)
    exact = W.astype(np.float64) + A @ B.transpose(0, 2, 1)                # [M, V, d]
    # each side rounds the correction once or twice: a few float32 ulps of the entries
    tol = 4 * np.spacing(np.float32(np.abs(exact).max()))
    np.testing.assert_allclose(rows, exact, rtol=0, atol=tol)
    np.testing.assert_allclose(table.transpose(0, 2, 1), exact, rtol=0, atol=tol)


def test_es_gradient_of_the_table_shape_is_the_update_of_the_lookup(rng):
    """g = (1/(N sigma)) sum_i f_i E_i with the very E_i the lookups added."""
    V, d, N = 7, 5, 6
    W = np.zeros((V, d), np.float32)
    f = rng.standard_normal(N).astype(np.float32)
    E = eggroll.perturbed_embedding(np.arange(V), W, members=range(N), shared=True,
                                    **KEY).astype(np.float64)
    g = eggroll.es_gradient(f, (V, d), **KEY)
    expected = np.einsum("i,ivd->vd", f.astype(np.float64), E) / (N * KEY["sigma"])
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


def test_bad_input_names_the_argument(backend, rng):
    W = rng.standard_normal((6, 3)).astype(np.float32)
    ids = _ids(rng, 2, 6)
    out_of_range = ids.copy()
    out_of_range[1, 2] = 6

    def call(i, w=W, **kw):
        return on(backend, eggroll.perturbed_embedding, i, w, **{**KEY, **kw})

    if backend.cpu:   # device ids are checked on the device (a flag raised by the next call)
        with pytest.raises(ValueError, match=r"^ids: every id must be in \[0, 6\).*got 6"):
            call(out_of_range, members=range(2))
        with pytest.raises(ValueError, match=r"^ids: every id must be in \[0, 6\).*got -1"):
            call(-np.ones((2, 3), np.int64), members=None)
    with pytest.raises(TypeError, match="^ids: expected int64 or int32"):
        call(ids.astype(np.float32), members=range(2))
    if not backend.name.startswith("jax"):            # JAX arrays have no strides
        with pytest.raises(ValueError, match="^ids: each member's ids must be contiguous"):
            call(_ids(rng, 2, 6, (4, 4)).transpose(0, 2, 1), members=range(2))
    with pytest.raises(ValueError, match="^members: has 3 entries but the leading dimension "
                                         "of ids is 2"):
        call(ids, members=range(3))
    with pytest.raises(ValueError, match=r"^W: expected a table \[V, d\]"):
        call(ids, W[0], members=range(2))
    with pytest.raises(ValueError, match="^rank: "):
        call(ids, members=range(2), rank=0)
    with pytest.raises(ValueError, match="^W: the table has no rows"):
        call(ids, np.zeros((0, 3), np.float32), members=range(2))


def test_jax_jit_with_traced_ids_equals_eager(rng):
    jax = pytest.importorskip("jax")
    V, d, M = 23, 9, 4
    W = jax.numpy.asarray(rng.standard_normal((V, d)).astype(np.float32))
    ids = jax.numpy.asarray(_ids(rng, M, V, (3, 5)).astype(np.int32))
    f = jax.jit(lambda i, w, e: eggroll.perturbed_embedding(
        i, w, members=range(M), rank=2, **{**KEY, "epoch": e}))
    np.testing.assert_array_equal(
        np.asarray(f(ids, W, 3)),
        ref.perturbed_embedding(np.asarray(ids), np.asarray(W), members=range(M), rank=2, **KEY))
