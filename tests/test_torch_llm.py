"""eggroll.torch.ES on Hugging Face causal LMs: population mode equals, member by member, an
explicit model holding W + A_i B_i^T (embedding, tied head, Conv1D, norms included), within
the tolerance derived from the same model run in float32 vs float64; generation per member
equals generating with that explicit model; no per-member matrix copies; fp32 masters of
bf16 models; target_modules; save_pretrained output loadable without eggroll."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch import nn  # noqa: E402

import eggroll.torch as et  # noqa: E402
from eggroll import reference as ref  # noqa: E402
from conftest import assert_close_derived  # noqa: E402

V, SEED = 23, 0x9E3779B97F4A7C15


def gpt2(tied=True, **kw):
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                  tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0, **kw)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def llama(tied=True, **kw):
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=24,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=16,
                                   tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2,
                                   pad_token_id=0, **kw)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():                      # norms away from 1: their noise must matter
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model


MODELS = {"gpt2": gpt2, "llama": llama}


def explicit_member(model, es, member, epoch=0, dtype=torch.float32):
    """A copy of model holding member's parameters: W + A_i B_i^T (factors of the reference,
    in float64) for low-rank ones (Conv1D's stored transpose gets E^T), v + s_i sigma z for
    vectors; tied parameters are one tensor, perturbed once."""
    m = copy.deepcopy(model).to(dtype).eval()
    sigma = es.sigma_at(epoch)
    with torch.no_grad():
        for name, p in m.named_parameters():          # tied: named once
            key = dict(members=[member], epoch=epoch, seed=es.seed,
                       param_id=es.param_ids[name], sigma=sigma, noise_reuse=es.noise_reuse)
            w = p.detach().double().numpy()
            if name in es.frozen:
                continue
            if es.kinds[name] == "lowrank":
                shape = w.shape[::-1] if es.transposed[name] else w.shape
                A, B = ref.lowrank_factors(shape, rank=es.rank, dtype=np.float64, **key)
                E = A[0] @ B[0].T
                w = w + (E.T if es.transposed[name] else E)
            else:
                z = ref.perturb_vector(np.zeros(w.size, np.float32), dtype=np.float64,
                                       **key)[0]
                w = w + z.reshape(w.shape)
            p.copy_(torch.from_numpy(w).to(dtype))
    return m


def _ids(b, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (b, T), generator=g)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("tied", [True, False])
def test_population_forward_equals_explicit_members(arch, tied):
    model = MODELS[arch](tied=tied)
    P, b, T = 4, 3, 6
    es = et.ES(model, sigma=0.05, population=P, rank=2, seed=SEED)
    assert len(es.trainable) == len(list(model.parameters()))
    ids = _ids(b, T)
    mask = torch.ones(b, T, dtype=torch.long)
    mask[1, :2] = 0                               # left padding: a [b, T] mask is tiled
    with es.ask() as pop:
        logits = pop.unfold(model(pop.fold(ids), attention_mask=mask).logits)  # [P, b, T, V]
    for i in range(P):
        with torch.no_grad():
            want64 = explicit_member(model, es, i, dtype=torch.float64)(
                ids, attention_mask=mask).logits
            want32 = explicit_member(model, es, i)(ids, attention_mask=mask).logits
        assert_close_derived(logits[i].numpy(), want64.numpy(), want32.numpy(),
                             what=f"{arch} member {i}")


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_a_member_block_gives_the_rows_of_the_whole_population(arch):
    model = MODELS[arch]()
    es = et.ES(model, sigma=0.05, population=6, seed=SEED)
    ids = _ids(2, 5)
    with es.ask() as pop:
        whole = pop.unfold(model(pop.fold(ids)).logits)
    with es.ask(members=range(3, 5)) as pop:
        part = pop.unfold(model(pop.fold(ids)).logits)
    torch.testing.assert_close(part, whole[3:5], rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_greedy_generation_per_member_equals_the_explicit_model(arch):
    model = MODELS[arch]()
    P, b, T, new = 4, 3, 5, 6
    es = et.ES(model, sigma=0.5, population=P, seed=3)      # large sigma: members differ
    ids = _ids(b, T, seed=1)
    mask = torch.ones(b, T, dtype=torch.long)
    mask[0, :2] = 0
    ids[0, :2] = 0
    with es.ask() as pop:
        ids_f, mask_f = pop.fold(ids, mask)
        out = pop.unfold(model.generate(ids_f, attention_mask=mask_f, max_new_tokens=new,
                                        do_sample=False))
    seen = set()
    for i in range(P):
        with torch.no_grad():
            want = explicit_member(model, es, i).generate(ids, attention_mask=mask,
                                                          max_new_tokens=new, do_sample=False)
        for j in range(b):
            # the explicit model stops when all its rows ended; the population pads on
            got = out[i, j, :want.shape[1]]
            assert torch.equal(got, want[j]), (i, j, got, want[j])
            assert (out[i, j, want.shape[1]:] == 0).all() or want.shape[1] == out.shape[2]
            seen.add(tuple(got[T:].tolist()))
    assert len(seen) > b, "every member generated the same text: the test proves nothing"


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_sampled_generation_scores_are_each_members_own(arch):
    """Sampling draws from each row's own distribution: the scores generate reports for a
    member's rows are the explicit model's logits on the sampled text (teacher forced)."""
    model = MODELS[arch]()
    P, b, T, new = 4, 2, 4, 5
    es = et.ES(model, sigma=0.3, population=P, seed=9)
    ids = _ids(b, T, seed=2)
    torch.manual_seed(0)
    with es.ask() as pop:
        res = model.generate(pop.fold(ids), attention_mask=pop.fold(torch.ones_like(ids)),
                             max_new_tokens=new, do_sample=True, top_k=0, output_logits=True,
                             return_dict_in_generate=True, eos_token_id=None)
    seq = pop.unfold(res.sequences)                                      # [P, b, T + new]
    scores = pop.unfold(torch.stack(res.logits, dim=1))                  # [P, b, new, V]
    for i in range(P):
        with torch.no_grad():
            logits = explicit_member(model, es, i)(seq[i]).logits[:, T - 1:-1]
        torch.testing.assert_close(scores[i], logits, rtol=1e-4, atol=1e-4)


def test_no_per_member_copy_of_any_matrix():
    """No tensor a population forward allocates is as large as a per-member copy of even the
    smallest matrix (P x its size): activations and factors are O(P * tokens * width)."""
    model = gpt2()
    P = 64
    es = et.ES(model, sigma=0.05, population=P)
    smallest = min(p.numel() for p in model.parameters() if p.dim() == 2)     # wpe: 16 x 16
    seen: list[int] = []

    class Watch(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    seen.append(t.numel())
            return out

    ids = _ids(1, 2)      # 2 tokens: the largest activation is P * 2 * 64 (the MLP's)
    with es.ask() as pop, Watch():
        model(pop.fold(ids))
    assert seen and max(seen) < P * smallest, (max(seen), P * smallest)
    # the old route, vmap with per-member copies, is opt-in only
    with pytest.raises(ValueError, match=r"vmap_modules=\['0'\]"):
        et.ES(nn.Sequential(nn.Conv1d(2, 3, 1)), sigma=0.1, population=2)
    conv = nn.Sequential(nn.Conv1d(2, 3, 1))
    assert et.ES(conv, sigma=0.1, population=2, vmap_modules=["0"]).module_kinds == {"0": "vmap"}


def test_bf16_model_trains_an_fp32_master_that_bf16_rounding_alone_would_lose():
    """Each step moves the weights by ~3e-4, under half a bf16 ulp of weights near 1: stepped
    in bf16 the model would not change at all; through the fp32 master it accumulates (the
    same noise every epoch, noise_reuse=0, so the steps add up) and the model weights follow,
    rounded once from the master."""
    model = llama().to(torch.bfloat16)
    es = et.ES(model, sigma=0.01, population=4, seed=1, noise_reuse=0)
    masters = es.parameters()
    assert all(m.dtype == torch.float32 for m in masters)
    name = "model.norm.weight"
    w0 = es.master(name).detach().clone()
    lr, steps = 1e-3, 40
    opt = torch.optim.SGD(es.parameters(), lr=lr)
    ids = _ids(2, 3)
    for step in range(steps):
        with es.ask() as pop:
            out = model(pop.fold(ids)).logits
            assert out.dtype == torch.bfloat16
        es.tell(torch.tensor([1.0, -1.0, 0.5, -0.5]))
        g = -es.master(name).grad.clone()
        before = es.master(name).detach().clone()
        opt.step()
        torch.testing.assert_close(es.master(name).detach(), before + lr * g, rtol=0,
                                   atol=1e-7)
        # the model's bf16 weight is the master rounded once
        assert torch.equal(model.model.norm.weight.detach(),
                           es.master(name).detach().to(torch.bfloat16))
    moved = (es.master(name).detach() - w0).abs()
    half_ulp = torch.finfo(torch.bfloat16).eps / 2 * w0.abs()
    assert (moved / steps < half_ulp).float().mean() > 0.9     # each step: below half an ulp
    assert (model.model.norm.weight.detach().float() != w0.to(torch.bfloat16).float()).any()
    assert es.last_weights_changed is not None and es.last_weights_changed >= 0
    # a bf16 parameter stepped directly loses the update entirely
    p = w0.to(torch.bfloat16)
    for _ in range(steps):
        p = p + (lr * g).to(torch.bfloat16)
    assert (p.float() - w0.to(torch.bfloat16).float()).abs().max() < moved.max()


def test_target_modules_freeze_everything_else():
    model = llama()
    es = et.ES(model, sigma=0.05, population=2, target_modules=["q_proj", "v_proj"])
    assert es.trainable and all(".q_proj." in n or ".v_proj." in n for n in es.trainable)
    assert es.module_kinds["model.embed_tokens"] == "frozen"
    es2 = et.ES(model, sigma=0.05, population=2, target_modules=r".*\.mlp\..*")
    assert all(".mlp." in n for n in es2.trainable)
    with pytest.raises(ValueError, match="^target_modules: 'nope' matches no module"):
        et.ES(model, sigma=0.05, population=2, target_modules=["nope"])
    # frozen modules run as written: the population still differs where it is trained
    with es.ask() as pop:
        y = pop.unfold(model(pop.fold(_ids(1, 4))).logits)
    assert not torch.equal(y[0], y[1])
    es.tell(torch.tensor([1.0, 0.0]))
    assert model.model.embed_tokens.weight.grad is None


def test_dropout_is_off_in_population_mode_and_training_mode_comes_back():
    model = gpt2(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5).train()
    es = et.ES(model, sigma=0.05, population=2)
    ids = _ids(2, 4)
    with es.ask() as pop:
        a = model(pop.fold(ids)).logits
        b = model(pop.fold(ids)).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.training and model.transformer.h[0].attn.training


def test_save_pretrained_is_a_plain_model_loadable_without_eggroll(tmp_path):
    model = gpt2()
    es = et.ES(model, sigma=0.05, population=4)
    opt = torch.optim.Adam(es.parameters(), lr=0.01)
    with es.ask() as pop:
        model(pop.fold(_ids(1, 4)))
    es.tell(torch.arange(4.0))
    opt.step()
    model.save_pretrained(tmp_path)
    ids = _ids(1, 5)
    model.eval()                                   # from_pretrained returns eval mode
    with torch.no_grad():
        want = model(ids).logits
    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "want.npy", want.numpy())
    code = textwrap.dedent(f"""
        import sys, numpy as np, torch, transformers
        m = transformers.GPT2LMHeadModel.from_pretrained({str(tmp_path)!r})
        ids = torch.from_numpy(np.load({str(tmp_path / 'ids.npy')!r}))
        with torch.no_grad():
            got = m(ids).logits.numpy()
        assert "eggroll" not in sys.modules
        np.testing.assert_allclose(got, np.load({str(tmp_path / 'want.npy')!r}), rtol=1e-5, atol=1e-6)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path,
                   timeout=300)


