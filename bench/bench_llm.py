"""Benchmark of eggroll.torch.ES on Hugging Face causal LMs: the population forward against
plain batched inference of the same model, the per-member-weights idiom, and the
`eggroll-es` package.

Run:  PYTHONPATH=python python bench/bench_llm.py --eggroll-es-venv ~/.cache/venv-eggroll-es
      [--quick] [--repeat R] [--jsonl out.jsonl]       (JSON lines on stdout, tables on stderr)
      [--device cuda] [--dtype bfloat16]

--device cuda runs every candidate on the GPU (the model, the ids and the population there;
each timed call ends with torch.cuda.synchronize) at a larger default shape (hidden 1024,
P 64 x T 128, vocab 8192; --quick keeps the CPU's), and reports peak memory as
torch.cuda.max_memory_allocated over the call instead of the resident set. --dtype sets the
model's parameter dtype (default float32; bfloat16 is what GPU inference uses).

1. Population forward (hidden 512, Llama style: nn.Linear, RMSNorm, rotary; and GPT-2 style:
   Conv1D, LayerNorm, tied head): P members x T tokens, one sequence per member ([P, T] ids;
   b = 1). Candidates, timed interleaved in one process (median of >= 5):
     plain     model(ids): the same batch through the unperturbed model (what inference of
               P sequences costs anyway)
     eggroll   with es.ask(): model(ids): every member its own low-rank perturbation of every
               matrix (embeddings and head included) and its own norm/bias vectors
     idiom     what a user writes without eggroll: per-member weights W + sigma A B^T
               materialised and the model run per member with torch.func.functional_call
               (vmap over HF models trips on their data-dependent mask code, so a loop)
   tokens/s = P * T / median; targets: eggroll >= 0.85 x plain tokens/s. Peak memory of one
   call, each candidate in a fresh process (VmHWM after a warm-up and a reset of the
   counter, minus the resident set before): target eggroll <= 1.2 x plain.
2. Seconds per ES generation on a small model (the example's: GPT-2 style, width 64, two
   blocks), P members x b prompts, greedy generation of 5 tokens, exact-match reward: eggroll
   (one batched generate in population mode + tell + Adam) against `eggroll-es` 0.2.0 from
   PyPI (it holds a dense perturbation per member and parameter and evaluates the members one
   after the other). eggroll-es ships a module named `eggroll`, so it runs as a subprocess
   of its own interpreter: --eggroll-es-venv DIR makes that venv when DIR is missing (`pip
   install --no-deps eggroll-es==0.2.0`, plus a .pth naming this environment's site-packages
   for torch and transformers), or pass a ready one's python with --eggroll-es-python (or
   EGGROLL_ES_PYTHON); the child runs without PYTHONPATH so that this tree's eggroll stays
   invisible to it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable

import torch

from eggroll.bench import harness

HIDDEN = 512
SIGMA = 0.01

# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

MODEL_CODE = textwrap.dedent('''
    def build(arch, hidden, layers, vocab, positions, seed=0):
        import torch, transformers
        transformers.logging.set_verbosity_error()
        torch.manual_seed(seed)
        if arch == "gpt2":
            cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=hidden,
                                          n_layer=layers, n_head=max(1, hidden // 64),
                                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
            return transformers.GPT2LMHeadModel(cfg).eval()
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden,
                                       intermediate_size=2 * hidden, num_hidden_layers=layers,
                                       num_attention_heads=max(1, hidden // 64),
                                       num_key_value_heads=max(1, hidden // 64),
                                       max_position_embeddings=positions, bos_token_id=0,
                                       eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
        return transformers.LlamaForCausalLM(cfg).eval()
''')
exec(MODEL_CODE)        # defines build() here; the memory children run the same text


def idiom_forward(model: Any, ids: torch.Tensor, sigma: float, rank: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """The per-member idiom: for every member, each 2-D weight W + sigma/sqrt(r) A B^T and each
    vector v + sigma z materialised (torch.randn, antithetic pairs), then the member's row
    through torch.func.functional_call. Returns the stacked logits [P, T, V]."""
    dev = ids.device
    g = torch.Generator(device=dev).manual_seed(seed)
    params = dict(model.named_parameters())
    outs = []
    with torch.no_grad():
        for i in range(ids.shape[0]):
            if i % 2 == 0:
                noise = {}
                for n, p in params.items():
                    if p.dim() == 2:
                        A = torch.randn(p.shape[0], rank, generator=g, device=dev)
                        B = torch.randn(p.shape[1], rank, generator=g, device=dev)
                        noise[n] = ((sigma / rank ** 0.5) * (A @ B.T)).to(p.dtype)
                    else:
                        noise[n] = (sigma * torch.randn(p.shape, generator=g,
                                                        device=dev)).to(p.dtype)
            s = 1.0 if i % 2 == 0 else -1.0
            member = {n: p + s * noise[n] for n, p in params.items()}
            outs.append(torch.func.functional_call(model, member, (ids[i:i + 1],)).logits)
    return torch.cat(outs)


def population_candidates(arch: str, P: int, T: int, layers: int, vocab: int,
                          hidden: int = HIDDEN, device: str = "cpu",
                          dtype: str = "float32") -> dict[str, Callable[[], Any]]:
    import eggroll.torch as et
    model = build(arch, hidden, layers, vocab, T).to(device=device, dtype=getattr(torch, dtype))
    es = et.ES(model, sigma=SIGMA, population=P, seed=1)
    ids = torch.randint(1, vocab, (P, T), generator=torch.Generator().manual_seed(2)).to(device)

    def plain() -> Any:
        with torch.no_grad():
            return model(ids).logits

    def eggroll() -> Any:
        with es.ask():
            return model(ids).logits

    def idiom() -> Any:
        return idiom_forward(model, ids, SIGMA)

    return {"plain": plain, "eggroll": eggroll, "idiom": idiom}


# --------------------------------------------------------------------------------------------
# peak memory: one call per fresh process
# --------------------------------------------------------------------------------------------

MEMORY_CHILD = MODEL_CODE + textwrap.dedent('''
    import json, sys, torch
    cfg = json.loads(sys.argv[1])
    dev = cfg.get("device", "cpu")

    if dev == "cpu":
        from eggroll.bench.memory import proc_status_bytes as vm, reset_peak_rss as reset
    else:   # the device allocator's counters: bytes allocated, and the peak since the reset
        def vm(what):
            return (torch.cuda.max_memory_allocated() if what == "VmHWM"
                    else torch.cuda.memory_allocated())
        def reset():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return True

    model = build(cfg["arch"], cfg["hidden"], cfg["layers"], cfg["vocab"], cfg["T"])
    model = model.to(device=dev, dtype=getattr(torch, cfg.get("dtype", "float32")))
    ids = torch.randint(1, cfg["vocab"], (cfg["P"], cfg["T"])).to(dev)
    if cfg["method"] == "eggroll":
        import eggroll.torch as et
        es = et.ES(model, sigma=0.01, population=cfg["P"], seed=1)
        def call():
            with es.ask():
                return model(ids).logits
    else:
        def call():
            with torch.no_grad():
                return model(ids).logits
    out = call()                    # warm-up: allocator pools, thread teams
    del out
    peaks = []
    for _ in range(3):              # the median of three calls
        ok = reset()
        base = vm("VmRSS")
        out = call()
        if dev != "cpu":
            torch.cuda.synchronize()
        peaks.append(vm("VmHWM") - base)
        del out
    print("RESULT " + json.dumps({"peak_bytes": sorted(peaks)[1], "peaks": peaks,
                                  "hwm_reset": ok}))
''')


def peak_memory(method: str, arch: str, P: int, T: int, layers: int, vocab: int,
                hidden: int = HIDDEN, device: str = "cpu", dtype: str = "float32") -> dict:
    from eggroll.bench.memory import _child_env
    cfg = dict(method=method, arch=arch, P=P, T=T, layers=layers, vocab=vocab, hidden=hidden,
               device=device, dtype=dtype)
    # glibc returns large blocks to the system at once (mmap above 128 KiB, no arena
    # caching): the resident set then follows what is live, not the allocator's history.
    env = {**_child_env(), "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(cfg)],
                          env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}


# --------------------------------------------------------------------------------------------
# seconds per generation: eggroll vs eggroll-es
# --------------------------------------------------------------------------------------------

GEN_TASK = MODEL_CODE + textwrap.dedent('''
    import json, sys, time, torch
    cfg = json.loads(sys.argv[1])
    torch.manual_seed(0)
    P, b, new, G = cfg["P"], cfg["b"], cfg["new"], cfg["generations"]
    dev = cfg.get("device", "cpu")
    prompts = torch.randint(1, 14, (b, 8), generator=torch.Generator().manual_seed(3)).to(dev)
    target = torch.randint(1, 14, (b, new), generator=torch.Generator().manual_seed(4)).to(dev)
    model = build("gpt2", 64, 2, 14, 16).to(dev)
    kw = dict(max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None)
''')

OURS = GEN_TASK + textwrap.dedent('''
    import eggroll.torch as et
    from eggroll.torch.llm import group_fitness
    es = et.ES(model, sigma=0.01, population=P, seed=1)
    opt = torch.optim.Adam(es.parameters(), lr=1e-3)
    times = []
    for g in range(G + 1):
        t0 = time.perf_counter()
        with es.ask() as pop:
            ids, mask = pop.fold(prompts, torch.ones_like(prompts))
            out = pop.unfold(model.generate(ids, attention_mask=mask, **kw)[:, 8:])
        rewards = (out == target).all(-1).float()                    # [P, b]
        es.tell(group_fitness(rewards))
        opt.step()
        if dev != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({"seconds": times[1:]}))         # the first one warms up
''')

THEIRS = GEN_TASK + textwrap.dedent('''
    import eggroll                                    # eggroll-es 0.2.0 (its own venv)
    from eggroll import EggrollConfig, EggrollTrainer
    assert getattr(eggroll, "__version__", "") == "0.2.0", eggroll.__file__

    def reward(model, batch):                         # the same exact-match reward
        out = model.generate(batch, attention_mask=torch.ones_like(batch), **kw)[:, 8:]
        return float((out == target).all(-1).float().mean())

    config = EggrollConfig(population_size=P // 2, rank=1, sigma=0.01, lr=1e-3,
                           generations=G + 1, antithetic=True, device=dev, seed=1)
    trainer = EggrollTrainer(model, config, reward)
    result = trainer.evolve([prompts])
    print("RESULT " + json.dumps({"seconds": [h["time_sec"] for h in result["history"]][1:]}))
''')


def generation_seconds(code: str, python: str, env: dict, cfg: dict) -> dict:
    proc = subprocess.run([python, "-c", code, json.dumps(cfg)], env=env, capture_output=True,
                          text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])}


def eggroll_es_venv(path: str) -> str:
    """The python of a venv at path holding eggroll-es 0.2.0 (made when missing: pip install
    --no-deps, and a .pth naming this interpreter's site-packages for torch and transformers;
    its own site-packages comes first, so its `eggroll` is eggroll-es)."""
    import site
    import sysconfig
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        harness.log(f"making {path} with eggroll-es 0.2.0")
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "eggroll-es==0.2.0"],
                       check=True)
        own = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
        deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                *site.getsitepackages()}
        with open(os.path.join(own, "_eggroll_bench_deps.pth"), "w") as f:
            f.write("\n".join(sorted(d for d in deps if os.path.isdir(d))) + "\n")
    return py


def main() -> int:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--eggroll-es-python", default=os.environ.get("EGGROLL_ES_PYTHON"),
                   help="python of a venv with eggroll-es 0.2.0 (see the module docstring)")
    p.add_argument("--eggroll-es-venv", default=None, metavar="DIR",
                   help="make (if missing) a venv at DIR with eggroll-es 0.2.0 that sees this "
                        "interpreter's torch and transformers, and use it")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the models, ids and population live (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="the models' parameter dtype (default float32)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False in this environment")
    if args.eggroll_es_venv:
        args.eggroll_es_python = eggroll_es_venv(args.eggroll_es_venv)
    quick = args.quick
    P, T, layers, vocab = (16, 32, 2, 1024) if quick else (32, 64, 4, 2048)
    hidden = HIDDEN
    if args.device == "cuda" and not quick:     # a GPU needs more work per call to be busy
        P, T, layers, vocab, hidden = 64, 128, 4, 8192, 1024
    dev = dict(device=args.device, dtype=args.dtype)
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    with harness.Session(args) as s:
        rows = []
        for arch in ("llama", "gpt2"):
            fns = population_candidates(arch, P, T, layers, vocab, hidden, **dev)
            res = harness.measure_interleaved(fns, warmup=1, repeat=args.repeat,
                                              max_rounds=args.repeat, sync=sync)
            mem = {m: peak_memory(m, arch, P, T, layers, vocab, hidden, **dev)
                   for m in ("plain", "eggroll")}
            tok = P * T
            rec = {"bench": "llm_forward", "arch": arch, "hidden": hidden, "layers": layers,
                   **dev,
                   "vocab": vocab, "P": P, "T": T,
                   **{f"{k}_tokens_per_s": tok / v["median_s"] for k, v in res.items()},
                   **{k: v for name, m in res.items()
                      for k, v in harness.timing_fields(name, m).items()},
                   "eggroll_over_plain_throughput":
                       res["plain"]["median_s"] / res["eggroll"]["median_s"],
                   "idiom_over_eggroll_time": res["idiom"]["median_s"] / res["eggroll"]["median_s"],
                   "plain_peak_bytes": mem["plain"].get("peak_bytes"),
                   "eggroll_peak_bytes": mem["eggroll"].get("peak_bytes")}
            if rec["plain_peak_bytes"] and rec["eggroll_peak_bytes"]:
                rec["eggroll_over_plain_memory"] = (rec["eggroll_peak_bytes"]
                                                    / rec["plain_peak_bytes"])
            rows.append(s.emit(rec))
        harness.table(rows, ["arch", "P", "T", ("plain_tokens_per_s", "plain tok/s"),
                             ("eggroll_tokens_per_s", "eggroll tok/s"),
                             ("idiom_tokens_per_s", "idiom tok/s"),
                             ("eggroll_over_plain_throughput", "eggroll/plain tok/s"),
                             ("idiom_over_eggroll_time", "idiom/eggroll time"),
                             ("eggroll_over_plain_memory", "eggroll/plain memory")])

        cfg = {"P": 16 if quick else 32, "b": 8, "new": 5, "generations": 3 if quick else 5,
               "device": args.device}
        from eggroll.bench.memory import _child_env
        ours = generation_seconds(OURS, sys.executable, _child_env(), cfg)
        rec = {"bench": "llm_generation", **cfg, "eggroll_s": ours.get("seconds"),
               "eggroll_error": ours.get("error")}
        if args.eggroll_es_python:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            theirs = generation_seconds(THEIRS, args.eggroll_es_python, env, cfg)
            rec.update(eggroll_es_s=theirs.get("seconds"), eggroll_es_error=theirs.get("error"))
        else:
            rec["eggroll_es_error"] = "skipped: no --eggroll-es-python"
        import statistics
        for k in ("eggroll_s", "eggroll_es_s"):
            if rec.get(k):
                rec[k.replace("_s", "_median_s")] = statistics.median(rec[k])
        if rec.get("eggroll_median_s") and rec.get("eggroll_es_median_s"):
            rec["eggroll_es_over_eggroll"] = rec["eggroll_es_median_s"] / rec["eggroll_median_s"]
        s.emit(rec)
        harness.table([rec], ["P", "b", "new", ("eggroll_median_s", "eggroll s/gen"),
                              ("eggroll_es_median_s", "eggroll-es s/gen"),
                              ("eggroll_es_over_eggroll", "eggroll-es/eggroll")])
        for k in ("eggroll_error", "eggroll_es_error"):
            if rec.get(k):
                harness.log(f"{k}: {rec[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
