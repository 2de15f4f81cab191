"""eggroll.fitness: per-member losses on NumPy population outputs, against an independent
float64 formula within the derived tolerance, and their argument checks."""
from __future__ import annotations

import numpy as np
import pytest

import eggroll
from conftest import assert_close_derived


def _ce_reference(logits, labels, dtype):
    """Mean cross-entropy per member: log-sum-exp over classes minus the label's score, in
    `dtype`, one row at a time (no shared code with eggroll.fitness)."""
    z = logits.astype(dtype)
    M, b, _ = z.shape
    lab = np.broadcast_to(labels, (M, b))
    out = np.zeros(M, dtype)
    for i in range(M):
        for r in range(b):
            row = z[i, r]
            mx = row.max()
            out[i] += np.log(np.exp(row - mx).sum()) + mx - row[lab[i, r]]
        out[i] /= b
    return out


@pytest.mark.parametrize("C", [1, 2, 10, 33, 200])     # 33+: the reduction along the axis
@pytest.mark.parametrize("per_member", [False, True])
def test_cross_entropy_matches_the_float64_reference(C, per_member):
    rng = np.random.default_rng(C)
    M, b = 6, 9
    logits = (rng.standard_normal((M, b, C)) * 4 + 30).astype(np.float32)   # large: stable?
    labels = rng.integers(0, C, (M, b) if per_member else b)
    got = eggroll.fitness.cross_entropy(logits, labels)
    assert got.shape == (M,) and got.dtype == np.float32
    assert_close_derived(got, _ce_reference(logits, labels, np.float64),
                         _ce_reference(logits, labels, np.float32), what="cross_entropy")


def test_cross_entropy_of_a_chunk_equals_its_rows_of_the_whole():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((12, 5, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    whole = eggroll.fitness.cross_entropy(logits, labels)
    np.testing.assert_array_equal(eggroll.fitness.cross_entropy(logits[4:8], labels), whole[4:8])


def test_cross_entropy_is_finite_for_extreme_scores():
    """exp of the raw scores would overflow; after subtracting the row maximum it cannot:
    row 1 costs 0, row 2 (the label 2e30 below the maximum) 2e30."""
    logits = np.array([[[1e30, -1e30, 0.0], [-1e30, 1e30, 0.0]]], np.float32)
    got = eggroll.fitness.cross_entropy(logits, np.array([0, 0]))
    np.testing.assert_allclose(got, [1e30], rtol=1e-6)


def _small(per_member):
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((4, 7, 10)) * 3).astype(np.float32)
    labels = rng.integers(0, 10, (4, 7) if per_member else 7)
    return (logits, labels, _ce_reference(logits, labels, np.float64),
            _ce_reference(logits, labels, np.float32))


@pytest.mark.parametrize("per_member", [False, True])
def test_cross_entropy_on_torch_equals_the_reference(per_member):
    torch = pytest.importorskip("torch")
    logits, labels, ref64, ref32 = _small(per_member)
    got = eggroll.fitness.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    assert isinstance(got, torch.Tensor)
    assert_close_derived(got.numpy(), ref64, ref32, what="cross_entropy (torch)")


@pytest.mark.parametrize("per_member", [False, True])
def test_cross_entropy_on_jax_equals_the_reference(per_member):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    logits, labels, ref64, ref32 = _small(per_member)
    with jax.default_device(jax.devices("cpu")[0]):
        got = jax.jit(eggroll.fitness.cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
    assert isinstance(got, jax.Array)
    assert_close_derived(np.asarray(got), ref64, ref32, what="cross_entropy (jax)")


def test_cross_entropy_framework_bad_arguments():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="^labels: expected integer"):
        eggroll.fitness.cross_entropy(torch.zeros(2, 3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"^labels: expected shape \(3,\) or \(2, 3\)"):
        eggroll.fitness.cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(ValueError, match=r"^logits: expected a non-empty \[M, b, C\]"):
        eggroll.fitness.cross_entropy(jnp.zeros((3, 4)), jnp.zeros(3, jnp.int32))


@pytest.mark.parametrize("logits,labels,exc,match", [
    (np.zeros((2, 3, 4), np.int32), np.zeros(3, int), TypeError, "^logits: expected a float"),
    (np.zeros((3, 4), np.float32), np.zeros(3, int), ValueError, r"^logits: expected a non-empty \[M, b, C\]"),
    (np.zeros((2, 0, 4), np.float32), np.zeros(0, int), ValueError, "^logits: expected a non-empty"),
    (np.zeros((2, 3, 4), np.float32), np.zeros(3), TypeError, "^labels: expected integer"),
    (np.zeros((2, 3, 4), np.float32), np.zeros(4, int), ValueError, r"^labels: expected shape \(3,\) or \(2, 3\)"),
    (np.zeros((2, 3, 4), np.float32), np.array([0, 4, 1]), ValueError, r"^labels: class indices must lie in \[0, 4\)"),
    (np.zeros((2, 3, 4), np.float32), np.array([0, -1, 1]), ValueError, r"^labels: class indices"),
])
def test_cross_entropy_bad_arguments(logits, labels, exc, match):
    with pytest.raises(exc, match=match):
        eggroll.fitness.cross_entropy(logits, labels)