def test_errors_name_the_argument_and_module():
    model = gpt2()
    with pytest.raises(TypeError, match="^module: parameter .* is float64"):
        et.ES(copy.deepcopy(model).double(), sigma=0.1, population=2)
    es = et.ES(model, sigma=0.1, population=4)
    with es.ask() as pop:
        pop.fold(_ids(3, 4))
        with pytest.raises(ValueError, match=r"expects \[4 \* 3, \.\.\.\] \(folded\)"):
            model(_ids(5, 4))
    with pytest.raises(ValueError, match=r"^x: module '0' expects \[population=4"):
        seq = nn.Sequential(nn.Linear(3, 2))
        with et.ES(seq, sigma=0.1, population=4).ask():
            seq(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="^x: module '0' got a float64 input"):
        seq = nn.Sequential(nn.Linear(3, 2))
        with et.ES(seq, sigma=0.1, population=4).ask():
            seq(torch.zeros(4, 3, dtype=torch.float64))
    other = gpt2(n_embd_override=None) if False else transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=V + 1, n_positions=16, n_embd=16, n_layer=2,
                                n_head=2))
    with pytest.raises(ValueError, match="^state: parameter 'transformer.wte.weight' has shape"):
        et.ES(other, sigma=0.1, population=4).load_state_dict(es.state_dict())


