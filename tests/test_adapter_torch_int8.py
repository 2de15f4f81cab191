"""The int8 ops on torch tensors: bit for bit against the int64 reference and the NumPy path,
opcheck, torch.compile(fullgraph=True), argument errors."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import eggroll  # noqa: E402
import eggroll.torch as et  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from eggroll.torch import _int8  # noqa: E402

KEY = dict(epoch=3, seed=(1 << 63) + 12345, param_id=7)


def _rand_int8(rng, shape):
    return rng.integers(-127, 128, size=shape, dtype=np.int8)


@pytest.mark.parametrize("shape_x,m,rank,antithetic", [
    ((6, 17), 5, 1, True), ((4, 3, 33), 9, 2, True), ((5, 64), 97, 1, False)])
def test_forward_matches_reference_and_numpy(shape_x, m, rank, antithetic):
    rng = np.random.default_rng(1)
    x, W = _rand_int8(rng, shape_x), _rand_int8(rng, (m, shape_x[-1]))
    members = np.arange(2, 2 + shape_x[0])
    kw = dict(KEY, rank=rank, sigma_shift=3, fixed_point=4, antithetic=antithetic)
    want = ref.perturbed_matmul_int8(x, W, members=members, **kw)
    got = eggroll.perturbed_matmul_int8(torch.from_numpy(x), torch.from_numpy(W),
                                        members=torch.from_numpy(members), **kw)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int8
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(got.numpy(), eggroll.perturbed_matmul_int8(
        x, W, members=members, **kw))
    unperturbed = et.perturbed_matmul_int8(torch.from_numpy(x), torch.from_numpy(W),
                                           members=None, **kw)
    np.testing.assert_array_equal(unperturbed.numpy(),
                                  ref.perturbed_matmul_int8(x, W, members=None, **kw))


def test_update_matches_reference_and_in_place():
    rng = np.random.default_rng(2)
    W = _rand_int8(rng, (13, 21))
    f = rng.integers(-1, 2, size=8).astype(np.int8)
    kw = dict(KEY, rank=2, fixed_point=4, threshold=3)
    want = ref.int8_update(W, f, **kw)
    Wt = torch.from_numpy(W.copy())
    got = eggroll.int8_update(Wt, torch.from_numpy(f), **kw)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(Wt.numpy(), W)           # functional by default
    et.int8_update(Wt, torch.from_numpy(f), out=Wt, **kw)  # in place on request
    np.testing.assert_array_equal(Wt.numpy(), want)


def test_opcheck_and_compile():
    rng = np.random.default_rng(3)
    x, W = torch.from_numpy(_rand_int8(rng, (4, 2, 8))), torch.from_numpy(_rand_int8(rng, (3, 8)))
    mem = torch.arange(4)
    args = (x, W, mem, 5, 1, 0, 2, 1, True, 1, 2, 4)
    torch.library.opcheck(_int8.perturbed_matmul_int8_op, args)
    f = torch.tensor([1, -1, 0], dtype=torch.int8)
    torch.library.opcheck(_int8.int8_update_op, (W, f, 2, 5, 1, 0, 2, 1, 1, 4))

    def layer(x, W, mem):
        return et.perturbed_matmul_int8(x, W, members=mem, epoch=2, seed=5, sigma_shift=2)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(layer, fullgraph=True, backend="aot_eager")(x, W, mem),
                       layer(x, W, mem))


def test_errors_name_the_argument():
    x, W = torch.zeros(2, 4, dtype=torch.int8), torch.zeros(3, 4, dtype=torch.int8)
    with pytest.raises(TypeError, match="^x: expected dtype torch.int8"):
        et.perturbed_matmul_int8(x.float(), W, members=range(2), sigma_shift=1)
    with pytest.raises(ValueError, match="^W: must be contiguous"):
        et.perturbed_matmul_int8(x, torch.zeros(4, 3, dtype=torch.int8).T, members=range(2),
                                 sigma_shift=1)
    with pytest.raises(ValueError, match="^members"):
        et.perturbed_matmul_int8(x, W, members=range(3), sigma_shift=1)
    with pytest.raises(ValueError, match="^pair_fitness"):
        et.int8_update(W, torch.tensor([2]), threshold=1)
    with pytest.raises(ValueError, match="^threshold"):
        et.int8_update(W, torch.tensor([1]), threshold=0)
