"""perturbed_embedding: every backend equals the reference bit for bit (NumPy, torch; shared
ids, int32 ids, any member form, thread counts, SIMD paths), its rows are the rows of the
table perturbed_matmul perturbs (the tied-weight contract), and bad input is rejected."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll
from eggroll import reference as ref
from conftest import MEMBER_FORMS, make_members, supported_isas

SEED = 0x9E3779B97F4A7C15
KEY = dict(epoch=3, seed=SEED, param_id=77, sigma=0.03, noise_reuse=2)


def _ids(rng, M, V, shape=(5,), dtype=np.int64):
    return rng.integers(0, V, size=(M, *shape)).astype(dtype)


@pytest.mark.parametrize("form", MEMBER_FORMS)
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 33)])
def test_numpy_equals_reference_bit_for_bit(rng, form, rank, antithetic, shape):
    V, d, M = 29, 17, 6
    W = rng.standard_normal((V, d)).astype(np.float32)
    members = make_members(form, M, rng)
    ids = _ids(rng, M, V, shape)
    got = eggroll.perturbed_embedding(ids, W, members=members, rank=rank, antithetic=antithetic,
                                      **KEY)
    want = ref.perturbed_embedding(ids, W, members=members, rank=rank, antithetic=antithetic,
                                   **KEY)
    assert got.shape == (M, *shape, d) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_int32_ids_broadcast_ids_and_member_split_give_the_same_bits(rng):
    V, d, M = 40, 24, 8
    W = rng.standard_normal((V, d)).astype(np.float32)
    ids = _ids(rng, 1, V, (3, 11))[0]                                # [3, 11], shared
    shared = np.broadcast_to(ids, (M, *ids.shape))                  # stride 0: read once
    full = eggroll.perturbed_embedding(np.ascontiguousarray(shared), W, members=range(M), **KEY)
    np.testing.assert_array_equal(
        eggroll.perturbed_embedding(shared, W, members=range(M), **KEY), full)
    np.testing.assert_array_equal(
        eggroll.perturbed_embedding(np.broadcast_to(ids.astype(np.int32), shared.shape), W,
                                    members=range(M), **KEY), full)
    halves = [eggroll.perturbed_embedding(shared[:3], W, members=range(3), **KEY),
              eggroll.perturbed_embedding(shared[3:], W, members=range(3, M), **KEY)]
    np.testing.assert_array_equal(np.concatenate(halves), full)


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


def test_members_none_is_the_plain_lookup(rng):
    W = rng.standard_normal((9, 4)).astype(np.float32)
    ids = _ids(rng, 3, 9, (6,))
    np.testing.assert_array_equal(eggroll.perturbed_embedding(ids, W, members=None, **KEY),
                                  W[ids])


@pytest.mark.parametrize("rank", [1, 2])
def test_rows_are_the_rows_of_the_table_perturbed_matmul_perturbs(rng, rank):
    """The tied-weight contract: perturbed_matmul with W [V, d] applies W + E_i; feeding it
    the unit vectors of R^d reads (W + E_i)^T column by column, so its output, transposed, is
    member i's whole table, which perturbed_embedding returns row by row."""
    V, d, M = 13, 8, 4
    W = rng.standard_normal((V, d)).astype(np.float32)
    eye = np.broadcast_to(np.eye(d, dtype=np.float32), (M, d, d)).copy()
    table = eggroll.perturbed_matmul(eye, W, members=range(M), rank=rank, **KEY)   # [M, d, V]
    ids = np.broadcast_to(np.arange(V), (M, V))
    rows = eggroll.perturbed_embedding(ids, W, members=range(M), rank=rank, **KEY)  # [M, V, d]
    A, B = ref.lowrank_factors((V, d), members=range(M), rank=rank, dtype=np.float64, **KEY)
    exact = W.astype(np.float64) + A @ B.transpose(0, 2, 1)                       # [M, V, d]
    # each side rounds the correction once or twice: a few float32 ulps of the entries
    tol = 4 * np.spacing(np.float32(np.abs(exact).max()))
    np.testing.assert_allclose(rows, exact, rtol=0, atol=tol)
    np.testing.assert_allclose(table.transpose(0, 2, 1), exact, rtol=0, atol=tol)


def test_es_gradient_of_the_table_shape_is_the_update_of_the_lookup(rng):
    """g = (1/(N sigma)) sum_i f_i E_i with the very E_i the lookups added."""
    V, d, N = 7, 5, 6
    W = np.zeros((V, d), np.float32)
    f = rng.standard_normal(N).astype(np.float32)
    ids = np.broadcast_to(np.arange(V), (N, V))
    E = eggroll.perturbed_embedding(ids, W, members=range(N), **KEY).astype(np.float64)
    g = eggroll.es_gradient(f, (V, d), **KEY)
    expected = np.einsum("i,ivd->vd", f.astype(np.float64), E) / (N * KEY["sigma"])
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)