# ------------------------------------------------------------------------------------------
# reward plumbing: eggroll.torch.llm
# ------------------------------------------------------------------------------------------

def test_group_fitness_is_a_per_prompt_baseline():
    from eggroll.torch.llm import group_fitness
    r = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], dtype=float)   # [P=4, b=3]
    centred = r - r.mean(axis=0)            # prompt 0: every member right -> no signal
    np.testing.assert_allclose(group_fitness(r, normalize=False), centred.mean(axis=1))
    expected = (centred / (r.std(axis=0) + 1e-6)).mean(axis=1)
    np.testing.assert_allclose(group_fitness(torch.tensor(r)), expected)
    assert group_fitness(r)[2] > group_fitness(r)[0] > group_fitness(r)[1]
    np.testing.assert_array_equal(group_fitness(np.ones((4, 2))), np.zeros(4))
    with pytest.raises(ValueError, match=r"^rewards: expected \[members, prompts\]"):
        group_fitness(np.ones(4))
    with pytest.raises(ValueError, match="^rewards: contains NaN"):
        group_fitness(np.array([[np.nan], [1.0]]))


def test_monitor_records_the_diagnostics_and_calls_back(tmp_path):
    from eggroll.torch.llm import Monitor, jsonl_logger, print_every
    model = gpt2()
    es = et.ES(model, sigma=0.05, population=4, track_changes=True)
    opt = torch.optim.SGD(es.parameters(), lr=0.1)
    lines: list[str] = []
    log = tmp_path / "log.jsonl"
    seen: list[dict] = []

    def both(rec):
        print_every(2, lines.append)(rec)
        jsonl_logger(log)(rec)
        seen.append(rec)

    mon = Monitor(es, total=2, callback=both, bar=False)
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    for _ in range(2):
        with es.ask() as pop, mon.timed() as t:
            out = model(pop.fold(_ids(2, 3))).logits
            t.tokens = out.shape[0] * out.shape[1]
        stats = es.tell(rewards.mean(1))
        opt.step()
        rec = mon.update(stats, rewards, note="x")
    assert rec["pair_disagreement"] == 0.25          # pair (0, 1): prompt 1 differs; (2, 3): none
    assert rec["reward_mean"] == 0.375 and rec["reward_max"] == 1.0
    assert rec["tokens_per_s"] > 0 and rec["note"] == "x"
    assert 0 < rec["weights_changed"] <= 1
    assert len(mon.history) == 2 and len(seen) == 2 and len(lines) == 1
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.parametrize("rows,n,m", [(5, 7, 3), (300, 64, 96), (70, 300, 1100)])
def test_a_weight_stored_transposed_is_read_without_a_copy_bit_for_bit(rows, n, m):
    """Conv1D keeps W^T [n, m]; the ops take its transposed view (strides (1, m)) and the core
    packs it into the same GEMM panels: the same bits as the contiguous copy, on both the
    tall-product and the general GEMM path."""
    g = torch.Generator().manual_seed(rows)
    Wt = torch.randn(n, m, generator=g)
    x = torch.randn(4, rows, n, generator=g)
    key = dict(epoch=1, seed=SEED, param_id=5, sigma=0.1)
    for members in (None, range(4)):
        a = et.perturbed_matmul(x, Wt.t(), members=members, **key)
        b = et.perturbed_matmul(x, Wt.t().contiguous(), members=members, **key)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="^W: must be C-contiguous"):
        et.perturbed_matmul(x, torch.randn(2 * m, n)[::2], members=None, **key)
