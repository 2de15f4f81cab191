"""What only torch has (the ops themselves are checked on every backend by tests/conformance):
the eager fast path, torch's OpenMP threads and fork, out=, the custom ops under opcheck and
torch.compile(fullgraph=True), autograd (shared inputs included), devices and CUDA streams,
and torch-specific argument forms (uint32 / uint64 member tensors, empty members)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eggroll  # noqa: E402
import eggroll.torch as et  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from eggroll.torch import _ops  # noqa: E402

SEED = 0xF123456789ABCDEF            # >= 2^63: must survive the custom ops' int64 schema
PARAM_ID = 0xFFFFFFF1
EPOCH = 7
KEY = dict(epoch=EPOCH, seed=SEED, param_id=PARAM_ID, sigma=0.3)


def _has_cuda_build() -> bool:
    try:
        import eggroll._cuda  # noqa: F401
    except ImportError:
        return False
    return True


def _np(t):
    return t.detach().cpu().numpy()


def test_plain_eager_calls_skip_the_custom_op(monkeypatch):
    """Plain tensors without autograd go straight to the C++ entry; a tensor that needs a
    gradient goes through torch.ops.eggroll (and both give the same bits)."""
    calls = []
    op = _ops.CUSTOM_OPS["perturbed_matmul"]
    monkeypatch.setitem(_ops.CUSTOM_OPS, "perturbed_matmul",
                        lambda *a: calls.append(1) or op(*a))
    x, W = torch.randn(4, 6), torch.randn(3, 6)
    y = et.perturbed_matmul(x, W, members=range(4), **KEY)
    assert calls == []
    y2 = et.perturbed_matmul(x.requires_grad_(), W, members=range(4), **KEY)
    assert calls == [1] and torch.equal(y, y2.detach()) and y2.requires_grad


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
    y = et.perturbed_matmul(x, W, members=range(4), out=out, **KEY)
    assert y is out
    assert torch.equal(out, et.perturbed_matmul(x, W, members=range(4), **KEY))
    with pytest.raises(ValueError, match="^out: expected shape"):
        et.perturbed_matmul(x, W, members=range(4), out=torch.empty(4, 4), **KEY)
    # with autograd (the custom op) out is filled by a copy
    y = et.perturbed_matmul(x.requires_grad_(), W, members=range(4), out=torch.empty(4, 3), **KEY)
    assert torch.equal(y.detach(), out)


# ------------------------------------------------------------------------------------------
# the custom ops: opcheck and torch.compile(fullgraph=True) on every op
# ------------------------------------------------------------------------------------------

def _entry_samples():
    """Each op's entry arguments (the binding's positional form) on small tensors."""
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(4, 3, 5, generator=g), torch.randn(7, 5, generator=g)
    m = torch.tensor([3, 0, 7, 2])
    key = (SEED, PARAM_ID, EPOCH, 3, True, 0.3, 2, 4, 0)
    f = torch.randn(6, generator=g)
    xi, Wi = torch.randint(-8, 8, (4, 5), dtype=torch.int8), torch.randint(-8, 8, (7, 5), dtype=torch.int8)
    return {
        "perturbed_matmul": [(x, W, m, None, False, True, *key),
                             (x[:, 0].contiguous(), W, None, None, False, True, *key),
                             (x[0], W, range(6), None, True, True, *key),
                             (x, W, m, None, False, False, *key)],    # the correction alone
        "perturbed_matmul_full": [(x, W, m, None, False, True, *key)],
        "perturb_vector": [(torch.randn(5, generator=g), range(1, 5), None, *key)],
        "perturbed_embedding": [(torch.randint(0, 7, (4, 3), generator=g), W, m, None, False, *key),
                                (torch.randint(0, 7, (3,), generator=g).int(), W, range(5), None,
                                 True, *key)],
        "lowrank_factors": [(x, (7, 5), m, *key)],
        "es_gradient": [(f, (7, 5), torch.arange(6), None, False, None, False, *key),
                        (f, (9,), None, None, True, None, False, *key)],
        "centered_rank": [(f, None, 0), (f.double(), None, 0)],
        "zscore": [(f, None, 3)],
        "antithetic_sign": [(f, None, 0)],
        "perturbed_matmul_int8": [(xi, Wi, range(4), None, False, True, *key)],
        "int8_update": [(Wi, torch.tensor([1, -1, 0], dtype=torch.int8), None, 5, *key)],
        "normal": [(x, 9, 2, SEED, 1, 2, 3)],
        "philox4x32": [(torch.arange(12).reshape(3, 4).to(torch.uint32),
                        torch.tensor([1, 2]).to(torch.uint32), None)],
    }


@pytest.mark.parametrize("name", sorted(_ops.CUSTOM_OPS))
def test_opcheck(name):
    for args in _entry_samples()[name]:
        torch.library.opcheck(_ops.CUSTOM_OPS[name], _ops._encode(args))


def test_opcheck_with_gradients():
    x, W, m, *rest = _entry_samples()["perturbed_matmul"][0]
    tensors, codes, floats = _ops._encode((x.requires_grad_(), W.requires_grad_(), m, *rest))
    torch.library.opcheck(_ops.CUSTOM_OPS["perturbed_matmul"], (tensors, codes, floats))


def test_opcheck_with_gradients_of_the_embedding_table():
    ids, W, m, *rest = _entry_samples()["perturbed_embedding"][0]
    torch.library.opcheck(_ops.CUSTOM_OPS["perturbed_embedding"],
                          _ops._encode((ids, W.clone().requires_grad_(), m, *rest)))


def test_embedding_gradient_is_the_lookup_gradient():
    """dL/dW of perturbed_embedding is nn.Embedding's: the noise does not depend on W."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 3, generator=g, requires_grad=True)
    ids = torch.randint(0, 5, (4, 6), generator=g)
    weights = torch.randn(4, 6, 3, generator=g)
    (et.perturbed_embedding(ids, W, members=range(4), **KEY) * weights).sum().backward()
    W2 = W.detach().clone().requires_grad_(True)
    (torch.nn.functional.embedding(ids, W2) * weights).sum().backward()
    torch.testing.assert_close(W.grad, W2.grad)
    shared = W.detach().clone().requires_grad_(True)                 # ids without member axis
    (et.perturbed_embedding(ids[0], shared, members=range(4), shared=True, **KEY)
     * weights).sum().backward()
    W3 = W.detach().clone().requires_grad_(True)
    (torch.nn.functional.embedding(ids[0].expand(4, 6), W3) * weights).sum().backward()
    torch.testing.assert_close(shared.grad, W3.grad)


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
        y = et.perturbed_matmul(x, W, members=members, rank=2, **KEY)
        y = y + et.perturbed_matmul_full(x, W, members=members, **KEY)
        y = y + et.perturbed_matmul(x[0], W, members=range(6), shared=True, **KEY)
        y = y + et.perturb_vector(v, members=members, **KEY)[:, None, :]
        fit = y.sum(dim=(1, 2))
        shaped = et.centered_rank(fit) + et.zscore(fit, 2)
        sign = et.antithetic_sign(fit)
        gW = et.es_gradient(shaped, (7, 5), rank=2, **KEY)
        gv = et.es_gradient(shaped, (7,), **KEY)
        A, B = et.lowrank_factors((7, 5), members=members, rank=2, **KEY)
        xi = (x * 4).to(torch.int8)
        yi = et.perturbed_matmul_int8(xi, W.to(torch.int8), members=range(6), epoch=EPOCH,
                                      seed=SEED, sigma_shift=2)
        Wi = et.int8_update(W.to(torch.int8), sign, threshold=1, epoch=EPOCH, seed=SEED)
        return y, gW, gv, sign, A, B, yi, Wi, et.philox4x32(counter, pkey)

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
        return et.perturbed_matmul(x * 2, W, members=members, seed=SEED, epoch=0, sigma=0.1)

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
                                       epoch=0, sigma=0.5, rank=2).double()
        assert torch.autograd.gradcheck(f, (x, W), eps=1e-2, atol=1e-3, rtol=1e-3)
    v = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: et.perturb_vector(v.float(), members=range(3), epoch=0, seed=1,
                                    sigma=0.5).double(), (v,),
        eps=1e-2, atol=1e-3, rtol=1e-3)