def test_bad_input_names_the_argument(rng):
    W = rng.standard_normal((6, 3)).astype(np.float32)
    ids = _ids(rng, 2, 6)
    out_of_range = ids.copy()
    out_of_range[1, 2] = 6
    with pytest.raises(ValueError, match=r"^ids: every id must be in \[0, 6\).*got 6"):
        eggroll.perturbed_embedding(out_of_range, W, members=range(2), **KEY)
    with pytest.raises(ValueError, match=r"^ids: every id must be in \[0, 6\).*got -1"):
        eggroll.perturbed_embedding(-np.ones((2, 3), np.int64), W, members=None, **KEY)
    with pytest.raises(TypeError, match="^ids: expected int64 or int32"):
        eggroll.perturbed_embedding(ids.astype(np.float32), W, members=range(2), **KEY)
    with pytest.raises(ValueError, match="^ids: each member's ids must be contiguous"):
        eggroll.perturbed_embedding(_ids(rng, 2, 6, (4, 4)).transpose(0, 2, 1), W,
                                    members=range(2), **KEY)
    with pytest.raises(ValueError, match=r"^ids: expected \[M, \.\.\.\]"):
        eggroll.perturbed_embedding(np.int64(3), W, members=range(2), **KEY)
    with pytest.raises(ValueError, match="^members: has 3 entries but the leading dimension "
                                         "of ids is 2"):
        eggroll.perturbed_embedding(ids, W, members=range(3), **KEY)
    with pytest.raises(ValueError, match="^W: expected a 2-D array"):
        eggroll.perturbed_embedding(ids, W[0], members=range(2), **KEY)
    with pytest.raises(ValueError, match="^rank: "):
        eggroll.perturbed_embedding(ids, W, members=range(2), rank=0, **KEY)


# ------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------

def test_torch_equals_numpy_bit_for_bit_and_expand_is_read_once(rng):
    torch = pytest.importorskip("torch")
    import eggroll.torch as et
    V, d, M = 31, 12, 6
    W = rng.standard_normal((V, d)).astype(np.float32)
    ids = _ids(rng, M, V, (2, 9))
    want = eggroll.perturbed_embedding(ids, W, members=range(M), rank=2, **KEY)
    got = et.perturbed_embedding(torch.from_numpy(ids), torch.from_numpy(W), members=range(M),
                                 rank=2, **KEY)
    np.testing.assert_array_equal(got.numpy(), want)
    one = torch.from_numpy(ids[0])
    shared = et.perturbed_embedding(one.expand(M, *one.shape), torch.from_numpy(W),
                                    members=range(M), **KEY)
    np.testing.assert_array_equal(
        shared.numpy(),
        eggroll.perturbed_embedding(np.broadcast_to(ids[0], (M, 2, 9)), W, members=range(M),
                                    **KEY))
    np.testing.assert_array_equal(       # the top-level function dispatches on W's type
        eggroll.perturbed_embedding(torch.from_numpy(ids).int(), torch.from_numpy(W),
                                    members=range(M), rank=2, **KEY).numpy(), want)


def test_torch_gradient_with_respect_to_the_table(rng):
    torch = pytest.importorskip("torch")
    import eggroll.torch as et
    V, d, M = 5, 3, 4
    W = torch.randn(V, d, dtype=torch.float32, requires_grad=True)
    ids = torch.from_numpy(_ids(rng, M, V, (6,)))
    weights = torch.randn(M, 6, d)
    (et.perturbed_embedding(ids, W, members=range(M), **KEY) * weights).sum().backward()
    W2 = W.detach().clone().requires_grad_(True)
    (torch.nn.functional.embedding(ids, W2) * weights).sum().backward()
    torch.testing.assert_close(W.grad, W2.grad)


def test_torch_errors_and_compile(rng):
    torch = pytest.importorskip("torch")
    import eggroll.torch as et
    W = torch.randn(6, 3)
    with pytest.raises(TypeError, match="^ids: expected int64 or int32"):
        et.perturbed_embedding(torch.zeros(2, 3), W, members=range(2), **KEY)
    with pytest.raises(ValueError, match=r"^ids: every id must be in \[0, 6\)"):
        et.perturbed_embedding(torch.full((2, 3), 9), W, members=range(2), **KEY)
    ids = torch.from_numpy(_ids(rng, 2, 6))

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(ids, W):
        return et.perturbed_embedding(ids, W, members=range(2), **KEY) * 2

    torch.testing.assert_close(f(ids, W), 2 * et.perturbed_embedding(ids, W, members=range(2),
                                                                     **KEY), rtol=0, atol=0)
