"""The PyTorch adapter (eggroll.torch, torch.ops.eggroll.*): every op against the reference and
bit for bit against the NumPy path, opcheck, torch.compile(fullgraph=True), autograd, bad input."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eggroll  # noqa: E402
import eggroll.torch as et  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from eggroll.torch import _ops  # noqa: E402

from conftest import assert_close_derived, lowrank_forward_magnitude  # noqa: E402

SEED = 0xF123456789ABCDEF            # >= 2^63: must survive the int64 op schema
PARAM_ID = 0xFFFFFFF1
EPOCH = 7


def _devices():
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append(pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
            not _has_cuda_build(), reason="eggroll built without CUDA (no eggroll._cuda)")]))
    return devs


def _has_cuda_build() -> bool:
    try:
        import eggroll._cuda  # noqa: F401
    except ImportError:
        return False
    return True


DEVICES = _devices()


def _key(members, **extra):
    return dict(members=members, epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3,
                noise_reuse=3, **extra)


def _np(t):
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------------------------
# ops vs the reference and vs the NumPy path
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,b,rank", [(1, 1, None, 1), (17, 97, None, 3), (97, 17, 5, 1),
                                        (16, 33, 17, 8)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_perturbed_matmul(device, m, n, b, rank, antithetic, rng):
    M = 6
    x = rng.standard_normal((M, n) if b is None else (M, b, n)).astype(np.float32)
    W = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
    members = rng.permutation(3 * M)[:M]
    key = _key(members, rank=rank, antithetic=antithetic)
    y = eggroll.perturbed_matmul(torch.from_numpy(x).to(device), torch.from_numpy(W).to(device),
                                 **key)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert y.device.type == device and tuple(y.shape) == x.shape[:-1] + (m,)
    if device == "cpu":     # the same core ops: the NumPy path's bits
        np.testing.assert_array_equal(_np(y), eggroll.perturbed_matmul(x, W, **key))
    r64 = ref.perturbed_matmul(x, W, **key, dtype=np.float64)
    r32 = ref.perturbed_matmul(x, W, **key)
    A, B = ref.lowrank_factors((m, n), **key, dtype=np.float64)
    assert_close_derived(_np(y), r64, r32, lowrank_forward_magnitude(x, W, A, B), "torch")


@pytest.mark.parametrize("device", DEVICES)
def test_unperturbed_product_is_the_numpy_one(device, rng):
    x = rng.standard_normal((9, 4, 31)).astype(np.float32)
    W = rng.standard_normal((13, 31)).astype(np.float32)
    y = et.perturbed_matmul(torch.from_numpy(x).to(device), torch.from_numpy(W).to(device),
                            members=None)
    if device == "cpu":
        np.testing.assert_array_equal(_np(y), eggroll.numpy.perturbed_matmul(x, W, members=None))
    r64 = ref.perturbed_matmul(x, W, members=None, epoch=0, seed=0, sigma=1.0,
                               dtype=np.float64)
    r32 = ref.perturbed_matmul(x, W, members=None, epoch=0, seed=0, sigma=1.0)
    assert_close_derived(_np(y), r64, r32, np.abs(x.astype(np.float64)) @ np.abs(W.T), "base")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b", [None, 3])
def test_perturbed_matmul_full(device, b, rng):
    M, m, n = 4, 5, 7
    x = rng.standard_normal((M, n) if b is None else (M, b, n)).astype(np.float32)
    W = rng.standard_normal((m, n)).astype(np.float32)
    key = _key(range(1, 1 + M), antithetic=True)
    y = et.perturbed_matmul_full(torch.from_numpy(x).to(device),
                                 torch.from_numpy(W).to(device), **key)
    if device == "cpu":
        np.testing.assert_array_equal(_np(y), eggroll.perturbed_matmul_full(x, W, **key))
    r64 = ref.perturbed_matmul_full(x, W, **key, dtype=np.float64)
    r32 = ref.perturbed_matmul_full(x, W, **key)
    assert_close_derived(_np(y), r64, r32, None, "full")


@pytest.mark.parametrize("device", DEVICES)
def test_perturb_vector_and_lowrank_factors_bit_identical(device, rng):
    v = rng.standard_normal(23).astype(np.float32)
    members = [0, 1, 5, 2]
    key = _key(members)
    pv = et.perturb_vector(torch.from_numpy(v).to(device), **key)
    np.testing.assert_array_equal(_np(pv), ref.perturb_vector(v, **key))
    A, B = et.lowrank_factors((6, 5), **key, rank=2, device=device)
    A_ref, B_ref = ref.lowrank_factors((6, 5), **key, rank=2)
    np.testing.assert_array_equal(_np(A), A_ref)
    np.testing.assert_array_equal(_np(B), B_ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,rank,full_rank", [((7, 5), 2, False), ((7, 5), 1, True),
                                                  ((11,), 1, False)])
def test_es_gradient(device, shape, rank, full_rank, rng):
    f = rng.standard_normal(8).astype(np.float32)
    key = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3, rank=rank,
               full_rank=full_rank)
    g = et.es_gradient(torch.from_numpy(f).to(device), shape, **key)
    assert tuple(g.shape) == shape and g.device.type == device
    if device == "cpu":
        np.testing.assert_array_equal(_np(g), eggroll.es_gradient(f, shape, **key))
    r64 = ref.es_gradient(f, shape, **key, dtype=np.float64)
    r32 = ref.es_gradient(f, shape, **key)
    mag = ref.es_gradient(np.abs(f), shape, **key, dtype=np.float64)  # a bound on the terms
    assert_close_derived(_np(g), r64, r32, np.abs(mag) * 4, "es_gradient")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_fitness_shaping(device, dtype, rng):
    f = np.round(rng.standard_normal(12) * 3).astype(dtype)     # ties on purpose
    t = torch.from_numpy(f).to(device)
    for name, args in (("centered_rank", ()), ("zscore", (0,)), ("zscore", (4,)),
                       ("antithetic_sign", ())):
        out = getattr(et, name)(t, *args)
        assert out.dtype == torch.float32
        np.testing.assert_array_equal(_np(out), getattr(eggroll.numpy, name)(f, *args))
    np.testing.assert_array_equal(_np(et.centered_rank(t)),
                                  ref.centered_rank(f, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(_np(et.antithetic_sign(t)), ref.antithetic_sign(f))
    z64 = ref.zscore(f, 4, dtype=np.float64)
    assert_close_derived(_np(et.zscore(t, 4)), z64, ref.zscore(f, 4), None, "zscore")


@pytest.mark.parametrize("device", DEVICES)
def test_philox4x32_bit_identical(device, rng):
    counter = rng.integers(0, 2**32, (2, 3, 4), dtype=np.uint64).astype(np.uint32)
    key = np.array([0xDEADBEEF, 7], dtype=np.uint32)
    out = et.philox4x32(torch.from_numpy(counter.astype(np.int64)).to(device),
                        torch.from_numpy(key.astype(np.int64)).to(device))
    assert out.dtype == torch.uint32 and tuple(out.shape) == (2, 3, 4)
    expected = ref.philox4x32(counter.reshape(-1, 4), key).reshape(2, 3, 4)
    np.testing.assert_array_equal(out.cpu().to(torch.int64).numpy(), expected.astype(np.int64))


def test_split_population_is_bit_identical(rng):
    """Members evaluated in two calls give the bits of one call (the project's guarantee)."""
    x = torch.from_numpy(rng.standard_normal((10, 3, 16)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((8, 16)).astype(np.float32))
    key = dict(epoch=1, seed=SEED, sigma=0.1, rank=2)
    whole = et.perturbed_matmul(x, W, members=range(10), **key)
    parts = torch.cat([et.perturbed_matmul(x[:3], W, members=range(3), **key),
                       et.perturbed_matmul(x[3:], W, members=range(3, 10), **key)])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_torch_threads_give_the_pool_bits(threads, rng):
    """On torch's OpenMP team (any torch.set_num_threads) or on eggroll's own pool: the same
    bits for every op that runs in parallel."""
    x = torch.from_numpy(rng.standard_normal((67, 300)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((130, 300)).astype(np.float32))
    f = torch.from_numpy(rng.standard_normal(68).astype(np.float32))
    key = dict(epoch=2, seed=SEED, sigma=0.1)

    def run():
        return (et.perturbed_matmul(x, W, members=range(67), rank=3, **key),
                et.es_gradient(f, (130, 300), rank=2, **key),
                et.perturb_vector(W[0], members=range(67), **key))
    saved = torch.get_num_threads()
    try:
        assert et.use_torch_threads(False) is False
        own = run()
        assert et.use_torch_threads(True) is ("OpenMP" in torch.__config__.parallel_info())
        torch.set_num_threads(threads)
        lent = run()
    finally:
        torch.set_num_threads(saved)
        et.use_torch_threads(True)
    for a, b in zip(own, lent):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(own[0].numpy(), eggroll.perturbed_matmul(
        x.numpy(), W.numpy(), members=range(67), rank=3, **key))


_FORK_SCRIPT = """
import os, sys, torch, eggroll, eggroll.torch as et
x = torch.randn(64, 300); W = torch.randn(200, 300)
f = lambda: et.perturbed_matmul(x, W, members=range(64), seed=5, epoch=1, sigma=0.1)
expected = f()                      # a parallel region on torch's team in the parent
pid = os.fork()
if pid == 0:
    os._exit(0 if torch.equal(f(), expected) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_forked_child_runs_the_ops_without_hanging():
    """libgomp's team does not survive fork (a torch op in such a child hangs): eggroll's ops
    in the child fall back to eggroll's own pool and give the parent's bits. In a fresh
    interpreter (this process has JAX's and other threads), with a timeout for the hang."""
    import subprocess
    try:
        r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], timeout=120,
                           capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the eggroll op hung in a forked child")
    assert r.returncode == 0, r.stderr


def test_out_argument(rng):
    x = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((3, 6)).astype(np.float32))
    out = torch.empty(4, 3)
    y = et.perturbed_matmul(x, W, members=range(4), out=out, sigma=0.2)
    assert y is out
    assert torch.equal(out, et.perturbed_matmul(x, W, members=range(4), sigma=0.2))
    with pytest.raises(ValueError, match="^out: expected shape"):
        et.perturbed_matmul(x, W, members=range(4), out=torch.empty(4, 4))


# ------------------------------------------------------------------------------------------
# opcheck and torch.compile(fullgraph=True) on every op
# ------------------------------------------------------------------------------------------

def _op_samples(device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, generator=g)
    W = torch.randn(7, 5, generator=g)
    m = torch.tensor([3, 0, 7, 2])
    key = (*_ops.seed_halves(SEED), PARAM_ID, EPOCH, 3, True, 0.3)
    f = torch.randn(6, generator=g)
    samples = {
        "perturbed_matmul": [(x, W, m, *key, 2), (x[:, 0].contiguous(), W, None, *key, 1)],
        "perturbed_matmul_full": [(x, W, m, *key), (x, W, None, *key)],
        "perturb_vector": [(torch.randn(5, generator=g), m, *key)],
        "lowrank_factors": [(m, 7, 5, *key, 2)],
        "es_gradient": [(f, torch.arange(6), [7, 5], *key, 2, False),
                        (f, torch.arange(6), [9], *key, 1, True)],
        "centered_rank": [(f,), (f.double(),)],
        "zscore": [(f, 0), (f, 3)],
        "antithetic_sign": [(f,)],
        "philox4x32": [(torch.arange(12).reshape(3, 4).to(torch.uint32),
                        torch.tensor([1, 2]).to(torch.uint32))],
    }
    return {name: [tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
                   for args in cases] for name, cases in samples.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(_ops.OPS))
def test_opcheck(name, device):
    for args in _op_samples(device)[name]:
        torch.library.opcheck(getattr(torch.ops.eggroll, name).default, args)


def test_opcheck_with_gradients():
    x, W, m, *rest = _op_samples()["perturbed_matmul"][0]
    torch.library.opcheck(torch.ops.eggroll.perturbed_matmul.default,
                          (x.requires_grad_(), W.requires_grad_(), m, *rest))
    v, *rest = _op_samples()["perturb_vector"][0]
    torch.library.opcheck(torch.ops.eggroll.perturb_vector.default, (v.requires_grad_(), *rest))


def test_torch_compile_fullgraph_every_op():
    """One compiled function calls every op through the public functions; no graph break
    (fullgraph=True) and the eager results."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    x, W, v = torch.randn(6, 3, 5, generator=g), torch.randn(7, 5, generator=g), \
        torch.randn(7, generator=g)
    members = torch.arange(6)
    counter = torch.arange(8).reshape(2, 4).to(torch.uint32)
    pkey = torch.tensor([5, 6]).to(torch.uint32)

    def every_op(x, W, v, members, counter, pkey):
        key = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3)
        y = et.perturbed_matmul(x, W, members=members, rank=2, **key)
        y = y + et.perturbed_matmul_full(x, W, members=members, **key)
        y = y + et.perturb_vector(v, members=members, **key)[:, None, :]
        fit = y.sum(dim=(1, 2))
        shaped = et.centered_rank(fit) + et.zscore(fit, 2)
        sign = et.antithetic_sign(fit)
        gW = et.es_gradient(shaped, (7, 5), rank=2, **key)
        gv = et.es_gradient(shaped, (7,), **key)
        A, B = torch.ops.eggroll.lowrank_factors(members, 7, 5, *_ops.seed_halves(SEED),
                                                 PARAM_ID, EPOCH, 1, True, 0.3, 2)
        return y, gW, gv, sign, A, B, torch.ops.eggroll.philox4x32(counter, pkey)

    eager = every_op(x, W, v, members, counter, pkey)
    compiled = torch.compile(every_op, fullgraph=True, backend="aot_eager")(
        x, W, v, members, counter, pkey)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")    # inside inductor's own imports
def test_torch_compile_inductor_perturbed_matmul():
    """The default backend (inductor) around the hot op, with ops fused around it."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 8, generator=g)
    W = torch.randn(3, 8, generator=g)
    members = torch.arange(4)

    def op(x, W, members):
        return et.perturbed_matmul(x * 2, W, members=members, seed=SEED, sigma=0.1)

    def layer(x, W, members):
        return torch.tanh(op(x, W, members)) + 1

    # The op is eggroll's kernel either way: bit-identical under inductor.
    assert torch.equal(torch.compile(op, fullgraph=True)(x, W, members), op(x, W, members))
    # Inductor's fused tanh may differ from eager's by a few float32 ulps; the values lie in
    # [0, 2], so a few ulps of 1 (2^-23 each) bound the difference.
    torch.testing.assert_close(torch.compile(layer, fullgraph=True)(x, W, members),
                               layer(x, W, members), rtol=0, atol=4 * 2.0 ** -23)


# ------------------------------------------------------------------------------------------
# autograd: exact where cheap, otherwise a clear error
# ------------------------------------------------------------------------------------------

def test_perturbed_matmul_gradcheck():
    """y is linear in x and in W, so central differences are exact up to rounding: with the
    float32 op inside, eps = 1e-2 and |y| ~ 10 give a difference error ~ 10 * 6e-8 / 2e-2
    = 3e-5, well inside atol = rtol = 1e-3."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for members in (range(4), None):
        def f(x, W):
            return et.perturbed_matmul(x.float(), W.float(), members=members, seed=SEED,
                                       sigma=0.5, rank=2).double()
        assert torch.autograd.gradcheck(f, (x, W), eps=1e-2, atol=1e-3, rtol=1e-3)
    v = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: et.perturb_vector(v.float(), members=range(3), sigma=0.5).double(), (v,),
        eps=1e-2, atol=1e-3, rtol=1e-3)


def test_perturbed_matmul_grad_matches_the_formula(rng):
    """dL/dx_i = g_i (W + A_i B_i^T), from the reference factors in float64."""
    x = torch.from_numpy(rng.standard_normal((3, 2, 6)).astype(np.float32)).requires_grad_()
    W = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    key = _key([4, 1, 2], rank=3)
    et.perturbed_matmul(x, W, **key).sum().backward()
    A, B = ref.lowrank_factors((4, 6), **key, dtype=np.float64)
    ones = np.ones((3, 2, 4))
    expected = ones @ W.numpy().astype(np.float64) + ones @ A @ B.transpose(0, 2, 1)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call", ["full", "es_gradient", "centered_rank"])
def test_backward_through_a_non_differentiable_op_says_why(call):
    x = torch.randn(2, 3, requires_grad=True)
    W = torch.randn(4, 3)
    if call == "full":
        y = et.perturbed_matmul_full(x, W, members=range(2), sigma=0.1)
    elif call == "es_gradient":
        y = et.es_gradient(x.sum(1), (4, 3), sigma=0.1)
    else:
        y = et.centered_rank(x.sum(1))
    with pytest.raises(RuntimeError, match="not differentiable: evolution strategies"):
        y.sum().backward()


# ------------------------------------------------------------------------------------------
# bad input: errors name the argument
# ------------------------------------------------------------------------------------------

def test_non_contiguous_inputs_are_rejected():
    x = torch.randn(5, 4, 3).transpose(1, 2)       # [5, 3, 4], not contiguous
    W = torch.randn(2, 4)
    with pytest.raises(ValueError, match="^x: must be contiguous"):
        et.perturbed_matmul(x, W, members=range(5))
    with pytest.raises(ValueError, match="^W: must be contiguous"):
        et.perturbed_matmul(x.contiguous(), torch.randn(4, 2).t(), members=range(5))
    with pytest.raises(ValueError, match="^f: must be contiguous"):
        et.centered_rank(torch.randn(8)[::2])
    # the op itself checks too (a wrong stride would read the wrong memory)
    with pytest.raises(ValueError, match="^x: must be contiguous"):
        torch.ops.eggroll.perturbed_matmul(x, W, None, 0, 0, 0, 0, 1, True, 1.0, 1)


def test_wrong_device_inputs_are_rejected():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="^W: is on meta but x is on cpu"):
        et.perturbed_matmul(x, torch.randn(4, 3, device="meta"), members=range(2))
    with pytest.raises(ValueError, match="^members: is on meta"):
        et.perturbed_matmul(x, torch.randn(4, 3), members=torch.arange(2, device="meta"))


def test_cuda_without_a_cuda_build_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "eggroll._cuda", None)    # import -> ImportError
    # ... also when a CUDA build already imported it: `from .. import _cuda` reads the attribute
    monkeypatch.delattr(eggroll, "_cuda", raising=False)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _ops._cuda()
    if torch.cuda.is_available():       # the whole path, with real CUDA tensors
        with pytest.raises(RuntimeError, match="built without CUDA"):
            et.perturbed_matmul(torch.randn(2, 3, device="cuda"),
                                torch.randn(4, 3, device="cuda"), members=range(2))


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and _has_cuda_build()),
                    reason="needs a GPU and eggroll built with CUDA")
def test_cuda_ops_use_the_current_stream_and_compile():
    """Work queued on a side stream: the op's result is ordered after the input's producer
    on that stream (no host sync needed), and torch.compile traces the CUDA path too."""
    s = torch.cuda.Stream()
    x = torch.randn(64, 8, 128, device="cuda")
    W = torch.randn(96, 128, device="cuda")
    members = torch.arange(64, device="cuda")
    expected = et.perturbed_matmul(x * 3, W, members=members, seed=SEED, sigma=0.1)
    with torch.cuda.stream(s):
        torch.cuda._sleep(10_000_000)              # keep the side stream busy
        x3 = x * 3                                 # produced on s
        # a range: no sync at all (a CUDA index tensor's sign check would sync)
        y = et.perturbed_matmul(x3, W, members=range(64), seed=SEED, sigma=0.1)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    f = torch.compile(lambda x, W, m: et.perturbed_matmul(x, W, members=m, seed=SEED,
                                                          sigma=0.1), fullgraph=True,
                      backend="aot_eager")
    torch.testing.assert_close(f(x * 3, W, members), expected, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and _has_cuda_build()),
                    reason="needs a GPU and eggroll built with CUDA")
def test_negative_cuda_members_are_rejected():
    """The CUDA kernels read any int64 as an index, so the adapter checks the signs."""
    x = torch.randn(2, 3, device="cuda")
    W = torch.randn(4, 3, device="cuda")
    with pytest.raises(ValueError, match="^members: indices must be >= 0, got -3"):
        et.perturbed_matmul(x, W, members=torch.tensor([0, -3], device="cuda"), sigma=0.1)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.randn(2, 3).int()), TypeError, "^x: expected a float32 tensor"),
    (dict(x=torch.randn(3)), ValueError, "^x: expected a 2-D or 3-D tensor"),
    (dict(W=torch.randn(4, 5)), ValueError, r"^W: expected shape \(m, 3\)"),
    (dict(members=range(3)), ValueError, "^members: has 3 entries"),
    (dict(members=[-1, 0]), ValueError, "^members: indices must be >= 0"),
    (dict(members=torch.tensor([0.0, 1.0])), TypeError, "^members: expected integer"),
    (dict(rank=0), ValueError, "^rank: must be in"),
    (dict(sigma=float("nan")), ValueError, "^sigma: must be finite"),
    (dict(seed=-1), ValueError, "^seed: must be in"),
    (dict(seed=1 << 64), ValueError, "^seed: must be in"),
    (dict(x=np.zeros((2, 3), np.float32)), TypeError, "^x: expected a torch.Tensor"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    args = dict(x=torch.randn(2, 3), W=torch.randn(4, 3), members=range(2), sigma=0.1)
    args.update(kwargs)
    x, W = args.pop("x"), args.pop("W")
    with pytest.raises(exc, match=match):
        et.perturbed_matmul(x, W, **args)


def test_float64_inputs_are_converted_like_numpy(rng):
    x = rng.standard_normal((4, 5))
    W = rng.standard_normal((3, 5))
    y = et.perturbed_matmul(torch.from_numpy(x), torch.from_numpy(W), members=range(4),
                            sigma=0.1)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(_np(y), eggroll.numpy.perturbed_matmul(x, W, members=range(4),
                                                                   sigma=0.1))


def test_es_gradient_and_shaping_errors():
    with pytest.raises(ValueError, match="^fitness: antithetic sampling needs an even"):
        et.es_gradient(torch.randn(3), (2, 2), sigma=0.1)
    with pytest.raises(ValueError, match="^fitness: contains NaN"):
        et.es_gradient(torch.tensor([1.0, float("nan")]), (2, 2), sigma=0.1)
    with pytest.raises(ValueError, match="^f: antithetic_sign needs an even"):
        et.antithetic_sign(torch.randn(3))
    with pytest.raises(TypeError, match="^f: expected a real"):
        et.centered_rank(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="^counter: values must fit in uint32"):
        et.philox4x32(torch.tensor([[-1, 0, 0, 0]]), torch.tensor([0, 0]))


# ------------------------------------------------------------------------------------------
# bench_peers --backend torch (smoke: wiring and records, no timing assertions)
# ------------------------------------------------------------------------------------------

def test_bench_peers_torch_smoke(capsys):
    import json

    from eggroll.bench import peers_torch
    threads = eggroll.get_num_threads()
    assert peers_torch.main(["--smoke", "--repeat", "5"]) == 0
    assert eggroll.get_num_threads() == threads
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    rec = [r for r in recs if r.get("kind") == "smoke"][0]
    for name in ("plain", "eggroll", "idiom"):
        assert rec[f"{name}_median_s"] > 0 and rec[f"{name}_n"] >= 5
    assert rec["idiom_over_eggroll"] == pytest.approx(rec["idiom_median_s"]
                                                      / rec["eggroll_median_s"])
    # the idiom on eggroll's factors: the same result up to float32 rounding of 24-term
    # sums of order-1 values (~1e-6)
    assert rec["check_max_abs_diff"] < 1e-4
