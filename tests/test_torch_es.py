"""eggroll.torch.ES: population mode equals per-member evaluation (and the NumPy trainer bit
for bit), .grad = -ES estimate, frozen parameters, torch.optim training, bit-exact resume."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import eggroll  # noqa: E402
import eggroll.torch as et  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from eggroll.es import param_id  # noqa: E402

SEED = 0x9E3779B97F4A7C15           # >= 2^63


def _mlp(n_in=5, hidden=7, n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


def _numpy_params(model):
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def test_population_forward_equals_the_numpy_trainer_bit_for_bit():
    """The same noise keys (param_id from the names), the same core ops: the torch population
    forward and eggroll.ES's pop.linear give identical bits, and so do the estimates."""
    model = _mlp()
    P = 8
    es = et.ES(model, sigma=0.1, population=P, rank=2, seed=SEED)
    np_es = eggroll.ES(_numpy_params(model), sigma=0.1, lr=0.0, population=P, rank=2,
                       seed=SEED)
    x = torch.randn(P, 4, 5)
    with es.ask():
        y = model(x)
    pop = np_es.ask()
    h = pop.linear("0.weight", x.numpy(), bias="0.bias")                 # [P, 4, 7]
    y_np = pop.linear("2.weight", torch.tanh(torch.from_numpy(h)).numpy(), bias="2.bias")
    assert y.shape == (P, 4, 3)
    np.testing.assert_array_equal(y.numpy(), y_np)
    fitness = -y.square().sum(dim=(1, 2))
    es.tell(fitness)
    # eggroll.ES steps with SGD lr=0: its estimate is what tell() computed; recompute it
    shaped = eggroll.centered_rank(fitness.numpy())
    for name, p in model.named_parameters():
        g = eggroll.es_gradient(shaped, p.shape, epoch=0, seed=SEED, param_id=param_id(name),
                                sigma=0.1, rank=2)
        np.testing.assert_array_equal(p.grad.numpy(), -g)


def test_each_member_sees_its_own_perturbation():
    """Member i's output equals the unperturbed module run with W + E_i (E_i from the
    reference factors) and b + s_i sigma z_k, one member at a time."""
    model = _mlp(seed=1)
    P, sigma, rank = 6, 0.2, 3
    es = et.ES(model, sigma=sigma, population=P, rank=rank, seed=SEED)
    es.epoch = 4                               # any epoch: the key carries it
    x = torch.randn(P, 2, 5)
    with es.ask():
        y = model(x)
    for i in range(P):
        member = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in member.named_parameters():
                key = dict(members=[i], epoch=4, seed=SEED, param_id=param_id(name),
                           sigma=sigma)
                if p.dim() == 2:
                    A, B = ref.lowrank_factors(tuple(p.shape), rank=rank, **key,
                                               dtype=np.float64)
                    p += torch.from_numpy((A[0] @ B[0].T).astype(np.float32))
                else:
                    p.copy_(torch.from_numpy(ref.perturb_vector(p.numpy(), **key)[0]))
            yi = member(x[i])
        # W + E_i rounded once to float32 vs the exact low-rank correction: a few ulps of |y|
        torch.testing.assert_close(y[i], yi, rtol=1e-5, atol=1e-5)


class _Norm(nn.Module):
    """Linear -> LayerNorm (parameters full rank, under vmap) -> Linear."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.inp(x))))


def test_other_modules_run_per_member_with_full_rank_noise():
    torch.manual_seed(3)
    model = _Norm()
    P = 4
    es = et.ES(model, sigma=0.3, population=P, seed=7)
    assert es.kinds == {"inp.weight": "lowrank", "inp.bias": "full", "norm.weight": "full",
                        "norm.bias": "full", "out.weight": "lowrank", "out.bias": "full"}
    x = torch.randn(P, 3, 4)
    with es.ask() as pop:
        y = model(x)
        h = model.inp(x)
        nw, nb = pop.vector("norm.weight"), pop.vector("norm.bias")
    for i in range(P):
        expected = nn.functional.layer_norm(h[i], (6,), nw[i], nb[i])
        np.testing.assert_array_equal(
            nw[i].numpy(), ref.perturb_vector(model.norm.weight.detach().numpy(), members=[i],
                                              epoch=0, seed=7, param_id=param_id("norm.weight"),
                                              sigma=0.3)[0])
        with es.ask():
            got = model.norm.forward(h)  # the population forward of the LayerNorm alone
        # vmap's batched layer_norm may round differently from the unbatched one: a few
        # float32 ulps of the (order-1) normalised values
        ulps = 4 * torch.finfo(torch.float32).eps * float(expected.abs().max())
        torch.testing.assert_close(got[i], expected, rtol=0, atol=ulps)
    assert y.shape == (P, 3, 2)
    assert "forward" not in model.norm.__dict__ and "forward" not in model.inp.__dict__
    es.tell(torch.arange(P, dtype=torch.float32))
    assert model.norm.weight.grad.shape == (6,)


def test_frozen_and_requires_grad_false_are_unperturbed_and_get_no_grad():
    model = _mlp(seed=2)
    model[2].bias.requires_grad_(False)
    es = et.ES(model, sigma=0.1, population=4, frozen=["0.weight"])
    assert es.frozen == ("0.weight", "2.bias")
    assert es.trainable == ["0.bias", "2.weight"]
    x = torch.randn(4, 5)
    with es.ask():
        h = model[0](x)
    base = et.perturbed_matmul(x, model[0].weight.detach(), members=None, epoch=0, seed=0,
                              sigma=0.1)
    bias = et.perturb_vector(model[0].bias.detach(), members=range(4), seed=0, epoch=0,
                             param_id=param_id("0.bias"), sigma=0.1)
    torch.testing.assert_close(h, base + bias, rtol=0, atol=0)
    es.tell(torch.randn(4))
    assert model[0].weight.grad is None and model[2].bias.grad is None
    assert model[0].bias.grad is not None and model[2].weight.grad is not None


class _Transposed(nn.Module):
    """Feeds nn.Linear a non-contiguous view: population mode makes it contiguous itself."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):                       # x [P, 3, b] -> [P, b, 2]
        return self.lin(x.transpose(1, 2))