def test_perturbed_matmul_grad_matches_the_formula(rng):
    """dL/dx_i = g_i (W + A_i B_i^T), from the reference factors in float64."""
    x = torch.from_numpy(rng.standard_normal((3, 2, 6)).astype(np.float32)).requires_grad_()
    W = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    key = dict(members=[4, 1, 2], rank=3, noise_reuse=3, **KEY)
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
        y = et.perturbed_matmul_full(x, W, members=range(2), epoch=0, seed=0, sigma=0.1)
    elif call == "es_gradient":
        y = et.es_gradient(x.sum(1), (4, 3), epoch=0, seed=0, sigma=0.1)
    else:
        y = et.centered_rank(x.sum(1))
    with pytest.raises(RuntimeError, match="not differentiable: evolution strategies"):
        y.sum().backward()


def test_shared_input_gradients_sum_over_the_members(rng):
    """A shared x (no member axis) receives the sum of every member's gradient: the same as
    the materialised input's gradient summed over its member axis; W's gradient equals too."""
    xs = torch.from_numpy(rng.standard_normal((2, 6)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    key = dict(members=range(5), rank=2, **KEY)
    a, Wa = xs.clone().requires_grad_(), W.clone().requires_grad_()
    (et.perturbed_matmul(a, Wa, shared=True, **key) ** 2).sum().backward()
    b, Wb = xs.expand(5, 2, 6).contiguous().requires_grad_(), W.clone().requires_grad_()
    (et.perturbed_matmul(b, Wb, **key) ** 2).sum().backward()
    torch.testing.assert_close(a.grad, b.grad.sum(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(Wa.grad, Wb.grad, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# devices and torch-specific argument forms (the classes of bad input: tests/conformance)
# ------------------------------------------------------------------------------------------

def test_wrong_device_inputs_are_rejected():
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="^W: "):
        et.perturbed_matmul(x, torch.randn(4, 3, device="meta"), members=range(2), **KEY)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint32, torch.uint64,
                                   torch.uint8, torch.int16])
def test_member_tensors_of_any_integer_dtype(dtype, rng):
    """uint32 / uint64 member tensors work like int64 ones (they raised NotImplementedError)."""
    x = torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float32))
    W = torch.from_numpy(rng.standard_normal((2, 5)).astype(np.float32))
    want = et.perturbed_matmul(x, W, members=[4, 0, 9], **KEY)
    got = et.perturbed_matmul(x, W, members=torch.tensor([4, 0, 9]).to(dtype), **KEY)
    assert torch.equal(got, want)