def test_non_contiguous_activations_are_fine_in_population_mode():
    model = _Transposed()
    es = et.ES(model, sigma=0.1, population=4)
    x = torch.randn(4, 3, 5)
    with es.ask():
        y = model(x)
    expected = et.perturbed_matmul(x.transpose(1, 2).contiguous(), model.lin.weight.detach(),
                                   members=range(4), param_id=param_id("lin.weight"),
                                   sigma=0.1, epoch=0, seed=0)
    expected += et.perturb_vector(model.lin.bias.detach(), members=range(4), epoch=0, seed=0,
                                  param_id=param_id("lin.bias"), sigma=0.1)[:, None, :]
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_param_ids_come_from_names():
    model = _mlp()
    es = et.ES(model, sigma=0.1, population=2)
    assert es.param_ids == {n: param_id(n) for n, _ in model.named_parameters()}


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=g)
    Y = torch.tanh(X @ torch.randn(5, 3, generator=g))
    return X, Y


def _train(model, es, opt, sched, X, Y, steps):
    P = es.population
    losses = []
    for _ in range(steps):
        with es.ask():
            pred = model(X.expand(P, *X.shape))
        loss = (pred - Y).square().mean(dim=(1, 2))
        es.tell(-loss)
        opt.step()
        if sched is not None:
            sched.step()
        with torch.no_grad():
            losses.append(float((model(X) - Y).square().mean()))
    return losses


def test_trains_a_toy_problem_with_torch_optim():
    X, Y = _regression()
    model = _mlp()
    es = et.ES(model, sigma=0.05, population=64, rank=1, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    with torch.no_grad():
        start = float((model(X) - Y).square().mean())
    losses = _train(model, es, opt, sched, X, Y, 120)
    assert es.epoch == 120
    assert losses[-1] < 0.25 * start, (start, losses[::20])


def test_resume_from_checkpoint_is_bit_exact():
    X, Y = _regression(1)

    def fresh():
        model = _mlp(seed=5)
        es = et.ES(model, sigma=lambda t: 0.1 / (1 + t), population=8, rank=2, seed=SEED,
                   shaping="zscore", group_size=4)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        return model, es, opt

    model, es, opt = fresh()
    _train(model, es, opt, None, X, Y, 3)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(),
                          "es": es.state_dict()})
    _train(model, es, opt, None, X, Y, 4)

    model2, es2, opt2 = fresh()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    es2.load_state_dict(ckpt["es"])
    assert es2.epoch == 3
    _train(model2, es2, opt2, None, X, Y, 4)
    for (n, a), (_, b) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(a, b), n
    assert es.state_dict() == es2.state_dict()


def test_full_rank_option_matches_perturbed_matmul_full():
    model = _mlp(seed=4)
    es = et.ES(model, sigma=0.1, population=4, full_rank=True)
    assert set(es.kinds.values()) == {"full"}
    x = torch.randn(4, 5)
    with es.ask():
        h = model[0](x)
    base = et.perturbed_matmul_full(x, model[0].weight.detach(), members=range(4), seed=0, epoch=0,
                                    param_id=param_id("0.weight"), sigma=0.1)
    bias = et.perturb_vector(model[0].bias.detach(), members=range(4), seed=0, epoch=0,
                             param_id=param_id("0.bias"), sigma=0.1)
    torch.testing.assert_close(h, base + bias, rtol=0, atol=0)
    f = torch.randn(4)
    es.tell(f)
    g = eggroll.es_gradient(eggroll.centered_rank(f.numpy()), (7 * 5,), seed=0, epoch=0,
                            param_id=param_id("0.weight"), sigma=0.1)
    np.testing.assert_array_equal(model[0].weight.grad.numpy(), -g.reshape(7, 5))


def test_errors_name_the_argument():
    model = _mlp()
    with pytest.raises(TypeError, match="^module: expected a torch.nn.Module"):
        et.ES({"w": torch.zeros(2)}, sigma=0.1, population=2)
    with pytest.raises(ValueError, match="^population: antithetic sampling needs an even"):
        et.ES(model, sigma=0.1, population=3)
    with pytest.raises(ValueError, match="^frozen: no parameter named 'nope'"):
        et.ES(model, sigma=0.1, population=2, frozen=["nope"])
    with pytest.raises(ValueError, match="^module: has no parameters"):
        et.ES(nn.Tanh(), sigma=0.1, population=2)
    es = et.ES(model, sigma=0.1, population=4)
    with pytest.raises(ValueError, match=r"^x: module '0' expects \[population=4"):
        with es.ask():
            model(torch.randn(3, 5))
    assert "forward" not in model[0].__dict__          # restored after the error
    with pytest.raises(ValueError, match=r"^raw_fitness: expected shape \(4,\)"):
        es.tell(torch.zeros(5))
    with pytest.raises(ValueError, match="^raw_fitness: 1 non-finite"):
        es.tell(torch.tensor([0.0, 1.0, float("nan"), 2.0]))
    pop = es.ask()
    es.tell(torch.zeros(4))
    with pytest.raises(RuntimeError, match="call es.ask\\(\\) again"):
        with pop:
            pass
    other = et.ES(_Norm(), sigma=0.1, population=4)
    with pytest.raises(ValueError, match="^state: its parameters"):
        other.load_state_dict(es.state_dict())


def test_backward_is_not_needed_population_mode_runs_without_grad():
    model = _mlp()
    es = et.ES(model, sigma=0.1, population=2)
    with es.ask():
        y = model(torch.randn(2, 5))
    assert not y.requires_grad


class _Custom(nn.Module):
    """A block that applies its own 2-D parameter as a matmul weight."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(6, 5) / 3)
        self.b = nn.Parameter(torch.randn(6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.tanh(et.linear(x, self.W, self.b)))


def test_matmul_weights_are_low_rank_through_eggroll_torch_linear():
    torch.manual_seed(6)
    model = _Custom()
    P = 6
    es = et.ES(model, sigma=0.1, population=P, rank=2, seed=SEED, matmul_weights=["W"])
    assert es.kinds["W"] == "lowrank" and es.kinds["b"] == "full"
    x = torch.randn(P, 3, 5)
    with es.ask():
        y = model(x)
    np_es = eggroll.ES(_numpy_params(model), sigma=0.1, lr=0.0, population=P, rank=2,
                       seed=SEED)
    pop = np_es.ask()
    h = torch.tanh(torch.from_numpy(pop.linear("W", x.numpy(), bias="b"))).numpy()
    np.testing.assert_array_equal(y.numpy(), pop.linear("head.weight", h, bias="head.bias"))
    # outside population mode eggroll.torch.linear is F.linear
    torch.testing.assert_close(et.linear(x[0], model.W, model.b),
                               nn.functional.linear(x[0], model.W, model.b), rtol=0, atol=0)
    es.tell(torch.randn(P))
    assert model.W.grad.shape == (6, 5)
    with pytest.raises(ValueError, match="^matmul_weights: no parameter named 'V'"):
        et.ES(model, sigma=0.1, population=2, matmul_weights=["V"])
    with pytest.raises(ValueError, match="^matmul_weights: 'b' has shape"):
        et.ES(model, sigma=0.1, population=2, matmul_weights=["W", "b"])


def _has_cuda_build() -> bool:
    try:
        import eggroll._cuda  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and _has_cuda_build()),
                    reason="needs a GPU and eggroll built with CUDA")
def test_es_on_cuda_matches_cpu():
    """The same module on the GPU: the same noise (bit-identical factors), cuBLAS for the base
    GEMM, so outputs and estimates agree with the CPU run to float32 rounding."""
    model = _Norm()
    gpu = copy.deepcopy(model).cuda()
    es_cpu = et.ES(model, sigma=0.1, population=8, rank=2, seed=SEED)
    es_gpu = et.ES(gpu, sigma=0.1, population=8, rank=2, seed=SEED)
    x = torch.randn(8, 5, 4)
    with es_cpu.ask():
        y_cpu = model(x)
    with es_gpu.ask():
        y_gpu = gpu(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-5)
    fitness = -y_cpu.square().sum(dim=(1, 2))
    es_cpu.tell(fitness)
    es_gpu.tell(fitness.cuda())
    for (n, a), (_, b) in zip(model.named_parameters(), gpu.named_parameters()):
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-6, msg=n)