def test_empty_members_give_empty_results():
    """members=[] (or an empty tensor) with an empty population: an empty result, as on NumPy."""
    W = torch.randn(2, 5)
    for members in ([], torch.zeros(0, dtype=torch.int64), range(0)):
        y = et.perturbed_matmul(torch.zeros(0, 5), W, members=members, **KEY)
        assert y.shape == (0, 2)
        assert et.perturb_vector(torch.randn(3), members=members, **KEY).shape == (0, 3)


@pytest.mark.parametrize("kw,exc,name", [
    (dict(sigma_shift=1.5), TypeError, "sigma_shift"), (dict(sigma_shift=None), TypeError, "sigma_shift"),
    (dict(sigma_shift="2"), TypeError, "sigma_shift"), (dict(rank=True), TypeError, "rank"),
    (dict(antithetic=None), TypeError, "antithetic"), (dict(antithetic=0), TypeError, "antithetic"),
    (dict(antithetic=1), TypeError, "antithetic"), (dict(fixed_point=8), ValueError, "fixed_point"),
])
def test_int8_scalars_are_checked(kw, exc, name):
    """The int8 ops' scalars are checked like every op's (they went unchecked into the op
    schema: RuntimeError for floats/None/str, True read as 1, antithetic=None/0/1 accepted)."""
    x, W = torch.ones(2, 4, dtype=torch.int8), torch.ones(3, 4, dtype=torch.int8)
    args = dict(members=range(2), epoch=0, seed=1, sigma_shift=0)
    args.update(kw)
    with pytest.raises(exc, match=f"^{name}:"):
        et.perturbed_matmul_int8(x, W, **args)


def test_cuda_without_a_cuda_build_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "eggroll._cuda", None)    # import -> ImportError
    # ... also when a CUDA build already imported it: `from .. import _cuda` reads the attribute
    monkeypatch.delattr(eggroll, "_cuda", raising=False)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _ops._cuda()
    if torch.cuda.is_available():       # the whole path, with real CUDA tensors
        with pytest.raises(RuntimeError, match="built without CUDA"):
            et.perturbed_matmul(torch.randn(2, 3, device="cuda"),
                                torch.randn(4, 3, device="cuda"), members=range(2), **KEY)


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
    expected = et.perturbed_matmul(x * 3, W, members=members, seed=SEED, epoch=0, sigma=0.1)
    with torch.cuda.stream(s):
        torch.cuda._sleep(10_000_000)              # keep the side stream busy
        x3 = x * 3                                 # produced on s
        # a range: no sync at all (a CUDA index tensor's sign check would sync)
        y = et.perturbed_matmul(x3, W, members=range(64), seed=SEED, epoch=0, sigma=0.1)
    torch.cuda.synchronize()
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    f = torch.compile(lambda x, W, m: et.perturbed_matmul(x, W, members=m, seed=SEED, epoch=0,
                                                          sigma=0.1), fullgraph=True,
                      backend="aot_eager")
    torch.testing.assert_close(f(x * 3, W, members), expected, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and _has_cuda_build()),
                    reason="needs a GPU and eggroll built with CUDA")
def test_negative_cuda_members_are_rejected():
    """The CUDA kernels read any int64 as an index, so the entry checks a host copy."""
    x = torch.randn(2, 3, device="cuda")
    W = torch.randn(4, 3, device="cuda")
    with pytest.raises(ValueError, match="^members: indices must be >= 0, got -3"):
        et.perturbed_matmul(x, W, members=torch.tensor([0, -3], device="cuda"), **KEY)


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
